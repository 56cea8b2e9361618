"""A CSV import until its LAST member is visible through the members API, end to end, against the subscriptions
service running as processes of its own (`herald-subscriptions` from .venv/bin): rows/s from the request until
`GET /v1/lists/{list}` counts every imported row as active (and the last row's subscriber answers), the time
the first and the last slice of rows (100,000 by default) took to become visible, and the service's peak RSS
above its idle RSS (/proc/<pid>/status: VmHWM, reset just before the import, minus VmRSS before it; summed
over its processes). Then the members are paged through
`GET /v1/lists/{list}/subscribers?status=active&limit=1000` and counted.

The service runs as two processes, as the README's "Processes" describes: one serves the API
(`HERALD_RUN_CONSUMERS=false`: the import is decided and published there), the other folds the read model
(its API is not used). `--one-process` runs the single process that does both instead.

Baselines in the same run, in this process: publishing the same events (SubscriberAdded + SubscriberConfirmed
per row) straight through EventPublisher to a topic of their own, and consuming them back raw
(`read_from_start` + `parse_event`): an import cannot be visible faster than either.
Targets (issue): >= 5,000 rows/s end to end; peak RSS < 200 MB above idle.

    eval "$(scripts/stack env)"; PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m bench.import_visible \
        [--rows 1000000] [--slice 100000] [--no-walk] [--keep] [--one-process]

Needs the local stack (`scripts/stack start`). MB here are 10^6 bytes. On an unpatched FerretDB (no
deploy/local/ferretdb/*.patch yet) every `_id` lookup scans and write commands of 100+ updates hang: expect
it to be slow or to stall; run it small there (--rows 20000).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from herald_shared.kafka import BULK_BATCH_BYTES, EventPublisher, ensure_topics, make_producer
from herald_shared.settings import HeraldSettings
from herald_shared.topics import spec

from . import harness
from .harness import ACCOUNT, LIST, ServiceProcess, verdict

TARGET_ROWS_PER_SECOND = 5_000
TARGET_PEAK_MB = 200
SAMPLE_EVERY = 0.5


def make_file(path: Path, rows: int) -> None:
    with path.open("w") as out:
        out.write("email,first_name,consent_method,consent_at,consent_ip\n")
        for i in range(rows):
            out.write(f"{harness.email_of(i)},First{i},webinar signup form,{harness.CONSENT_AT},"
                      f"198.51.100.{i % 250}\n")


async def chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(1 << 16):
            yield chunk


async def floors(prefix: str, rows: int) -> tuple[float, float]:
    """(seconds to publish the import's 2 x rows events through EventPublisher, seconds to read them back and
    parse each), on a topic of their own."""
    floor = HeraldSettings(topic_prefix=f"{prefix}floor.", database_prefix=f"{prefix}floor_")
    await ensure_topics(floor, [spec("herald.subscriptions")])
    producer = make_producer(floor, "bench-floor", batch_bytes=BULK_BATCH_BYTES)  # as the service's
    await producer.start()
    try:
        publish_seconds, _ = await harness.publish_members(EventPublisher(producer, floor.topics), range(rows),
                                                           progress="publish floor")
    finally:
        await producer.stop()
    return publish_seconds, await harness.raw_read(floor, 2 * rows)


def time_at(samples: list[tuple[float, int]], count: int) -> float:
    """When `count` members were visible, interpolated between the samples around it."""
    before = (0.0, 0)
    for t, n in samples:
        if n >= count:
            t0, n0 = before
            return t if n == n0 else t0 + (t - t0) * (count - n0) / (n - n0)
        before = (t, n)
    return math.nan


async def run(rows: int, slice_rows: int, walk: bool, keep: bool, within: float, one_process: bool) -> None:
    prefix = harness.new_prefix()
    settings = harness.settings_for(prefix)
    shape = "one process" if one_process else "two processes (API, fold)"
    print(f"run {prefix}: {rows:,} rows, herald-subscriptions as {shape}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "import.csv"
        make_file(path, rows)
        size_mib = path.stat().st_size / 2**20
        await ensure_topics(settings)
        processes = harness.subscriptions_processes(settings, split=not one_process)
        service = processes[0]
        producer = make_producer(settings, "bench")
        await producer.start()
        try:
            await harness.start_processes(processes)
            key = await harness.issue_api_key(EventPublisher(producer, settings.topics))
            async with harness.api_client(service.url, key, timeout=7200) as http:
                await harness.wait_authorised(http)
                await harness.ensure_list(http)
                publish_seconds, consume_seconds = await floors(prefix, rows)
                await asyncio.sleep(1)
                idle_kib = sum(p.status_kib()["VmRSS"] for p in processes)
                peak_reset = all([p.reset_peak() for p in processes])
                result = await measure(http, processes, path, rows, within)
                peak_kib = sum(p.status_kib()["VmHWM"] for p in processes) if peak_reset else result["max_rss_kib"]
                walked = await walk_members(http) if walk and result["visible"] is not None else None
        finally:
            await producer.stop()
            harness.stop_processes(processes)
    if not keep:
        await harness.cleanup(settings, ["subscriptions"], [f"{prefix}floor."])
    report(rows, size_mib, slice_rows, publish_seconds, consume_seconds, idle_kib, peak_kib, peak_reset, result,
           walked, shape)
    if keep:
        print(f"kept: topics {prefix}.*, databases {prefix}_* (logs {', '.join(str(p.log_path) for p in processes)})")


async def measure(http: httpx.AsyncClient, processes: list[ServiceProcess], path: Path, rows: int,
                  within: float) -> dict[str, Any]:
    """POST the file; sample the active count every 0.5 s until all imported rows are visible. `max_rss_kib`:
    the largest sum of the processes' RSS sampled."""
    samples: list[tuple[float, int]] = []
    max_rss = 0
    started = time.perf_counter()
    upload = asyncio.create_task(http.post(f"/v1/lists/{LIST}/imports", content=chunks(path),
                                           headers={"Content-Type": "text/csv"}))
    accepted: float | None = None
    report: dict[str, Any] = {}
    visible: float | None = None
    counts: dict[str, int] = {}
    last_member = harness.subscriber_id(ACCOUNT, LIST, harness.email_of(rows - 1))
    while True:
        await asyncio.sleep(SAMPLE_EVERY)
        now = time.perf_counter() - started
        max_rss = max(max_rss, sum(p.status_kib()["VmRSS"] for p in processes))
        for process in processes:
            if process.process is not None and process.process.poll() is not None:
                raise RuntimeError(f"herald-subscriptions exited during the import:\n{process.log_tail()}")
        if accepted is None and upload.done():
            response = upload.result()
            accepted = time.perf_counter() - started
            if response.status_code != 202:
                raise RuntimeError(f"import answered {response.status_code}: {response.text[:500]}")
            report = response.json()
        counts = await harness.list_counts(http)
        samples.append((now, counts["active"]))
        if accepted is not None and counts["active"] >= report["rows_imported"]:
            last = await http.get(f"/v1/subscribers/{last_member}")
            if last.status_code == 200:
                visible = time.perf_counter() - started
                samples.append((visible, counts["active"]))
                break
        if now > within:
            print(f"gave up after {within:.0f} s: {counts} visible", flush=True)
            if not upload.done():
                upload.cancel()
            break
    return {"samples": samples, "accepted": accepted, "visible": visible, "report": report, "counts": counts,
            "max_rss_kib": max_rss}


async def walk_members(http: httpx.AsyncClient) -> tuple[int, float, list[float]]:
    """Page through every active member, 1,000 a page: (members, seconds, page latencies)."""
    seen, latencies, cursor = 0, [], None
    started = time.perf_counter()
    while True:
        params: dict[str, str | int] = {"status": "active", "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        began = time.perf_counter()
        response = await http.get(f"/v1/lists/{LIST}/subscribers", params=params)
        latencies.append(time.perf_counter() - began)
        response.raise_for_status()
        page = response.json()
        seen += len(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return seen, time.perf_counter() - started, latencies


def report(rows: int, size_mib: float, slice_rows: int, publish_seconds: float, consume_seconds: float,
           idle_kib: int, peak_kib: int, peak_reset: bool, result: dict[str, Any],
           walked: tuple[int, float, list[float]] | None, shape: str) -> None:
    imported = result["report"].get("rows_imported", 0)
    visible, accepted, samples = result["visible"], result["accepted"], result["samples"]
    publish_rate, consume_rate = rows / publish_seconds, rows / consume_seconds
    rate = imported / visible if visible else 0.0
    peak_mb = (peak_kib - idle_kib) * 1024 / 1e6
    part = min(slice_rows, max(1, imported // 10))
    print()
    print(f"== import_visible: {rows:,} rows ({size_mib:.0f} MiB CSV) through herald-subscriptions, {shape} ==")
    print(f"floor, publishing {2 * rows:,} events through EventPublisher: {publish_rate:10,.0f} rows/s "
          f"({publish_seconds:.1f} s)")
    print(f"floor, consuming them back (read_from_start + parse_event): {consume_rate:10,.0f} rows/s "
          f"({consume_seconds:.1f} s)")
    if accepted is not None:
        print(f"import answered 202 after {accepted:.1f} s: {imported:,} imported, "
              f"{result['report'].get('rows_rejected', 0):,} rejected ({rows / accepted:,.0f} rows/s recorded)")
    if visible:
        first = time_at(samples, part)
        last = visible - time_at(samples, imported - part + 1)
        print(f"all {imported:,} visible after {visible:.1f} s: {rate:10,.0f} rows/s end to end   "
              f"target >= {TARGET_ROWS_PER_SECOND:,}: {verdict(rate >= TARGET_ROWS_PER_SECOND)}")
        print(f"ratio end to end / publish floor: {rate / publish_rate:.3f}; / consume floor: "
              f"{rate / consume_rate:.3f}")
        print(f"first {part:,} rows visible after {first:.1f} s ({part / first:,.0f} rows/s, from the request); "
              f"last {part:,} took {last:.1f} s ({part / last:,.0f} rows/s); last/first time: {last / first:.2f}")
        first_seen = next((t for t, n in samples if n > 0), math.nan)
        print(f"first members seen at the sample of {first_seen:.1f} s; visible at the 202: "
              f"{_visible_at(samples, accepted):,} rows")
    else:
        print(f"NOT all visible: counts {result['counts']} after {samples[-1][0]:.0f} s   "
              f"target >= {TARGET_ROWS_PER_SECOND:,} rows/s: NOT MET")
    print(f"service RSS, its processes together: idle {idle_kib / 1024:.0f} MiB, peak {peak_kib / 1024:.0f} MiB "
          f"({'VmHWM reset before the import' if peak_reset else 'max of VmRSS samples; VmHWM reset refused'}): "
          f"{peak_mb:.0f} MB above idle   target < {TARGET_PEAK_MB} MB: {verdict(peak_mb < TARGET_PEAK_MB)}")
    if walked is not None:
        seen, seconds, latencies = walked
        print(f"members API walk, status=active limit=1000: {seen:,} members in {len(latencies):,} pages, "
              f"{seconds:.1f} s ({seen / seconds:,.0f} members/s), page p50 "
              f"{harness.percentile(latencies, 50) * 1000:.0f} ms p99 {harness.percentile(latencies, 99) * 1000:.0f} "
              f"ms: {'all there' if seen == imported else f'MISMATCH, expected {imported:,}'}")


def _visible_at(samples: list[tuple[float, int]], t: float) -> int:
    return max((n for s, n in samples if s <= t), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--slice", type=int, default=100_000,
                        help="rows in the first/last slice compared (at most a tenth of the rows)")
    parser.add_argument("--no-walk", action="store_true", help="skip paging through the members afterwards")
    parser.add_argument("--keep", action="store_true", help="keep the run's topics and databases")
    parser.add_argument("--one-process", action="store_true",
                        help="one herald-subscriptions process that serves the API and folds (default: two)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for visibility")
    args = parser.parse_args()
    within = args.timeout or max(600.0, args.rows / 200)
    asyncio.run(run(args.rows, args.slice, not args.no_walk, args.keep, within, args.one_process))


if __name__ == "__main__":
    main()
