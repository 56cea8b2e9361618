"""Every use of faust's internals, in one place.

The processor relies on faust-streaming for the consumer group, the tables and their recovery from changelogs,
and reaches past its public API in two places, both here:

- `ChangelogTable` reads and writes a table's in-memory data (the memory store's dict, `Table.data.data`, and
  its key → partition map, `_key_partition`, which decides what the store drops after a rebalance) and
  writes its changelog itself, encoding keys and values with the changelog topic's `prepare_key` /
  `prepare_value` so that faust's recovery reads them back;
- `Acknowledgements` marks records faust never delivered as processed, through its consumer's `_acked`,
  `_acked_index` and `_committed_offset` under `faust.types.tuples.ack_lock`;
- `PreloadedStore` (the tables' store, `STORE_URL`) is faust's memory store recovering its active partitions
  itself: on a rebalance (`Store.on_rebalance`, which faust's table manager calls before its `Recovery` looks
  at the partitions) it reads their changelogs straight from Kafka, and `persisted_offset` tells the recovery
  where to go on from. faust's recovery applies ~5,000 changelog records a second here (1,220,320 facts took
  243 s); a plain consumer reads ~100,000.
- `FactStore` (the facts table's store, `FACT_STORE_URL`) is that store with `packed_facts.PackedFacts` in
  place of the memory store's dict and key → partition map (about 40 bytes a fact instead of ~250), taking
  faust's recovery (`apply_changelog_batch`) and its end (`on_recovery_completed`) in their place; `FactTable`
  reads and writes it, and writes its changelog as `ChangelogTable` does.
- `Transport` (the broker URLs' scheme, `TRANSPORT_SCHEME`) is faust's aiokafka transport whose consumer hands
  each fetched record to the streams without four tasks and an `asyncio.wait` when it can (`Consumer`), and
  whose aiokafka consumer long-polls an idle fetch for `FETCH_MAX_WAIT_MS` instead of faust's fixed 1.5 s
  (`ConsumerThread`: the offset requests of the table recovery wait behind that poll);
- `TableManager` (the app's `TableManager` setting) is faust's without the fixed second its start sleeps before
  the consumer may subscribe.

`tests/unit/compliance/test_faust_adapter.py` checks each of them against the installed faust and fails, naming
what changed, on an upgrade that moves them. Known good: the versions in `KNOWN_GOOD_FAUST`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust import stores
from faust.stores import memory
from faust.tables import manager
from faust.transport import drivers
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.types.tuples import ack_lock

from . import packed_facts
from .packed_facts import PackedFacts

KNOWN_GOOD_FAUST = ("0.15.3",)  # faust-streaming versions this module was checked against (README, compliance)
STORE_URL = "herald-memory://"
# the facts table's store, `FactStore` (with something after the scheme: an empty URL is falsy, and faust would
# take the app's store instead)
FACT_STORE_URL = "herald-facts://memory"
PRELOAD_BATCH = 20_000  # changelog records fetched at once by the preload
TRANSPORT_SCHEME = "herald-kafka"  # the broker URLs' scheme: faust's aiokafka transport with `Consumer`
# How long the broker may hold a fetch that finds nothing new (faust: 1.5 s, aiokafka: 0.5 s). Kafka answers a
# connection's requests in order, so an offset request sent meanwhile waits for that fetch: the table recovery's
# offset look-ups took 1.5 s at each start and rebalance. New records end a held fetch at once, whatever this is.
FETCH_MAX_WAIT_MS = 100
# A reader made for one read (the preload, the announcements) learns its topic on its first offset request, which
# fails once and is retried after this (aiokafka: 100 ms, once per topic, three tables in a row at each start).
READER_RETRY_BACKOFF_MS = 20


def decode(value: Any) -> Any:
    # Values are written as JSON bytes; faust hands recovered values back already decoded.
    return json.loads(value) if isinstance(value, bytes | str) else value


class _Changelog:
    """What a table whose changelog this service writes itself has: the records changed since the last
    `durable()`, each key's last value, per partition (see `ChangelogTable`)."""

    def __init__(self, table: Any, producer: AIOKafkaProducer) -> None:
        self.table, self._producer = table, producer
        self._pending: dict[tuple[int, str], bytes | None] = {}

    async def durable(self) -> None:
        """Write what was changed since the last call to the changelog, and wait until Kafka has it."""
        await durable(self)

    def _take(self) -> dict[tuple[int, str], bytes | None]:
        pending, self._pending = self._pending, {}
        return pending

    def _restore(self, pending: dict[tuple[int, str], bytes | None]) -> None:
        # written again next time, ahead of anything newer: a key written since keeps its newer value and its
        # place after them (two keys of one fact, see FactTable, are written in the order they were changed)
        self._pending = {**{k: v for k, v in pending.items() if k not in self._pending}, **self._pending}

    async def _send(self, pending: dict[tuple[int, str], bytes | None]) -> list[tuple[int, int, asyncio.Future[Any]]]:
        """Send the records; returns each record batch's partition, record count and future."""
        if not pending:
            return []
        changelog = self.table.changelog_topic
        name = changelog.get_topic_name()
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for (partition, key), raw in pending.items():
            # encoded exactly as faust encodes its own changelog writes, so its recovery reads them back
            key_bytes = changelog.prepare_key(key, self.table.key_serializer)[0]
            value = None if raw is None else changelog.prepare_value(raw, self.table.value_serializer)[0]
            by_partition.setdefault(partition, []).append((key_bytes, value))
        sent: list[tuple[int, int, asyncio.Future[Any]]] = []
        for partition, records in by_partition.items():
            batch, count = self._producer.create_batch(), 0
            for key_bytes, value in records:
                if batch.append(key=key_bytes, value=value, timestamp=None) is None:  # full: send it, go on
                    sent.append((partition, count, await self._producer.send_batch(batch, name, partition=partition)))
                    batch, count = self._producer.create_batch(), 0
                    if batch.append(key=key_bytes, value=value, timestamp=None) is None:
                        raise ValueError(f"a {name} record of {len(value or b'')} bytes fits in no batch")
                count += 1
            sent.append((partition, count, await self._producer.send_batch(batch, name, partition=partition)))
        return sent

    def _note_written(self, partition: int, offset: int) -> None:
        store = self.table.data
        if isinstance(store, PreloadedStore):
            store.written(partition, offset)


class ChangelogTable(_Changelog):
    """A faust table (str → JSON bytes) whose changelog this service writes itself, with the partition given
    explicitly: batches from `take_events` run outside the per-event context faust uses to pick the changelog
    partition, and faust's own buffered sends are no guarantee. Its flush before a commit gives up after 0.1 s
    when the buffer is full (the kill test lost counts that way), and awaiting those sends stalled under load.

    Writes go through the service's idempotent producer, each changed key once per `durable()` (its last value),
    in one record batch per changelog partition; a batch is acknowledged only after `durable()`."""

    def __init__(self, table: Any, producer: AIOKafkaProducer) -> None:
        super().__init__(table, producer)
        # the memory store's own dict (key → stored value): `Store.data`, through its mapping methods, costs a
        # Python call per look-up
        self.data: dict[str, Any] = table.data.data
        # the memory store's key → partition map: it learns keys' partitions from the changelogs it recovers,
        # and after each recovery drops the keys of partitions no longer active here. Keys written here are
        # entered too, or a worker would keep the facts of every partition it ever held
        self._key_partition: dict[str, int] = table.data._key_partition

    def get(self, key: str) -> Any:
        return decode(self.data.get(key))

    def keys(self) -> list[str]:
        return list(self.data)

    def keys_with(self, fragment: bytes) -> list[str]:
        """The keys whose stored JSON holds `fragment` (a superset of those with a field of that name): a scan of
        the raw values, without decoding each."""
        return [key for key, raw in self.data.items() if raw is not None and fragment in raw]

    def holds(self, key: str, fragment: bytes) -> bool:
        """Whether the stored JSON of `key` holds `fragment`, without decoding it."""
        raw = self.data.get(key)
        return raw is not None and fragment in raw

    def put(self, partition: int, key: str, value: Any) -> None:
        raw = json.dumps(value, separators=(",", ":")).encode()
        self.data[key] = raw
        self._key_partition[key] = partition
        self._pending[partition, key] = raw

    def delete(self, partition: int, key: str) -> None:
        self.data.pop(key, None)
        self._key_partition.pop(key, None)
        self._pending[partition, key] = None

    def __len__(self) -> int:
        return len(self.data)


class FactTable(_Changelog):
    """The facts table: a faust table on `FactStore` (`FACT_STORE_URL`), whose memory is `PackedFacts` (about 40
    bytes a fact), its changelog written here as `ChangelogTable` writes its own. A fact is named by its account
    and its key within the account; in the changelog it is `<account>|#<digest>` → the marker's JSON."""

    def __init__(self, table: Any, producer: AIOKafkaProducer) -> None:
        super().__init__(table, producer)
        self.facts: PackedFacts = table.data.data
        self._last: tuple[str, str, bytes] = ("", "", b"")  # a claim looks a fact up, then puts it: hashed once

    def _digest(self, account_id: str, fact_key: str) -> bytes:
        account, key, fact_digest = self._last
        if account != account_id or key != fact_key:
            fact_digest = packed_facts.digest(account_id, fact_key)
            self._last = (account_id, fact_key, fact_digest)
        return fact_digest

    def get(self, account_id: str, fact_key: str) -> Any:
        return self.facts.get(self._digest(account_id, fact_key))

    def put(self, partition: int, account_id: str, fact_key: str, marker: Any) -> None:
        fact_digest = self._digest(account_id, fact_key)
        self.facts.put(fact_digest, account_id, partition, marker)
        key = (partition, packed_facts.changelog_key(account_id, fact_digest))
        self._pending.pop(key, None)  # after the tombstones of a deletion not written yet (`_tombstones`)
        self._pending[key] = json.dumps(marker, separators=(",", ":")).encode()

    def delete(self, account_id: str, partition: int, fact_digest: bytes) -> None:
        """Forget one fact (as `all()` names it), in memory and in the changelog."""
        self._tombstones(account_id, partition, fact_digest, self.facts.delete(fact_digest))

    def delete_account(self, account_id: str) -> int:
        """Forget every fact of an account (a purge); returns how many."""
        gone = self.facts.remove_where(lambda account, _: account != account_id)
        for account, partition, fact_digest, earlier in gone:
            self._tombstones(account, partition, fact_digest, earlier)
        return len(gone)

    def all(self, start: int = 0, stop: int = packed_facts.BUCKETS) -> Iterator[tuple[bytes, str, int, Any]]:
        """(digest, account, partition, marker) of every fact held (standby copies included), or those of some
        buckets; see `PackedFacts.facts`."""
        return self.facts.facts(start, stop)

    def keys(self) -> list[str]:
        """Every fact's changelog key (for inspection and tests: it builds a string per fact)."""
        return [packed_facts.changelog_key(account, fact_digest) for fact_digest, account, _, _ in self.all()]

    def _tombstones(self, account_id: str, partition: int, fact_digest: bytes, earlier: str | None) -> None:
        self._pending[partition, packed_facts.changelog_key(account_id, fact_digest)] = None
        if earlier is not None:  # read in the earlier format: that record goes too
            self._pending[partition, earlier] = None

    def __len__(self) -> int:
        return len(self.facts)


async def durable(*tables: _Changelog) -> None:
    """Write what the tables changed since their last write to their changelogs, all at once, and wait until
    Kafka has all of it; on failure, everything is written again next time."""
    taken = [(table, table._take()) for table in tables]
    try:
        sent = [(table, partition, count, future) for table, pending in taken
                for partition, count, future in await table._send(pending)]
        written = await asyncio.gather(*(future for *_, future in sent))
    except BaseException:
        for table, pending in taken:
            table._restore(pending)
        raise
    for (table, partition, count, _), metadata in zip(sent, written, strict=True):
        if metadata is not None:  # (a producer without acknowledgements learns no offsets)
            table._note_written(partition, metadata.offset + count - 1)  # a batch's offset is its first record's


class Acknowledgements:
    """Tells faust's consumer that records it never delivered (read here from Kafka) were processed, the way its
    own `ack()` records a delivered one, so its commits move past them: otherwise they stay behind the first
    such record for the life of the process, and its list of acknowledged offsets grows without end.
    tests/integration/compliance/test_continuity.py checks that the commits move."""

    def __init__(self, consumer: Callable[[], Any]) -> None:
        self._consumer = consumer

    def acknowledge(self, tp: TopicPartition, offsets: Iterable[int]) -> None:
        consumer = self._consumer()
        key = TP(tp.topic, tp.partition)
        with ack_lock:
            committed = consumer._committed_offset[key]
            index, acked = consumer._acked_index[key], consumer._acked[key]
            for offset in offsets:
                if (committed is None or offset >= committed) and offset not in index:
                    index.add(offset)
                    acked.append(offset)

    def forget(self, tps: Iterable[Any]) -> None:
        """Drop what was acknowledged on partitions taken away, as faust does for its own (a batch that finished
        during the revocation may have acknowledged after faust cleared them)."""
        consumer = self._consumer()
        with ack_lock:
            for tp in tps:
                key = TP(tp.topic, tp.partition)
                consumer._acked.pop(key, None)
                consumer._acked_index.pop(key, None)


class PreloadedStore(memory.Store[str, bytes]):
    """faust's memory store, whose active partitions are recovered here before faust's own recovery starts: on a
    rebalance, each changelog partition newly active on this worker (not complete here already) is read from its
    beginning to its end straight from Kafka and applied as faust's recovery would apply it; `persisted_offset`
    then hands faust's recovery the last offset read, so it reads only what came after (faust re-reads that one
    record too: harmless, a record applied twice leaves the same value). Standby partitions are left to faust.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._complete: set[int] = set()  # partitions whose state is whole here (as of the last recovery)
        self._preloaded: dict[int, int] = {}  # partition → last changelog offset read here, for faust's recovery
        self._written: dict[int, int] = {}  # partition → last changelog offset this worker wrote (`durable`)
        self.preloaded_records = 0  # changelog records applied by the preload, since the process started

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        topic = self.table.changelog_topic.get_topic_name()
        actives = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        todo = sorted(actives - self._complete - set(self._preloaded))
        if todo:
            self._preloaded.update(await self._read_changelog(topic, todo))

    def persisted_offset(self, tp: TP) -> int | None:
        """Where faust's recovery goes on from: the preload's last record, or, on a partition whose state stayed
        whole here, the last record this worker wrote. Otherwise faust reads again from where its last recovery
        ended, everything this worker wrote since included (faust does not see the adapter's writes): a worker
        keeping its partitions through a rebalance spent 1.3 s re-reading a second of its own writes."""
        partition = tp.partition
        if partition in self._preloaded:
            return self._preloaded[partition]
        if partition in self._complete and tp in self.app.assignor.assigned_actives():
            return self._written.get(partition)
        return None

    def written(self, partition: int, offset: int) -> None:
        """This worker's write at `offset` of the partition's changelog is in Kafka (and in this store)."""
        if offset > self._written.get(partition, -1):
            self._written[partition] = offset

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        self._complete = {tp.partition for tp in active_tps}
        self._preloaded.clear()
        self._written = {p: offset for p, offset in self._written.items() if p in self._complete}

    async def _read_changelog(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Apply the partitions' changelog records from the beginning to the end they had when asked; returns
        the last offset read of each partition that had any."""
        self._forget(partitions)  # whatever an earlier holding of these partitions left: the changelog says it all
        for partition in partitions:
            self._written.pop(partition, None)
        brokers = ",".join(f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker)
        consumer = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=None, enable_auto_commit=False,
                                    **aiokafka_driver.credentials_to_aiokafka_auth(self.app.conf.broker_credentials),
                                    auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                    retry_backoff_ms=READER_RETRY_BACKOFF_MS, max_partition_fetch_bytes=8 << 20,
                                    client_id=f"{topic}-preload")
        await consumer.start()
        last: dict[int, int] = {}
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            # asked before anything is assigned: with a fetch in flight, these requests would wait for it
            # (FETCH_MAX_WAIT_MS), and an empty changelog needs no fetch at all
            firsts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            left = {tp for tp in tps if firsts[tp] < ends[tp]}
            if left:
                consumer.assign(sorted(left))
                await consumer.seek_to_beginning(*left)
            while left:
                fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=PRELOAD_BATCH)
                for tp, records in fetched.items():
                    self.preloaded_records += self._apply(tp.partition, ((r.key, r.value) for r in records))
                    if records:
                        last[tp.partition] = records[-1].offset
                for tp in list(left):
                    if await consumer.position(tp) >= ends[tp]:
                        left.discard(tp)
        finally:
            await consumer.stop()
        return last

    def _forget(self, partitions: list[int]) -> None:
        gone = [key for key, partition in self._key_partition.items() if partition in partitions]
        for key in gone:
            self.data.pop(key, None)
            self._key_partition.pop(key, None)

    def _apply(self, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        return apply_changelog(self, partition, records)


class FactStore(PreloadedStore):
    """The facts table's store: `PreloadedStore` whose memory is `PackedFacts` in place of the memory store's
    dict (and its key → partition map: a packed fact holds its partition). Changelog records reach it through
    the preload (active partitions) and through faust's recovery (`apply_changelog_batch`: standby copies, and
    what came after the preload), in either key format (see `packed_facts`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.data: PackedFacts = PackedFacts()  # type: ignore[assignment]

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        for event in batch:
            key = to_key(event.key)
            if isinstance(key, str):  # any other is no key this service wrote (faust's store could not place it)
                self.data.apply(event.message.partition, key,
                                None if event.message.value is None else to_value(event.value))

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        # as the memory store does with its key → partition map: what is not active here now leaves memory
        actives = {tp.partition for tp in active_tps}
        self.data.remove_where(lambda _, partition: partition in actives)
        await super().on_recovery_completed(active_tps, standby_tps)

    def _forget(self, partitions: list[int]) -> None:
        self.data.drop_partitions(partitions)

    def _apply(self, partition: int, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        read = 0
        for key, value in changelog_keys(records):
            read += 1
            if key is not None:
                self.data.apply(partition, key, value)
        return read


def changelog_keys(records: Iterable[tuple[bytes | None, bytes | None]]) -> Iterator[tuple[str | None, bytes | None]]:
    """Changelog records with their keys decoded as the changelog topic encoded them (JSON); None for a key that
    is not a string the adapter wrote (faust's recovery could not place it either)."""
    for raw_key, value in records:
        try:
            key = json.loads(raw_key) if raw_key is not None else None
        except ValueError:
            key = None
        yield (key if isinstance(key, str) else None), value


def apply_changelog(store: memory.Store[str, bytes], partition: int,
                    records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Changelog records (key and value as written: the key JSON-encoded by the changelog topic, the value the
    adapter's JSON bytes; None deletes) applied to a memory store as faust's recovery applies them, with one
    difference: values stay the bytes the adapter writes, where faust's recovery decodes them (`get` reads
    either; bytes take a third of the memory). Returns how many records were read."""
    data, key_partition = store.data, store._key_partition
    read = 0
    for key, value in changelog_keys(records):
        read += 1
        if key is None:
            continue
        if value is None:
            data.pop(key, None)
            key_partition.pop(key, None)
        else:
            data[key] = value
            key_partition[key] = partition
    return read


class Consumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, handing records to the streams more cheaply.

    faust's fetch loop (`Consumer._drain_messages`) hands each record to the conductor as
    `await self.wait_first(deliver(record), self.suspend_flow.wait())`, so that a delivery stuck on a full
    stream buffer or on paused flow is given up when a rebalance suspends the flow. `wait_first` makes four
    tasks (the delivery, the suspension, the consumer's stop and crash) and an `asyncio.wait` for every record:
    ~48 µs here, half of what faust's stream costs a record. This one runs the delivery in place first, in a
    copy of the context as a task would: the usual delivery (decode, put in a buffer with room) finishes in that
    one step, and nothing else is made. Then it lets the loop run once, as the tasks did: the stream takes each
    record out as it comes. Without that the fetch loop filled the stream's buffer to its high mark, faust took
    the partitions out of the fetch until it drained, and the worker did less than before (200,000 sends:
    6,577 to 6,934 events/s handed over against 8,422 to 8,905; yielding after every 10th record, the same). A
    delivery that has to wait goes on in a task, through faust's own `wait_first` with the suspension, exactly
    as before. Only that call is changed: any other goes to faust."""

    deliveries_in_place = 0  # records handed over in one step (a test checks that the fast way is taken)

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109 - faust's signature
        if not (len(coros) == 2 and timeout is None and self._waits_for_suspension(coros[1])):
            return await super().wait_first(*coros, timeout=timeout)
        deliver, suspended = coros
        if self.suspend_flow.is_set() or self._stopped.is_set() or self._crashed.is_set():
            return await super().wait_first(deliver, suspended)
        context = contextvars.copy_context()
        try:
            step = context.run(deliver.send, None)
        except StopIteration:
            suspended.close()
            Consumer.deliveries_in_place += 1
            await asyncio.sleep(0)  # the stream takes it out now, as it did while the tasks ran (see above)
            return None  # faust's loop does not read what wait_first returns
        except BaseException:
            suspended.close()
            raise
        rest = asyncio.get_running_loop().create_task(_resume(deliver, step), context=context)
        return await super().wait_first(rest, suspended)

    def _waits_for_suspension(self, coro: Any) -> bool:
        """True for a coroutine of `self.suspend_flow.wait()` not started yet."""
        return (getattr(coro, "cr_code", None) is asyncio.Event.wait.__code__ and coro.cr_frame is not None
                and coro.cr_frame.f_locals.get("self") is self.suspend_flow)


class _Resumed:
    """A coroutine that was stepped once outside a task (it yielded `step`), awaitable so that a task goes on
    driving it from there: what the task sends or throws in goes to the coroutine, what it yields goes out."""

    def __init__(self, coro: Coroutine[Any, Any, Any], step: Any) -> None:
        self._coro, self._step = coro, step

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step = self._coro, self._step
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as thrown:  # a cancellation, or whatever the task throws in
                try:
                    step = coro.throw(thrown)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    step = coro.send(sent)
                except StopIteration as done:
                    return done.value


async def _resume(coro: Coroutine[Any, Any, Any], step: Any) -> Any:
    return await _Resumed(coro, step)


class ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's thread around its aiokafka consumer, whose idle fetches are held for FETCH_MAX_WAIT_MS, not 1.5 s
    (faust passes a constant; aiokafka reads `_fetch_max_wait_ms` when the consumer starts)."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class Transport(aiokafka_driver.Transport):
    """faust's aiokafka transport with `Consumer` as its consumer."""

    Consumer = Consumer


class TableManager(manager.TableManager):
    """faust's table manager, starting without the second faust sleeps first (time for tables declared late to
    be added; this service declares its three before the app starts). The consumer subscribes only once this
    start is done, so that second delayed every worker's first group join."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


drivers.TRANSPORTS.aliases.setdefault(TRANSPORT_SCHEME, f"{__name__}:Transport")
stores.STORES.aliases.setdefault(STORE_URL.removesuffix("://"), f"{__name__}:PreloadedStore")
stores.STORES.aliases.setdefault(FACT_STORE_URL.split("://")[0], f"{__name__}:FactStore")
