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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from herald_shared.contract import EVENT_TYPES, Event, InvalidEvent
from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.compliance import AccountSuspended, AccountWarned
from herald_shared.kafka import (
    TRANSIENT_ERRORS,
    DeadLetterCategory,
    DeadLetters,
    EventPublisher,
    has_type,
    read_from_start,
    type_header,
    type_name,
    validate_record,
)
from herald_shared.settings import HeraldSettings
from herald_shared.topics import TopicNames

from . import metrics
from .continuity import Continuity, Fetch, lag, reconcile
from .domain import (
    ACTED_ON,
    SENDS_TOPIC,
    AccountState,
    Input,
    ListRecord,
    Policy,
    SendsRead,
    decide,
    plan_forgetting,
    send_after_its_report,
    sends_source,
)
from .faust_adapter import READER_RETRY_BACKOFF_MS, Acknowledgements, ChangelogTable, FactTable, durable
from .packed_facts import BUCKETS

log = logging.getLogger(__name__)
SERVICE = "compliance"
# herald.campaigns is not among them: a list counts as sent to when its mail is accepted (MessageSent)
# herald.billing for AccountPurged only (retention); its other events are ignored.
INPUT_TOPICS = ("herald.delivery", "herald.subscriptions", "herald.compliance", "herald.billing")
CATCH_UP_RECORDS = 5000  # per partition and round of the stall check: memory stays bounded on a long backlog
PARTITIONS = 6  # every input topic has 6 partitions (herald_shared.topics): co-partitioned by account
SWEEP_PART = 1024  # buckets of the fact index swept under one hold of the lock (1/64 of the facts)
SWEEP_MARGIN_SECONDS = 3600  # facts are kept this much longer than the horizon: records in flight stay judged
# Why the processor dead-letters a record (`_parse`): only what fails the contract or sits on the wrong partition;
# a rule never refuses an event, and a failing batch stops the process instead (main.py).
DEAD_LETTERED_AS: tuple[DeadLetterCategory, ...] = ("invalid",)


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

    def __init__(self, table: FactTable, account_id: str, partition: int) -> None:
        self.table, self.account_id, self.partition = table, account_id, partition

    def get(self, key: str) -> Any:
        return self.table.get(self.account_id, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.table.put(self.partition, self.account_id, key, value)



class ListTable:
    """The `lists` table seen as the account's list records, for `domain.decide`."""

    def __init__(self, table: ChangelogTable, account_id: str, partition: int) -> None:
        self.table, self.prefix, self.partition = table, f"{account_id}|", partition

    def get(self, list_id: str) -> ListRecord:
        return ListRecord.from_json(self.table.get(self.prefix + list_id))

    def put(self, list_id: str, record: ListRecord) -> None:
        self.table.put(self.partition, self.prefix + list_id, record.to_json())


class Announcements:
    """Event ids already on herald.compliance, per partition: read from Kafka itself before a partition is
    processed, so whatever local state was lost in a crash, nothing announced is announced twice.

    The partitions a worker is given are read together, from their assignment on (`prefetch`), while faust
    recovers the tables: a partition's first batch then finds them read. Read one by one at the first batch,
    each took a reader's start and half a second of fetch waiting (an empty topic), six in a row at a start."""

    def __init__(self, settings: HeraldSettings) -> None:
        self._settings = settings
        self._reads: dict[int, asyncio.Task[dict[int, set[str]]]] = {}  # partition → the read that holds it

    def prefetch(self, partitions: Iterable[int]) -> None:
        """Start reading these partitions' announcements (those not read or being read already), all at once."""
        todo = sorted(set(partitions) - set(self._reads))
        if not todo:
            return
        task = asyncio.create_task(self._read(todo), name="read-announcements")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failure is raised by ready()
        for partition in todo:
            self._reads[partition] = task

    def forget(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            task = self._reads.pop(partition, None)
            if task is not None and task not in self._reads.values():
                task.cancel()  # read for partitions no longer held

    async def ready(self, partition: int) -> set[str]:
        """The partition's announcements. A read that failed (the broker away a moment at the assignment) is made
        again once; a second failure fails the batch, and the process with it (main._agent)."""
        try:
            return await self._awaited(partition)
        except Exception:
            return await self._awaited(partition)

    async def _awaited(self, partition: int) -> set[str]:
        if partition not in self._reads:
            self.prefetch([partition])
        task = self._reads[partition]
        try:
            return (await asyncio.shield(task))[partition]
        except Exception:
            for p in [p for p, t in self._reads.items() if t is task]:
                del self._reads[p]  # read afresh next time
            raise

    async def _read(self, partitions: list[int]) -> dict[int, set[str]]:
        ids: dict[int, set[str]] = {partition: set() for partition in partitions}
        topic = self._settings.topics("herald.compliance")
        held = await self._holding_records(topic, partitions)
        if not held:
            return ids
        async for records in read_from_start(self._settings, [topic], partitions=held, batch_size=5000):
            for record in records:
                try:
                    ids[record.partition].add(str(json.loads(record.value)["event_id"]))
                except (ValueError, KeyError, TypeError):
                    continue  # not ours to judge: the topic's own consumers dead-letter it
        return ids

    async def _holding_records(self, topic: str, partitions: list[int]) -> list[int]:
        """The partitions that hold any record. `read_from_start` asks for the end offsets after its first fetch,
        which the broker holds for half a second on an empty partition; an empty one needs no reading at all."""
        consumer = AIOKafkaConsumer(**self._settings.kafka_client_options(), group_id=None,
                                    enable_auto_commit=False, retry_backoff_ms=READER_RETRY_BACKOFF_MS,
                                    client_id="herald-compliance-announcements")
        await consumer.start()
        try:
            tps = [TopicPartition(topic, partition) for partition in partitions]
            firsts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return [tp.partition for tp in tps if ends[tp] > firsts[tp]]


def _is_marker(marker: Any) -> bool:
    """Whether a remembered value is a marker `[source "<topic>:<partition>", offset, at, ...]`."""
    return (isinstance(marker, list) and len(marker) > 2 and isinstance(marker[0], str)
            and marker[0].rpartition(":")[2].isdigit() and type(marker[2]) is int)


def _type_label(record: Any) -> str:
    """A record's `type` header when it names an event of the contract (a metric label: no unbounded values)."""
    name = (type_header(record) or b"").decode(errors="replace")
    return name if name in EVENT_TYPES else "unknown"


def produced_at(message: Any) -> int | None:
    """The record's Kafka timestamp in whole seconds: faust's messages carry seconds, aiokafka's milliseconds."""
    timestamp = message.timestamp
    if timestamp is None or timestamp < 0:
        return None
    return int(timestamp / 1000) if isinstance(message, ConsumerRecord) else int(timestamp)


class Processor:
    """Applies one partition's batch: parse, dead-letter, count, decide, announce, save."""

    def __init__(self, policy: Policy, topics: TopicNames, accounts: ChangelogTable, facts: FactTable,
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
        self._next_limit_check = 0  # fact count under which limit_facts does not try again (it could not cut)
        # Accounts with unsubscribes awaiting their sends (`AccountState.awaiting_sends`), per owned partition:
        # account → the least offset of the sends' partition they wait for, when they are judged again. Learnt
        # from the accounts table at a partition's first batch here (`_find_awaiting`), then from each decision.
        self._awaiting: dict[int, dict[str, int]] = {}
        # Accounts with facts waiting for their own send (`AccountState.awaiting_facts`), per owned partition:
        # account → when the first is judged without it (`awaiting_facts_until`), by the sends' partition's log
        # time, so that an account with no later event is judged then too. Learnt as `_awaiting` is.
        self._waiting: dict[int, dict[str, int]] = {}

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
            self.announcements.prefetch(self.owned)
            for attempt in range(5):
                try:
                    await self._expect(inputs)
                    return
                except TRANSIENT_ERRORS as exc:
                    log.warning("reading committed offsets failed", extra={"error": repr(exc), "attempt": attempt})
                    await asyncio.sleep(0.5 * 2 ** attempt)
            log.error("committed offsets unknown: the stream is trusted on these partitions until reassigned",
                      extra={"partitions": len(inputs)})

    async def _expect(self, inputs: list[Any]) -> None:
        """`continuity.assign`, a call per topic, all at once: a reader learns a topic it does not know yet from a
        failed first request and a retry 0.1 s later, one topic after the other in one call (0.45 s for the four
        input topics at a group's first start, holding up the first batch and the end of the group's join)."""
        by_topic: dict[str, list[Any]] = defaultdict(list)
        for tp in inputs:
            by_topic[tp.topic].append(tp)
        outcomes = await asyncio.gather(*(self.continuity.assign(tps) for tps in by_topic.values()),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

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
                # its new owner reports it; the last value left here would keep HeraldComplianceLagging firing
                metrics.LAG_MESSAGES.remove(tp.topic, str(tp.partition))
            self.announcements.forget(sorted({tp.partition for tp in tps if tp.topic in self._base}))
            for partition in {tp.partition for tp in tps if tp.topic in self._base} - self.owned:
                self._awaiting.pop(partition, None)  # its next owner finds them in the table
                self._waiting.pop(partition, None)

    async def catch_up(self, stalled_after: float) -> int:
        """Read straight from Kafka what an owned partition holds past the expected offset when nothing has come
        for `stalled_after` seconds (faust lost its tail); returns how many records were read."""
        async with self._lock:
            records = []
            for tp, (start, end) in (await self.continuity.stalled(stalled_after)).items():
                records.extend(await self.continuity.read(tp, start, min(end, start + CATCH_UP_RECORDS)))
            if records:
                # The documented fallback, which heals itself: nothing for an operator to do (the stuck-worker
                # alert fires if it does not keep up).
                log.info("faust delivered nothing for a while on partitions with records waiting: read them from "
                         "Kafka directly and applied them (the fallback; nothing to do)",
                         extra={"records": len(records), "reason": "stalled"})
                metrics.REFETCHED.labels("stalled").inc(len(records))
                await self._apply_records(records)
            return len(records)

    async def report_lag(self) -> None:
        """The lag of each owned input partition: the broker's end offset minus the next offset expected. Without
        the lock, so that it is reported whatever the batches are doing: a batch that does not end, a table
        recovery that does not end (the partitions are owned from their assignment on), a stream that stopped
        delivering. Otherwise only a processed batch would set it, and a stuck worker would keep its last value."""
        owned = list(self.continuity.expected)
        if not owned:
            return
        ends = await self.continuity.end_offsets(owned)
        # read again after the wait: a partition revoked meanwhile is its new owner's to report
        for tp, behind in lag(self.continuity.expected, ends).items():
            metrics.LAG_MESSAGES.labels(tp.topic, str(tp.partition)).set(behind)

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
        by_partition: dict[int, dict[str, list[Input]]] = defaultdict(lambda: defaultdict(list))
        passed_over: Counter[tuple[str, str]] = Counter()
        for record in ordered:
            if not has_type(record, self._acted_on):
                passed_over[self._base.get(record.topic, record.topic), _type_label(record)] += 1
                continue
            parsed = await self._parse(record)
            if parsed is not None and parsed.event.type.encode() not in self._acted_on:  # its type header lied
                passed_over[self._base.get(record.topic, record.topic), parsed.event.type] += 1
            elif parsed is not None:
                by_partition[record.partition][parsed.event.account_id].append(parsed)
        for (topic, type_), n in passed_over.items():
            metrics.EVENTS.labels(topic, type_, "ignored").inc(n)
        self._find_awaiting()
        sends = await self._sends_read(by_partition)
        for partition, by_account in by_partition.items():
            announced = await self.announcements.ready(partition)
            for account_id, items in by_account.items():
                await self._apply_account(account_id, partition, items, announced, sends)
        await self._judge_awaiting(sends)
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

    async def _sends_read(self, by_partition: Mapping[int, Mapping[str, list[Input]]]) -> SendsRead:
        """How far this worker has read the partitions that carry sends once this batch is applied, and, for those
        an unsubscribe of the batch is about, where they end now (asked of the broker: the consumer's high
        watermark is only as new as the partition's last fetch, which a paused or buffered partition skips)."""
        sends_topic = self.topics(SENDS_TOPIC)
        read_to = {f"{SENDS_TOPIC}:{tp.partition}": offset
                   for tp, offset in self.continuity.expected.items() if tp.topic == sends_topic}
        wanted = {source for by_account in by_partition.values() for items in by_account.values() for item in items
                  if (source := sends_source(item)) is not None and source in read_to}
        # and the sends' partitions of accounts with facts read before their own send (`awaiting_facts`, or a send
        # after its report in this batch): a send may be the one they wait for, and they then wait for where the
        # partition ends (a republished run of sends is judged whole, not by the part of it in this batch)
        wanted |= {source for partition, by_account in by_partition.items()
                   if (source := f"{SENDS_TOPIC}:{partition}") in read_to and source not in wanted
                   for account_id, items in by_account.items()
                   if (self.accounts.holds(account_id, b'"af":') and any(i.topic == SENDS_TOPIC for i in items))
                   or send_after_its_report(items)}
        if not wanted:
            return SendsRead(read_to)
        tps = [TopicPartition(sends_topic, int(source.rpartition(":")[2])) for source in sorted(wanted)]
        delay = 0.1
        while True:
            try:
                ends = await self.continuity.end_offsets(tps)
                break
            except TRANSIENT_ERRORS as exc:  # the broker is briefly away: the batch waits, as its announcements would
                log.warning("reading the sends' end offsets failed, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return SendsRead(read_to, {f"{SENDS_TOPIC}:{tp.partition}": end for tp, end in ends.items()})

    def _find_awaiting(self) -> None:
        """The accounts of partitions newly held here whose unsubscribes await their sends (written by the
        partition's previous owner, or before a restart): read from the accounts table once per assignment."""
        new = self.owned - set(self._awaiting)
        if not new:
            return
        for partition in new:
            self._awaiting[partition] = {}
            self._waiting[partition] = {}
        for account_id in {*self.accounts.keys_with(b'"as":'), *self.accounts.keys_with(b'"af":')}:
            partition = account_partition(account_id)
            stored = self.accounts.get(account_id)
            if partition in new and not is_purged(stored):
                self._note_awaiting(account_id, partition, AccountState.from_json(stored))

    def _note_awaiting(self, account_id: str, partition: int, state: AccountState) -> None:
        awaited = state.awaited()
        accounts = self._awaiting.setdefault(partition, {})
        if awaited:
            accounts[account_id] = min(awaited.values())
        else:
            accounts.pop(account_id, None)
        until = state.awaiting_facts_until(self.policy)
        if until is not None:
            self._waiting.setdefault(partition, {})[account_id] = until
        else:
            self._waiting.get(partition, {}).pop(account_id, None)

    async def _judge_awaiting(self, sends: SendsRead) -> None:
        """Judge again the accounts whose awaited sends this worker has now read, though this batch held none of
        their events: their unsubscribes join the rates now, never later than the sends they wait for."""
        now = time.time()
        for partition, accounts in list(self._awaiting.items()):  # judging one updates its entry
            read_to = sends.read_to.get(f"{SENDS_TOPIC}:{partition}")
            due = [account_id for account_id, offset in accounts.items() if read_to is None or read_to >= offset]
            clock = self._log_now(f"{SENDS_TOPIC}:{partition}", now)
            if clock is not None:
                due += [account_id for account_id, until in self._waiting.get(partition, {}).items()
                        if until < int(clock) and account_id not in due]
            if not due:
                continue
            announced = await self.announcements.ready(partition)
            for account_id in due:
                await self._apply_account(account_id, partition, [], announced, sends)

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

    async def _parse(self, message: Any) -> Input | None:
        base = self._base.get(message.topic, message.topic)
        try:
            event = validate_record(message, self.topics)
            expected = account_partition(message.key)
            if message.partition != expected:
                raise InvalidEvent(f"on partition {message.partition}, but its key belongs on partition {expected}"
                                   " (publish keyed by account_id with the default partitioner)")
        except InvalidEvent as exc:
            await self.dead_letters.send(message, str(exc), "invalid")  # one of DEAD_LETTERED_AS
            metrics.EVENTS.labels(base, "unknown", "dead_lettered").inc()
            return None
        self._event_age[base].observe(max(0.0, time.time() - event.occurred_at.timestamp()))
        return Input(event, f"{base}:{message.partition}", message.offset, produced_at(message))

    async def _apply_account(self, account_id: str, partition: int, items: list[Input], announced: set[str],
                             sends: SendsRead) -> None:
        stored = self.accounts.get(account_id)
        if is_purged(stored) or any(isinstance(item.event, AccountPurged) for item in items):
            if not is_purged(stored):
                self._purge(account_id, partition)
            for item in items:
                metrics.EVENTS.labels(item.topic, item.event.type, "purged").inc()
            self._awaiting.get(partition, {}).pop(account_id, None)
            self._waiting.get(partition, {}).pop(account_id, None)
            return
        state = AccountState.from_json(stored)
        clock = self._log_now(f"{SENDS_TOPIC}:{partition}", time.time()) if state.awaiting_facts else None
        decision = decide(account_id, state, items, FactIndex(self.facts, account_id, partition),
                          ListTable(self.lists, account_id, partition), self.policy, announced, datetime.now(UTC),
                          sends, None if clock is None else int(clock))
        if state.awaiting_sends or state.awaiting_facts or account_id in self._awaiting.get(partition, {}) or \
                account_id in self._waiting.get(partition, {}):
            self._note_awaiting(account_id, partition, state)
        for labels, n in decision.outcomes.items():  # counted into Prometheus once per account and batch
            metrics.EVENTS.labels(*labels).inc(n)
        for event in decision.announcements:
            if not await self._publish(event, announced):
                continue  # a replay found it announced already
            if isinstance(event, AccountSuspended | AccountWarned):
                p = event.payload
                scope = p.scope.kind if p.scope is not None else "list"  # one-off sending is about lists
                if isinstance(event, AccountSuspended):
                    metrics.SUSPENSIONS.labels(p.metric, scope).inc()
                    log.warning("account suspended", extra={"account_id": account_id, "reason": event.payload.reason})
                else:
                    metrics.WARNINGS.labels(p.metric, scope).inc()
        self.accounts.put(partition, account_id, state.to_json())

    def _purge(self, account_id: str, partition: int) -> None:
        """Retention (AccountPurged): the account's counts, facts and lists leave the tables (a tombstone in
        their changelogs), and its state becomes a marker that drops its later events. The facts and lists
        tables are not indexed by account: a purge reads them once."""
        prefix = f"{account_id}|"
        self.facts.delete_account(account_id)
        for key in [k for k in self.lists.keys() if k.startswith(prefix)]:
            self.lists.delete(partition, key)
        self.accounts.put(partition, account_id, PURGED)
        log.info("account purged", extra={"account_id": account_id})

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

    async def limit_facts(self, max_facts: int, now: float) -> int:
        """Keep at most `max_facts` facts (standby copies included): when more are held, forget the oldest hours
        of this worker's own partitions' facts (`domain.plan_forgetting`) before the dedupe horizon would,
        down to 90% of the limit, but never the facts of the last SWEEP_MARGIN_SECONDS (nor hours after them).
        Each account that loses facts first records, durably, up to which time they were forgotten
        (`forgotten_until`), and only then are they deleted: from then on a fact of that time which is no
        longer remembered is late, never counted twice, whatever crashes in between. When the limit cannot be
        reached so, the next try waits until 5% of the limit more facts are held. Returns how many it forgot."""
        held = len(self.facts)
        if held <= max_facts:
            self._next_limit_check = 0
            return 0
        if held <= self._next_limit_check:
            return 0
        # Counted without the lock (nothing is changed): the batches go on meanwhile.
        per_hour: Counter[int] = Counter()
        for n, _, _, marker, _ in self._owned_facts():
            if n % 5000 == 4999:
                await asyncio.sleep(0)
            per_hour[marker[2] // 3600] += 1
        plan = plan_forgetting(per_hour, held, max_facts, int(now - SWEEP_MARGIN_SECONDS) // 3600)
        self._next_limit_check = 0 if plan.within_limit else held + max_facts // 20
        if not plan.within_limit:
            log.error("the fact index stays over its limit (recent facts, or standby copies): raise "
                      "HERALD_COMPLIANCE_MAX_FACTS", extra={"held": held, "own": sum(per_hour.values()),
                                                            "max_facts": max_facts})
        cutoff = plan.cutoff
        if cutoff is None:
            return 0
        # Which accounts lose facts, and up to which time: read without the lock too.
        until: dict[str, int] = {}
        for n, _, account_id, marker, _ in self._owned_facts():
            if n % 5000 == 4999:
                await asyncio.sleep(0)
            if marker[2] < cutoff * 3600:
                until[account_id] = max(until.get(account_id, 0), int(marker[2]))
        recorded: dict[str, int] = {}  # account → the time recorded as forgotten up to
        async with self._lock:  # not between a batch's reading and writing of an account's state
            for account_id, at in until.items():
                stored = self.accounts.get(account_id)
                if stored is None or is_purged(stored):
                    continue  # nothing recorded to say what was forgotten: kept (a purge takes them)
                state = AccountState.from_json(stored)
                state.forgotten_until = max(state.forgotten_until or 0, at)
                self.accounts.put(account_partition(account_id), account_id, state.to_json())
                recorded[account_id] = at
            await self.accounts.durable()
        # Only then the facts go, a part of the index at a time; only those of a time recorded as forgotten (a
        # fact claimed since the first read, later than that time, stays).
        forgotten = await self._forget_in_parts(
            lambda account_id, marker: account_id in recorded and marker[2] <= recorded[account_id])
        metrics.FORGOTTEN.inc(forgotten)
        metrics.DEDUPE_ENTRIES.set(len(self.facts))
        if forgotten:
            log.warning("the fact index was full: forgot the oldest facts before the dedupe horizon", extra={
                "forgotten": forgotten, "accounts": len(recorded), "max_facts": max_facts,
                "kept_from": datetime.fromtimestamp(cutoff * 3600, UTC).isoformat()})
        return forgotten

    async def _forget_in_parts(self, doomed: Callable[[str, Any], bool]) -> int:
        """Forget each fact of this worker's partitions that `doomed(account, marker)` names, going through the
        index in parts (SWEEP_PART buckets, each part's deletions written before the next) and taking the
        batches' lock for one part at a time: batches go on between the parts, so a pass over millions of facts
        holds none of them up for long. Returns how many it forgot."""
        forgotten = 0
        for start in range(0, BUCKETS, SWEEP_PART):
            async with self._lock:  # not between a batch's fact claims and its durable() write
                for n, fact, account_id, marker, partition in self._owned_facts(start, start + SWEEP_PART):
                    if n % 5000 == 4999:
                        await asyncio.sleep(0)  # heartbeats and HTTP go on
                    if doomed(account_id, marker):
                        self.facts.delete(account_id, partition, fact)
                        forgotten += 1
                await self.facts.durable()
            await asyncio.sleep(0)  # a batch waiting for the lock takes it now
        return forgotten

    def _owned_facts(self, start: int = 0, stop: int = BUCKETS) -> Iterator[tuple[int, bytes, str, Any, int]]:
        """(n, digest, account, marker, partition) of each fact of the partitions this worker holds (not standby
        copies), of the index's buckets from `start` to `stop`, n counting every fact looked at; a fact whose
        marker is not one (garbled) is passed over."""
        for n, (fact, account_id, partition, marker) in enumerate(self.facts.all(start, stop)):
            if partition in self.owned and _is_marker(marker):
                yield n, fact, account_id, marker, partition

    async def sweep_facts(self, horizon_seconds: int, now: float) -> int:
        """Forget the facts of this worker's partitions that happened more than the dedupe horizon (the longest
        window) before their partition's log time: a duplicate of one of them would be too late to count anyway
        (Policy.too_late). Standby copies are their owner's to sweep. In parts (`_forget_in_parts`); returns how
        many it forgot."""
        log_now: dict[str, float | None] = {}

        def expired(_: str, marker: Any) -> bool:
            source = marker[0]
            if source not in log_now:
                log_now[source] = self._log_now(source, now)
            read_to = log_now[source]
            return read_to is not None and marker[2] < read_to - horizon_seconds - SWEEP_MARGIN_SECONDS

        return await self._forget_in_parts(expired)
