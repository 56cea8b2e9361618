"""Plan arithmetic and the monthly plan's rules, pure (PRODUCT.md, "Plans and billing"): billing dates, proration,
VAT, invoice numbers, the 109 x quota, upgrades only, cancellation 2 business days ahead."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from herald_billing import domain, plans
from herald_billing.domain import Account, Usage
from herald_billing.plans import Plans, load_plans
from herald_shared.contract.billing import (
    AccountRejected,
    CancellationRequested,
    CreditsExpired,
    CreditsPurchased,
    InvoiceIssued,
    InvoiceVoided,
    PaymentFailed,
    PaymentSucceeded,
    PlanChanged,
    QuotaExhausted,
    SendingBlocked,
    SendingUnblocked,
)
from herald_shared.readmodel import time_key
from tests.unit.billing.helpers import PLANS, at, bought, monthly, opened_account

UTC_CALENDAR = plans.BillingCalendar(ZoneInfo("UTC"))
RIGA = plans.BillingCalendar()


def test_the_billing_day_is_the_first_payments_day_or_the_months_last() -> None:
    anchor = at("2027-01-31")
    assert UTC_CALENDAR.next_billing_date(31, anchor, at("2027-01-31")) == at("2027-02-28")
    assert UTC_CALENDAR.next_billing_date(31, at("2028-01-31"), at("2028-01-31")) == at("2028-02-29")  # leap year
    assert UTC_CALENDAR.next_billing_date(31, anchor, at("2027-02-28")) == at("2027-03-31")
    assert UTC_CALENDAR.next_billing_date(15, at("2026-12-15"), at("2026-12-15")) == at("2027-01-15")
    assert UTC_CALENDAR.period_containing(31, anchor, at("2027-03-01")) == (at("2027-02-28"), at("2027-03-31"))
    assert UTC_CALENDAR.period_containing(31, anchor, at("2027-02-28", "09:59:59")) == (at("2027-01-31"),
                                                                                        at("2027-02-28"))
    # On Riga's calendar the dates keep the first payment's local time (12:00): 10:00 UTC in winter, 09:00 in
    # summer (from 28 March 2027).
    assert RIGA.next_billing_date(31, anchor, at("2027-01-31")) == at("2027-02-28")
    assert RIGA.next_billing_date(31, anchor, at("2027-02-28")) == at("2027-03-31", "09:00:00")
    assert RIGA.period_containing(31, anchor, at("2027-03-31", "09:30:00")) == (at("2027-03-31", "09:00:00"),
                                                                                 at("2027-04-30", "09:00:00"))


def test_the_billing_day_is_the_day_in_the_platforms_time_zone() -> None:
    """A first payment at 00:30 on 1 March in Riga (22:30 on 28 February in UTC) bills on the 1st, at 00:30 Riga
    time; the send cap's period and the invoice's dates are Riga's too. Stored times stay UTC."""
    riga_midnight = datetime.fromisoformat("2027-02-28T22:30:00+00:00")
    assert UTC_CALENDAR.billing_day(riga_midnight) == 28  # what billing did
    assert RIGA.billing_day(riga_midnight) == 1
    ends = RIGA.next_billing_date(1, riga_midnight, riga_midnight)
    assert ends == datetime.fromisoformat("2027-04-01T00:30:00+03:00") and ends.tzinfo == UTC
    assert RIGA.period_containing(1, riga_midnight, datetime.fromisoformat("2027-04-30T21:29:59+00:00")) == (
        ends, datetime.fromisoformat("2027-05-01T00:30:00+03:00"))
    purchase = domain.buy_monthly(opened_account(), Usage(), PLANS, 500, "standard", "2027-000001", riga_midnight,
                                  RIGA)
    assert purchase is not None and purchase.payload.purchase is not None
    assert purchase.payload.purchase.billing_day == 1 and purchase.payload.period_end == ends
    assert purchase.payload.lines[0].description.endswith("2027-03-01 to 2027-04-01")
    in_utc = domain.buy_monthly(opened_account(), Usage(), PLANS, 500, "standard", "2027-000001", riga_midnight,
                                UTC_CALENDAR)
    assert in_utc is not None and in_utc.payload.purchase is not None and in_utc.payload.purchase.billing_day == 28
    # Calendar months of retention too: 3 months after a deletion at 00:30 on 1 March (Riga) is 1 June, 00:30.
    assert RIGA.add_months(riga_midnight, 3) == datetime.fromisoformat("2027-06-01T00:30:00+03:00")


def test_a_time_zone_is_an_iana_name() -> None:
    assert plans.BillingCalendar.named("America/New_York").zone.key == "America/New_York"
    for bad in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValueError, match="IANA"):
            plans.BillingCalendar.named(bad)


def test_proration_charges_the_rest_of_the_period_to_the_cent() -> None:
    start, end = at("2026-11-01"), at("2026-12-01")  # 30 days
    assert plans.prorated(600, start, end, start) == 600
    assert plans.prorated(600, start, end, at("2026-11-16")) == 300
    assert plans.prorated(100, start, end, at("2026-11-21")) == 33  # 33.33 rounds down
    assert plans.prorated(500, start, end, at("2026-11-11")) == 333
    assert plans.prorated(5, start, end, at("2026-11-16")) == 3  # 2.5 rounds half up
    assert plans.prorated(600, start, end, end) == 0


def test_vat_rounds_half_up_to_the_cent() -> None:
    assert PLANS.vat(900) == 189
    assert PLANS.vat(50) == 11  # 10.5
    assert PLANS.vat(0) == 0


def test_invoice_numbers_run_per_year_without_gaps() -> None:
    assert domain.invoice_number(2026, 0) == "2026-000001"
    assert domain.invoice_number(2026, 41) == "2026-000042"
    assert domain.invoice_number(2027, 0) == "2027-000001"


def test_business_days_before_the_payment_date() -> None:
    # Thursday 2026-12-03 to a payment on Monday 2026-12-07: Friday only between them; Thursday and Friday before
    # it, so a request on Thursday is "at least 2 business days before" (Friday 1, Thursday 2), one on Friday not.
    assert RIGA.business_days_between(at("2026-12-03"), at("2026-12-07")) == 1
    assert RIGA.business_days_between(at("2026-12-02"), at("2026-12-07")) == 2
    assert RIGA.business_days_before(at("2026-12-03", "21:59"), at("2026-12-07")) == 2
    assert RIGA.business_days_before(at("2026-12-04"), at("2026-12-07")) == 1
    assert RIGA.business_days_before(at("2026-12-05"), at("2026-12-07")) == 0  # a Saturday counts for nothing
    assert RIGA.business_days_before(at("2026-12-07"), at("2026-12-07")) == 0
    # Christmas: 24 to 26 December are holidays; for Monday 2025-12-29, Monday 22 is the last day in time.
    assert RIGA.business_days_before(at("2025-12-22"), at("2025-12-29")) == 2
    assert RIGA.business_days_before(at("2025-12-23"), at("2025-12-29")) == 1
    assert RIGA.business_days_before(at("2025-12-24"), at("2025-12-29")) == 0


def test_latvian_public_holidays_are_not_business_days() -> None:
    """The terms are Latvian: "divu darba dienu". Monday 2025-12-22 to a payment on Friday 2025-12-26 leaves
    Tuesday only: 24 and 25 December are public holidays."""
    assert RIGA.business_days_between(at("2025-12-22"), at("2025-12-26")) == 1
    assert plans.easter_sunday(2025) == date(2025, 4, 20) and plans.easter_sunday(2024) == date(2024, 3, 31)
    assert plans.easter_sunday(2000) == date(2000, 4, 23) and plans.easter_sunday(2038) == date(2038, 4, 25)
    # Good Friday and Easter Monday 2025; Midsummer; 4 May 2024 (a Saturday) moves to Monday the 6th; 18 November
    # 2023 (a Saturday) to Monday the 20th; 18 November 2025 is a Tuesday.
    assert {date(2025, 4, 18), date(2025, 4, 21), date(2025, 6, 23), date(2025, 6, 24), date(2025, 11, 18),
            date(2025, 1, 1), date(2025, 5, 1), date(2025, 12, 31)} <= plans.latvian_public_holidays(2025)
    assert date(2024, 5, 6) in plans.latvian_public_holidays(2024)
    assert date(2023, 11, 20) in plans.latvian_public_holidays(2023)
    assert date(2025, 5, 5) in plans.latvian_public_holidays(2025)  # 4 May 2025 is a Sunday
    assert date(2026, 5, 4) in plans.latvian_public_holidays(2026) and date(2026, 5, 5) not in \
        plans.latvian_public_holidays(2026)  # a Monday: no other day
    # Thursday 2025-04-17 to a payment on Tuesday 2025-04-22: Good Friday and Easter Monday leave none.
    assert RIGA.business_days_between(at("2025-04-17"), at("2025-04-22")) == 0


def test_business_days_are_counted_in_the_platforms_time_zone_whatever_offset_a_time_was_written_with() -> None:
    # Friday 2026-11-27 01:30 UTC (03:30 in Riga) to a payment on Tuesday 2026-12-01: Monday only, however it is
    # written.
    for written in ("2026-11-27T01:30:00+00:00", "2026-11-26T23:30:00-02:00", "2026-11-27T03:30:00+02:00"):
        assert RIGA.business_days_between(datetime.fromisoformat(written), at("2026-12-01")) == 1, written
    # 23:30 UTC on Thursday 2026-11-26 is Friday 01:30 in Riga: the same as above, where UTC counted Friday too.
    assert RIGA.business_days_between(at("2026-11-26", "23:30"), at("2026-12-01")) == 1
    assert UTC_CALENDAR.business_days_between(at("2026-11-26", "23:30"), at("2026-12-01")) == 2
    # The ends of the calendar, which a time zone cannot hold, still count.
    first = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59)))
    assert RIGA.business_days_between(first, datetime(1, 1, 10, tzinfo=UTC)) == 6


def test_the_shipped_plans_file_loads_and_bad_ones_are_refused(tmp_path: Path) -> None:
    shipped = load_plans()
    assert shipped.tiers[0].monthly_send_cap == 109 * shipped.tiers[0].subscribers
    bad = tmp_path / "plans.toml"
    bad.write_text("vat_percent = 21\n[[tiers]]\nsubscribers = 500\nmonthly_cents = 9.5\npro_monthly_cents = 1900\n")
    with pytest.raises(plans.PlansInvalid):
        load_plans(bad)
    bad.write_text("vat_percent = 21\n[[tiers]]\nsubscribers = 500\nmonthly_cents = 900\npro_monthly_cents = 1900\n"
                   "[[tiers]]\nsubscribers = 1000\nmonthly_cents = 800\npro_monthly_cents = 2000\n")
    with pytest.raises(plans.PlansInvalid):
        load_plans(bad)


def test_choosing_a_plan_charges_the_first_period_and_fixes_the_billing_day() -> None:
    now = at("2027-01-31")
    purchase = domain.buy_monthly(opened_account(), Usage(), PLANS, 500, "standard", "2027-000001", now)
    invoice, paid, changed = events = bought(opened_account(), purchase)
    assert isinstance(invoice, InvoiceIssued) and isinstance(paid, PaymentSucceeded)
    assert isinstance(changed, PlanChanged)
    assert (invoice.payload.net_cents, invoice.payload.vat_cents, invoice.payload.amount_cents) == (900, 189, 1089)
    assert invoice.payload.period_end == at("2027-02-28") and paid.payload.amount_cents == 1089
    assert (changed.payload.billing_day, changed.payload.monthly_send_cap) == (31, 54_500)
    account = domain.evolve_all(opened_account(), events)
    assert (account.plan, account.tier, account.paid_until, account.open_invoices) == (
        "monthly", 500, at("2027-02-28"), ())
    # The trial's block is lifted by the plan.
    assert [(type(e), e.payload.reason) for e in domain.enforce(account, Usage(), now)] == [  # type: ignore[attr-defined]
        (SendingUnblocked, "trial_ended")]


def test_an_upgrade_charges_the_prorated_difference_and_a_downgrade_is_refused() -> None:
    account = monthly(at("2026-11-01"))
    upgrade = domain.buy_monthly(account, Usage(), PLANS, 1000, "standard", "2026-000002", at("2026-11-16"))
    assert upgrade is not None and upgrade.payload.net_cents == 300  # (1500 - 900) / 2
    assert upgrade.payload.period_end == at("2026-12-01")
    raised = domain.evolve_all(account, bought(account, upgrade))
    assert (raised.tier, raised.billing_day, raised.paid_until) == (1000, 1, at("2026-12-01"))
    with pytest.raises(domain.TierCannotBeLowered):
        domain.buy_monthly(raised, Usage(), PLANS, 500, "standard", "2026-000003", at("2026-11-20"))
    pro = domain.buy_monthly(raised, Usage(), PLANS, 1000, "pro", "2026-000003", at("2026-11-16"))
    assert pro is not None and pro.payload.net_cents == 700
    with pytest.raises(domain.EditionCannotBeLowered):
        domain.buy_monthly(domain.evolve_all(raised, bought(raised, pro)), Usage(), PLANS, 1000, "standard", "x",
                           at("2026-11-17"))
    assert domain.buy_monthly(raised, Usage(), PLANS, 1000, "standard", "2026-000003", at("2026-11-16")) is None
    with pytest.raises(domain.TierNotOffered):
        domain.buy_monthly(raised, Usage(), PLANS, 750, "standard", "2026-000003", at("2026-11-16"))
    with pytest.raises(domain.NoPaymentMethod):
        domain.buy_monthly(replace(raised, payment_method=None), Usage(), PLANS, 1000, "pro", "x", at("2026-11-16"))


def test_a_higher_subscriber_limit_is_a_raise_from_pro_to_standard_too() -> None:
    """PRODUCT.md: "the tier can be raised at any time and never lowered": the tier is the subscriber limit. PRO 500
    (19.00) to standard 1000 (15.00) raises it: the footer comes back, nothing is charged for the rest of the
    period (no refunds either) and the lower fee is renewed from the next period. At the same limit, PRO back to
    standard raises nothing: refused (edition_cannot_be_lowered)."""
    purchase = domain.buy_monthly(opened_account(), Usage(), PLANS, 500, "pro", "2026-000001", at("2026-11-01"))
    pro = domain.evolve_all(opened_account(), bought(opened_account(), purchase))
    raised = domain.buy_monthly(pro, Usage(), PLANS, 1000, "standard", "2026-000002", at("2026-11-16"))
    assert raised is not None and (raised.payload.kind, raised.payload.net_cents, raised.payload.amount_cents) == (
        "upgrade", 0, 0)
    account = domain.evolve_all(pro, bought(pro, raised))
    assert (account.tier, account.edition, account.fee_cents, account.paid_until) == (
        1000, "standard", 1500, at("2026-12-01"))
    renewal = domain.renewal(account, PLANS, "2026-000003", at("2026-12-01"))
    assert renewal is not None and renewal.payload.net_cents == 1500
    # PRO 500 to PRO 1000: the difference of the PRO fees, prorated.
    pro_raised = domain.buy_monthly(pro, Usage(), PLANS, 1000, "pro", "2026-000002", at("2026-11-16"))
    assert pro_raised is not None and pro_raised.payload.net_cents == 500  # (2900 - 1900) / 2
    with pytest.raises(domain.EditionCannotBeLowered) as refused:
        domain.buy_monthly(pro, Usage(), PLANS, 500, "standard", "x", at("2026-11-16"))
    assert (refused.value.http_status, refused.value.code) == (409, "edition_cannot_be_lowered")
    with pytest.raises(domain.TierCannotBeLowered):
        domain.buy_monthly(account, Usage(), PLANS, 500, "pro", "x", at("2026-11-17"))


def test_more_subscribers_than_the_tier_block_sending_until_fewer_are_stored() -> None:
    account = monthly(at("2026-11-01"))
    assert domain.enforce(account, Usage(subscribers=500), at("2026-11-02")) == []
    blocked = domain.enforce(account, Usage(subscribers=501), at("2026-11-02"))
    assert [(type(e), e.payload.reason) for e in blocked] == [(SendingBlocked, "subscriber_limit_exceeded")]  # type: ignore[attr-defined]
    account = domain.evolve_all(account, blocked)
    lifted = domain.enforce(account, Usage(subscribers=499), at("2026-11-02"))
    assert [type(e) for e in lifted] == [SendingUnblocked]
    account = domain.evolve_all(account, lifted)
    again = domain.enforce(account, Usage(subscribers=600), at("2026-11-03"))
    assert again[0].event_id != blocked[0].event_id  # a new episode, a new event


def test_exactly_109_times_the_tier_exhausts_the_period_and_the_next_period_reopens() -> None:
    account = monthly(at("2026-11-01"))
    period = domain.period_key(at("2026-11-01"))
    assert domain.enforce(account, Usage(emails_by_period={period: 54_499}), at("2026-11-20")) == []
    decided = domain.enforce(account, Usage(emails_by_period={period: 54_500}), at("2026-11-20"))
    assert [type(e) for e in decided] == [QuotaExhausted, SendingBlocked]
    assert (decided[0].payload.limit, decided[0].payload.used) == (54_500, 54_500)  # type: ignore[attr-defined]
    account = domain.evolve_all(account, decided)
    assert domain.enforce(account, Usage(emails_by_period={period: 54_600}), at("2026-11-25")) == []
    next_period = domain.enforce(account, Usage(emails_by_period={period: 54_600}), at("2026-12-01"))
    assert [(type(e), e.payload.reason) for e in next_period] == [(SendingUnblocked, "monthly_quota_reached")]  # type: ignore[attr-defined]


def test_a_tier_raised_in_the_period_announces_its_own_cap_when_reached() -> None:
    """PRODUCT.md: 109 x the tier's limit a month, visible in events: the 500 tier's cap (54,500) and, after a raise
    to 1,000 five days into the 30-day period, its prorated cap (109 x (500 x 5 + 1,000 x 25) / 30, rounded up:
    99,917) each get their QuotaExhausted."""
    account = monthly(at("2026-11-01"))
    period = domain.period_key(at("2026-11-01"))
    first = domain.enforce(account, Usage(emails_by_period={period: 54_500}), at("2026-11-05"))
    account = domain.evolve_all(account, first)
    upgrade = domain.buy_monthly(account, Usage(), PLANS, 1000, "standard", "2026-000002", at("2026-11-06"))
    assert upgrade is not None
    account = domain.evolve_all(account, bought(account, upgrade))
    account = domain.evolve_all(account, domain.enforce(account, Usage(emails_by_period={period: 54_500}),
                                                        at("2026-11-06")))
    assert "monthly_quota_reached" not in account.blocked
    second = domain.enforce(account, Usage(emails_by_period={period: 99_917}), at("2026-11-20"))
    assert [type(e) for e in second] == [QuotaExhausted, SendingBlocked]
    assert (second[0].payload.limit, second[0].payload.used) == (99_917, 99_917)  # type: ignore[attr-defined]
    assert second[0].event_id != first[0].event_id
    account = domain.evolve_all(account, second)
    assert domain.enforce(account, Usage(emails_by_period={period: 109_500}), at("2026-11-25")) == []  # once


def test_a_cap_announced_by_the_version_before_caps_were_named_is_not_announced_again() -> None:
    """Account documents stored before 0aefa8c name an exhausted cap "monthly_emails:<period>": after the upgrade,
    the same period's cap is not announced a second time (with a new event id)."""
    account = monthly(at("2026-11-01"))
    period = domain.period_key(at("2026-11-01"))
    start, _ = account.period(at("2026-11-05"), RIGA)
    legacy = replace(account, exhausted=(f"monthly_emails:{time_key(start)}",),
                     blocked=(*account.blocked, "monthly_quota_reached"))
    assert domain.enforce(legacy, Usage(emails_by_period={period: 54_500}), at("2026-11-05")) == []


def test_renewal_invoices_the_next_period_and_a_failure_blocks_until_paid() -> None:
    account = monthly(at("2026-11-01"))
    assert domain.renewal(account, PLANS, "2026-000002", at("2026-11-30")) is None
    invoice = domain.renewal(account, PLANS, "2026-000002", at("2026-12-01"))
    assert invoice is not None and (invoice.payload.period_start, invoice.payload.period_end) == (
        at("2026-12-01"), at("2027-01-01"))
    account = domain.evolve_all(account, [invoice])
    assert domain.renewal(account, PLANS, "2026-000003", at("2026-12-01")) is None  # issued once
    failed = domain.payment_outcome(account, "2026-000002", 1089, "insufficient funds", 1, at("2026-12-01"))
    assert [type(e) for e in failed] == [PaymentFailed, SendingBlocked]
    account = domain.evolve_all(account, failed)
    assert account.open_invoices[0].attempts == 1 and "payment_failed" in account.blocked
    paid = domain.payment_outcome(account, "2026-000002", 1089, None, 2, at("2026-12-02"))
    assert [type(e) for e in paid] == [PaymentSucceeded, SendingUnblocked]
    account = domain.evolve_all(account, paid)
    assert account.paid_until == at("2027-01-01") and account.open_invoices == () and account.blocked == ()


def test_cancelling_takes_effect_at_the_end_of_the_paid_period() -> None:
    account = monthly(at("2026-11-01"))  # paid until Tuesday 2026-12-01
    (own,) = domain.cancel(account, "self_service", at("2026-11-30"), "ada", now=at("2026-11-30"))
    assert isinstance(own, CancellationRequested) and own.payload.effective_at == at("2026-12-01")
    # By request: "at least 2 business days before" Tuesday 2026-12-01 is Friday 2026-11-27 (Monday 1, Friday 2) at
    # the latest; Saturday leaves Monday only.
    for in_time in ("2026-11-26", "2026-11-27"):
        (timely,) = domain.cancel(account, "request", at(in_time, "21:59"), "rita", now=at("2026-11-30"))
        assert timely.payload.effective_at == at("2026-12-01"), in_time  # type: ignore[attr-defined]
    (late,) = domain.cancel(account, "request", at("2026-11-28"), "rita", now=at("2026-11-30"))
    assert late.payload.effective_at == at("2027-01-01")  # type: ignore[attr-defined]
    cancelled = domain.evolve_all(account, [own])
    with pytest.raises(domain.AlreadyCancelled):
        domain.cancel(cancelled, "self_service", at("2026-11-30"), "ada", now=at("2026-11-30"))
    assert domain.renewal(cancelled, PLANS, "2026-000002", at("2026-12-01")) is None
    assert domain.end_of_agreement(cancelled, at("2026-11-30", "23:59:59")) == []
    ended = domain.end_of_agreement(cancelled, at("2026-12-01"))
    assert [(type(e), getattr(e.payload, "plan", None) or e.payload.reason) for e in ended] == [  # type: ignore[attr-defined]
        (PlanChanged, "none"), (SendingBlocked, "no_plan")]
    with pytest.raises(domain.NotOnAMonthlyPlan):
        domain.cancel(opened_account(), "self_service", at("2026-11-30"), "ada", now=at("2026-11-30"))
    # a request staff record cannot have arrived after now (beyond clock skew)
    with pytest.raises(domain.ReceivedInTheFuture):
        domain.cancel(account, "request", at("2026-11-30", "10:06"), "rita", now=at("2026-11-30"))
    with pytest.raises(domain.ReceivedInTheFuture):
        end_of_time = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59)))
        domain.cancel(account, "request", end_of_time, "rita", now=at("2026-11-30"))
    # The same instant written with another offset is the same request: Saturday 00:30 in Riga, late for Tuesday.
    for written in ("2026-11-27T22:30:00+00:00", "2026-11-27T20:30:00-02:00", "2026-11-28T00:30:00+02:00"):
        (same,) = domain.cancel(account, "request", datetime.fromisoformat(written), "rita", now=at("2026-11-30"))
        assert same.payload.effective_at == at("2027-01-01"), written  # type: ignore[attr-defined]
    (skewed,) = domain.cancel(account, "request", at("2026-11-30", "10:04"), "rita", now=at("2026-11-30"))
    assert skewed.payload.received_at == at("2026-11-30", "10:04")  # type: ignore[attr-defined]


def renewed(account: Account, number: str, now: datetime, declined: str | None = None) -> Account:
    """The clock's renewal at the end of the paid period, charged: paid, or declined (left open)."""
    invoice = domain.renewal(account, PLANS, number, now)
    assert invoice is not None
    issued = domain.evolve_all(account, [invoice])
    return domain.evolve_all(issued, domain.payment_outcome(issued, number, invoice.payload.amount_cents, declined,
                                                            1, now))


def test_a_request_in_time_recorded_after_its_payment_was_charged_is_refused_naming_the_refund() -> None:
    """PRODUCT.md: cancellation takes effect at the end of the paid period if it arrives 2 business days before
    the next payment date. A letter received on Friday 11-20 (before the 12-01 payment) and recorded on 12-03,
    after the 12-01 renewal was paid, would otherwise end the plan on 2027-01-01 and charge a period the
    customer cancelled in time."""
    account = renewed(monthly(at("2026-11-01")), "2026-000002", at("2026-12-01"))
    assert account.paid_until == at("2027-01-01")
    paid = [("2026-000001", at("2026-11-01")), ("2026-000002", at("2026-12-01"))]
    with pytest.raises(domain.CancellationNeedsRefund) as refused:
        domain.cancel(account, "request", at("2026-11-20"), "rita", now=at("2026-12-03"), paid=paid)
    assert refused.value.http_status == 409 and "2026-12-01T10:00:00+00:00" in refused.value.detail
    assert refused.value.errors is not None and [where for where, _ in refused.value.errors] == [
        "body.received_at", "invoices.2026-000002"]
    # Late for 12-01 (received Saturday 11-28), it ends on 2027-01-01: the paid period is the one it ends with.
    (late,) = domain.cancel(account, "request", at("2026-11-28"), "rita", now=at("2026-12-03"), paid=paid)
    assert late.payload.effective_at == at("2027-01-01")  # type: ignore[attr-defined]
    # Received after the 12-01 payment: the end of the period paid then.
    (after,) = domain.cancel(account, "request", at("2026-12-02"), "rita", now=at("2026-12-03"), paid=paid)
    assert after.payload.effective_at == at("2027-01-01")  # type: ignore[attr-defined]


def test_a_request_in_time_recorded_while_its_renewal_is_unpaid_ends_the_plan_then_and_voids_it() -> None:
    """The 12-01 renewal was declined and is open: the request of 11-20 (in time for 12-01) ends the plan on
    12-01, the open renewal is void (agreement_ended, never charged) and the payment block lifts, once the plan has
    ended and sending is blocked for no plan: all in one commit."""
    account = renewed(monthly(at("2026-11-01")), "2026-000002", at("2026-12-01"), declined="card declined")
    assert account.paid_until == at("2026-12-01") and "payment_failed" in account.blocked
    cancelled, voided, ended, blocked, lifted = domain.cancel(account, "request", at("2026-11-20"), "rita",
                                                              now=at("2026-12-03"),
                                                              paid=[("2026-000001", at("2026-11-01"))])
    assert cancelled.payload.effective_at == at("2026-12-01")  # type: ignore[attr-defined]
    assert isinstance(voided, InvoiceVoided) and (voided.payload.invoice_id, voided.payload.reason) == (
        "2026-000002", "agreement_ended")
    assert isinstance(ended, PlanChanged) and (ended.payload.plan, ended.payload.effective_at) == (
        "none", at("2026-12-01"))
    assert isinstance(blocked, SendingBlocked) and blocked.payload.reason == "no_plan"
    assert isinstance(lifted, SendingUnblocked) and lifted.payload.reason == "payment_failed"
    after = domain.evolve_all(account, [cancelled, voided, ended, blocked, lifted])
    assert (after.plan, after.blocked, after.open_invoices) == ("none", ("no_plan",), ())
    assert domain.end_of_agreement(after, at("2026-12-03")) == []  # the clock has nothing left to end


def test_cancelling_while_the_renewal_is_declined_never_opens_sending_before_the_plan_ends() -> None:
    """Self-service on 12-05, the 12-01 renewal declined: the cancellation takes effect at the end of the paid
    period, 12-01, which is past. Lifting payment_failed alone would open sending until the clock's next round
    ended the plan; the plan ends, and no_plan blocks, before payment_failed is lifted, in the same commit."""
    account = renewed(monthly(at("2026-11-01")), "2026-000002", at("2026-12-01"), declined="card declined")
    decided = domain.cancel(account, "self_service", at("2026-12-05"), "ada", now=at("2026-12-05"))
    assert [(type(e).__name__, getattr(e.payload, "reason", None) or getattr(e.payload, "plan", None))
            for e in decided] == [("CancellationRequested", None), ("InvoiceVoided", "agreement_ended"),
                                  ("PlanChanged", "none"), ("SendingBlocked", "no_plan"),
                                  ("SendingUnblocked", "payment_failed")]
    # Folded one by one, as delivery reads them, sending is blocked after every event.
    state = account
    for event in decided:
        state = domain.evolve_all(state, [event])
        assert state.blocked, event.type
    # The clock would record the same end: fixed ids, so a repeat is dropped as a duplicate.
    again = domain.end_of_agreement(replace(account, cancel_at=at("2026-12-01")), at("2026-12-05", "10:00:30"))
    assert [e.event_id for e in again] == [e.event_id for e in decided[1:]]
    # A cancellation that takes effect later ends nothing now.
    assert [type(e) for e in domain.cancel(monthly(at("2026-11-01")), "self_service", at("2026-11-20"), "ada",
                                           now=at("2026-11-20"))] == [CancellationRequested]


def test_a_rejected_accounts_plan_is_not_renewed_and_ends_with_its_paid_period() -> None:
    """PRODUCT.md, "Review": a rejected account is held; its monthly plan, bought before the rejection, ends at the
    end of the paid period instead of being charged every month."""
    account = monthly(at("2026-11-01"))
    (rejected_event,) = domain.reject(account, "rita", ["fake company"], at("2026-11-10"))
    rejected = domain.evolve_all(account, [rejected_event])
    assert domain.renewal(rejected, PLANS, "2026-000002", at("2026-12-01")) is None
    assert domain.end_of_agreement(rejected, at("2026-11-30")) == []
    ended, blocked = domain.end_of_agreement(rejected, at("2026-12-01"))
    assert isinstance(ended, PlanChanged) and (ended.payload.plan, ended.payload.effective_at) == (
        "none", at("2026-12-01"))
    assert isinstance(blocked, SendingBlocked) and blocked.payload.reason == "no_plan"
    # Rejected while its renewal is declined and open: the plan ends with the rejection, the renewal void.
    declined = renewed(monthly(at("2026-11-01")), "2026-000002", at("2026-12-01"), declined="card declined")
    decided = domain.reject(declined, "rita", ["fake company"], at("2026-12-02"))
    assert [type(e) for e in decided] == [AccountRejected, InvoiceVoided, PlanChanged, SendingBlocked,
                                          SendingUnblocked]


def test_a_request_received_before_the_plan_began_counts_from_its_first_renewal() -> None:
    account = monthly(at("2026-11-01"))
    (early,) = domain.cancel(account, "request", at("2026-10-20"), "rita", now=at("2026-11-02"))
    assert early.payload.effective_at == at("2026-12-01")  # type: ignore[attr-defined]


PACKS = Plans(tiers=PLANS.tiers, packs=(plans.CreditPack(100, 1000, 30),), vat_percent=Decimal(21))


def payg(now: datetime, *more: datetime) -> Account:
    account = opened_account()
    for n, when in enumerate((now, *more), start=1):
        purchase = domain.buy_credits(account, PACKS, 100, f"2026-{n:06d}", when)
        account = domain.evolve_all(account, bought(account, purchase))
    return domain.evolve_all(account, domain.enforce(account, Usage(), now))  # the trial's block lifted


def sent(account: Account, *emails: tuple[datetime, int]) -> Usage:
    """Pay-as-you-go emails sent at these times, counted as the fold counts them: per credit window."""
    windows: dict[str, int] = {}
    for when, count in emails:
        window = domain.credit_window(account, when)
        windows[window] = windows.get(window, 0) + count
    return Usage(payg_sent=windows)


def test_credits_are_spent_earliest_expiry_first_and_an_expired_batch_keeps_what_it_gave() -> None:
    account = payg(at("2026-11-01"), at("2026-11-10"))  # batches expire 12-01 and 12-10
    assert account.plan == "pay_as_you_go" and [b.credits for b in account.credit_batches] == [100, 100]
    used, overdraft = domain.credit_use(account, sent(account, (at("2026-11-15"), 130)))
    assert (used, overdraft) == ({"credits-2026-000001": 100, "credits-2026-000002": 30}, 0)
    # At 12-01 the first batch expires having given 60 of its 100: 40 expire unused.
    (expired,) = domain.expire_credits(account, sent(account, (at("2026-11-15"), 60)), at("2026-12-01"))
    assert expired.payload.credits_expired == 40  # type: ignore[attr-defined]
    account = domain.evolve_all(account, [expired])
    # Sends after that come from the second batch only.
    assert domain.credits_left(account, sent(account, (at("2026-11-15"), 60)), at("2026-12-02")) == 100
    after = sent(account, (at("2026-11-15"), 60), (at("2026-12-02"), 90))
    assert domain.credits_left(account, after, at("2026-12-02")) == 10
    assert domain.credits_left(account, after, at("2026-12-10")) == 0  # expired too


PACK_OF_1000 = Plans(tiers=PLANS.tiers, packs=(plans.CreditPack(1000, 1000, 30),), vat_percent=Decimal(21))


def test_emails_sent_after_a_batch_expired_are_not_taken_from_it_before_its_expiry_is_told() -> None:
    """PRODUCT.md: each batch with an expiry date; every email sent consumes a credit (of a batch valid then).
    The expiry is told by the clock or the next guard decision, seconds later (or after an outage): emails sent
    in between come from the batch still valid, and what expired unused is exact."""
    account = opened_account()
    for number, when in (("2026-000001", at("2026-11-01")), ("2026-000002", at("2026-11-20"))):
        account = domain.evolve_all(account, bought(account, domain.buy_credits(account, PACK_OF_1000, 1000,
                                                                                number, when)))
    assert [b.expires_at for b in account.credit_batches] == [at("2026-12-01"), at("2026-12-20")]
    # 10 emails before the first batch expires (12-01 10:00), 500 in the 30 s before the guard decides.
    usage = sent(account, (at("2026-11-25"), 10), (at("2026-12-01", "10:00:05"), 500))
    decided = domain.enforce(account, usage, at("2026-12-01", "10:00:30"))
    (expired,) = [e for e in decided if isinstance(e, CreditsExpired)]
    assert (expired.payload.batch_id, expired.payload.credits_expired) == ("credits-2026-000001", 990)
    assert domain.credits_left(domain.evolve_all(account, decided), usage, at("2026-12-01", "10:00:31")) == 500
    # Told a day late (a billing outage), with a day's more emails sent: still 990.
    later = sent(account, (at("2026-11-25"), 10), (at("2026-12-01", "10:00:05"), 500), (at("2026-12-01", "18:00"), 200))
    (late,) = domain.expire_credits(account, later, at("2026-12-02"))
    assert late.payload.credits_expired == 990  # type: ignore[attr-defined]
    assert domain.credits_left(account, later, at("2026-12-02")) == 300


def test_an_email_sent_when_no_credit_was_left_is_taken_from_the_next_batch_bought() -> None:
    """The bound on messages past a quota: an email sent after the credits ran out and before the block took
    effect is taken from the next batch bought, not lost, and never from a batch that expired before it."""
    account = payg(at("2026-11-01"))  # 100 credits expiring 12-01
    account = domain.evolve_all(account, [domain.expire_credits(account, sent(account), at("2026-12-01"))[0]])
    usage = sent(account, (at("2026-12-02"), 3))  # past the bound: no batch valid
    assert domain.credit_use(account, usage) == ({"credits-2026-000001": 0}, 3)
    assert domain.credits_left(account, usage, at("2026-12-02")) == 0
    account = domain.evolve_all(account, bought(account, domain.buy_credits(account, PACKS, 100, "2026-000002",
                                                                            at("2026-12-03"))))
    assert sent(account, (at("2026-12-02"), 3)) == usage  # a batch bought later changes no earlier window
    usage = sent(account, (at("2026-12-02"), 3), (at("2026-12-04"), 7))
    assert domain.credit_use(account, usage) == ({"credits-2026-000001": 0, "credits-2026-000002": 10}, 0)
    assert domain.credits_left(account, usage, at("2026-12-04")) == 90


def test_a_batch_bought_later_does_not_take_the_emails_an_earlier_one_gave() -> None:
    """Batches of different validities: a short one bought after emails were sent does not take them from the
    batch that gave them (earliest expiry first among the batches valid when each email was sent)."""
    mixed = Plans(tiers=PLANS.tiers, packs=(plans.CreditPack(100, 1000, 60), plans.CreditPack(50, 600, 10)),
                  vat_percent=Decimal(21))
    account = opened_account()
    for number, credits, when in (("2026-000001", 100, at("2026-11-01")), ("2026-000002", 50, at("2026-11-10"))):
        account = domain.evolve_all(account, bought(account, domain.buy_credits(account, mixed, credits, number,
                                                                                when)))
    usage = sent(account, (at("2026-11-05"), 40), (at("2026-11-12"), 20))
    assert domain.credit_use(account, usage)[0] == {"credits-2026-000001": 40, "credits-2026-000002": 20}
    (expired,) = domain.expire_credits(account, usage, at("2026-11-20"))
    assert (expired.payload.batch_id, expired.payload.credits_expired) == ("credits-2026-000002", 30)  # type: ignore[attr-defined]


def test_no_credits_left_blocks_sending_and_a_new_pack_reopens_it() -> None:
    account = payg(at("2026-11-01"))
    assert [e for e in domain.enforce(account, sent(account, (at("2026-11-02"), 99)), at("2026-11-02"))
            if isinstance(e, SendingBlocked)] == []
    blocked = domain.enforce(account, sent(account, (at("2026-11-02"), 100)), at("2026-11-02"))
    exhausted, closed = blocked
    assert isinstance(exhausted, QuotaExhausted) and exhausted.payload.quota == "credits"
    assert (exhausted.payload.limit, exhausted.payload.used) == (100, 100)
    assert isinstance(closed, SendingBlocked) and closed.payload.reason == "credits_exhausted"
    account = domain.evolve_all(account, blocked)
    more = bought(account, domain.buy_credits(account, PACKS, 100, "2026-000002", at("2026-11-03")))
    account = domain.evolve_all(account, more)
    assert [type(e) for e in more] == [InvoiceIssued, PaymentSucceeded, domain.CreditsPurchased]  # no plan change
    reopened = domain.enforce(account, sent(account, (at("2026-11-02"), 100)), at("2026-11-03"))
    assert [(type(e), e.payload.reason) for e in reopened] == [(SendingUnblocked, "credits_exhausted")]  # type: ignore[attr-defined]
    account = domain.evolve_all(account, reopened)
    again = domain.enforce(account, sent(account, (at("2026-11-02"), 100), (at("2026-11-04"), 100)),
                           at("2026-11-04"))  # a new episode: told again
    assert [type(e) for e in again] == [QuotaExhausted, SendingBlocked] and again[0].event_id != exhausted.event_id
    with pytest.raises(domain.PackNotOffered):
        domain.buy_credits(account, PACKS, 50, "x", at("2026-11-03"))
    with pytest.raises(domain.OnAMonthlyPlan):
        domain.buy_credits(monthly(at("2026-11-01")), PACKS, 100, "x", at("2026-11-03"))


def test_only_a_plan_or_renewal_invoice_pays_a_period() -> None:
    """A credit pack's invoice runs to the credits' expiry: paying it must not pay a monthly plan's year."""
    account = payg(at("2026-11-01"))
    assert account.paid_until is None
    purchase = domain.buy_monthly(account, Usage(), PLANS, 500, "standard", "2026-000009", at("2026-11-05"))
    account = domain.evolve_all(account, bought(account, purchase))
    assert account.paid_until == at("2026-12-05")


def test_a_block_of_an_earlier_plan_is_lifted_with_the_change() -> None:
    account = payg(at("2026-11-01"))
    account = domain.evolve_all(account, domain.enforce(account, sent(account, (at("2026-11-02"), 100)),
                                                        at("2026-11-02")))
    assert "credits_exhausted" in account.blocked
    purchase = domain.buy_monthly(account, Usage(), PLANS, 500, "standard", "2026-000009", at("2026-11-05"))
    account = domain.evolve_all(account, bought(account, purchase))
    lifted = domain.enforce(account, sent(account, (at("2026-11-02"), 100)), at("2026-11-05"))
    assert [(type(e), e.payload.reason) for e in lifted] == [(SendingUnblocked, "credits_exhausted")]  # type: ignore[attr-defined]


def test_a_purchase_is_recorded_before_its_charge_and_only_its_payment_changes_the_plan() -> None:
    """The invoice goes first, with what it buys; until it is settled the account is as it was and buys nothing
    else. Declined, it is void; paid, its terms are recorded. Each outcome has fixed ids (settled by a request
    and by the clock after a crash, it is recorded once), and a settled purchase is not settled again."""
    account = opened_account()
    invoice = domain.buy_monthly(account, Usage(), PLANS, 1000, "pro", "2026-000007", at("2026-11-05"))
    assert invoice is not None and invoice.payload.purchase is not None
    assert (invoice.payload.purchase.tier_subscriber_limit, invoice.payload.purchase.edition,
            invoice.payload.purchase.monthly_fee_cents, invoice.payload.purchase.billing_day) == (1000, "pro", 2900, 5)
    pending = domain.evolve_all(account, [invoice])
    assert (pending.plan, pending.tier, pending.paid_until) == ("trial_ended", None, None)
    assert [i.invoice_id for i in domain.pending_purchases(pending)] == ["2026-000007"]
    with pytest.raises(domain.PurchasePending):
        domain.buy_monthly(pending, Usage(), PLANS, 500, "standard", "2026-000008", at("2026-11-05"))
    with pytest.raises(domain.PurchasePending):
        domain.buy_credits(pending, PACKS, 100, "2026-000008", at("2026-11-05"))

    (voided,) = domain.settle_purchase(pending, "2026-000007", "card declined", at("2026-11-05", "10:00:01"))
    assert isinstance(voided, InvoiceVoided) and voided.payload.reason == "payment_declined"
    void = domain.evolve_all(pending, [voided])
    assert (void.plan, void.open_invoices, void.blocked) == ("trial_ended", (), ("trial_ended",))
    assert domain.settle_purchase(void, "2026-000007", None, at("2026-11-06")) == []  # settled: nothing more

    first = domain.settle_purchase(pending, "2026-000007", None, at("2026-11-05", "10:00:01"))
    again = domain.settle_purchase(pending, "2026-000007", None, at("2026-11-05", "10:07:00"))
    assert [type(e) for e in first] == [PaymentSucceeded, PlanChanged]
    assert [e.event_id for e in first] == [e.event_id for e in again]
    changed = first[1].payload
    assert (changed.plan, changed.tier_subscriber_limit, changed.edition, changed.effective_at) == (  # type: ignore[attr-defined]
        "monthly", 1000, "pro", at("2026-11-05"))  # from the purchase's time, not the settling's
    paid = domain.evolve_all(pending, first)
    assert (paid.plan, paid.tier, paid.paid_until, paid.open_invoices) == ("monthly", 1000, at("2026-12-05"), ())
    assert domain.settle_purchase(paid, "2026-000007", None, at("2026-11-06")) == []


def test_a_deleted_accounts_purchase_the_provider_never_charged_is_voided_once() -> None:
    account = opened_account()
    invoice = domain.buy_monthly(account, Usage(), PLANS, 1000, "pro", "2026-000007", at("2026-11-05"))
    pending = domain.evolve_all(account, [invoice])
    (voided,) = domain.abandon_purchase(pending, "2026-000007", at("2026-11-06"))
    assert isinstance(voided, InvoiceVoided) and voided.payload.reason == "account_deleted"
    declined = domain.settle_purchase(pending, "2026-000007", "card declined", at("2026-11-06"))
    assert voided.event_id == declined[0].event_id  # one void per invoice, whichever settles it
    void = domain.evolve_all(pending, [voided])
    assert (void.plan, void.open_invoices, domain.pending_purchases(void)) == ("trial_ended", (), [])
    assert domain.abandon_purchase(void, "2026-000007", at("2026-11-07")) == []
    assert domain.abandon_purchase(pending, "2026-000099", at("2026-11-07")) == []  # not a purchase of the account


def test_a_credits_purchase_records_its_pack_once_paid() -> None:
    account = opened_account()
    invoice = domain.buy_credits(account, PACKS, 100, "2026-000003", at("2026-11-05"))
    assert invoice.payload.purchase is not None and invoice.payload.purchase.credits == 100
    pending = domain.evolve_all(account, [invoice])
    assert (pending.plan, pending.credit_batches) == ("trial_ended", ())
    events = domain.settle_purchase(pending, "2026-000003", None, at("2026-11-05", "10:00:02"))
    assert [type(e) for e in events] == [PaymentSucceeded, CreditsPurchased, PlanChanged]
    batch = events[1].payload
    assert (batch.batch_id, batch.credits, batch.price_cents, batch.expires_at) == (  # type: ignore[attr-defined]
        "credits-2026-000003", 100, 1000, at("2026-12-05"))
    after = domain.evolve_all(pending, events)
    assert (after.plan, [b.credits for b in after.credit_batches], after.open_invoices) == ("pay_as_you_go", [100], ())


def test_an_upgrade_waits_for_the_ended_periods_renewal() -> None:
    account = monthly(at("2026-11-01"))
    with pytest.raises(domain.RenewalPending):
        domain.buy_monthly(account, Usage(), PLANS, 1000, "standard", "x", at("2026-12-01"))


def test_a_monthly_plan_without_a_billing_day_bills_on_its_effective_day() -> None:
    """A PlanChanged another producer published without the billing day must not stop billing's fold."""
    account = domain.evolve_all(opened_account(), [PlanChanged(  # type: ignore[call-arg]
        account_id="a1", producer="billing", payload={"plan": "monthly", "tier_subscriber_limit": 500,
                                                      "effective_at": at("2026-11-03")})])
    assert account.billing_day == 3
    assert domain.enforce(account, Usage(subscribers=600), at("2026-11-04"))  # decides, does not raise
