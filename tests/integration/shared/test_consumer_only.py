"""An EventConsumer with `only` passes over the event types it does not want, without parsing them, and
commits their offsets with the batch; a record whose `type` header disagrees with its value is read, and the
value decides."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from herald_shared.contract import serialize_event
from herald_shared.contract.delivery import DeliveryHeld, MessageSent
from herald_shared.contract.subscriptions import SubscriberAdded
from herald_shared.kafka import EventConsumer, EventPublisher, read_from_start
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


async def _types(handler: RecordingHandler) -> list[str]:
    return [e.type for e in handler.events]


async def test_the_value_decides_when_a_type_header_lies_or_is_null(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    """The `type` header is a routing hint: a wanted event under another type's header is handled, an unwanted
    one under a wanted type's header is not, and a null header is read as none; nothing is dead-lettered."""
    topic = settings.topics("herald.delivery")
    held, opened, held_null = sample("DeliveryHeld"), sample("MessageOpened"), sample("DeliveryHeld")
    for event, header in ((held, b"MessageOpened"), (opened, b"DeliveryHeld"), (held_null, None)):
        await producer.send_and_wait(topic, serialize_event(event), key=event.account_id.encode(),
                                     headers=[("type", header)])
    handler = RecordingHandler()
    only = consumer(settings, producer, handler, ["herald.delivery"], only={"herald.delivery": [DeliveryHeld]})
    task = asyncio.create_task(only.run())
    await eventually(lambda: _types(handler), lambda t: len(t) == 2, what="both DeliveryHeld")
    await asyncio.sleep(1.0)  # give the MessageOpened a chance to be handled wrongly
    only.request_stop()
    await until_stopped(task)
    assert {e.event_id for e in handler.events} == {held.event_id, held_null.event_id}
    dead = [r async for batch in read_from_start(settings, [settings.topics.dead_letter("herald.delivery")])
            for r in batch]
    assert dead == []
