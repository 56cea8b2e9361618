"""How an EventConsumer reads: `only` passes over the types it does not want without parsing them, and
`read_ahead` parses the next batch early without changing what is handled, committed, or read again after a
stop."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from herald_shared.contract import Event
from herald_shared.contract.delivery import DeliveryHeld, MessageSent
from herald_shared.contract.subscriptions import SubscriberAdded
from herald_shared.kafka import EventConsumer, EventPublisher
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler
from tests.samples import sample


def consumer(settings: HeraldSettings, producer: AIOKafkaProducer, handler: RecordingHandler, topics: list[str],
             **options: object) -> EventConsumer:
    return EventConsumer(settings, name=settings.topic_prefix + "reading", topics=topics, handler=handler,
                         producer=producer, retry_delay=0.01, **options)  # type: ignore[arg-type]


async def until_stopped(task: asyncio.Task[None]) -> None:
    await asyncio.wait_for(task, timeout=30)


async def test_only_the_named_types_of_a_topic_are_handled_and_the_rest_is_committed(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    publisher = EventPublisher(producer, settings.topics)
    await publisher.publish_many([sample("MessageSent"), sample("DeliveryHeld"), sample("MessageOpened"),
                                  sample("SubscriberAdded")])
    handler = RecordingHandler()
    only = consumer(settings, producer, handler, ["herald.delivery", "herald.subscriptions"],
                    only={"herald.delivery": [DeliveryHeld]})
    task = asyncio.create_task(only.run())
    await eventually(lambda: _types(handler), lambda t: len(t) == 2, what="DeliveryHeld and SubscriberAdded")
    await publisher.publish(sample("DeliveryHeld"))
    await eventually(lambda: _types(handler), lambda t: len(t) == 3, what="the second DeliveryHeld")
    only.request_stop()
    await until_stopped(task)
    assert sorted(await _types(handler)) == ["DeliveryHeld", "DeliveryHeld", "SubscriberAdded"]

    # The passed-over events were committed with their batches: a restart reads none of them again.
    await publisher.publish(sample("SubscriberConfirmed"))
    again = RecordingHandler()
    restarted = consumer(settings, producer, again, ["herald.delivery", "herald.subscriptions"],
                         only={"herald.delivery": [DeliveryHeld]})
    task = asyncio.create_task(restarted.run())
    await eventually(lambda: _types(again), lambda t: len(t) >= 1, what="after the restart")
    await asyncio.sleep(1.0)  # give a wrongly re-read old event the chance to show up
    restarted.request_stop()
    await until_stopped(task)
    assert await _types(again) == ["SubscriberConfirmed"]


def test_only_refuses_a_type_that_is_not_on_the_topic_named(settings: HeraldSettings) -> None:
    with pytest.raises(ValueError, match=r"herald\.delivery"):
        EventConsumer(settings, name="wrong", topics=["herald.delivery"], handler=RecordingHandler(),
                      producer=None, only={"herald.delivery": [SubscriberAdded]})
    with pytest.raises(ValueError, match=r"herald\.delivery"):
        EventConsumer(settings, name="unread", topics=["herald.subscriptions"], handler=RecordingHandler(),
                      producer=None, only={"herald.delivery": [MessageSent]})


class StopAfterFirst(RecordingHandler):
    """Asks its consumer to stop once it handled one event: the batch in hand is finished and committed."""

    consumer: EventConsumer | None = None

    async def handle(self, event: Event) -> None:
        await super().handle(event)
        if self.consumer is not None:
            self.consumer.request_stop()


async def test_reading_ahead_handles_every_event_once_in_order_and_a_stop_drops_the_batch_read_ahead(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    publisher = EventPublisher(producer, settings.topics)
    # One account, so one partition: the order is the topic's.
    events = [sample("SubscriberAdded", payload={**sample("SubscriberAdded").payload.model_dump(),
                                                   "subscriber_id": f"s{i}"}) for i in range(7)]
    await publisher.publish_many(events)
    first = StopAfterFirst()
    reading = consumer(settings, producer, first, ["herald.subscriptions"], max_records=2, read_ahead=True)
    first.consumer = reading
    await until_stopped(asyncio.create_task(reading.run()))
    # The first batch was finished (and committed); the one read ahead was dropped with the stop.
    assert await _subscribers(first) == ["s0", "s1"]

    rest = RecordingHandler()
    resumed = consumer(settings, producer, rest, ["herald.subscriptions"], max_records=2, read_ahead=True)
    task = asyncio.create_task(resumed.run())
    await eventually(lambda: _subscribers(rest), lambda s: len(s) >= 5, what="the rest")
    await asyncio.sleep(1.0)  # a duplicate would show up by now
    resumed.request_stop()
    await until_stopped(task)
    assert await _subscribers(rest) == ["s2", "s3", "s4", "s5", "s6"]
    assert rest.flushes >= 3  # in batches of two at most


async def _types(handler: RecordingHandler) -> list[str]:
    return [e.type for e in handler.events]


async def _subscribers(handler: RecordingHandler) -> list[str]:
    return [str(e.payload.subscriber_id) for e in handler.events]  # type: ignore[attr-defined]
