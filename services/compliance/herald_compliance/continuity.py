"""Every input record processed, in order, whatever faust's buffering does.

faust can lose buffered records on a rebalance: its table recovery ends with `flow_control.resume()`, which
clears the agents' stream queues (thousands of fetched records), and the consumer does not always fetch them
again: a partition without a committed offset is not sought back at all, and a record already in the fetcher's
hands moves its read offset past the re-fetched ones, which it then drops. Its commits stay behind the hole (the
records are never acknowledged), so nothing is lost for good, but the live worker would count short until its
next restart. The kill test caught it about one run in four.

So the processor keeps, per input partition it owns, the next offset it expects (the group's committed offset
when the partition is assigned), and reads whatever faust skipped straight from Kafka before going on. A
partition whose end is ahead of that offset while nothing arrives for a while is read the same way (faust lost
its tail). Reading twice is harmless: what is below the expected offset is skipped, and the state's own
per-partition watermarks make any replay idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from herald_shared.settings import HeraldSettings

READ_PATIENCE = 30  # polls of a second without progress before a read of a hole gives up


@dataclass(frozen=True)
class Fetch:
    """Read offsets [start, end) of the partition from Kafka: the stream skipped them."""
    start: int
    end: int


@dataclass(frozen=True)
class Take:
    """Process the record at this index of the batch."""
    index: int


def reconcile(expected: int, offsets: Sequence[int]) -> tuple[list[Fetch | Take], int]:
    """Plan one partition's share of a batch (its offsets in stream order) against the next offset expected:
    holes are fetched, records below the expected offset (already processed) are dropped. Returns the plan and
    the next offset expected after it."""
    plan: list[Fetch | Take] = []
    for index, offset in enumerate(offsets):
        if offset < expected:
            continue
        if offset > expected:
            plan.append(Fetch(expected, offset))
        plan.append(Take(index))
        expected = offset + 1
    return plan, expected


def lag(expected: Mapping[TopicPartition, int], ends: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Records between the next offset expected and the partition's end, for each partition still expected (one
    revoked while its end was asked for is its new owner's to report)."""
    return {tp: max(0, end - expected[tp]) for tp, end in ends.items() if tp in expected}


class Continuity:
    """The next offset expected per owned input partition, and a plain consumer (no group) to read holes."""

    def __init__(self, settings: HeraldSettings, group_id: str) -> None:
        self._settings, self._group_id = settings, group_id
        self.expected: dict[TopicPartition, int] = {}
        self.progress: dict[TopicPartition, float] = {}  # monotonic time the expected offset last moved
        self._reader: AIOKafkaConsumer | None = None
        # End offsets are asked on a consumer of their own that is never assigned anything: the reader keeps
        # fetching the partition it last read, and the broker answers a connection's requests in order, so an
        # end-offset request would wait behind a fetch it holds (up to 0.5 s on a partition with nothing new).
        self._ends: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()  # the lag report and the batches may both ask for one first

    async def _consumer(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self._reader is None:
                self._reader = await self._started("herald-compliance-continuity")
            return self._reader

    async def _offsets(self) -> AIOKafkaConsumer:
        async with self._starting:
            if self._ends is None:
                self._ends = await self._started("herald-compliance-offsets")
            return self._ends

    async def _started(self, client_id: str) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(**self._settings.kafka_client_options(), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest", client_id=client_id)
        try:
            await consumer.start()
        except BaseException:  # the broker away, or the caller gave up: the next call starts one afresh
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        return consumer

    async def stop(self) -> None:
        for consumer in (self._reader, self._ends):
            if consumer is not None:
                await consumer.stop()
        self._reader = self._ends = None

    async def assign(self, tps: Iterable[TopicPartition]) -> None:
        """Start expecting the group's committed offset (or the partition's first offset) on these partitions."""
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        if not wanted:
            return
        admin = AIOKafkaAdminClient(**self._settings.kafka_client_options(),
                                    client_id="herald-compliance-continuity")
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self._group_id, partitions=wanted)
        finally:
            await admin.close()
        offsets = {tp: meta.offset for tp, meta in committed.items() if meta is not None and meta.offset >= 0}
        uncommitted = [tp for tp in wanted if tp not in offsets]
        if uncommitted:
            offsets.update(await (await self._offsets()).beginning_offsets(uncommitted))
        now = time.monotonic()
        for tp in wanted:
            self.expected[tp] = offsets[tp]
            self.progress[tp] = now

    def forget(self, tps: Iterable[Any]) -> None:
        for tp in tps:
            key = TopicPartition(tp.topic, tp.partition)
            self.expected.pop(key, None)
            self.progress.pop(key, None)

    def advance(self, tp: TopicPartition, expected: int) -> None:
        if expected > self.expected.get(tp, -1):
            self.expected[tp] = expected
            self.progress[tp] = time.monotonic()

    async def read(self, tp: TopicPartition, start: int, end: int) -> list[Any]:
        """The records of [start, end) still in Kafka (fewer if retention removed some)."""
        reader = await self._consumer()
        reader.assign([tp])
        reader.seek(tp, start)
        records: list[Any] = []
        idle = 0
        while (position := await reader.position(tp)) < end:
            batch = await reader.getmany(tp, timeout_ms=1000, max_records=5000)
            records.extend(r for r in batch.get(tp, ()) if start <= r.offset < end)
            idle = idle + 1 if await reader.position(tp) == position else 0
            if idle >= READ_PATIENCE:
                raise KafkaError(f"{tp.topic}:{tp.partition} gave nothing past offset {position} (reading to {end})")
        return records

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(await (await self._offsets()).end_offsets(list(tps)))

    async def stalled(self, after_seconds: float) -> dict[TopicPartition, tuple[int, int]]:
        """Owned partitions with records past the expected offset and no progress for `after_seconds`."""
        now = time.monotonic()
        quiet = [tp for tp, at in self.progress.items() if now - at >= after_seconds]
        if not quiet:
            return {}
        ends = await self.end_offsets(quiet)
        return {tp: (self.expected[tp], end) for tp, end in ends.items()
                if tp in self.expected and end > self.expected[tp]}
