"""The compliance rules as the processor applies them, without faust or Kafka: `domain.decide` folds an account's
inputs into its state, facts and lists, and says what to announce (PRODUCT.md, "Sending suspension"; "Lists and
subscribers", one-off sending)."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from herald_compliance.domain import (
    ACTED_ON,
    AccountState,
    Counts,
    Forgetting,
    Input,
    ListRecord,
    Policy,
    decide,
    default_rules,
    eviction_cutoff,
    facts_of,
    plan_forgetting,
    suspension_id,
)
from herald_shared.contract import EVENT_TYPES, Event
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended, AccountWarned
from herald_shared.contract.delivery import (
    ComplaintReceived,
    LinkClicked,
    MessageBounced,
    MessageOpened,
    MessageSent,
)
from herald_shared.contract.subscriptions import ListCreated, ListDeleted, SubscriberAdded, SubscriberUnsubscribed

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
POLICY = Policy(default_rules(), minimum_sent=100, one_off_minimum_members=20)
ACCOUNT = "acc-d1"


class Lists(dict[str, ListRecord]):
    def get(self, list_id: str, default: Any = None) -> ListRecord:  # type: ignore[override]
        return ListRecord.from_json(super().get(list_id, ListRecord()).to_json())  # a copy, as the table gives

    def put(self, list_id: str, record: ListRecord) -> None:
        self[list_id] = record


class Account:
    """One account's state, facts and lists, and the offsets its inputs get (one source per topic)."""

    def __init__(self) -> None:
        self.state, self.facts, self.lists = AccountState(), dict[str, Any](), Lists()
        self.offsets: dict[str, int] = {}
        self.announced: set[str] = set()

    def input(self, event: Event, *, source: str | None = None, offset: int | None = None,
              produced_at: datetime | None = None) -> Input:
        source = source or f"{event.topic}:0"
        if offset is None:
            offset = self.offsets[source] = self.offsets.get(source, -1) + 1
        return Input(event, source, offset, int((produced_at or event.occurred_at).timestamp()))

    def decide(self, *inputs: Input | Event) -> Any:
        items = [i if isinstance(i, Input) else self.input(i) for i in inputs]
        decision = decide(ACCOUNT, self.state, items, self.facts, self.lists, POLICY, self.announced, NOW)
        self.announced |= {str(e.event_id) for e in decision.announcements}
        return decision


def env(at: datetime = T0) -> dict[str, Any]:
    return {"account_id": ACCOUNT, "producer": "test", "occurred_at": at}


def sent(i: int, campaign: str = "c1", list_id: str | None = "l1", kind: str = "campaign") -> MessageSent:
    return MessageSent(**env(), payload={"message_id": f"{campaign}-m{i}", "campaign_id": campaign, "kind": kind,
                                         "subscriber_id": f"s{i}", "list_id": list_id,
                                         "recipient_domain": "example.com", "smtp_code": 250})


def bounced(i: int, campaign: str = "c1") -> MessageBounced:
    return MessageBounced(**env(), payload={"message_id": f"{campaign}-m{i}", "campaign_id": campaign,
                                            "subscriber_id": f"s{i}", "list_id": "l1", "bounce_class": "hard",
                                            "smtp_code": 550, "diagnostic": "5.1.1", "source": "dsn"})


def reinstated(suspension: str | None) -> AccountReinstated:
    return AccountReinstated(**env(), payload={"reinstated_by": "staff", "reason": "reviewed",
                                               "suspension_event_id": suspension})


def outcomes(decision: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for (_, _, outcome), n in decision.outcomes.items():
        found[outcome] = found.get(outcome, 0) + n
    return found


def test_every_event_the_rules_read_is_acted_on_and_no_other_event_changes_anything() -> None:
    """The processor passes over, unparsed, every type not in ACTED_ON; so no other type may change the state."""
    assert set(ACTED_ON) <= set(EVENT_TYPES.values())
    opened = MessageOpened(**env(), payload={"message_id": "c1-m1", "campaign_id": "c1", "subscriber_id": "s1",
                                             "list_id": "l1", "client": {"device": "mobile"}})
    assert MessageOpened not in ACTED_ON and facts_of(opened) == []
    # Opens and clicks (a mail scanner's among them: issue 20) never reach the suspension rules.
    assert LinkClicked not in ACTED_ON
    account = Account()
    before = account.state.to_json()
    decision = account.decide(opened)
    assert outcomes(decision) == {"ignored": 1} and decision.announcements == []
    assert {**account.state.to_json(), "w": {}} == {**before, "w": {}}  # only the watermark moved


def test_a_breach_is_announced_once_with_its_evidence_and_recorded_in_the_state() -> None:
    account = Account()
    decision = account.decide(*(sent(i) for i in range(100)), *(bounced(i) for i in range(8)))
    assert outcomes(decision) == {"counted": 108}
    [suspension] = [e for e in decision.announcements if isinstance(e, AccountSuspended)]
    assert str(suspension.event_id) == suspension_id(ACCOUNT, 0)
    assert suspension.payload.metric == "hard_bounce_rate" and suspension.payload.counts.hard_bounces == 8
    assert account.state.suspension is not None and account.state.suspension["at"] == NOW.isoformat()
    again = account.decide(*(bounced(i) for i in range(8, 12)))
    assert not [e for e in again.announcements if isinstance(e, AccountSuspended)]  # one per epoch


def test_a_suspension_already_on_the_topic_is_not_announced_again_after_a_lost_state() -> None:
    """After a crash the state may be older than the topic: `announced` (read from the topic) wins."""
    account = Account()
    account.announced.add(suspension_id(ACCOUNT, 0))
    decision = account.decide(*(sent(i) for i in range(100)), *(bounced(i) for i in range(8)))
    assert decision.announcements == []


def test_a_record_replayed_after_a_restart_and_a_fact_reported_twice_are_not_counted_again() -> None:
    account = Account()
    first = account.input(sent(1))
    assert outcomes(account.decide(first)) == {"counted": 1}
    assert outcomes(account.decide(first)) == {"replayed": 1}  # same record: the watermark says it is in
    assert outcomes(account.decide(sent(1))) == {"duplicate": 1}  # the same message published twice
    assert account.state.campaign_counts("c1").sent == 1


def test_a_fact_published_more_than_the_longest_window_after_it_happened_is_late() -> None:
    account = Account()
    old = sent(1)
    item = account.input(old, produced_at=T0 + timedelta(seconds=POLICY.longest_window_seconds + 1))
    assert outcomes(account.decide(item)) == {"late": 1}
    assert account.state.campaign_counts("c1").sent == 0


def sent_at(i: int, at: datetime) -> MessageSent:
    return MessageSent(**env(at), payload={"message_id": f"c1-m{i}", "campaign_id": "c1", "kind": "campaign",
                                           "subscriber_id": f"s{i}", "list_id": "l1",
                                           "recipient_domain": "example.com", "smtp_code": 250})


def test_after_the_index_forgot_facts_early_a_fact_of_that_time_it_no_longer_remembers_is_late() -> None:
    """The fact index was full and forgot the hour before T0 (processor.limit_facts): a send of that hour it
    still remembers is judged as usual, one it forgot could be a duplicate so it is late, never counted twice;
    facts after that time count as ever."""
    account = Account()
    early = [sent_at(i, T0 - timedelta(minutes=30)) for i in range(4)]
    assert outcomes(account.decide(*early)) == {"counted": 4}
    forgotten_until = int((T0 - timedelta(minutes=1)).timestamp())
    del account.facts["s:c1-m0"], account.facts["s:c1-m1"]  # forgotten; m2 and m3 still remembered
    account.state.forgotten_until = forgotten_until
    account.state = AccountState.from_json(account.state.to_json())  # it is kept in the table value
    assert account.state.forgotten_until == forgotten_until
    decision = account.decide(*(sent_at(i, T0 - timedelta(minutes=30)) for i in range(4)),  # republished
                              sent_at(9, T0 - timedelta(minutes=20)),  # never seen, but of the forgotten time
                              sent_at(10, T0), sent_at(2, T0 - timedelta(minutes=30)))
    assert outcomes(decision) == {"late": 3, "duplicate": 3, "counted": 1}
    assert account.state.campaign_counts("c1").sent == 5


def test_the_oldest_whole_hours_are_forgotten_until_enough_are() -> None:
    per_hour = {100: 5, 102: 10, 101: 3}
    assert eviction_cutoff(per_hour, 0) is None and eviction_cutoff({}, 5) is None
    assert eviction_cutoff(per_hour, 1) == 101  # hour 100 (5 facts) is enough
    assert eviction_cutoff(per_hour, 6) == 102  # hours 100 and 101
    assert eviction_cutoff(per_hour, 18) == 103  # all of them
    assert eviction_cutoff(per_hour, 50) == 103  # not that many: every one


def test_a_full_worker_forgets_its_own_oldest_hours_but_never_recent_ones_nor_for_standby_copies() -> None:
    """processor.limit_facts' plan: down to 90% of the limit, oldest own hours first; the hours from
    `keep_from_hour` on are kept; standby copies (held but not owned) are their owners' to forget."""
    own = {100: 50, 101: 30, 102: 40}
    # Over the limit with its own facts only: hour 100 (50 facts) brings 120 down to 70 <= 90.
    assert plan_forgetting(own, held=120, max_facts=100, keep_from_hour=200) == Forgetting(101, True)
    # Within the limit: nothing.
    assert plan_forgetting(own, held=120, max_facts=200, keep_from_hour=200) == Forgetting(None, True)
    # Standby copies fill the limit: the worker's own facts cannot make room; it forgets the old ones it may
    # and says it stays over.
    assert plan_forgetting({100: 10, 105: 10}, held=200, max_facts=100, keep_from_hour=105) == Forgetting(105, False)
    # A burst of recent facts: nothing of the last hours goes, however full.
    assert plan_forgetting({200: 150}, held=150, max_facts=100, keep_from_hour=200) == Forgetting(None, False)
    assert plan_forgetting({}, held=150, max_facts=100, keep_from_hour=200) == Forgetting(None, False)


def test_only_the_named_or_current_suspension_is_lifted_by_a_reinstatement() -> None:
    account = Account()
    account.decide(*(sent(i) for i in range(100)), *(bounced(i) for i in range(8)))
    current = suspension_id(ACCOUNT, 0)
    assert outcomes(account.decide(reinstated("an-older-suspension"))) == {"ignored": 1}
    assert account.state.suspension is not None
    assert outcomes(account.decide(reinstated(current))) == {"counted": 1}
    assert account.state.suspension is None and account.state.epoch == 1
    assert outcomes(account.decide(reinstated(None))) == {"ignored": 1}  # not suspended: nothing to lift
    assert account.state.epoch == 1


def test_counts_restart_for_the_rules_after_a_reinstatement() -> None:
    account = Account()
    account.decide(*(sent(i) for i in range(100)), *(bounced(i) for i in range(8)))
    account.decide(reinstated(None))
    decision = account.decide(*(bounced(i) for i in range(8, 16)))  # bounces of mail sent before it
    assert decision.announcements == [] and account.state.suspension is None
    assert account.state.campaign_counts("c1", raw=True).hard_bounce == 16


# After a reinstatement: mail and what comes back about it, each message to its own subscriber.
REINSTATED_AT = T0 + timedelta(hours=1)


def message(campaign: str, i: int) -> dict[str, Any]:
    return {"message_id": f"{campaign}-m{i}", "campaign_id": campaign, "subscriber_id": f"{campaign}-s{i}",
            "list_id": "l1"}


def mail(campaign: str, i: int, at: datetime) -> MessageSent:
    return MessageSent(**env(at), payload={**message(campaign, i), "recipient_domain": "example.com",
                                           "smtp_code": 250})


def dsn(campaign: str, i: int, at: datetime) -> MessageBounced:
    return MessageBounced(**env(at), payload={**message(campaign, i), "bounce_class": "hard", "smtp_code": 550,
                                              "diagnostic": "5.1.1", "source": "dsn"})


def complained(campaign: str, i: int, at: datetime) -> ComplaintReceived:
    return ComplaintReceived(**env(at), payload={**message(campaign, i), "feedback_type": "abuse",
                                                 "reporting_domain": "isp.example"})


def unsubscribed(campaign: str, i: int, at: datetime) -> SubscriberUnsubscribed:
    return SubscriberUnsubscribed(**env(at), payload={"list_id": "l1", "subscriber_id": f"{campaign}-s{i}",
                                                      "source": "one_click", "campaign_id": campaign,
                                                      "message_id": f"{campaign}-m{i}"})


def reinstated_account() -> Account:
    """c1: 100 sent and 8 hard bounces (8%), suspended; then staff reinstate."""
    account = Account()
    account.decide(*(mail("c1", i, T0) for i in range(100)), *(dsn("c1", i, T0) for i in range(8)))
    account.decide(AccountReinstated(**env(REINSTATED_AT), payload={
        "reinstated_by": "staff", "reason": "reviewed", "suspension_event_id": suspension_id(ACCOUNT, 0)}))
    assert account.state.epoch == 1 and account.state.suspension is None
    return account


def suspensions(*decisions: Any) -> list[AccountSuspended]:
    return [e for d in decisions for e in d.announcements if isinstance(e, AccountSuspended)]


def test_after_a_reinstatement_facts_processed_before_their_send_count_once_it_comes() -> None:
    """A new campaign after a reinstatement: its bounces, complaints or unsubscribes processed before their
    MessageSent (topics are read in no set order; a MessageSent may be republished after its DSN), in the same
    batch or an earlier one, are judged as when the sends come first. Boundaries stay exact: 8 hard bounces of
    100 (8.00%) suspend, 7 do not; 1 complaint (1% > 0.5%); 2 unsubscribes (2% > 1%), 1 does not."""
    later = REINSTATED_AT + timedelta(hours=1)
    sends = [mail("c3", i, later) for i in range(100)]
    cases: list[tuple[list[Event], str | None, Counts]] = [
        ([dsn("c3", i, later + timedelta(seconds=5)) for i in range(8)], "hard_bounce_rate",
         Counts(sent=100, hard_bounce=8)),
        ([dsn("c3", i, later + timedelta(seconds=5)) for i in range(7)], None, Counts(sent=100, hard_bounce=7)),
        ([complained("c3", 0, later + timedelta(hours=1))], "abuse_rate", Counts(sent=100, complaint=1)),
        ([unsubscribed("c3", i, later + timedelta(minutes=1)) for i in range(2)], "unsubscribe_rate",
         Counts(sent=100, unsubscribe=2)),
        ([unsubscribed("c3", 0, later + timedelta(minutes=1))], None, Counts(sent=100, unsubscribe=1)),
    ]
    for facts, metric, judged in cases:
        for batches in ([sends + facts], [facts + sends], [facts, sends], [sends, facts]):
            account = reinstated_account()
            found = suspensions(*(account.decide(*batch) for batch in batches))
            context = (metric, [len(b) for b in batches], [type(b[0]).__name__ for b in batches])
            assert account.state.campaign_counts("c3") == judged, context
            assert account.state.window_counts(24, POLICY) == judged, context
            if metric is None:
                assert found == [] and account.state.suspension is None, context
            else:
                [suspended] = found
                assert suspended.payload.metric == metric and suspended.payload.scope.campaign_id == "c3", context
                assert suspended.payload.counts.sent == 100, context


def test_a_fact_about_mail_sent_before_the_reinstatement_stays_out_of_the_rules_in_any_order() -> None:
    """Its send was counted before the reinstatement, or is no longer remembered and never comes: the fact shows
    in the raw totals only, whichever is processed first."""
    later = REINSTATED_AT + timedelta(hours=1)
    old = [dsn("c1", i, later) for i in range(8, 40)] + [complained("c1", 40, later), unsubscribed("c1", 41, later),
                                                          complained("c1", 999, later)]  # c1-m999: never seen
    new = [mail("c3", i, later) for i in range(100)]
    for order in (old + new, new + old):
        account = reinstated_account()
        assert suspensions(account.decide(*order)) == []
        assert account.state.window_counts(24, POLICY) == Counts(sent=100)
        assert account.state.campaign_counts("c1") == Counts()
        assert account.state.campaign_counts("c1", raw=True) == Counts(sent=100, hard_bounce=40, complaint=2,
                                                                       unsubscribe=1)


def test_a_send_from_before_the_reinstatement_read_after_it_leaves_its_facts_out_in_any_order() -> None:
    """A MessageSent of mail sent before staff reinstated the account, read only after it (its partition behind, a
    republish), is still mail from before: a complaint about it stays out of the rules whether it is read before or
    after the send."""
    sent_at = REINSTATED_AT - timedelta(minutes=30)
    sends = [mail("c2", i, sent_at) for i in range(100)]
    complaint = [complained("c2", 0, REINSTATED_AT + timedelta(minutes=5))]
    for batches in ([complaint, sends], [sends, complaint]):
        account = reinstated_account()
        assert suspensions(*(account.decide(*b) for b in batches)) == []
        assert account.state.campaign_counts("c2").complaint == 0
        assert account.state.campaign_counts("c2", raw=True).complaint == 1


@settings(max_examples=80, deadline=None)
@given(resumed=st.integers(0, 100), hard=st.integers(0, 10), complaints=st.integers(0, 1),
       unsubscribes=st.integers(0, 2), republished=st.integers(0, 30), batch=st.integers(1, 80),
       rnd=st.randoms(use_true_random=False))
def test_after_a_reinstatement_the_same_facts_in_any_order_and_batches_give_the_same_suspension(
        resumed: int, hard: int, complaints: int, unsubscribes: int, republished: int, batch: int,
        rnd: random.Random) -> None:
    """PRODUCT.md "Sending suspension", after staff lift it: 100 messages go out, `resumed` of them the held rest of
    the suspended campaign c1 (delivery sends it on reinstatement), the others a new campaign c3; some bounce, are
    complained about or unsubscribed from; late reports about c1's mail from before the reinstatement come too, and
    some events are published twice. However they are ordered and cut into batches, the rules judge exactly the
    new mail's facts, and the account is suspended (once) exactly when those breach a threshold."""
    later = REINSTATED_AT + timedelta(minutes=30)
    ids = [("c1", 100 + i) if i < resumed else ("c3", i) for i in range(100)]
    at = {m: later + timedelta(seconds=97 * n) for n, m in enumerate(ids)}  # over ~3 hours: several buckets
    events: list[Event] = [mail(c, i, at[c, i]) for c, i in ids]
    reply = timedelta(minutes=10)
    events += [dsn(c, i, at[c, i] + reply) for c, i in ids[:hard]]
    events += [complained(c, i, at[c, i] + reply) for c, i in ids[hard:hard + complaints]]
    events += [unsubscribed(c, i, at[c, i] + reply) for c, i in ids[hard + complaints:hard + complaints + unsubscribes]]
    events += [dsn("c1", i, later) for i in range(8, 20)] + [complained("c1", 20, later),
                                                              unsubscribed("c1", 21, later),
                                                              complained("c1", 999, later)]  # c1-m999: never seen
    events += [rnd.choice(events) for _ in range(republished)]
    rnd.shuffle(events)

    account = reinstated_account()
    found = suspensions(*(account.decide(*events[start:start + batch]) for start in range(0, len(events), batch)))

    judged = Counts(sent=100, hard_bounce=hard, complaint=complaints, unsubscribe=unsubscribes)
    assert account.state.window_counts(24, POLICY) == judged
    assert account.state.campaign_counts("c1") + account.state.campaign_counts("c3") == judged
    breached = hard >= 8 or complaints >= 1 or unsubscribes >= 2
    assert len(found) == (1 if breached else 0)
    assert (account.state.suspension is not None) == breached
    if breached:  # judged against the minimum volume (100) until then, it may come before all 100 are in
        assert found[0].payload.counts.sent <= 100


def test_a_list_counts_as_sent_to_at_its_campaigns_first_accepted_message_and_tests_do_not() -> None:
    account = Account()
    account.decide(sent(1, kind="test"), sent(2, list_id=None))
    assert account.lists.get("l1").last_sent_at is None and account.state.campaign_lists == {}
    account.decide(sent(3), sent(4))
    assert account.lists.get("l1").campaigns == ["c1"] and account.state.campaign_lists == {"c1": "l1"}
    account.decide(sent(1, campaign="c2"))
    assert account.lists.get("l1").campaigns == ["c1", "c2"]


def members(list_id: str, ids: range, at: datetime = T0, *, create: bool = True) -> list[Event]:
    events: list[Event] = [ListCreated(**env(at), payload={"list_id": list_id, "name": list_id, "opt_in": "single"})]
    for i in ids:
        address = f"person{i}@example.com"
        events.append(SubscriberAdded(**env(at), payload={
            "list_id": list_id, "subscriber_id": f"{list_id}-s{i}", "email": address,
            "email_sha256": hashlib.sha256(address.encode()).hexdigest(), "opt_in": "single",
            "consent": {"source": "import", "collected_at": "2026-11-01T00:00:00Z", "method": "test"}}))
    return events if create else events[1:]


def sent_to(list_id: str, campaign: str, at: datetime, people: range = range(1)) -> list[MessageSent]:
    return [MessageSent(**env(at), payload={"message_id": f"{campaign}-m{i}", "campaign_id": campaign,
                                            "subscriber_id": f"{list_id}-s{i}", "list_id": list_id,
                                            "recipient_domain": "example.com", "smtp_code": 250}) for i in people]


def one_off_after_a_spare_list(filled_at: datetime) -> list[Any]:
    """A spare list created empty first; "bought" filled, sent once, deleted; then the spare filled with the same
    addresses at `filled_at` (unless that is before the send) and sent: what is announced, batch by batch."""
    account, hour = Account(), timedelta(hours=1)
    found = [account.decide(*members("spare", range(0)))]
    found.append(account.decide(*members("bought", range(100))))
    if filled_at < T0 + hour:
        found.append(account.decide(*members("spare", range(100), filled_at, create=False)))
    found.append(account.decide(*sent_to("bought", "blast", T0 + hour, range(100))))
    found.append(account.decide(ListDeleted(**env(T0 + 2 * hour), payload={"list_id": "bought",
                                                                           "members_at_deletion": 100})))
    if filled_at >= T0 + hour:
        found.append(account.decide(*members("spare", range(100), filled_at, create=False)))
    found.append(account.decide(*sent_to("spare", "next", T0 + 4 * hour)))
    return [e for decision in found for e in decision.announcements]


def test_a_spare_list_created_before_the_send_and_filled_after_the_deletion_is_one_off_sending() -> None:
    [warning] = one_off_after_a_spare_list(filled_at=T0 + timedelta(hours=3))
    assert isinstance(warning, AccountWarned) and warning.payload.metric == "one_off_sending"
    assert warning.payload.evidence["deleted_list_id"] == "bought"
    assert warning.payload.evidence["new_list_id"] == "spare"


def test_a_list_holding_the_addresses_before_the_send_is_a_second_list_and_not_flagged() -> None:
    assert one_off_after_a_spare_list(filled_at=T0 + timedelta(minutes=30)) == []


def test_a_list_deleted_after_one_send_then_recreated_is_flagged_once_as_one_off_sending() -> None:
    account = Account()
    account.decide(*members("bought", range(100)))
    account.decide(*(sent(i, list_id="bought") for i in range(100)))
    account.decide(ListDeleted(**env(), payload={"list_id": "bought", "members_at_deletion": 100}))
    assert "bought" in account.state.deleted_lists
    assert account.decide(*members("other", range(1000, 1050))).announcements == []
    [warning] = account.decide(*members("again", range(5, 100))).announcements
    assert isinstance(warning, AccountWarned) and warning.payload.metric == "one_off_sending"
    assert warning.payload.evidence["deleted_list_id"] == "bought"
    assert warning.payload.evidence["new_list_id"] == "again"
    assert account.lists.get("again").flagged == ["bought"]
    assert account.decide(*members("again", range(100, 110))).announcements == []  # flagged once


def notice(i: int) -> MessageSent:
    return MessageSent(**env(), payload={"message_id": f"n{i}", "kind": "account_notice",
                                         "recipient_domain": "acme.example", "smtp_code": 250})


def test_notices_to_the_customers_own_mailbox_do_not_dilute_the_rolling_windows() -> None:
    """Campaigns each too small to decide (50 sent, minimum 100) add up in the windows: 8 hard bounces of 100 sent
    suspend. Ten account notices on top are no sending of the account's (8 of 110 would not)."""
    def run(notices: int) -> tuple[Any, AccountState]:
        account = Account()
        decision = account.decide(*(sent(i, campaign=f"c{c}") for c in range(2) for i in range(50)),
                                  *(bounced(i, campaign=f"c{c}") for c in range(2) for i in range(4)),
                                  *(notice(i) for i in range(notices)))
        return decision, account.state

    for notices in (0, 10):
        decision, state = run(notices)
        assert state.window_counts(24, POLICY).sent == 100
        [suspended] = decision.announcements
        assert isinstance(suspended, AccountSuspended), notices
        assert suspended.payload.scope.window == "24h" and suspended.payload.counts.sent == 100
        assert suspended.payload.counts.hard_bounces == 8
    assert outcomes(run(10)[0])["ignored"] == 10


def test_a_message_herald_never_handed_to_the_relay_counts_toward_no_rate() -> None:
    """MessageBounced `local` (an address the relay's path cannot carry, 5.6.7): neither a send (the rates'
    denominator) nor a hard bounce nor a block."""
    never_left = bounced(1).model_copy(update={"payload": bounced(1).payload.model_copy(update={
        "source": "local", "bounce_class": "undetermined", "enhanced_status_code": "5.6.7"})})
    assert facts_of(never_left) == []
    refused = bounced(1).model_copy(update={"payload": bounced(1).payload.model_copy(update={"source": "smtp_reply"})})
    assert [f.kind for f in facts_of(refused)] == ["sent", "hard_bounce"]
