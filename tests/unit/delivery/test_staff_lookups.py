"""The pure answer of a staff look-up (PRODUCT.md "Data protection": support look-ups, "was it sent, when, why
blocked"): where each message stands, from its recorded attempts and, while it is pending, the stored gates; and the
order and cursor of its pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald_delivery import domain
from herald_delivery.domain import AccountState, CampaignState, CursorInvalid, LookupCursor, QueuedCampaign

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OPEN = AccountState("acme", approved=True)
QUEUED = CampaignState("c1", queued=True)


def attempt(n: int, outcome: str, **fields: Any) -> dict[str, Any]:
    return {"_id": f"m1:{n}", "message_id": "m1", "attempt": n, "outcome": outcome,
            "final": outcome != "deferred", "recorded_at": T0 + timedelta(minutes=n), **fields}


def deferral(n: int) -> dict[str, Any]:
    return attempt(n, "deferred", smtp_code=451, smtp_reply="4.2.0 mailbox busy",
                   next_attempt_at=T0 + timedelta(hours=n))


@pytest.mark.parametrize(("last", "expected"), [
    (attempt(1, "sent", smtp_code=250, smtp_reply="2.0.0 OK"), {"state": "sent"}),
    (attempt(1, "bounced", smtp_code=550, smtp_reply="5.1.1 user unknown", bounce_class="hard"),
     {"state": "bounced", "bounce_class": "hard"}),
    (attempt(1, "skipped", reason="member_unsubscribed"), {"state": "skipped", "reason": "member_unsubscribed"}),
    (attempt(1, "cancelled", reason="campaign_cancelled"), {"state": "cancelled", "reason": "campaign_cancelled"}),
])
def test_a_final_outcome_is_what_the_ledger_says_whatever_the_gates_are_now(
        last: dict[str, Any], expected: dict[str, Any]) -> None:
    suspended = AccountState("acme", approved=True, suspended=True, suspension_reason="hard bounces 9%")
    state = domain.message_state("campaign", [last], suspended, QUEUED)
    assert {key: state[key] for key in expected} == expected
    assert state["final"] is True and state["held_by"] is None


def test_a_pending_message_of_a_suspended_account_is_held_with_the_suspension_as_its_reason() -> None:
    suspended = AccountState("acme", approved=True, suspended=True, suspension_reason="hard bounces 9% >= 8%")
    state = domain.message_state("campaign", [], suspended, QUEUED)
    assert (state["state"], state["held_by"], state["final"]) == ("held", "account_suspended", False)
    assert state["reason"] == "account suspended: hard bounces 9% >= 8%"


@pytest.mark.parametrize(("account", "campaign", "gate"), [
    (AccountState("acme", approved=True, blocked_reasons=frozenset({"payment_failed"})), QUEUED, "sending_blocked"),
    (AccountState("acme"), QUEUED, "account_review"),
    (OPEN, CampaignState("c1", queued=True, review_required=True), "campaign_review"),
])
def test_a_pending_message_behind_any_closed_gate_is_held_by_that_gate(
        account: AccountState, campaign: CampaignState, gate: str) -> None:
    state = domain.message_state("campaign", [], account, campaign)
    assert (state["state"], state["held_by"]) == ("held", gate)
    assert state["reason"] == domain.gate_reason(gate, account)  # type: ignore[arg-type]


def test_a_deferred_message_says_when_it_is_tried_again_and_one_deferred_then_held_is_held() -> None:
    deferred = domain.message_state("campaign", [deferral(1), deferral(2)], OPEN, QUEUED)
    assert (deferred["state"], deferred["next_attempt_at"], deferred["final"]) == ("deferred", T0 + timedelta(hours=2),
                                                                                   False)
    suspended = AccountState("acme", approved=True, suspended=True)
    assert domain.message_state("campaign", [deferral(1)], suspended, QUEUED)["state"] == "held"


def test_a_pending_message_of_a_cancelled_or_rejected_campaign_will_be_recorded_cancelled() -> None:
    """The sender records it cancelled, whatever the gates, when it comes to it (README, "Gates")."""
    suspended = AccountState("acme", approved=True, suspended=True)
    cancelled = domain.message_state("campaign", [], suspended, CampaignState("c1", queued=True, cancelled=True))
    rejected = domain.message_state("campaign", [deferral(1)], OPEN, CampaignState("c1", queued=True, rejected=True))
    assert (cancelled["state"], cancelled["reason"], cancelled["final"]) == ("cancelled", "campaign_cancelled", False)
    assert (rejected["state"], rejected["reason"]) == ("cancelled", "campaign_rejected")


def test_a_message_never_tried_is_queued_until_its_send_time_and_a_confirmation_is_never_held() -> None:
    send_at = T0 + timedelta(days=1)
    queued = domain.message_state("campaign", [], OPEN, QUEUED, due=send_at)
    assert (queued["state"], queued["next_attempt_at"]) == ("queued", send_at)
    suspended = AccountState("acme", suspended=True)  # a suspended account must still get its subscribers confirmed
    assert domain.message_state("confirmation", [], suspended, None)["state"] == "queued"


def test_a_message_the_send_allowance_holds_is_shown_held_by_it_not_queued() -> None:
    """Support's "why blocked": an allowance of 10 with 10 sent since billing counted, by the counts the sender
    stored, or one whose `until` has come, holds a campaign message (never a confirmation)."""
    account = AccountState("acme", approved=True, allowance=domain.SendAllowance(10, ("campaign",), 40, 0, 3,
                                                                                 until=T0 + timedelta(days=1)))
    room = domain.AllowanceAsStored({"campaign": 49}, T0)
    assert domain.message_state("campaign", [], account, QUEUED, allowance=room)["state"] == "queued"
    spent = domain.message_state("campaign", [], account, QUEUED, allowance=domain.AllowanceAsStored(
        {"campaign": 50}, T0))
    assert (spent["state"], spent["held_by"]) == ("held", "send_allowance") and "allowed by billing" in spent["reason"]
    ended = domain.AllowanceAsStored({"campaign": 40}, T0 + timedelta(days=1))
    assert domain.message_state("campaign", [], account, QUEUED, allowance=ended)["held_by"] == "send_allowance"
    assert domain.message_state("confirmation", [], account, None, allowance=ended)["state"] == "queued"


def test_a_message_answer_lists_every_attempt_in_order_and_never_the_address_the_job_keeps() -> None:
    job = {"_id": "m1", "kind": "confirmation", "account_id": "acme", "subscriber_id": "s1", "list_id": "news",
           "created_at": T0, "next_attempt_at": T0, "recipient": "anna@example.org", "confirm_url": "https://x/y"}
    answer = domain.message_answer(job, [attempt(2, "sent", smtp_code=250), deferral(1)], OPEN, None,
                                   ["undetermined", "hard"])
    assert [a["attempt"] for a in answer["attempts"]] == [1, 2]
    assert answer["attempts"][0] == {"attempt": 1, "at": T0 + timedelta(minutes=1), "outcome": "deferred",
                                     "smtp_code": 451, "smtp_reply": "4.2.0 mailbox busy", "bounce_class": None,
                                     "reason": None, "next_attempt_at": T0 + timedelta(hours=1)}
    assert (answer["state"], answer["reported_bounces"], answer["in_doubt"]) == ("sent", ["hard", "undetermined"],
                                                                                 False)
    assert "anna@example.org" not in repr(answer) and "https://x/y" not in repr(answer)


def campaign(campaign_id: str, minutes: int) -> QueuedCampaign:
    return QueuedCampaign(campaign_id, T0 + timedelta(minutes=minutes), CampaignState(campaign_id, queued=True))


def test_campaigns_come_newest_first_and_a_cursor_resumes_after_the_message_it_names() -> None:
    campaigns = [campaign("a", 1), campaign("c", 3), campaign("b", 3), campaign("d", 2)]
    assert [c.campaign_id for c in domain.newest_first(campaigns)] == ["c", "b", "d", "a"]
    cursor = LookupCursor.read(LookupCursor.after(campaign("b", 3), "m2").text())
    assert [c.campaign_id for c in domain.newest_first(campaigns, cursor)] == ["b", "d", "a"]
    assert domain.still_to_come(campaign("b", 3), ["m3", "m1", "m2"], cursor) == ["m3"]
    assert domain.still_to_come(campaign("d", 2), ["m3", "m1"], cursor) == ["m1", "m3"]


@pytest.mark.parametrize("text", ["", "x", "20261125T120000000000Z/c1", "2026-11-25/c1/m1",
                                  "20261125T120000000000Z//m1", "20261125T120000000000Z/c1/m1/x"])
def test_a_cursor_no_page_gave_is_refused(text: str) -> None:
    with pytest.raises(CursorInvalid):
        LookupCursor.read(text)
