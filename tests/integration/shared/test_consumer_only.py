"""An EventConsumer with `only` passes over the event types it does not want, without parsing them, and
commits their offsets with the batch."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

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


async def _types(handler: RecordingHandler) -> list[str]:
    return [e.type for e in handler.events]
