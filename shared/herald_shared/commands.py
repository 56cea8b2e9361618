"""Recording a decision: publish its events, then wait until the service's own projection holds them, so the
answer to the request that made it reads its own writes. One decision at a time per aggregate in a process."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from aiokafka.structs import RecordMetadata

from .contract import Event
from .kafka import EventPublisher
from .mongo import Checkpoints

READ_YOUR_WRITES_TIMEOUT = 15.0
LOCK_STRIPES = 256


class StripedLocks:
    """One holder at a time per key in this process, in bounded memory (keys share LOCK_STRIPES locks). Not
    reentrant: a second key taken while one is held must come from another StripedLocks, always in the same
    order, so that no two holders wait on each other."""

    def __init__(self, stripes: int = LOCK_STRIPES) -> None:
        self._locks = [asyncio.Lock() for _ in range(stripes)]

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        async with self._locks[zlib.crc32(key.encode()) % len(self._locks)]:
            yield


class Recorder:
    def __init__(self, publisher: EventPublisher, checkpoints: Checkpoints, topic: str,
                 on_published: Callable[[Event], None] = lambda _: None) -> None:
        self._publisher = publisher
        self.checkpoints = checkpoints
        self._topic = topic
        self._on_published = on_published
        self._locks = StripedLocks()

    @asynccontextmanager
    async def serialised(self, key: str) -> AsyncIterator[None]:
        """Decide, publish and wait without another request for the same aggregate in between."""
        async with self._locks.hold(key):
            yield

    async def commit(self, events: Sequence[Event]) -> None:
        """Publish, then wait until this service's projection has applied every event (TimeoutError after
        READ_YOUR_WRITES_TIMEOUT: recorded, not visible yet)."""
        await self.wait_until_applied(await self.publish_only(events))

    async def wait_until_applied(self, published: Sequence[RecordMetadata]) -> None:
        positions = [(r.topic, r.partition, r.offset) for r in published if r.topic == self._topic]
        async with asyncio.timeout(READ_YOUR_WRITES_TIMEOUT):
            await self.checkpoints.wait_until_applied(positions)

    async def publish_only(self, events: Sequence[Event]) -> list[RecordMetadata]:
        """Publish without waiting for the projection (bulk work that commits once at its end)."""
        if not events:
            return []
        results = await self._publisher.publish_many(events)
        for event in events:
            self._on_published(event)
        return results
