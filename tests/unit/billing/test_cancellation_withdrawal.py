"""A cancellation withdrawn before it takes effect keeps the plan (PRODUCT.md, "Plans and billing": cancellation
takes effect at the end of the paid period; until then the customer may change their mind)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from herald_billing import domain
from herald_billing.domain import Usage
from herald_shared.contract.billing import CancellationWithdrawn, PlanChanged
from tests.unit.billing.helpers import PLANS, at, monthly, opened_account


def test_a_cancellation_withdrawn_before_it_takes_effect_keeps_the_plan_and_its_renewal() -> None:
    account = monthly(at("2026-11-01"))  # paid until 2026-12-01
    cancelled = domain.evolve_all(account, domain.cancel(account, "self_service", at("2026-11-20"), "ada",
                                                         now=at("2026-11-20")))
    assert cancelled.cancel_at == at("2026-12-01")
    (withdrawn,) = domain.withdraw_cancellation(cancelled, "self_service", at("2026-11-30"), "ada",
                                                now=at("2026-11-30"))
    assert isinstance(withdrawn, CancellationWithdrawn)
    assert (withdrawn.payload.cancel_at, withdrawn.payload.withdrawn_by, withdrawn.occurred_at) == (
        at("2026-12-01"), "ada", at("2026-11-30"))
    kept = domain.evolve_all(cancelled, [withdrawn])
    assert kept == account  # as if never cancelled
    assert domain.end_of_agreement(kept, at("2026-12-01")) == []
    renewal = domain.renewal(kept, PLANS, "2026-000002", at("2026-12-01"))
    assert renewal is not None and renewal.payload.period_start == at("2026-12-01")
    # And it may be cancelled again.
    again = domain.cancel(kept, "self_service", at("2026-11-30"), "ada", now=at("2026-11-30"))
    assert domain.evolve_all(kept, again).cancel_at == at("2026-12-01")


def test_staff_record_a_withdrawal_the_customer_sent_as_received() -> None:
    cancelled = domain.evolve_all(monthly(at("2026-11-01")), domain.cancel(
        monthly(at("2026-11-01")), "request", at("2026-11-10"), "rita", now=at("2026-11-10")))
    (withdrawn,) = domain.withdraw_cancellation(cancelled, "request", at("2026-11-27", "08:00"), "rita",
                                                now=at("2026-11-27"))
    assert (withdrawn.payload.channel, withdrawn.payload.received_at) == (  # type: ignore[attr-defined]
        "request", at("2026-11-27", "08:00"))
    with pytest.raises(domain.ReceivedInTheFuture):
        domain.withdraw_cancellation(cancelled, "request", at("2026-11-27", "10:06"), "rita", now=at("2026-11-27"))


def test_a_withdrawal_needs_a_pending_cancellation_whose_time_has_not_come() -> None:
    account = monthly(at("2026-11-01"))
    with pytest.raises(domain.NoPendingCancellation) as none:
        domain.withdraw_cancellation(account, "self_service", at("2026-11-20"), "ada", now=at("2026-11-20"))
    assert (none.value.http_status, none.value.code) == (409, "no_pending_cancellation")
    with pytest.raises(domain.NoPendingCancellation):
        domain.withdraw_cancellation(opened_account(), "self_service", at("2026-11-20"), "ada", now=at("2026-11-20"))
    cancelled = domain.evolve_all(account, domain.cancel(account, "self_service", at("2026-11-20"), "ada",
                                                         now=at("2026-11-20")))
    # Its time came (the clock has not ended the plan yet): over, and not kept.
    with pytest.raises(domain.CancellationTookEffect) as came:
        domain.withdraw_cancellation(cancelled, "self_service", at("2026-12-01"), "ada", now=at("2026-12-01"))
    assert (came.value.http_status, came.value.code) == (409, "cancellation_took_effect")
    assert "PUT /v1/account/plan" in came.value.detail
    ended = domain.evolve_all(cancelled, domain.end_of_agreement(cancelled, at("2026-12-01")))
    assert ended.plan == "none"
    with pytest.raises(domain.CancellationTookEffect):
        domain.withdraw_cancellation(ended, "self_service", at("2026-12-02"), "ada", now=at("2026-12-02"))
    with pytest.raises(domain.RejectedAccount):
        domain.withdraw_cancellation(replace(cancelled, review="rejected"), "self_service", at("2026-11-21"), "ada",
                                     now=at("2026-11-21"))
    with pytest.raises(domain.AccountClosed):
        domain.withdraw_cancellation(replace(cancelled, deleted_at=at("2026-11-21")), "self_service",
                                     at("2026-11-21"), "ada", now=at("2026-11-21"))


def test_choosing_or_raising_a_cancelled_plan_is_refused_naming_the_withdrawal() -> None:
    """Choosing the plan again used to answer with the plan unchanged while it still ended; a raise would charge
    the difference and end all the same. Both are refused until the cancellation is withdrawn."""
    account = monthly(at("2026-11-01"))
    cancelled = domain.evolve_all(account, domain.cancel(account, "self_service", at("2026-11-20"), "ada",
                                                         now=at("2026-11-20")))
    for subscribers in (500, 1000):
        with pytest.raises(domain.CancellationPending) as refused:
            domain.buy_monthly(cancelled, Usage(), PLANS, subscribers, "standard", "2026-000002", at("2026-11-21"))
        assert (refused.value.http_status, refused.value.code) == (409, "cancellation_pending")
        assert "POST /v1/account/cancellation/withdrawal" in refused.value.detail
    kept = domain.evolve_all(cancelled, domain.withdraw_cancellation(cancelled, "self_service", at("2026-11-21"),
                                                                     "ada", now=at("2026-11-21")))
    raised = domain.buy_monthly(kept, Usage(), PLANS, 1000, "standard", "2026-000002", at("2026-11-21"))
    assert raised is not None and raised.payload.kind == "upgrade"
    with pytest.raises(domain.CancellationTookEffect):  # a request between the cancellation's time and the clock
        domain.buy_monthly(cancelled, Usage(), PLANS, 500, "standard", "2026-000002", at("2026-12-01"))
    ended = domain.evolve_all(cancelled, domain.end_of_agreement(cancelled, at("2026-12-01")))
    again = domain.buy_monthly(ended, Usage(), PLANS, 500, "standard", "2026-000002", at("2026-12-02"))
    assert again is not None and again.payload.kind == "plan"  # a new agreement


def test_a_withdrawal_withdraws_only_the_cancellation_it_names() -> None:
    """Folded out of place (a copy replayed after a later cancellation), a withdrawal leaves the later one."""
    account = monthly(at("2026-11-01"))
    first = domain.evolve_all(account, domain.cancel(account, "self_service", at("2026-11-20"), "ada",
                                                     now=at("2026-11-20")))
    withdrawn = domain.withdraw_cancellation(first, "self_service", at("2026-11-21"), "ada", now=at("2026-11-21"))
    kept = domain.evolve_all(first, withdrawn)
    late = domain.cancel(kept, "request", at("2026-11-30"), "rita", now=at("2026-11-30"))  # 2027-01-01
    again = domain.evolve_all(kept, late)
    assert again.cancel_at == at("2027-01-01")
    assert domain.evolve_all(again, withdrawn).cancel_at == at("2027-01-01")
    assert isinstance(domain.end_of_agreement(again, at("2027-01-01"))[0], PlanChanged)
