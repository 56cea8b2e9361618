"""Billing's rules where two clocks meet: sends dated by another host just before a plan began, a renewal at the
moment of a purge, and login times kept to the millisecond (PRODUCT.md, "Plans and billing", "Data protection")."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from herald_billing import domain
from herald_billing.domain import Account, PlanSince, Usage
from herald_billing.plans import CreditPack
from herald_shared.contract.billing import AccountPurged, InvoiceIssued, LoginAttempt, LoginSucceeded

from .helpers import PLANS, at, bought, monthly, opened_account

US = timedelta(microseconds=1)


def after_its_trial(**changes: object) -> Account:
    """Opened on 1 November, its trial ended on 1 December: no plan that counts sends since."""
    return opened_account(plan_history=(PlanSince(at("2026-11-01"), "trial"),
                                        PlanSince(at("2026-12-01"), "trial_ended")), **changes)


def test_a_send_dated_up_to_the_clock_skew_before_a_monthly_plan_counts_in_its_first_period() -> None:
    """A sender's clock behind billing's dates a send after the purchase before the plan began."""
    bought_at = at("2026-12-05")
    account = monthly(bought_at, plan_history=after_its_trial().plan_history)
    edge = bought_at - domain.CLOCK_SKEW
    counted = domain.send_counted_at(account, edge)
    assert counted == bought_at and account.plan_at(counted) == "monthly"
    assert account.period(counted, domain.PLATFORM_CALENDAR)[0] == bought_at
    assert domain.send_counted_at(account, edge - US) == edge - US  # beyond the tolerance: when it was dated
    assert account.plan_at(edge - US) == "trial_ended"
    later = bought_at + timedelta(seconds=1)
    assert domain.send_counted_at(account, later) == later


def test_a_send_dated_just_before_a_credit_purchase_takes_a_credit() -> None:
    bought_at = at("2026-12-05")
    account = after_its_trial()
    invoice = domain.buy_credits(account, replace(PLANS, packs=(CreditPack(5, 500, 10),)), 5,
                                 "2026-000001", bought_at)
    account = domain.evolve_all(account, bought(account, invoice))
    assert account.plan == "pay_as_you_go"
    counted = domain.send_counted_at(account, bought_at - domain.CLOCK_SKEW)
    assert counted == bought_at and account.plan_at(counted) == "pay_as_you_go"
    usage = Usage(payg_sent={domain.credit_window(account, counted): 1})
    used, without = domain.credit_use(account, usage)
    assert list(used.values()) == [1] and without == 0
    too_early = bought_at - domain.CLOCK_SKEW - US
    assert domain.send_counted_at(account, too_early) == too_early and account.plan_at(too_early) == "trial_ended"


def test_a_send_under_a_plan_that_counts_is_counted_when_it_was_dated() -> None:
    """A send on the trial a minute before a plan was bought is the trial's, as before."""
    account = monthly(at("2026-11-05"), plan_history=(PlanSince(at("2026-11-01"), "trial"),))
    sent_at = at("2026-11-05", "09:59:00")
    assert domain.send_counted_at(account, sent_at) == sent_at and account.plan_at(sent_at) == "trial"


def test_no_renewal_is_charged_at_the_moment_the_purge_is_due_and_one_is_a_moment_before() -> None:
    """PRODUCT.md: an account nobody logged in to for 2 years is deleted; fees are not refunded. The period ending
    exactly 2 years after the last login is not renewed; one ending before the purge is (services/billing/README.md,
    "Retention": a login before the purge keeps the account)."""
    account = monthly(at("2026-12-05"), last_login_at=at("2025-01-05"))
    assert account.paid_until == at("2027-01-05")
    assert domain.retention_due(account)[0] == account.paid_until
    assert domain.renewal(account, PLANS, "2027-000001", account.paid_until) is None
    assert [type(e) for e in domain.purge(account, account.paid_until)] == [AccountPurged]
    a_moment_later = replace(account, last_login_at=at("2025-01-05", "10:00:00.001"))
    assert domain.purge(a_moment_later, account.paid_until) == []
    assert isinstance(domain.renewal(a_moment_later, PLANS, "2027-000001", account.paid_until), InvoiceIssued)


def login(account: Account, when: datetime) -> Account:
    event = LoginSucceeded(account_id=account.account_id, producer=domain.PRODUCER, occurred_at=when,
                           payload=LoginAttempt(username="ada", method="password", session_id="s1"))
    folded = domain.evolve_account(account, event)
    assert folded is not None
    return folded


def test_a_login_kept_to_the_millisecond_never_brings_the_purge_forward() -> None:
    logged_in = at("2026-12-03", "10:00:00.000500")
    account = login(after_its_trial(), logged_in)
    two_years = domain.PLATFORM_CALENDAR.add_months(logged_in, 24)
    assert domain.purge(account, two_years - US) == []
    assert [type(e) for e in domain.purge(account, two_years + timedelta(milliseconds=1))] == [AccountPurged]
    # A login on the millisecond is kept as it was.
    assert login(after_its_trial(), at("2026-12-03", "10:00:00.002")).last_login_at == at("2026-12-03", "10:00:00.002")


def test_a_send_dated_before_the_account_opened_counts_on_its_trial() -> None:
    """No email goes out before the account opens: one dated hours before (a sender's clock far behind) is the
    trial's, not nobody's (it took no part of the 100 before)."""
    account = opened_account(plan_history=(PlanSince(at("2026-11-01"), "trial"),))
    early = account.opened_at - timedelta(hours=2)
    assert domain.send_counted_at(account, early) == account.opened_at
    assert account.plan_at(domain.send_counted_at(account, early)) == "trial"
