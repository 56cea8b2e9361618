"""Small helpers for the shared adapters' integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo.errors import AutoReconnect

from herald_shared.contract import Event, serialize_event
from herald_shared.kafka import Deduplicator, EventConsumer, Reject
from herald_shared.settings import HeraldSettings
from tests.conftest import subprocess_env


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


async def replay_fixed(settings: HeraldSettings, topic: str, entry: str, event: Event,
                       fix: Callable[[dict[str, Any]], None], tmp_path: Path) -> None:
    """`herald dlq replay` of the dead letter `entry` of `topic`, with `event` as `fix` corrects it (its JSON, in
    place) as the value: what an operator does once the cause is mended."""
    fixed = json.loads(serialize_event(event))
    fix(fixed)
    value = tmp_path / "fixed.json"
    value.write_text(json.dumps(fixed))
    replay = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "herald_shared.cli", "dlq", "replay", topic, entry,
                         "--value-file", str(value)],
        env=subprocess_env(settings), capture_output=True, text=True, timeout=60, check=False)
    assert replay.returncode == 0, replay.stderr
