"""The stream processor: one faust agent over the input topics counts facts into changelog-backed tables, and
announces warnings, suspensions and one-off sending on herald.compliance exactly once.

Exactly once, over at-least-once processing:
- an account's whole state (counts, and the last offset of every input partition they include) is one table
  value, so a replay after a crash skips what the recovered state already holds;
- a fact (a message sent, bounced, complained about; an unsubscribe) is counted once however often it is
  published: the `facts` table remembers where each was first seen;
- announcements have deterministic ids, and the output partition is read before a partition is processed, so
  an announcement that reached Kafka before a crash is never repeated (and one that did not is made again);
- no record is skipped: what faust's stream drops on a rebalance is read from Kafka (continuity.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from herald_shared.contract import EVENT_TYPES, Event, InvalidEvent
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
from herald_shared.contract.delivery import MessageSent
from herald_shared.contract.subscriptions import ListCreated, ListDeleted, SubscriberAdded
from herald_shared.kafka import (
    TRANSIENT_ERRORS,
    DeadLetters,
    EventPublisher,
    has_type,
    read_from_start,
    type_name,
    validate_record,
)
from herald_shared.settings import HeraldSettings
from herald_shared.topics import TopicNames

from . import metrics
from .continuity import Continuity, Fetch, reconcile
from .domain import (
    ACTED_ON,
    AccountState,
    Breach,
    ListRecord,
    OneOffSending,
    Policy,
    Warning,
    claim,
    deleted_soon_after_send,
    evaluate,
    event_time,
    facts_of,
    one_off_sending,
    scopes_of,
    sent_before,
    suspension_id,
    window_name,
)
from .faust_adapter import Acknowledgements, ChangelogTable, durable

log = logging.getLogger(__name__)
SERVICE = "compliance"
# herald.campaigns is not among them: a list counts as sent to when its mail is accepted (MessageSent)
# herald.billing for AccountPurged only (retention); its other events are ignored.
INPUT_TOPICS = ("herald.delivery", "herald.subscriptions", "herald.compliance", "herald.billing")
CATCH_UP_RECORDS = 5000  # per partition and round of the stall check: memory stays bounded on a long backlog
PARTITIONS = 6  # every input topic has 6 partitions (herald_shared.topics): co-partitioned by account
SWEEP_MARGIN_SECONDS = 3600  # facts are kept this much longer than the horizon: records in flight stay judged


PURGED = {"purged": True}  # what the accounts table keeps of a purged account


def is_purged(stored: Any) -> bool:
    return isinstance(stored, dict) and stored.get("purged") is True


def account_partition(account_id: str | bytes) -> int:
    """The partition of every input topic that holds an account's events (Kafka's default partitioner)."""
    return _partition_of(account_id.encode() if isinstance(account_id, str) else account_id)


@functools.lru_cache(maxsize=65536)  # asked for every record; murmur2 is pure Python
def _partition_of(key: bytes) -> int:
    return int((murmur2(key) & 0x7FFFFFFF) % PARTITIONS)


class FactIndex:
    """The `facts` table seen as a mapping for `domain.claim`, keyed per account."""

    def __init__(self, table: ChangelogTable, account_id: str, partition: int) -> None:
        self.table, self.prefix, self.partition = table, f"{account_id}|", partition

    def get(self, key: str) -> Any:
        return self.table.get(self.prefix + key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.table.put(self.partition, self.prefix + key, value)



class Announcements:
    """Event ids already on herald.compliance, per partition: read from Kafka itself before a partition is
    processed, so whatever local state was lost in a crash, nothing announced is announced twice."""

    def __init__(self, settings: HeraldSettings) -> None:
        self._settings = settings
        self._ids: dict[int, set[str]] = {}
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    def forget(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            self._ids.pop(partition, None)

    async def ready(self, partition: int) -> set[str]:
        async with self._locks[partition]:
            if partition not in self._ids:
                self._ids[partition] = await self._read(partition)
            return self._ids[partition]

    async def _read(self, partition: int) -> set[str]:
        ids: set[str] = set()
        topic = self._settings.topics("herald.compliance")
        async for records in read_from_start(self._settings, [topic], partitions=[partition], batch_size=5000):
            for record in records:
                try:
                    ids.add(str(json.loads(record.value)["event_id"]))
                except (ValueError, KeyError, TypeError):
                    continue  # not ours to judge: the topic's own consumers dead-letter it
        return ids


@dataclass(frozen=True)
class Parsed:
    event: Event
    source: str  # "topic:partition"
    offset: int
    message: Any
    produced_at: int | None  # the record's timestamp, whole seconds

    @property
    def at(self) -> int:
        return event_time(self.event, self.produced_at)


def _type_header(record: Any) -> str:
    """A record's `type` header when it names an event of the contract (a metric label: no unbounded values)."""
    for key, value in record.headers or ():
        if key == "type":
            name = bytes(value).decode(errors="replace")
            return name if name in EVENT_TYPES else "unknown"
    return "unknown"


def produced_at(message: Any) -> int | None:
    """The record's Kafka timestamp in whole seconds: faust's messages carry seconds, aiokafka's milliseconds."""
    timestamp = message.timestamp
    if timestamp is None or timestamp < 0:
        return None
    return int(timestamp / 1000) if isinstance(message, ConsumerRecord) else int(timestamp)


class Processor:
    """Applies one partition's batch: parse, dead-letter, count, decide, announce, save."""

    def __init__(self, policy: Policy, topics: TopicNames, accounts: ChangelogTable, facts: ChangelogTable,
                 lists: ChangelogTable, announcements: Announcements, publisher: EventPublisher,
                 dead_letters: DeadLetters, highwater: Callable[[TopicPartition], int | None],
                 continuity: Continuity, acknowledgements: Acknowledgements) -> None:
        self.policy, self.topics = policy, topics
        self.accounts, self.facts, self.lists = accounts, facts, lists
        self.announcements, self.publisher, self.dead_letters = announcements, publisher, dead_letters
        self._highwater = highwater
        self._base = {topics(t): t for t in INPUT_TOPICS}
        self._event_age = {t: metrics.LAG_SECONDS.labels(t) for t in INPUT_TOPICS}  # a label lookup per event costs
        self._acted_on = frozenset(type_name(cls).encode() for cls in ACTED_ON)
        self.continuity = continuity
        self.acknowledgements = acknowledgements
        # records read here (not delivered by faust), processed, to acknowledge once their batch is durable
        self._to_acknowledge: dict[TopicPartition, list[int]] = defaultdict(list)
        self._log_time: dict[TopicPartition, int] = {}  # per input partition: newest record timestamp processed
        self.owned: set[int] = set()  # input partitions this worker holds (the tables also hold standby copies)
        self._lock = asyncio.Lock()  # batches, catch-ups, sweeps, assignments and revocations never interleave

    async def handle(self, events: Sequence[Any]) -> None:
        """One batch of faust events, from any input partitions; each partition's share is applied with that
        partition's announcements and written to that partition of the changelogs."""
        if not events:
            return
        async with self._lock:
            await self._apply_records([event.message for event in events])

    async def assigned(self, tps: Iterable[Any]) -> None:
        """Partitions given to this worker: expect their committed offsets."""
        inputs = [tp for tp in tps if tp.topic in self._base]
        async with self._lock:
            self.owned |= {tp.partition for tp in inputs}
            for attempt in range(5):
                try:
                    await self.continuity.assign(inputs)
                    return
                except TRANSIENT_ERRORS as exc:
                    log.warning("reading committed offsets failed", extra={"error": repr(exc), "attempt": attempt})
                    await asyncio.sleep(0.5 * 2 ** attempt)
            log.error("committed offsets unknown: the stream is trusted on these partitions until reassigned",
                      extra={"partitions": len(inputs)})

    async def revoked(self, tps: Iterable[Any]) -> None:
        """Partitions taken away (after the batch in progress, if any)."""
        tps = list(tps)
        async with self._lock:
            # what the last batch changed reaches the changelogs before the partitions' next owner recovers them
            # (every member revokes before any is assigned); if it cannot, the process must not go on with
            # tables ahead of their changelogs
            await durable(self.facts, self.lists, self.accounts)
            self.owned -= {tp.partition for tp in tps if tp.topic in self._base}
            self.continuity.forget(tps)
            self.acknowledgements.forget(tps)
            for tp in tps:
                self._log_time.pop(TopicPartition(tp.topic, tp.partition), None)
                self._to_acknowledge.pop(TopicPartition(tp.topic, tp.partition), None)
            self.announcements.forget(sorted({tp.partition for tp in tps if tp.topic in self._base}))

    async def catch_up(self, stalled_after: float) -> int:
        """Read straight from Kafka what an owned partition holds past the expected offset when nothing has come
        for `stalled_after` seconds (faust lost its tail); returns how many records were read."""
        async with self._lock:
            records = []
            for tp, (start, end) in (await self.continuity.stalled(stalled_after)).items():
                records.extend(await self.continuity.read(tp, start, min(end, start + CATCH_UP_RECORDS)))
            if records:
                log.warning("read records the stream did not deliver", extra={"records": len(records),
                                                                              "reason": "stalled"})
                metrics.REFETCHED.labels("stalled").inc(len(records))
                await self._apply_records(records)
            return len(records)

    async def _apply_records(self, records: Sequence[Any]) -> None:
        started = time.perf_counter()
        by_tp: dict[TopicPartition, list[Any]] = defaultdict(list)
        for record in records:
            by_tp[TopicPartition(record.topic, record.partition)].append(record)
        ordered: list[Any] = []
        for tp, share in by_tp.items():
            records_of_tp = await self._contiguous(tp, share)
            ordered.extend(records_of_tp)
            self._to_acknowledge[tp].extend(r.offset for r in records_of_tp if isinstance(r, ConsumerRecord))
        by_partition: dict[int, dict[str, list[Parsed]]] = defaultdict(lambda: defaultdict(list))
        passed_over: Counter[tuple[str, str]] = Counter()
        for record in ordered:
            if not has_type(record, self._acted_on):
                passed_over[self._base.get(record.topic, record.topic), _type_header(record)] += 1
                continue
            parsed = await self._parse(record)
            if parsed is not None:
                by_partition[record.partition][parsed.event.account_id].append(parsed)
        for (topic, type_), n in passed_over.items():
            metrics.EVENTS.labels(topic, type_, "ignored").inc(n)
        for partition, by_account in by_partition.items():
            announced = await self.announcements.ready(partition)
            for account_id, items in by_account.items():
                await self._apply_account(account_id, partition, items, announced)
        await durable(self.facts, self.lists, self.accounts)  # before faust may acknowledge (and commit) this batch
        for tp, offsets in self._to_acknowledge.items():
            self.acknowledgements.acknowledge(tp, offsets)  # faust never saw them: it would never commit past them
        self._to_acknowledge.clear()
        for tp, share in by_tp.items():
            times = [t for t in map(produced_at, share) if t is not None]
            if times:
                self._log_time[tp] = max(self._log_time.get(tp, 0), *times)
            highwater = self._highwater(tp)
            if highwater is not None:
                metrics.LAG_MESSAGES.labels(tp.topic, str(tp.partition)).set(max(0, highwater - share[-1].offset - 1))
        metrics.DEDUPE_ENTRIES.set(len(self.facts))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _contiguous(self, tp: TopicPartition, share: list[Any]) -> list[Any]:
        """The partition's records in order with nothing skipped: holes are read from Kafka, and what was
        already processed since the partition was assigned is dropped."""
        expected = self.continuity.expected.get(tp)
        if expected is None:  # assigned before this worker tracked it: trust the stream
            return share
        plan, after = reconcile(expected, [record.offset for record in share])
        records: list[Any] = []
        for step in plan:
            if isinstance(step, Fetch):
                missing = await self.continuity.read(tp, step.start, step.end)
                log.warning("read records the stream skipped", extra={
                    "topic": tp.topic, "partition": tp.partition, "from": step.start, "to": step.end,
                    "records": len(missing)})
                metrics.REFETCHED.labels("gap").inc(len(missing))
                records.extend(missing)
            else:
                records.append(share[step.index])
        self.continuity.advance(tp, after)
        return records

    async def _parse(self, message: Any) -> Parsed | None:
        base = self._base.get(message.topic, message.topic)
        try:
            event = validate_record(message, self.topics)
            expected = account_partition(message.key)
            if message.partition != expected:
                raise InvalidEvent(f"on partition {message.partition}, but its key belongs on partition {expected}"
                                   " (publish keyed by account_id with the default partitioner)")
        except InvalidEvent as exc:
            await self.dead_letters.send(message, str(exc), "invalid")
            metrics.EVENTS.labels(base, "unknown", "dead_lettered").inc()
            return None
        self._event_age[base].observe(max(0.0, time.time() - event.occurred_at.timestamp()))
        return Parsed(event, f"{base}:{message.partition}", message.offset, message, produced_at(message))

    async def _apply_account(self, account_id: str, partition: int, items: list[Parsed], announced: set[str]) -> None:
        stored = self.accounts.get(account_id)
        if is_purged(stored) or any(isinstance(item.event, AccountPurged) for item in items):
            if not is_purged(stored):
                self._purge(account_id, partition)
            for item in items:
                metrics.EVENTS.labels(self._base.get(item.message.topic, item.message.topic), item.event.type,
                                      "purged").inc()
            return
        state = AccountState.from_json(stored)
        index = FactIndex(self.facts, account_id, partition)
        touched_lists: set[str] = set()
        outcomes: Counter[tuple[str, str, str]] = Counter()  # counted into Prometheus once per account and batch
        for item in items:
            event, topic = item.event, self._base.get(item.message.topic, item.message.topic)
            if state.applied(item.source, item.offset):
                outcomes[topic, event.type, "replayed"] += 1
                continue
            outcome = self._apply(account_id, partition, state, item, index, touched_lists)
            state.mark_applied(item.source, item.offset)
            outcomes[topic, event.type, outcome] += 1
        for labels, n in outcomes.items():
            metrics.EVENTS.labels(*labels).inc(n)
        state.prune(self.policy)
        already = state.suspension is not None or suspension_id(account_id, state.epoch) in announced
        breach, warnings = evaluate(account_id, state, self.policy, already)
        if breach is not None:
            await self._announce_suspension(account_id, state, breach, announced)
        for warning in warnings:
            await self._announce_warning(account_id, warning, announced)
            state.warned[f"{warning.rule.metric}|{warning.scope.key}"] = str(warning.level)
        for list_id in sorted(touched_lists):
            await self._check_one_off(account_id, partition, state, list_id, announced)
        self.accounts.put(partition, account_id, state.to_json())

    def _purge(self, account_id: str, partition: int) -> None:
        """Retention (AccountPurged): the account's counts, facts and lists leave the tables (a tombstone in
        their changelogs), and its state becomes a marker that drops its later events. The facts and lists
        tables are not indexed by account: a purge reads their keys once."""
        prefix = f"{account_id}|"
        for table in (self.facts, self.lists):
            for key in [k for k in table.keys() if k.startswith(prefix)]:
                table.delete(partition, key)
        self.accounts.put(partition, account_id, PURGED)
        log.info("account purged", extra={"account_id": account_id})

    def _apply(self, account_id: str, partition: int, state: AccountState, item: Parsed, index: FactIndex,
               touched_lists: set[str]) -> str:
        event = item.event
        if isinstance(event, MessageSent):
            self._note_list_sent(account_id, partition, state, event, item.at, touched_lists)
        facts = facts_of(event, item.produced_at)
        if facts:
            outcome = "duplicate"
            for fact in facts:
                if item.produced_at is not None and self.policy.too_late(fact, item.produced_at):
                    outcome = "late" if outcome == "duplicate" else outcome
                elif claim(index, fact, item.source, item.offset, state.epoch):
                    state.count(fact, self.policy, before_reinstatement=sent_before(index, fact, state, self.policy))
                    outcome = "counted"
            return outcome
        at = item.at
        match event:
            case AccountReinstated(payload=p):
                # Only the suspension it names (or, unnamed, the current one) is lifted: a reinstatement sent
                # twice, or arriving after a newer suspension, changes nothing.
                if state.suspension is None or p.suspension_event_id not in (None, state.suspension["event_id"]):
                    return "ignored"
                state.reinstate(at)
            case AccountSuspended():
                if state.suspension is None and str(event.event_id) == suspension_id(account_id, state.epoch):
                    state.suspension = {"event_id": str(event.event_id), "metric": event.payload.metric}
            case ListCreated(payload=p):
                self._update_list(account_id, partition, state, p.list_id, created_at=at)
            case SubscriberAdded(payload=p):
                record = ListRecord.from_json(self.lists.get(f"{account_id}|{p.list_id}"))
                record.add_member(p.email_sha256)
                self.lists.put(partition, f"{account_id}|{p.list_id}", record.to_json())
                touched_lists.add(p.list_id)
            case ListDeleted(payload=p):
                self._update_list(account_id, partition, state, p.list_id, deleted_at=at,
                                  members=p.members_at_deletion)
            case _:
                return "ignored"
        return "counted"

    def _note_list_sent(self, account_id: str, partition: int, state: AccountState, event: MessageSent, at: int,
                        touched_lists: set[str]) -> None:
        """A list counts as sent to when a campaign's first message to it is accepted (not when the campaign is
        queued: it may be scheduled for later, or cancelled). Once per campaign: the account state remembers."""
        p = event.payload
        if p.kind != "campaign" or not p.campaign_id or not p.list_id or p.campaign_id in state.campaign_lists:
            return
        state.campaign_lists[p.campaign_id] = p.list_id
        self._update_list(account_id, partition, state, p.list_id, sent=(p.campaign_id, at))
        touched_lists.add(p.list_id)

    def _update_list(self, account_id: str, partition: int, state: AccountState, list_id: str, *,
                     created_at: int | None = None, sent: tuple[str, int] | None = None,
                     deleted_at: int | None = None, members: int | None = None) -> None:
        key = f"{account_id}|{list_id}"
        record = ListRecord.from_json(self.lists.get(key))
        if created_at is not None:
            record.created_at = created_at
        if sent is not None:
            record.sent(*sent)
        if deleted_at is not None:
            record.deleted_at, record.members_at_deletion = deleted_at, members
        if deleted_soon_after_send(record, self.policy):
            assert record.deleted_at is not None and record.last_sent_at is not None
            state.deleted_lists[list_id] = [record.deleted_at, record.last_sent_at]
        self.lists.put(partition, key, record.to_json())

    async def _check_one_off(self, account_id: str, partition: int, state: AccountState, list_id: str,
                             announced: set[str]) -> None:
        if not state.deleted_lists:
            return
        key = f"{account_id}|{list_id}"
        record = ListRecord.from_json(self.lists.get(key))
        found = one_off_sending(account_id, list_id, record, state.deleted_lists,
                                lambda old: ListRecord.from_json(self.lists.get(f"{account_id}|{old}")), self.policy)
        for finding in found:
            await self._announce_one_off(account_id, finding, announced)
            record.flagged.append(finding.deleted_list_id)
        if found:
            self.lists.put(partition, key, record.to_json())

    async def _announce_suspension(self, account_id: str, state: AccountState, breach: Breach,
                                   announced: set[str]) -> None:
        scope = _rate_scope(breach.scope.kind, breach.scope.name)
        value = float(breach.value)
        comparison = "≥" if breach.rule.inclusive else ">"
        reason = (f"{breach.rule.metric.replace('_', ' ')} {value:.2%} {comparison} {float(breach.rule.threshold):.2%}"
                  f" ({breach.scope.kind.replace('_', ' ')} {breach.scope.name}: {breach.counts.sent} sent)")
        event = AccountSuspended(
            event_id=breach.event_id, account_id=account_id, producer=SERVICE,
            payload=AccountSuspendedPayload(metric=breach.rule.metric, value=min(1.0, value),
                                            threshold=float(breach.rule.threshold), scope=scope,
                                            counts=_rate_counts(breach.counts), reason=reason, notify_account=True))
        published = await self._publish(event, announced)
        state.suspension = {"event_id": breach.event_id, "metric": breach.rule.metric, "value": value,
                            "threshold": float(breach.rule.threshold), "scope": breach.scope.key,
                            "counts": breach.counts.evidence(), "at": datetime.now(UTC).isoformat()}
        if published:  # not when a replay finds it already announced
            metrics.SUSPENSIONS.labels(breach.rule.metric, breach.scope.kind).inc()
        log.warning("account suspended", extra={"account_id": account_id, "reason": reason})

    async def _announce_warning(self, account_id: str, warning: Warning, announced: set[str]) -> None:
        value = float(warning.rule.rate(warning.counts))
        event = AccountWarned(
            event_id=warning.event_id, account_id=account_id, producer=SERVICE,
            payload=AccountWarnedPayload(metric=warning.rule.metric, value=value, warning_level=float(warning.level),
                                         threshold=float(warning.rule.threshold),
                                         scope=_rate_scope(warning.scope.kind, warning.scope.name),
                                         counts=_rate_counts(warning.counts)))
        if await self._publish(event, announced):
            metrics.WARNINGS.labels(warning.rule.metric, warning.scope.kind).inc()

    async def _announce_one_off(self, account_id: str, finding: OneOffSending, announced: set[str]) -> None:
        deleted, new = finding.deleted, finding.new
        event = AccountWarned(
            event_id=finding.event_id, account_id=account_id, producer=SERVICE,
            payload=AccountWarnedPayload(metric="one_off_sending", value=round(finding.shared, 4), evidence={
                "deleted_list_id": finding.deleted_list_id, "new_list_id": finding.new_list_id,
                "deleted_list_members": round(deleted.members()), "new_list_members": round(new.members()),
                "shared_fraction": round(finding.shared, 4),
                "deleted_list_last_sent_at": _iso(deleted.last_sent_at), "deleted_at": _iso(deleted.deleted_at),
                "deleted_list_campaigns": ",".join(deleted.campaigns),
                "deleted_list_campaigns_sent": len(deleted.campaigns),
                "new_list_created_at": _iso(new.created_at)}))
        if await self._publish(event, announced):
            metrics.WARNINGS.labels("one_off_sending", "list").inc()

    async def _publish(self, event: Event, announced: set[str]) -> bool:
        """Publish an announcement unless it is on herald.compliance already; whether it was published."""
        if str(event.event_id) in announced:
            return False
        delay = 0.1
        while True:
            try:
                await self.publisher.publish(event)
                break
            except TRANSIENT_ERRORS as exc:  # the broker is briefly away: the batch waits, nothing is skipped
                log.warning("publishing failed, retrying", extra={"type": event.type, "error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        announced.add(str(event.event_id))
        return True

    def _log_now(self, source: str, now: float) -> float | None:
        """How far one input partition's log has been read, in record time: the wall clock once it is caught up;
        the newest record processed while it is behind (replaying history); None if unknown yet."""
        base, partition = source.rsplit(":", 1)
        tp = TopicPartition(self.topics(base), int(partition))
        expected, highwater = self.continuity.expected.get(tp), self._highwater(tp)
        if expected is None or highwater is None:
            return None
        return now if expected >= highwater else self._log_time.get(tp)

    async def sweep_facts(self, horizon_seconds: int, now: float) -> int:
        """Forget the facts of this worker's partitions that happened more than the dedupe horizon (the longest
        window) before their partition's log time: a duplicate of one of them would be too late to count anyway
        (Policy.too_late). Yields to the event loop as it goes (millions of facts take seconds); returns how
        many it forgot."""
        async with self._lock:  # not between a batch's fact claims and its durable() write
            expired = 0
            log_now: dict[str, float | None] = {}
            for n, key in enumerate(self.facts.keys()):
                if n % 5000 == 4999:
                    await asyncio.sleep(0)  # heartbeats and HTTP go on
                marker = self.facts.get(key)
                if marker is None:
                    continue
                source = marker[0]
                partition = int(source.rsplit(":", 1)[1])
                if partition not in self.owned:
                    continue  # a standby copy: the partition's owner sweeps it
                if source not in log_now:
                    log_now[source] = self._log_now(source, now)
                read_to = log_now[source]
                if read_to is not None and marker[2] < read_to - horizon_seconds - SWEEP_MARGIN_SECONDS:
                    self.facts.delete(partition, key)
                    expired += 1
            await self.facts.durable()
        return expired


def _rate_scope(kind: str, name: str) -> RateScope:
    if kind == "campaign":
        return RateScope(kind="campaign", campaign_id=name)
    return RateScope(kind="rolling_window", window=name)


def _rate_counts(counts: Any) -> RateCounts:
    return RateCounts(sent=counts.sent, hard_bounces=counts.hard_bounce, complaints=counts.complaint,
                      unsubscribes=counts.unsubscribe, blocks=counts.block)


def _iso(at: int | None) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat() if at is not None else ""


def rate_report(state: AccountState, policy: Policy) -> dict[str, Any]:
    """What staff see for one account: each scope's counts (since the last reinstatement, and raw) and rates."""
    def rates(counts: Any) -> dict[str, float | None]:
        return {rule.metric: (float(rule.rate(counts)) if counts.sent else None) for rule in policy.rules}

    scopes = []
    for scope, counts in scopes_of(state, policy):
        raw = (state.campaign_counts(scope.name, raw=True) if scope.kind == "campaign"
               else state.window_counts(next(h for h in policy.windows_hours if window_name(h) == scope.name), policy,
                                        raw=True))
        scopes.append({"scope": scope.kind, "name": scope.name, "counts": counts.evidence(), "rates": rates(counts),
                       "raw_counts": raw.evidence(), "decides": counts.sent >= policy.minimum_sent})
    return {"suspended": state.suspension is not None, "suspension": state.suspension,
            "reinstatements": state.epoch, "minimum_sent": policy.minimum_sent,
            "thresholds": {r.metric: float(r.threshold) for r in policy.rules},
            "stream_time": _iso(state.stream_time) if state.stream_time else None, "scopes": scopes}


def as_fraction(percent: float) -> Fraction:
    """A configured percentage (8.0 means 8%) as an exact fraction, so 8.00% and 7.99% compare exactly."""
    return Fraction(str(percent)) / 100
