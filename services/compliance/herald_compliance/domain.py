"""Pure compliance rules: count sending outcomes per campaign and per rolling window exactly once, and decide
warnings and suspensions (PRODUCT.md, "Sending suspension"; "Lists and subscribers", one-off sending)."""

from __future__ import annotations

import bisect
import functools
import uuid
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Literal, Protocol

from herald_shared.contract import Event
from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.compliance import (
    AccountReinstated,
    AccountSuspended,
    AccountSuspendedPayload,
    AccountWarned,
    AccountWarnedPayload,
    RateCounts,
    RateScope,
)
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced, MessageSent
from herald_shared.contract.subscriptions import ListCreated, ListDeleted, SubscriberAdded, SubscriberUnsubscribed

PRODUCER = "compliance"  # the `producer` of what is announced
RateMetric = Literal["hard_bounce_rate", "abuse_rate", "unsubscribe_rate", "block_rate"]
FactKind = Literal["sent", "hard_bounce", "complaint", "unsubscribe", "block"]
# In the order counts are stored (a block count was added last: older stored counts simply lack it).
KINDS: tuple[FactKind, ...] = ("sent", "hard_bounce", "complaint", "unsubscribe", "block")
CAMPAIGNS_KEPT = 10  # a list remembers this many of the campaigns sent to it: enough to tell "few" (one-off)
# Unsubscribes the recipient made. Not counted: one caused by a complaint (already counted as the complaint) and
# one the customer made through the API (list hygiene, e.g. opt-outs synced from a CRM, must not count against it).
RECIPIENT_UNSUBSCRIBES = frozenset({"one_click", "unsubscribe_page", "preference_page", "mailto"})
# Messages that are not the account's sending, so count toward no rate (neither sent nor their bounces and
# complaints): a test send goes to the campaign author's own addresses, an account notice (a membership notice, the
# suspension email) to the customer's own mailbox. Counted, they would dilute the rates their recipients judge.
NOT_SENDING = frozenset({"test", "account_notice"})
_IDS = uuid.UUID("6f1d3c52-4b8e-4a57-9d0e-2f6c1b7a9e13")
# The events the rules read: facts (sent, bounced, complained, unsubscribed), the account's suspension and its
# lifting, lists and their members (one-off sending), and retention. Every other event of the input topics
# changes nothing here and is passed over by its `type` header, unparsed.
ACTED_ON: tuple[type[Event], ...] = (MessageSent, MessageBounced, ComplaintReceived, SubscriberUnsubscribed,
                                     AccountSuspended, AccountReinstated, ListCreated, SubscriberAdded, ListDeleted,
                                     AccountPurged)
# The topic that carries the sends, and with them bounces and complaints (one partition per account, in the order
# they happened). An unsubscribe travels on herald.subscriptions, read in no set order with it.
SENDS_TOPIC = "herald.delivery"


def decision_id(*parts: object) -> str:
    """Deterministic event id of an announcement: the same breach always yields the same id, so the output
    topic can be checked for it after a crash instead of trusting local state."""
    return str(uuid.uuid5(_IDS, "|".join(str(p) for p in parts)))


# --- facts ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One countable thing an event says. `key` identifies it across redeliveries and re-reports."""

    kind: FactKind
    key: str
    at: int  # event time, whole seconds since the epoch
    campaign_id: str | None
    sent_key: str | None = None  # the key of the "sent" fact of the message this one is about, when known


def event_time(event: Event, produced_at: int | None = None) -> int:
    """An event's time in whole seconds, capped at its Kafka record's timestamp (`produced_at`): an event cannot
    have happened after it was published, so a producer's clock running ahead cannot move the account's windows
    into the future (Kafka 4 refuses records stamped more than an hour ahead of the broker,
    `log.message.timestamp.after.max.ms`)."""
    at = int(event.occurred_at.timestamp())
    return at if produced_at is None else min(at, produced_at)


def facts_of(event: Event, produced_at: int | None = None) -> list[Fact]:
    """What an input event counts for. "Sent" means handed to a receiving server: a message accepted
    (MessageSent) or refused outright (a hard or soft bounce at SMTP time, or one given up after retries),
    so every bounce has its message in the denominator and a rate never exceeds 100%. Test sends and account
    notices count for nothing (`NOT_SENDING`). Facts carry the event's time capped at its record's (`event_time`)."""
    at = event_time(event, produced_at)
    if isinstance(event, MessageSent | MessageBounced | ComplaintReceived) and event.payload.kind in NOT_SENDING:
        return []
    match event:
        case MessageSent(payload=p):
            return [Fact("sent", f"s:{p.message_id}", at, p.campaign_id)]
        case MessageBounced(payload=p) if p.source == "local":
            return []  # never handed to a receiving server: neither sent nor refused by one, whatever its class
        case MessageBounced(payload=p):
            facts = []
            if p.source in ("smtp_reply", "retry_expired"):
                facts.append(Fact("sent", f"s:{p.message_id}", at, p.campaign_id))
            # Only a hard bounce says the address is invalid; a block says the receiver refused our mail
            # (PRODUCT.md: "its sending gets the platform's IPs or domains blocklisted"). Soft and
            # undetermined bounces are reported, never judged.
            if p.bounce_class == "hard":
                facts.append(Fact("hard_bounce", f"b:{p.message_id}", at, p.campaign_id, f"s:{p.message_id}"))
            elif p.bounce_class == "block":
                facts.append(Fact("block", f"k:{p.message_id}", at, p.campaign_id, f"s:{p.message_id}"))
            return facts
        case ComplaintReceived(payload=p) if p.feedback_type != "not-spam":
            return [Fact("complaint", f"c:{p.message_id}", at, p.campaign_id, f"s:{p.message_id}")]
        case SubscriberUnsubscribed(payload=p) if p.source in RECIPIENT_UNSUBSCRIBES:
            return [Fact("unsubscribe", f"u:{p.list_id}:{p.subscriber_id}", at, p.campaign_id,
                         f"s:{p.message_id}" if p.message_id else None)]
    return []


class FactMarkers(Protocol):
    """Where each fact was first seen: a dict in tests, a changelog-backed table in the processor."""

    def get(self, key: str) -> Any: ...

    def __setitem__(self, key: str, value: Any) -> None: ...


def claim(index: FactMarkers, fact: Fact, source: str, offset: int, epoch: int = 0) -> bool:
    """Whether this occurrence of a fact may be counted. The index remembers where each fact was first seen
    (and in which epoch: reinstatements so far); a replay of that same record (after a crash) may count again
    (the account state's watermark decides), any other record with the same fact is a duplicate."""
    first = index.get(fact.key)
    if first is None:
        index[fact.key] = [source, offset, fact.at, epoch]
        return True
    return list(first[:2]) == [source, offset]


def forgotten(index: FactMarkers, fact: Fact, state: AccountState) -> bool:
    """Whether a fact falls in the time whose facts the index forgot early, when it held more than the worker may
    keep (`eviction_cutoff`), and is not remembered: it cannot be told from a duplicate, so it is late, never
    counted twice. A fact still remembered is judged as usual."""
    return state.forgotten_until is not None and fact.at <= state.forgotten_until and index.get(fact.key) is None


def eviction_cutoff(facts_per_hour: Mapping[int, int], to_forget: int) -> int | None:
    """The first hour (seconds since the epoch // 3600) of facts to keep when `to_forget` of the remembered ones
    must go, oldest hours first and whole hours at a time; None when nothing needs to go. Facts of the hours
    before it are forgotten: at least `to_forget` of them, or every one when there are not that many."""
    if to_forget <= 0 or not facts_per_hour:
        return None
    gone = 0
    for hour in sorted(facts_per_hour):
        gone += facts_per_hour[hour]
        if gone >= to_forget:
            return hour + 1
    return max(facts_per_hour) + 1


@dataclass(frozen=True)
class Forgetting:
    cutoff: int | None  # the first hour of the worker's own facts kept; None: none to forget
    within_limit: bool  # whether the worker holds at most 90% of its limit once they are forgotten


def plan_forgetting(own_per_hour: Mapping[int, int], held: int, max_facts: int, keep_from_hour: int) -> Forgetting:
    """Which of a worker's own facts (counted per hour) to forget when it holds `held` facts, standby copies of
    other workers' partitions included, against `max_facts`: the oldest hours, until it holds 90% of the limit,
    but never an hour from `keep_from_hour` on (the recent facts that records in flight still need). Standby
    copies are their owners' to forget: when they alone fill the limit, this worker's facts cannot make room."""
    target = max_facts * 9 // 10
    own = sum(own_per_hour.values())
    cutoff = eviction_cutoff(own_per_hour, own - max(target - (held - own), 0))
    if cutoff is not None:
        cutoff = min(cutoff, keep_from_hour)
    forgotten = sum(n for hour, n in own_per_hour.items() if cutoff is not None and hour < cutoff)
    return Forgetting(cutoff if forgotten else None, held - forgotten <= target)


def sent_before(index: FactMarkers, fact: Fact, state: AccountState, policy: Policy) -> bool:
    """Whether the message a bounce, complaint or unsubscribe is about was sent before the account's latest
    reinstatement: such a fact stays in the raw totals but never counts towards a new suspension. (Before any
    reinstatement, one whose send is not read yet waits for it: `awaits_its_send`.)"""
    if fact.sent_key is None or state.epoch == 0:
        return False
    marker = index.get(fact.sent_key)
    if marker is None:
        # Its send is no longer remembered, so it is older than the dedupe horizon, or was never seen, or has not
        # been processed yet (another topic's partition, a MessageSent republished after its DSN): with a
        # reinstatement within that horizon, it is taken for one before it until its send comes (`set_aside`).
        return within_horizon_of_reinstatement(fact.at, state, policy)
    return len(marker) > 3 and marker[3] < state.epoch  # a marker without an epoch is from before epochs


def within_horizon_of_reinstatement(at: int, state: AccountState, policy: Policy) -> bool:
    """Whether a fact of time `at` whose send is not remembered may be about mail sent before the latest
    reinstatement: a send older than the dedupe horizon is forgotten, so only within it can the index tell."""
    return state.reinstated_at is not None and state.reinstated_at >= at - policy.longest_window_seconds


def sent_in_epoch(fact: Fact, state: AccountState) -> int:
    """The epoch a fact is claimed in: the current one, but for a send made before the latest reinstatement and
    read after it (its partition behind, a republished MessageSent), the one before: the bounces, complaints and
    unsubscribes about that message are then about mail sent before the reinstatement (`sent_before`)."""
    if fact.kind == "sent" and state.epoch > 0 and state.reinstated_at is not None and fact.at < state.reinstated_at:
        return state.epoch - 1
    return state.epoch


# The kinds of fact that name the message they are about (`Fact.sent_key`).
ABOUT_A_MESSAGE: tuple[FactKind, ...] = ("hard_bounce", "block", "complaint", "unsubscribe")
# How far a fact's time may lie before its own send's (different producers' clocks): a send later than this
# after the reinstatement's horizon can have no fact set aside waiting for it.
CLOCK_SKEW_SECONDS = 3600
# Reports receiving systems make about a delivery, within days of it: a DSN (relays give up retrying after about
# five days), a refusal, a feedback-loop complaint (sent when the recipient marks the message, nearly always soon
# after it arrived). Their send, if it was read, is still in the index (it remembers the longest window). Not an
# unsubscribe: people unsubscribe from mail of months ago, and its order with the sends is the consistent cut's.
PROMPT_REPORTS: tuple[FactKind, ...] = ("hard_bounce", "block", "complaint")


def awaits_its_send(index: FactMarkers, fact: Fact, state: AccountState, policy: Policy) -> bool:
    """Whether a bounce, complaint or unsubscribe whose send is not in the index is kept out of the rules until
    that send is read (`AccountState.await_send`): which of a message's events is processed first says nothing
    of what was sent (a MessageSent republished after its DSN), and judged before its send, a bounce weighs
    against the minimum volume instead of the campaign's sends. Only when the send, had it been read, would still
    be remembered: its campaign began sending within the longest window before the fact, or, for a campaign
    whose sends this account has not counted (or no campaign), the fact is a prompt report (`PROMPT_REPORTS`). An
    unsubscribe about such a campaign may be about mail sent long ago (a campaign's counts are forgotten 30 days
    after its last event): judged at once, as its send may be forgotten."""
    if fact.sent_key is None or index.get(fact.sent_key) is not None:
        return False
    if state.forgotten_until is not None and fact.at - policy.longest_window_seconds <= state.forgotten_until:
        # The index was full and forgot this account's facts of that time early: the send may be one of them,
        # and would never come (waiting would delay a real breach by the whole bound).
        return False
    started = state.campaign_started.get(fact.campaign_id) if fact.campaign_id else None
    if started is not None:
        return started > fact.at - policy.longest_window_seconds
    return fact.kind in PROMPT_REPORTS


def awaited_until(at: int, policy: Policy) -> int:
    """The time after which a fact of time `at` waiting for its send is judged without it: its send is no later
    than `at` plus the clock skew, and a send published more than the longest window after it happened is late,
    never counted; so past that, no send that counts can come, and waiting longer would hide the fact for good
    while judging it sooner could still judge it before its send (the order-dependence the wait is for)."""
    return at + CLOCK_SKEW_SECONDS + policy.longest_window_seconds


def set_aside_key(kind: FactKind, campaign_id: str | None, sent_key: str) -> str:
    """The index key of the note that a fact of this kind and campaign was set aside, as about mail sent before
    the reinstatement, only because its send (`sent_key`) had not been seen yet."""
    return f"w:{kind}:{campaign_id or ''}|{sent_key}"


def set_aside(index: FactMarkers, fact: Fact, source: str, offset: int, epoch: int) -> None:
    """Note a fact excluded from the rules because its send was not in the index: if the send comes in this
    epoch, the fact was about mail sent after the reinstatement (or is no longer waiting for its send), and
    counts after all (`awaited_by`)."""
    assert fact.sent_key is not None
    index[set_aside_key(fact.kind, fact.campaign_id, fact.sent_key)] = [source, offset, fact.at, epoch]


def awaited_by(index: FactMarkers, send: Fact, state: AccountState,
               policy: Policy) -> list[tuple[FactKind, str | None, int]]:
    """The facts (kind, campaign, time) set aside in this epoch until `send`, claimed now, came: about mail sent
    after the reinstatement, or waiting for their send (`awaits_its_send`) and not judged without it yet. Their
    campaign is the send's (an unsubscribe may name none)."""
    reinstated_at = state.reinstated_at if state.epoch > 0 else None
    if reinstated_at is not None and send.at < reinstated_at:
        return []  # a send from before the reinstatement, read after it, leaves its facts out as they were
    after_reinstatement = reinstated_at is not None and \
        send.at <= reinstated_at + policy.longest_window_seconds + CLOCK_SKEW_SECONDS
    if not after_reinstatement and not state.awaiting_facts:
        return []  # nothing can be waiting for it: the common send costs no look-up
    campaigns = (send.campaign_id, None) if send.campaign_id else (None,)
    found: list[tuple[FactKind, str | None, int]] = []
    for kind in ABOUT_A_MESSAGE:
        for campaign in campaigns if kind == "unsubscribe" else campaigns[:1]:
            note = index.get(set_aside_key(kind, campaign, send.key))
            if note is None or len(note) <= 3 or note[3] != state.epoch:
                continue
            if state.awaits(kind, campaign, note[2], policy) or after_reinstatement:
                found.append((kind, campaign, note[2]))
    return found


# --- counts and rates -------------------------------------------------------------------------------------------


@dataclass
class Counts:
    sent: int = 0
    hard_bounce: int = 0
    complaint: int = 0
    unsubscribe: int = 0
    block: int = 0

    def add(self, kind: FactKind, n: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + n)

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, k) + getattr(other, k) for k in KINDS))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(max(0, getattr(self, k) - getattr(other, k)) for k in KINDS))

    def to_list(self) -> list[int]:
        return [getattr(self, k) for k in KINDS]

    @classmethod
    def of(cls, values: Iterable[int]) -> Counts:
        return cls(*values)

    def evidence(self) -> dict[str, int]:
        return {"sent": self.sent, "hard_bounces": self.hard_bounce, "complaints": self.complaint,
                "unsubscribes": self.unsubscribe, "blocks": self.block}


@dataclass(frozen=True)
class Rule:
    """One suspension rule: a rate, its threshold, whether reaching it (≥) or only passing it (>) breaches, and
    the warning levels below it."""

    metric: RateMetric
    counted: FactKind
    threshold: Fraction
    inclusive: bool
    warnings: tuple[Fraction, ...] = ()

    def rate(self, counts: Counts, judged_sent: int) -> Fraction:
        """The counted facts' share of `judged_sent` messages (Policy.judged_sent: at least the minimum volume)."""
        return Fraction(getattr(counts, self.counted), judged_sent)

    def breached(self, counts: Counts, judged_sent: int) -> bool:
        # counted / judged_sent against the threshold in integers: exact, and no Fraction per scope and rule
        counted: int = getattr(counts, self.counted)
        lhs, rhs = counted * self.threshold.denominator, self.threshold.numerator * judged_sent
        return lhs >= rhs if self.inclusive else lhs > rhs

    def warning_reached(self, counts: Counts, judged_sent: int) -> Fraction | None:
        """The highest warning level the rate has reached, if any."""
        counted: int = getattr(counts, self.counted)
        reached = [level for level in self.warnings if counted * level.denominator >= level.numerator * judged_sent]
        return max(reached) if reached else None


HARD_BOUNCE_BAND = (Fraction(8, 100), Fraction(15, 100))  # the terms allow 8-15% (Data processing 3.4)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    minimum_sent: int = 500
    windows_hours: tuple[int, ...] = (24, 168)
    bucket_seconds: int = 3600
    campaign_retention_seconds: int = 30 * 86400
    one_off_deleted_within_seconds: int = 7 * 86400
    one_off_followed_within_seconds: int = 30 * 86400
    one_off_overlap: Fraction = Fraction(8, 10)
    one_off_minimum_members: int = 20
    one_off_maximum_sends: int = 1
    # A campaign counts as a send to its list when it reached this share of the members the list had at its first
    # message: a token send (one recipient) to the old list does not hide a one-off.
    one_off_send_reach: Fraction = Fraction(1, 2)
    # A list is compared with the lists sent to recently (a re-creation without a deletion) once it has this many
    # members, again each time it grew by COMPARE_AGAIN_GROWTH, and at its first campaign: not on every member.
    one_off_check_members: int = 50

    def __post_init__(self) -> None:
        if self.minimum_sent < 1:
            raise ValueError("the minimum volume is at least one message (it is every rate's least denominator)")
        # evaluate() skips a scope with nothing counted against it, which a level of 0 would reach
        if any(level <= 0 for rule in self.rules for level in (rule.threshold, *rule.warnings)):
            raise ValueError("thresholds and warning levels must lie above 0")
        if not 1 <= self.one_off_maximum_sends < CAMPAIGNS_KEPT:
            raise ValueError(f"one-off sending looks at lists sent 1 to {CAMPAIGNS_KEPT - 1} campaigns")
        if not 0 < self.one_off_send_reach <= 1:
            raise ValueError("a send's reach is a share of the list: above 0, at most 1")
        if not 1 <= self.one_off_check_members <= SKETCH_SIZE:
            raise ValueError(f"lists are compared at 1 to {SKETCH_SIZE} members (the sketch counts them exactly)")
        if any(h * 3600 % self.bucket_seconds for h in self.windows_hours):
            raise ValueError("every window must be a whole number of buckets")
        for rule in self.rules:
            if rule.metric == "hard_bounce_rate" and not HARD_BOUNCE_BAND[0] <= rule.threshold <= HARD_BOUNCE_BAND[1]:
                raise ValueError("the hard-bounce threshold must lie in the 8-15% band the terms allow")

    def judged_sent(self, scope: Scope, counts: Counts, account_sent: int) -> int | None:
        """The volume a scope's rates are judged against: what it sent, or the minimum volume if it sent less.
        Padding instead of skipping: a small account is judged on strong absolute evidence (40 hard bounces,
        3 complaints at 500) rather than never, and one angry recipient still cannot suspend it.
        None (not judged): a rolling window below the minimum while the account's longest window holds more
        (`account_sent`). A fact is timed when it happens, not when its message was sent, so a quiet day's
        window holds complaints and unsubscribes about earlier mail (a weekly newsletter's tail): against the
        minimum instead of the sends they are about, 6 unsubscribes would suspend the day after 10,000 sends."""
        if counts.sent >= self.minimum_sent:
            return counts.sent
        if scope.kind == "rolling_window" and account_sent >= self.minimum_sent:
            return None
        return self.minimum_sent

    @property
    def longest_window_seconds(self) -> int:
        return max(self.windows_hours) * 3600

    def too_late(self, fact: Fact, produced_at: int) -> bool:
        """A fact published more than the longest window after it happened is not counted: its duplicates could
        no longer be told apart (the dedupe index forgets facts that old), and no window holds it any more."""
        return produced_at - fact.at > self.longest_window_seconds

    def bucket(self, at: int) -> int:
        return at // self.bucket_seconds


def default_rules(hard_bounce: Fraction = Fraction(8, 100), abuse: Fraction = Fraction(5, 1000),
                  unsubscribe: Fraction = Fraction(1, 100),
                  hard_bounce_warnings: tuple[Fraction, ...] = (Fraction(5, 100),),
                  abuse_warnings: tuple[Fraction, ...] = (Fraction(1, 1000), Fraction(3, 1000)),
                  unsubscribe_warnings: tuple[Fraction, ...] = (Fraction(5, 1000),),
                  block: Fraction = Fraction(5, 100),
                  block_warnings: tuple[Fraction, ...] = (Fraction(2, 100),)) -> tuple[Rule, ...]:
    """Hard bounce ≥ 8%, abuse > 0.5% (warned at Gmail's and Yahoo's 0.1% and 0.3%), unsubscribe > 1%, and
    blocks ≥ 5% (warned at 2%): the "blocklisted" rule, see the service README on the defaults."""
    return (Rule("hard_bounce_rate", "hard_bounce", hard_bounce, True, _below(hard_bounce_warnings, hard_bounce)),
            Rule("abuse_rate", "complaint", abuse, False, _below(abuse_warnings, abuse)),
            Rule("unsubscribe_rate", "unsubscribe", unsubscribe, False, _below(unsubscribe_warnings, unsubscribe)),
            Rule("block_rate", "block", block, True, _below(block_warnings, block)))


def _below(levels: tuple[Fraction, ...], threshold: Fraction) -> tuple[Fraction, ...]:
    if any(level >= threshold for level in levels):
        raise ValueError("warning levels must lie below their suspension threshold")
    return tuple(sorted(levels))


# --- the account's state ---------------------------------------------------------------------------------------


@dataclass
class AccountState:
    """Everything the processor knows of one account, kept as one table value so that counts and the offsets
    they include are written (and recovered) together."""

    stream_time: int = 0  # latest event time seen
    buckets: dict[int, Counts] = field(default_factory=dict)
    campaigns: dict[str, Counts] = field(default_factory=dict)
    campaign_seen: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)  # "topic:partition" → last offset applied
    epoch: int = 0  # reinstatements so far
    reinstated_at: int | None = None  # time of the latest reinstatement
    baseline: dict[str, Counts] = field(default_factory=dict)  # counts that stopped counting at reinstatement
    suspension: dict[str, Any] | None = None
    warned: dict[str, str] = field(default_factory=dict)  # "metric|scope" → highest level announced
    deleted_lists: dict[str, list[int]] = field(default_factory=dict)  # list → [deleted_at, last_sent_at]
    # deleted list → {later list that got some of its members in the window: that list's own share}: the lists whose
    # union is judged, so a re-creation split into several lists is seen (at most REUSERS_KEPT per deleted list).
    reusing: dict[str, dict[str, float]] = field(default_factory=dict)
    # list → when a campaign last began sending to it: the lists a new one may re-create without a deletion.
    sent_lists: dict[str, int] = field(default_factory=dict)
    # campaign → [messages, latest time] of its sends too late to count: no rate holds them, but they tell how much
    # of its list a campaign reached (one-off sending). Not deduplicated (the index no longer knows them), which
    # only makes a reach larger: a republished token send cannot hide a one-off by it.
    late_sends: dict[str, list[int]] = field(default_factory=dict)
    campaign_lists: dict[str, str] = field(default_factory=dict)  # campaign → the list its mail went to
    # The newest event time whose facts the index forgot early (it was full); facts of that time or older that it
    # does not remember are late (`forgotten`).
    forgotten_until: int | None = None
    # Unsubscribes counted before the partition carrying their sends had been read as far as it reached when they
    # were (`SendsRead`): [sends' "topic:partition", offset to read up to, bucket or None, campaign or None, n].
    # Counted like any, but kept out of what the rules judge until that offset is read (`release`).
    awaiting_sends: list[list[Any]] = field(default_factory=list)
    # Facts counted before their own send was read (`awaits_its_send`): [kind, hour (bucket), campaign or None, n].
    # In the baseline, as facts about mail before a reinstatement are, until their send is read or the account's
    # time passes `awaited_until` (`release_awaiting_facts`).
    awaiting_facts: list[list[Any]] = field(default_factory=list)
    # campaign → the time of its first counted send: whether a fact's send, if read, would still be remembered.
    campaign_started: dict[str, int] = field(default_factory=dict)

    def applied(self, source: str, offset: int) -> bool:
        return self.watermarks.get(source, -1) >= offset

    def mark_applied(self, source: str, offset: int) -> None:
        self.watermarks[source] = max(offset, self.watermarks.get(source, -1))

    def note_late_send(self, campaign_id: str, at: int) -> None:
        n, latest = self.late_sends.get(campaign_id, (0, at))
        self.late_sends[campaign_id] = [n + 1, max(at, latest)]

    def count(self, fact: Fact, policy: Policy, *, before_reinstatement: bool = False) -> None:
        """Count a fact in its hour and its campaign; one `before_reinstatement` goes into the baseline as well,
        so it shows in the raw totals and never in what the rules judge."""
        self.stream_time = max(self.stream_time, fact.at)
        if fact.at > self.stream_time - policy.longest_window_seconds:
            bucket = policy.bucket(fact.at)
            self.buckets.setdefault(bucket, Counts()).add(fact.kind)
            if before_reinstatement:
                self.baseline.setdefault(f"b:{bucket}", Counts()).add(fact.kind)
        if fact.campaign_id:
            self.campaigns.setdefault(fact.campaign_id, Counts()).add(fact.kind)
            self.campaign_seen[fact.campaign_id] = max(fact.at, self.campaign_seen.get(fact.campaign_id, 0))
            if fact.kind == "sent" and fact.at < self.campaign_started.get(fact.campaign_id, fact.at + 1):
                self.campaign_started[fact.campaign_id] = fact.at
            if before_reinstatement:
                self.baseline.setdefault(f"c:{fact.campaign_id}", Counts()).add(fact.kind)

    def count_set_aside(self, kind: FactKind, campaign_id: str | None, at: int, policy: Policy, n: int = 1) -> None:
        """A fact counted as before the reinstatement only because its send had not been seen turned out to be
        about mail sent after it (the send came in this epoch), or one waiting for its send saw it come or waited
        long enough: out of the baseline, so the rules judge it."""
        bucket = policy.bucket(at)
        for entry in self.awaiting_facts:
            if entry[0] == kind and entry[1] == bucket and entry[2] == campaign_id:
                entry[3] -= n
                if entry[3] <= 0:
                    self.awaiting_facts.remove(entry)
                break
        for key in (f"b:{bucket}", f"c:{campaign_id}") if campaign_id else (f"b:{bucket}",):
            counts = self.baseline.get(key)
            if counts is not None and getattr(counts, kind) > 0:
                counts.add(kind, -min(n, getattr(counts, kind)))
                if not any(counts.to_list()):
                    del self.baseline[key]  # before any reinstatement the baseline is empty again: the fast path

    def await_send(self, fact: Fact, policy: Policy) -> None:
        """Keep a fact just counted (into the baseline) out of the rules until its send is read, or until
        `awaited_until`. Grouped by kind, hour and campaign."""
        key = [fact.kind, policy.bucket(fact.at), fact.campaign_id]
        for entry in self.awaiting_facts:
            if entry[:3] == key:
                entry[3] += 1
                return
        self.awaiting_facts.append([*key, 1])

    def awaits(self, kind: FactKind, campaign_id: str | None, at: int, policy: Policy) -> bool:
        """Whether a fact of this kind, campaign and time still waits for its send."""
        bucket = policy.bucket(at)
        return any(entry[0] == kind and entry[1] == bucket and entry[2] == campaign_id
                   for entry in self.awaiting_facts)

    def release_awaiting_facts(self, policy: Policy, clock: int | None = None) -> None:
        """Judge the facts that waited for their send past `awaited_until` (of the latest time in their hour)
        without it, by the account's time or `clock` (how far its sends' partition was read, in record time): a
        send that never comes (never published, published too late to count, forgotten) hides none of them for
        good, even in an account with no later event."""
        now = max(self.stream_time, clock or 0)
        for kind, bucket, campaign_id, n in list(self.awaiting_facts):
            if awaited_until((bucket + 1) * policy.bucket_seconds - 1, policy) < now:
                self.count_set_aside(kind, campaign_id, bucket * policy.bucket_seconds, policy, n)

    def awaiting_facts_until(self, policy: Policy) -> int | None:
        """When the first of the facts waiting for their send is judged without it (None: none waits)."""
        if not self.awaiting_facts:
            return None
        return awaited_until((min(entry[1] for entry in self.awaiting_facts) + 1) * policy.bucket_seconds - 1, policy)

    def awaiting_their_sends(self, policy: Policy) -> dict[str, int]:
        """Facts kept out of the rules until their send is read, per scope key (`Scope.key`)."""
        held: dict[str, int] = {}
        newest = policy.bucket(self.stream_time)
        for _, bucket, campaign_id, n in self.awaiting_facts:
            if campaign_id:
                held[f"campaign:{campaign_id}"] = held.get(f"campaign:{campaign_id}", 0) + n
            for hours in policy.windows_hours:
                if newest - hours * 3600 // policy.bucket_seconds < bucket <= newest:
                    key = f"window:{window_name(hours)}"
                    held[key] = held.get(key, 0) + n
        return held

    def await_sends(self, fact: Fact, source: str, offset: int, policy: Policy) -> None:
        """Keep a fact just counted out of the rules until `source` is read up to `offset`: the sends it is about
        may lie before that, not read yet. Grouped by offset and scope: one entry a batch, bucket and campaign (and
        kind: an unsubscribe's entry names none, as entries did before other kinds waited at a cut)."""
        in_window = fact.at > self.stream_time - policy.longest_window_seconds  # as `count` files it
        key = [source, offset, policy.bucket(fact.at) if in_window else None, fact.campaign_id]
        kind = [] if fact.kind == "unsubscribe" else [fact.kind]
        for entry in self.awaiting_sends:
            if entry[:4] == key and entry[5:] == kind:
                entry[4] += 1
                return
        self.awaiting_sends.append([*key, 1, *kind])

    def release(self, sends: SendsRead | None) -> None:
        """Let the rules judge the awaiting facts whose sends' partition has been read up to the offset they wait
        for; all of them when how far is not known (`sends` None, or a partition it does not name)."""
        if not self.awaiting_sends:
            return
        read_to = sends.read_to if sends is not None else {}
        self.awaiting_sends = [entry for entry in self.awaiting_sends
                               if entry[0] in read_to and read_to[entry[0]] < entry[1]]

    def awaited(self) -> dict[str, int]:
        """Per sends' partition, the least offset an awaiting fact waits for: when the account must be judged again."""
        least: dict[str, int] = {}
        for source, offset, *_ in self.awaiting_sends:
            least[source] = min(offset, least.get(source, offset))
        return least

    def awaiting(self, policy: Policy) -> dict[str, int]:
        """Unsubscribes kept out of the rules at the cut, per scope key (`Scope.key`)."""
        return {key: counts.unsubscribe for key, counts in self.awaiting_counts(policy).items() if counts.unsubscribe}

    def awaiting_counts(self, policy: Policy) -> dict[str, Counts]:
        """Facts kept out of the rules at the cut (`await_sends`), per scope key (`Scope.key`)."""
        held: dict[str, Counts] = {}
        newest = policy.bucket(self.stream_time)
        for _, _, bucket, campaign_id, n, *kind in self.awaiting_sends:
            counted: FactKind = kind[0] if kind else "unsubscribe"
            keys = [f"campaign:{campaign_id}"] if campaign_id else []
            if bucket is not None:
                keys += [f"window:{window_name(hours)}" for hours in policy.windows_hours
                         if newest - hours * 3600 // policy.bucket_seconds < bucket <= newest]
            for key in keys:
                held.setdefault(key, Counts()).add(counted, n)
        return held

    def window_counts(self, hours: int, policy: Policy, *, raw: bool = False) -> Counts:
        newest = policy.bucket(self.stream_time)
        oldest = newest - hours * 3600 // policy.bucket_seconds
        total = [0] * len(KINDS)
        for bucket, counts in self.buckets.items():
            if oldest < bucket <= newest:
                if not raw and self.baseline:
                    counts = counts - self.baseline.get(f"b:{bucket}", Counts())
                for i, n in enumerate(counts.to_list()):
                    total[i] += n
        return Counts.of(total)

    def campaign_counts(self, campaign_id: str, *, raw: bool = False) -> Counts:
        counts = self.campaigns.get(campaign_id, Counts())
        if raw or not self.baseline:
            return Counts(*counts.to_list())  # a copy, as the difference below is
        return counts - self.baseline.get(f"c:{campaign_id}", Counts())

    def reinstate(self, at: int) -> None:
        """Staff lifted the suspension: every counter restarts from zero for the rules (what was counted before
        no longer counts towards a new suspension), while the raw totals stay for reports."""
        self.epoch += 1
        self.reinstated_at = at
        self.suspension = None
        self.warned = {}
        self.baseline = {f"b:{b}": Counts(*c.to_list()) for b, c in self.buckets.items()}
        self.baseline.update({f"c:{c}": Counts(*n.to_list()) for c, n in self.campaigns.items()})
        self.awaiting_sends = []  # in the baseline now: never judged
        self.awaiting_facts = []  # the same

    def prune(self, policy: Policy) -> None:
        """Forget what no window or campaign can need any more; keeps an account's state bounded."""
        oldest = policy.bucket(self.stream_time - policy.longest_window_seconds)
        for bucket in [b for b in self.buckets if b <= oldest]:
            del self.buckets[bucket]
            self.baseline.pop(f"b:{bucket}", None)
        horizon = self.stream_time - policy.campaign_retention_seconds
        for campaign in [c for c, at in self.campaign_seen.items() if at < horizon]:
            self.campaigns.pop(campaign, None)
            self.campaign_lists.pop(campaign, None)
            self.campaign_started.pop(campaign, None)
            del self.campaign_seen[campaign]
            self.baseline.pop(f"c:{campaign}", None)
            for key in [k for k in self.warned if k.endswith(f"|campaign:{campaign}")]:
                del self.warned[key]
        follow = self.stream_time - policy.one_off_followed_within_seconds
        for list_id in [k for k, (deleted_at, _) in self.deleted_lists.items() if deleted_at < follow]:
            del self.deleted_lists[list_id]
        for list_id in [k for k in self.reusing if k not in self.deleted_lists]:
            del self.reusing[list_id]
        for list_id in [k for k, sent_at in self.sent_lists.items() if sent_at < follow]:
            del self.sent_lists[list_id]
        for campaign in [c for c, (_, at) in self.late_sends.items() if at < horizon]:
            del self.late_sends[campaign]

    def to_json(self) -> dict[str, Any]:
        data = {"t": self.stream_time, "b": {str(k): v.to_list() for k, v in self.buckets.items()},
                "c": {k: v.to_list() for k, v in self.campaigns.items()}, "cs": self.campaign_seen,
                "w": self.watermarks, "e": self.epoch, "bl": {k: v.to_list() for k, v in self.baseline.items()},
                "s": self.suspension, "wn": self.warned, "dl": self.deleted_lists,
                "cl": self.campaign_lists, "ra": self.reinstated_at, "fu": self.forgotten_until,
                "sl": self.sent_lists, "ls": self.late_sends, "ru": self.reusing}
        if self.awaiting_sends:  # mostly empty: not written then (and the processor looks for accounts with some)
            data["as"] = self.awaiting_sends
        if self.awaiting_facts:
            data["af"] = self.awaiting_facts
        if self.campaign_started:
            data["cf"] = self.campaign_started
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AccountState:
        if not data:
            return cls()
        return cls(stream_time=data["t"], buckets={int(k): Counts.of(v) for k, v in data["b"].items()},
                   campaigns={k: Counts.of(v) for k, v in data["c"].items()}, campaign_seen=dict(data["cs"]),
                   watermarks=dict(data["w"]), epoch=data["e"],
                   baseline={k: Counts.of(v) for k, v in data["bl"].items()}, suspension=data["s"],
                   warned=dict(data["wn"]), deleted_lists={k: list(v) for k, v in data["dl"].items()},
                   campaign_lists=dict(data.get("cl", {})), reinstated_at=data.get("ra"),
                   forgotten_until=data.get("fu"), sent_lists=dict(data.get("sl", {})),
                   late_sends={k: list(v) for k, v in data.get("ls", {}).items()},
                   reusing={k: dict(v) for k, v in data.get("ru", {}).items()},
                   awaiting_sends=[list(entry) for entry in data.get("as", ())],
                   awaiting_facts=[list(entry) for entry in data.get("af", ())],
                   campaign_started=dict(data.get("cf", {})))


# --- decisions -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    kind: Literal["campaign", "rolling_window"]
    name: str  # campaign id, or "24h" / "7d"

    @property
    def key(self) -> str:
        return f"{'campaign' if self.kind == 'campaign' else 'window'}:{self.name}"


@dataclass(frozen=True)
class Breach:
    event_id: str
    rule: Rule
    scope: Scope
    counts: Counts
    judged_sent: int  # the rate's denominator: counts.sent, or the minimum volume when fewer were sent

    @property
    def value(self) -> Fraction:
        return self.rule.rate(self.counts, self.judged_sent)


@dataclass(frozen=True)
class Warning:
    event_id: str
    rule: Rule
    level: Fraction
    scope: Scope
    counts: Counts
    judged_sent: int

    @property
    def value(self) -> Fraction:
        return self.rule.rate(self.counts, self.judged_sent)


def window_name(hours: int) -> str:
    return f"{hours // 24}d" if hours % 24 == 0 and hours >= 48 else f"{hours}h"


def scopes_of(state: AccountState, policy: Policy) -> list[tuple[Scope, Counts]]:
    scopes = [(Scope("campaign", c), state.campaign_counts(c)) for c in sorted(state.campaigns)]
    scopes += [(Scope("rolling_window", window_name(h)), state.window_counts(h, policy)) for h in policy.windows_hours]
    return scopes


def judged_scopes(state: AccountState, policy: Policy) -> list[tuple[Scope, Counts]]:
    """Each scope's counts as the rules judge them: without the facts still awaiting their sends at the cut."""
    scopes = scopes_of(state, policy)
    if not state.awaiting_sends:
        return scopes
    held = state.awaiting_counts(policy)
    return [(scope, counts - held[scope.key] if scope.key in held else counts) for scope, counts in scopes]


def account_window_sent(scopes: list[tuple[Scope, Counts]]) -> int:
    """What the account sent in its longest window (the windows nest: the longest holds the most)."""
    return max((counts.sent for scope, counts in scopes if scope.kind == "rolling_window"), default=0)


@functools.lru_cache(maxsize=65536)  # asked for every account in every batch
def suspension_id(account_id: str, epoch: int) -> str:
    return decision_id("suspended", account_id, epoch)


def evaluate(account_id: str, state: AccountState, policy: Policy,
             already_suspended: bool) -> tuple[Breach | None, list[Warning]]:
    """The breach that suspends the account (at most one per epoch: the first rule, campaigns before windows),
    and the warnings not announced yet. A scope below the minimum volume is judged as if it had sent the minimum,
    but for the rolling windows of an account that sent more (Policy.judged_sent)."""
    breach: Breach | None = None
    warnings: list[Warning] = []
    scopes = judged_scopes(state, policy)
    account_sent: int | None = None
    for scope, counts in scopes:
        if not (counts.hard_bounce or counts.complaint or counts.unsubscribe or counts.block):
            continue  # every level is above 0 (Policy): nothing to judge, as in most scopes of a batch of sends
        if account_sent is None:
            account_sent = account_window_sent(scopes)
        judged_sent = policy.judged_sent(scope, counts, account_sent)
        if judged_sent is None:
            continue
        for rule in policy.rules:
            if rule.breached(counts, judged_sent):
                if breach is None and not already_suspended:
                    breach = Breach(suspension_id(account_id, state.epoch), rule, scope, counts, judged_sent)
                continue
            level = rule.warning_reached(counts, judged_sent)
            announced = state.warned.get(f"{rule.metric}|{scope.key}")
            if level is not None and (announced is None or level > Fraction(announced)):
                warnings.append(Warning(decision_id("warned", account_id, state.epoch, rule.metric, scope.key,
                                                    level), rule, level, scope, counts, judged_sent))
    if breach is not None or already_suspended:
        return breach, []  # a suspended account is not warned: the suspension says more
    return None, warnings


# --- one-off sending -------------------------------------------------------------------------------------------

SKETCH_SIZE = 256
COMPARE_AGAIN_GROWTH = 17 / 16  # a list already compared is compared again once it grew by this factor
MINIMUM_SAMPLE = 8  # sampled old-list members a comparison needs: new lists up to ~30 times larger compare
# Later lists remembered per deleted list as holding some of its members: a re-creation split into more lists than
# this, each with a smaller share than the ones kept, is judged on the largest REUSERS_KEPT parts only.
REUSERS_KEPT = 16
_HASH_SPACE = 1 << 64


@dataclass
class ListRecord:
    """What the processor keeps of one list: when it was created, sent to and deleted, and a bottom-k sketch of
    its members' address hashes with when each was added (bounded memory; exact below SKETCH_SIZE members)."""

    created_at: int | None = None
    last_sent_at: int | None = None
    deleted_at: int | None = None
    members_at_deletion: int | None = None
    sketch: list[int] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)  # earlier lists this list was already flagged against
    campaigns: list[str] = field(default_factory=list)  # campaigns sent to it (at most CAMPAIGNS_KEPT)
    # When each sketch entry was first added (event time), in the sketch's order: one-off sending is judged by when
    # a list got its addresses. None: unknown (a list whose creation was not seen, stored before times were kept).
    added: list[int | None] = field(default_factory=list)
    # Per campaign, in `campaigns`' order: when its first message was accepted, and how many messages it had sent
    # when last looked at (the account's campaign counts are forgotten 30 days on). None: unknown (stored earlier).
    campaign_sent_at: list[int | None] = field(default_factory=list)
    campaign_messages: list[int | None] = field(default_factory=list)
    # Its members when it was last compared with the lists sent to recently (None: never).
    compared_at_members: float | None = None

    def sent(self, campaign_id: str, at: int) -> None:
        """A campaign's first message to this list was accepted by a receiving server. With CAMPAIGNS_KEPT
        campaigns held, the one that sent the fewest messages makes room: token sends cannot crowd out a blast."""
        self.last_sent_at = max(at, self.last_sent_at or 0)
        if campaign_id in self.campaigns:
            return
        if len(self.campaigns) >= CAMPAIGNS_KEPT:
            known = [(n, i) for i, n in enumerate(self.campaign_messages) if n is not None]
            if not known:
                return
            _, smallest = min(known)
            for kept in (self.campaigns, self.campaign_sent_at, self.campaign_messages):
                del kept[smallest]
        self.campaigns.append(campaign_id)
        self.campaign_sent_at.append(at)
        self.campaign_messages.append(None)

    def note_messages(self, messages: Callable[[str], int | None]) -> None:
        """Keep what each campaign had sent, for when the account's counts of it are forgotten."""
        for i, campaign_id in enumerate(self.campaigns):
            n = messages(campaign_id)
            if n is not None:
                self.campaign_messages[i] = max(n, self.campaign_messages[i] or 0)

    def add_member(self, email_sha256: str, at: int) -> None:
        """An address joined the list at `at`; one added again keeps the time it was first added."""
        value = int(email_sha256[:16], 16)
        sketch = self.sketch
        i = bisect.bisect_left(sketch, value)
        if i >= SKETCH_SIZE or (i < len(sketch) and sketch[i] == value):
            return
        sketch.insert(i, value)
        self.added.insert(i, at)
        del sketch[SKETCH_SIZE:], self.added[SKETCH_SIZE:]

    def members(self) -> float:
        if self.members_at_deletion is not None:
            return float(self.members_at_deletion)
        return self.members_added()

    def members_added(self, until: int | None = None) -> float:
        """Members ever added (by `until`, when given): exact below SKETCH_SIZE, else estimated from the sketch,
        whose entries are a uniform sample of them. Removals are not seen, so this is the most the list held."""
        sketch = self.sketch
        if not sketch:
            return 0.0
        held = len(sketch) if until is None else sum(1 for at in self.added if at is None or at <= until)
        if len(sketch) < SKETCH_SIZE:
            return float(held)
        return (SKETCH_SIZE - 1) * _HASH_SPACE / (sketch[-1] + 1) * held / len(sketch)

    def to_json(self) -> dict[str, Any]:
        return {"c": self.created_at, "s": self.last_sent_at, "d": self.deleted_at, "m": self.members_at_deletion,
                "k": self.sketch, "f": self.flagged, "n": self.campaigns, "a": self.added,
                "nt": self.campaign_sent_at, "nm": self.campaign_messages, "cm": self.compared_at_members}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ListRecord:
        if not data:
            return cls()
        # A record stored before the times were kept: its members were added when it was created or later, and
        # judging them as added at its creation is what the rule did then.
        added = list(data["a"]) if "a" in data else [data["c"]] * len(data["k"])
        campaigns = list(data.get("n", ()))
        # Campaigns stored before their times and sizes were kept: each counts as a send, as it did then.
        unknown: list[int | None] = [None] * len(campaigns)
        return cls(data["c"], data["s"], data["d"], data["m"], list(data["k"]), list(data["f"]), campaigns, added,
                   list(data.get("nt", unknown)), list(data.get("nm", unknown)), data.get("cm"))

    def due_for_comparison(self, policy: Policy) -> bool:
        """Compared with the lists sent to recently from `one_off_check_members` on, then each time it grew by
        COMPARE_AGAIN_GROWTH: a few dozen comparisons over a list's life, yet the last one sees most of a list
        whose members are read in several batches, or after its first campaign (topics are read in no set order)."""
        if self.flagged:
            return False
        due = float(policy.one_off_check_members)
        if self.compared_at_members is not None:
            due = max(due, self.compared_at_members * COMPARE_AGAIN_GROWTH)
        return self.members_added() >= due


MessagesOf = Callable[[str], int | None]  # a campaign's messages counted so far; None when no longer known


def sends_that_count(record: ListRecord, messages: MessagesOf, policy: Policy) -> list[int]:
    """When each campaign that counts as a send to the list began: one that reached at least
    `one_off_send_reach` of the members the list had by its first message. A campaign whose size is no longer
    known counts, as every campaign did before sizes were kept."""
    times: list[int] = []
    for i, campaign_id in enumerate(record.campaigns):
        at = record.campaign_sent_at[i] if i < len(record.campaign_sent_at) else None
        stored = record.campaign_messages[i] if i < len(record.campaign_messages) else None
        current = messages(campaign_id)
        known = [n for n in (stored, current) if n is not None]
        at = at if at is not None else record.last_sent_at
        if at is None:
            continue
        if not known or max(known) >= policy.one_off_send_reach * Fraction(record.members_added(at)):
            times.append(at)
    return times


def deleted_after_a_send(record: ListRecord, policy: Policy) -> bool:
    """A list deleted within the configured time after a campaign began sending to it: a candidate, judged when a
    later list is compared with it (by then every message of its campaigns has been counted)."""
    if record.deleted_at is None or record.last_sent_at is None:
        return False
    starts = [at if at is not None else record.last_sent_at for at in record.campaign_sent_at] or \
        [record.last_sent_at]
    return any(0 <= record.deleted_at - at <= policy.one_off_deleted_within_seconds for at in starts)


def deleted_soon_after_send(record: ListRecord, policy: Policy, messages: MessagesOf = lambda _: None) -> bool:
    """Deleted within the configured time after its last send, having been sent few campaigns ("after one send",
    PRODUCT.md): a list used for months and then retired is not one-off sending. Only campaigns that reached
    a fair share of the list count as sends."""
    sends = sends_that_count(record, messages, policy)
    return (record.deleted_at is not None and 0 < len(sends) <= policy.one_off_maximum_sends
            and 0 <= record.deleted_at - max(sends) <= policy.one_off_deleted_within_seconds)


def shared_fraction(old: ListRecord, new: ListRecord, added_between: tuple[int, int] | None = None) -> float | None:
    """Estimated share of the old list's members that are also in the new list (added to it within
    `added_between`, both ends included, when given); None when the sketches cannot tell. Exact while both
    sketches hold every member. Otherwise the members of the old list whose hash lies below both sketches' largest
    values are a uniform sample of it whose presence in the new list, and when it got there, are known exactly
    (a bottom-k sketch never drops a value below its largest); fewer than MINIMUM_SAMPLE of them (a new list far
    larger than the old one) tell nothing."""
    return shared_with_any(old, [new], added_between)


def shared_with_any(old: ListRecord, news: list[ListRecord],
                    added_between: tuple[int, int] | None = None) -> float | None:
    """Estimated share of the old list's members found in at least one of the new lists (their union), as
    `shared_fraction` does for one: the sample is the old list's members hashed below every sketch's largest value,
    so each one's presence in every new list is known; the more (and larger) the lists, the smaller the sample."""
    sketches = [old.sketch, *(new.sketch for new in news)]
    if not all(sketches):
        return None
    limit = min(s[-1] if len(s) >= SKETCH_SIZE else _HASH_SPACE for s in sketches)
    sample = [v for v in old.sketch if v <= limit]
    exact = all(len(s) < SKETCH_SIZE for s in sketches)
    if not sample or (not exact and len(sample) < MINIMUM_SAMPLE):
        return None
    in_any: set[int] = set()
    for new in news:
        if added_between is None:
            in_any.update(new.sketch)
        else:
            since, until = added_between
            in_any.update(v for v, at in zip(new.sketch, new.added, strict=True)
                          if at is None or since <= at <= until)
    return sum(1 for v in sample if v in in_any) / len(sample)


OneOffReason = Literal["list_deleted", "list_recreated"]


@dataclass(frozen=True)
class OneOffSending:
    event_id: str
    earlier_list_id: str
    new_list_id: str
    shared: float
    earlier: ListRecord
    new: ListRecord
    reason: OneOffReason
    sends: int  # campaigns to the earlier list that counted as sends
    # The other later lists that, with the new one, hold `shared` of the earlier list's members (a split re-creation).
    together_with: tuple[tuple[str, ListRecord], ...] = ()

    @property
    def deleted_list_id(self) -> str:
        return self.earlier_list_id


def one_off_sending(account_id: str, new_list_id: str, new: ListRecord, candidates: dict[str, list[int]],
                    load: Callable[[str], ListRecord], policy: Policy,
                    messages: MessagesOf = lambda _: None,
                    reusing: dict[str, dict[str, float]] | None = None) -> list[OneOffSending]:
    """A list deleted soon after it was sent to, followed by a new list that got mostly the same addresses after
    that send (and within the follow-up time after the deletion). When the new list got them decides, not when it
    was created: a list made empty beforehand and filled after the send is a re-creation all the same, while one
    that already held them before the send is a second list.

    With `reusing` (the account state's), a new list holding only part of the deleted list is remembered, and the
    deleted list is judged against it together with the other lists remembered so (re-created as two halves)."""
    found: list[OneOffSending] = []
    if new.deleted_at is not None:
        return found
    for old_id, (deleted_at, _) in candidates.items():
        if old_id == new_list_id or old_id in new.flagged:
            continue
        old = load(old_id)
        if old.members() < policy.one_off_minimum_members or not deleted_soon_after_send(old, policy, messages):
            continue
        sends = sends_that_count(old, messages, policy)
        window = (max(sends), deleted_at + policy.one_off_followed_within_seconds)
        shared = shared_fraction(old, new, window)
        if shared is not None and shared >= policy.one_off_overlap:
            found.append(OneOffSending(decision_id("one-off", account_id, old_id, new_list_id), old_id,
                                       new_list_id, shared, old, new, "list_deleted", len(sends)))
        elif reusing is not None and shared:
            split = _split_re_creation(old_id, old, new_list_id, new, shared, window, reusing, load, policy)
            if split is not None:
                union, others = split
                ids = sorted([new_list_id, *(other_id for other_id, _ in others)])
                found.append(OneOffSending(decision_id("one-off", account_id, old_id, *ids), old_id, new_list_id,
                                           union, old, new, "list_deleted", len(sends), tuple(others)))
    return found


def _split_re_creation(old_id: str, old: ListRecord, new_list_id: str, new: ListRecord, shared: float,
                       window: tuple[int, int], reusing: dict[str, dict[str, float]],
                       load: Callable[[str], ListRecord], policy: Policy,
                       ) -> tuple[float, list[tuple[str, ListRecord]]] | None:
    """Remember that `new` holds `shared` of the deleted list, then judge the union of the lists remembered: the
    new one, then the others from the largest share down, each kept when the union can still be measured with it,
    until the union reaches the overlap. Returns that union and the other lists in it."""
    parts = reusing.setdefault(old_id, {})
    parts[new_list_id] = shared
    if len(parts) > REUSERS_KEPT:
        del parts[min(parts, key=lambda list_id: (parts[list_id], list_id))]
    chosen: list[tuple[str, ListRecord]] = []
    for other_id in sorted((k for k in parts if k != new_list_id), key=lambda k: (-parts[k], k)):
        other = load(other_id)
        if other.deleted_at is not None or old_id in other.flagged:
            continue
        union = shared_with_any(old, [new, *(record for _, record in chosen), other], window)
        if union is None:
            continue  # too large to measure alongside the others: left out
        chosen.append((other_id, other))
        if union >= policy.one_off_overlap:
            return union, chosen
    return None


def recreated_list(account_id: str, new_list_id: str, new: ListRecord, sent_lists: Mapping[str, int],
                   load: Callable[[str], ListRecord], policy: Policy,
                   messages: MessagesOf = lambda _: None) -> OneOffSending | None:
    """The same pattern without a deletion: a list sent at most `one_off_maximum_sends` campaigns (that reached
    it), and a new list that got mostly its addresses after its last send, within the follow-up time after it.
    The earlier list it re-creates best (the largest share, then the latest send), if any, and only for a list
    not flagged yet."""
    if new.deleted_at is not None or new.flagged:
        return None  # one warning tells a list for what it is
    best: tuple[float, int, str, ListRecord, int] | None = None
    for old_id in sent_lists:
        if old_id == new_list_id or old_id in new.flagged:
            continue
        old = load(old_id)
        if old.members() < policy.one_off_minimum_members:
            continue
        sends = sends_that_count(old, messages, policy)
        if not 0 < len(sends) <= policy.one_off_maximum_sends:
            continue
        since = max(sends)
        shared = shared_fraction(old, new, (since, since + policy.one_off_followed_within_seconds))
        if shared is not None and shared >= policy.one_off_overlap and (best is None or (shared, since) > best[:2]):
            best = (shared, since, old_id, old, len(sends))
    if best is None:
        return None
    shared, _, old_id, old, count = best
    return OneOffSending(decision_id("one-off", account_id, old_id, new_list_id), old_id, new_list_id, shared, old,
                         new, "list_recreated", count)


# --- deciding on an account's events --------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """One input event of an account, with where it was read: `source` is "topic:partition" (the base topic
    name), `produced_at` its Kafka record's timestamp in whole seconds."""

    event: Event
    source: str
    offset: int
    produced_at: int | None

    @property
    def topic(self) -> str:
        return self.source.rsplit(":", 1)[0]

    @property
    def at(self) -> int:
        return event_time(self.event, self.produced_at)


@dataclass(frozen=True)
class SendsRead:
    """How far the partitions that carry sends (SENDS_TOPIC) have been read, for a batch, per "topic:partition":
    `read_to`, the next offset the worker will process once the batch is applied; `ends`, the partition's end
    offset, asked of the broker after the batch's records were read (only for partitions an unsubscribe of the
    batch waits on)."""

    read_to: Mapping[str, int]
    ends: Mapping[str, int] = field(default_factory=dict)


def sends_cut(source: str, sends: SendsRead | None) -> tuple[str, int] | None:
    """Where a fact read now waits at the cut: the sends' partition `source` and its end offset, while the worker
    has not read it that far; None when it has, or when how far is not known (judged at once)."""
    if sends is None:
        return None
    end, read_to = sends.ends.get(source), sends.read_to.get(source)
    return (source, end) if end is not None and read_to is not None and read_to < end else None


def send_after_its_report(items: Iterable[Input]) -> bool:
    """Whether, among one account's inputs, a MessageSent comes after a bounce or complaint about its message: the
    report then waits for it, and, once it is read, for where the sends' partition ends (`sends_cut`)."""
    reported: set[str] = set()
    for item in items:
        event = item.event
        if isinstance(event, MessageSent):
            if event.payload.message_id in reported:
                return True
        elif isinstance(event, MessageBounced | ComplaintReceived):
            reported.add(event.payload.message_id)
    return False


def sends_source(item: Input) -> str | None:
    """The partition carrying the sends an input's facts are about, when the input is read apart from it: an
    unsubscribe, on the partition of herald.subscriptions of the same number (input topics are co-partitioned by
    account). None for the sends' own topic, read in order with its bounces and complaints."""
    if not isinstance(item.event, SubscriberUnsubscribed):
        return None
    return f"{SENDS_TOPIC}:{item.source.rpartition(':')[2]}"


class ListRecords(Protocol):
    """The account's list records: a dict in tests, the `lists` table in the processor."""

    def get(self, list_id: str) -> ListRecord: ...

    def put(self, list_id: str, record: ListRecord) -> None: ...


Outcome = Literal["counted", "duplicate", "late", "replayed", "ignored"]


@dataclass
class Decision:
    """What one account's share of a batch did: each input's outcome, counted by (topic, event type, outcome),
    and the events to announce on herald.compliance, in order (ids deterministic: the processor publishes each
    one not announced yet)."""

    outcomes: dict[tuple[str, str, Outcome], int] = field(default_factory=dict)
    announcements: list[Event] = field(default_factory=list)

    def note(self, item: Input, outcome: Outcome) -> None:
        key = (item.topic, item.event.type, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


def decide(account_id: str, state: AccountState, inputs: Iterable[Input], facts: FactMarkers, lists: ListRecords,
           policy: Policy, announced: Container[str], now: datetime, sends: SendsRead | None = None,
           clock: int | None = None) -> Decision:
    """Apply an account's inputs, in order, to its state, facts and lists (`evolve`), then judge the result: the
    suspension a breach calls for (one per epoch; not when `announced` holds it already, as after a crash),
    warnings not announced yet, and one-off sending on the lists the inputs touched. The state records what
    is announced; the decision lists the events.

    The rates are judged at a consistent cut: an unsubscribe is read in no set order with the sends it is about,
    so one counted while its sends' partition had not been read to where it ended then (`sends`) is kept out of
    the rules until it has (`AccountState.awaiting_sends`); with no inputs, `decide` judges the account again
    once it has. Without `sends`, every fact is judged at once. A fact read before its own send waits for it, at
    most until the account's time, or `clock`, passes `awaited_until`."""
    decision = Decision()
    touched: set[str] = set()
    fresh: set[str] = set()
    counted: list[Input] = []  # what an announcement can be caused by (`cause_of`)
    for item in inputs:
        if state.applied(item.source, item.offset):
            decision.note(item, "replayed")
            continue
        outcome = evolve(account_id, state, item, facts, lists, policy, touched, fresh, sends)
        decision.note(item, outcome)
        if outcome == "counted":
            counted.append(item)
        state.mark_applied(item.source, item.offset)
    state.prune(policy)
    state.release(sends)
    if state.awaiting_facts:
        state.release_awaiting_facts(policy, clock)
    already = state.suspension is not None or suspension_id(account_id, state.epoch) in announced
    breach, warnings = evaluate(account_id, state, policy, already)
    if breach is not None:
        decision.announcements.append(suspension_event(account_id, breach, cause_of(counted, breach)))
        value = float(breach.value)
        state.suspension = {"event_id": breach.event_id, "metric": breach.rule.metric, "value": value,
                            "threshold": float(breach.rule.threshold), "scope": breach.scope.key,
                            "counts": breach.counts.evidence(), "judged_sent": breach.judged_sent,
                            "at": now.isoformat()}
    for warning in warnings:
        decision.announcements.append(warning_event(account_id, warning, cause_of(counted, warning)))
        state.warned[f"{warning.rule.metric}|{warning.scope.key}"] = str(warning.level)
    messages = campaign_messages(state)
    for list_id in sorted(touched | fresh):
        if not state.deleted_lists and list_id not in fresh:
            continue
        record = lists.get(list_id)
        found = one_off_sending(account_id, list_id, record, state.deleted_lists, lists.get, policy, messages,
                                state.reusing) if state.deleted_lists and list_id in touched else []
        record.flagged.extend(finding.earlier_list_id for finding in found)
        for finding in found:
            if finding.together_with:
                state.reusing.pop(finding.earlier_list_id, None)
            for other_id, _ in finding.together_with:
                other = lists.get(other_id)
                other.flagged.append(finding.earlier_list_id)
                lists.put(other_id, other)
        if list_id in fresh:
            recreated = recreated_list(account_id, list_id, record, state.sent_lists, lists.get, policy, messages)
            if recreated is not None:
                found.append(recreated)
                record.flagged.append(recreated.earlier_list_id)
            record.compared_at_members = record.members_added()
        for finding in found:
            decision.announcements.append(one_off_event(account_id, finding, list_cause(counted, finding)))
        if found or list_id in fresh:
            lists.put(list_id, record)
    return decision


def cause_of(counted: Sequence[Input], judged: Breach | Warning) -> Event | None:
    """The event an announcement of a rate is caused by: of the inputs this judgement counted, the last with a fact
    of the rule's kind (of the scope's campaign, for a campaign's rate: the bounce or complaint that reached the
    threshold), else the last with a fact of that kind, else the last counted; None when it counted none (an
    account judged again once the sends its unsubscribes waited for are read). Looked for only when there is an
    announcement, so the inputs' path costs one append."""
    kind, campaign = judged.rule.counted, judged.scope.name if judged.scope.kind == "campaign" else None
    of_kind: Event | None = None
    for item in reversed(counted):
        for fact in facts_of(item.event, item.produced_at):
            if fact.kind == kind:
                if campaign is None or fact.campaign_id == campaign:
                    return item.event
                of_kind = of_kind or item.event
    return of_kind or (counted[-1].event if counted else None)


def list_cause(counted: Sequence[Input], finding: OneOffSending) -> Event | None:
    """The event one-off sending is found on: the last counted input about the new list (its member added, its
    first campaign's message sent), else the last counted."""
    for item in reversed(counted):
        if getattr(item.event.payload, "list_id", None) == finding.new_list_id:
            return item.event
    return counted[-1].event if counted else None


def caused_by(cause: Event | None) -> dict[str, uuid.UUID]:
    """The envelope fields of an announcement caused by `cause` (`Event.caused`: its flow, and it as the cause);
    nothing without one."""
    if cause is None:
        return {}
    return {"correlation_id": cause.correlation_id or cause.event_id, "causation_id": cause.event_id}


def campaign_messages(state: AccountState) -> MessagesOf:
    """A campaign's messages seen so far (raw: before and after a reinstatement alike; too late to count too)."""
    def messages(campaign_id: str) -> int | None:
        counts, late = state.campaigns.get(campaign_id), state.late_sends.get(campaign_id)
        if counts is None and late is None:
            return None
        return (counts.sent if counts is not None else 0) + (late[0] if late is not None else 0)
    return messages


def evolve(account_id: str, state: AccountState, item: Input, facts: FactMarkers, lists: ListRecords,
           policy: Policy, touched: set[str], fresh: set[str], sends: SendsRead | None = None) -> Outcome:
    """Apply one input: count its facts once each (a fact seen before is a duplicate, one published more than
    the longest window after it happened is late), note a list's first send per campaign, lift the suspension
    a reinstatement names, and keep lists' creation, members and deletion. The lists it changed join `touched`;
    those due for a comparison with the lists sent to recently (by their size, or their first campaign) join
    `fresh` as well."""
    event = item.event
    if isinstance(event, MessageSent):
        _note_list_sent(state, event, item.at, lists, policy, touched, fresh)
    found = facts_of(event, item.produced_at)
    if found:
        outcome: Outcome = "duplicate"
        for fact in found:
            if (item.produced_at is not None and policy.too_late(fact, item.produced_at)) or \
                    forgotten(facts, fact, state):
                outcome = "late" if outcome == "duplicate" else outcome
                if fact.kind == "sent" and fact.campaign_id:
                    state.note_late_send(fact.campaign_id, fact.at)
            elif claim(facts, fact, item.source, item.offset, sent_in_epoch(fact, state)):
                before = sent_before(facts, fact, state, policy)
                source = None if before else sends_source(item)
                cut = sends_cut(source, sends) if source is not None else None
                # An unsubscribe waiting at the cut waits for every send published before it was read, its own
                # among them unless that one is republished later still: one wait, not two (nor counted out twice).
                waits = not before and cut is None and awaits_its_send(facts, fact, state, policy) and \
                    awaited_until(fact.at, policy) >= state.stream_time
                state.count(fact, policy, before_reinstatement=before or waits)
                if cut is not None:
                    state.await_sends(fact, *cut, policy)
                # Which of a message's facts is processed first is no sign of when it was sent (topics are read in
                # no set order, a MessageSent may be republished after its DSN): a fact set aside for want of its
                # send counts as soon as the send comes, so the same facts in any order are judged alike.
                if waits:
                    state.await_send(fact, policy)
                    set_aside(facts, fact, item.source, item.offset, state.epoch)
                elif before and fact.sent_key is not None and facts.get(fact.sent_key) is None:
                    set_aside(facts, fact, item.source, item.offset, state.epoch)
                elif fact.kind == "sent":
                    for kind, campaign_id, at in awaited_by(facts, fact, state, policy):
                        waited = state.awaits(kind, campaign_id, at, policy)
                        state.count_set_aside(kind, campaign_id, at, policy)
                        # Read before its send, it is judged, like an unsubscribe, against every send published
                        # before that send was read (republished together after a crash): not against the few
                        # of them that happen to come in the batch with it.
                        cut = sends_cut(item.source, sends) if waited else None
                        if cut is not None:
                            state.await_sends(Fact(kind, "", at, campaign_id), *cut, policy)
                outcome = "counted"
        return outcome
    at = item.at
    match event:
        case AccountReinstated(payload=p):
            # Only the suspension it names (or, unnamed, the current one) is lifted: a reinstatement sent twice,
            # or arriving after a newer suspension, changes nothing.
            if state.suspension is None or p.suspension_event_id not in (None, state.suspension["event_id"]):
                return "ignored"
            state.reinstate(at)
        case AccountSuspended():
            if state.suspension is None and str(event.event_id) == suspension_id(account_id, state.epoch):
                state.suspension = {"event_id": str(event.event_id), "metric": event.payload.metric}
        case ListCreated(payload=p):
            _update_list(state, p.list_id, lists, policy, created_at=at)
        case SubscriberAdded(payload=p):
            record = lists.get(p.list_id)
            record.add_member(p.email_sha256, at)
            lists.put(p.list_id, record)
            touched.add(p.list_id)
            if record.due_for_comparison(policy):
                fresh.add(p.list_id)
        case ListDeleted(payload=p):
            _update_list(state, p.list_id, lists, policy, deleted_at=at, members=p.members_at_deletion)
            for parts in state.reusing.values():
                parts.pop(p.list_id, None)
        case _:
            return "ignored"
    return "counted"


def _note_list_sent(state: AccountState, event: MessageSent, at: int, lists: ListRecords, policy: Policy,
                    touched: set[str], fresh: set[str]) -> None:
    """A list counts as sent to when a campaign's first message to it is accepted (not when the campaign is
    queued: it may be scheduled for later, or cancelled). Once per campaign: the account state remembers."""
    p = event.payload
    if p.kind != "campaign" or not p.campaign_id or not p.list_id or p.campaign_id in state.campaign_lists:
        return
    state.campaign_lists[p.campaign_id] = p.list_id
    state.sent_lists[p.list_id] = max(at, state.sent_lists.get(p.list_id, at))
    if _update_list(state, p.list_id, lists, policy, sent=(p.campaign_id, at)):
        fresh.add(p.list_id)
    touched.add(p.list_id)


def _update_list(state: AccountState, list_id: str, lists: ListRecords, policy: Policy, *,
                 created_at: int | None = None, sent: tuple[str, int] | None = None,
                 deleted_at: int | None = None, members: int | None = None) -> bool:
    """Returns whether this was the list's first campaign."""
    record = lists.get(list_id)
    first = sent is not None and not record.campaigns
    record.note_messages(campaign_messages(state))
    if created_at is not None:
        record.created_at = created_at
    if sent is not None:
        record.sent(*sent)
    if deleted_at is not None:
        record.deleted_at, record.members_at_deletion = deleted_at, members
    # A campaign's messages only grow, so more sends than one-off sending allows rule the list out for good.
    if deleted_after_a_send(record, policy) and \
            len(sends_that_count(record, campaign_messages(state), policy)) <= policy.one_off_maximum_sends:
        assert record.deleted_at is not None and record.last_sent_at is not None
        state.deleted_lists[list_id] = [record.deleted_at, record.last_sent_at]
    else:
        state.deleted_lists.pop(list_id, None)
        state.reusing.pop(list_id, None)
    lists.put(list_id, record)
    return first


# --- what is announced -----------------------------------------------------------------------------------------


COUNTED_NAMES: dict[FactKind, str] = {"hard_bounce": "hard bounce", "complaint": "complaint",
                                      "unsubscribe": "unsubscribe", "block": "block"}


def suspension_event(account_id: str, breach: Breach, cause: Event | None = None) -> AccountSuspended:
    """`value` is the rate the rule compared with `threshold`; below the minimum volume its denominator is that
    minimum, which the reason says with the counts behind it."""
    value = float(breach.value)
    comparison = "≥" if breach.rule.inclusive else ">"
    sent, counted = breach.counts.sent, getattr(breach.counts, breach.rule.counted)
    volume = (f"{sent} sent" if breach.judged_sent == sent else
              f"{counted} {COUNTED_NAMES[breach.rule.counted]}{'' if counted == 1 else 's'} of {sent} sent, "
              f"judged against the minimum volume of {breach.judged_sent}")
    reason = (f"{breach.rule.metric.replace('_', ' ')} {value:.2%} {comparison} {float(breach.rule.threshold):.2%}"
              f" ({breach.scope.kind.replace('_', ' ')} {breach.scope.name}: {volume})")
    return AccountSuspended(
        event_id=breach.event_id, account_id=account_id, producer=PRODUCER, **caused_by(cause),
        payload=AccountSuspendedPayload(metric=breach.rule.metric, value=min(1.0, value),
                                        threshold=float(breach.rule.threshold), scope=rate_scope(breach.scope),
                                        counts=rate_counts(breach.counts), reason=reason, notify_account=True))


def warning_event(account_id: str, warning: Warning, cause: Event | None = None) -> AccountWarned:
    return AccountWarned(
        event_id=warning.event_id, account_id=account_id, producer=PRODUCER, **caused_by(cause),
        payload=AccountWarnedPayload(metric=warning.rule.metric, value=min(1.0, float(warning.value)),
                                     warning_level=float(warning.level), threshold=float(warning.rule.threshold),
                                     scope=rate_scope(warning.scope), counts=rate_counts(warning.counts),
                                     evidence=({} if warning.judged_sent == warning.counts.sent
                                               else {"judged_sent": warning.judged_sent})))


def one_off_event(account_id: str, finding: OneOffSending, cause: Event | None = None) -> AccountWarned:
    earlier, new = finding.earlier, finding.new
    # A deleted list keeps the evidence's names it had before re-creations without a deletion were flagged.
    name = "deleted_list" if finding.reason == "list_deleted" else "earlier_list"
    evidence: dict[str, str | int | float] = {
        "reason": finding.reason, f"{name}_id": finding.earlier_list_id, "new_list_id": finding.new_list_id,
        f"{name}_members": round(earlier.members()), "new_list_members": round(new.members()),
        "shared_fraction": round(finding.shared, 4), f"{name}_last_sent_at": _iso(earlier.last_sent_at),
        f"{name}_campaigns": ",".join(earlier.campaigns), f"{name}_campaigns_sent": len(earlier.campaigns),
        f"{name}_sends_counted": finding.sends, "new_list_created_at": _iso(new.created_at)}
    if finding.reason == "list_deleted":
        evidence["deleted_at"] = _iso(earlier.deleted_at)
    if finding.together_with:
        # Split across lists: the share is of their union; each list's own evidence is its id and size.
        ids = sorted([finding.new_list_id, *(other_id for other_id, _ in finding.together_with)])
        evidence["new_list_ids"] = ",".join(ids)
        evidence["new_lists"] = len(ids)
        evidence["new_list_members"] = round(new.members() + sum(r.members() for _, r in finding.together_with))
    return AccountWarned(
        event_id=finding.event_id, account_id=account_id, producer=PRODUCER, **caused_by(cause),
        payload=AccountWarnedPayload(metric="one_off_sending", value=round(finding.shared, 4), evidence=evidence))


def rate_scope(scope: Scope) -> RateScope:
    if scope.kind == "campaign":
        return RateScope(kind="campaign", campaign_id=scope.name)
    return RateScope(kind="rolling_window", window=scope.name)


def rate_counts(counts: Counts) -> RateCounts:
    return RateCounts(sent=counts.sent, hard_bounces=counts.hard_bounce, complaints=counts.complaint,
                      unsubscribes=counts.unsubscribe, blocks=counts.block)


def _iso(at: int | None) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat() if at is not None else ""


def rate_report(state: AccountState, policy: Policy) -> dict[str, Any]:
    """What staff see for one account: each scope's counts (since the last reinstatement, and raw) and rates."""
    def rates(counts: Counts) -> dict[str, float | None]:
        return {rule.metric: (float(rule.rate(counts, counts.sent)) if counts.sent else None) for rule in policy.rules}

    scopes = []
    judged = scopes_of(state, policy)
    account_sent = account_window_sent(judged)
    awaiting = state.awaiting(policy) if state.awaiting_sends else {}
    waiting = state.awaiting_their_sends(policy) if state.awaiting_facts else {}
    for scope, counts in judged:
        raw = (state.campaign_counts(scope.name, raw=True) if scope.kind == "campaign"
               else state.window_counts(next(h for h in policy.windows_hours if window_name(h) == scope.name), policy,
                                        raw=True))
        scopes.append({"scope": scope.kind, "name": scope.name, "counts": counts.evidence(), "rates": rates(counts),
                       "raw_counts": raw.evidence(), "judged_sent": policy.judged_sent(scope, counts, account_sent),
                       "awaiting_unsubscribes": awaiting.get(scope.key, 0),
                       "awaiting_their_sends": waiting.get(scope.key, 0)})
    return {"suspended": state.suspension is not None, "suspension": state.suspension,
            "reinstatements": state.epoch, "minimum_sent": policy.minimum_sent,
            "thresholds": {r.metric: float(r.threshold) for r in policy.rules},
            "stream_time": _iso(state.stream_time) if state.stream_time else None,
            "forgotten_until": _iso(state.forgotten_until) if state.forgotten_until is not None else None,
            "scopes": scopes}


def as_fraction(percent: float) -> Fraction:
    """A configured percentage (8.0 means 8%) as an exact fraction, so 8.00% and 7.99% compare exactly."""
    return Fraction(str(percent)) / 100
