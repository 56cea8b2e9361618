"""An import's confirmations become jobs in one insert per run, not one each (three writes a job on FerretDB:
2,000 confirmations took minutes to reach the mailbox); an erasure between them keeps its place."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_delivery.handlers import AudienceJobs
from herald_delivery.queue import JobQueue
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    ConfirmationRequestedPayload,
    SubscriberErased,
    SubscriberErasedPayload,
)

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


class Store:
    """What AudienceJobs writes, in order: each insert with its jobs, each erasure."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []

    async def add_jobs(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.writes.append(("insert", [doc["recipient"] for doc in docs]))
        return list(docs)

    async def forget_recipient(self, account_id: str, subscriber_id: str) -> None:
        self.writes.append(("erase", subscriber_id))


def confirmation(n: int) -> ConfirmationRequested:
    return ConfirmationRequested(account_id="acc", producer="subscriptions", occurred_at=NOW,
                                 payload=ConfirmationRequestedPayload(
                                     list_id="news", subscriber_id=f"s{n}", email=f"p{n}@example.com",
                                     list_name="News", company_name="Acme",
                                     confirm_url=f"https://herald.example/confirm/{n}",
                                     expires_at=NOW + timedelta(days=7)))


def erasure(n: int) -> SubscriberErased:
    return SubscriberErased(account_id="acc", producer="subscriptions", occurred_at=NOW,
                            payload=SubscriberErasedPayload(
                                subscriber_id=f"s{n}", list_id="news", requested_by="subscriber",
                                email_sha256=hashlib.sha256(f"p{n}@example.com".encode()).hexdigest()))


def handler() -> tuple[AudienceJobs, Store, JobQueue]:
    store, jobs = Store(), JobQueue(asyncio.Event())
    return AudienceJobs(store, jobs, gates=None), store, jobs  # type: ignore[arg-type]  # fakes of the ports used


async def test_a_batch_of_confirmations_is_written_in_one_insert_and_queued() -> None:
    audience, store, jobs = handler()
    for n in range(500):
        await audience.handle(confirmation(n))
    await audience.flush()
    assert store.writes == [("insert", [f"p{n}@example.com" for n in range(500)])]
    assert len(jobs) == 500


async def test_an_erasure_between_confirmations_comes_after_the_first_run_and_before_the_second() -> None:
    audience, store, jobs = handler()
    for event in (confirmation(1), confirmation(2), erasure(2), confirmation(3)):
        await audience.handle(event)
    await audience.flush()
    assert store.writes == [("insert", ["p1@example.com", "p2@example.com"]), ("erase", "s2"),
                            ("insert", ["p3@example.com"])]
    due = jobs.take_due(NOW + timedelta(days=1), 10, lambda job: None)
    assert {job["subscriber_id"]: job.get("recipient") for job in due} == {
        "s1": "p1@example.com", "s2": None, "s3": "p3@example.com"}  # s2's queued job lost its address


async def test_a_batch_given_up_writes_nothing() -> None:
    audience, store, _ = handler()
    await audience.handle(confirmation(1))
    await audience.forget()
    await audience.flush()
    assert store.writes == []
