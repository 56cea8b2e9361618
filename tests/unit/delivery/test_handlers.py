"""The control handler with an in-memory store: what it writes, in which order."""

from __future__ import annotations

import asyncio
from typing import Any

from herald_delivery.domain import Member, message_id_for_test
from herald_delivery.handlers import ControlHandler, GateBook
from herald_delivery.queue import JobQueue
from herald_shared.contract.billing import AccountApproved, AccountOpened
from herald_shared.contract.campaigns import CampaignTestRequested
from herald_shared.contract.compliance import AccountSuspended
from tests.samples import campaign_queued


class RecordingStore:
    def __init__(self, members: list[Member]) -> None:
        self.calls: list[tuple[str, Any]] = []
        self._members = members
        self.campaigns: dict[str, Any] = {}
        self.jobs: list[Any] = []

    async def campaign(self, account_id: str, campaign_id: str) -> Any:
        return self.campaigns.get(f"{account_id}:{campaign_id}")

    async def save_campaigns(self, docs: list[Any]) -> None:
        self.calls.append(("save_campaigns", [d["_id"] for d in docs]))
        self.campaigns.update({d["_id"]: d for d in docs})

    async def save_accounts(self, states: list[Any]) -> None:
        self.calls.append(("save_accounts", [s.account_id for s in states]))

    async def list_deleted(self, account_id: str, list_id: str) -> bool:
        return False

    async def list_members(self, account_id: str, list_id: str) -> Any:
        for member in self._members:
            yield member

    async def add_jobs(self, docs: list[Any]) -> list[Any]:
        self.calls.append(("add_jobs", [d["_id"] for d in docs]))
        self.jobs = docs
        return docs

    async def save_test_send(self, doc: dict[str, Any]) -> None:
        self.calls.append(("save_test_send", doc["_id"]))


async def caught_up() -> None:
    return None


async def test_the_campaign_is_stored_before_its_jobs_exist() -> None:
    """The sender renders a job from the campaign document as soon as the job exists."""
    store = RecordingStore([Member("s1", "news", "a@example.org", "active"),
                            Member("s2", "news", "b@example.org", "active", custom_fields={"city": "Riga"})])
    handler = ControlHandler(store, GateBook(), JobQueue(asyncio.Event()), caught_up)  # type: ignore[arg-type]
    await handler.handle(campaign_queued("acme", "c1", segment={"city": "Riga"}))
    await handler.flush()
    kinds = [name for name, _ in store.calls]
    assert kinds.index("save_campaigns") < kinds.index("add_jobs")
    jobs = next(ids for name, ids in store.calls if name == "add_jobs")
    assert len(jobs) == 1  # the segment selects s2 only
    assert store.campaigns["acme:c1"]["links"] == []


async def test_a_suspension_closes_the_gate_at_once_and_asks_for_a_notice() -> None:
    store = RecordingStore([])
    gates = GateBook()
    handler = ControlHandler(store, gates, JobQueue(gates.changed), caught_up)  # type: ignore[arg-type]
    envelope = {"account_id": "acme", "producer": "billing"}
    await handler.handle(AccountOpened(**envelope, payload={  # type: ignore[arg-type]
        "company_name": "Acme", "registered_email": "owner@acme.example", "main_username": "o",
        "terms_accepted_at": "2026-11-01T00:00:00Z"}))
    await handler.handle(AccountApproved(**envelope, payload={"reviewer": "staff"}))  # type: ignore[arg-type]
    assert gates.gate_for("acme", None) is None
    await handler.handle(AccountSuspended(account_id="acme", producer="compliance", payload={  # type: ignore[arg-type]
        "metric": "abuse_rate", "value": 0.006, "threshold": 0.005, "reason": "complaints 0.6% > 0.5%"}))
    assert gates.gate_for("acme", "c1") == "account_suspended"  # before anything is written
    assert store.calls == []
    await handler.flush()
    assert [name for name, _ in store.calls] == ["save_accounts", "add_jobs"]


async def test_a_test_request_stores_its_content_then_one_job_per_address_with_deterministic_ids() -> None:
    store = RecordingStore([])
    gates = GateBook()
    handler = ControlHandler(store, gates, JobQueue(gates.changed), caught_up)  # type: ignore[arg-type]
    request = CampaignTestRequested(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "test_id": "t1", "recipients": ["a@acme.example", "A@acme.example", "b@acme.example"],
        "content": {"subject": "Hi", "from_name": "Acme", "from_email": "news@acme.example", "text_body": "x"},
        "sample": {"first_name": "Anna"}, "requested_by": "anna"})
    await handler.handle(request)
    await handler.flush()
    expected = [message_id_for_test("acme", "t1", address) for address in ("a@acme.example", "b@acme.example")]
    assert store.calls == [("save_test_send", "acme:t1"), ("add_jobs", expected)]
    assert {job["kind"] for job in store.jobs} == {"test"} and store.campaigns == {}  # no campaign document
    assert message_id_for_test("acme", "t1", "A@ACME.example") == expected[0]
