"""An EventConsumer with `slice_records` parses, deduplicates and handles a batch a slice at a time, and still
flushes, remembers and commits once per batch: a copy of an event in a later slice of the same batch is
handled once, a bad record in a slice is dead-lettered, and the order is the log's. A batch's ids are remembered
in the background while the next batch is handled: a copy arriving meanwhile is still recognised."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from herald_shared.contract import serialize_event
from herald_shared.kafka import EventPublisher, event_headers
from herald_shared.mongo import Document, WindowDeduplicator
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler, running_consumer
from tests.samples import sample


async def test_a_batch_in_slices_is_handled_once_in_order_and_flushed_once(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    topic = settings.topics("herald.delivery")
    first, second, *rest = [sample("MessageSent") for _ in range(5)]
    for event in (first, second):
        await producer.send_and_wait(topic, value=serialize_event(event), key=b"acc-1", headers=event_headers(event))
    await producer.send_and_wait(topic, value=b"{not an event", key=b"acc-1")
    # The copy comes back three slices (of two records) after the original, in the same batch.
    for event in [*rest, first]:
        await producer.send_and_wait(topic, value=serialize_event(event), key=b"acc-1", headers=event_headers(event))
    dedupe = WindowDeduplicator(mongo[settings.database_name("slices")], "slices")
    handler = RecordingHandler()
    # Everything is in the log before the consumer starts: its first batch holds all eight records.
    async with running_consumer(settings, producer, handler, ["herald.delivery"], name="slices",
                                deduplicator=dedupe, max_records=100, slice_records=2):
        await eventually(lambda: _ids(handler), lambda ids: len(ids) >= 5, what="the five events")
        await EventPublisher(producer, settings.topics).publish(marker := sample("MessageOpened"))
        await eventually(lambda: _ids(handler), lambda ids: ids[-1] == marker.event_id, what="the marker")
    assert await _ids(handler) == [e.event_id for e in (first, second, *rest, marker)]
    assert handler.flushes == 3, ("one flush for the first batch of eight records, one once caught up (the end "
                                  "offsets when assigned: see EventConsumer's `caught_up`), one for the marker's")
    assert await dedupe.seen([str(first.event_id), str(marker.event_id)]) == {str(first.event_id),
                                                                              str(marker.event_id)}
    name = settings.topic_prefix + "slices"
    assert REGISTRY.get_sample_value("herald_events_duplicate_total", {"consumer": name, "topic": topic}) == 1
    assert REGISTRY.get_sample_value("herald_events_dead_lettered_total",
                                     {"consumer": name, "topic": topic, "category": "invalid"}) == 1


async def _ids(handler: RecordingHandler) -> list[object]:
    return [e.event_id for e in handler.events]


class SlowDeduplicator:
    """Remembers slowly (a database under load): the consumer goes on to the next batch meanwhile."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.pending: set[str] = set()  # being remembered
        self.asked_while_pending: set[str] = set()

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        self.asked_while_pending |= self.pending.intersection(event_ids)
        return self.ids.intersection(event_ids)

    async def remember(self, event_ids: Sequence[str]) -> None:
        self.pending.update(event_ids)
        await asyncio.sleep(1.5)
        self.ids.update(event_ids)
        self.pending.difference_update(event_ids)


async def test_a_copy_arriving_while_its_batch_is_still_remembered_is_handled_once(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    topic = settings.topics("herald.delivery")
    event = sample("MessageSent")
    dedupe = SlowDeduplicator()
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.delivery"], name="remembering",
                                deduplicator=dedupe):
        await producer.send_and_wait(topic, value=serialize_event(event), key=b"acc-1", headers=event_headers(event))
        await eventually(lambda: _ids(handler), lambda ids: ids == [event.event_id], what="the event")
        # Its batch's ids are still being remembered (1.5 s): the copy comes in the next batch meanwhile.
        await producer.send_and_wait(topic, value=serialize_event(event), key=b"acc-1", headers=event_headers(event))
        await EventPublisher(producer, settings.topics).publish(marker := sample("MessageOpened"))
        await eventually(lambda: _ids(handler), lambda ids: ids[-1] == marker.event_id, what="the marker")
    assert dedupe.asked_while_pending == {str(event.event_id)}, "the copy came while its id was being remembered"
    assert await _ids(handler) == [event.event_id, marker.event_id]
    assert dedupe.ids == {str(event.event_id), str(marker.event_id)}, "stopping waits for the last remember"
