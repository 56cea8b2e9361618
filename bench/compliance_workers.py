"""Two compliance workers against one (issue 17: "two workers on the 2-core machine >= 1.6x one"): the same N
MessageSent over A accounts are published to two fresh prefixes; `herald-compliance` (from .venv/bin) runs as
one process on the first, as two processes of one consumer group on the second (each then owns half of the
6 partitions and their tables). Each run is timed from the start of its processes until every event is
processed (the sum of `herald_compliance_events_total` over the processes' /metrics), and again from the first
processed event on (the group joined, the tables recovered): the ratio of the two runs is the figure. The
start-up is reported too: from the start of the processes to each one's first processed event.

    eval "$(scripts/stack env)"; .venv/bin/python -m bench.compliance_workers [--events 200000] [--accounts 10000] \
        [--standby N]

Needs the local stack. Publishing is not measured. Both runs share this machine's two cores with Kafka, so the
ratio says what a second worker gains here, not on a machine with a core per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from herald_shared.kafka import ensure_topics, make_producer
from herald_shared.settings import HeraldSettings

from .compliance_stream import publish, sent
from .harness import ServiceProcess, verdict

TARGET_RATIO = 1.6


async def processed(http: httpx.AsyncClient, url: str) -> float:
    """The events a worker has processed so far (every outcome), from its /metrics."""
    try:
        text = (await http.get(f"{url}/metrics")).text
    except httpx.TransportError:
        return 0.0  # not listening yet
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("herald_compliance_events_total{"))


async def run(workers: int, events: int, accounts: int, standby: int | None = None,
              within: float = 1800) -> tuple[float, float, list[int], list[float]]:
    """(events/s from the start, events/s from the first processed event, each worker's peak RSS in KiB, each
    worker's seconds from the start to its first processed event)."""
    settings = HeraldSettings(topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    await ensure_topics(settings)
    producer = make_producer(settings, "bench")
    await producer.start()
    try:
        for start in range(0, events, 20_000):
            await publish(producer, settings, [sent(f"acc-{i % accounts}", i)
                                               for i in range(start, min(events, start + 20_000))])
    finally:
        await producer.stop()
    env = {"HERALD_RATE_MINIMUM_SENT": "100"}
    if standby is not None:
        env["HERALD_COMPLIANCE_STANDBY_REPLICAS"] = str(standby)
    processes = [ServiceProcess("compliance", settings, env=env) for _ in range(workers)]
    started = time.perf_counter()
    first: tuple[float, float] | None = None
    firsts: dict[int, float] = {}  # worker → seconds from the start to its first processed event
    try:
        for process in processes:
            process.start()
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = started + within
            while True:
                counts = [await processed(http, p.url) for p in processes]
                done = sum(counts)
                now = time.perf_counter()
                firsts.update({i: now - started for i, n in enumerate(counts) if n > 0 and i not in firsts})
                if first is None and done > 0:
                    first = (now, done)
                if done >= events:
                    break
                for process in processes:
                    if process.process is not None and process.process.poll() is not None:
                        raise SystemExit(f"a worker exited:\n{process.log_tail()}")
                if now > deadline:
                    raise SystemExit(f"only {done:,.0f} of {events:,} events processed in {within:.0f} s")
                await asyncio.sleep(0.25)
        finished = time.perf_counter()
        peaks = [p.status_kib()["VmHWM"] for p in processes]
    finally:
        for process in processes:
            process.stop()
        admin = AIOKafkaAdminClient(**settings.kafka_client_options())
        await admin.start()
        await admin.delete_topics([t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)])
        await admin.close()
    assert first is not None
    steady = (events - first[1]) / (finished - first[0]) if finished > first[0] else events / (finished - started)
    return events / (finished - started), steady, peaks, [firsts.get(i, float("nan")) for i in range(workers)]


async def main(events: int, accounts: int, standby: int | None) -> None:
    copies = ("the service's default standby copies" if standby is None
              else f"HERALD_COMPLIANCE_STANDBY_REPLICAS={standby}")
    print(f"== compliance_workers: {events:,} MessageSent over {accounts:,} accounts, herald-compliance as one "
          f"process, then as two ({copies}) ==")
    one = await run(1, events, accounts, standby)
    two = await run(2, events, accounts, standby)
    for name, (overall, steady, peaks, firsts) in (("one worker", one), ("two workers", two)):
        print(f"{name + ':':<13} {overall:>8,.0f} events/s from the start, {steady:>8,.0f} events/s from the first "
              f"processed event; peak RSS {', '.join(f'{kib / 1024:,.0f} MiB' for kib in peaks)}; first event "
              f"{', '.join(f'{s:.1f} s' for s in firsts)} after the start")
    ratio, steady_ratio = two[0] / one[0], two[1] / one[1]
    print(f"two / one: {ratio:.2f} x from the start, {steady_ratio:.2f} x from the first processed event   "
          f"target >= {TARGET_RATIO} x: {verdict(ratio >= TARGET_RATIO)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--standby", type=int, help="standby copies of the tables (default: the service's)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.accounts, args.standby))
