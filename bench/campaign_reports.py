"""Campaign reports folded from offset 0: N delivery events (200,000) as delivery publishes them, for 3 accounts
and 9 campaigns, and the recipients' unsubscribes on herald.subscriptions, are published to a fresh prefix's
topics; then the campaigns service's report read model folds them into an empty database, timed from the
consumer's start until its checkpoint (`checkpoints.reports`) has passed the last event. Then
every campaign's counts (`CampaignsStore.report_counts`, and `domain.report` of them) must equal those
computed here while generating.

What folds is the service's own report consumer, built by `herald_campaigns.main.reports_consumer` as the
service builds it (`ReportsProjection` in an `EventConsumer` of its own, the consumer group
`<prefix>campaigns.reports`, 2,000-record batches, a `WindowDeduplicator` and `Checkpoints` named "reports"),
in this process, reading herald.delivery and herald.subscriptions. The service's other consumer (drafts,
lists, accounts, API keys) passes these events over unparsed and is not run here.

The mix, per message of a campaign (over its list's subscribers, in send order, engagement trickling in
later, all sorted by time, so sends, bounce reports, opens and clicks interleave as they would):
- 1.5% refused at SMTP time: MessageBounced `smtp_reply` (hard or block) instead of MessageSent;
- every other one MessageSent; 1.5% of those bounce later by DSN (hard, soft or block);
- 0.1% ComplaintReceived (abuse), each followed by subscriptions' SubscriberUnsubscribed `complaint`
  (not a recipient's unsubscribe: not counted);
- 25% opened, a third of them 2-3 times (MessageOpened); 5% clicked, links 0-4, some repeatedly (LinkClicked);
- 0.2% SubscriberUnsubscribed `one_click` with the campaign and message (on herald.subscriptions).

Baseline in the same run: consuming the same topics raw (`read_from_start` + `parse_event`) in this process,
once before the fold and once after it (this 2-core machine's speed drifts by tens of percent within a
minute: the broker, FerretDB and PostgreSQL share it); the ratio is the mean of the two baseline times over
the fold's (1.0 = as fast as reading and parsing alone).
Target (issue 14): >= 0.3 x.

    eval "$(scripts/stack env)"; PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m bench.campaign_reports \
        [--events 200000] [--keep]

Needs the local stack. Publishing the events is not measured (its rate is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from herald_campaigns import domain
from herald_campaigns.main import REPORTS, reports_consumer
from herald_campaigns.store import CampaignsStore
from herald_delivery.domain import message_id_for
from herald_shared.contract import Event
from herald_shared.contract.delivery import ComplaintReceived, LinkClicked, MessageBounced, MessageOpened, MessageSent
from herald_shared.contract.subscriptions import SubscriberUnsubscribed
from herald_shared.kafka import EventPublisher, ensure_topics, make_producer
from herald_shared.lifecycle import tune_gc
from herald_shared.mongo import Checkpoints, make_client
from herald_shared.settings import HeraldSettings

from . import harness
from .harness import Positions, raw_read, verdict

TARGET_RATIO = 0.3
TOPICS = ("herald.delivery", "herald.subscriptions")
SERVICE = "campaigns"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
# (account, campaign, share of the messages, hours after T0 the send starts)
CAMPAIGNS = (("acme", "c-nov-news", 0.20, 0), ("acme", "c-nov-offer", 0.10, 30), ("acme", "c-black-friday", 0.15, 70),
             ("globex", "c-weekly-45", 0.12, 5), ("globex", "c-weekly-46", 0.12, 173),
             ("initech", "c-launch", 0.08, 2), ("initech", "c-webinar", 0.06, 26), ("initech", "c-survey", 0.07, 50),
             ("initech", "c-digest", 0.10, 98))
LIST = "news"
SEND_RATE = 25.0  # messages a second per campaign
CLIENTS = ({"ip": "198.51.100.7", "user_agent": "Mozilla/5.0 (iPhone)", "device": "mobile", "browser": "Safari",
            "country": "LV", "city": "Riga"},
           {"ip": "203.0.113.40", "user_agent": "Mozilla/5.0 (Windows NT 10.0)", "device": "desktop",
            "browser": "Chrome", "country": "DE"},
           {"ip": "192.0.2.18", "user_agent": "Mozilla/5.0 (compatible; GoogleImageProxy)", "device": "bot"})

def placed(kind: str, client: dict[str, str]) -> dict[str, int]:
    """A reader's first open or click by where and on what (`domain.engagement`'s counters)."""
    return {f"{kind}_unique_country_{domain.country_of(client.get('country'))}": 1,
            f"{kind}_unique_device_{client.get('device') or domain.UNKNOWN_PLACE}": 1}


SMTP_REFUSALS = {"hard": (550, "5.1.1", "user unknown"), "block": (554, "5.7.1", "rejected by policy: spam")}
DSN_BOUNCES = {"hard": (550, "5.1.1", "mailbox does not exist"), "soft": (452, "4.2.2", "mailbox full"),
               "block": (550, "5.7.1", "message refused as spam")}


@dataclass(frozen=True, order=True)
class Planned:
    """An event to publish, built only when its chunk is published (200,000 models at once are ~0.5 GB)."""

    at: float  # seconds after T0
    seq: int
    kind: str
    account: str
    campaign: str
    subscriber: int
    extra: Any = None


class Plan:
    """The run's events in time order and, counted as they are planned, each campaign's expected counts."""

    def __init__(self, delivery_events: int, seed: int = 14) -> None:
        self.rng = random.Random(seed)
        self.items: list[Planned] = []
        self.expected: dict[tuple[str, str], Counter[str]] = {(a, c): Counter() for a, c, _, _ in CAMPAIGNS}
        self.by_topic: Counter[str] = Counter()
        self.by_type: Counter[str] = Counter()
        self.report_keys: set[tuple[str, str, str]] = set()  # (account, campaign, topic) with a counted event
        self.messages = 0
        self._next: dict[tuple[str, str], int] = {}
        shares = [share for _, _, share, _ in CAMPAIGNS]
        while self.by_topic["herald.delivery"] < delivery_events:
            account, campaign, _, start = self.rng.choices(CAMPAIGNS, weights=shares)[0]
            self._message(account, campaign, start * 3600.0)
        self.items.sort()
        self.total = len(self.items)

    def _add(self, at: float, kind: str, account: str, campaign: str, subscriber: int, extra: Any = None) -> None:
        self.items.append(Planned(at, len(self.items), kind, account, campaign, subscriber, extra))
        topic = "herald.subscriptions" if kind.startswith("Subscriber") else "herald.delivery"
        self.by_topic[topic] += 1
        self.by_type[kind] += 1
        if extra != "complaint":
            self.report_keys.add((account, campaign, topic))

    def _message(self, account: str, campaign: str, start: float) -> None:
        rng, counts = self.rng, self.expected[(account, campaign)]
        k = self._next[(account, campaign)] = self._next.get((account, campaign), -1) + 1
        self.messages += 1
        sent_at = start + k / SEND_RATE
        r = rng.random()
        if r < 0.015:  # refused at SMTP time: no MessageSent
            bounce_class = "hard" if rng.random() < 0.6 else "block"
            self._add(sent_at, "MessageBounced", account, campaign, k, ("smtp_reply", bounce_class))
            counts.update({"sent": 1, f"bounced_{bounce_class}": 1})
            return
        self._add(sent_at, "MessageSent", account, campaign, k)
        counts.update({"sent": 1, "accepted": 1})
        if rng.random() < 0.015:  # a DSN later
            bounce_class = rng.choices(("hard", "soft", "block"), weights=(50, 25, 25))[0]
            self._add(sent_at + rng.uniform(5, 3600), "MessageBounced", account, campaign, k, ("dsn", bounce_class))
            counts[f"bounced_{bounce_class}"] += 1
            if bounce_class != "soft":
                counts["failed_later"] += 1
            return
        opened_at = sent_at + rng.expovariate(1 / 7200)
        if rng.random() < 0.25:
            times = rng.choices((1, 2, 3), weights=(67, 23, 10))[0]
            for n in range(times):
                client = rng.randrange(len(CLIENTS))
                self._add(opened_at + n * rng.expovariate(1 / 1800), "MessageOpened", account, campaign, k, client)
                if n == 0:  # the first open (the earliest) places the reader
                    counts.update(placed("opens", CLIENTS[client]))
            counts.update({"opens_unique": 1, "opens_total": times})
        if rng.random() < 0.05:
            clicks = rng.choices((1, 2, 3), weights=(70, 20, 10))[0]
            for n in range(clicks):
                link, client = rng.randrange(5), rng.randrange(len(CLIENTS))
                self._add(opened_at + 20 + n * rng.expovariate(1 / 600), "LinkClicked", account, campaign, k,
                          (link, client))
                counts.update({"clicks_total": 1, f"clicks_link_{link}": 1})
                if n == 0:
                    counts.update(placed("clicks", CLIENTS[client]))
            counts["clicks_unique"] += 1
        if rng.random() < 0.001:
            complained_at = opened_at + rng.uniform(60, 86400)
            self._add(complained_at, "ComplaintReceived", account, campaign, k)
            self._add(complained_at + 1, "SubscriberUnsubscribed", account, campaign, k, "complaint")
            counts["complaints"] += 1
        elif rng.random() < 0.002:
            self._add(opened_at + rng.uniform(30, 3600), "SubscriberUnsubscribed", account, campaign, k, "one_click")
            counts["unsubscribes"] += 1

    def event(self, item: Planned) -> Event:
        """The event as delivery (or, for unsubscribes, subscriptions) publishes it."""
        subscriber = f"s{item.subscriber:08d}"
        ref = {"message_id": message_id_for(item.account, item.campaign, subscriber), "kind": "campaign",
               "campaign_id": item.campaign, "subscriber_id": subscriber}
        listed = {**ref, "list_id": LIST}
        envelope: dict[str, Any] = {"account_id": item.account, "producer": "delivery",
                                    "occurred_at": T0 + timedelta(seconds=item.at)}
        match item.kind:
            case "MessageSent":
                return MessageSent(**envelope, payload={**listed, "recipient_domain": "example.com",
                                                        "smtp_code": 250, "smtp_reply": "2.0.0 Ok: queued"})
            case "MessageBounced":
                source, bounce_class = item.extra
                code, status, text = (SMTP_REFUSALS if source == "smtp_reply" else DSN_BOUNCES)[bounce_class]
                mta = {"reporting_mta": "mx.example.com"} if source == "dsn" else {}
                return MessageBounced(**envelope, payload={**listed, "bounce_class": bounce_class, "smtp_code": code,
                                                           "enhanced_status_code": status, "diagnostic": text,
                                                           "source": source, **mta})
            case "ComplaintReceived":
                return ComplaintReceived(**envelope, payload={**listed, "feedback_type": "abuse",
                                                              "reporting_domain": "fbl.example.com"})
            case "MessageOpened":
                return MessageOpened(**envelope, payload={**ref, "client": CLIENTS[item.extra]})
            case "LinkClicked":
                link, client = item.extra
                return LinkClicked(**envelope, payload={
                    **ref, "url": f"https://{item.account}.example/{item.campaign}/{link}", "link_index": link,
                    "client": CLIENTS[client]})
            case "SubscriberUnsubscribed":
                return SubscriberUnsubscribed(**{**envelope, "producer": "subscriptions"}, payload={
                    "list_id": LIST, "subscriber_id": subscriber, "source": item.extra,
                    "campaign_id": item.campaign, "message_id": ref["message_id"]})
        raise ValueError(item.kind)

    def chunks(self, size: int = harness.PUBLISH_CHUNK) -> Iterator[list[Event]]:
        for start in range(0, len(self.items), size):
            yield [self.event(item) for item in self.items[start:start + size]]


async def publish(settings: HeraldSettings, plan: Plan) -> tuple[float, Positions]:
    """Publish the plan in time order. Returns (seconds spent in publish_many, last positions)."""
    producer = make_producer(settings, "bench")
    await producer.start()
    positions: Positions = {}
    spent, done, announced = 0.0, 0, time.monotonic()
    try:
        publisher = EventPublisher(producer, settings.topics)
        for events in plan.chunks():
            began = time.perf_counter()
            harness.last_positions(await publisher.publish_many(events), positions)
            spent += time.perf_counter() - began
            done += len(events)
            if time.monotonic() - announced > 10:
                announced = time.monotonic()
                print(f"  {done:,} of {plan.total:,} published", flush=True)
    finally:
        await producer.stop()
    return spent, positions


class TimedCheckpoints(Checkpoints):
    """The service's checkpoints, noting when the first batch was saved and when every position was passed
    (in process, so the end is not a polling interval late)."""

    def __init__(self, db: Any, consumer_name: str, positions: Positions) -> None:
        super().__init__(db, consumer_name)
        self.first: float | None = None
        self.first_events = 0
        self.caught_up = asyncio.Event()
        self._behind = {position: offset + 1 for position, offset in positions.items()}

    async def save(self, next_offsets: dict[tuple[str, int], int]) -> None:
        await super().save(next_offsets)
        if self.first is None:
            self.first = time.perf_counter()
            self.first_events = sum(next_offsets.values())  # from offset 0: the first batch's events
        for position, offset in next_offsets.items():
            if position in self._behind and offset >= self._behind[position]:
                del self._behind[position]
        if not self._behind:
            self.caught_up.set()


def metric(name: str, consumer: str) -> float:
    return sum(s.value for family in REGISTRY.collect() for s in family.samples
               if s.name == name and s.labels.get("consumer") == consumer)


@dataclass
class Fold:
    seconds: float
    first: float
    first_events: int
    consumed: float
    duplicates: float
    dead_lettered: float
    counts: dict[tuple[str, str], dict[str, int]]
    reports: int


async def fold(settings: HeraldSettings, positions: Positions, total: int) -> Fold:
    """The report read model as the campaigns service wires it, from offset 0 into an empty database, until
    its checkpoint has passed every position; then each campaign's counts as the API reads them."""
    mongo = make_client(settings, SERVICE)
    db = mongo[settings.database_name(SERVICE)]
    producer = make_producer(settings, SERVICE)
    checkpoints = TimedCheckpoints(db, REPORTS, positions)
    consumer = reports_consumer(settings, db, producer, checkpoints)
    name = consumer.name
    await producer.start()
    try:
        started = time.perf_counter()
        task = asyncio.create_task(consumer.run(), name=name)
        caught_up = asyncio.create_task(checkpoints.caught_up.wait())
        within = max(600, total / 200)
        while not caught_up.done():
            done, _ = await asyncio.wait([task, caught_up], timeout=10, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
                raise RuntimeError("the consumer stopped before it caught up")
            if not done:
                print(f"  {metric('herald_events_consumed_total', name):,.0f} of {total:,} folded", flush=True)
            if time.perf_counter() - started > within:
                raise TimeoutError(f"the fold did not catch up within {within:.0f} s")
        seconds = time.perf_counter() - started
        first = (checkpoints.first or started) - started
        consumer.request_stop()
        await task
        store = CampaignsStore(db)
        counts = {(a, c): await store.report_counts(a, c) for a, c, _, _ in CAMPAIGNS}
        reports = await db["reports"].count_documents({})
    finally:
        await producer.stop()
        await mongo.close()
    return Fold(seconds, first, checkpoints.first_events, metric("herald_events_consumed_total", name),
                metric("herald_events_duplicate_total", name), metric("herald_events_dead_lettered_total", name),
                counts, reports)


async def run(delivery_events: int, keep: bool) -> None:
    prefix = harness.new_prefix()
    settings = harness.settings_for(prefix)
    plan = Plan(delivery_events)
    total = plan.total
    print(f"run {prefix}: {plan.messages:,} messages of {len(CAMPAIGNS)} campaigns, "
          f"{plan.by_topic['herald.delivery']:,} events on herald.delivery and "
          f"{plan.by_topic['herald.subscriptions']:,} on herald.subscriptions "
          f"({', '.join(f'{n:,} {t}' for t, n in plan.by_type.most_common())})", flush=True)
    await ensure_topics(settings)
    print(f"publishing {total:,} events (not measured)", flush=True)
    publish_seconds, positions = await publish(settings, plan)
    # Published: drop the planned events (~300,000 objects the service's process has nothing like), then tune
    # the collector as every service's process does once started; the baseline and the fold both run so.
    plan.items.clear()
    tune_gc()
    print(f"published at {total / publish_seconds:,.0f} events/s; baseline: reading them raw", flush=True)
    raw_before = await raw_read(settings, total, TOPICS)
    print(f"raw read {total / raw_before:,.0f} events/s; the report read model from offset 0", flush=True)
    result = await fold(settings, positions, total)
    raw_after = await raw_read(settings, total, TOPICS)
    print(f"raw read again after the fold: {total / raw_after:,.0f} events/s", flush=True)
    raw_seconds = (raw_before + raw_after) / 2
    if not keep:
        await harness.cleanup(settings, [SERVICE])
    exact = report(plan, raw_seconds, result)
    if keep:
        print(f"kept: topics {prefix}.*, databases {prefix}_*")
    if not exact:
        raise SystemExit("campaign report counts MISMATCH (see above)")


def report(plan: Plan, raw_seconds: float, result: Fold) -> bool:
    total = plan.total
    ratio = raw_seconds / result.seconds
    after_first = result.seconds - result.first
    steady = (total - result.first_events) / after_first if after_first > 0 else float("nan")
    print()
    print(f"== campaign_reports: {total:,} events ({plan.by_topic['herald.delivery']:,} on herald.delivery, "
          f"{plan.by_topic['herald.subscriptions']:,} on herald.subscriptions; {plan.messages:,} messages, "
          f"{len(CAMPAIGNS)} campaigns) into empty campaign reports ==")
    print(f"baseline, reading them raw (read_from_start + parse_event), mean of before and after the fold: "
          f"{raw_seconds:7.1f} s = {total / raw_seconds:10,.0f} events/s")
    print(f"reports (ReportsProjection in the service's EventConsumer, dedup + checkpoints), from the consumer's "
          f"start to the checkpoint past the last event: {result.seconds:7.1f} s = {total / result.seconds:10,.0f} "
          f"events/s (first batch saved after {result.first:.1f} s; {steady:,.0f} events/s from then on)")
    print(f"reports / raw read: {ratio:.3f} x   target >= {TARGET_RATIO} x: {verdict(ratio >= TARGET_RATIO)}")
    print(f"consumer: {result.consumed:,.0f} events handled, {result.duplicates:,.0f} duplicates, "
          f"{result.dead_lettered:,.0f} dead-lettered; {result.reports} counter documents")
    mismatches = []
    for (account, campaign), expected in plan.expected.items():
        want = {k: v for k, v in expected.items() if v}
        got = result.counts[(account, campaign)]
        if got != want or domain.report(got, None) != domain.report(want, None):
            mismatches.append(f"  {account}/{campaign}: expected {sorted(want.items())},\n"
                              f"    folded {sorted(got.items())}")
    totals: Counter[str] = Counter()
    for counts in result.counts.values():
        totals.update(counts)
    summary = domain.report(dict(totals), None)
    bounces: dict[str, int] = summary["bounces"]  # type: ignore[assignment]
    opens: dict[str, int] = summary["opens"]  # type: ignore[assignment]
    clicks: dict[str, Any] = summary["clicks"]  # type: ignore[assignment]
    print(f"all campaigns: sent {summary['sent']:,}, delivered {summary['delivered']:,}, bounces "
          f"{', '.join(f'{c} {n:,}' for c, n in bounces.items() if n)}, opens {opens['unique']:,} unique / "
          f"{opens['total']:,}, clicks {clicks['unique']:,} / {clicks['total']:,}, complaints "
          f"{summary['complaints']:,}, unsubscribes {summary['unsubscribes']:,}")
    consistent = (result.consumed == total and not result.dead_lettered
                  and result.reports == len(plan.report_keys))
    if mismatches:
        print(f"counts of {len(plan.expected)} campaigns (report_counts + domain.report): MISMATCH in "
              f"{len(mismatches)}:\n" + "\n".join(mismatches))
    else:
        print(f"counts of {len(plan.expected)} campaigns (report_counts + domain.report): exact")
    if not consistent:
        print("consumer figures unexpected: every event should be handled once, none dead-lettered, one counter "
              "document per campaign and topic with a counted event")
    return not mismatches and consistent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events published on herald.delivery "
                        "(the unsubscribes on herald.subscriptions come on top)")
    parser.add_argument("--keep", action="store_true", help="keep the run's topics and databases")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.keep))


if __name__ == "__main__":
    main()
