"""Rebuild of the subscriptions read model from offset 0, against the subscriptions service running as its own
process (`herald-subscriptions` from .venv/bin): N members (1,000,000: SubscriberAdded + SubscriberConfirmed
each, 2 x N events, after a ListCreated and an ApiKeyIssued) are published to a fresh prefix's topics, then the
service is started on an empty database and timed from its start until its projection checkpoint
(`checkpoints.projection`) has passed the last member event, polled by `_id`. Then the list's counts
(`GET /v1/lists/{list}`) must be exactly N active.

Baseline in the same run: consuming the same topic raw (`read_from_start` + `parse_event`) in this process,
with the garbage collector tuned as a service's (`lifecycle.tune_gc`), once before the rebuild and once after
it (this 2-core machine's speed drifts within minutes); the ratio is the mean of the two baseline times over
the rebuild's (1.0 = as fast as reading and parsing alone).
Target (issue): >= 0.3 x.

    eval "$(scripts/stack env)"; PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m bench.projection_rebuild \
        [--members 1000000] [--keep] [--via service|rebuild] [--service subscriptions|delivery]

`--via rebuild` times the upgrade's command instead (`python -m herald_subscriptions.rebuild`, README
"Upgrading": the read model dropped and folded again from offset 0, then marked), from its start to its exit,
reads the list's counts from the read model it leaves, and prints the command's peak RSS (its VmHWM, from the
kernel's rusage of the child). `--service delivery` (with `--via rebuild`) times delivery's instead
(`python -m herald_delivery.rebuild`: its audience folded from the same events) and counts its members by status.

Needs the local stack. Publishing the events is not measured (its rate is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time

from herald_shared.kafka import EventPublisher, ensure_topics, make_producer
from herald_shared.lifecycle import tune_gc
from herald_shared.mongo import make_client
from herald_shared.settings import HeraldSettings

from . import harness
from .harness import ServiceProcess, verdict

TARGET_RATIO = 0.3


async def run(members: int, keep: bool, via: str, service: str = "subscriptions") -> None:
    prefix = harness.new_prefix()
    settings = harness.settings_for(prefix)
    events = 2 * members + 1
    print(f"run {prefix}: {members:,} members ({events:,} events on herald.subscriptions)", flush=True)
    await ensure_topics(settings)
    producer = make_producer(settings, "bench")
    await producer.start()
    try:
        publisher = EventPublisher(producer, settings.topics)
        key = await harness.issue_api_key(publisher)
        await publisher.publish(harness.list_created())
        print(f"publishing {members:,} members (not measured)", flush=True)
        publish_seconds, positions = await harness.publish_members(publisher, range(members), progress="members")
    finally:
        await producer.stop()
    print(f"published at {2 * members / publish_seconds:,.0f} events/s; baseline: reading them raw", flush=True)
    tune_gc()
    raw_before = await harness.raw_read(settings, events)

    peak_kib = 0
    if via == "rebuild":
        ready, rebuild_seconds, counts = await rebuild_command(settings, service)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the only child: the command
        log_path = "(the command's output above)"
    else:
        ready, rebuild_seconds, counts, log_path = await service_from_offset_0(settings, key, positions, events)
    raw_after = await harness.raw_read(settings, events)
    print(f"raw read {events / raw_before:,.0f} events/s before the rebuild, {events / raw_after:,.0f} after",
          flush=True)
    if not keep:
        await harness.cleanup(settings, [service])
    report(members, events, (raw_before + raw_after) / 2, ready, rebuild_seconds, counts, via, service)
    if peak_kib:
        print(f"peak RSS of the command (VmHWM): {peak_kib / 1024:,.0f} MiB")
    if keep:
        print(f"kept: topics {prefix}.*, databases {prefix}_* (log {log_path})")


async def service_from_offset_0(settings: HeraldSettings, key: str, positions: harness.Positions,
                                events: int) -> tuple[float, float, dict[str, int], str]:
    """herald-subscriptions started on the empty database: until its checkpoint is past the last member event."""
    print("rebuild: herald-subscriptions from offset 0", flush=True)
    service = ServiceProcess("subscriptions", settings)
    mongo = make_client(settings, "bench")
    try:
        started = time.perf_counter()
        service.start()
        await service.wait_ready(within=600)
        ready = time.perf_counter() - started
        await harness.wait_checkpoint(mongo[settings.database_name("subscriptions")], "projection", positions,
                                      within=max(600, events / 200), what="the rebuild", interval=0.5)
        rebuild_seconds = time.perf_counter() - started
        async with harness.api_client(service.url, key) as http:
            await harness.wait_authorised(http)
            counts = await harness.list_counts(http)
    finally:
        await mongo.close()
        code = service.stop()
        if code not in (0, None):
            print(f"herald-subscriptions exited with {code}; log {service.log_path}:\n{service.log_tail()}")
    return ready, rebuild_seconds, counts, str(service.log_path)


async def rebuild_command(settings: HeraldSettings, service: str) -> tuple[float, float, dict[str, int]]:
    """`python -m herald_<service>.rebuild` run to its exit; the list's counts as the read model holds them."""
    print(f"rebuild: python -m herald_{service}.rebuild", flush=True)
    env = ServiceProcess(service, settings).env
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", f"herald_{service}.rebuild", env=env,
                                                   cwd=harness.ROOT)
    code = await process.wait()
    rebuild_seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"the rebuild exited with {code}")
    statuses = ("pending", "active", "unsubscribed", "suppressed")
    mongo = make_client(settings, "bench")
    try:
        db = mongo[settings.database_name(service)]
        if service == "delivery":
            counts = {status: await db["members"].count_documents({"status": status}) for status in statuses}
        else:
            doc = await db["list_counts"].find_one({"_id": f"{harness.ACCOUNT}/{harness.LIST}"})
            counts = {status: int((doc or {}).get("counts", {}).get(status, 0)) for status in statuses}
    finally:
        await mongo.close()
    return 0.0, rebuild_seconds, counts


def report(members: int, events: int, raw_seconds: float, ready: float, rebuild_seconds: float,
           counts: dict[str, int], via: str = "service", service: str = "subscriptions") -> None:
    ratio = raw_seconds / rebuild_seconds
    what = "delivery audience" if service == "delivery" else "subscriptions read model"
    print()
    print(f"== projection_rebuild: {events:,} events ({members:,} members) into an empty {what}, "
          f"via {via} ==")
    print(f"baseline, reading them raw (read_from_start + parse_event), mean of before and after: "
          f"{raw_seconds:7.1f} s = "
          f"{events / raw_seconds:10,.0f} events/s")
    if via == "rebuild":
        print(f"rebuild, `python -m herald_{service}.rebuild` from its start to its exit: "
              f"{rebuild_seconds:7.1f} s = {events / rebuild_seconds:10,.0f} events/s")
    else:
        print(f"rebuild, from the process's start to the checkpoint past the last event: {rebuild_seconds:7.1f} s = "
              f"{events / rebuild_seconds:10,.0f} events/s (ready after {ready:.1f} s; "
              f"{events / (rebuild_seconds - ready):,.0f} events/s from then)")
    print(f"rebuild / raw read: {ratio:.3f} x   target >= {TARGET_RATIO} x: {verdict(ratio >= TARGET_RATIO)}")
    exact = counts.get("active") == members and sum(counts.values()) == members
    print(f"counts after the rebuild: {counts}: {'exact' if exact else f'MISMATCH, expected {members:,} active'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000, help="members published (2 events each)")
    parser.add_argument("--keep", action="store_true", help="keep the run's topics and databases")
    parser.add_argument("--via", choices=("service", "rebuild"), default="service",
                        help="service: herald-subscriptions started on the empty database (default); rebuild: the "
                             "upgrade's command, python -m herald_subscriptions.rebuild")
    parser.add_argument("--service", choices=("subscriptions", "delivery"), default="subscriptions",
                        help="whose rebuild command --via rebuild runs (delivery: its audience)")
    args = parser.parse_args()
    if args.service == "delivery" and args.via != "rebuild":
        parser.error("--service delivery needs --via rebuild")
    asyncio.run(run(args.members, args.keep, args.via, args.service))


if __name__ == "__main__":
    main()
