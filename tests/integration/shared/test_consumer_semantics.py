"""At-least-once in, effectively-once out: duplicates skipped by event_id, offsets committed only after
handling, and SIGTERM finishing the batch in hand before leaving."""

from __future__ import annotations

import asyncio
import os
import signal

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from herald_shared.contract import serialize_event
from herald_shared.kafka import EventPublisher, event_headers
from herald_shared.lifecycle import on_shutdown_signal
from herald_shared.mongo import Document, MongoDeduplicator
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler, running_consumer
from tests.samples import sample


async def _types(handler: RecordingHandler) -> list[str]:
    return [e.type for e in handler.events]


async def test_an_event_delivered_twice_is_handled_once(settings: HeraldSettings, producer: AIOKafkaProducer,
                                                        mongo: AsyncMongoClient[Document]) -> None:
    event = sample("SubscriberConfirmed")
    topic = settings.topics("herald.subscriptions")
    # The same event twice (an upstream retry after a crash), then once more in a later batch.
    for _ in range(2):
        await producer.send_and_wait(topic, value=serialize_event(event), key=b"acc-1", headers=event_headers(event))
    dedupe = MongoDeduplicator(mongo[settings.database_name("tests")], "dedupe-test")
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.subscriptions"], deduplicator=dedupe):
        await eventually(lambda: _types(handler), lambda t: len(t) >= 1, what="first delivery")
        await producer.send_and_wait(topic, value=serialize_event(event), key=b"acc-1")
        marker = sample("SubscriberUnsubscribed")
        await EventPublisher(producer, settings.topics).publish(marker)
        await eventually(lambda: _types(handler), lambda t: "SubscriberUnsubscribed" in t, what="marker")
    assert await _types(handler) == ["SubscriberConfirmed", "SubscriberUnsubscribed"]
    assert await dedupe.seen([str(event.event_id)]) == {str(event.event_id)}


async def test_a_restarted_consumer_resumes_after_its_committed_offsets(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    publisher = EventPublisher(producer, settings.topics)
    await publisher.publish_many([sample("CampaignCreated"), sample("CampaignSubmitted")])
    first = RecordingHandler()
    async with running_consumer(settings, producer, first, ["herald.campaigns"], name="resume"):
        await eventually(lambda: _types(first), lambda t: len(t) == 2, what="first run")
    await publisher.publish(sample("CampaignApproved"))
    second = RecordingHandler()
    async with running_consumer(settings, producer, second, ["herald.campaigns"], name="resume"):
        await eventually(lambda: _types(second), lambda t: len(t) >= 1, what="second run")
        await asyncio.sleep(1.0)  # give a wrongly re-read old event the chance to show up
    assert await _types(second) == ["CampaignApproved"]


async def test_sigterm_stops_the_consumer_gracefully_with_offsets_committed(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    await EventPublisher(producer, settings.topics).publish(sample("AccountOpened"))
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.billing"], name="sigterm") as consumer:
        stopping = on_shutdown_signal(consumer.request_stop)
        try:
            await eventually(lambda: _types(handler), lambda t: t == ["AccountOpened"], what="event handled")
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stopping.wait(), timeout=5)
            await eventually(lambda: _started(consumer), lambda s: s is False, what="consumer stopped")
        finally:
            loop = asyncio.get_running_loop()
            loop.remove_signal_handler(signal.SIGTERM)
            loop.remove_signal_handler(signal.SIGINT)
    again = RecordingHandler()
    await EventPublisher(producer, settings.topics).publish(sample("AccountApproved"))
    async with running_consumer(settings, producer, again, ["herald.billing"], name="sigterm"):
        await eventually(lambda: _types(again), lambda t: len(t) >= 1, what="after restart")
        await asyncio.sleep(1.0)
    assert await _types(again) == ["AccountApproved"]


async def _started(consumer: object) -> bool:
    return bool(consumer.started)  # type: ignore[attr-defined]
