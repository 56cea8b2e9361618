"""Pure rules of delivery: message identity, gates, SMTP outcome classes, retry policy, rate limits."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald_delivery import domain
from herald_delivery.domain import AccountState, CampaignState, Member, RetryPolicy, SmtpReply, TokenBucket
from herald_shared.contract.billing import AccountApproved, PlanChanged, SendingBlocked, SendingUnblocked
from herald_shared.contract.campaigns import CampaignApproved, CampaignCancelled, CampaignRejected
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended
from tests.samples import campaign_queued

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OPEN = AccountState("acme", approved=True)


def test_message_id_is_deterministic_per_campaign_and_subscriber() -> None:
    first = domain.message_id_for("acme", "c1", "s1")
    assert first == domain.message_id_for("acme", "c1", "s1")
    assert len({first, domain.message_id_for("acme", "c1", "s2"), domain.message_id_for("acme", "c2", "s1"),
                domain.message_id_for("other", "c1", "s1")}) == 4


def test_outcome_event_ids_are_deterministic_per_attempt() -> None:
    assert domain.outcome_event_id("m", "sent", 1) == domain.outcome_event_id("m", "sent", 1)
    assert domain.outcome_event_id("m", "deferred", 1) != domain.outcome_event_id("m", "deferred", 2)


def fold(*events: object) -> AccountState:
    state = AccountState("acme")
    for event in events:
        state = domain.evolve_account(state, event)  # type: ignore[arg-type]
    return state


def billing(cls: type, **payload: object) -> object:
    return cls(account_id="acme", producer="billing", payload=payload)


def test_a_new_account_is_held_until_staff_approve_it() -> None:
    """PRODUCT.md "Review": every new account is reviewed before it may send."""
    assert domain.closed_gate(fold(), None) == "account_review"
    assert domain.closed_gate(fold(billing(AccountApproved, reviewer="staff")), None) is None


def test_suspension_holds_until_reinstated() -> None:
    suspended = fold(billing(AccountApproved, reviewer="s"),
                     AccountSuspended(account_id="acme", producer="compliance",
                                      payload={"metric": "hard_bounce_rate", "reason": "8% hard bounces"}))
    assert domain.closed_gate(suspended, None) == "account_suspended"
    reinstated = domain.evolve_account(suspended, AccountReinstated(
        account_id="acme", producer="compliance", payload={"reinstated_by": "staff", "reason": "fixed list"}))
    assert domain.closed_gate(reinstated, None) is None


def test_a_reinstatement_of_an_earlier_suspension_does_not_lift_the_current_one() -> None:
    first = AccountSuspended(account_id="acme", producer="compliance",
                             payload={"metric": "hard_bounce_rate", "reason": "8% hard bounces"})
    second = AccountSuspended(account_id="acme", producer="compliance",
                              payload={"metric": "abuse_rate", "reason": "0.6% complaints"})

    def reinstatement(suspension: AccountSuspended) -> AccountReinstated:
        return AccountReinstated(account_id="acme", producer="compliance", payload={
            "reinstated_by": "staff", "reason": "fixed", "suspension_event_id": str(suspension.event_id)})

    state = fold(billing(AccountApproved, reviewer="s"), first, reinstatement(first), second)
    assert domain.closed_gate(state, None) == "account_suspended"
    state = domain.evolve_account(state, reinstatement(first))  # the first one's, delivered again
    assert domain.closed_gate(state, None) == "account_suspended"
    state = domain.evolve_account(state, reinstatement(second))
    assert domain.closed_gate(state, None) is None
    # a suspension stored before suspensions were remembered by id is lifted by any reinstatement
    stored = replace(state, suspended=True, suspension_reason="8% hard bounces", suspension_event_id=None)
    assert domain.closed_gate(domain.evolve_account(stored, reinstatement(second)), None) is None


def test_every_billing_block_holds_until_each_is_lifted() -> None:
    state = fold(billing(AccountApproved, reviewer="s"), billing(SendingBlocked, reason="trial_ended"),
                 billing(SendingBlocked, reason="payment_failed"))
    assert domain.closed_gate(state, None) == "sending_blocked"
    state = domain.evolve_account(state, billing(SendingUnblocked, reason="trial_ended"))  # type: ignore[arg-type]
    assert domain.closed_gate(state, None) == "sending_blocked"
    state = domain.evolve_account(state, billing(SendingUnblocked, reason="payment_failed"))  # type: ignore[arg-type]
    assert domain.closed_gate(state, None) is None


def test_pro_plan_is_remembered_for_the_footer_rule() -> None:
    state = fold(billing(PlanChanged, plan="monthly", edition="pro", effective_at=NOW))
    assert state.edition == "pro"


def campaign_event(cls: type, **payload: object) -> object:
    return cls(account_id="acme", producer="campaigns", payload={"campaign_id": "c1", **payload})


def test_a_reviewed_campaign_waits_for_approval_in_either_order() -> None:
    """PRODUCT.md "Review": during the trial every campaign is reviewed before it goes out."""
    queued = campaign_queued("acme", "c1", review_required=True)
    waiting = domain.evolve_campaign(CampaignState("c1"), queued)
    assert domain.closed_gate(OPEN, waiting) == "campaign_review"
    approved = domain.evolve_campaign(waiting, campaign_event(CampaignApproved, reviewer="staff"))  # type: ignore[arg-type]
    assert domain.closed_gate(OPEN, approved) is None
    approved_first = domain.evolve_campaign(CampaignState("c1"), campaign_event(CampaignApproved, reviewer="s"))  # type: ignore[arg-type]
    assert domain.closed_gate(OPEN, domain.evolve_campaign(approved_first, queued)) is None
    rejected = domain.evolve_campaign(waiting, campaign_event(CampaignRejected, reviewer="s", reasons=["spam"]))  # type: ignore[arg-type]
    assert domain.closed_gate(OPEN, rejected) == "campaign_review"
    cancelled = domain.evolve_campaign(approved, campaign_event(CampaignCancelled, cancelled_by="me"))  # type: ignore[arg-type]
    assert cancelled.cancelled


def test_a_campaign_rejected_then_edited_and_submitted_again_goes_out_once_queued() -> None:
    """campaigns README: staff reject with reasons, and the author edits the campaign back into a draft and submits
    it again. Submitted again with no review needed (the account left the trial, or the flagged content is gone),
    it is queued without an approval: the earlier rejection no longer holds it."""
    rejected = domain.evolve_campaign(CampaignState("c1"), campaign_event(CampaignRejected, reviewer="s",  # type: ignore[arg-type]
                                                                             reasons=["spam"]))
    assert rejected.rejected
    queued = domain.evolve_campaign(rejected, campaign_queued("acme", "c1", review_required=False))
    assert not queued.rejected and domain.closed_gate(OPEN, queued) is None
    # Submitted again under review: held until approved, as any reviewed campaign.
    again = domain.evolve_campaign(rejected, campaign_queued("acme", "c1", review_required=True))
    assert domain.closed_gate(OPEN, again) == "campaign_review"
    approved = domain.evolve_campaign(again, campaign_event(CampaignApproved, reviewer="s"))  # type: ignore[arg-type]
    assert domain.closed_gate(OPEN, approved) is None


def test_account_gates_come_before_the_campaign_gate() -> None:
    waiting = CampaignState("c1", queued=True, review_required=True)
    assert domain.closed_gate(AccountState("acme", approved=True, suspended=True), waiting) == "account_suspended"


@pytest.mark.parametrize(("code", "text", "outcome", "enhanced"), [
    (250, "2.0.0 Ok: queued", "sent", "2.0.0"),
    (451, "4.7.1 Try again later", "deferred", "4.7.1"),
    (421, "Service not available", "deferred", None),
    (None, "connection reset", "deferred", None),
    (550, "5.1.1 <x@y> User unknown", "bounced", "5.1.1"),
    (554, "4.0.0 mismatched class", "bounced", None),
])
def test_smtp_replies_are_classified(code: int | None, text: str, outcome: str, enhanced: str | None) -> None:
    reply = SmtpReply(code, text)
    assert domain.classify(reply) == outcome
    assert reply.enhanced_status == enhanced


def test_a_refused_sender_defers_instead_of_bouncing_the_recipient() -> None:
    """A 5xx to MAIL FROM is about the platform's sender, not the subscriber's address."""
    assert domain.classify(SmtpReply(553, "5.7.1 Sender address rejected", stage="mail")) == "deferred"
    assert domain.classify(SmtpReply(535, "5.7.8 Authentication failed", stage="connect")) == "deferred"
    assert domain.classify(SmtpReply(550, "5.1.1 User unknown", stage="rcpt")) == "bounced"


def test_retry_backs_off_exponentially_with_jitter_until_the_give_up_age() -> None:
    policy = RetryPolicy(first_delay=timedelta(minutes=5), max_delay=timedelta(hours=4),
                         give_up_after=timedelta(hours=72), jitter=0.5)
    rng = random.Random(7)
    ceilings = [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]
    for attempt, ceiling in enumerate(ceilings, start=1):
        delay = policy.delay(attempt, rng).total_seconds()
        assert ceiling * 0.5 <= delay <= ceiling
    first = NOW
    assert policy.next_attempt(3, first, NOW + timedelta(hours=1), rng) is not None
    last = policy.next_attempt(9, first, NOW + timedelta(hours=71, minutes=59), rng)
    assert last is not None and last <= first + timedelta(hours=72)
    assert policy.next_attempt(10, first, NOW + timedelta(hours=72), rng) is None


@pytest.mark.parametrize(("first", "most", "multiplier"), [(60, 60, 2.0), (1, 3600, 1.5), (30, 30, 1.0)])
def test_retry_delays_stay_at_their_ceiling_however_many_attempts(first: int, most: int, multiplier: float) -> None:
    """A short first delay with the default 72 h give-up age allows thousands of attempts: multiplier ** attempt
    overflowed a float past ~1,000 of them, and the message was neither retried nor given up."""
    policy = RetryPolicy(first_delay=timedelta(seconds=first), max_delay=timedelta(seconds=most),
                         multiplier=multiplier, jitter=0.0)
    for attempt in (1, 1025, 5000, 10**6):
        assert first <= policy.delay(attempt, random.Random(1)).total_seconds() <= most
    assert policy.delay(10**6, random.Random(1)).total_seconds() == most
    assert policy.next_attempt(5000, NOW, NOW + timedelta(hours=1), random.Random(1)) is not None


def test_retry_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(first_delay=timedelta(0))
    with pytest.raises(ValueError):
        RetryPolicy(jitter=1.0)


@given(st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_a_retry_never_goes_past_the_give_up_age(attempt: int, seed: int) -> None:
    policy = RetryPolicy()
    now = NOW + timedelta(hours=70)
    when = policy.next_attempt(attempt, NOW, now, random.Random(seed))
    assert when is not None and now < when <= NOW + policy.give_up_after


def test_only_active_members_of_the_list_matching_the_segment_receive() -> None:
    """PRODUCT.md "Every message": only confirmed, non-suppressed subscribers of the target list."""
    active = Member("s1", "news", "a@x.example", "active", custom_fields={"city": "Riga"})
    assert domain.receives(active, "news", {}, list_deleted=False)
    assert domain.receives(active, "news", {"city": "Riga"}, list_deleted=False)
    assert not domain.receives(active, "news", {"city": "Tartu"}, list_deleted=False)
    assert not domain.receives(active, "other", {}, list_deleted=False)
    assert not domain.receives(active, "news", {}, list_deleted=True)
    for status in ("pending", "unsubscribed", "suppressed", "erased"):
        assert not domain.receives(Member("s1", "news", "a@x.example", status), "news", {}, list_deleted=False)
    assert not domain.receives(Member("s1", "news", None, "active"), "news", {}, list_deleted=False)


def test_token_bucket_paces_to_the_rate_after_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    assert bucket.reserve(0.0) == 0 and bucket.reserve(0.0) == 0
    assert bucket.reserve(0.0) == pytest.approx(0.1)
    assert bucket.reserve(0.0) == pytest.approx(0.2)
    assert TokenBucket(rate=0, burst=1).reserve(0.0) == 0


@given(st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=30), st.floats(0, 30, allow_nan=False))
def test_a_bucket_refilled_to_its_burst_is_forgotten_and_a_new_one_answers_the_same(gaps: list[float],
                                                                                      later: float) -> None:
    """The sender drops full buckets (`forget_full`), so it keeps none for every domain ever sent to: lossless."""
    now, kept = 0.0, TokenBucket(rate=2, burst=3)
    for gap in gaps:
        now += gap
        kept.reserve(now)
    now += later
    buckets = {"example.org": kept}
    forgotten = domain.forget_full(buckets, now)
    assert forgotten == (1 if kept.full(now) else 0)
    fresh = buckets.get("example.org", TokenBucket(rate=2, burst=3))
    shadow = TokenBucket(kept.rate, kept.burst, kept.tokens, kept.updated)
    for step in (0.0, 0.1, 0.1, 0.7):
        now += step
        assert fresh.reserve(now) == pytest.approx(shadow.reserve(now))


@pytest.mark.parametrize("address", ["bob@example.org", "हिन्दी@example.org", "ติดต่อ@example.th", "user@मराठी.भारत",
                                     "o'neil+x@mail.example.co.uk"])
def test_a_diagnostic_quotes_no_address_in_any_script(address: str) -> None:
    from herald_delivery.domain import without_addresses

    said = f"550 5.1.1 <{address}>: Recipient address rejected; write to postmaster@example.org"
    assert without_addresses(said) == "550 5.1.1 <address>: Recipient address rejected; write to address"
    assert without_addresses(f"550 unknown user {address}", known=address) == "550 unknown user address"
    assert without_addresses("250 2.0.0 Ok: queued as 4F2") == "250 2.0.0 Ok: queued as 4F2"
