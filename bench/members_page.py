"""Latency of the members API on a big list, against the subscriptions service running as its own process
(`herald-subscriptions` from .venv/bin): `GET /v1/lists/{list}/subscribers?status=active&limit=100` (the
first page; pages followed through `next_cursor`; deep pages at cursors of random members across the whole
list) and `status=unsubscribed` (a few thousand unsubscribed members among them), one request at a time over
one keep-alive connection, p50/p99 of each.

The list (N members, the first U of them unsubscribed) is filled by publishing SubscriberAdded +
SubscriberConfirmed (+ SubscriberUnsubscribed) straight to herald.subscriptions and waiting until the
service's projection checkpoint has passed them (not measured). Baselines in the same run: `GET /healthz` of
the same process (HTTP and framework alone), and the store alone: the same `_id` range read of `list_members`
and `$in` load of the page's 100 subscribers with PyMongo from this process. Target (issue): p99 < 100 ms.

    eval "$(scripts/stack env)"; PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m bench.members_page \
        [--members 1000000] [--unsubscribed 5000] [--requests 500] [--keep | --reuse-prefix benchXXXXXXXX]

`--keep` leaves the filled list (topics and databases of the run's prefix) for another run or for
bench.subscribe_api, and prints the prefix; `--reuse-prefix` runs on it, publishing only members it lacks.
Needs the local stack. On an unpatched FerretDB (no deploy/local/ferretdb/*.patch) every `_id` lookup scans:
expect seconds per page at scale; run it small there (--members 10000).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import httpx

from herald_shared.kafka import EventPublisher, ensure_topics, make_producer
from herald_shared.mongo import make_client
from herald_shared.readmodel import compose, load, prefix_range
from herald_shared.settings import HeraldSettings

from . import harness
from .harness import ACCOUNT, LIST, ServiceProcess, percentile, verdict

TARGET_P99_MS = 100


def cursor_at(status: str, index: int) -> str:
    """The API's cursor (`<status>.<subscriber id>`, as `api.encode_cursor` writes it) just after member `index`
    of the fill."""
    return f"{status}.{harness.subscriber_id(ACCOUNT, LIST, harness.email_of(index))}"


async def timed(requests: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    latencies = []
    for i in range(requests):
        began = time.perf_counter()
        await one(i)
        latencies.append(time.perf_counter() - began)
    return latencies


async def page(http: httpx.AsyncClient, *, status: str | None, cursor: str | None = None,
               expect_items: bool = True) -> str | None:
    params: dict[str, str | int] = {"limit": 100}
    if status:
        params["status"] = status
    if cursor:
        params["cursor"] = cursor
    response = await http.get(f"/v1/lists/{LIST}/subscribers", params=params)
    if response.status_code != 200:
        raise RuntimeError(f"members page answered {response.status_code}: {response.text[:300]}")
    body = response.json()
    if expect_items and not body["items"]:
        raise RuntimeError(f"an empty page for status={status} cursor={cursor}")
    return body["next_cursor"]  # type: ignore[no-any-return]


async def measure(http: httpx.AsyncClient, settings: HeraldSettings, members: int, unsubscribed: int,
                  requests: int) -> dict[str, list[float]]:
    rng = random.Random(1)
    active_indices = [rng.randrange(unsubscribed, members) for _ in range(requests)]
    unsubscribed_indices = [rng.randrange(0, unsubscribed) for _ in range(requests)] if unsubscribed else []
    results: dict[str, list[float]] = {}

    async def healthz(_: int) -> None:
        (await http.get("/healthz")).raise_for_status()

    await timed(20, healthz)  # warm-up: connection, key verification, caches
    await timed(20, lambda _: page(http, status="active"))
    results["GET /healthz (baseline: HTTP + framework)"] = await timed(requests, healthz)
    results["active, first page"] = await timed(requests, lambda _: page(http, status="active"))
    following: list[str | None] = [None]

    async def follow(_: int) -> None:
        # At the end (no next_cursor; or an empty page after an exactly full last one) start again.
        following[0] = await page(http, status="active", cursor=following[0], expect_items=False)

    results["active, pages followed by next_cursor"] = await timed(requests, follow)
    results["active, deep pages at random cursors"] = await timed(
        requests, lambda i: page(http, status="active", cursor=cursor_at("active", active_indices[i]),
                                 expect_items=False))
    if unsubscribed:
        results["unsubscribed, first page"] = await timed(requests, lambda _: page(http, status="unsubscribed"))
        results["unsubscribed, pages at random cursors"] = await timed(
            requests, lambda i: page(http, status="unsubscribed",
                                     cursor=cursor_at("unsubscribed", unsubscribed_indices[i]), expect_items=False))
    results["all statuses, first page"] = await timed(requests, lambda _: page(http, status=None))

    mongo = make_client(settings, "bench-store")
    db = mongo[settings.database_name("subscriptions")]
    try:
        async def store_page(i: int) -> None:
            after = f"{ACCOUNT}/{LIST}/active/" + harness.subscriber_id(ACCOUNT, LIST,
                                                                       harness.email_of(active_indices[i]))
            bounds = prefix_range(ACCOUNT, LIST, "active")
            cursor = db["list_members"].find({"_id": {"$gt": after, "$lt": bounds["$lt"]}}, {"_id": 1})
            keys = [doc["_id"] async for doc in cursor.sort("_id", 1).limit(100)]
            await load(db["subscribers"], (compose(ACCOUNT, k.rsplit("/", 1)[1]) for k in keys))

        await timed(20, store_page)
        results["store alone: the deep pages' range read + $in load (baseline)"] = await timed(requests, store_page)
    finally:
        await mongo.close()
    return results


async def run(members: int, unsubscribed: int, requests: int, reuse: str | None, keep: bool) -> None:
    prefix = reuse or harness.new_prefix()
    settings = harness.settings_for(prefix)
    unsubscribed = min(unsubscribed, members // 2)
    print(f"run {prefix}: {members:,} members, {unsubscribed:,} of them unsubscribed", flush=True)
    await ensure_topics(settings)
    service = ServiceProcess("subscriptions", settings)
    producer = make_producer(settings, "bench")
    mongo = make_client(settings, "bench")
    await producer.start()
    try:
        service.start()
        await service.wait_ready()
        publisher = EventPublisher(producer, settings.topics)
        key = await harness.issue_api_key(publisher)
        async with harness.api_client(service.url, key) as http:
            await harness.wait_authorised(http)
            await harness.ensure_list(http)
            published, _, seconds = await harness.fill_list(
                settings, publisher, members, unsubscribed,
                consumer_db=mongo[settings.database_name("subscriptions")], consumer="projection")
            if published:
                print(f"filled in {seconds:.0f} s ({published / seconds:,.0f} members/s, not measured)", flush=True)
            counts = await harness.list_counts(http)
            results = await measure(http, settings, members, unsubscribed, requests)
    finally:
        await mongo.close()
        await producer.stop()
        code = service.stop()
        if code not in (0, None):
            print(f"herald-subscriptions exited with {code}; log {service.log_path}:\n{service.log_tail()}")
    if not keep and not reuse:
        await harness.cleanup(settings, ["subscriptions"])
    report(members, unsubscribed, requests, counts, results)
    if keep or reuse:
        print(f"kept: prefix {prefix} (--reuse-prefix {prefix}); remove with the stack's reset")


def report(members: int, unsubscribed: int, requests: int, counts: dict[str, int],
           results: dict[str, list[float]]) -> None:
    print()
    print(f"== members_page: {members:,} members ({counts}), {requests} sequential requests each, limit=100 ==")
    baseline = harness.percentile(results["GET /healthz (baseline: HTTP + framework)"], 50)
    store = results["store alone: the deep pages' range read + $in load (baseline)"]
    met = True
    for name, latencies in results.items():
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
        line = f"{name:64s} p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {max(latencies) * 1000:7.1f} ms"
        if "baseline" not in name:
            met = met and p99 < TARGET_P99_MS
            line += f"  p50 = {p50 / (baseline * 1000):5.1f} x healthz  {verdict(p99 < TARGET_P99_MS)}"
        print(line)
    deep = results["active, deep pages at random cursors"]
    print(f"deep pages through the API / the store alone: p50 {percentile(deep, 50) / percentile(store, 50):.2f} x, "
          f"p99 {percentile(deep, 99) / percentile(store, 99):.2f} x")
    print(f"target p99 < {TARGET_P99_MS} ms on every members query: {verdict(met)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--unsubscribed", type=int, default=5_000, help="of the members (the first ones)")
    parser.add_argument("--requests", type=int, default=500, help="requests per kind of page")
    parser.add_argument("--keep", action="store_true", help="keep the filled list for another run")
    parser.add_argument("--reuse-prefix", help="run on the list a --keep run left (prefix benchXXXXXXXX)")
    args = parser.parse_args()
    asyncio.run(run(args.members, args.unsubscribed, args.requests, args.reuse_prefix, args.keep))


if __name__ == "__main__":
    main()
