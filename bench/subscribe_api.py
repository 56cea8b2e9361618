"""Throughput and latency of the subscribe API on a big list, against the subscriptions service running as its
own process (`herald-subscriptions` from .venv/bin): `wrk` with C connections (20) for D seconds (30) at
`POST /v1/lists/{list}/subscribers`, a new address in every request (`{"email": ..., "consent": {"method":
...}}`; the list is single opt-in, so each answers 201 once its events are in the read model): requests/s,
p50/p90/p99, non-2xx answers and socket errors. Then every subscriber answered 201 must be counted: once the
projection has applied all that herald.subscriptions holds, the list's active count (`GET /v1/lists/{list}`)
must have grown by at least the 201 answers (by at most the requests still in flight when wrk stopped more).

The list (N members) is filled as in bench.members_page: SubscriberAdded + SubscriberConfirmed published
straight to herald.subscriptions, waiting until the service's projection checkpoint has passed them (not
measured). Baseline in the same run: wrk at `GET /healthz` of the same process with the same connections
(HTTP, framework and wrk alone). Targets (issue): >= 600 requests/s, p99 < 50 ms. `--two-processes` sends the
requests to an API process (`HERALD_RUN_CONSUMERS=false`) beside one that folds (services/subscriptions/README.md,
"Processes"): each 201 then waits for the checkpoint the other stores.

    eval "$(scripts/stack env)"; PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m bench.subscribe_api \
        [--members 1000000] [--connections 20] [--duration 30] [--keep | --reuse-prefix benchXXXXXXXX] \
        [--two-processes]

`--keep` leaves the filled list (topics and databases of the run's prefix) for another run, and prints the
prefix; `--reuse-prefix` runs on a list that bench.members_page or this bench left, publishing only members it
lacks (the subscribers a run adds stay in the list; the check counts from the run's own start). Needs the
local stack and Debian's `wrk` (installed here when missing and root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from herald_shared.kafka import EventPublisher, ensure_topics, make_producer, partition_ids
from herald_shared.mongo import make_client
from herald_shared.settings import HeraldSettings

from . import harness
from .harness import LIST, WrkResult, verdict

TARGET_REQUESTS_PER_SECOND = 600
TARGET_P99_MS = 50


async def topic_end(settings: HeraldSettings, base_topic: str) -> harness.Positions:
    """The last offset of every non-empty partition of a topic now, as `wait_checkpoint` takes them."""
    topic = settings.topics(base_topic)
    ids = await partition_ids(settings, [topic])
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=None,
                                isolation_level="read_committed", client_id="bench-offsets")
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in ids[topic]])
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): end - 1 for tp, end in ends.items() if end > 0}


def wrk_runs(url: str, key: str, connections: int, seconds: int) -> tuple[WrkResult, WrkResult]:
    """(GET /healthz, POST subscribe): the baseline first, so the subscribe run does not warm it."""
    with tempfile.TemporaryDirectory() as tmp:
        healthz = harness.wrk_script(Path(tmp) / "healthz.lua", what="GET /healthz (baseline)")
        subscribe = harness.wrk_script(
            Path(tmp) / "subscribe.lua", what="POST subscribe, a new address per request", method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, expected=201,
            request=harness.SUBSCRIBE_REQUEST % {"run": uuid.uuid4().hex[:8]})
        baseline = harness.run_wrk(f"{url}/healthz", healthz, connections=connections, seconds=seconds)
        measured = harness.run_wrk(f"{url}/v1/lists/{LIST}/subscribers", subscribe, connections=connections,
                                   seconds=seconds)
    return baseline, measured


def ensure_wrk() -> None:
    if shutil.which("wrk") is None:
        if os.geteuid() != 0:
            raise SystemExit("wrk is missing: apt-get install wrk (Debian)")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


async def run(members: int, connections: int, seconds: int, reuse: str | None, keep: bool, split: bool) -> None:
    prefix = reuse or harness.new_prefix()
    settings = harness.settings_for(prefix)
    shape = "two processes (API, fold)" if split else "one process"
    print(f"run {prefix}: {members:,} members, wrk -c{connections} -d{seconds}s, herald-subscriptions as {shape}",
          flush=True)
    await ensure_topics(settings)
    processes = harness.subscriptions_processes(settings, split=split)
    service = processes[0]
    producer = make_producer(settings, "bench")
    mongo = make_client(settings, "bench")
    db = mongo[settings.database_name("subscriptions")]
    await producer.start()
    try:
        await harness.start_processes(processes)
        publisher = EventPublisher(producer, settings.topics)
        key = await harness.issue_api_key(publisher)
        async with harness.api_client(service.url, key) as http:
            await harness.wait_authorised(http)
            await harness.ensure_list(http)
            published, _, filled_in = await harness.fill_list(settings, publisher, members, 0, consumer_db=db,
                                                              consumer="projection")
            if published:
                print(f"filled in {filled_in:.0f} s ({published / filled_in:,.0f} members/s, not measured)",
                      flush=True)
            before = await harness.list_counts(http)
            print("wrk: GET /healthz, then POST subscribe", flush=True)
            baseline, measured = await asyncio.to_thread(wrk_runs, service.url, key, connections, seconds)
            settled = await harness.wait_checkpoint(db, "projection", await topic_end(settings, "herald.subscriptions"),
                                                    within=300, what="the subscribes", interval=0.2)
            after = await harness.list_counts(http)
    finally:
        await mongo.close()
        await producer.stop()
        harness.stop_processes(processes)
    if not keep and not reuse:
        await harness.cleanup(settings, ["subscriptions"])
    report(members, connections, seconds, before, after, settled, baseline, measured, shape)
    if keep or reuse:
        print(f"kept: prefix {prefix} (--reuse-prefix {prefix}); remove with the stack's reset")


def line(name: str, result: WrkResult) -> str:
    errors = sum(result.socket_errors.values())
    codes = ", ".join(f"{code}: {count:,}" for code, count in sorted(result.codes.items()))
    return (f"{name:44s} {result.rps:8,.0f} req/s  p50 {result.p50_ms:6.1f} ms  p90 {result.p90_ms:6.1f} ms  "
            f"p99 {result.p99_ms:6.1f} ms  max {result.max_ms:7.1f} ms  ({result.requests:,} requests: {codes}; "
            f"non-2xx {result.non2xx:,}; socket errors {errors:,}"
            + (f" {result.socket_errors}" if errors else "") + ")")


def report(members: int, connections: int, seconds: int, before: dict[str, int], after: dict[str, int],
           settled: float, baseline: WrkResult, measured: WrkResult, shape: str) -> None:
    created = measured.codes.get(201, 0)
    recorded = after["active"] - before["active"]
    errors = sum(measured.socket_errors.values())
    print()
    print(f"== subscribe_api: a list filled with {members:,} members (counts before the run: {before}), "
          f"wrk -c{connections} -d{seconds}s, {shape} ==")
    print(line("GET /healthz (baseline: HTTP + framework)", baseline))
    print(line(f"POST /v1/lists/{LIST}/subscribers, new address", measured))
    print(f"subscribe / healthz: {measured.rps / baseline.rps:.3f} x the requests/s, p50 "
          f"{measured.p50_ms / baseline.p50_ms:.1f} x, p99 {measured.p99_ms / baseline.p99_ms:.1f} x")
    clean = measured.non2xx == 0 and errors == 0
    print(f"target >= {TARGET_REQUESTS_PER_SECOND} req/s: {verdict(measured.rps >= TARGET_REQUESTS_PER_SECOND)}; "
          f"target p99 < {TARGET_P99_MS} ms: {verdict(measured.p99_ms < TARGET_P99_MS)}; "
          f"no non-2xx, no socket errors: {verdict(clean)}")
    # Requests wrk had sent but not seen answered when it stopped are recorded too, one per connection at most;
    # so is a request answered non-2xx after its events were published (503: the projection lagged).
    extra = recorded - created
    allowed = connections + measured.non2xx + errors
    exact = "exact" if extra == 0 else (f"{extra:,} more, from requests in flight when wrk stopped"
                                        if 0 < extra <= allowed else "MISMATCH")
    print(f"exactness: active {before['active']:,} -> {after['active']:,} (+{recorded:,}, settled "
          f"{settled:.1f} s after wrk) for {created:,} answers 201: {exact}; every 201 counted: "
          f"{verdict(0 <= extra <= allowed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000, help="members in the list before the run")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--duration", type=int, default=30, help="seconds of each wrk run")
    parser.add_argument("--keep", action="store_true", help="keep the filled list for another run")
    parser.add_argument("--reuse-prefix", help="run on the list a --keep run left (prefix benchXXXXXXXX)")
    parser.add_argument("--two-processes", action="store_true",
                        help="requests to an API process (HERALD_RUN_CONSUMERS=false) beside one that folds")
    args = parser.parse_args()
    ensure_wrk()
    asyncio.run(run(args.members, args.connections, args.duration, args.reuse_prefix, args.keep, args.two_processes))


if __name__ == "__main__":
    main()
