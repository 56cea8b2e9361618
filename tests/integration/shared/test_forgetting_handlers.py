"""Every service's handler that stages a batch before its flush can forget it (`kafka.ForgetfulHandler`), so a
batch the store refuses is handled again event by event: the refused event is dead-lettered and the valid ones
around it are folded once each, instead of the flush being retried for ever (ARCHITECTURE.md, principle 6). On
the real stack, wired as each service wires it (`PurgingHandler` around it); the store refuses every write
holding `REFUSED` with a WriteError no retry changes, as it refuses a value it cannot hold."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import BulkWriteError, WriteError

from herald_billing.handlers import UsageGuard
from herald_billing.store import AUDIT, BillingProjection, subscriptions_usage
from herald_campaigns.store import CAMPAIGNS, CampaignsProjection
from herald_delivery.handlers import AudienceJobs, GateBook
from herald_delivery.queue import JobQueue
from herald_delivery.store import ACTIVE_MEMBERS, JOBS, MEMBERS, AudienceProjection, DeliveryStore, active_key
from herald_shared.apikeys import ApiKeyProjection
from herald_shared.contract import Event
from herald_shared.kafka import (
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    EventConsumer,
    EventHandler,
    EventPublisher,
    read_from_start,
)
from herald_shared.mongo import Document, MongoDeduplicator, ProjectionGroup
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.readmodel import APPLIED
from herald_shared.settings import HeraldSettings
from herald_subscriptions.store import LIST_COUNTS, SUBSCRIBERS, SubscriptionsProjection
from tests.conftest import eventually
from tests.integration.shared.helpers import replay_fixed
from tests.samples import sample

ACCOUNT = "acc-forget"
REFUSED = "refused-by-the-store"
WRITES = ("bulk_write", "insert_many", "insert_one", "update_one", "update_many", "replace_one")


@pytest.fixture
def refusing_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refusing(name: str) -> Callable[..., Awaitable[Any]]:
        write = getattr(AsyncCollection, name)

        async def refuse(self: AsyncCollection[Document], *args: Any, **kwargs: Any) -> Any:
            if REFUSED in repr(args) + repr(kwargs):
                message = f"BadValue: cannot store {REFUSED}"
                error: dict[str, Any] = {"index": 0, "code": 2, "errmsg": message}
                if name in ("bulk_write", "insert_many"):
                    raise BulkWriteError({"writeErrors": [error], "writeConcernErrors": [], "nInserted": 0,
                                          "nUpserted": 0, "nMatched": 0, "nModified": 0, "nRemoved": 0,
                                          "upserted": []})
                raise WriteError(message, 2, error)
            return await write(self, *args, **kwargs)
        return refuse

    for name in WRITES:
        monkeypatch.setattr(AsyncCollection, name, refusing(name))
    yield


def event(type_name: str, **payload: Any) -> Event:
    made = sample(type_name, ACCOUNT)
    return made.model_copy(update={"payload": made.payload.model_copy(update=payload)})


def added(subscriber_id: str, list_id: str = "l1", city: str = "Riga", opt_in: str = "double") -> Event:
    email = f"{subscriber_id}@example.com"
    return event("SubscriberAdded", subscriber_id=subscriber_id, list_id=list_id, custom_fields={"city": city},
                 email=email, email_sha256=hashlib.sha256(email.encode()).hexdigest(), opt_in=opt_in)


async def dead_letters(settings: HeraldSettings, topics: Sequence[str]) -> list[dict[str, str]]:
    entries = []
    async for records in read_from_start(settings, [settings.topics.dead_letter(t) for t in topics]):
        entries += [{k: bytes(v).decode() for k, v in record.headers} for record in records]
    return entries


async def fold_around_refusal(settings: HeraldSettings, producer: AIOKafkaProducer,
                              mongo: AsyncMongoClient[Document], handler: EventHandler, events: list[Event],
                              refused: int, done: Callable[[], Awaitable[bool]], **consumer: Any) -> None:
    """Publish the events, fold them through `handler` wrapped as the services wrap it, and wait until the
    refused one (by its index) is dead-lettered with the store's error and `done` holds."""
    db = mongo[settings.database_name("forget")]

    async def purge(account_id: str) -> None:
        pass

    positions = await EventPublisher(producer, settings.topics).publish_many(events)
    topics = sorted({e.topic for e in events})
    running = EventConsumer(settings, name=settings.topic_prefix + "forgetting", topics=topics,
                            handler=PurgingHandler(handler, PurgedAccounts(db), purge), producer=producer,
                            retry_delay=0.01, deduplicator=MongoDeduplicator(db, "forgetting"), **consumer)
    task = asyncio.create_task(running.run())
    try:
        letters = await eventually(lambda: dead_letters(settings, topics), lambda d: len(d) >= 1,
                                   what="the refused event dead-lettered")
        await eventually(done, bool, what="the valid events folded")
    finally:
        running.request_stop()
        await asyncio.wait_for(task, timeout=30)
    assert len(letters) == 1, letters
    assert letters[0][DLQ_SOURCE_OFFSET] == str(positions[refused].offset)
    assert letters[0][DLQ_REASON].startswith("not stored after 3 attempts: BulkWriteError"), letters[0][DLQ_REASON]


def database(settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> AsyncDatabase[Document]:
    return mongo[settings.database_name("forget")]


@pytest.mark.usefixtures("refusing_store")
async def test_subscriptions_folds_the_members_around_one_the_store_refuses_once_each(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    projection = SubscriptionsProjection(db)
    # The refused member is on a list of its own: its count is written before the member (see the report).
    events = [event("ListCreated"), event("ListCreated", list_id="l2"), added("s1"), added("s2", "l2", REFUSED),
              added("s3"),
              event("ListRenamed", list_id="l1", name="Renamed")]

    async def done() -> bool:
        return await db[SUBSCRIBERS].count_documents({}) == 2 and bool(
            await db["lists"].find_one({"name": "Renamed"}))

    await fold_around_refusal(settings, producer, mongo, ProjectionGroup(projection, ApiKeyProjection(db)), events,
                              3, done)
    members = {d["subscriber_id"]: d async for d in db[SUBSCRIBERS].find({})}
    assert sorted(members) == ["s1", "s3"]
    assert all(len(d[APPLIED].split()) == 1 for d in members.values()), "each folded once"
    counts = await db[LIST_COUNTS].find_one({"_id": f"{ACCOUNT}/l1"})
    assert counts is not None and counts["counts"] == {"pending": 2}, counts


@pytest.mark.usefixtures("refusing_store")
async def test_subscriptions_counts_a_list_exactly_after_a_member_the_store_refuses_and_once_more_at_its_replay(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document],
        tmp_path: Path) -> None:
    """The refused member's count, written before the members, is taken back when the batch is set aside (it
    stayed counted for good: 3 pending for 2 members), and its dead letter replayed, fixed, counts it once."""
    db = database(settings, mongo)
    refused = added("s2", city=REFUSED)
    events = [event("ListCreated"), added("s1"), refused, added("s3")]
    topics = ["herald.subscriptions"]
    await EventPublisher(producer, settings.topics).publish_many(events)

    async def purge(account_id: str) -> None:
        pass

    async def pending() -> tuple[int, int]:
        counts = await db[LIST_COUNTS].find_one({"_id": f"{ACCOUNT}/l1"})
        return await db[SUBSCRIBERS].count_documents({}), (counts or {}).get("counts", {}).get("pending", 0)

    handler = PurgingHandler(ProjectionGroup(SubscriptionsProjection(db), ApiKeyProjection(db)), PurgedAccounts(db),
                             purge)
    running = EventConsumer(settings, name=settings.topic_prefix + "counting", topics=topics, handler=handler,
                            producer=producer, retry_delay=0.01, deduplicator=MongoDeduplicator(db, "counting"))
    task = asyncio.create_task(running.run())
    try:
        letters = await eventually(lambda: dead_letter_entries(settings, topics), lambda d: len(d) == 1,
                                   what="the refused member dead-lettered")
        assert await eventually(pending, lambda p: p[0] == 2, what="the other members folded") == (2, 2)

        await replay_fixed(settings, "herald.subscriptions", letters[0]["entry"], refused,
                           lambda fixed: fixed["payload"]["custom_fields"].update(city="Riga"), tmp_path)
        assert await eventually(pending, lambda p: p[0] == 3, what="the replayed member folded") == (3, 3)
    finally:
        running.request_stop()
        await asyncio.wait_for(task, timeout=30)
    member = await db[SUBSCRIBERS].find_one({"subscriber_id": "s2"})
    assert member is not None and member["custom_fields"] == {"city": "Riga"}


async def dead_letter_entries(settings: HeraldSettings, topics: Sequence[str]) -> list[dict[str, str]]:
    """Each dead letter's headers, and where it is (`entry`, as `herald dlq replay` takes it)."""
    entries = []
    async for records in read_from_start(settings, [settings.topics.dead_letter(t) for t in topics]):
        entries += [{k: bytes(v).decode() for k, v in record.headers} | {"entry": f"{record.partition}:{record.offset}"}
                    for record in records]
    return entries


class Decisions:
    """The billing service as the guard sees it: what it is asked to decide."""

    def __init__(self) -> None:
        self.decided: list[list[str]] = []

    async def enforce(self, account_ids: list[str], failed: set[str] | None = None) -> int:
        self.decided.append(account_ids)
        return 0


@pytest.mark.usefixtures("refusing_store")
async def test_billing_counts_the_subscribers_around_an_audit_entry_the_store_refuses_once_each(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    projection, decisions = BillingProjection(db), Decisions()
    guard = UsageGuard(projection, decisions, ApiKeyProjection(db))  # type: ignore[arg-type]
    # single opt-in: active at once, so each counts as stored (a pending double opt-in one counts once confirmed)
    events = [event("AccountOpened"), event("ListCreated"), added("s1", opt_in="single"),
              event("LoginSucceeded", user_agent="curl"), added("s2", opt_in="single"),
              event("LoginSucceeded", user_agent=REFUSED), added("s3", opt_in="single")]

    async def done() -> bool:
        usage = await db["usage"].find_one({"_id": subscriptions_usage(ACCOUNT)})
        return usage is not None and await db[AUDIT].count_documents({}) == 1 and \
            usage["counts"].get("subscribers") == 3

    await fold_around_refusal(settings, producer, mongo, guard, events, 5, done, lead=["herald.billing"])
    usage = await db["usage"].find_one({"_id": subscriptions_usage(ACCOUNT)})
    assert usage is not None and usage["counts"]["subscribers"] == 3, usage
    assert [d["user_agent"] async for d in db[AUDIT].find({})] == ["curl"]
    assert await db["members"].count_documents({}) == 3
    assert [ACCOUNT] in decisions.decided


@pytest.mark.usefixtures("refusing_store")
async def test_delivery_audience_folds_the_members_around_one_the_store_refuses_once_each(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    events = [event("ListCreated"), added("s1"), added("s2", city=REFUSED), added("s3"),
              event("SubscriberConfirmed", subscriber_id="s1", list_id="l1"),
              event("SubscriberConfirmed", subscriber_id="s2", list_id="l1")]  # s2's key written, its document not

    async def done() -> bool:
        return await db[MEMBERS].count_documents({}) == 2 and \
            await db[MEMBERS].count_documents({"status": "active"}) == 1

    await fold_around_refusal(settings, producer, mongo, ProjectionGroup(AudienceProjection(db)), events, 2, done)
    members = {d["subscriber_id"]: d async for d in db[MEMBERS].find({})}
    assert sorted(members) == ["s1", "s3"]
    assert [len(members[s][APPLIED].split()) for s in ("s1", "s3")] == [2, 1], "each event folded once"
    # The campaigns' audience (read from the listing alone) holds s1 only: no key left for s2, the member refused.
    assert [d["_id"] async for d in db[ACTIVE_MEMBERS].find({})] == [active_key(members["s1"])]


@pytest.mark.usefixtures("refusing_store")
async def test_delivery_queues_the_confirmations_around_one_the_store_refuses_once_each(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    queue = JobQueue(asyncio.Event())
    jobs = AudienceJobs(DeliveryStore(db), queue, GateBook())
    events = [event("ConfirmationRequested", subscriber_id=s, list_name=name)
              for s, name in (("s1", "Anna"), ("s2", REFUSED), ("s3", "Ilze"))]

    async def done() -> bool:
        return await db[JOBS].count_documents({}) == 2

    await fold_around_refusal(settings, producer, mongo, jobs, events, 1, done)
    jobs_stored = [d async for d in db[JOBS].find({})]
    assert sorted(d["subscriber_id"] for d in jobs_stored) == ["s1", "s3"]
    assert len(queue) == 2
    # the name anyone typed into the form is never rendered, so never kept (PRODUCT.md: only the request)
    assert not any("greeting_name" in d for d in jobs_stored)


@pytest.mark.usefixtures("refusing_store")
async def test_campaigns_folds_the_campaigns_around_one_the_store_refuses_once_each(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    events = [event("CampaignCreated", campaign_id=c, name=name)
              for c, name in (("c1", "November"), ("c2", REFUSED), ("c3", "December"))]
    events.append(event("CampaignSubmitted", campaign_id="c1"))

    async def done() -> bool:
        doc = await db[CAMPAIGNS].find_one({"_id": f"{ACCOUNT}/c1"})
        return await db[CAMPAIGNS].count_documents({}) == 2 and doc is not None and doc["status"] != "draft"

    projection = CampaignsProjection(db)
    await fold_around_refusal(settings, producer, mongo, ProjectionGroup(projection, ApiKeyProjection(db)), events,
                              1, done)
    assert sorted([d["name"] async for d in db[CAMPAIGNS].find({})]) == ["December", "November"]
