"""Events per second through the compliance processor, next to a plain aiokafka consumer reading the same topic
in the same run (the ratio is the figure), and the latency from a breaching event being produced to its
AccountSuspended being produced (Kafka record timestamps), p50/p99, under a steady background load.

Also, in the same run: faust's own ceiling (the same worker, its batches handed to a handler that only counts
them: what faust's stream delivers at best, whatever the processor does), and the memory the facts index takes
per remembered fact (the packed table's buckets and name tables, `PackedFacts.nbytes`; and the process's RSS
growth), and how long a sweep of every remembered fact holds a batch up (taking the batches' lock a part of the
index at a time, and whole as before).

    eval "$(scripts/stack env)"; .venv/bin/python -m bench.compliance_stream [--events 50000] [--breaches 40] \
        [--accounts 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from bench.harness import status_kib
from herald_compliance import metrics, packed_facts, processor
from herald_compliance.main import Compliance, ComplianceSettings
from herald_compliance.processor import Processor
from herald_shared.contract import Event, serialize_event
from herald_shared.contract.delivery import MessageBounced, MessageSent
from herald_shared.kafka import ensure_topics, make_producer, partition_ids
from herald_shared.settings import HeraldSettings


def sent(account: str, i: int) -> MessageSent:
    return MessageSent(account_id=account, producer="bench", occurred_at=datetime.now(UTC), payload={
        "message_id": f"{account}-m{i}", "campaign_id": "c1", "subscriber_id": f"s{i}", "list_id": "l1",
        "recipient_domain": "example.com", "smtp_code": 250})


def bounce(account: str, i: int) -> MessageBounced:
    return MessageBounced(account_id=account, producer="bench", occurred_at=datetime.now(UTC), payload={
        "message_id": f"{account}-m{i}", "campaign_id": "c1", "subscriber_id": f"s{i}", "list_id": "l1",
        "bounce_class": "hard", "diagnostic": "5.1.1", "source": "dsn"})


async def publish(producer: Any, settings: HeraldSettings, events: list[Event]) -> list[Any]:
    futures = [await producer.send(settings.topics(e.topic), value=serialize_event(e), key=e.account_id.encode())
               for e in events]
    return list(await asyncio.gather(*futures))


async def publish_sends(producer: Any, settings: HeraldSettings, count: int, accounts: int, first: int = 0) -> None:
    """`count` MessageSent spread over `accounts` accounts, made and published 20,000 at a time (a million
    event objects at once would take gigabytes of the bench's own memory)."""
    for start in range(first, first + count, 20_000):
        await publish(producer, settings, [sent(f"acc-{i % accounts}", i)
                                           for i in range(start, min(first + count, start + 20_000))])


async def plain_consumer_rate(settings: HeraldSettings, total: int) -> float:
    """The baseline: read the topic from the start and decode every JSON value."""
    topic = settings.topics("herald.delivery")
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in (await partition_ids(settings, [topic]))[topic]]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started, seen = time.perf_counter(), 0
        while seen < total:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for record in records:
                    json.loads(record.value)
                    seen += 1
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def counted() -> float:
    return sum(s.value for m in REGISTRY.collect() if m.name == "herald_compliance_events"
               for s in m.samples if s.name.endswith("_total"))


async def sweep_hold(service: Compliance, part: int) -> tuple[float, float]:
    """One sweep of every fact (none expired), taking the batches' lock `part` buckets of the index at a time,
    while a stand-in batch wants that lock every 5 ms: the sweep's time, and the longest the stand-in was held
    up (its wake-up late, as the event loop was busy, and then waiting for the lock)."""
    waited, done = 0.0, asyncio.Event()

    async def batch() -> None:
        nonlocal waited
        while not done.is_set():
            asleep = time.perf_counter()
            await asyncio.sleep(0.005)
            async with service.processor._lock:
                waited = max(waited, time.perf_counter() - asleep - 0.005)

    stand_in = asyncio.create_task(batch())
    original, processor.SWEEP_PART = processor.SWEEP_PART, part
    started = time.perf_counter()
    try:
        await service.processor.sweep_facts(10 * 365 * 86400, time.time())  # a horizon that keeps every fact
    finally:
        processor.SWEEP_PART = original
        done.set()
        await stand_in
    return time.perf_counter() - started, waited


async def faust_ceiling(base: HeraldSettings, producer: Any, events: int, accounts: int) -> float:
    """Events/s faust's stream hands to the agent when handling a batch costs nothing (a fresh copy of the
    topics, so the group starts from the beginning like the measured run)."""
    ceiling = HeraldSettings(topic_prefix=f"{base.topic_prefix}ceiling.")
    await ensure_topics(ceiling)
    await publish_sends(producer, ceiling, events, accounts)
    handed: list[tuple[float, int]] = []  # (when, events) of each batch
    all_handed = asyncio.Event()

    async def count_only(self: Processor, batch: Any) -> None:
        handed.append((time.perf_counter(), len(batch)))
        if sum(n for _, n in handed) >= events:
            all_handed.set()

    original = Processor.handle
    Processor.handle = count_only  # type: ignore[method-assign,assignment]
    service = Compliance(ComplianceSettings(HERALD_TOPIC_PREFIX=ceiling.topic_prefix, HERALD_HTTP_PORT=0))
    try:
        await service.start()
        await asyncio.wait_for(all_handed.wait(), 600)
        (started, first), finished = handed[0], handed[-1][0]
        return (events - first) / (finished - started)  # from the first batch on, as the measured run's "after"
    finally:
        await service.stop()
        Processor.handle = original  # type: ignore[method-assign]


async def restart(settings: ComplianceSettings, producer: Any, base: HeraldSettings, more: int,
                  accounts: int) -> None:
    """A new worker on the same tables (as after a SIGKILL: the memory store is always recovered from the
    changelogs), with `more` sends waiting: how long until it processes again, and its rate then."""
    await publish_sends(producer, base, more, accounts, first=10_000_000)
    service = Compliance(settings)
    start_count = counted()
    started = time.perf_counter()
    await service.start()
    await _processed(start_count + 1)
    resumed, resumed_count = time.perf_counter(), counted()
    await _processed(start_count + more)
    rate = (start_count + more - resumed_count) / (time.perf_counter() - resumed)
    print(f"restart: {len(service.facts):,} facts and {len(service.accounts.data):,} accounts recovered; "
          f"processing again {resumed - started:.1f} s after the start (table recovery "
          f"{metrics.RECOVERY_SECONDS._value.get():.1f} s), then {rate:,.0f} events/s")
    await service.stop()


async def _processed(total: float, within: float = 600) -> None:
    deadline = time.monotonic() + within
    while counted() < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {counted():.0f} of {total:.0f} events processed in {within:.0f} s")
        await asyncio.sleep(0.01)


async def main(events: int, breaches: int, account_count: int) -> None:
    run = uuid.uuid4().hex[:8]
    base = HeraldSettings(topic_prefix=f"bench{run}.")
    await ensure_topics(base)
    producer = make_producer(base, "bench")
    await producer.start()
    accounts = [f"acc-{i}" for i in range(account_count)]
    print(f"publishing {events} MessageSent over {len(accounts)} accounts ...")
    await publish_sends(producer, base, events, account_count)

    baseline = await plain_consumer_rate(base, events)
    settings = ComplianceSettings(HERALD_TOPIC_PREFIX=base.topic_prefix, HERALD_RATE_MINIMUM_SENT=100,
                                  HERALD_HTTP_PORT=0)
    service = Compliance(settings)
    before = counted()
    rss_before = status_kib()["VmRSS"]
    await service.start()
    started = time.perf_counter()
    first: float | None = None  # when the first event was processed: the group has joined, the tables recovered
    deadline = started + 600
    while (done := counted() - before) < events:
        if first is None and done > 0:
            first, first_done = time.perf_counter(), done
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {done:.0f} of {events} events processed in 600 s")
        await asyncio.sleep(0.05 if first is not None else 0.01)  # reading the registry costs the worker's thread
    finished = time.perf_counter()
    overall = events / (finished - started)
    steady = (events - first_done) / (finished - first) if first is not None and finished > first else overall
    print(f"throughput: plain aiokafka consumer {baseline:,.0f} events/s; processor {overall:,.0f} events/s "
          f"= {overall / baseline:.3f} x including the group join and table recovery "
          f"({(first or finished) - started:.1f} s), {steady:,.0f} events/s = {steady / baseline:.3f} x after it")
    remembered, table_bytes = len(service.facts), service.facts.facts.nbytes()
    rss_growth = (status_kib()["VmRSS"] - rss_before) * 1024
    print(f"memory: {remembered:,} facts remembered, the facts table {table_bytes / remembered:,.0f} bytes a "
          f"fact (as many MB per million; {table_bytes / 2**20:,.1f} MiB in all, of which ~4 MiB of buckets "
          f"however few the facts); the process grew {rss_growth / remembered:,.0f} bytes a fact (RSS, everything "
          "included)")

    for label, part in (("in parts", processor.SWEEP_PART), ("whole, as before 2026-12-05", packed_facts.BUCKETS)):
        seconds, waited = await sweep_hold(service, part)
        print(f"sweep of {remembered:,} facts ({label}): {seconds:.2f} s; a batch waited at most {waited * 1000:,.0f} "
              "ms for it")

    # latency: breaching accounts among a steady load of other accounts' sends
    print(f"latency: {breaches} accounts breach one after another under a steady load ...")
    for k in range(breaches):
        await publish(producer, base, [sent(f"breach-{k}", i) for i in range(100)])
    # steady state: the backlog of those sends is processed before the load starts and the first breach comes
    await _processed(before + events + breaches * 100)
    stop = asyncio.Event()

    async def background() -> None:
        i = events
        while not stop.is_set():
            await publish(producer, base, [sent(accounts[(i + j) % account_count], i + j) for j in range(200)])
            i += 200
            await asyncio.sleep(0.1)  # ~2,000 events/s

    load = asyncio.create_task(background())
    await asyncio.sleep(2)  # the load runs for a while before the first breach
    produced: dict[str, float] = {}
    for k in range(breaches):
        await publish(producer, base, [bounce(f"breach-{k}", i) for i in range(7)])
        await asyncio.sleep(0.05)
        meta = (await publish(producer, base, [bounce(f"breach-{k}", 7)]))[0]  # the 8th: 8.00%
        produced[f"breach-{k}"] = meta.timestamp / 1000
        await asyncio.sleep(0.1)
    topic = base.topics("herald.compliance")
    reader = AIOKafkaConsumer(topic, **base.kafka_client_options(), group_id=None,
                              auto_offset_reset="earliest")
    await reader.start()
    suspended: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while len(suspended) < breaches and time.monotonic() < deadline:
        for records in (await reader.getmany(timeout_ms=500)).values():
            for record in records:
                event = json.loads(record.value)
                if event["type"] == "AccountSuspended":
                    suspended[event["account_id"]] = record.timestamp / 1000
    stop.set()
    await load
    await reader.stop()
    latencies = sorted((suspended[a] - produced[a]) * 1000 for a in produced if a in suspended)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    p50 = statistics.median(latencies)
    print(f"breach -> AccountSuspended: {len(latencies)}/{breaches} suspended, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
          f"max {latencies[-1]:.0f} ms")
    await service.stop()
    await restart(settings, producer, base, events // 5, account_count)
    ceiling = await faust_ceiling(base, producer, events, account_count)
    print(f"faust's ceiling: its stream hands over {ceiling:,.0f} events/s = {ceiling / baseline:.3f} x of the plain "
          f"consumer when handling a batch costs nothing; the processor reached {steady / ceiling:.0%} of it")
    await producer.stop()
    admin = AIOKafkaAdminClient(**base.kafka_client_options())
    await admin.start()
    await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(base.topic_prefix)])
    await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--breaches", type=int, default=40)
    parser.add_argument("--accounts", type=int, default=10_000, help="accounts the sends are spread over")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.breaches, args.accounts))
