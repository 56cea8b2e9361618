"""A membership the store refuses to write is in no listing and no count, and the memberships around it are listed
and counted once each; a refused change of a stored membership leaves its document and its listing as the store
holds them (the consumer sets such a batch aside and dead-letters the refused event: `kafka.EventConsumer`). On the
real stack, through the service's own consumer and API.

What the contract takes, the store keeps (an integer beyond 64 bits, NaN, a key with '.' or '$', a NUL, a lone
surrogate: all refused as invalid; an event fits in 1 MiB, a document in 16 MiB), so the store here refuses a marked
value as it would one it cannot keep: that document, with an error no retry changes, while the rest of the request
is written (the other documents of an unordered insert, the operations before it of an ordered bulk write)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, WriteError

from herald_shared.apikeys import new_api_key
from herald_shared.contract import Event
from herald_shared.contract.billing import AccountOpened, ApiKeyIssued
from herald_shared.contract.subscriptions import (
    ListCreated,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberUnsubscribed,
)
from herald_shared.kafka import DLQ_SOURCE_OFFSET, EventPublisher, read_from_start
from herald_shared.mongo import Checkpoints, Document
from herald_shared.readmodel import prefix_range
from herald_shared.settings import HeraldSettings
from herald_subscriptions.store import LIST_MEMBERS, STATUSES, SUBSCRIBERS, listing_key
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform, Tenant
from tests.samples import CONSENT

REFUSED = "kept-by-no-store"


def _refusal(index: int) -> dict[str, Any]:
    return {"index": index, "code": 2, "errmsg": f"BadValue: cannot store {REFUSED}"}


def _bulk_error(errors: list[dict[str, Any]]) -> BulkWriteError:
    return BulkWriteError({"writeErrors": errors, "writeConcernErrors": [], "nInserted": 0, "nUpserted": 0,
                           "nMatched": 0, "nModified": 0, "nRemoved": 0, "upserted": []})


@pytest.fixture
def refusing_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    insert_many, bulk_write = AsyncCollection.insert_many, AsyncCollection.bulk_write

    async def refusing_insert_many(self: AsyncCollection[Document], documents: Any, ordered: bool = True,
                                   **kwargs: Any) -> Any:
        docs = list(documents)
        refused = [i for i, doc in enumerate(docs) if REFUSED in repr(doc)]
        if not refused:
            return await insert_many(self, docs, ordered=ordered, **kwargs)
        kept = [i for i in range(len(docs)) if i not in refused and (not ordered or i < refused[0])]
        errors = [_refusal(i) for i in (refused if not ordered else refused[:1])]
        if kept:
            try:
                await insert_many(self, [docs[i] for i in kept], ordered=ordered, **kwargs)
            except BulkWriteError as exc:  # the duplicates of what it wrote, where the caller put them
                errors += [{**err, "index": kept[err["index"]]} for err in exc.details["writeErrors"]]
        raise _bulk_error(sorted(errors, key=lambda err: err["index"]))

    async def refusing_bulk_write(self: AsyncCollection[Document], requests: Any, ordered: bool = True,
                                  **kwargs: Any) -> Any:
        ops = list(requests)
        refused = next((i for i, op in enumerate(ops) if REFUSED in repr(op)), None)
        if refused is None:
            return await bulk_write(self, ops, ordered=ordered, **kwargs)
        assert ordered, "the folds write their changes in order"
        if refused:
            await bulk_write(self, ops[:refused], ordered=True, **kwargs)
        raise _bulk_error([_refusal(refused)])

    def refusing_one(name: str) -> Any:
        write = getattr(AsyncCollection, name)

        async def refuse(self: AsyncCollection[Document], *args: Any, **kwargs: Any) -> Any:
            if REFUSED in repr(args) + repr(kwargs):
                raise WriteError(f"BadValue: cannot store {REFUSED}", 2, _refusal(0))
            return await write(self, *args, **kwargs)
        return refuse

    monkeypatch.setattr(AsyncCollection, "insert_many", refusing_insert_many)
    monkeypatch.setattr(AsyncCollection, "bulk_write", refusing_bulk_write)
    for name in ("insert_one", "update_one", "update_many", "replace_one"):
        monkeypatch.setattr(AsyncCollection, name, refusing_one(name))
    yield


def added(account_id: str, subscriber_id: str, email: str, city: str, opt_in: str = "single",
          list_id: str = "news") -> SubscriberAdded:
    """A membership as a producer of the contract (a CRM) records it."""
    return SubscriberAdded(account_id=account_id, producer="crm", payload={
        "list_id": list_id, "subscriber_id": subscriber_id, "email": email,
        "email_sha256": hashlib.sha256(email.encode()).hexdigest(), "custom_fields": {"city": city},
        "opt_in": opt_in, "consent": CONSENT})


def confirmed(account_id: str, subscriber_id: str, list_id: str = "news") -> SubscriberConfirmed:
    return SubscriberConfirmed(account_id=account_id, producer="crm", payload={
        "list_id": list_id, "subscriber_id": subscriber_id, "method": "single_opt_in"})


async def dead_lettered_offsets(platform: Platform) -> list[int]:
    """The source offsets of the projection's dead letters of herald.subscriptions."""
    settings = platform.settings
    found = []
    async for records in read_from_start(settings, [settings.topics.dead_letter("herald.subscriptions")]):
        for record in records:
            headers = {k: bytes(v).decode() for k, v in record.headers}
            found.append(int(headers[DLQ_SOURCE_OFFSET]))
    return sorted(found)


async def folded_past(platform: Platform, last: RecordMetadata) -> None:
    """Wait until the projection's consumer stored its checkpoint past this record: it moved on."""
    checkpoints = Checkpoints(platform.service.db, "projection")
    await eventually(lambda: checkpoints.applied(last.topic, last.partition), lambda o: o > last.offset,
                     what="the projection past the batch")


async def members_api(tenant: Tenant, list_id: str = "news", **query: Any) -> tuple[list[str], dict[str, int]]:
    """Every member the API lists (one a page, following the cursor), in order, and the counts it gives."""
    ids: list[str] = []
    params: dict[str, Any] = {"limit": 1, **query}
    while True:
        page = (await tenant.http.get(f"/v1/lists/{list_id}/subscribers", params=params)).json()
        ids += [item["subscriber_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids, page["counts"]
        params["cursor"] = page["next_cursor"]


async def stored(platform: Platform, account_id: str) -> tuple[dict[str, Document], list[str]]:
    """The account's memberships by subscriber id, and its listing's keys, as the store holds them."""
    db = platform.service.db
    docs = {d["subscriber_id"]: d async for d in db[SUBSCRIBERS].find({"_id": prefix_range(account_id)})}
    keys = [d["_id"] async for d in db[LIST_MEMBERS].find({"_id": prefix_range(account_id)}).sort("_id", 1)]
    return docs, keys


async def assert_listing_counts_and_documents_agree(platform: Platform, tenant: Tenant) -> dict[str, Document]:
    docs, keys = await stored(platform, tenant.account_id)
    assert keys == sorted(k for d in docs.values() if (k := listing_key(d)) is not None), "listing = documents"
    listed, counts = await members_api(tenant)
    assert listed == [k.rsplit("/", 1)[1] for k in keys], "the API lists each member once, in listing order"
    assert counts == {s: sum(d["status"] == s for d in docs.values()) for s in STATUSES}, counts
    for status in STATUSES:
        by_status, _ = await members_api(tenant, status=status)
        assert by_status == sorted(s for s, d in docs.items() if d["status"] == status), status
    return docs


@dataclass
class Backlog:
    """Events published before the service starts: its consumer reads them as one batch."""

    account_id: str
    api_key: str
    positions: list[RecordMetadata]


@pytest.fixture
async def backlog(settings: HeraldSettings, producer: AIOKafkaProducer) -> Backlog:
    account = "acme-refused"
    key_id, key, key_hash = new_api_key()
    events: list[Event] = [
        AccountOpened(account_id=account, producer="billing", payload={
            "company_name": "Acme Ltd", "registered_email": "owner@acme.example", "main_username": "owner",
            "terms_accepted_at": "2026-11-01T00:00:00Z"}),
        ApiKeyIssued(account_id=account, producer="billing", payload={
            "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}),
        ListCreated(account_id=account, producer="crm", payload={
            "list_id": "news", "name": "News", "opt_in": "single", "custom_fields": [{"name": "city"}]}),
        added(account, "s1", "s1@example.com", "Riga"), confirmed(account, "s1"),
        added(account, "s2", "s2@example.com", REFUSED), confirmed(account, "s2"),
        added(account, "s3", "s3@example.com", "Tartu"),
        added(account, "s4", "s4@example.com", "Vilnius"), confirmed(account, "s4")]
    return Backlog(account, key, await EventPublisher(producer, settings.topics).publish_many(events))


def set_aside_batches(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The sizes of the batches the projection's consumer set aside (the store refused their flush)."""
    return [getattr(r, "events", 0) for phase in ("setup", "call") for r in caplog.get_records(phase)
            if r.getMessage().startswith("the store refuses a batch")]


@pytest.mark.usefixtures("refusing_store")
async def test_a_member_the_store_refuses_is_listed_and_counted_nowhere_and_the_members_around_it_once_each(
        caplog: pytest.LogCaptureFixture, backlog: Backlog, platform: Platform) -> None:
    """A batch of members, one of them refused (`backlog`, published before `platform` starts the service)."""
    await folded_past(platform, backlog.positions[-1])
    assert await eventually(lambda: dead_lettered_offsets(platform), bool,
                            what="the refused member dead-lettered") == [backlog.positions[5].offset]
    assert max(set_aside_batches(caplog), default=0) >= 5, "the members around the refused one were in its batch"

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=platform.service.app), base_url="http://subs",
                             headers={"Authorization": f"Bearer {backlog.api_key}"})
    async with http:
        docs = await assert_listing_counts_and_documents_agree(platform, Tenant(backlog.account_id,
                                                                                backlog.api_key, http))
    assert {s: d["status"] for s, d in docs.items()} == {"s1": "active", "s3": "pending", "s4": "active"}
    assert [len(docs[s]["applied_events"].split()) for s in ("s1", "s3", "s4")] == [2, 1, 2], "each folded once"


@pytest.mark.usefixtures("refusing_store")
async def test_a_refused_change_of_a_stored_membership_leaves_its_document_and_listing_as_the_store_holds_them(
        platform: Platform) -> None:
    """A re-add the store refuses (new custom fields; after an unsubscribe it would make the member pending again)
    changes neither the member nor where it is listed; the changes around it in the batch are kept."""
    acme = await platform.tenant("acme")
    await acme.create_list(custom_fields=[{"name": "city", "kind": "text"}])
    ids = {}
    for name in ("anna", "berta", "carla"):
        response = await acme.subscribe(f"{name}@example.com", custom_fields={"city": "Riga"})
        assert response.status_code == 201, response.text
        ids[name] = response.json()["subscriber_id"]
    assert (await acme.http.post(f"/v1/subscribers/{ids['berta']}/unsubscribe")).status_code == 200
    before, _ = await stored(platform, "acme")
    assert {n: before[ids[n]]["status"] for n in ids} == {"anna": "active", "berta": "unsubscribed",
                                                          "carla": "active"}

    batch: list[Event] = [
        SubscriberUnsubscribed(account_id="acme", producer="crm", payload={
            "list_id": "news", "subscriber_id": ids["anna"], "source": "api"}),
        added("acme", ids["berta"], "berta@example.com", REFUSED, opt_in="double"),
        added("acme", ids["carla"], "carla@example.com", REFUSED),
        added("acme", "dora", "dora@example.com", "Tartu")]
    positions = await platform.publisher.publish_many(batch)
    await folded_past(platform, positions[-1])
    assert await eventually(lambda: dead_lettered_offsets(platform), lambda found: len(found) == 2,
                            what="the refused re-adds dead-lettered") == [positions[1].offset, positions[2].offset]

    docs = await assert_listing_counts_and_documents_agree(platform, acme)
    assert docs[ids["berta"]] == before[ids["berta"]] and docs[ids["carla"]] == before[ids["carla"]]
    assert {s: d["status"] for s, d in docs.items()} == {
        ids["anna"]: "unsubscribed", ids["berta"]: "unsubscribed", ids["carla"]: "active", "dora": "pending"}
