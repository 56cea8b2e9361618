"""What is already on herald.compliance, read for the partitions a worker is given (`processor.Announcements`):
read together from the assignment on, never kept across a partition's absence (another worker may have announced
meanwhile), read again when a read failed. Kafka itself is stood in for by the read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from herald_compliance.processor import Announcements
from herald_shared.settings import HeraldSettings


class OnKafka(Announcements):
    """Announcements whose reads are recorded and answered from `ids` (partition → event ids on the topic)."""

    def __init__(self) -> None:
        super().__init__(HeraldSettings(topic_prefix="test."))
        self.ids: dict[int, set[str]] = {}
        self.reads: list[list[int]] = []
        self.failures = 0  # reads still to fail
        self.gate: asyncio.Event | None = None  # reads wait for it, when set

    async def _read(self, partitions: list[int]) -> dict[int, set[str]]:
        self.reads.append(partitions)
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        return {p: set(self.ids.get(p, ())) for p in partitions}


async def test_the_partitions_given_are_read_together_and_once() -> None:
    kafka = OnKafka()
    kafka.ids = {0: {"e0"}, 2: {"e2a", "e2b"}}
    kafka.prefetch([2, 0, 1])
    assert await kafka.ready(2) == {"e2a", "e2b"}
    assert await kafka.ready(1) == set()
    announced = await kafka.ready(0)
    announced.add("e0-new")  # what the processor announces is remembered with the rest
    kafka.prefetch([0, 1, 2])
    assert await kafka.ready(0) == {"e0", "e0-new"}
    assert kafka.reads == [[0, 1, 2]]


async def test_a_partition_given_back_is_read_again_not_remembered() -> None:
    """Another worker may have announced on it while it was away: its first batch must know."""
    kafka = OnKafka()
    kafka.prefetch([0, 1])
    assert await kafka.ready(0) == set()
    kafka.forget([0])
    kafka.ids[0] = {"announced-elsewhere"}
    kafka.prefetch([0, 1])
    assert await kafka.ready(0) == {"announced-elsewhere"}
    assert kafka.reads == [[0, 1], [0]]


async def test_a_partition_never_prefetched_is_read_when_first_asked() -> None:
    kafka = OnKafka()
    kafka.ids = {5: {"e5"}}
    assert await kafka.ready(5) == {"e5"}
    assert kafka.reads == [[5]]


async def test_a_read_for_partitions_all_taken_away_is_given_up() -> None:
    kafka = OnKafka()
    kafka.gate = asyncio.Event()
    kafka.prefetch([3, 4])
    await asyncio.sleep(0)
    reading: Any = kafka._reads[3]
    kafka.forget([3])
    assert not reading.cancelled()  # partition 4 still needs it
    kafka.forget([4])
    await asyncio.sleep(0)
    assert reading.cancelled()


async def test_a_read_that_failed_at_the_assignment_is_made_again_and_a_second_failure_raises() -> None:
    kafka = OnKafka()
    kafka.ids = {1: {"e1"}}
    kafka.failures = 1
    kafka.prefetch([0, 1])
    assert await kafka.ready(1) == {"e1"}
    assert kafka.reads == [[0, 1], [1]]
    kafka.forget([0, 1])
    kafka.failures = 2
    with pytest.raises(ConnectionError):
        await kafka.ready(1)
    kafka.ids[1].add("e1b")
    assert await kafka.ready(1) == {"e1", "e1b"}  # the batch after that reads it afresh
