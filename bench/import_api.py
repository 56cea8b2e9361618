"""A CSV import through the real HTTP API on the local stack: rows per second until the 202 and the
process's peak RSS, next to the floor measured in the same run: publishing the same number of events
straight through EventPublisher (an import cannot record faster than its events are published).

    eval "$(scripts/stack env)"; .venv/bin/python -m bench.import_api [--rows 1000000]

The read model is not waited for (on FerretDB-SQLite it folds ~90 events/s; see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from bench.harness import cleanup
from herald_shared.apikeys import new_api_key
from herald_shared.contract.billing import ApiKeyIssued
from herald_shared.kafka import EventPublisher
from herald_subscriptions.main import Subscriptions, SubscriptionsSettings
from tests.samples import sample


def make_file(path: Path, rows: int) -> None:
    with path.open("w") as out:
        out.write("email,first_name,consent_method,consent_at,consent_ip\n")
        for i in range(rows):
            out.write(f"person{i}@example.com,First{i},webinar signup form,2026-10-01T10:00:00+00:00,"
                      f"198.51.100.{i % 250}\n")


async def chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(1 << 16):
            yield chunk


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(rows: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    settings = SubscriptionsSettings(topic_prefix=f"bench{run_id}.", database_prefix=f"bench{run_id}_",
                                     HERALD_LINK_SECRET="bench-only-secret-0123456789")
    service = Subscriptions(settings)
    await service.start()
    try:
        publisher = EventPublisher(service.producer, settings.topics)
        key_id, key, key_hash = new_api_key()
        issued = await publisher.publish(ApiKeyIssued(account_id="bench", producer="billing", payload={
            "key_id": key_id, "key_hash": key_hash, "issued_by": "bench"}))
        async with asyncio.timeout(30):
            await service.service.checkpoints.wait_until_applied([(issued.topic, issued.partition, issued.offset)])
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://bench",
                                 headers={"Authorization": f"Bearer {key}"}, timeout=3600)
        await http.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "single"})
        service.projector.request_stop()  # measure recording, not the read model

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "import.csv"
            make_file(path, rows)
            before = peak_rss_mib()
            started = time.perf_counter()
            response = await http.post("/v1/lists/news/imports", content=chunks(path),
                                       headers={"Content-Type": "text/csv"})
            elapsed = time.perf_counter() - started
        import_peak = peak_rss_mib()
        events = [sample("SubscriberConfirmed", "bench") for _ in range(2 * rows)]  # two events per row
        started = time.perf_counter()
        for i in range(0, len(events), 1000):
            await publisher.publish_many(events[i:i + 1000])
        floor = time.perf_counter() - started
        report = response.json()
        print(f"import: HTTP {response.status_code}, {report['rows_imported']:,} of {rows:,} rows imported")
        print(f"publishing {2 * rows:,} events (floor): {rows / floor:10,.0f} rows/s")
        print(f"import through the API:          {rows / elapsed:10,.0f} rows/s   "
              f"peak RSS {import_peak:.0f} MiB (before the import {before:.0f} MiB)")
        print(f"ratio import / floor: {floor / elapsed:.2f}")
    finally:
        await service.stop()
        await cleanup(settings, ["subscriptions"])  # a kept bench stack does not keep a million rows per run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    asyncio.run(run(parser.parse_args().rows))


if __name__ == "__main__":
    main()
