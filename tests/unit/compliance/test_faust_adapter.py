"""The contract between `herald_compliance.faust_adapter` and the installed faust-streaming.

The adapter is the one module that reaches into faust's internals. Each test here checks one thing it relies on
against faust itself (no broker needed), so an upgrade that moves any of them fails here, by name, and not as
lost counts in a kill test. When one fails: read the new faust, mend the adapter, and add the version to
`KNOWN_GOOD_FAUST`.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import json
from importlib.metadata import version
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust import stores
from faust.tables import manager
from faust.types import TP
from faust.types.tuples import Message

from herald_compliance import packed_facts
from herald_compliance.faust_adapter import (
    FACT_STORE_URL,
    FETCH_MAX_WAIT_MS,
    KNOWN_GOOD_FAUST,
    STORE_URL,
    TRANSPORT_SCHEME,
    Acknowledgements,
    ChangelogTable,
    Consumer,
    ConsumerThread,
    FactStore,
    FactTable,
    PreloadedStore,
    TableManager,
    apply_changelog,
    durable,
)
from herald_compliance.packed_facts import PackedFacts


def make_app() -> faust.App:
    return faust.App("herald-adapter-contract", broker="kafka://127.0.0.1:1", store="memory://",
                     web_enabled=False, autodiscover=False)


def make_table(app: faust.App, name: str = "facts") -> Any:
    schema: Any = faust.Schema(key_type=str, value_type=bytes, key_serializer="raw", value_serializer="raw")
    return app.Table(name, schema=schema, partitions=6)


class RecordingProducer:
    """Stands in for aiokafka's producer: keeps the record batches the table hands over, per topic and partition,
    and answers each with the offset of its first record, as aiokafka's does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []
        self.ends: dict[tuple[str, int], int] = {}

    def create_batch(self) -> RecordingBatch:
        return RecordingBatch()

    async def send_batch(self, batch: RecordingBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.records))
        first = self.ends.get((topic, partition), 0)
        self.ends[topic, partition] = first + len(batch.records)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(RecordMetadata(first))
        return future


class RecordMetadata:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class RecordingBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []

    def append(self, *, key: bytes, value: bytes | None, timestamp: float | None) -> object:
        self.records.append((key, value))
        return object()


def test_the_installed_faust_is_a_version_the_adapter_was_checked_against() -> None:
    installed = version("faust-streaming")
    assert installed in KNOWN_GOOD_FAUST, (
        f"faust-streaming {installed} is not among {KNOWN_GOOD_FAUST}: run this module's tests, read what changed "
        "in faust's Consumer (ack, _new_offset) and memory Store, then add the version")


def test_the_memory_store_keeps_its_values_in_a_plain_dict_the_adapter_shares() -> None:
    table = make_table(make_app())
    adapter = ChangelogTable(table, RecordingProducer())
    assert type(table.data.data) is dict
    adapter.put(2, "acc|s:m1", ["herald.delivery:2", 7, 1700000000, 0])
    assert table.data["acc|s:m1"] == b'["herald.delivery:2",7,1700000000,0]'  # faust's own mapping sees it
    assert adapter.get("acc|s:m1") == ["herald.delivery:2", 7, 1700000000, 0]


async def test_keys_written_for_a_partition_that_moved_away_leave_memory_after_the_next_recovery() -> None:
    """faust's memory store drops, once a rebalance's recovery completes, the keys of partitions no longer
    active on this worker, by its key → partition map; the adapter enters the keys it writes there, so a worker
    does not keep (in memory, unswept) the facts of every partition it ever held."""
    table = make_table(make_app())
    adapter = ChangelogTable(table, RecordingProducer())
    adapter.put(1, "acc-1|s:m1", [1])
    adapter.put(4, "acc-4|s:m1", [4])
    adapter.put(4, "acc-4|s:m2", [4])
    adapter.delete(4, "acc-4|s:m2")
    assert table.data._key_partition == {"acc-1|s:m1": 1, "acc-4|s:m1": 4}
    await table.data.on_recovery_completed({TP(table.changelog_topic.get_topic_name(), 1)}, set())
    assert adapter.keys() == ["acc-1|s:m1"]  # partition 4 went to another worker


async def test_what_the_adapter_writes_to_a_changelog_is_what_faust_recovery_reads_back() -> None:
    app = make_app()
    written, recovered = make_table(app, "written"), make_table(app, "recovered")
    producer = RecordingProducer()
    adapter = ChangelogTable(written, producer)
    adapter.put(1, "acc-1|s:m1", [1, 2])
    adapter.put(1, "acc-1|s:m2", {"k": "v"})
    adapter.put(1, "acc-1|s:m1", [3, 4])  # written once per batch: its last value
    adapter.put(4, "acc-9", {"t": 1})
    adapter.put(4, "gone", 1)
    adapter.delete(4, "gone")
    await durable(adapter)
    topic = written.changelog_topic.get_topic_name()
    assert {(t, p) for t, p, _ in producer.sent} == {(topic, 1), (topic, 4)}
    assert sum(len(records) for _, _, records in producer.sent) == 4  # one record per key changed

    # faust's recovery: each changelog record decoded by the changelog topic, then applied to the store with
    # the table's own key and value conversions
    events = [await recovered.changelog_topic.decode(Message(topic, p, offset, 0.0, 0, [], key, value, None))
              for _, p, records in producer.sent for offset, (key, value) in enumerate(records)]
    recovered.apply_changelog_batch(events)
    reader = ChangelogTable(recovered, producer)
    assert {k: reader.get(k) for k in reader.keys()} == {"acc-1|s:m1": [3, 4], "acc-1|s:m2": {"k": "v"},
                                                         "acc-9": {"t": 1}}


async def test_a_failed_changelog_write_is_written_again_with_anything_newer_winning() -> None:
    table = make_table(make_app())
    producer = RecordingProducer()
    adapter = ChangelogTable(table, producer)

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("broker away")

    adapter.put(0, "a", 1)
    adapter.put(0, "b", 1)
    original, producer.send_batch = producer.send_batch, refuse
    with pytest.raises(ConnectionError):
        await adapter.durable()
    adapter.put(0, "b", 2)
    producer.send_batch = original
    await adapter.durable()
    encoded = {table.changelog_topic.prepare_key(k, table.key_serializer)[0]: v for k, v in (("a", b"1"), ("b", b"2"))}
    assert dict(producer.sent[-1][2]) == encoded


def test_acknowledging_records_faust_never_delivered_moves_its_commit_offset() -> None:
    app = make_app()
    consumer: Any = app.consumer
    tp = TopicPartition("herald.delivery", 3)
    key = TP(tp.topic, tp.partition)
    for name in ("_acked", "_acked_index", "_committed_offset"):
        assert hasattr(consumer, name), f"faust's consumer no longer has {name}"
    assert consumer._committed_offset[key] is None
    Acknowledgements(lambda: consumer).acknowledge(tp, [0, 1, 2, 3])
    assert consumer._acked[key] == [0, 1, 2, 3] and consumer._acked_index[key] == {0, 1, 2, 3}
    # faust's own computation of the next offset to commit now goes past them
    assert consumer._new_offset(key) == 4
    Acknowledgements(lambda: consumer).forget([tp])
    assert not consumer._acked.get(key) and not consumer._acked_index.get(key)


def test_faust_acknowledges_its_own_messages_through_the_same_structures() -> None:
    """The adapter mirrors `Consumer.ack`: if faust keeps its acknowledgements elsewhere, ours mean nothing."""
    app = make_app()
    consumer: Any = app.consumer
    key = TP("herald.delivery", 1)
    message = Message("herald.delivery", 1, 5, 0.0, 0, [], b"acc", b"{}", None)
    app.topics.acks_enabled_for = lambda topic: True
    assert consumer.ack(message)
    assert 5 in consumer._acked[key] and 5 in consumer._acked_index[key]


def test_the_tables_store_is_the_preloading_one() -> None:
    assert stores.by_url(STORE_URL) is PreloadedStore
    app = faust.App("herald-adapter-store", broker="kafka://127.0.0.1:1", store=STORE_URL, web_enabled=False,
                    autodiscover=False)
    assert isinstance(make_table(app).data, PreloadedStore)


async def test_the_preload_applies_changelog_records_as_faust_recovery_does() -> None:
    """The same records (JSON-encoded keys, a key beyond ASCII, a tombstone) through faust's
    `apply_changelog_batch` and through `apply_changelog` leave the same keys, the same values as the adapter
    reads them, and the same key → partition map."""
    app = faust.App("herald-adapter-preload", broker="kafka://127.0.0.1:1", store=STORE_URL, web_enabled=False,
                    autodiscover=False)
    written, by_faust, preloaded = make_table(app, "w"), make_table(app, "f"), make_table(app, "p")
    producer = RecordingProducer()
    adapter = ChangelogTable(written, producer)
    adapter.put(3, "acc-3|s:m1", [1])
    adapter.put(3, "acc-3|s:ünï", {"k": "v"})
    adapter.put(3, "gone", 1)
    await durable(adapter)
    adapter.delete(3, "gone")
    await durable(adapter)
    records = [(key, value) for _, _, batch in producer.sent for key, value in batch]
    topic = written.changelog_topic.get_topic_name()
    by_faust.apply_changelog_batch([await by_faust.changelog_topic.decode(Message(topic, 3, n, 0.0, 0, [], k, v, None))
                                    for n, (k, v) in enumerate(records)])
    assert apply_changelog(preloaded.data, 3, [*records, (b"not json", b"1"), (None, b"1")]) == 6
    ours, faust_s = ChangelogTable(preloaded, producer), ChangelogTable(by_faust, producer)
    assert {k: ours.get(k) for k in ours.keys()} == {k: faust_s.get(k) for k in faust_s.keys()} == {
        "acc-3|s:m1": [1], "acc-3|s:\u00fcn\u00ef": {"k": "v"}}
    assert preloaded.data._key_partition == by_faust.data._key_partition == {"acc-3|s:m1": 3,
                                                                            "acc-3|s:\u00fcn\u00ef": 3}


async def test_faust_asks_the_tables_before_its_recovery_and_starts_where_the_preload_stopped() -> None:
    """On a rebalance faust's table manager calls each table's (so its store's) `on_rebalance` before its
    Recovery's, and the Recovery takes an active partition's starting offset from `persisted_offset`."""
    app = faust.App("herald-adapter-order", broker="kafka://127.0.0.1:1", store=STORE_URL, web_enabled=False,
                    autodiscover=False)
    table = make_table(app)
    order: list[str] = []

    async def table_first(*args: Any, **kwargs: Any) -> None:
        order.append("table")

    async def recovery_next(*args: Any, **kwargs: Any) -> None:
        order.append("recovery")

    table.on_rebalance = table_first
    app.tables.recovery.on_rebalance = recovery_next  # type: ignore[method-assign]
    app.tables._update_channels = recovery_next  # type: ignore[method-assign]  # no broker: nothing to update
    await app.tables.on_rebalance(set(), set(), set())
    assert order == ["table", "recovery", "recovery"]  # the channels, then the recovery: after the table

    tp = TP(table.changelog_topic.get_topic_name(), 2)
    table.data._preloaded[2] = 41
    app.tables.recovery.add_active(table, tp)
    assert app.tables.recovery.active_offsets[tp] == 41


async def test_faust_recovery_of_a_partition_kept_through_a_rebalance_starts_after_this_worker_last_write() -> None:
    """faust does not see the adapter's changelog writes: left to itself, its recovery of a partition this worker
    kept reads again everything the worker wrote since the last recovery (1.3 s after a second of processing).
    The store tells it the last offset written, only for a partition whose state stayed whole here and is
    active here now."""
    app = store_app("herald-adapter-written")
    table = make_table(app)
    producer = RecordingProducer()
    producer.ends[table.changelog_topic.get_topic_name(), 2] = 40  # records before this worker's
    adapter = ChangelogTable(table, producer)
    tp, moved = TP(table.changelog_topic.get_topic_name(), 2), TP(table.changelog_topic.get_topic_name(), 3)
    await table.data.on_recovery_completed({tp, moved}, set())  # both whole here
    adapter.put(2, "acc-2|a", 1)
    adapter.put(2, "acc-2|b", 1)
    adapter.put(3, "acc-3|a", 1)
    await durable(adapter)
    adapter.put(2, "acc-2|a", 2)
    await durable(adapter)
    app.assignor.assigned_actives = lambda: {tp}  # type: ignore[method-assign]  # partition 3 moved away
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    recovery.add_active(table, tp)
    assert recovery.active_offsets[tp] == 42  # records 40 and 41, then 42
    assert table.data.persisted_offset(moved) is None  # not active here: faust reads it as it would
    await table.data.on_recovery_completed({tp}, set())
    app.assignor.assigned_actives = lambda: {tp, moved}  # type: ignore[method-assign]
    assert table.data.persisted_offset(moved) is None  # given back: its state left memory, it is read whole


def make_fact_table(app: faust.App, name: str = "facts") -> Any:
    schema: Any = faust.Schema(key_type=str, value_type=bytes, key_serializer="raw", value_serializer="raw")
    return app.Table(name, schema=schema, partitions=6, store=FACT_STORE_URL)


def store_app(name: str) -> faust.App:
    return faust.App(name, broker="kafka://127.0.0.1:1", store=STORE_URL, web_enabled=False, autodiscover=False)


def test_the_facts_table_keeps_its_facts_packed() -> None:
    assert stores.by_url(FACT_STORE_URL) is FactStore
    table = make_fact_table(store_app("herald-adapter-facts"))
    assert isinstance(table.data, FactStore) and isinstance(table.data.data, PackedFacts)
    assert table.data._key_partition == {}  # a packed fact holds its partition


async def test_what_the_fact_table_writes_is_what_faust_recovery_reads_back() -> None:
    """Facts written by `FactTable` (new keys), one in the earlier format (as `ChangelogTable` wrote it before),
    a fact forgotten (its tombstone) and the earlier-format one forgotten (tombstones under both keys), through
    faust's own recovery into a `FactStore`."""
    app = store_app("herald-adapter-fact-log")
    written, recovered = make_fact_table(app, "written"), make_fact_table(app, "recovered")
    producer = RecordingProducer()
    earlier = ChangelogTable(make_table(app, "earlier"), producer)
    earlier.put(2, "acc-2|s:old", ["herald.delivery:2", 5, 1_700_000_000, 0])
    facts = FactTable(written, producer)
    facts.put(1, "acc-1", "s:m1", ["herald.delivery:1", 7, 1_700_000_001, 0])
    facts.put(1, "acc-1", "s:m2", ["herald.delivery:1", 8, 1_700_000_002, 1])
    facts.put(2, "acc-2", "s:m3", ["herald.delivery:2", 9, 1_700_000_003])
    facts.delete("acc-1", 1, packed_facts.digest("acc-1", "s:m2"))
    await durable(earlier, facts)
    topic = recovered.changelog_topic.get_topic_name()

    async def recover(records: list[tuple[int, bytes, bytes | None]]) -> FactTable:
        recovered.apply_changelog_batch([
            await recovered.changelog_topic.decode(Message(topic, p, n, 0.0, 0, [], k, v, None))
            for n, (p, k, v) in enumerate(records)])
        return FactTable(recovered, producer)

    records = [(p, k, v) for _, p, batch in producer.sent for k, v in batch]
    assert sum(1 for _, _, v in records if v is None) == 1  # the forgotten fact's tombstone
    reader = await recover(records)
    assert len(reader) == 3
    assert reader.get("acc-1", "s:m1") == ["herald.delivery:1", 7, 1_700_000_001, 0]
    assert reader.get("acc-1", "s:m2") is None
    assert reader.get("acc-2", "s:m3") == ["herald.delivery:2", 9, 1_700_000_003]
    assert reader.get("acc-2", "s:old") == ["herald.delivery:2", 5, 1_700_000_000, 0]  # the earlier format

    producer.sent.clear()
    reader.delete("acc-2", 2, packed_facts.digest("acc-2", "s:old"))
    assert reader.delete_account("acc-1") == 1
    await durable(reader)
    tombstones = {(p, json.loads(k)) for _, p, batch in producer.sent for k, v in batch if v is None}
    assert tombstones == {(2, "acc-2|s:old"), (2, packed_facts.changelog_key("acc-2", packed_facts.digest(
        "acc-2", "s:old"))), (1, packed_facts.changelog_key("acc-1", packed_facts.digest("acc-1", "s:m1")))}
    again = await recover([*records, *((p, k, v) for _, p, batch in producer.sent for k, v in batch)])
    assert [(account, marker) for _, account, _, marker in again.all()] == [
        ("acc-2", ["herald.delivery:2", 9, 1_700_000_003])]


async def test_the_preload_and_faust_recovery_leave_the_same_facts() -> None:
    app = store_app("herald-adapter-fact-preload")
    written, by_faust, preloaded = (make_fact_table(app, n) for n in ("w", "f", "p"))
    producer = RecordingProducer()
    facts = FactTable(written, producer)
    for i in range(20):
        facts.put(3, f"acc-{i % 2}", f"s:ü{i}", ["herald.delivery:3", i, 1_700_000_000 + i, i % 2])
    facts.delete("acc-0", 3, packed_facts.digest("acc-0", "s:ü0"))
    await durable(facts)
    records = [(k, v) for _, _, batch in producer.sent for k, v in batch]
    topic = by_faust.changelog_topic.get_topic_name()
    by_faust.apply_changelog_batch([await by_faust.changelog_topic.decode(Message(topic, 3, n, 0.0, 0, [], k, v, None))
                                    for n, (k, v) in enumerate(records)])
    assert preloaded.data._apply(3, [*records, (b"not json", b"1"), (None, b"1")]) == len(records) + 2
    assert sorted(preloaded.data.data.facts()) == sorted(by_faust.data.data.facts())
    assert len(preloaded.data.data) == 19


async def test_facts_of_partitions_no_longer_active_leave_memory_after_the_next_recovery() -> None:
    table = make_fact_table(store_app("herald-adapter-fact-moved"))
    facts = FactTable(table, RecordingProducer())
    facts.put(1, "acc-1", "s:m1", ["herald.delivery:1", 1, 1, 0])
    facts.put(4, "acc-4", "s:m1", ["herald.delivery:4", 1, 1, 0])
    await table.data.on_recovery_completed({TP(table.changelog_topic.get_topic_name(), 1)}, set())
    assert [(account, partition) for _, account, partition, _ in facts.all()] == [("acc-1", 1)]
    table.data._forget([1])  # before the preload reads a partition's changelog again
    assert len(facts) == 0


async def test_a_fact_remembered_again_is_written_after_the_tombstones_of_its_forgetting() -> None:
    """A fact read in the earlier format, forgotten (tombstones under both keys; their write fails), then claimed
    again before the next write: the new key's record comes after the old key's tombstone, so a recovery holds
    the fact."""
    app = store_app("herald-adapter-fact-order")
    table, recovered = make_fact_table(app, "written"), make_fact_table(app, "recovered")
    producer = RecordingProducer()
    facts = FactTable(table, producer)
    facts.facts.apply(2, "acc|s:m1", b'["herald.delivery:2",5,1700000000,0]')
    facts.delete("acc", 2, packed_facts.digest("acc", "s:m1"))

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("broker away")

    original, producer.send_batch = producer.send_batch, refuse
    with pytest.raises(ConnectionError):
        await facts.durable()
    producer.send_batch = original
    facts.put(2, "acc", "s:m1", ["herald.delivery:2", 9, 1_700_000_100, 0])
    await facts.durable()
    records = [(json.loads(k), v) for _, _, batch in producer.sent for k, v in batch]
    new_key = packed_facts.changelog_key("acc", packed_facts.digest("acc", "s:m1"))
    assert [k for k, _ in records] == ["acc|s:m1", new_key]  # the new key's tombstone was superseded
    topic = recovered.changelog_topic.get_topic_name()
    recovered.apply_changelog_batch([await recovered.changelog_topic.decode(Message(
        topic, 2, n, 0.0, 0, [], k, v, None)) for n, (_, _, batch) in enumerate(producer.sent) for k, v in batch])
    assert FactTable(recovered, producer).get("acc", "s:m1") == ["herald.delivery:2", 9, 1_700_000_100, 0]


# --- handing records to the streams (Consumer) ------------------------------------------------------------------

def make_consumer() -> Consumer:
    app = faust.App("herald-adapter-consumer", broker=f"{TRANSPORT_SCHEME}://127.0.0.1:1", store="memory://",
                    web_enabled=False, autodiscover=False)
    consumer = app.consumer
    assert type(consumer) is Consumer, "the broker URL's scheme no longer selects the adapter's transport"
    return consumer


async def test_faust_fetch_loop_hands_each_record_over_in_place_through_the_adapter() -> None:
    """faust's own `_drain_messages` (its fetch loop, not a copy of it) awaits
    `wait_first(deliver(record), suspend_flow.wait())` per record; the adapter's consumer recognises that call
    and runs the delivery in place. If faust changes the call, no record is counted here."""
    consumer = make_consumer()
    tp = TP("herald.delivery", 0)
    records = [Message("herald.delivery", 0, offset, 0.0, 0, None, None, b"k", b"v", None) for offset in range(3)]
    delivered: list[int] = []
    fetcher = make_app()  # any mode Service: the loop stops once this one is stopped

    async def deliver(message: Message) -> None:
        delivered.append(message.offset)

    async def getmany(timeout: float) -> Any:  # noqa: ASYNC109 - faust's signature
        for record in records:
            yield tp, record
        fetcher._stopped.set()

    consumer.callback = deliver
    consumer.getmany = getmany  # type: ignore[method-assign]
    in_place = Consumer.deliveries_in_place
    await asyncio.wait_for(consumer._drain_messages(fetcher), 5)
    assert delivered == [0, 1, 2]
    assert Consumer.deliveries_in_place - in_place == 3
    assert consumer._read_offset[tp] == 2


async def test_a_delivery_that_has_to_wait_goes_on_in_a_task_and_finishes() -> None:
    consumer = make_consumer()
    room = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> str:
        steps.append("decoded")
        await room  # a full stream buffer
        steps.append("put")
        return "done"

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["decoded"] and not waiting.done()
    room.set_result(None)
    result = await asyncio.wait_for(waiting, 1)
    assert steps == ["decoded", "put"]
    assert result.results == ["done"]  # faust's own wait_first answered, with the delivery as the winner


async def test_a_delivery_still_waiting_when_the_flow_is_suspended_is_given_up_as_faust_gives_it_up() -> None:
    consumer = make_consumer()
    outcome: list[str] = []

    async def deliver() -> None:
        try:
            await asyncio.Event().wait()  # a buffer that never gets room
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()  # a rebalance
    await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert outcome == ["cancelled"]


async def test_a_delivery_failing_at_once_raises_and_leaves_no_coroutine_unawaited(recwarn: Any) -> None:
    consumer = make_consumer()

    async def deliver() -> None:
        raise ValueError("undecodable")

    with pytest.raises(ValueError, match="undecodable"):
        await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    gc.collect()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def test_a_delivery_runs_in_its_own_context_as_in_a_task() -> None:
    consumer = make_consumer()
    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="caller")

    async def deliver() -> None:
        seen.set("delivery")

    await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    assert seen.get() == "caller"


async def test_other_waits_and_suspended_flow_go_to_faust_unchanged() -> None:
    consumer = make_consumer()
    in_place = Consumer.deliveries_in_place
    other = asyncio.Event()
    other.set()
    result = await consumer.wait_first(other.wait(), consumer.can_resume_flow.wait(), timeout=1)
    assert result.done and not result.stopped  # faust's wait_first: the set event won
    consumer.suspend_flow.set()

    async def deliver() -> str:
        return "late"

    await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    assert Consumer.deliveries_in_place == in_place


# --- start-up: the fetch long poll, the table manager -------------------------------------------------------------

async def test_the_worker_consumer_holds_an_idle_fetch_for_fetch_max_wait_not_faust_constant() -> None:
    """faust builds its aiokafka consumer with fetch_max_wait_ms=1500, and Kafka answers a connection's requests in
    order: each offset request of the table recovery waited up to 1.5 s behind a fetch on an empty partition."""
    consumer = make_consumer()
    thread = consumer._thread
    assert type(thread) is ConsumerThread, "faust no longer makes the consumer thread through _new_consumer_thread"
    made = thread._create_worker_consumer(consumer.transport)
    assert made._fetch_max_wait_ms == FETCH_MAX_WAIT_MS < 1500
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start), (
        "aiokafka no longer hands the consumer's _fetch_max_wait_ms to its fetcher when it starts")


async def start_table_manager(app: faust.App, tables: Any) -> list[Any]:
    """Run a table manager's start with what it does beyond waiting stood in for; returns what it did, in order."""
    done: list[Any] = []

    async def sleep(seconds: float) -> None:
        done.append(("sleep", seconds))

    async def update_channels() -> None:
        done.append("channels")

    async def start_recovery() -> None:
        done.append("recovery")

    tables.sleep, tables._update_channels, tables.recovery.start = sleep, update_channels, start_recovery
    await tables.on_start()
    return done


async def test_the_table_manager_starts_without_faust_second_of_sleep() -> None:
    """faust's table manager sleeps a second before registering the tables (time for tables declared late),
    and the consumer subscribes only after that: every worker's first join waited for it. The service declares
    its tables before the app starts; the rest of faust's start is kept."""
    ours = faust.App("herald-adapter-tables", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
                     autodiscover=False, TableManager=TableManager)
    assert type(ours.tables) is TableManager
    assert await start_table_manager(ours, ours.tables) == ["channels", "recovery"]
    theirs = make_app()
    assert type(theirs.tables) is manager.TableManager
    assert await start_table_manager(theirs, theirs.tables) == [("sleep", 1.0), "channels", "recovery"], (
        "faust's table manager starts differently: read its on_start again, then TableManager.on_start")
