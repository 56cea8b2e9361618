"""Poison on every topic a service consumes: invalid JSON, an unknown event type, a schema version this contract
does not know, a time with no UTC equivalent, a NUL character in a text, and valid events (every type of the
topic; two with odd type headers) for an account nobody opened. Invariant: every event
is processed or dead-lettered. Each consumer of the topic dead-letters exactly the invalid records, with
its name and their origin; a valid event is handled, or refused by a rule (dead-lettered `rejected: <rule>`, as
delivery refuses a suspension notice for an account with no registered address), never a handler failure; its
committed offsets reach the end of the topic (nothing stuck behind the poison); and the process is still
running and ready."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from herald_shared.contract import EVENT_TYPES, Event, serialize_event
from herald_shared.kafka import EventPublisher, event_headers
from herald_shared.settings import HeraldSettings
from herald_shared.topics import EVENT_TOPICS, events_of
from herald_subscriptions.domain import subscriber_id_for
from tests.conftest import eventually
from tests.samples import sample

from .conftest import ServiceProcess, behind, dead_letters

GHOST = "acc-ghost"  # no AccountOpened, no list, no campaign: unknown to every service

# Each service's consumers: (consumer group, the name it writes in dead letters) -> the topics it reads.
CONSUMERS: dict[str, dict[tuple[str, str], list[str]]] = {
    "billing": {("billing.projection", "billing.projection"): [
        "herald.billing", "herald.subscriptions", "herald.delivery", "herald.campaigns", "herald.compliance"]},
    "campaigns": {
        ("campaigns.projection", "campaigns.projection"): [
            "herald.campaigns", "herald.subscriptions", "herald.delivery", "herald.billing", "herald.compliance"],
        ("campaigns.reports", "campaigns.reports"): ["herald.delivery", "herald.subscriptions", "herald.billing"]},
    "compliance": {("herald-compliance", "compliance"): [
        "herald.delivery", "herald.subscriptions", "herald.compliance", "herald.billing"]},
    "delivery": {
        ("delivery.audience", "delivery.audience"): ["herald.subscriptions", "herald.billing"],
        ("delivery.confirmations", "delivery.confirmations"): ["herald.subscriptions", "herald.billing"],
        ("delivery.control", "delivery.control"): ["herald.billing", "herald.compliance", "herald.campaigns"]},
    "subscriptions": {
        ("subscriptions.projection", "subscriptions.projection"): ["herald.subscriptions", "herald.billing"],
        ("subscriptions.suppression", "subscriptions.suppression"): ["herald.delivery"]},
}


def poison(topic: str) -> list[bytes]:
    """The invalid records of a topic, as a careless or future producer would write them (no headers): not
    JSON, an unknown type, an unknown schema version (with its payload, and without any), a time that has no UTC
    equivalent, and a NUL character in a text (valid JSON and schema, but no read model can store it)."""
    valid = json.loads(serialize_event(sample(events_of(topic)[0].model_fields["type"].default, GHOST)))
    future = {**valid, "schema_version": 99}
    future_bare = {k: v for k, v in future.items() if k != "payload"}  # once stopped every service, for good
    unknown = {**valid, "type": "InvoiceExploded"}
    no_utc = {**valid, "occurred_at": "0001-01-01T00:00:00+01:00"}
    nul = {**valid, "producer": "rogue\u0000"}
    return [b"{this is not json", *(json.dumps(v).encode() for v in (unknown, future, future_bare, no_utc, nul))]


POISON = len(poison("herald.billing"))


async def publish_poison_and_ghosts(producer: AIOKafkaProducer, settings: HeraldSettings,
                                    topics: set[str]) -> dict[str, set[int]]:
    """Per base topic, the offsets of its invalid records (all on the ghost account's partition, among its
    valid events). Two valid events carry odd `type` headers: a null one, and one naming another type of the
    topic (the value decides, the header is only a hint)."""
    invalid: dict[str, set[int]] = {}
    for base in sorted(topics):
        topic, key = settings.topics(base), GHOST.encode()
        ghosts = [sample(name, GHOST) for name, cls in EVENT_TYPES.items()
                  if cls.topic == base and name != "AccountOpened"]  # an opened account is no longer unknown
        half = len(ghosts) // 2
        records: list[tuple[bytes, list[tuple[str, bytes | None]]]] = [
            (serialize_event(e), list(event_headers(e))) for e in ghosts[:half]]
        records += [(value, []) for value in poison(base)]
        records += [(serialize_event(e), list(event_headers(e))) for e in ghosts[half:]]
        first, second = ghosts[0], ghosts[1]  # valid events whose headers are odd: a null type, a lying one
        records[0] = (records[0][0], [("type", None)])
        records[1] = (records[1][0], [("type", next(g.type for g in ghosts if g.type != second.type).encode())])
        assert json.loads(records[0][0])["type"] == first.type and json.loads(records[1][0])["type"] == second.type
        # Sent in order, acknowledged together (the idempotent producer keeps a partition's order).
        sent = [await producer.send(topic, value, key=key, headers=headers) for value, headers in records]
        offsets = [metadata.offset for metadata in await asyncio.gather(*sent)]
        invalid[base] = set(offsets[half:half + POISON])
    return invalid


@pytest.mark.parametrize("service", sorted(CONSUMERS))
async def test_poison_on_every_topic_is_dead_lettered_and_every_valid_event_is_processed(
        settings: HeraldSettings, producer: AIOKafkaProducer, services: Any, service: str) -> None:
    consumers = CONSUMERS[service]
    assert {t for topics in consumers.values() for t in topics} <= {spec.name for spec in EVENT_TOPICS}
    invalid = await publish_poison_and_ghosts(producer, settings, {t for ts in consumers.values() for t in ts})
    process: ServiceProcess = services[service]
    started = time.monotonic()
    process.start()
    await process.ready()

    for (group, _), topics in consumers.items():
        left = await eventually(lambda g=settings.topic_prefix + group, t=topics: behind(settings, g, t),  # type: ignore[misc]
                                lambda gaps: not gaps, within=60, what=f"{group} past the poison", every=0.3)
        assert left == {}
    for (_, name), topics in consumers.items():
        for base in topics:
            letters = [d for d in await dead_letters(settings, base) if d.consumer == settings.topic_prefix + name]
            mine = [d for d in letters if d.offset in invalid[base]]
            refused = [(d.offset, d.reason) for d in letters if d.offset not in invalid[base]]
            assert all(reason.startswith("rejected: ") for _, reason in refused), (
                f"{name} failed on a valid event of {base}: {refused}")
            assert len({d.offset for d in letters}) == len(letters), f"{name} dead-lettered twice: {letters}"
            assert {d.offset for d in mine} == invalid[base], f"{name} on {base}: {mine}, expected {invalid[base]}"
            reasons = sorted(d.reason for d in mine)
            assert reasons[0].startswith("a text holds a NUL character"), reasons
            assert reasons[1].startswith("invalid ") and "occurred_at: Value error, out of the range" in reasons[1], \
                reasons
            assert reasons[2].startswith("invalid ") and "unsupported schema_version 99" in reasons[2], reasons
            assert "unsupported schema_version 99" in reasons[3] and "payload: Field required" in reasons[3], reasons
            assert reasons[4].startswith("not JSON"), reasons
            assert reasons[5] == "unknown event type 'InvoiceExploded'", reasons
    assert process.alive, process.tail()
    await process.ready(within=5)
    print(f"{service}: past the poison {time.monotonic() - started:.1f}s after start")


async def test_members_of_a_list_not_there_are_dead_lettered_by_the_subscriptions_process(
        settings: HeraldSettings, producer: AIOKafkaProducer, services: Any, mongo: Any) -> None:
    """Valid events, wrong for the state they meet: another producer's (a CRM's) members of a list the account
    never created (a typo'd list id), and of one it deleted, are dead-lettered by the projection with a reason
    naming the list, and the partition goes on past them (the member after them is taken)."""
    account = "acc-crm"

    def member(list_id: str, n: int) -> Event:
        added = sample("SubscriberAdded", account)
        email = f"p{n}@example.com"
        return added.model_copy(update={"producer": "crm", "payload": added.payload.model_copy(update={  # type: ignore[attr-defined]
            "list_id": list_id, "email": email, "email_sha256": hashlib.sha256(email.encode()).hexdigest(),
            "subscriber_id": subscriber_id_for(account, list_id, email)})})

    def list_event(name: str, list_id: str) -> Event:
        event = sample(name, account)
        return event.model_copy(update={"payload": event.payload.model_copy(update={"list_id": list_id})})

    taken = member("news", 22)
    events = [*(member("newsletter-typo", n) for n in range(21)), list_event("ListCreated", "old"),
              list_event("ListDeleted", "old"), member("old", 21), list_event("ListCreated", "news"), taken]
    await EventPublisher(producer, settings.topics).publish_many(events)
    process: ServiceProcess = services["subscriptions"]
    process.start()
    await process.ready()
    group = settings.topic_prefix + "subscriptions.projection"
    await eventually(lambda: behind(settings, group, ["herald.subscriptions"]), lambda gaps: not gaps, within=60,
                     what="the projection past the members", every=0.3)

    letters = [d for d in await dead_letters(settings, "herald.subscriptions") if d.consumer == group]
    assert len(letters) == 22, letters
    assert all(d.reason.startswith("rejected: SubscriberAdded") for d in letters), letters
    assert sum("list 'newsletter-typo'" in d.reason and d.reason.endswith("list never created (no ListCreated "
                                                                            "before it)") for d in letters) == 21
    assert sum("list 'old'" in d.reason and d.reason.endswith("list deleted") for d in letters) == 1
    stored = mongo[settings.database_name("subscriptions")]["subscribers"]
    assert [d["subscriber_id"] async for d in stored.find({"_id": {"$gte": f"{account}/", "$lt": f"{account}0"}})] \
        == [taken.payload.subscriber_id]  # type: ignore[attr-defined]
    assert process.alive, process.tail()
