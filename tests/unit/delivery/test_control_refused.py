"""The control handler and what the store refuses: gates closed at once and opened only once stored, a batch
forgotten back to what the store holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson.errors import InvalidDocument
from hypothesis import given
from hypothesis import strategies as st

from herald_delivery.domain import AccountState, CampaignState, closed_gate, message_id_for
from herald_delivery.handlers import (
    ControlHandler,
    GateBook,
    account_until_stored,
    campaign_until_stored,
    new_job,
)
from herald_delivery.queue import JobQueue
from herald_shared.contract.billing import AccountApproved, SendingBlocked
from herald_shared.contract.campaigns import CampaignApproved, CampaignCancelled
from herald_shared.contract.compliance import AccountSuspended
from herald_shared.kafka import Reject

accounts = st.builds(AccountState, st.just("acme"), approved=st.booleans(), suspended=st.booleans(),
                     blocked_reasons=st.frozensets(st.sampled_from(["trial_ended", "payment_failed", "no_plan"])),
                     registered_email=st.sampled_from([None, "a@acme.example", "b@acme.example"]))
campaigns = st.builds(CampaignState, st.just("c1"), queued=st.booleans(), review_required=st.booleans(),
                      approved=st.booleans(), rejected=st.booleans(), cancelled=st.booleans())


@given(accounts, accounts, campaigns, campaigns)
def test_while_unstored_a_gate_closed_in_either_state_stays_closed_and_a_stored_state_shows_as_it_is(
        current: AccountState, staged: AccountState, stored_campaign: CampaignState,
        staged_campaign: CampaignState) -> None:
    account = account_until_stored(current, staged)
    campaign = campaign_until_stored(stored_campaign, staged_campaign)
    assert account.suspended == (current.suspended or staged.suspended)
    assert account.blocked_reasons == current.blocked_reasons | staged.blocked_reasons
    assert account.approved == (current.approved and staged.approved)
    assert account.registered_email == current.registered_email  # not a gate: as stored, until stored
    for before in ((current, stored_campaign), (staged, staged_campaign)):
        if closed_gate(*before) is not None:
            assert closed_gate(account, campaign) is not None
    for called_off in ("rejected", "cancelled"):
        assert getattr(campaign, called_off) == (getattr(stored_campaign, called_off)
                                                 or getattr(staged_campaign, called_off))
    assert account_until_stored(staged, staged) == staged
    assert campaign_until_stored(staged_campaign, staged_campaign) == staged_campaign


class Store:
    """Accounts and campaigns in dicts; the writes named in `refusing` are refused as the store refuses a value
    it cannot keep (not an infrastructure error: no retry changes it)."""

    def __init__(self) -> None:
        self.accounts_by_id: dict[str, AccountState] = {}
        self.campaigns: dict[str, Any] = {}
        self.jobs: list[Any] = []
        self.refusing: set[str] = set()

    def _write(self, what: str) -> None:
        if what in self.refusing:
            raise InvalidDocument(f"{what}: a value the store cannot keep")

    async def save_accounts(self, states: list[AccountState]) -> None:
        self._write("accounts")
        self.accounts_by_id.update((state.account_id, state) for state in states)

    async def accounts(self, account_ids: list[str]) -> dict[str, AccountState]:
        return {a: self.accounts_by_id[a] for a in account_ids if a in self.accounts_by_id}

    async def campaign(self, account_id: str, campaign_id: str) -> Any:
        return self.campaigns.get(f"{account_id}:{campaign_id}")

    async def campaign_states(self, keys: list[str]) -> dict[str, CampaignState]:
        return {key: CampaignState(**self.campaigns[key]["state"]) for key in keys if key in self.campaigns}

    async def save_campaigns(self, docs: list[Any]) -> None:
        self._write("campaigns")
        self.campaigns.update({doc["_id"]: doc for doc in docs})

    async def save_campaign_states(self, docs: list[Any]) -> None:
        self._write("campaign_states")
        for doc in docs:
            self.campaigns[doc["_id"]] = {**self.campaigns.get(doc["_id"], {}), "state": doc["state"]}

    async def add_jobs(self, docs: list[Any]) -> list[Any]:
        self._write("jobs")
        self.jobs += docs
        return docs


async def caught_up() -> None:
    return None


LATER = datetime.now(UTC) + timedelta(hours=4)


def stored_acme() -> tuple[Store, GateBook, JobQueue, ControlHandler]:
    """acme approved, its campaign c1 waiting for review and its c2 scheduled four hours ahead, one job each, as
    a start reads them from the store."""
    store = Store()
    store.accounts_by_id["acme"] = AccountState("acme", approved=True, registered_email="owner@acme.example",
                                                company_name="Acme")
    for campaign in (CampaignState("c1", queued=True, review_required=True), CampaignState("c2", queued=True)):
        store.campaigns[f"acme:{campaign.campaign_id}"] = {"_id": f"acme:{campaign.campaign_id}",
                                                           "account_id": "acme", "state": campaign.__dict__}
    gates = GateBook()
    gates.accounts = dict(store.accounts_by_id)
    gates.campaigns = {key: CampaignState(**doc["state"]) for key, doc in store.campaigns.items()}
    queue = JobQueue(gates.changed)
    queue.push([new_job(message_id_for("acme", c, "s1"), "acme", "campaign", LATER, campaign_id=c,
                        subscriber_id="s1", list_id="news") for c in ("c1", "c2")])
    return store, gates, queue, ControlHandler(store, gates, queue, caught_up)  # type: ignore[arg-type]


def approved(campaign_id: str) -> CampaignApproved:
    return CampaignApproved(account_id="acme", producer="campaigns",  # type: ignore[arg-type]
                            payload={"campaign_id": campaign_id, "reviewer": "staff"})


def blocked() -> SendingBlocked:
    return SendingBlocked(account_id="acme", producer="billing",  # type: ignore[arg-type]
                          payload={"reason": "monthly_quota_reached"})


def cancelled(campaign_id: str) -> CampaignCancelled:
    return CampaignCancelled(account_id="acme", producer="campaigns",  # type: ignore[arg-type]
                             payload={"campaign_id": campaign_id, "cancelled_by": "anna"})


def due_now(queue: JobQueue) -> list[str]:
    return [job["campaign_id"] for job in queue.take_due(datetime.now(UTC), 10, lambda _: None)]


async def test_a_refused_batch_is_forgotten_back_to_the_store_and_nothing_it_staged_takes_effect() -> None:
    store, gates, queue, handler = stored_acme()
    for event in (blocked(), approved("c1"), cancelled("c2")):
        await handler.handle(event)
    assert gates.gate_for("acme", "c1") == "sending_blocked"  # closed at once
    assert gates.campaign("acme", "c2").cancelled and not gates.campaign("acme", "c1").approved  # not yet stored
    store.refusing = {"accounts"}
    with pytest.raises(InvalidDocument):
        await handler.flush()
    await handler.forget()
    assert gates.accounts["acme"] == store.accounts_by_id["acme"]
    assert gates.campaign("acme", "c1") == CampaignState("c1", queued=True, review_required=True)
    assert gates.campaign("acme", "c2") == CampaignState("c2", queued=True)
    assert store.jobs == [] and len(queue) == 2  # the block's notice neither written nor queued
    assert due_now(queue) == []  # c2's job not brought forward by a cancellation the store does not hold
    await handler.flush()  # nothing left to write
    assert store.jobs == [] and gates.gate_for("acme", "c1") == "campaign_review"


async def test_events_handed_over_again_one_at_a_time_apply_once_each_and_the_refused_one_not_at_all() -> None:
    store, gates, queue, handler = stored_acme()
    for event in (approved("c1"), blocked(), cancelled("c2")):
        await handler.handle(event)
    store.refusing = {"accounts"}
    with pytest.raises(InvalidDocument):
        await handler.flush()
    await handler.forget()
    for event in (approved("c1"), blocked(), cancelled("c2")):  # as the consumer does: each flushed alone
        await handler.handle(event)
        try:
            await handler.flush()
        except InvalidDocument:
            await handler.forget()  # dead-lettered by the consumer
    assert gates.gate_for("acme", "c1") is None and gates.campaign("acme", "c1").approved
    assert store.accounts_by_id["acme"].blocked_reasons == frozenset() and store.jobs == []
    assert store.campaigns["acme:c2"]["state"]["cancelled"] and gates.campaign("acme", "c2").cancelled
    assert due_now(queue) == ["c2"]  # brought forward once its cancellation was stored


async def test_a_flush_refused_part_way_leaves_what_it_wrote_in_the_gate_book() -> None:
    store, gates, _, handler = stored_acme()
    await handler.handle(AccountSuspended(account_id="acme", producer="compliance", payload={  # type: ignore[arg-type]
        "metric": "abuse_rate", "reason": "complaints"}))
    await handler.handle(approved("c1"))
    store.refusing = {"jobs"}  # the accounts and campaign states are written, the notice is not
    with pytest.raises(InvalidDocument):
        await handler.flush()
    await handler.forget()
    assert gates.gate_for("acme", "c1") == "account_suspended" and gates.campaign("acme", "c1").approved
    assert gates.accounts["acme"] == store.accounts_by_id["acme"]


async def test_an_approval_opens_its_gate_only_once_stored() -> None:
    _, gates, _, handler = stored_acme()
    gates.changed.clear()
    await handler.handle(approved("c1"))
    assert gates.gate_for("acme", "c1") == "campaign_review" and not gates.changed.is_set()
    await handler.flush()
    assert gates.gate_for("acme", "c1") is None and gates.changed.is_set()


async def test_a_suspension_whose_notice_has_no_address_is_refused_but_stored_so_a_forgotten_batch_keeps_it() -> None:
    """README "Not done yet": the notice is dead-lettered (replayable); the suspension itself applies."""
    store = Store()
    gates = GateBook()
    handler = ControlHandler(store, gates, JobQueue(gates.changed), caught_up)  # type: ignore[arg-type]
    await handler.handle(AccountApproved(account_id="ghost", producer="billing",  # type: ignore[arg-type]
                                         payload={"reviewer": "staff"}))
    with pytest.raises(Reject, match="no AccountOpened"):
        await handler.handle(AccountSuspended(account_id="ghost", producer="compliance", payload={  # type: ignore[arg-type]
            "metric": "abuse_rate", "reason": "complaints"}))
    assert store.accounts_by_id["ghost"].suspended
    await handler.forget()  # the batch set aside: the suspension is not handed over again
    assert gates.gate_for("ghost", None) == "account_suspended"
