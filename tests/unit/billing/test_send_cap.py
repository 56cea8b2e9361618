"""The monthly send cap of a period the tier was raised in (PRODUCT.md, "Plans and billing": "Emails sent in a month
may not exceed 109 x the tier's subscriber limit"; "Raising it mid-month charges the difference"): prorated over the
limits the period held, as the raise is charged, rounded up to a whole email."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from herald_billing import domain, plans
from herald_billing.api import account_out
from herald_billing.domain import Account, Usage
from herald_billing.plans import Plans, Tier
from herald_shared.contract.billing import QuotaExhausted, SendingBlocked, SendingUnblocked
from tests.unit.billing.helpers import PLANS, at, bought, monthly

RIGA = plans.BillingCalendar()
START, END = at("2026-11-01"), at("2026-12-01")  # 30 days: the 500 plan bought at START (Riga's calendar)
THREE = Plans(tiers=(Tier(500, 900, 1900), Tier(1000, 1500, 2900), Tier(2500, 2900, 4900)), packs=(),
              vat_percent=PLANS.vat_percent)


def raised(account: Account, subscribers: int, when: datetime, config: Plans = PLANS) -> Account:
    upgrade = domain.buy_monthly(account, Usage(), config, subscribers, "standard", f"2026-{subscribers:06d}", when)
    return domain.evolve_all(account, bought(account, upgrade))


def test_one_limit_over_the_period_is_109_times_it() -> None:
    assert plans.period_send_cap([(START, 500)], START, END) == 54_500
    assert monthly(START).send_cap(START, END) == 54_500


def test_a_raise_at_the_periods_first_instant_gives_the_new_limits_whole_cap() -> None:
    assert plans.period_send_cap([(START, 500), (START, 1000)], START, END) == 109_000


def test_a_raise_in_the_last_hour_gives_the_old_cap_and_a_sliver() -> None:
    """An hour of 720: 109 x (500 x 719 + 100,000 x 1) / 720 = 69,563.19..., rounded up (the full 100,000 tier
    would be 10,900,000)."""
    last_hour = END - timedelta(hours=1)
    assert plans.period_send_cap([(START, 500), (last_hour, 100_000)], START, END) == 69_564
    account = raised(monthly(START), 1000, last_hour)
    # 54,500 + 54,500 / 720 = 54,575.69...: rounded up in the customer's favour
    assert account.send_cap(START, END) == 54_576


def test_a_raise_in_the_last_microsecond_still_rounds_up_past_the_old_cap() -> None:
    assert plans.period_send_cap([(START, 500), (END - timedelta(microseconds=1), 1000)], START, END) == 54_501


def test_two_raises_count_each_part_of_the_period_at_its_limit() -> None:
    """500 for 10 days, 1,000 for 10, 2,500 for 10: 109 x 4,000 x 10 / 30 = 145,333.33..., rounded up."""
    account = raised(raised(monthly(START, THREE), 1000, at("2026-11-11"), THREE), 2500, at("2026-11-21"), THREE)
    assert account.send_cap(START, END) == 145_334
    assert account.tier == 2500


def test_the_next_period_has_its_tiers_whole_cap() -> None:
    account = raised(monthly(START), 1000, at("2026-11-30"))
    assert account.send_cap(START, END) < 109_000
    assert account.send_cap(*account.period(at("2026-12-02"), RIGA)) == 109_000


def test_an_entry_kept_before_tiers_were_takes_the_current_tier() -> None:
    """An account folded before the plan history named tiers: the cap of its tier, as it was (a rebuild folds
    the tiers)."""
    account = raised(monthly(START), 1000, at("2026-11-30"))
    legacy = Account(**{**account.__dict__, "plan_history": tuple(
        domain.PlanSince(e.since, e.plan) for e in account.plan_history)})
    assert legacy.send_cap(START, END) == 109_000


def test_the_raise_folded_again_names_its_tier_once() -> None:
    account = monthly(START)
    upgrade = domain.buy_monthly(account, Usage(), PLANS, 1000, "standard", "2026-000002", at("2026-11-30"))
    events = bought(account, upgrade)
    once = domain.evolve_all(account, events)
    assert domain.evolve_all(once, events).plan_history == once.plan_history
    legacy = Account(**{**once.__dict__, "plan_history": tuple(
        domain.PlanSince(e.since, e.plan) for e in once.plan_history)})
    again = domain.evolve_all(legacy, events).plan_history
    assert [(e.since, e.tier) for e in again if e.since == at("2026-11-30")] == [(at("2026-11-30"), 1000)]
    assert len(again) == len(once.plan_history)


@given(old=st.integers(1, 200_000), extra=st.integers(0, 200_000), into=st.integers(0, 30 * 24 * 3600 * 10**6))
def test_the_cap_is_never_below_the_old_tiers_nor_above_the_new_ones(old: int, extra: int, into: int) -> None:
    cap = plans.period_send_cap([(START, old), (START + timedelta(microseconds=into), old + extra)], START, END)
    assert 109 * old <= cap <= 109 * (old + extra)


def test_a_raise_late_in_the_period_lifts_the_quota_block_only_above_what_was_sent() -> None:
    """At the 500 tier's cap (54,500 sent), a raise to 1,000 an hour before the period's end opens 76 more emails,
    not 54,500: the block lifts, and comes back at the prorated cap, announced with it."""
    period = domain.period_key(START)
    account = monthly(START)
    account = domain.evolve_all(account, domain.enforce(account, Usage(emails_by_period={period: 54_500}),
                                                        at("2026-11-30")))
    assert "monthly_quota_reached" in account.blocked
    account = raised(account, 1000, END - timedelta(hours=1))
    lifted = domain.enforce(account, Usage(emails_by_period={period: 54_500}), END - timedelta(minutes=59))
    assert [type(e) for e in lifted] == [SendingUnblocked]
    account = domain.evolve_all(account, lifted)
    assert domain.enforce(account, Usage(emails_by_period={period: 54_575}), END - timedelta(minutes=30)) == []
    blocked = domain.enforce(account, Usage(emails_by_period={period: 54_576}), END - timedelta(minutes=30))
    assert [type(e) for e in blocked] == [QuotaExhausted, SendingBlocked]
    assert (blocked[0].payload.limit, blocked[0].payload.used) == (54_576, 54_576)  # type: ignore[attr-defined]
    assert blocked[1].payload.detail.startswith("54576 of this period's 54576 emails")  # type: ignore[attr-defined]


def test_a_raise_that_adds_nothing_sent_already_keeps_the_block() -> None:
    """Sent past the prorated cap already (a bound's overshoot): the raise does not lift the block."""
    period = domain.period_key(START)
    account = monthly(START)
    account = domain.evolve_all(account, domain.enforce(account, Usage(emails_by_period={period: 54_600}),
                                                        at("2026-11-30")))
    account = raised(account, 1000, END - timedelta(hours=1))
    decided = domain.enforce(account, Usage(emails_by_period={period: 54_600}), END - timedelta(minutes=59))
    assert not any(isinstance(e, SendingUnblocked) for e in decided)


def test_the_account_api_shows_the_periods_cap() -> None:
    account = raised(monthly(START), 1000, END - timedelta(hours=1))
    shown = account_out(account, Usage(), END - timedelta(minutes=5), RIGA)
    assert shown["monthly"]["monthly_send_cap"] == 54_576
    assert shown["monthly"]["subscriber_limit"] == 1000
    later = account_out(account, Usage(), at("2026-12-02"), RIGA)
    assert later["monthly"]["monthly_send_cap"] == 109_000


def test_the_utc_calendar_prorates_by_the_same_instants() -> None:
    utc = plans.BillingCalendar(ZoneInfo("UTC"))
    account = raised(monthly(START), 1000, END - timedelta(hours=1))
    assert account.send_cap(*account.period(END - timedelta(minutes=1), utc)) == 54_576
