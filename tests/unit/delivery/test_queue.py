"""The sender's in-memory queue: due order, retries, parking behind closed gates, no duplicates."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_delivery.queue import JobQueue

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def job(message_id: str, at: datetime = T0, account: str = "acme", campaign: str | None = "c1") -> dict[str, Any]:
    return {"_id": message_id, "account_id": account, "campaign_id": campaign, "kind": "campaign",
            "next_attempt_at": at}


def open_gate(_: dict[str, Any]) -> None:
    return None


def test_jobs_come_out_in_due_order_and_only_when_due() -> None:
    queue = JobQueue(asyncio.Event())
    assert queue.push([job("b", T0 + timedelta(seconds=2)), job("a", T0), job("c", T0 + timedelta(hours=1))]) == 3
    assert [j["_id"] for j in queue.take_due(T0 + timedelta(seconds=5), 10, open_gate)] == ["a", "b"]
    assert queue.take_due(T0 + timedelta(seconds=5), 10, open_gate) == []
    assert len(queue) == 3  # taken is not done


def test_a_job_is_queued_once_however_often_it_is_pushed() -> None:
    changed = asyncio.Event()
    queue = JobQueue(changed)
    queue.push([job("a")])
    assert changed.is_set()
    changed.clear()
    assert queue.push([job("a"), job("a")]) == 0 and not changed.is_set()
    assert len(queue.take_due(T0, 10, open_gate)) == 1


def test_a_deferred_job_comes_back_at_its_new_time_only() -> None:
    queue = JobQueue(asyncio.Event())
    queue.push([job("a")])
    taken = queue.take_due(T0, 1, open_gate)
    queue.retry_at("a", T0 + timedelta(minutes=5), attempts=1)
    assert queue.take_due(T0 + timedelta(minutes=4), 10, open_gate) == []
    again = queue.take_due(T0 + timedelta(minutes=5), 10, open_gate)
    assert again == taken and again[0]["attempts"] == 1
    queue.done("a")
    assert len(queue) == 0


def test_held_jobs_are_parked_per_campaign_and_released_when_the_gate_opens() -> None:
    queue = JobQueue(asyncio.Event())
    queue.push([job("a1"), job("a2"), job("b1", account="beta")])
    suspended = {"acme"}

    def gate(j: dict[str, Any]) -> Any:
        return "account_suspended" if j["account_id"] in suspended else None

    assert [j["_id"] for j in queue.take_due(T0, 10, gate)] == ["b1"]
    assert queue.held(gate) == {("acme", "c1"): ("account_suspended", 2)}
    assert queue.unpark(gate) == 0
    suspended.clear()
    assert queue.unpark(gate) == 2
    assert sorted(j["_id"] for j in queue.take_due(T0, 10, gate)) == ["a1", "a2"]
    assert queue.held(gate) == {}


def test_erasure_removes_the_address_from_queued_jobs() -> None:
    queue = JobQueue(asyncio.Event())
    queue.push([{**job("a", campaign=None), "kind": "confirmation", "subscriber_id": "s1",
                 "recipient": "x@example.org", "greeting_name": "X"}])
    queue.forget_recipient("acme", "s1")
    taken = queue.take_due(T0, 1, open_gate)[0]
    assert "recipient" not in taken and "greeting_name" not in taken


def test_a_queued_job_is_a_compact_copy_sharing_what_a_campaigns_jobs_share() -> None:
    """A million-message campaign is a million queued jobs: the ledger-only fields stay in MongoDB, and equal
    field names and shared values (decoded from MongoDB, each document has its own copies) become one object."""
    def decoded(message_id: str) -> dict[str, Any]:  # as the driver decodes a job: fresh strings everywhere
        fresh = "".join
        return {fresh(["_", "id"]): message_id, fresh(["account", "_id"]): fresh(["ac", "me"]),
                "campaign_id": fresh(["c", "1"]), "kind": fresh(["camp", "aign"]),
                "next_attempt_at": T0 + timedelta(0), "created_at": T0, "campaign_key": fresh(["acme:", "c1"]),
                "subscriber_id": "s-" + message_id, "attempts": 0}

    queue = JobQueue(asyncio.Event())
    first, second = decoded("m1"), decoded("m2")
    assert first["account_id"] is not second["account_id"]
    queue.push([first, second])
    a, b = queue.take_due(T0, 10, open_gate)
    assert a == {k: v for k, v in first.items() if k not in ("created_at", "campaign_key")}
    assert a["account_id"] is b["account_id"] and a["kind"] is b["kind"] and a["campaign_id"] is b["campaign_id"]
    assert a["next_attempt_at"] is b["next_attempt_at"]
    assert next(k for k in a if k == "account_id") is next(k for k in b if k == "account_id")
    first["account_id"] = "changed"  # the queue holds its own copy
    assert a["account_id"] == "acme"
