"""Records faust fetched and then threw away are still counted, on the real broker.

faust's table recovery ends a rebalance with `flow_control.resume()`, which clears the agents' stream queues, and
its consumer does not always fetch those records again (see herald_compliance/continuity.py). These tests do to
the running processor exactly what that rebalance does, with the processor held mid-batch so the queue is full
of fetched records, and check every record is counted once: holes are read from Kafka, and so is a tail that
nothing follows."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from herald_compliance.processor import account_partition
from tests.conftest import eventually

from .conftest import Bus, Running, counts_of, sent


def refetched(reason: str) -> float:
    return REGISTRY.get_sample_value("herald_compliance_refetched_records_total", {"reason": reason}) or 0.0


def stream_queue(running: Running) -> Any:
    agent = next(iter(running.service.faust.agents.values()))
    return next(iter(agent._actors)).stream.channel.queue


async def drop_buffered_records(running: Running, bus: Bus, account: str, first: int, count: int) -> int:
    """Hold the processor mid-batch, publish, wait for faust to buffer what it fetched, clear its queues as its
    recovery does, and let it go on. Returns how many buffered records were thrown away."""
    processor = running.service.processor
    queue = stream_queue(running)
    tp = TopicPartition(bus.settings.topics("herald.delivery"), account_partition(account))
    async with processor._lock:  # the batch in progress: the stream buffers behind it
        await bus.publish(*(sent(account, "c1", i) for i in range(first, first + count)))
        end = (await running.service.continuity.end_offsets([tp]))[tp]
        # Clear only once faust's consumer has handed over every record and none is on its way to the queue:
        # a record delivered after the clear would show a hole instead of a lost tail.
        await eventually(lambda: running.service.faust.consumer.position(tp), lambda at: at == end,
                         what="faust's consumer at the partition's end")
        sizes: list[int] = []

        async def settled_size() -> int:
            sizes.append(queue.qsize())
            await asyncio.sleep(0.2)
            return sizes[-1]

        await eventually(settled_size, lambda size: size > 0 and sizes[-2:] == [size, size] and len(sizes) > 1,
                         what="faust's queue holding what it fetched")
        dropped = queue.qsize()
        running.service.faust.flow_control.clear()
        assert queue.qsize() == 0
    return dropped


async def sent_counted(running: Running, account: str, n: int, within: float = 30, what: str = "") -> None:
    await eventually(lambda: running.rates(account), lambda r: (counts_of(r, "c1") or {}).get("sent") == n,
                     within=within, what=what or f"{n} sent counted")


async def running_with_ten_counted(start_compliance: Any, bus: Bus, account: str, stall_seconds: float) -> Running:
    running: Running = await start_compliance(HERALD_COMPLIANCE_BATCH_SIZE=50,
                                              HERALD_COMPLIANCE_STALL_SECONDS=stall_seconds)
    await bus.publish(*(sent(account, "c1", i) for i in range(10)))
    await sent_counted(running, account, 10)
    return running


async def committed_and_end(running: Running, bus: Bus, account: str) -> tuple[int, int]:
    """The group's committed offset and the end offset of the account's herald.delivery partition."""
    tp = TopicPartition(bus.settings.topics("herald.delivery"), account_partition(account))
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(running.service.faust.conf.id, partitions=[tp])
    finally:
        await admin.close()
    end = await running.service.continuity.end_offsets([tp])
    meta = committed.get(tp)
    return (meta.offset if meta is not None else -1), end[tp]


async def test_records_cleared_from_fausts_queue_are_read_from_kafka(start_compliance: Any, bus: Bus) -> None:
    running = await running_with_ten_counted(start_compliance, bus, "acc-c1", stall_seconds=60)
    before, stalled_before = refetched("gap"), refetched("stalled")  # counters of the process: earlier tests' too
    dropped = await drop_buffered_records(running, bus, "acc-c1", 10, 1000)
    assert dropped > 0
    await bus.publish(*(sent("acc-c1", "c1", i) for i in range(1010, 1020)))  # what follows shows the hole
    await sent_counted(running, "acc-c1", 1020, what="every record counted once")
    assert refetched("gap") - before >= dropped
    assert refetched("stalled") == stalled_before  # the hole, not the stall check, found them (it waits 60 s here)
    # the records read from Kafka are acknowledged to faust: its commits move past the hole
    await eventually(lambda: committed_and_end(running, bus, "acc-c1"), lambda c: c[0] == c[1],
                     what="the group's commit at the partition's end")


async def test_a_lost_tail_is_read_after_the_stall_time(start_compliance: Any, bus: Bus) -> None:
    running = await running_with_ten_counted(start_compliance, bus, "acc-c2", stall_seconds=1)
    before = refetched("stalled")
    dropped = await drop_buffered_records(running, bus, "acc-c2", 10, 1000)
    assert dropped > 0
    # nothing more is published: only the stall check can find what faust threw away
    await sent_counted(running, "acc-c2", 1010, what="the lost tail counted")
    assert refetched("stalled") - before > 0
    # acknowledged to faust, though nothing follows the tail on this partition: the commit reaches its end
    await eventually(lambda: committed_and_end(running, bus, "acc-c2"), lambda c: c[0] == c[1],
                     what="the group's commit at the partition's end")
