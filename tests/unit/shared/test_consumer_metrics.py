"""The Kafka metrics the alerts read, as a consumer exports them: dead-letter counters exist at 0 before the first
dead letter (increase() over a series born at 1 says 0), dead letters from no consumed record are counted too,
the lag and the position are reported while the consumer is stuck in a batch (the batch counted as behind, its
position not moving: HeraldConsumerStuck), and a partition taken away is no longer reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from herald_shared.contract import Event, serialize_event
from herald_shared.contract.billing import AccountPurged
from herald_shared.kafka import DEAD_LETTER_CATEGORIES, EventConsumer, EventPublisher, _Assignments, event_headers
from herald_shared.settings import HeraldSettings
from herald_shared.topics import TopicNames


def dead_lettered(consumer: str, topic: str, category: str) -> float | None:
    return REGISTRY.get_sample_value("herald_events_dead_lettered_total",
                                     {"consumer": consumer, "topic": topic, "category": category})


def lag(consumer: str, tp: TopicPartition) -> float | None:
    return REGISTRY.get_sample_value("herald_consumer_lag",
                                     {"consumer": consumer, "topic": tp.topic, "partition": str(tp.partition)})


def position(consumer: str, tp: TopicPartition) -> float | None:
    return REGISTRY.get_sample_value("herald_consumer_position",
                                     {"consumer": consumer, "topic": tp.topic, "partition": str(tp.partition)})


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


class Producer:
    async def send_and_wait(self, topic: str, **record: Any) -> None:
        return None


class StandInFetcher:
    def __init__(self) -> None:
        self._records: dict[TopicPartition, object] = {}
        self._fetch_max_wait_ms = 50

    def _get_actions_per_node(self, assignment: object) -> object:
        return None


class FakeKafka:
    """What EventConsumer asks of aiokafka's consumer: partitions, their ends and the consumer's positions."""

    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned = set(assigned)
        self.ends: dict[TopicPartition, int] = {tp: 0 for tp in assigned}
        self.positions: dict[TopicPartition, int] = {tp: 0 for tp in assigned}
        self.batches: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] = []
        self._fetcher = StandInFetcher()  # what herald_shared.aiokafka_adapter sets its fetch waits on

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def subscribe(self, topics: list[str], listener: Any) -> None:
        return None

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in partitions}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if self.batches:
            batch = self.batches.pop(0)
            for tp, records in batch.items():
                self.positions[tp] = records[-1].offset + 1
            return batch
        await asyncio.sleep(timeout_ms / 1000)
        return {}


class Stuck:
    """A handler that never comes back (what one waiting out a MongoDB outage looks like from the loop)."""

    def __init__(self) -> None:
        self.handling = asyncio.Event()

    async def handle(self, event: Event) -> None:
        self.handling.set()
        await asyncio.Event().wait()

    async def flush(self) -> None:
        return None


class Refused:
    """A handler whose store refuses every flush for good (a poison batch: what no retry changes)."""

    def __init__(self) -> None:
        self.flushes = 0

    async def handle(self, event: Event) -> None:
        return None

    async def flush(self) -> None:
        self.flushes += 1
        raise OverflowError("MongoDB can only handle up to 8-byte ints")


class Handled:
    async def handle(self, event: Event) -> None:
        return None

    async def flush(self) -> None:
        return None


def purged_record(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    event = AccountPurged(account_id="acc-1", producer="unit",
                          payload={"reason": "deleted", "since": datetime.now(UTC)})
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"acc-1", serialize_event(event), None, 0, 0,
                          event_headers(event))


def consumer(name: str, topics: list[str], handler: Any = None, **options: Any) -> EventConsumer:
    return EventConsumer(HeraldSettings(), name=name, topics=topics, handler=handler, producer=Producer(),  # type: ignore[arg-type]
                         **options)


async def test_a_consumers_dead_letter_series_exist_at_zero_before_its_first_dead_letter() -> None:
    consumer("unit.metrics.dead-letters", ["herald.billing", "herald.campaigns"])
    for topic in ("herald.billing", "herald.campaigns"):
        for category in DEAD_LETTER_CATEGORIES:
            assert dead_lettered("unit.metrics.dead-letters", topic, category) == 0.0
    assert set(DEAD_LETTER_CATEGORIES) == {"invalid", "rejected", "handler_failed"}


async def test_a_dead_letter_from_no_consumed_record_is_counted() -> None:
    publisher = EventPublisher(Producer(), TopicNames())  # type: ignore[arg-type]
    await publisher.dead_letter("herald.delivery", b"{}", "outcome event not made", origin="sender",
                                consumer="unit.metrics.sender", key=b"acc-1", category="handler_failed")
    await publisher.dead_letter("herald.delivery", b"mail", "unreadable", origin="inbound-smtp",
                                consumer="unit.metrics.inbound", key=b"inbound")
    assert dead_lettered("unit.metrics.sender", "herald.delivery", "handler_failed") == 1.0
    assert dead_lettered("unit.metrics.inbound", "herald.delivery", "invalid") == 1.0  # the default category


async def test_the_lag_is_reported_while_the_consumer_is_stuck_in_a_batch() -> None:
    tp = TopicPartition("herald.billing", 0)
    handler = Stuck()
    c = consumer("unit.metrics.stuck", ["herald.billing"], handler, lag_interval=0.01)
    fake = FakeKafka({tp})
    fake.ends[tp] = 1
    fake.batches.append({tp: [purged_record(tp, 0)]})
    c._consumer = fake
    c._owned = {tp}  # as the assignment sets it (the fake makes none)
    running = asyncio.create_task(c.run())
    try:
        await asyncio.wait_for(handler.handling.wait(), 5)
        # The batch in hand is behind, though the client's position is past it: lag 1, not 0.
        await until(lambda: (lag(c.name, tp), position(c.name, tp)) == (1, 0))
        fake.ends[tp] = 10_001  # events keep arriving; the loop is in the handler and polls nothing
        await until(lambda: lag(c.name, tp) == 10_001)
        fake.ends[tp] = 20_001
        await until(lambda: lag(c.name, tp) == 20_001)
        assert position(c.name, tp) == 0  # what HeraldConsumerStuck sees not moving
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_consumer_stuck_on_a_refused_flush_reports_its_last_event_behind_and_its_position_still() -> None:
    """The AccountSuspended behind a flush the store refuses (a handler that cannot forget what it staged retries
    it for good): lag 1 and a position that does not move, reported every round, so the stuck alert fires."""
    tp = TopicPartition("herald.billing", 2)
    handler = Refused()
    c = consumer("unit.metrics.refused", ["herald.billing"], handler, lag_interval=0.01, retry_delay=0.001)
    fake = FakeKafka({tp})
    fake.positions[tp], fake.ends[tp] = 41, 42
    fake.batches.append({tp: [purged_record(tp, 41)]})
    c._consumer = fake
    c._owned = {tp}
    running = asyncio.create_task(c.run())
    try:
        await until(lambda: handler.flushes >= 3)
        await until(lambda: (lag(c.name, tp), position(c.name, tp)) == (1, 41))
        assert fake.positions[tp] == 42  # the client's own position is past the batch
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_consumer_that_moves_on_reports_its_position_moving() -> None:
    tp = TopicPartition("herald.billing", 1)
    c = consumer("unit.metrics.moving", ["herald.billing"], Handled())
    fake = FakeKafka({tp})
    fake.ends[tp] = 3
    fake.batches += [{tp: [purged_record(tp, 0)]}, {tp: [purged_record(tp, 1), purged_record(tp, 2)]}]
    c._consumer = fake
    c._owned = {tp}
    running = asyncio.create_task(c.run())
    try:
        await until(lambda: (lag(c.name, tp), position(c.name, tp)) == (0, 3))  # after each poll
    finally:
        c.request_stop()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_partition_taken_away_is_no_longer_reported() -> None:
    tp0, tp1 = TopicPartition("herald.subscriptions", 0), TopicPartition("herald.subscriptions", 1)
    c = consumer("unit.metrics.revoked", ["herald.subscriptions"])
    fake = FakeKafka({tp0, tp1})
    fake.ends, fake.positions = {tp0: 50_000, tp1: 100}, {tp0: 10_000, tp1: 90}
    c._consumer = fake
    c._owned = {tp0, tp1}  # as the assignment sets it
    await c._report_lag()
    assert (lag(c.name, tp0), lag(c.name, tp1)) == (40_000, 10)
    assert (position(c.name, tp0), position(c.name, tp1)) == (10_000, 90)
    await _Assignments(c).on_partitions_revoked({tp0, tp1})
    assert lag(c.name, tp0) is None and lag(c.name, tp1) is None  # their new owners report them
    assert position(c.name, tp0) is None and position(c.name, tp1) is None
    # aiokafka answers the old assignment until the next one lands: reports in between report nothing.
    assert fake.assigned == {tp0, tp1}
    await c._report_lag()
    await c._report_end_offsets()
    assert lag(c.name, tp0) is None and lag(c.name, tp1) is None
    c._owned = {tp1}  # the next assignment
    await c._report_end_offsets()
    assert lag(c.name, tp0) is None and lag(c.name, tp1) == 10


async def test_a_partition_revoked_while_its_lag_is_read_is_not_reported_again() -> None:
    tp = TopicPartition("herald.subscriptions", 2)
    c = consumer("unit.metrics.race", ["herald.subscriptions"])
    fake = FakeKafka({tp})
    fake.ends, fake.positions = {tp: 500}, {tp: 100}

    async def position_then_revoked(partition: TopicPartition) -> int:
        # The rebalance lands while the position is read; aiokafka still answers the old assignment after it.
        await _Assignments(c).on_partitions_revoked({partition})
        return 100

    fake.position = position_then_revoked  # type: ignore[method-assign]
    c._consumer = fake
    c._owned = {tp}
    await c._report_end_offsets()
    assert lag(c.name, tp) is None
