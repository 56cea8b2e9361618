"""An idle consumer's fetch is held long on the real broker (herald_shared.aiokafka_adapter): it sends a few fetches
a second, not 20, and an event that arrives meanwhile is still handled at once, since the broker answers a held
fetch as soon as a partition in it has new records."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from herald_shared.aiokafka_adapter import hold_idle_fetches
from herald_shared.kafka import EventConsumer, EventPublisher
from herald_shared.settings import HeraldSettings
from herald_shared.topics import spec
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler, running_consumer
from tests.samples import sample


def count_fetches(consumer: AIOKafkaConsumer) -> list[float]:
    """The times at which the consumer's fetcher sent a fetch request (its rounds build none while one is out)."""
    fetcher: Any = consumer._fetcher
    build, built = fetcher._get_actions_per_node, []

    def counted(assignment: Any) -> Any:
        actions = build(assignment)
        built.extend(time.monotonic() for _ in actions[0])  # (fetch requests, resets, timeout, ...)
        return actions

    fetcher._get_actions_per_node = counted
    return built


async def test_a_fetch_held_for_10_s_is_answered_as_soon_as_an_event_arrives(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    topic = settings.topics("herald.subscriptions")
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        hold_idle_fetches(consumer, busy_ms=50, idle_ms=10_000)
        built = count_fetches(consumer)
        consumer.assign([TopicPartition(topic, p) for p in range(spec("herald.subscriptions").partitions)])
        assert await consumer.getmany(timeout_ms=2000) == {}  # nothing there: the fetch out is held
        assert len(built) <= 2, built
        event = sample("SubscriberAdded")
        sent_at = time.monotonic()
        await EventPublisher(producer, settings.topics).publish(event)
        got: list[Any] = []
        while not got and time.monotonic() - sent_at < 8:
            for records in (await consumer.getmany(timeout_ms=8000)).values():
                got += records
        assert got and time.monotonic() - sent_at < 5, "the held fetch was not answered when the event arrived"
    finally:
        await consumer.stop()


async def test_an_idle_event_consumer_sends_a_few_fetches_a_second_and_still_handles_at_once(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.subscriptions"], name="idle") as consumer:
        await eventually(lambda: _started(consumer), bool, what="the consumer started")
        await asyncio.wait_for(consumer.caught_up.wait(), 30)
        built = count_fetches(consumer._consumer)
        await asyncio.sleep(3)
        # 500 ms a held fetch: about 6 in 3 s (20 a second before: 60)
        assert len(built) <= 12, f"{len(built)} fetches in 3 s"
        await EventPublisher(producer, settings.topics).publish(sample("SubscriberAdded"))
        await eventually(lambda: _count(handler), lambda n: n == 1, within=5, what="the event handled")


async def _started(consumer: EventConsumer) -> bool:
    return consumer.started


async def _count(handler: RecordingHandler) -> int:
    return len(handler.events)
