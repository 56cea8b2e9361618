"""Recording a decision: publish its events, then wait until the service's own projection holds them, so the
answer to the request that made it reads its own writes. One decision at a time per aggregate in a process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar

from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import RecordMetadata

from .contract import Event
from .kafka import EventPublisher
from .mongo import Checkpoints

READ_YOUR_WRITES_TIMEOUT = 15.0
# How long a decision waits for the broker to acknowledge its events. With idempotence aiokafka retries a batch
# while the broker is away and never gives up: a request waited unanswered for as long (a review: no answer in
# 120 s with the broker away 200 s). After it, KafkaTimeoutError: 503 to a request (`herald_shared.http`), the
# usual transient failure to a loop. The events may still be published once the broker is back (the producer
# keeps them), so what answers 503 may be recorded: a retry of the same command says so, as after any 503.
PUBLISH_TIMEOUT = 15.0


class KeyedLocks:
    """One holder at a time per key in this process. A key's lock lives only while someone holds or waits for
    it, so memory is bounded by the requests in flight, and requests for different keys never wait on each
    other (locks shared by stripes of keys made one request in two wait for an unrelated one at 20 concurrent
    requests: the p99 of the subscribe API). Not reentrant: a second key taken while one is held must come
    from another KeyedLocks, always in the same order, so that no two holders wait on each other."""

    def __init__(self) -> None:
        self._locks: dict[str, _Held] = {}

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = _Held()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:  # also when cancelled while waiting
            held.users -= 1
            if held.users == 0:
                del self._locks[key]


class _Held:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


# The aggregate a decision is serialised on (`Recorder.serialised`), for a commit that times out to name it.
_DECIDING: ContextVar[str | None] = ContextVar("herald_deciding", default=None)


class Recorder:
    def __init__(self, publisher: EventPublisher, checkpoints: Checkpoints, topic: str,
                 on_published: Callable[[Event], None] = lambda _: None) -> None:
        self._publisher = publisher
        self.checkpoints = checkpoints
        self._topic = topic
        self._on_published = on_published
        self._locks = KeyedLocks()
        # Per aggregate, what a decision published and the projection had not applied when it gave up waiting
        # (503 projection_lagging). The next decision on that aggregate waits for it first: it would decide on the
        # state of before (a campaign unscheduled but still `scheduled` in the read model was queued by the
        # scheduler, and sent). In this process: each aggregate is decided in one process (a single replica, or
        # keyed to one).
        self._unapplied: dict[str, list[tuple[str, int, int]]] = {}
        # Per aggregate, the publishing of a decision the broker had not acknowledged within PUBLISH_TIMEOUT (503):
        # the producer keeps its records and sends them once the broker is back, so a decision taken again before
        # then would add a copy of every event (the scheduler, deciding every round of a broker outage, wrote 8
        # copies of one campaign's CampaignQueued in 2 minutes: a review). The next decision waits for it instead.
        self._unacknowledged: dict[str, asyncio.Future[list[RecordMetadata]]] = {}
        self._publishing: set[asyncio.Future[list[RecordMetadata]]] = set()  # held, so none is collected unfinished

    @asynccontextmanager
    async def serialised(self, key: str) -> AsyncIterator[None]:
        """Decide, publish and wait without another request for the same aggregate in between, and on the state
        every earlier decision on it wrote (TimeoutError while one is still not applied)."""
        async with self._locks.hold(key):
            await self._acknowledged(key)
            earlier = self._unapplied.get(key)
            if earlier is not None:
                async with asyncio.timeout(READ_YOUR_WRITES_TIMEOUT):
                    await self.checkpoints.wait_until_applied(earlier)
                del self._unapplied[key]
            deciding = _DECIDING.set(key)
            try:
                yield
            finally:
                _DECIDING.reset(deciding)

    async def _acknowledged(self, key: str) -> None:
        """Waits (PUBLISH_TIMEOUT, then KafkaTimeoutError) for what an earlier decision on the aggregate left
        unacknowledged; once acknowledged, its events are waited for as applied like any decision's."""
        publishing = self._unacknowledged.get(key)
        if publishing is None:
            return
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                published = await asyncio.shield(publishing)
        except TimeoutError as exc:
            raise KafkaTimeoutError(f"the broker has not acknowledged an earlier decision's events on {key!r}; "
                                    "it is not decided again until then") from exc
        except Exception:  # its publishing failed: the decision is taken again, as after any failed publish
            published = []
        del self._unacknowledged[key]
        positions = [(r.topic, r.partition, r.offset) for r in published if r.topic == self._topic]
        if positions:
            self._unapplied.setdefault(key, []).extend(positions)

    async def commit(self, events: Sequence[Event]) -> None:
        """Publish, then wait until this service's projection has applied every event (TimeoutError after
        READ_YOUR_WRITES_TIMEOUT: recorded, not visible yet)."""
        await self.wait_until_applied(await self.publish_only(events))

    async def wait_until_applied(self, published: Sequence[RecordMetadata]) -> None:
        positions = [(r.topic, r.partition, r.offset) for r in published if r.topic == self._topic]
        try:
            async with asyncio.timeout(READ_YOUR_WRITES_TIMEOUT):
                await self.checkpoints.wait_until_applied(positions)
        except TimeoutError:
            if (key := _DECIDING.get()) is not None:
                self._unapplied.setdefault(key, []).extend(positions)
            raise

    async def publish_only(self, events: Sequence[Event]) -> list[RecordMetadata]:
        """Publish without waiting for the projection (bulk work that commits once at its end)."""
        if not events:
            return []
        publishing = asyncio.ensure_future(self._publisher.publish_many(events))
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                results = await asyncio.shield(publishing)
        except TimeoutError as exc:  # not the projection's lag (`lagging`): the broker's silence
            self._left_publishing(publishing, events)
            raise KafkaTimeoutError(f"the broker acknowledged {len(events)} events in no "
                                    f"{PUBLISH_TIMEOUT:.0f} s") from exc
        except asyncio.CancelledError:  # the request went away: its events are in the producer all the same
            self._left_publishing(publishing, events)
            raise
        for event in events:
            self._on_published(event)
        return results

    def _left_publishing(self, publishing: asyncio.Future[list[RecordMetadata]], events: Sequence[Event]) -> None:
        """A publishing given up on goes on (the producer holds its records); the aggregate being decided waits
        for it before its next decision (`_acknowledged`)."""
        if (key := _DECIDING.get()) is not None:
            self._unacknowledged[key] = publishing
        self._publishing.add(publishing)

        def done(finished: asyncio.Future[list[RecordMetadata]]) -> None:
            self._publishing.discard(finished)
            if not finished.cancelled() and finished.exception() is None:
                for event in events:
                    self._on_published(event)

        publishing.add_done_callback(done)
