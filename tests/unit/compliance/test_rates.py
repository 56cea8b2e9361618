"""The pure rate and threshold rules of the compliance processor (PRODUCT.md, "Sending suspension")."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald_compliance.domain import (
    RECIPIENT_UNSUBSCRIBES,
    AccountState,
    Counts,
    Fact,
    Policy,
    Scope,
    claim,
    default_rules,
    evaluate,
    facts_of,
    rate_report,
    sent_before,
    suspension_event,
    suspension_id,
    warning_event,
)
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced, MessageSent
from herald_shared.contract.subscriptions import SubscriberUnsubscribed, SubscriberUnsubscribedPayload

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
AT = int(T0.timestamp())
POLICY = Policy(default_rules(), minimum_sent=500)


def state_with(sent: int, *, hard: int = 0, complaints: int = 0, unsubscribes: int = 0, blocks: int = 0,
               campaign: str | None = "c1") -> AccountState:
    state = AccountState()
    for kind, n in (("sent", sent), ("hard_bounce", hard), ("complaint", complaints), ("unsubscribe", unsubscribes),
                    ("block", blocks)):
        for i in range(n):
            state.count(Fact(kind, f"{kind}:{i}", AT + i % 60, campaign), POLICY)  # type: ignore[arg-type]
    return state


def decide(state: AccountState, policy: Policy = POLICY) -> Any:
    return evaluate("acc-1", state, policy, already_suspended=False)


def test_hard_bounce_rate_of_8_percent_suspends_account() -> None:
    breach, _ = decide(state_with(10_000, hard=800))
    assert breach is not None and breach.rule.metric == "hard_bounce_rate"
    assert breach.value == Fraction(8, 100)
    assert breach.scope.kind == "campaign" and breach.scope.name == "c1"
    assert breach.counts == Counts(sent=10_000, hard_bounce=800)


def test_hard_bounce_rate_of_7_99_percent_does_not_suspend() -> None:
    breach, warnings = decide(state_with(10_000, hard=799))
    assert breach is None
    assert {(w.rule.metric, w.level) for w in warnings} == {("hard_bounce_rate", Fraction(5, 100))}


def test_abuse_rate_of_exactly_0_5_percent_does_not_suspend() -> None:
    breach, warnings = decide(state_with(10_000, complaints=50))
    assert breach is None
    assert {w.level for w in warnings if w.scope.kind == "campaign"} == {Fraction(3, 1000)}


def test_abuse_rate_of_0_51_percent_suspends() -> None:
    breach, _ = decide(state_with(10_000, complaints=51))
    assert breach is not None and breach.rule.metric == "abuse_rate" and breach.value == Fraction(51, 10_000)


def test_unsubscribe_rate_above_1_percent_suspends_and_1_percent_does_not() -> None:
    assert decide(state_with(10_000, unsubscribes=100))[0] is None
    breach, _ = decide(state_with(10_000, unsubscribes=101))
    assert breach is not None and breach.rule.metric == "unsubscribe_rate"


@pytest.mark.parametrize(("sent", "counted", "suspends", "warned_at"), [
    (100, {"hard": 40}, True, None), (100, {"hard": 39}, False, Fraction(5, 100)),
    (100, {"complaints": 3}, True, None), (100, {"complaints": 2}, False, Fraction(3, 1000)),
    (10, {"unsubscribes": 6}, True, None), (10, {"unsubscribes": 5}, False, Fraction(5, 1000)),
    (100, {"blocks": 25}, True, None), (100, {"blocks": 24}, False, Fraction(2, 100)),
    (499, {"hard": 40}, True, None), (499, {"hard": 39}, False, Fraction(5, 100))])
def test_below_the_minimum_volume_a_rate_is_judged_against_the_minimum(
        sent: int, counted: dict[str, int], suspends: bool, warned_at: Fraction | None) -> None:
    """A trial account (at most 100 emails) is suspended on the evidence that would suspend one sending 500:
    40 hard bounces (8% of 500), 3 complaints (0.6%), 6 unsubscribes (1.2%), 25 blocks (5%)."""
    breach, warnings = decide(state_with(sent, **counted))
    assert (breach is not None) == suspends
    if breach is not None:
        assert breach.scope.kind == "campaign" and breach.judged_sent == 500
        assert breach.value == Fraction(getattr(breach.counts, breach.rule.counted), 500)
    else:
        assert {w.level for w in warnings if w.scope.kind == "campaign"} == {warned_at}
        assert all(w.judged_sent == 500 and w.value <= w.rule.threshold for w in warnings)  # 1% is not > 1%


def test_one_complaint_cannot_suspend_a_small_account() -> None:
    """The minimum volume's purpose: one angry recipient is 0.2% of 500, however little the account sent."""
    breach, warnings = decide(state_with(1, complaints=1))
    assert breach is None
    assert {(w.rule.metric, w.level) for w in warnings} == {("abuse_rate", Fraction(1, 1000))}


@pytest.mark.parametrize(("hard", "suspends"), [(40, True), (39, False)])
def test_a_rolling_window_below_the_minimum_volume_is_judged_against_it(hard: int, suspends: bool) -> None:
    breach, _ = decide(state_with(100, hard=hard, campaign=None))
    assert (breach is not None) == suspends
    if breach is not None:
        assert breach.scope.kind == "rolling_window" and breach.scope.name == "24h" and breach.judged_sent == 500


def test_small_campaigns_count_in_no_scope_but_their_own_and_the_windows() -> None:
    """Five campaigns of 20 sends with 8 hard bounces each: 8 of 500 is no campaign's breach, but the windows
    hold 40 of 100."""
    state = AccountState()
    for c in range(5):
        for i in range(20):
            state.count(Fact("sent", f"s{c}:{i}", AT, f"c{c}"), POLICY)
        for i in range(8):
            state.count(Fact("hard_bounce", f"b{c}:{i}", AT, f"c{c}"), POLICY)
    breach, _ = decide(state)
    assert breach is not None and breach.scope == Scope("rolling_window", "24h")
    assert breach.counts == Counts(sent=100, hard_bounce=40)


@pytest.mark.parametrize(("kind", "n"), [("unsubscribe", 6), ("complaint", 3), ("hard_bounce", 40)])
def test_a_quiet_day_after_a_large_send_is_not_judged_against_the_minimum(kind: str, n: int) -> None:
    """A fact is timed when it happens, not when its message was sent: the day after 10,000 sends, the 24 h window
    holds their late reports and no sends. Against the minimum they would suspend; the account's longest window
    holds the sends they are about, and that window and the campaign judge them (6 of 10,000)."""
    state = state_with(10_000)
    for i in range(n):
        state.count(Fact(kind, f"late:{i}", AT + 30 * 3600, "c1"), POLICY)  # type: ignore[arg-type]
    assert state.window_counts(24, POLICY).sent == 0
    assert decide(state)[0] is None
    day = next(s for s in rate_report(state, POLICY)["scopes"] if s["name"] == "24h")
    assert day["judged_sent"] is None


@pytest.mark.parametrize(("sent", "counted", "suspends"), [
    (500, {"hard": 40}, True), (500, {"hard": 39}, False), (1000, {"complaints": 6}, True),
    (1000, {"complaints": 5}, False), (1000, {"unsubscribes": 11}, True), (1000, {"unsubscribes": 10}, False)])
def test_at_or_above_the_minimum_volume_the_rate_is_of_what_was_sent(
        sent: int, counted: dict[str, int], suspends: bool) -> None:
    breach, _ = decide(state_with(sent, **counted))
    assert (breach is not None) == suspends
    if breach is not None:
        assert breach.judged_sent == sent


def test_a_suspension_below_the_minimum_volume_says_what_it_was_judged_against() -> None:
    """`value` is the rate compared with `threshold`; the reason gives the counts behind it and the minimum."""
    breach, _ = decide(state_with(100, hard=40))
    payload = suspension_event("acc-1", breach).payload
    assert payload.metric == "hard_bounce_rate" and payload.value == 0.08 and payload.threshold == 0.08
    assert payload.counts is not None and (payload.counts.sent, payload.counts.hard_bounces) == (100, 40)
    assert payload.reason == ("hard bounce rate 8.00% ≥ 8.00% (campaign c1: 40 hard bounces of 100 sent, judged "
                              "against the minimum volume of 500)")
    one, _ = decide(state_with(100, complaints=3), Policy(default_rules(), minimum_sent=200))
    assert suspension_event("acc-1", one).payload.reason == (
        "abuse rate 1.50% > 0.50% (campaign c1: 3 complaints of 100 sent, judged against the minimum volume of 200)")
    at_minimum, _ = decide(state_with(500, hard=40))
    assert suspension_event("acc-1", at_minimum).payload.reason == (
        "hard bounce rate 8.00% ≥ 8.00% (campaign c1: 500 sent)")


def test_a_warning_below_the_minimum_volume_carries_the_volume_it_was_judged_against() -> None:
    _, warnings = decide(state_with(100, complaints=2))
    payload = warning_event("acc-1", next(w for w in warnings if w.scope.kind == "campaign")).payload
    assert payload.value == 0.004 and payload.warning_level == 0.003 and payload.threshold == 0.005
    assert payload.evidence == {"judged_sent": 500}
    _, warnings = decide(state_with(1000, complaints=3))
    assert warning_event("acc-1", warnings[0]).payload.evidence == {}


def test_the_staff_report_shows_what_each_scope_is_judged_against() -> None:
    report = rate_report(state_with(100, hard=39), POLICY)
    campaign = next(s for s in report["scopes"] if s["scope"] == "campaign")
    assert campaign["judged_sent"] == 500 and campaign["rates"]["hard_bounce_rate"] == 0.39
    assert next(s for s in rate_report(state_with(800, hard=1), POLICY)["scopes"])["judged_sent"] == 800


def test_gmail_and_yahoo_spam_rate_levels_warn_before_the_threshold() -> None:
    """A complaint rate of 0.1% and 0.3% (the bulk-sender rules) warns; each level once."""
    state = state_with(10_000, complaints=10)
    _, warnings = decide(state)
    assert [float(w.level) for w in warnings if w.scope.kind == "campaign"] == [0.001]
    for w in warnings:
        state.warned[f"{w.rule.metric}|{w.scope.key}"] = str(w.level)
    assert decide(state)[1] == []
    for i in range(20):
        state.count(Fact("complaint", f"more:{i}", AT, "c1"), POLICY)
    _, warnings = decide(state)
    assert {float(w.level) for w in warnings} == {0.003}


def test_a_suspended_account_is_not_suspended_again_nor_warned() -> None:
    state = state_with(10_000, hard=900, complaints=100)
    breach, _ = evaluate("acc-1", state, POLICY, already_suspended=True)
    assert breach is None
    assert evaluate("acc-1", state, POLICY, already_suspended=True) == (None, [])


def test_suspension_id_is_the_same_for_the_same_breach_and_new_after_reinstatement() -> None:
    state = state_with(1_000, hard=100)
    first, _ = decide(state)
    again, _ = decide(state)
    assert first is not None and again is not None and first.event_id == again.event_id
    state.reinstate(AT + 60)
    assert suspension_id("acc-1", 1) != first.event_id


def test_reinstatement_restarts_the_counters() -> None:
    """After staff lift a suspension, what was counted before no longer counts towards a new one."""
    state = state_with(1_000, hard=100)
    state.reinstate(AT + 60)
    assert decide(state) == (None, [])
    for i in range(600):
        state.count(Fact("sent", f"new-sent:{i}", AT + 10, "c1"), POLICY)
    for i in range(48):
        state.count(Fact("hard_bounce", f"new-b:{i}", AT + 10, "c1"), POLICY)
    breach, _ = decide(state)
    assert breach is not None and breach.counts == Counts(sent=600, hard_bounce=48)
    assert state.campaign_counts("c1", raw=True).sent == 1_600


def test_rolling_window_catches_what_no_single_campaign_shows() -> None:
    state = AccountState()
    for c in range(5):  # five campaigns of 200: each below the minimum volume, together 1,000
        for i in range(200):
            state.count(Fact("sent", f"s{c}:{i}", AT + c * 3600, f"c{c}"), POLICY)
        for i in range(20):
            state.count(Fact("hard_bounce", f"b{c}:{i}", AT + c * 3600, f"c{c}"), POLICY)
    breach, _ = decide(state)
    assert breach is not None and breach.scope.kind == "rolling_window" and breach.scope.name == "24h"


def test_window_slides_with_event_time() -> None:
    state = state_with(1_000, hard=79, campaign=None)
    later = AT + 25 * 3600
    for i in range(10):
        state.count(Fact("hard_bounce", f"late:{i}", later, None), POLICY)
    assert state.window_counts(24, POLICY).sent == 0  # the first day has left the 24 h window
    assert state.window_counts(168, POLICY) == Counts(sent=1_000, hard_bounce=89)


def test_a_producer_clock_running_ahead_cannot_move_the_windows_into_the_future() -> None:
    """An event cannot have happened after its record was published: its time is capped at the record's."""
    env: dict[str, Any] = {"account_id": "acc-1", "producer": "delivery"}
    skewed = MessageSent(**env, occurred_at=datetime.fromtimestamp(AT + 31 * 86400, UTC),
                         payload={**_ref(0), "recipient_domain": "example.com", "smtp_code": 250})
    state = state_with(1_000, hard=200)
    for fact in facts_of(skewed, produced_at=AT + 60):
        state.count(fact, POLICY)
    state.prune(POLICY)
    assert state.stream_time == AT + 60
    breach, _ = decide(state)
    assert breach is not None and breach.scope.name == "c1"  # the campaign was not pruned, its rate still judged
    assert state.window_counts(24, POLICY).sent == 1_001


def test_a_fact_published_longer_after_it_happened_than_the_longest_window_is_too_late() -> None:
    """Its duplicates could no longer be told apart (the dedupe index forgets facts that old)."""
    fact = Fact("hard_bounce", "b:m1", AT, "c1")
    assert not POLICY.too_late(fact, AT + POLICY.longest_window_seconds)
    assert POLICY.too_late(fact, AT + POLICY.longest_window_seconds + 1)


def test_late_bounces_of_messages_sent_before_a_reinstatement_never_count_towards_a_new_suspension() -> None:
    """PRODUCT.md "Sending suspension": after staff lift it, what came before does not suspend again."""
    state, index = AccountState(), {}

    def count(kind: str, i: int, at: int) -> None:
        fact = Fact(kind, f"{kind}:{i}", at, "c1", None if kind == "sent" else f"sent:{i}")  # type: ignore[arg-type]
        assert claim(index, fact, "herald.delivery:0", hash((kind, i)), state.epoch)
        state.count(fact, POLICY, before_reinstatement=sent_before(index, fact, state, POLICY))

    for i in range(1000):
        count("sent", i, AT)
    for i in range(80):
        count("hard_bounce", i, AT + 60)
    assert decide(state)[0] is not None
    state.reinstate(AT + 3600)
    for i in range(80, 120):  # DSNs of the old messages arrive after the reinstatement
        count("hard_bounce", i, AT + 7200)
    for i in range(1000, 1500):  # new mail: 2% bounces
        count("sent", i, AT + 7200)
    for i in range(1000, 1010):
        count("hard_bounce", i, AT + 7300)
    assert decide(state)[0] is None
    assert state.campaign_counts("c1") == Counts(sent=500, hard_bounce=10)
    assert state.campaign_counts("c1", raw=True) == Counts(sent=1500, hard_bounce=130)
    assert state.window_counts(24, POLICY) == Counts(sent=500, hard_bounce=10)


def test_a_complaint_whose_send_was_forgotten_counts_only_if_no_reinstatement_came_since() -> None:
    """The send's marker is swept after the longest window; a reinstatement within that window came after it."""
    week = POLICY.longest_window_seconds
    complaint = Fact("complaint", "c:m1", AT + week + 86400, "c1", "s:m1")  # about mail sent at AT, forgotten
    state = AccountState()
    state.reinstate(AT + week + 43200)  # half a day before the complaint
    assert sent_before({}, complaint, state, POLICY)
    long_ago = AccountState()
    long_ago.reinstate(AT - 86400)  # before the send: the mail came after it
    assert not sent_before({}, complaint, long_ago, POLICY)
    legacy = {"s:m1": ["herald.delivery:0", 5, AT]}  # a marker written before epochs were kept
    assert not sent_before(legacy, complaint, state, POLICY)
    assert not sent_before({}, complaint, AccountState(), POLICY)  # never reinstated


def test_duplicate_fact_is_counted_once_and_a_replay_of_the_same_record_is_allowed() -> None:
    index: dict[str, Any] = {}
    fact = Fact("sent", "s:m1", AT, "c1")
    assert claim(index, fact, "herald.delivery:0", 5)
    assert not claim(index, fact, "herald.delivery:0", 9)  # republished: another record, same message
    assert claim(index, fact, "herald.delivery:0", 5)  # the same record again (replay after a crash)


def test_watermark_skips_records_already_in_the_state() -> None:
    state = AccountState()
    state.mark_applied("herald.delivery:2", 41)
    assert state.applied("herald.delivery:2", 41) and state.applied("herald.delivery:2", 7)
    assert not state.applied("herald.delivery:2", 42) and not state.applied("herald.subscriptions:2", 1)


def _ref(i: int) -> dict[str, Any]:
    return {"message_id": f"m{i}", "campaign_id": "c1", "subscriber_id": f"s{i}", "list_id": "l1"}


def test_what_each_event_counts_for() -> None:
    env: dict[str, Any] = {"account_id": "acc-1", "producer": "delivery", "occurred_at": T0}
    sent = MessageSent(**env, payload={**_ref(1), "recipient_domain": "example.com", "smtp_code": 250})
    rejected = MessageBounced(**env, payload={**_ref(2), "bounce_class": "hard", "smtp_code": 550,
                                              "diagnostic": "no such user", "source": "smtp_reply"})
    dsn = MessageBounced(**env, payload={**_ref(1), "bounce_class": "hard", "diagnostic": "gone", "source": "dsn"})
    soft = MessageBounced(**env, payload={**_ref(3), "bounce_class": "soft", "diagnostic": "full", "source": "dsn"})
    blocked = MessageBounced(**env, payload={**_ref(4), "bounce_class": "block", "smtp_code": 550,
                                             "diagnostic": "5.7.1 spam", "source": "smtp_reply"})
    block_dsn = MessageBounced(**env, payload={**_ref(1), "bounce_class": "block", "diagnostic": "listed",
                                               "source": "dsn"})
    unclassified = MessageBounced(**env, payload={**_ref(5), "bounce_class": "undetermined", "smtp_code": 554,
                                                  "diagnostic": "554 no", "source": "smtp_reply"})
    complaint = ComplaintReceived(**env, payload={**_ref(1), "feedback_type": "abuse", "reporting_domain": "isp.net"})
    not_spam = ComplaintReceived(**env, payload={**_ref(1), "feedback_type": "not-spam",
                                                 "reporting_domain": "isp.net"})
    unsub = SubscriberUnsubscribed(**{**env, "producer": "subscriptions"}, payload={
        "list_id": "l1", "subscriber_id": "s1", "source": "one_click", "campaign_id": "c1"})
    by_complaint = SubscriberUnsubscribed(**{**env, "producer": "subscriptions"}, payload={
        "list_id": "l1", "subscriber_id": "s1", "source": "complaint", "campaign_id": "c1"})
    by_customer = SubscriberUnsubscribed(**{**env, "producer": "subscriptions"}, payload={
        "list_id": "l1", "subscriber_id": "s2", "source": "api"})
    kinds = {name: [f.kind for f in facts_of(e)] for name, e in [
        ("sent", sent), ("rejected", rejected), ("dsn", dsn), ("soft", soft), ("complaint", complaint),
        ("not_spam", not_spam), ("unsub", unsub), ("by_complaint", by_complaint), ("by_customer", by_customer),
        ("blocked", blocked), ("block_dsn", block_dsn), ("unclassified", unclassified)]}
    assert kinds == {"sent": ["sent"], "rejected": ["sent", "hard_bounce"], "dsn": ["hard_bounce"], "soft": [],
                     "blocked": ["sent", "block"], "block_dsn": ["block"], "unclassified": ["sent"],
                     "complaint": ["complaint"], "not_spam": [], "unsub": ["unsubscribe"], "by_complaint": [],
                     "by_customer": []}


def test_a_test_send_counts_toward_no_rate() -> None:
    """A test send goes to its author's own addresses: its sends, bounces and complaints are no recipient's."""
    env: dict[str, Any] = {"account_id": "acc-1", "producer": "delivery", "occurred_at": T0}
    ref = {"message_id": "t1", "kind": "test", "campaign_id": "c1"}
    events = [MessageSent(**env, payload={**ref, "recipient_domain": "acme.example", "smtp_code": 250}),
              MessageBounced(**env, payload={**ref, "bounce_class": "hard", "smtp_code": 550,
                                             "diagnostic": "no such user", "source": "smtp_reply"}),
              MessageBounced(**env, payload={**ref, "bounce_class": "block", "diagnostic": "listed",
                                             "source": "dsn"}),
              ComplaintReceived(**env, payload={**ref, "feedback_type": "abuse", "reporting_domain": "isp.net"})]
    assert [facts_of(e) for e in events] == [[], [], [], []]
    # The same message as a campaign's counts.
    assert [f.kind for f in facts_of(events[0].model_copy(update={"payload": events[0].payload.model_copy(
        update={"kind": "campaign"})}))] == ["sent"]


def test_an_account_notice_counts_toward_no_rate() -> None:
    """An account notice (a membership notice, the suspension email) goes to the customer's own mailbox: it is not
    the account's sending, so neither it nor its bounces and complaints count, in any scope."""
    env: dict[str, Any] = {"account_id": "acc-1", "producer": "delivery", "occurred_at": T0}
    ref = {"message_id": "n1", "kind": "account_notice"}
    events = [MessageSent(**env, payload={**ref, "recipient_domain": "acme.example", "smtp_code": 250}),
              MessageBounced(**env, payload={**ref, "bounce_class": "hard", "smtp_code": 550,
                                             "diagnostic": "no such user", "source": "smtp_reply"}),
              MessageBounced(**env, payload={**ref, "bounce_class": "block", "diagnostic": "listed",
                                             "source": "dsn"}),
              ComplaintReceived(**env, payload={**ref, "feedback_type": "abuse", "reporting_domain": "isp.net"})]
    assert [facts_of(e) for e in events] == [[], [], [], []]
    # A confirmation request is the account's sending (to its subscribers): it counts.
    confirmation = events[0].model_copy(update={"payload": events[0].payload.model_copy(
        update={"kind": "confirmation"})})
    assert [f.kind for f in facts_of(confirmation)] == ["sent"]


def test_a_block_rate_of_5_percent_suspends_and_2_percent_warns() -> None:
    """Receivers refusing our mail is the "blocklisted" rule (PRODUCT.md, "Sending suspension"); blocks never
    count as hard bounces."""
    breach, warnings = decide(state_with(1000, blocks=49))
    assert breach is None
    assert {(w.rule.metric, w.level) for w in warnings} == {("block_rate", Fraction(2, 100))}
    breach, _ = decide(state_with(1000, blocks=50))
    assert breach is not None and breach.rule.metric == "block_rate" and breach.value == Fraction(5, 100)
    assert breach.counts == Counts(sent=1000, block=50)
    assert breach.counts.evidence() == {"sent": 1000, "hard_bounces": 0, "complaints": 0, "unsubscribes": 0,
                                        "blocks": 50}
    assert decide(state_with(1000, blocks=19)) == (None, [])


def test_counts_stored_before_blocks_were_counted_still_load() -> None:
    assert Counts.of([10, 1, 2, 3]) == Counts(sent=10, hard_bounce=1, complaint=2, unsubscribe=3, block=0)


def test_every_recipient_unsubscribe_source_counts() -> None:
    """The unsubscribe rate counts what recipients did, through every way they have (PRODUCT.md, "Every message")."""
    env: dict[str, Any] = {"account_id": "acc-1", "producer": "subscriptions", "occurred_at": T0}
    sources = set(get_args(SubscriberUnsubscribedPayload.model_fields["source"].annotation))
    assert sources - RECIPIENT_UNSUBSCRIBES == {"complaint", "api"}  # a new source must be decided here
    for source in sorted(RECIPIENT_UNSUBSCRIBES):
        event = SubscriberUnsubscribed(**env, payload={"list_id": "l1", "subscriber_id": "s1", "source": source})
        assert [f.kind for f in facts_of(event)] == ["unsubscribe"], source


def test_policy_refuses_a_hard_bounce_threshold_outside_the_terms_band() -> None:
    for percent in (Fraction(7, 100), Fraction(16, 100)):
        with pytest.raises(ValueError, match="8-15%"):
            Policy(default_rules(hard_bounce=percent))
    Policy(default_rules(hard_bounce=Fraction(12, 100)))
    with pytest.raises(ValueError, match="below"):
        default_rules(abuse_warnings=(Fraction(6, 1000),))
    with pytest.raises(ValueError, match="above 0"):
        Policy(default_rules(abuse_warnings=(Fraction(0), Fraction(1, 1000))))
    with pytest.raises(ValueError, match="minimum volume"):
        Policy(default_rules(), minimum_sent=0)


def test_state_survives_its_json_form() -> None:
    state = state_with(600, hard=10, complaints=2, unsubscribes=1)
    state.mark_applied("herald.delivery:1", 99)
    state.reinstate(AT + 60)
    assert AccountState.from_json(state.to_json()) == state


facts = st.lists(st.tuples(st.sampled_from(["sent", "hard_bounce", "complaint", "unsubscribe", "block"]),
                           st.integers(0, 30)), max_size=120)


@settings(max_examples=60, deadline=None)
@given(facts, st.randoms(use_true_random=False), st.integers(1, 10))
def test_any_order_and_any_redelivery_give_the_same_counts(items: list[Any], rnd: Any, chunk: int) -> None:
    """Out-of-order and duplicate events: the counts depend only on the set of facts."""
    # a republished fact is the same event: same time, same campaign
    records = [(Fact(kind, f"{kind}:{n}", AT + n * 7919, ["c1", "c2", None][n % 3]), offset)
               for offset, (kind, n) in enumerate(items)]

    def fold(order: list[Any], redeliver: bool) -> AccountState:
        state, index = AccountState(), {}
        for start in range(0, len(order), chunk):
            for fact, offset in order[start:start + chunk]:
                if state.applied(f"p:{offset}", offset):
                    continue
                if claim(index, fact, f"p:{offset}", offset):
                    state.count(fact, POLICY)
                state.mark_applied(f"p:{offset}", offset)
            if redeliver:  # a crash replays the chunk
                for fact, offset in order[start:start + chunk]:
                    if not state.applied(f"p:{offset}", offset) and claim(index, fact, f"p:{offset}", offset):
                        state.count(fact, POLICY)
        return state

    first = fold(records, False)
    shuffled = list(records)
    rnd.shuffle(shuffled)
    other = fold(shuffled, True)
    assert first.campaigns == other.campaigns
    stream_time = max((f.at for f, _ in records), default=0)
    for hours in POLICY.windows_hours:
        assert first.window_counts(hours, POLICY) == other.window_counts(hours, POLICY)
    assert first.stream_time == other.stream_time == stream_time
