"""Delivery's start-up fold of its ledger (`DeliveryStore.load_pending`, what the sender does at every start) over
a history of N finished messages (200,000): the jobs and outcomes of a sent campaign, as the sender writes them
(one job and one final outcome per message, the outcome with its event), inserted into a fresh database. Then,
timed: the fold, with this process's peak RSS before and after it (the fold runs first, so the peak it raises
is its own). Every message must come out finished and counted (`sent`), none pending.

Baseline in the same run: reading the same two collections raw (`find({})`, every document decoded and
dropped), once before the fold and once after it; the ratio is the mean of the two baseline times over the
fold's. No issue names a target: the ledger keeps every message ever sent, so this is what a restart costs per
message of history (issue 16 asks for memory bounded while sending; the service's limit is 1 GiB).

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
from herald_delivery.store import JOBS, OUTCOMES, DeliveryStore
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
        print(f"filled at {count / (time.perf_counter() - started):,.0f} messages/s", flush=True)
        tune_gc()
        rss_before = peak_rss_mib()
        started = time.perf_counter()
        fold = await store.load_pending()
        fold_seconds = time.perf_counter() - started
        rss_after = peak_rss_mib()
        counts = fold.finished.get(f"{ACCOUNT}:{CAMPAIGN}", {})
        exact = not fold.pending and not fold.in_doubt and counts == {"sent": count}
        raw = (await raw_read(db) + await raw_read(db)) / 2
    finally:
        await mongo.drop_database(settings.database_name("delivery"))
        await mongo.close()
    report(count, fold_seconds, raw, rss_after - rss_before, exact)


def report(count: int, fold_seconds: float, raw_seconds: float, grown_mib: float, exact: bool) -> None:
    print()
    print(f"== ledger_fold: delivery's start-up fold over {count:,} finished messages ==")
    print(f"baseline, reading the jobs and outcomes raw (find, decode): {raw_seconds:.1f} s = "
          f"{count / raw_seconds:10,.0f} messages/s")
    print(f"fold (DeliveryStore.load_pending): {fold_seconds:.1f} s = {count / fold_seconds:10,.0f} messages/s; "
          f"peak RSS +{grown_mib:.0f} MiB ({grown_mib * 1024 * 1024 / count:,.0f} bytes a message)")
    print(f"fold / raw read: {raw_seconds / fold_seconds:.2f} x the messages/s")
    print(f"every message finished and counted, none pending: {'exact' if exact else 'MISMATCH'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000, help="finished messages in the ledger")
    args = parser.parse_args()
    asyncio.run(run(args.messages))


if __name__ == "__main__":
    main()
