"""The control handler with an in-memory store: what it writes, in which order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_delivery.domain import Member, message_id_for_test
from herald_delivery.handlers import ControlHandler, Expansions, GateBook
from herald_delivery.queue import JobQueue
from herald_shared.contract.billing import AccountApproved, AccountOpened
from herald_shared.contract.campaigns import CampaignCancelled, CampaignTestRequested
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

    async def save_campaign_states(self, docs: list[Any]) -> None:
        self.calls.append(("save_campaign_states", [d["_id"] for d in docs]))
        for doc in docs:
            self.campaigns[doc["_id"]] = {**self.campaigns.get(doc["_id"], {}), "state": doc["state"]}

    async def mark_expanded(self, account_id: str, campaign_id: str, jobs: int, token: str) -> None:
        doc = self.campaigns[f"{account_id}:{campaign_id}"]
        if doc.get("expansion_pending") != token:
            return  # as the store's update: only while the campaign waits for this expansion
        self.calls.append(("mark_expanded", jobs))
        doc.pop("expansion_pending", None)
        doc["expanded_jobs"] = jobs

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

    async def refused_test_recipients(self, account_id: str, addresses: Any) -> dict[str, str]:
        return {}  # the refusals themselves: tests/integration/delivery/test_test_sends_refused.py

    async def save_test_send(self, doc: dict[str, Any]) -> None:
        self.calls.append(("save_test_send", doc["_id"]))


async def caught_up() -> None:
    return None


async def test_the_campaign_is_stored_before_its_jobs_exist() -> None:
    """The sender renders a job from the campaign document as soon as the job exists."""
    store = RecordingStore([Member("s1", "news", "a@example.org", "active"),
                            Member("s2", "news", "b@example.org", "active", custom_fields={"city": "Riga"})])
    handler = ControlHandler(store, GateBook(), JobQueue(asyncio.Event()), caught_up)  # type: ignore[arg-type]
    await queue_campaign(handler, "acme", "c1")
    await handler.flush()
    await handler.expansions.idle()
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
    assert gates.gate_for("acme", None) == "account_review"  # a gate opens once the store holds what opens it
    await handler.flush()
    assert gates.gate_for("acme", None) is None
    store.calls.clear()
    await handler.handle(AccountSuspended(account_id="acme", producer="compliance", payload={  # type: ignore[arg-type]
        "metric": "abuse_rate", "value": 0.006, "threshold": 0.005, "reason": "complaints 0.6% > 0.5%"}))
    assert gates.gate_for("acme", "c1") == "account_suspended"  # before anything is written
    assert store.calls == []
    await handler.flush()
    assert [name for name, _ in store.calls] == ["save_accounts", "add_jobs"]


async def test_a_test_request_stores_its_content_then_one_job_per_address_with_deterministic_ids() -> None:
    store = RecordingStore([])
    handler = control(store)
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


class StalledStore(RecordingStore):
    """Its members are read only once `release` is set: an expansion under way, for as long as a test likes."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__(members)
        self.release = asyncio.Event()
        self.reading = asyncio.Event()
        self.failures = 0  # reads that fail before one succeeds
        self.pending: list[dict[str, Any]] = []
        self.stalled: set[str] | None = None  # the accounts whose reads wait for `release` (None: all)
        self.reads: list[str] = []

    async def list_members(self, account_id: str, list_id: str) -> Any:
        self.reads.append(account_id)
        self.reading.set()
        if self.stalled is None:
            await self.release.wait()
        elif account_id in self.stalled:
            await asyncio.Event().wait()  # for good
        if self.failures:
            self.failures -= 1
            raise ConnectionError("MongoDB away")
        for member in self._members:
            yield member


    async def expansion_failed(self, account_id: str, campaign_id: str, reason: str) -> None:
        self.campaigns[f"{account_id}:{campaign_id}"]["expansion_failed"] = reason

    async def all_accounts(self) -> list[Any]:
        return []

    async def campaigns_at_start(self, flows: dict[str, Any] | None = None,
                                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return {}, self.pending


class SlowInsert(StalledStore):
    """acme's job inserts take 50 ms: long enough to stop an expansion in the middle of one."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__(members)
        self.inserting = asyncio.Event()
        self.insert_done = asyncio.Event()

    async def add_jobs(self, docs: list[Any]) -> list[Any]:
        if docs[0]["account_id"] == "acme":
            self.inserting.set()
            await asyncio.sleep(0.05)
            self.insert_done.set()
        return await super().add_jobs(docs)


def control(store: RecordingStore) -> ControlHandler:
    """A control handler over the store, with its own gates and queue."""
    gates = GateBook()
    return ControlHandler(store, gates, JobQueue(gates.changed), caught_up)  # type: ignore[arg-type]


async def queue_campaign(handler: ControlHandler, account_id: str, campaign_id: str) -> None:
    await handler.handle(campaign_queued(account_id, campaign_id, segment={"city": "Riga"}))


async def inserting_acme() -> tuple[SlowInsert, ControlHandler]:
    """acme's campaign queued, and its expansion in the middle of its (slow) job insert."""
    store = SlowInsert(segment_members(2))
    store.release.set()
    handler = control(store)
    await queue_campaign(handler, "acme", "c1")
    await asyncio.wait_for(store.inserting.wait(), 1)
    return store, handler


def segment_members(n: int) -> list[Member]:
    return [Member(f"s{i}", "news", f"r{i}@example.org", "active", custom_fields={"city": "Riga"}) for i in range(n)]


def open_and_approve(account_id: str) -> list[Any]:
    envelope = {"account_id": account_id, "producer": "billing"}
    return [AccountOpened(**envelope, payload={  # type: ignore[arg-type]
        "company_name": account_id, "registered_email": f"owner@{account_id}.example", "main_username": "o",
        "terms_accepted_at": "2026-11-01T00:00:00Z"}),
        AccountApproved(**envelope, payload={"reviewer": "staff"})]  # type: ignore[arg-type]


async def test_a_suspension_closes_its_gate_while_another_campaign_is_still_being_expanded() -> None:
    """The expansion runs beside the control consumer: a suspension handled after a CampaignQueued takes effect
    at once, not once a large list has been expanded."""
    store = StalledStore(segment_members(3))
    gates = GateBook()
    handler = ControlHandler(store, gates, JobQueue(gates.changed), caught_up)  # type: ignore[arg-type]
    for event in open_and_approve("acme") + open_and_approve("beta"):
        await handler.handle(event)
    await asyncio.wait_for(handler.handle(campaign_queued("acme", "big", segment={"city": "Riga"})), 1)
    await asyncio.wait_for(store.reading.wait(), 1)  # the expansion is under way, and stays so
    await asyncio.wait_for(handler.handle(AccountSuspended(account_id="beta", producer="compliance", payload={  # type: ignore[arg-type]
        "metric": "abuse_rate", "value": 0.006, "threshold": 0.005, "reason": "complaints"})), 1)
    assert gates.gate_for("beta", "c1") == "account_suspended"
    assert len(handler.expansions) == 1 and "expanded_jobs" not in store.campaigns["acme:big"]
    assert isinstance(store.campaigns["acme:big"]["expansion_pending"], str)
    await asyncio.wait_for(handler.flush(), 1)  # the notice's job is written without waiting for the expansion
    store.release.set()
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.campaigns["acme:big"]["expanded_jobs"] == 3 and "expansion_pending" not in store.campaigns["acme:big"]
    assert len(handler.expansions) == 0


def cancelled(account_id: str, campaign_id: str) -> CampaignCancelled:
    return CampaignCancelled(account_id=account_id, producer="campaigns",  # type: ignore[arg-type]
                             payload={"campaign_id": campaign_id, "cancelled_by": "anna"})


async def test_a_campaign_cancelled_during_its_insert_has_the_jobs_it_wrote_brought_forward() -> None:
    store = SlowInsert(segment_members(2))
    store.release.set()
    gates = GateBook()
    queue = JobQueue(gates.changed)
    handler = ControlHandler(store, gates, queue, caught_up)  # type: ignore[arg-type]
    later = datetime.now(UTC) + timedelta(hours=4)
    queued = campaign_queued("acme", "c1", segment={"city": "Riga"})
    await handler.handle(queued.model_copy(update={"payload": queued.payload.model_copy(update={"send_at": later})}))
    await asyncio.wait_for(store.inserting.wait(), 1)
    await handler.handle(cancelled("acme", "c1"))  # before the insert under way has pushed its jobs
    assert not store.insert_done.is_set()
    await asyncio.wait_for(handler.expansions.idle(), 1)
    due = queue.take_due(datetime.now(UTC), 10, lambda _: None)
    assert sorted(j["subscriber_id"] for j in due) == ["s0", "s1"]  # due now, to be recorded cancelled
    assert store.campaigns["acme:c1"]["expanded_jobs"] == 2


async def test_a_campaign_cancelled_while_it_expands_gets_no_more_jobs() -> None:
    store = StalledStore(segment_members(2))
    handler = control(store)
    await queue_campaign(handler, "acme", "c1")
    await asyncio.wait_for(store.reading.wait(), 1)  # its members being read, no job written yet
    await handler.handle(cancelled("acme", "c1"))
    store.release.set()
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert [c for c in store.calls if c[0] == "add_jobs"] == []
    assert store.campaigns["acme:c1"]["expanded_jobs"] == 0 and "expansion_pending" not in store.campaigns["acme:c1"]


async def test_a_campaign_cancelled_while_its_expansion_waits_is_not_expanded() -> None:
    store = StalledStore(segment_members(2))
    handler = control(store)
    await queue_campaign(handler, "acme", "c1")
    await asyncio.wait_for(store.reading.wait(), 1)  # c1 under way; c2 waits behind it
    await queue_campaign(handler, "acme", "c2")
    await handler.handle(cancelled("acme", "c2"))
    store.release.set()
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.reads == ["acme"]  # c2's audience never read
    assert store.campaigns["acme:c1"]["expanded_jobs"] == 2
    assert store.campaigns["acme:c2"]["expanded_jobs"] == 0 and "expansion_pending" not in store.campaigns["acme:c2"]
    assert {j["campaign_id"] for j in store.jobs} == {"c1"}


async def test_a_failed_expansion_is_tried_again_before_the_next_one() -> None:
    store = StalledStore(segment_members(2))
    store.failures = 1
    handler = control(store)
    handler.expansions = Expansions(handler._expand_campaign, retry_seconds=0.01)
    await queue_campaign(handler, "acme", "c1")
    await queue_campaign(handler, "acme", "c2")
    store.release.set()
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.reads == ["acme", "acme", "acme"]  # c1 failed, c1 again, then c2
    assert [c for c in store.calls if c[0] == "mark_expanded"] == [("mark_expanded", 2)] * 2
    assert store.campaigns["acme:c1"]["expanded_jobs"] == store.campaigns["acme:c2"]["expanded_jobs"] == 2


async def test_a_purge_stops_the_accounts_expansion_under_way_and_drops_its_waiting_ones() -> None:
    store = StalledStore(segment_members(2))
    store.stalled = {"acme"}
    handler = control(store)
    for account_id, campaign_id in (("acme", "c1"), ("beta", "c2"), ("acme", "c3")):
        await handler.handle(campaign_queued(account_id, campaign_id, segment={"city": "Riga"}))
    await asyncio.wait_for(store.reading.wait(), 1)  # acme's c1 under way, stalled for good
    await asyncio.wait_for(handler.expansions.forget_account("acme"), 1)
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.reads == ["acme", "beta"]
    assert store.campaigns["beta:c2"]["expanded_jobs"] == 2
    assert "expanded_jobs" not in store.campaigns["acme:c1"] and "expanded_jobs" not in store.campaigns["acme:c3"]
    assert {j["account_id"] for j in store.jobs} == {"beta"}


async def test_an_expansion_interrupted_by_a_stop_is_taken_up_again_at_start() -> None:
    store = StalledStore(segment_members(2))
    store.release.set()
    queued_at = datetime(2026, 11, 30, 9, tzinfo=UTC)
    store.campaigns["acme:c1"] = {"_id": "acme:c1", "account_id": "acme", "state": {"campaign_id": "c1",
                                                                                     "queued": True},
                                  "list_id": "news", "segment": {"city": "Riga"}, "send_at": None,
                                  "queued_at": queued_at, "expansion_pending": "e1"}
    store.pending = [store.campaigns["acme:c1"]]
    gates = GateBook()
    queue = JobQueue(gates.changed)
    handler = ControlHandler(store, gates, queue, caught_up)  # type: ignore[arg-type]
    await handler.load()
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.campaigns["acme:c1"]["expanded_jobs"] == 2
    assert sorted(j["subscriber_id"] for j in store.jobs) == ["s0", "s1"]
    assert {j["next_attempt_at"] for j in store.jobs} == {queued_at}


def marks(store: RecordingStore) -> list[Any]:
    return [c for c in store.calls if c[0] == "mark_expanded"]


async def test_a_campaign_queued_again_while_it_expands_is_marked_expanded_by_the_newer_expansion_only() -> None:
    """Marking it by the older one would let the campaign end before the newer one's jobs exist."""
    store = StalledStore(segment_members(2))
    handler = control(store)
    await queue_campaign(handler, "acme", "c1")
    await asyncio.wait_for(store.reading.wait(), 1)
    await queue_campaign(handler, "acme", "c1")  # under way: superseded
    await queue_campaign(handler, "acme", "c1")  # waiting: replaced
    assert len(handler.expansions) == 2
    store.release.set()
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.reads == ["acme", "acme"] and marks(store) == [("mark_expanded", 2)]


async def test_a_campaign_whose_expansion_keeps_failing_is_given_up_and_the_next_goes_on() -> None:
    class Broken(StalledStore):
        async def list_members(self, account_id: str, list_id: str) -> Any:
            self.reads.append(account_id)
            if account_id == "acme":
                raise ValueError("a segment no store can read")
            for member in self._members:
                yield member

    store = Broken(segment_members(2))
    handler = control(store)
    handler.expansions = Expansions(handler._expand_campaign, handler._expansion_failed, retry_seconds=0.01)
    await queue_campaign(handler, "acme", "c1")
    await queue_campaign(handler, "beta", "c2")
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.reads == ["acme", "acme", "acme", "beta"]  # three attempts, then the next campaign
    assert store.campaigns["acme:c1"]["expansion_failed"] == "ValueError: a segment no store can read"
    assert "expansion_pending" in store.campaigns["acme:c1"]  # the next start tries it again
    assert store.campaigns["beta:c2"]["expanded_jobs"] == 2


async def test_every_purge_caller_waits_for_the_stopped_expansions_last_insert_and_one_task_runs() -> None:
    store, handler = await inserting_acme()
    first = asyncio.create_task(handler.expansions.forget_account("acme"))
    await asyncio.sleep(0)
    await queue_campaign(handler, "beta", "c2")  # submitted meanwhile
    second = asyncio.create_task(handler.expansions.forget_account("acme"))
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert store.insert_done.is_set()  # neither returned while acme's insert was under way
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.reads == ["acme", "beta"] and marks(store) == [("mark_expanded", 2)]
    assert "expanded_jobs" not in store.campaigns["acme:c1"]


async def test_after_stop_nothing_more_is_expanded() -> None:
    store = StalledStore(segment_members(2))
    store.release.set()
    handler = control(store)
    await handler.expansions.stop()
    await queue_campaign(handler, "acme", "c1")
    await handler.expansions.forget_account("beta")
    await asyncio.sleep(0.02)
    assert store.reads == [] and "expansion_pending" in store.campaigns["acme:c1"]


async def test_an_expansion_superseded_while_it_marks_the_campaign_leaves_the_newer_one_pending() -> None:
    """The campaign is queued again while the older expansion's mark is on its way: the mark, conditional on
    the older expansion's token, leaves the newer one's `expansion_pending` alone."""
    class SlowMark(StalledStore):
        def __init__(self, members: list[Member]) -> None:
            super().__init__(members)
            self.marking = asyncio.Event()
            self.let_mark = asyncio.Event()

        async def mark_expanded(self, account_id: str, campaign_id: str, jobs: int, token: str) -> None:
            if not self.marking.is_set():
                self.marking.set()
                await self.let_mark.wait()
            await super().mark_expanded(account_id, campaign_id, jobs, token)

    store = SlowMark(segment_members(2))
    store.release.set()
    handler = control(store)
    await queue_campaign(handler, "acme", "c1")
    await asyncio.wait_for(store.marking.wait(), 1)
    again = campaign_queued("acme", "c1", segment={"city": "Riga"})
    await handler.handle(again)
    assert store.campaigns["acme:c1"]["expansion_pending"] == str(again.event_id)
    store.let_mark.set()
    await asyncio.wait_for(handler.expansions.idle(), 1)
    assert store.reads == ["acme", "acme"] and marks(store) == [("mark_expanded", 2)]  # the newer one's
    assert "expansion_pending" not in store.campaigns["acme:c1"]


async def test_a_purge_cancelled_while_it_waits_does_not_cancel_the_insert_under_way() -> None:
    store, handler = await inserting_acme()
    purge = asyncio.create_task(handler.expansions.forget_account("acme"))
    await asyncio.sleep(0.01)
    purge.cancel()  # e.g. the consumer that purges is itself stopped
    await asyncio.gather(purge, return_exceptions=True)
    await asyncio.wait_for(store.insert_done.wait(), 1)  # the insert ended; it was not cancelled


async def test_failures_count_per_expansion_and_a_failure_to_record_why_stops_nothing() -> None:
    class Broken(StalledStore):
        async def list_members(self, account_id: str, list_id: str) -> Any:
            self.reads.append(account_id)
            if account_id != "gamma":
                raise ValueError(f"{account_id} cannot be read")
            for member in self._members:
                yield member

        async def expansion_failed(self, account_id: str, campaign_id: str, reason: str) -> None:
            raise TypeError("cannot encode the reason")

    store = Broken(segment_members(1))
    handler = control(store)
    handler.expansions = Expansions(handler._expand_campaign, handler._expansion_failed, retry_seconds=0.05)
    await queue_campaign(handler, "acme", "c1")
    await queue_campaign(handler, "beta", "c2")
    await queue_campaign(handler, "gamma", "c3")
    while store.reads != ["acme"]:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    await handler.expansions.forget_account("acme")  # after one failure: beta's count starts at none
    await asyncio.wait_for(handler.expansions.idle(), 2)
    assert store.reads == ["acme", "beta", "beta", "beta", "gamma"]
    assert store.campaigns["gamma:c3"]["expanded_jobs"] == 1
