"""Unsubscribes are judged at a consistent cut (PRODUCT.md: suspend when a campaign "shows an unsubscribe rate above
1%"): they come on herald.subscriptions, their sends on herald.delivery, read in no set order, so one counted
before the sends' partition was read as far as it reached then waits, out of the rules, until it has been
(`domain.SendsRead`, `AccountState.awaiting_sends`). Counts are kept as ever; only the moment of judging moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herald_compliance.domain import (
    AccountState,
    Input,
    ListRecord,
    Policy,
    SendsRead,
    decide,
    default_rules,
    rate_report,
    sends_source,
)
from herald_shared.contract import Event
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended, AccountWarned, RateCounts
from herald_shared.contract.delivery import ComplaintReceived, MessageSent
from herald_shared.contract.subscriptions import SubscriberUnsubscribed

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
POLICY = Policy(default_rules(), minimum_sent=500)  # the production minimum volume
ACCOUNT = "acc-cut"
SENDS, UNSUBSCRIBES = "herald.delivery:3", "herald.subscriptions:3"


class Lists(dict[str, ListRecord]):
    def get(self, list_id: str, default: Any = None) -> ListRecord:
        return ListRecord.from_json(super().get(list_id, ListRecord()).to_json())

    def put(self, list_id: str, record: ListRecord) -> None:
        self[list_id] = record


def env(at: datetime = T0) -> dict[str, Any]:
    return {"account_id": ACCOUNT, "producer": "test", "occurred_at": at}


def sent(i: int, campaign: str | None = "c1") -> MessageSent:
    return MessageSent(**env(), payload={"message_id": f"m{i}", "campaign_id": campaign, "subscriber_id": f"s{i}",
                                         "list_id": "l1", "recipient_domain": "example.com", "smtp_code": 250})


def unsubscribed(i: int, campaign: str | None = "c1") -> SubscriberUnsubscribed:
    return SubscriberUnsubscribed(**env(T0 + timedelta(minutes=5)), payload={
        "list_id": "l1", "subscriber_id": f"s{i}", "source": "one_click", "campaign_id": campaign,
        "message_id": f"m{i}"})


class Partitions:
    """One account's two partitions as the processor reads them: what was published on each, and how far each
    has been read. `read` applies a batch and judges, as the processor does; `judge` is its judgement of an
    account none of whose events the batch held."""

    def __init__(self) -> None:
        self.state, self.facts, self.lists = AccountState(), dict[str, Any](), Lists()
        self.logs: dict[str, list[Event | None]] = {SENDS: [], UNSUBSCRIBES: []}  # None: another account's
        self.read_to = {SENDS: 0, UNSUBSCRIBES: 0}
        self.announced: list[Event] = []

    def publish(self, *events: Event | None) -> None:
        for event in events:
            self.logs[SENDS if event is None or event.topic == "herald.delivery" else UNSUBSCRIBES].append(event)

    def read(self, sends: int = 0, unsubscribes: int = 0) -> list[Event]:
        items: list[Input] = []
        for source, n in ((SENDS, sends), (UNSUBSCRIBES, unsubscribes)):
            start = self.read_to[source]
            for offset, event in enumerate(self.logs[source][start:start + n], start):
                if event is not None:
                    items.append(Input(event, source, offset, int(event.occurred_at.timestamp())))
            self.read_to[source] = start + len(self.logs[source][start:start + n])
        return self._decide(items)

    def judge(self) -> list[Event]:
        return self._decide([])

    def _decide(self, items: list[Input]) -> list[Event]:
        progress = SendsRead({SENDS: self.read_to[SENDS]}, {SENDS: len(self.logs[SENDS])})
        decision = decide(ACCOUNT, self.state, items, self.facts, self.lists, POLICY,
                          {str(e.event_id) for e in self.announced}, T0, progress)
        self.announced += decision.announcements
        return decision.announcements


def suspended(events: list[Event]) -> list[AccountSuspended]:
    return [e for e in events if isinstance(e, AccountSuspended)]


def judged_counts(event: AccountSuspended | AccountWarned) -> RateCounts:
    assert event.payload.counts is not None
    return event.payload.counts


def test_only_unsubscribes_wait_for_the_sends_partition_of_their_account() -> None:
    assert sends_source(Input(unsubscribed(0), UNSUBSCRIBES, 0, None)) == SENDS
    for event in (sent(0), ComplaintReceived(**env(), payload={  # in order with their sends: never wait
            "message_id": "m0", "campaign_id": "c1", "subscriber_id": "s0", "list_id": "l1",
            "feedback_type": "abuse", "reporting_domain": "isp.example"})):
        assert sends_source(Input(event, SENDS, 0, None)) is None


def test_ten_unsubscribes_of_1000_read_before_most_sends_do_not_suspend_and_an_eleventh_does() -> None:
    account = Partitions()
    account.publish(*(sent(i) for i in range(1000)), *(unsubscribed(i) for i in range(10)))
    assert account.read(sends=100, unsubscribes=10) == []  # against 100 sent (500 judged) it would be 2%
    counts = account.state.campaign_counts("c1")
    assert (counts.sent, counts.unsubscribe) == (100, 10)  # counted as ever
    assert account.state.awaited() == {SENDS: 1000}
    shown = {s["name"]: (s["counts"]["unsubscribes"], s["awaiting_unsubscribes"])
             for s in rate_report(account.state, POLICY)["scopes"]}
    assert shown == {"c1": (10, 10), "24h": (10, 10), "7d": (10, 10)}  # staff see why nothing was judged yet
    assert account.read(sends=899) == []
    warned = account.read(sends=1)  # the last send published before them: judged now, 1.0%
    assert [(w.payload.metric, w.payload.warning_level, judged_counts(w).sent) for w in warned
            if isinstance(w, AccountWarned)] == [("unsubscribe_rate", 0.005, 1000)] * 3  # campaign, 24 h, 7 d
    assert account.state.awaiting_sends == []
    assert {s["awaiting_unsubscribes"] for s in rate_report(account.state, POLICY)["scopes"]} == {0}

    account.publish(unsubscribed(10))
    [suspension] = suspended(account.read(unsubscribes=1))
    assert suspension.payload.value == 0.011 and judged_counts(suspension).sent == 1000


def test_after_an_outage_the_unsubscribes_wait_for_every_send_published_before_them() -> None:
    """2000 sends and 20 unsubscribes (1.0%) published before the processor starts, the unsubscribes read
    first: judged on 2000 sent, not on the 182 read by then."""
    account = Partitions()
    account.publish(*(sent(i) for i in range(2000)), *(unsubscribed(i) for i in range(20)))
    assert account.read(sends=182, unsubscribes=20) == []
    for _ in range(19):
        assert suspended(account.read(sends=100)) == []
    assert suspended(account.judge()) == [] and account.state.awaiting_sends == []
    account.publish(unsubscribed(20))
    assert [s.payload.value for s in suspended(account.read(unsubscribes=1))] == [0.0105]


def test_a_real_breach_is_suspended_once_the_sends_before_it_are_read_by_a_batch_without_the_account() -> None:
    """The account's own 600 sends are read, but the partition ended further (another account's sends) when its
    unsubscribes were: judged once those are read too, by a batch that holds nothing of this account."""
    account = Partitions()
    account.publish(*(sent(i) for i in range(600)), *[None] * 50, *(unsubscribed(i) for i in range(30)))  # 5%
    assert account.read(sends=600, unsubscribes=30) == []
    assert account.state.awaited() == {SENDS: 650}
    account.read_to[SENDS] = 650  # the other account's sends, read in a batch without this account's events
    [suspension] = suspended(account.judge())
    assert judged_counts(suspension).sent == 600 and suspension.payload.value == 0.05
    assert suspended(account.judge()) == []  # judged once


def test_rolling_windows_wait_too_for_unsubscribes_without_a_campaign() -> None:
    account = Partitions()
    account.publish(*(sent(i, campaign=None) for i in range(1000)), *(unsubscribed(i, campaign=None)
                                                                      for i in range(10)))
    assert account.read(sends=50, unsubscribes=10) == []  # 10 of 500 judged would warn and suspend both windows
    assert account.state.awaiting(POLICY) == {"window:24h": 10, "window:7d": 10}
    assert suspended(account.read(sends=950)) == []


def test_hard_bounces_and_complaints_are_judged_at_once_alongside_awaiting_unsubscribes() -> None:
    """Only the unsubscribes wait: a complaint breach on the sends already read suspends in the same batch."""
    account = Partitions()
    complaints = [ComplaintReceived(**env(), payload={"message_id": f"m{i}", "campaign_id": "c1",
                                                      "subscriber_id": f"s{i}", "list_id": "l1",
                                                      "feedback_type": "abuse", "reporting_domain": "isp.example"})
                  for i in range(6)]
    account.publish(*(sent(i) for i in range(500)), *complaints, *(sent(i) for i in range(500, 1000)),
                    unsubscribed(0))
    [suspension] = suspended(account.read(sends=506, unsubscribes=1))
    assert suspension.payload.metric == "abuse_rate" and judged_counts(suspension).sent == 500
    assert judged_counts(suspension).unsubscribes == 0  # counted, awaiting its sends: not in what was judged
    assert account.state.campaign_counts("c1").unsubscribe == 1


def test_without_knowing_how_far_the_sends_were_read_every_fact_is_judged_at_once() -> None:
    state = AccountState()
    items = [Input(unsubscribed(i), UNSUBSCRIBES, i, None) for i in range(6)]
    decision = decide(ACCOUNT, state, items, {}, Lists(), POLICY, set(), T0)  # 6 of 500 judged: 1.2%
    assert suspended(decision.announcements) and state.awaiting_sends == []


def test_awaiting_unsubscribes_are_kept_with_the_state_and_dropped_by_a_reinstatement() -> None:
    account = Partitions()
    account.publish(*(sent(i) for i in range(1000)), *(unsubscribed(i) for i in range(3)))
    account.read(sends=1, unsubscribes=3)
    stored = AccountState.from_json(account.state.to_json())
    assert stored.awaiting_sends == account.state.awaiting_sends != []
    assert "as" not in AccountState().to_json()  # written only when there are some
    stored.suspension = {"event_id": "e1", "metric": "hard_bounce_rate"}
    reinstated = AccountReinstated(**env(), payload={"reinstated_by": "staff", "reason": "reviewed",
                                                     "suspension_event_id": "e1"})
    decide(ACCOUNT, stored, [Input(reinstated, "herald.compliance:3", 0, None)], {}, Lists(), POLICY, set(), T0,
           SendsRead({SENDS: 1}, {}))
    assert stored.awaiting_sends == []  # in the baseline: never judged


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 6)), min_size=1, max_size=12),
       extra=st.booleans())
def test_any_reading_order_judges_the_rate_of_the_sends_published_before(steps: list[tuple[int, int]],
                                                                         extra: bool) -> None:
    """1000 sends then 10 unsubscribes (1.0%), and sometimes an 11th (1.1%), published before they are read;
    however the two partitions are read, in whatever batches: never suspended at 1.0%, once at 1.1%."""
    account = Partitions()
    account.publish(*(sent(i) for i in range(1000)), *(unsubscribed(i) for i in range(11 if extra else 10)))
    found = []
    for sends, unsubscribes in steps:
        found += suspended(account.read(sends, unsubscribes))
    found += suspended(account.read(sends=1000, unsubscribes=11))
    assert [s.payload.value for s in found] == ([0.011] if extra else [])
