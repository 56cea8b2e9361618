"""Delivery's start-up fold of its ledger (`DeliveryStore.load_pending`, what the sender does at every start) over
a history of N finished messages (200,000): the jobs and outcomes of a sent campaign, as the sender writes them
(one job and one final outcome per message, the outcome with its event), inserted into a fresh database without
the lists a start reads (`job_index`), as a version before them wrote it. Then three starts, each timed:
1. the first one: the ledger is read whole once, and the campaign's jobs listed (it is not announced finished);
   with this process's peak RSS before and after it (the fold runs first, so the peak it raises is its own);
2. the next one, the campaign still open: its listed messages read by `_id` (outcomes, attempt by attempt);
3. one after its end was announced (`finished_campaigns`): nothing of it is read.
Each time every message must come out finished and counted (`sent`), none pending (in the third: none at all).

Baseline in the same run: reading the same two collections raw (`find({})`, every document decoded and
dropped), twice after the first fold; the ratio is the mean of the two baseline times over the
first fold's. No issue names a target: a start should cost the work in flight, not the history (issue 16 asks for
memory bounded while sending; the service's limit is 1 GiB).

    eval "$(scripts/stack env)"; PATH="$PWD/.venv/bin:$PATH" .venv/bin/python -m bench.ledger_fold \
        [--messages 200000]

Needs the local stack (MongoDB only). Filling the ledger is not measured (its rate is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from herald_delivery.domain import message_id_for
from herald_delivery.handlers import new_job
from herald_delivery.store import FINISHED_CAMPAIGNS, JOBS, OUTCOMES, SENDER_STATE, DeliveryStore
from herald_shared.lifecycle import tune_gc
from herald_shared.mongo import make_client

from . import harness

ACCOUNT, CAMPAIGN = "bench-account", "bench-campaign"
CHUNK = 1000


def messages(start: int, stop: int, now: datetime, event: str) -> tuple[list[Any], list[Any]]:
    jobs, outcomes = [], []
    for i in range(start, stop):
        subscriber = f"s{uuid.uuid5(uuid.NAMESPACE_OID, str(i)).hex[:24]}"
        message_id = message_id_for(ACCOUNT, CAMPAIGN, subscriber)
        jobs.append(new_job(message_id, ACCOUNT, "campaign", now, campaign_id=CAMPAIGN,
                            campaign_key=f"{ACCOUNT}:{CAMPAIGN}", subscriber_id=subscriber, list_id="news"))
        outcomes.append({"_id": f"{message_id}:1", "message_id": message_id, "account_id": ACCOUNT,
                         "campaign_id": CAMPAIGN, "attempt": 1, "first_attempt_at": now, "recorded_at": now,
                         "final": True, "smtp_code": 250, "smtp_reply": "2.0.0 Ok: queued as 4Xq2bN0s1Mz9",
                         "outcome": "sent", "outcome_event": event})
    return jobs, outcomes


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def raw_read(db: Any) -> float:
    started = time.perf_counter()
    for name in (JOBS, OUTCOMES):
        async for _ in db[name].find({}):
            pass
    return time.perf_counter() - started


async def run(count: int) -> None:
    settings = harness.settings_for(harness.new_prefix())
    mongo = make_client(settings, "bench")
    db = mongo[settings.database_name("delivery")]
    store = DeliveryStore(db)
    try:
        await store.ensure_indexes()
        now = datetime.now(UTC)
        # An outcome keeps its event (~700 bytes as the sender serialises a MessageSent).
        event = json.dumps({"type": "MessageSent", "payload": {"message_id": "x" * 36, "reply": "y" * 500}})
        print(f"filling the ledger: {count:,} finished messages (not measured)", flush=True)
        started = time.perf_counter()
        for start in range(0, count, CHUNK):
            jobs, outcomes = messages(start, min(count, start + CHUNK), now, event)
            await asyncio.gather(db[JOBS].insert_many(jobs), db[OUTCOMES].insert_many(outcomes))
        # As the sender keeps it: every outcome recorded before this instant is published.
        await db[SENDER_STATE].insert_one({"_id": "published", "before": datetime.now(UTC)})
        print(f"filled at {count / (time.perf_counter() - started):,.0f} messages/s", flush=True)
        tune_gc()
        rss_before = peak_rss_mib()
        whole = await timed_start(db, count)
        rss_after = peak_rss_mib()
        raw = (await raw_read(db) + await raw_read(db)) / 2
        listed = await timed_start(db, count)
        await db[FINISHED_CAMPAIGNS].insert_one({"_id": f"{ACCOUNT}:{CAMPAIGN}", "published": True})
        announced = await timed_start(db, 0)
    finally:
        await mongo.drop_database(settings.database_name("delivery"))
        await mongo.close()
    report(count, whole, listed, announced, raw, rss_after - rss_before)


async def timed_start(db: Any, sent: int) -> tuple[float, bool, bool]:
    """A start's fold (a new store, as a new process has): seconds, whether it read the ledger whole, and
    whether it found exactly `sent` messages of the campaign finished and counted, and none pending."""
    started = time.perf_counter()
    fold = await DeliveryStore(db).load_pending()
    seconds = time.perf_counter() - started
    counts = fold.finished.get(f"{ACCOUNT}:{CAMPAIGN}", {})
    return seconds, fold.whole, not fold.pending and not fold.in_doubt and counts == ({"sent": sent} if sent else {})


def report(count: int, whole: tuple[float, bool, bool], listed: tuple[float, bool, bool],
           announced: tuple[float, bool, bool], raw_seconds: float, grown_mib: float) -> None:
    print()
    print(f"== ledger_fold: delivery's start-up fold over {count:,} finished messages ==")
    print(f"baseline, reading the jobs and outcomes raw (find, decode): {raw_seconds:.1f} s = "
          f"{count / raw_seconds:10,.0f} messages/s")
    print(f"fold (DeliveryStore.load_pending), the first start, the ledger read whole and listed: {whole[0]:.1f} s = "
          f"{count / whole[0]:10,.0f} messages/s; peak RSS +{grown_mib:.0f} MiB "
          f"({grown_mib * 1024 * 1024 / count:,.0f} bytes a message)")
    print(f"fold / raw read: {raw_seconds / whole[0]:.2f} x the messages/s")
    print(f"the next start, the campaign still open (its messages read by _id): {listed[0]:.1f} s = "
          f"{count / listed[0]:10,.0f} messages/s")
    print(f"a start once its end is announced (nothing of it read): {announced[0] * 1000:.0f} ms")
    exact = whole[2] and listed[2] and announced[2] and whole[1] and not listed[1] and not announced[1]
    print(f"every message finished and counted, none pending, each start as expected: "
          f"{'exact' if exact else 'MISMATCH'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000, help="finished messages in the ledger")
    args = parser.parse_args()
    asyncio.run(run(args.messages))


if __name__ == "__main__":
    main()
