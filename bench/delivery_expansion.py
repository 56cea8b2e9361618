"""Expansion of a campaign to a big audience, against the delivery service running as its own process
(`herald-delivery` from .venv/bin): the time from publishing CampaignQueued for a list of N active members
(100,000) until every one of its N jobs is in delivery's ledger: the control consumer's checkpoint
(`checkpoints.control`) has passed the CampaignQueued, and the expansion beside it has marked the campaign's
document with `expanded_jobs` (it does so once every job is written), both polled by `_id` every 0.1 s. Then, not
timed: the ledger's jobs counted, the last member's job looked up by its message id, the sender's queue depth
(`herald_delivery_queue_depth` on /metrics) and the control handler's own time for the CampaignQueued
(`herald_handler_seconds`: the expansion is no longer part of it).

The audience: an approved account (AccountOpened + AccountApproved on herald.billing), ListCreated and N x
SubscriberAdded + SubscriberConfirmed published straight to herald.subscriptions, waiting until delivery's
audience projection checkpoint has passed them (not measured). Nothing is sent: the campaign's `send_at` is a
day ahead, so no job is due, and the relay is a local port nobody listens on. Baseline in the same run: reading
the same member events raw from the topic (`read_from_start` + `parse_event`). Target (issue): < 30 s for
100,000 members (scaled in proportion for other sizes).

    eval "$(scripts/stack env)"; PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m bench.delivery_expansion \
        [--members 100000] [--keep]

Needs the local stack.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from herald_delivery.domain import message_id_for
from herald_shared.contract import Event
from herald_shared.contract.billing import AccountApproved, AccountOpened
from herald_shared.contract.campaigns import CampaignQueued
from herald_shared.kafka import EventPublisher, ensure_topics, make_producer
from herald_shared.mongo import make_client

from . import harness
from .harness import ACCOUNT, LIST, ServiceProcess, verdict

TARGET_SECONDS_PER_100K = 30.0
BODY = "Dear {{ first_name | default('friend') }}, the November news. " * 20


def account_events() -> list[Event]:
    return [AccountOpened(account_id=ACCOUNT, producer="billing", payload={
                "company_name": "Bench Ltd", "registered_email": "owner@bench.example", "main_username": "owner",
                "terms_accepted_at": "2026-11-01T00:00:00Z"}),
            AccountApproved(account_id=ACCOUNT, producer="billing", payload={"reviewer": "bench"}),
            harness.list_created()]


def campaign_queued(campaign_id: str) -> Event:
    """Due a day from now: the jobs wait in the ledger and the sender's queue, none is sent."""
    return CampaignQueued(account_id=ACCOUNT, producer="campaigns", payload={
        "campaign_id": campaign_id, "list_id": LIST, "segment": {"field_equals": {}}, "review_required": False,
        "send_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "content": {"subject": "November news", "from_name": "Bench News", "from_email": "news@bench.example",
                    "html_body": f"<p>{BODY}</p><a href='https://bench.example/'>more</a>", "text_body": BODY}})


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The service's /metrics as {(sample name, sorted labels): value}."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.get("/metrics")
        response.raise_for_status()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


async def queue_depth(url: str, expected: int, within: float = 30) -> float:
    """`herald_delivery_queue_depth` summed over its gates, once it shows `expected` (it is refreshed
    periodically) or after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = sum(v for (name, _), v in (await scrape(url)).items() if name == "herald_delivery_queue_depth")
        if found >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def expanded(db: Any, campaign_id: str, *, within: float) -> None:
    """Wait until the campaign's document has `expanded_jobs` (polled by `_id`)."""
    deadline = time.monotonic() + within
    while (doc := await db["campaigns"].find_one({"_id": f"{ACCOUNT}:{campaign_id}"})) is None or \
            "expanded_jobs" not in doc:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the campaign's expansion: not done after {within:.0f} s")
        await asyncio.sleep(0.1)


async def run(members: int, keep: bool) -> None:
    prefix = harness.new_prefix()
    settings = harness.settings_for(prefix)
    campaign_id = f"c{uuid.uuid4().hex[:8]}"
    print(f"run {prefix}: {members:,} members, campaign {campaign_id}", flush=True)
    await ensure_topics(settings)
    service = ServiceProcess("delivery", settings, env={
        "HERALD_SMTP_HOST": "127.0.0.1", "HERALD_SMTP_PORT": str(harness.free_port()),
        "HERALD_INBOUND_SMTP_PORT": "0", "HERALD_HELD_REPORT_SECONDS": "1"})
    producer = make_producer(settings, "bench")
    mongo = make_client(settings, "bench")
    db = mongo[settings.database_name("delivery")]
    await producer.start()
    try:
        service.start()
        await service.wait_ready()
        publisher = EventPublisher(producer, settings.topics)
        await publisher.publish_many(account_events())
        print(f"filling: {members:,} members (not measured)", flush=True)
        _, published = await harness.publish_members(publisher, range(members), progress="members")
        filled_in = await harness.wait_checkpoint(db, "audience", published, within=max(600, members / 50),
                                                  what="the audience projection", interval=0.5)
        print(f"audience applied {filled_in:.0f} s after the last publish (not measured)", flush=True)
        raw_seconds = await harness.raw_read(settings, 2 * members + 1)

        started = time.perf_counter()
        queued = harness.last_positions([await publisher.publish(campaign_queued(campaign_id))])
        await harness.wait_checkpoint(db, "control", queued, within=max(600, members / 20),
                                      what="the control consumer", interval=0.1)
        # The expansion runs beside the control consumer: done when the campaign says how many jobs it wrote.
        await expanded(db, campaign_id, within=max(600, members / 20))
        expansion_seconds = time.perf_counter() - started

        jobs = await db["jobs"].count_documents({"campaign_id": campaign_id})
        last = harness.subscriber_id(ACCOUNT, LIST, harness.email_of(members - 1))
        last_found = await db["jobs"].find_one({"_id": message_id_for(ACCOUNT, campaign_id, last)}) is not None
        depth = await queue_depth(service.url, members)
        metrics = await scrape(service.url)
        labels = (("consumer", f"{settings.topic_prefix}delivery.control"),
                  ("topic", settings.topics("herald.campaigns")), ("type", "CampaignQueued"))
        handler_seconds = metrics.get(("herald_handler_seconds_sum", labels), float("nan"))
        sent = sum(v for (name, _), v in metrics.items() if name == "herald_delivery_messages_total")
    finally:
        await mongo.close()
        await producer.stop()
        code = service.stop()
        if code not in (0, None):
            print(f"herald-delivery exited with {code}; log {service.log_path}:\n{service.log_tail()}")
    if not keep:
        await harness.cleanup(settings, ["delivery"])
    report(members, raw_seconds, expansion_seconds, handler_seconds, jobs, last_found, depth, sent)
    if keep:
        print(f"kept: topics {prefix}.*, databases {prefix}_* (log {service.log_path})")


def report(members: int, raw_seconds: float, expansion_seconds: float, handler_seconds: float, jobs: int,
           last_found: bool, depth: float, sent: float) -> None:
    target = TARGET_SECONDS_PER_100K * members / 100_000
    raw_rate, rate = members / raw_seconds, members / expansion_seconds
    print()
    print(f"== delivery_expansion: a campaign to {members:,} active members through herald-delivery ==")
    print(f"baseline, reading the {2 * members + 1:,} events of herald.subscriptions raw (read_from_start + "
          f"parse_event): {raw_seconds:.1f} s = {raw_rate:10,.0f} members/s")
    print(f"CampaignQueued -> every job in the ledger (the campaign marked expanded): {expansion_seconds:.1f} s = "
          f"{rate:10,.0f} jobs/s; the control handler itself {handler_seconds:.3f} s")
    print(f"expansion / raw read: {rate / raw_rate:.3f} x the members/s ({expansion_seconds / raw_seconds:.1f} x "
          f"the time)")
    print(f"target < {target:.0f} s for {members:,} members (30 s per 100,000): {verdict(expansion_seconds < target)}")
    ledger = "exact" if jobs == members and last_found else "MISMATCH"
    print(f"ledger: {jobs:,} jobs of the campaign (last member's job {'found' if last_found else 'MISSING'}): "
          f"{ledger}; sender's queue depth {depth:,.0f}; messages sent {sent:,.0f} (due in a day: none expected)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000, help="active members in the audience")
    parser.add_argument("--keep", action="store_true", help="keep the run's topics and databases")
    args = parser.parse_args()
    asyncio.run(run(args.members, args.keep))


if __name__ == "__main__":
    main()
