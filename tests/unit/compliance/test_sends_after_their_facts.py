"""A bounce, complaint or unsubscribe processed before its own MessageSent (delivery republishing after a crash,
a partition read ahead of another) is counted, but judged only once its send is read, and then against every send
published before that send was read: the same facts in any order give the same suspensions (PRODUCT.md, "Sending
suspension": hard bounces ≥ 8%, complaints > 0.5%, unsubscribes > 1%), before any reinstatement as after one. A
send that never comes hides none of them for good: past `awaited_until` they are judged without it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herald_compliance.domain import (
    CLOCK_SKEW_SECONDS,
    AccountState,
    Counts,
    Input,
    ListRecord,
    Policy,
    SendsRead,
    decide,
    default_rules,
    rate_report,
    suspension_id,
)
from herald_shared.contract import Event
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended, RateCounts
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced, MessageSent
from herald_shared.contract.subscriptions import SubscriberUnsubscribed

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
POLICY = Policy(default_rules(), minimum_sent=100)
ACCOUNT = "acc-late-sends"
SENDS, UNSUBSCRIBES = "herald.delivery:2", "herald.subscriptions:2"
WAIT = timedelta(seconds=CLOCK_SKEW_SECONDS + POLICY.longest_window_seconds)


class Lists(dict[str, ListRecord]):
    def get(self, list_id: str, default: Any = None) -> ListRecord:
        return ListRecord.from_json(super().get(list_id, ListRecord()).to_json())

    def put(self, list_id: str, record: ListRecord) -> None:
        self[list_id] = record


def judged_counts(suspension: AccountSuspended) -> RateCounts:
    assert suspension.payload.counts is not None
    return suspension.payload.counts


def env(at: datetime) -> dict[str, Any]:
    return {"account_id": ACCOUNT, "producer": "test", "occurred_at": at}


def ref(i: int, campaign: str) -> dict[str, Any]:
    return {"message_id": f"{campaign}-m{i}", "campaign_id": campaign, "subscriber_id": f"s{i}", "list_id": "l1"}


def sent(i: int, campaign: str = "c1", at: datetime = T0) -> MessageSent:
    return MessageSent(**env(at), payload={**ref(i, campaign), "recipient_domain": "example.com", "smtp_code": 250})


def dsn(i: int, campaign: str = "c1", at: datetime = T0 + timedelta(minutes=2)) -> MessageBounced:
    return MessageBounced(**env(at), payload={**ref(i, campaign), "bounce_class": "hard", "smtp_code": 550,
                                              "diagnostic": "5.1.1", "source": "dsn"})


def complained(i: int, campaign: str = "c1", at: datetime = T0 + timedelta(minutes=3)) -> ComplaintReceived:
    return ComplaintReceived(**env(at), payload={**ref(i, campaign), "feedback_type": "abuse",
                                                 "reporting_domain": "isp.example"})


def unsubscribed(i: int, campaign: str = "c1", at: datetime = T0 + timedelta(minutes=4)) -> SubscriberUnsubscribed:
    return SubscriberUnsubscribed(**env(at), payload={"list_id": "l1", "subscriber_id": f"s{i}",
                                                      "source": "one_click", "campaign_id": campaign,
                                                      "message_id": f"{campaign}-m{i}"})


class Partitions:
    """One account's delivery and subscriptions partitions as the processor reads them: each batch decided on the
    state as stored (decoded from its JSON, as after a restart), with how far the sends' partition was read and
    where it ends."""

    def __init__(self, state: AccountState | None = None, facts: dict[str, Any] | None = None) -> None:
        self.stored = (state or AccountState()).to_json()
        self.facts: dict[str, Any] = facts if facts is not None else {}
        self.lists = Lists()
        self.logs: dict[str, list[Event]] = {SENDS: [], UNSUBSCRIBES: []}
        self.read_to = {SENDS: 0, UNSUBSCRIBES: 0}
        self.announced: list[AccountSuspended] = []

    @property
    def state(self) -> AccountState:
        return AccountState.from_json(self.stored)

    def publish(self, *events: Event) -> None:
        for event in events:
            self.logs[SENDS if event.topic == "herald.delivery" else UNSUBSCRIBES].append(event)

    def read(self, sends: int = 0, unsubscribes: int = 0) -> list[AccountSuspended]:
        items = []
        for source, n in ((SENDS, sends), (UNSUBSCRIBES, unsubscribes)):
            start = self.read_to[source]
            for offset, event in enumerate(self.logs[source][start:start + n], start):
                items.append(Input(event, source, offset, int(event.occurred_at.timestamp())))
            self.read_to[source] = min(start + n, len(self.logs[source]))
        state = self.state
        decision = decide(ACCOUNT, state, items, self.facts, self.lists, POLICY,
                          {str(e.event_id) for e in self.announced}, T0,
                          SendsRead({SENDS: self.read_to[SENDS]}, {SENDS: len(self.logs[SENDS])}))
        self.stored = state.to_json()
        found = [e for e in decision.announcements if isinstance(e, AccountSuspended)]
        self.announced += found
        return found

    def read_all(self, batch: int) -> list[AccountSuspended]:
        found = []
        while any(self.read_to[s] < len(self.logs[s]) for s in self.logs):
            found += self.read(batch, batch)
        return found


def test_9_hard_bounces_of_200_read_before_their_sends_do_not_suspend_as_in_order() -> None:
    """4.5%: judged against the 200 sends, not the minimum volume, whichever is read first, in any batches."""
    sends, bounces = [sent(i) for i in range(200)], [dsn(i) for i in range(9)]
    for order in (sends + bounces, bounces + sends):
        for batch in (1, 7, 21, 500):
            account = Partitions()
            account.publish(*order)
            assert account.read_all(batch) == [], (order[0].type, batch)
            judged = account.state.campaign_counts("c1")
            assert judged == Counts(sent=200, hard_bounce=9) == account.state.campaign_counts("c1", raw=True)
            assert account.state.awaiting_facts == [] and account.state.awaiting_sends == []


def test_20_hard_bounces_of_200_suspend_once_in_either_order_against_the_200_sent() -> None:
    sends, bounces = [sent(i) for i in range(200)], [dsn(i) for i in range(20)]
    for order in (sends + bounces, bounces + sends):
        for batch in (1, 21, 500):
            account = Partitions()
            account.publish(*order)
            [suspension] = account.read_all(batch)
            assert suspension.payload.metric == "hard_bounce_rate" and judged_counts(suspension).sent == 200
            assert (suspension.payload.value or 0) >= 0.08  # in order at the 16th bounce, the first to reach 8%


def test_a_bounce_waiting_for_its_send_shows_in_the_raw_counts_and_as_awaiting() -> None:
    account = Partitions()
    account.publish(*(dsn(i) for i in range(9)), *(sent(i) for i in range(200)))
    assert account.read(sends=9) == []  # 9 of 0 sent, judged against 100, would suspend
    scope = next(s for s in rate_report(account.state, POLICY)["scopes"] if s["name"] == "c1")
    assert scope["raw_counts"]["hard_bounces"] == 9 and scope["counts"]["hard_bounces"] == 0
    assert scope["awaiting_their_sends"] == 9
    assert account.read(sends=5) == []  # m0..m4 read: they now wait for the sends published before them
    assert account.read(sends=200) == []
    scope = next(s for s in rate_report(account.state, POLICY)["scopes"] if s["name"] == "c1")
    assert scope["counts"]["hard_bounces"] == 9 and scope["awaiting_their_sends"] == 0


def test_complaints_and_unsubscribes_read_before_their_sends_wait_for_them_too() -> None:
    """1 complaint of 200 (0.5%) and 2 unsubscribes (1.0%) are not above their thresholds; judged against the
    minimum volume before the sends (1% and 2%) they would be."""
    complaint, unsubscribes = complained(0), [unsubscribed(i) for i in (1, 2)]
    sends = [sent(i) for i in range(200)]
    for order in ([complaint, *sends], [*sends, complaint], [*sends[1:], complaint, sends[0]]):
        account = Partitions()
        account.publish(*order, *unsubscribes)
        assert account.read(unsubscribes=2) == [] and account.read(sends=2) == []
        assert account.read_all(10) == []
        assert account.state.campaign_counts("c1") == Counts(sent=200, complaint=1, unsubscribe=2)


def test_a_bounce_whose_send_never_comes_is_judged_once_no_send_that_counts_can_come() -> None:
    """40 hard bounces of a campaign whose sends were never published (or too late to count): kept out while a
    send could still come, judged (40 of 0 sent, against the minimum volume) once the account's time passes the
    latest bounce's hour by the clock skew plus the longest window."""
    account = Partitions()
    account.publish(*(dsn(i, "c9") for i in range(40)))
    assert account.read(sends=40) == []
    account.publish(sent(0, "c10", T0 + WAIT))  # the account's next event, at the bound: still waiting
    assert account.read(sends=1) == []
    account.publish(sent(1, "c10", T0 + WAIT + timedelta(hours=1)))
    [suspension] = account.read(sends=1)
    assert suspension.payload.scope is not None and suspension.payload.scope.campaign_id == "c9"
    assert judged_counts(suspension).hard_bounces == 40
    assert account.state.awaiting_facts == []
    account.publish(*(sent(i, "c9") for i in range(40)))  # a send after all: nothing is released twice
    account.read(sends=40)
    assert account.state.campaign_counts("c9").hard_bounce == 40


def test_in_an_account_with_no_later_event_the_sends_partitions_time_ends_the_wait() -> None:
    """The processor judges such an account again once its sends' partition has been read past the bound (its log
    time: the wall clock when caught up), passing that time as `clock`."""
    state, facts = AccountState(), dict[str, Any]()
    items = [Input(dsn(i, "c9"), SENDS, i, int(T0.timestamp())) for i in range(40)]
    assert suspensions(decide(ACCOUNT, state, items, facts, Lists(), POLICY, set(), T0)) == []
    until = state.awaiting_facts_until(POLICY)
    assert until is not None and until > int((T0 + WAIT).timestamp())
    assert suspensions(decide(ACCOUNT, state, [], facts, Lists(), POLICY, set(), T0, clock=until)) == []
    [suspension] = suspensions(decide(ACCOUNT, state, [], facts, Lists(), POLICY, set(), T0, clock=until + 1))
    assert judged_counts(suspension).hard_bounces == 40 and state.awaiting_facts_until(POLICY) is None


def suspensions(decision: Any) -> list[AccountSuspended]:
    return [e for e in decision.announcements if isinstance(e, AccountSuspended)]


def test_facts_about_mail_the_index_may_have_forgotten_are_judged_at_once_as_before() -> None:
    """An unsubscribe about a campaign the account has not counted, and a complaint about a campaign that began
    sending more than the longest window before it: their sends may be forgotten, not unread."""
    account = Partitions()
    account.publish(*(unsubscribed(i, "c-old") for i in range(2)))  # 2 of 0 sent, against 100: 2% > 1%
    [suspension] = account.read(unsubscribes=2)
    assert suspension.payload.metric == "unsubscribe_rate"

    account = Partitions()
    later = T0 + timedelta(days=8)
    account.publish(*(sent(i, "c2") for i in range(200)), sent(200, "c2", later), complained(0, "c2", later),
                    complained(1, "c2", later))
    account.read(sends=200)
    for key in [k for k in account.facts if k.startswith("s:")]:  # swept: older than the longest window
        del account.facts[key]
    [suspension] = account.read(sends=3)  # 2 of 201 (~1%) > 0.5%
    assert suspension.payload.metric == "abuse_rate" and judged_counts(suspension).complaints == 2

    # The index was full and forgot the account's facts early (HERALD_COMPLIANCE_MAX_FACTS): a bounce whose send
    # is not in it may be about one of them, which never comes again; waiting would hold a breach back a week.
    full = AccountState(forgotten_until=int((T0 + timedelta(minutes=1)).timestamp()))
    account = Partitions(full)
    account.publish(*(dsn(i, "c3") for i in range(9)))
    [suspension] = account.read(sends=9)  # 9 of the minimum volume of 100: 9% >= 8%
    assert suspension.payload.metric == "hard_bounce_rate" and account.state.awaiting_facts == []


def test_waiting_facts_and_their_notes_are_kept_with_the_state_and_a_reinstatement_ends_the_wait() -> None:
    account = Partitions()
    account.publish(*(dsn(i) for i in range(3)), *(sent(i) for i in range(100)))
    account.read(sends=3)
    state = account.state
    assert state.awaiting_facts == [["hard_bounce", POLICY.bucket(int(dsn(0).occurred_at.timestamp())), "c1", 3]]
    assert AccountState.from_json(state.to_json()).awaiting_facts == state.awaiting_facts
    assert "af" not in AccountState().to_json() and "cf" not in AccountState().to_json()
    state.suspension = {"event_id": suspension_id(ACCOUNT, 0), "metric": "hard_bounce_rate"}
    reinstated = AccountReinstated(**env(T0 + timedelta(minutes=5)), payload={
        "reinstated_by": "staff", "reason": "reviewed", "suspension_event_id": suspension_id(ACCOUNT, 0)})
    decide(ACCOUNT, state, [Input(reinstated, "herald.compliance:2", 0, None)], account.facts, Lists(), POLICY, set(),
           T0)
    assert state.awaiting_facts == []  # in the baseline, with every count: never judged
    account.stored = state.to_json()
    account.read(sends=100)  # the sends, from before the reinstatement: their bounces stay out
    assert account.state.campaign_counts("c1") == Counts(sent=100)
    assert account.state.campaign_counts("c1", raw=True) == Counts(sent=100, hard_bounce=3)


@settings(max_examples=60, deadline=None)
@given(hard=st.integers(0, 24), complaints=st.integers(0, 2), unsubscribes=st.integers(0, 3),
       early=st.integers(0, 2 ** 30 - 1), republished=st.integers(0, 20),
       batch=st.integers(1, 120), seed=st.integers(0, 2 ** 32))
def test_the_same_facts_in_any_order_give_the_same_suspension_once_every_send_is_read(
        hard: int, complaints: int, unsubscribes: int, early: int, republished: int, batch: int,
        seed: int) -> None:
    """200 messages, each reported on at most once (hard bounce, complaint, unsubscribe). The reference order is
    every send, then every report (each report after its send: the in-order stream). Any report may instead come
    anywhere before its own send (that send republished after it), some events twice, and the two partitions are
    read in any batches: the account is suspended exactly when the reference suspends it (16 hard bounces = 8%,
    2 complaints = 1% > 0.5%, 3 unsubscribes = 1.5% > 1%), once, judged against all 200 sends."""
    rnd = random.Random(seed)  # the orders and batches: many draws, kept out of hypothesis' own data
    messages = list(range(200))
    rnd.shuffle(messages)
    reports: list[tuple[int, Event]] = []
    for n, i in enumerate(messages[:hard + complaints + unsubscribes]):
        report: Event = dsn(i) if n < hard else complained(i) if n < hard + complaints else unsubscribed(i)
        reports.append((i, report))
    sends = [sent(i) for i in range(200)]
    deliveries: list[Event] = list(sends)
    for n, (i, report) in enumerate(reports):
        if isinstance(report, SubscriberUnsubscribed):
            continue
        if early >> n & 1:  # before its send
            deliveries.insert(rnd.randint(0, deliveries.index(sends[i])), report)
        else:
            deliveries.append(report)
    for _ in range(republished):
        at = rnd.randrange(len(deliveries))
        deliveries.insert(rnd.randint(at + 1, len(deliveries)), deliveries[at])
    account = Partitions()
    account.publish(*deliveries, *(report for _, report in reports if isinstance(report, SubscriberUnsubscribed)))

    found = []
    while any(account.read_to[s] < len(account.logs[s]) for s in account.logs):
        found += account.read(rnd.randint(0, batch), rnd.randint(0, 3))

    assert account.state.campaign_counts("c1") == Counts(sent=200, hard_bounce=hard, complaint=complaints,
                                                         unsubscribe=unsubscribes)
    breached = hard >= 16 or complaints >= 2 or unsubscribes >= 3
    assert len(found) == (1 if breached else 0)
    if breached:
        assert judged_counts(found[0]).sent == 200


def test_a_bounce_that_never_left_herald_counts_for_nothing_whatever_its_class() -> None:
    """`local` (5.6.7: the relay's path cannot carry the address): no receiving server refused it, so it is no
    hard bounce of the account's, nor a fact waiting for a send that will never come."""
    from herald_compliance.domain import facts_of

    local = MessageBounced(**env(T0), payload={**ref(0, "c1"), "bounce_class": "hard", "smtp_code": 553,
                                               "diagnostic": "5.6.7", "source": "local"})
    assert facts_of(local) == []
