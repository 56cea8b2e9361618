"""What an account may still send, as billing tells delivery (SendAllowanceChanged; PRODUCT.md, "Plans and billing":
the trial "at most ... 100 emails", "every email sent consumes a credit", "Emails sent in a month may not exceed
109 x the tier's subscriber limit"): reckoned at the lifetime counts billing folded, and told again only when the
quota itself changes, not for each send."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from herald_billing import domain
from herald_billing.domain import CreditBatch, SendAllowance, Usage
from herald_shared.contract.billing import SendAllowanceChanged
from tests.unit.billing.helpers import PLANS, at, bought, monthly, opened_account

NOW = at("2026-11-10")


def trial(**changes: object) -> domain.Account:
    return opened_account(plan="trial", blocked=(), **changes)


def told(account: domain.Account, usage: Usage, now: object = NOW) -> SendAllowanceChanged:
    event = domain.allowance_changed(account, usage, now)  # type: ignore[arg-type]
    assert isinstance(event, SendAllowanceChanged)
    return event


def test_the_trial_allows_100_emails_less_those_sent_tests_included() -> None:
    usage = Usage(trial_emails=30, lifetime_sent={"campaign": 27, "test": 3})
    assert domain.send_allowance(trial(), usage, NOW) == (70, ("campaign", "test"))
    payload = told(trial(), usage).payload
    assert (payload.remaining, payload.counts, payload.as_of.campaign, payload.as_of.test) == (
        70, ["campaign", "test"], 27, 3)
    assert domain.send_allowance(trial(), Usage(trial_emails=130), NOW)[0] == 0  # past it: none, not less


def test_a_paid_plan_counts_campaign_emails_only() -> None:
    credits = opened_account(plan="pay_as_you_go", blocked=(), credit_batches=(
        CreditBatch("b1", 100, at("2026-12-01"), bought_at=at("2026-11-02")),))
    assert domain.send_allowance(credits, Usage(), NOW) == (100, ("campaign",))
    assert domain.send_allowance(monthly(at("2026-11-01")), Usage(), NOW)[1] == ("campaign",)


def test_credits_are_what_is_left_of_the_batches_valid_now_spent_earliest_expiry_first() -> None:
    """60 emails in the window of both batches take the one expiring first: once it expires, the other's 100 are
    left whole; before, 40 of the first and 100 of the second."""
    account = opened_account(plan="pay_as_you_go", blocked=(), credit_batches=(
        CreditBatch("late", 100, at("2026-12-20"), bought_at=at("2026-11-02")),
        CreditBatch("soon", 100, at("2026-11-20"), bought_at=at("2026-11-02"))))
    window = domain.credit_window(account, NOW)
    usage = Usage(payg_sent={window: 60}, lifetime_sent={"campaign": 60})
    assert domain.send_allowance(account, usage, NOW)[0] == 140
    assert domain.send_allowance(account, usage, at("2026-11-21"))[0] == 100  # "soon" expired, told or not
    expired = replace(account, credit_batches=(account.credit_batches[0], replace(account.credit_batches[1],
                                                                                   expired=40)))
    assert domain.send_allowance(expired, usage, at("2026-11-21"))[0] == 100
    assert domain.send_allowance(account, usage, at("2026-12-21"))[0] == 0


def test_the_monthly_allowance_is_the_periods_prorated_cap_less_its_sends() -> None:
    """500 for 15 of 30 days, then 1,000: 109 x 750 = 81,750 this period."""
    account = monthly(at("2026-11-01"))
    upgrade = domain.buy_monthly(account, Usage(), PLANS, 1000, "standard", "2026-000002", at("2026-11-16"))
    account = domain.evolve_all(account, bought(account, upgrade))
    start, end = account.period(at("2026-11-20"), domain.PLATFORM_CALENDAR)
    assert account.send_cap(start, end) == 81_750
    usage = Usage(emails_by_period={domain.period_key(start): 1_750}, lifetime_sent={"campaign": 9_000})
    assert domain.send_allowance(account, usage, at("2026-11-20")) == (80_000, ("campaign",))
    # The next period is whole, its sends not yet any.
    assert domain.send_allowance(account, usage, at("2026-12-02"))[0] == 109_000


def test_no_limit_where_billings_quotas_set_none_and_nothing_without_a_plan() -> None:
    assert domain.send_allowance(opened_account(plan="monthly", blocked=(), tier=None), Usage(), NOW)[0] is None
    assert domain.send_allowance(opened_account(plan="none", blocked=("no_plan",)), Usage(), NOW)[0] == 0
    assert domain.send_allowance(opened_account(), Usage(), NOW)[0] == 0  # trial ended


def test_sends_counted_change_no_allowance_a_quota_change_does_with_the_next_sequence() -> None:
    """Each counted send takes one from `remaining` and adds one to `as_of`: delivery, subtracting its sends
    since, reckons the same, so nothing is published; credits bought are."""
    first = told(trial(), Usage(lifetime_sent={"campaign": 0}))
    assert first.payload.sequence == 1 and first.payload.remaining == 100
    account = domain.evolve_all(trial(), [first])
    assert account.allowance == SendAllowance(100, ("campaign", "test"), 0, 0, 1, trial().trial_ends_at)
    assert domain.allowance_changed(account, Usage(trial_emails=40, lifetime_sent={"campaign": 38, "test": 2}),
                                    NOW) is None
    credits = replace(account, plan="pay_as_you_go", credit_batches=(
        CreditBatch("b1", 100, at("2026-12-01"), bought_at=NOW),))
    second = told(credits, Usage(trial_emails=100, lifetime_sent={"campaign": 98, "test": 2}))
    assert (second.payload.sequence, second.payload.remaining, second.payload.counts) == (2, 100, ["campaign"])


def test_an_allowance_decided_again_is_the_same_event_and_an_older_one_read_later_changes_nothing() -> None:
    usage = Usage(trial_emails=10, lifetime_sent={"campaign": 10})
    assert told(trial(), usage).event_id == told(trial(), usage).event_id
    first = told(trial(), usage)
    published = domain.told_allowance(first)
    # Published and not folded yet: the next one follows its sequence, and the same one is not published again.
    assert domain.allowance_changed(trial(), usage, NOW, last=published) is None
    bigger = replace(trial(), plan="pay_as_you_go", credit_batches=(
        CreditBatch("b1", 500, at("2026-12-01"), bought_at=NOW),))
    assert told_after(bigger, usage, published).payload.sequence == 2
    newer = domain.evolve_all(trial(), [told_after(bigger, usage, published)])
    assert domain.evolve_all(newer, [first]).allowance == newer.allowance


def told_after(account: domain.Account, usage: Usage, last: SendAllowance) -> SendAllowanceChanged:
    event = domain.allowance_changed(account, usage, NOW, last=last)
    assert isinstance(event, SendAllowanceChanged)
    return event


def test_a_send_past_the_bound_is_told_as_nothing_left() -> None:
    """Sent on credits without one (more than the allowance, e.g. before this existed): `remaining` stays 0 while
    the count grows, so the allowance is told again, still nothing."""
    account = opened_account(plan="pay_as_you_go", blocked=(), credit_batches=(
        CreditBatch("b1", 10, at("2026-12-01"), bought_at=at("2026-11-02")),))
    window = domain.credit_window(account, NOW)
    at_bound = domain.evolve_all(account, [told(account, Usage(payg_sent={window: 10},
                                                               lifetime_sent={"campaign": 10}))])
    past = told(at_bound, Usage(payg_sent={window: 12}, lifetime_sent={"campaign": 12}), NOW + timedelta(seconds=1))
    assert (past.payload.remaining, past.payload.as_of.campaign) == (0, 12)


def test_an_allowance_ends_when_the_trial_does_or_the_earliest_batch_with_credits_left_expires() -> None:
    """Delivery stops at `until` itself rather than at billing's next look at its clock; a monthly cap has none
    (the next period only raises it), nor has an allowance with nothing left."""
    assert told(trial(), Usage()).payload.until == trial().trial_ends_at
    account = opened_account(plan="pay_as_you_go", blocked=(), credit_batches=(
        CreditBatch("late", 100, at("2026-12-20"), bought_at=at("2026-11-02")),
        CreditBatch("soon", 10, at("2026-11-20"), bought_at=at("2026-11-02"))))
    assert told(account, Usage()).payload.until == at("2026-11-20")
    # The batch expiring first used up: the allowance now lasts until the other's expiry, and is told again.
    window = domain.credit_window(account, NOW)
    used_up = Usage(payg_sent={window: 10}, lifetime_sent={"campaign": 10})
    first = domain.told_allowance(told(account, Usage()))
    again = domain.allowance_changed(account, used_up, NOW, last=first)
    assert isinstance(again, SendAllowanceChanged)
    assert again.payload.until == at("2026-12-20") and again.payload.remaining == 100
    assert told(account, Usage(), at("2026-12-21")).payload.until is None  # none left: no end to tell
    assert told(monthly(at("2026-11-01")), Usage()).payload.until is None
