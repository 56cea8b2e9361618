"""WindowDeduplicator on the real store: a restarted consumer knows the ids the last one remembered, the window
and the collection stay bounded, and in an EventConsumer a copy republished at a new offset is handled once."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from herald_shared.contract import serialize_event
from herald_shared.kafka import EventPublisher, event_headers
from herald_shared.mongo import Document, WindowDeduplicator, make_client
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler, running_consumer
from tests.samples import sample

COLLECTION = "recent_events.reports"


def new_ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def database(settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> AsyncDatabase[Document]:
    return mongo[settings.database_name("dedupe")]


async def test_a_new_instance_knows_the_ids_the_last_one_remembered(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    first = WindowDeduplicator(db, "reports")
    assert await first.seen(["never"]) == set()
    batches = [new_ids(300), new_ids(5), new_ids(1)]
    for ids in batches:
        await first.remember(ids)
    remembered = [i for ids in batches for i in ids]
    assert await first.seen([*remembered, "other"]) == set(remembered)

    restarted = WindowDeduplicator(db, "reports")
    assert await restarted.seen([*remembered, "other"]) == set(remembered)
    # One document per batch, small batches appended to the one before while it has room: one here.
    assert await db[COLLECTION].count_documents({}) == 1
    # The restarted one writes documents of its own after the loaded ones, and a third instance sees all.
    later = new_ids(10)
    await restarted.remember(later)
    assert await WindowDeduplicator(db, "reports").seen([*remembered, *later]) == {*remembered, *later}


async def test_the_window_keeps_the_newest_ids_and_old_documents_are_pruned(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    dedupe = WindowDeduplicator(db, "reports", window=1000, fill=100, prune_every=2)
    batches = [new_ids(250) for _ in range(12)]
    for ids in batches:
        await dedupe.remember(ids)
    newest = [i for ids in batches[-4:] for i in ids]  # 1,000 ids: the window
    oldest = [i for ids in batches[:8] for i in ids]
    assert await dedupe.seen(newest) == set(newest)
    assert await dedupe.seen(oldest) == set()
    # In the store: the window and at most `prune_every` documents that left it since the last prune.
    stored = await db[COLLECTION].count_documents({})
    assert 4 <= stored <= 4 + 2
    # Loaded again, the window is what was kept, and what is left over is pruned at the load.
    restarted = WindowDeduplicator(db, "reports", window=1000, fill=100, prune_every=2)
    assert await restarted.seen([*newest, *oldest]) == set(newest)
    assert await db[COLLECTION].count_documents({}) == 4


async def test_a_trickle_of_small_batches_fills_documents_instead_of_one_per_batch(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    dedupe = WindowDeduplicator(db, "reports", fill=100)
    singles = new_ids(250)
    for event_id in singles:
        await dedupe.remember([event_id])
    assert await db[COLLECTION].count_documents({}) == 3  # 100 + 100 + 50
    assert await WindowDeduplicator(db, "reports").seen(singles) == set(singles)


async def test_ids_whose_write_failed_are_not_claimed_as_seen(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    """The consumer retries `remember` until it succeeds; meanwhile a redelivery must still be handled."""
    client = make_client(settings, "tests-dedupe")
    dedupe = WindowDeduplicator(client[settings.database_name("dedupe")], "reports")
    await dedupe.seen([])  # loaded
    await client.close()  # the store goes away
    ids = new_ids(3)
    with pytest.raises(PyMongoError):
        await dedupe.remember(ids)
    assert await dedupe.seen(ids) == set()
    assert await WindowDeduplicator(database(settings, mongo), "reports").seen(ids) == set()


async def test_in_a_consumer_a_copy_at_a_new_offset_is_handled_once_and_still_after_a_restart(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    db = database(settings, mongo)
    event = sample("SubscriberConfirmed")
    topic = settings.topics("herald.subscriptions")

    async def publish_copy() -> None:
        await producer.send_and_wait(topic, value=serialize_event(event), key=event.account_id.encode(),
                                     headers=event_headers(event))

    await publish_copy()
    await publish_copy()  # in the same batch
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.subscriptions"], name="window",
                                deduplicator=WindowDeduplicator(db, "window")):
        await eventually(lambda: _types(handler), lambda t: len(t) >= 1, what="first delivery")
        await publish_copy()  # in a later batch
        await EventPublisher(producer, settings.topics).publish(sample("SubscriberUnsubscribed"))
        await eventually(lambda: _types(handler), lambda t: "SubscriberUnsubscribed" in t, what="marker")
    assert await _types(handler) == ["SubscriberConfirmed", "SubscriberUnsubscribed"]

    # Another copy while the consumer is down (delivery republishing after its own restart): the restarted
    # consumer loads the window and drops it.
    await publish_copy()
    again = RecordingHandler()
    async with running_consumer(settings, producer, again, ["herald.subscriptions"], name="window",
                                deduplicator=WindowDeduplicator(db, "window")):
        await EventPublisher(producer, settings.topics).publish(sample("SubscriberAdded"))
        await eventually(lambda: _types(again), lambda t: "SubscriberAdded" in t, what="marker after restart")
    assert await _types(again) == ["SubscriberAdded"]


async def _types(handler: RecordingHandler) -> list[str]:
    return [e.type for e in handler.events]
