"""Small helpers for the shared adapters' integration tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaProducer
from pymongo.errors import AutoReconnect

from herald_shared.contract import Event
from herald_shared.kafka import Deduplicator, EventConsumer, Reject
from herald_shared.settings import HeraldSettings


class RecordingHandler:
    """Keeps the events it handled, in order; refuses or fails on the event types it is told to."""

    def __init__(self, reject_types: Sequence[str] = (), fail_types: Sequence[str] = (),
                 database_outages: int = 0) -> None:
        self.events: list[Event] = []
        self.flushes = 0
        self._reject = set(reject_types)
        self._fail = set(fail_types)
        self._outages = database_outages

    async def handle(self, event: Event) -> None:
        if self._outages > 0:
            self._outages -= 1
            raise AutoReconnect("connection refused (the database restarts)")
        if event.type in self._reject:
            raise Reject(f"{event.type} is not handled here")
        if event.type in self._fail:
            raise RuntimeError("store unavailable")
        self.events.append(event)

    async def flush(self) -> None:
        self.flushes += 1


@contextlib.asynccontextmanager
async def running_consumer(settings: HeraldSettings, producer: AIOKafkaProducer, handler: RecordingHandler,
                           topics: Sequence[str], *, name: str = "test-consumer",
                           deduplicator: Deduplicator | None = None, max_records: int = 500,
                           slice_records: int | None = None) -> AsyncIterator[EventConsumer]:
    consumer = EventConsumer(settings, name=settings.topic_prefix + name, topics=topics, handler=handler,
                             producer=producer, deduplicator=deduplicator, retry_delay=0.01,
                             max_records=max_records, slice_records=slice_records)
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.request_stop()
        await asyncio.wait_for(task, timeout=30)
