"""Every use of faust's internals, in one place.

The processor relies on faust-streaming for the consumer group, the tables and their recovery from changelogs,
and reaches past its public API in two places, both here:

- `ChangelogTable` reads and writes a table's in-memory data (the memory store's dict, `Table.data.data`, and
  its key → partition map, `_key_partition`, which decides what the store drops after a rebalance) and
  writes its changelog itself, encoding keys and values with the changelog topic's `prepare_key` /
  `prepare_value` so that faust's recovery reads them back;
- `Acknowledgements` marks records faust never delivered as processed, through its consumer's `_acked`,
  `_acked_index` and `_committed_offset` under `faust.types.tuples.ack_lock`.

`tests/unit/compliance/test_faust_adapter.py` checks each of them against the installed faust and fails, naming
what changed, on an upgrade that moves them. Known good: the versions in `KNOWN_GOOD_FAUST`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from faust.types import TP
from faust.types.tuples import ack_lock

KNOWN_GOOD_FAUST = ("0.15.3",)  # faust-streaming versions this module was checked against (README, compliance)


def decode(value: Any) -> Any:
    # Values are written as JSON bytes; faust hands recovered values back already decoded.
    return json.loads(value) if isinstance(value, bytes | str) else value


class ChangelogTable:
    """A faust table (str → JSON bytes) whose changelog this service writes itself, with the partition given
    explicitly: batches from `take_events` run outside the per-event context faust uses to pick the changelog
    partition, and faust's own buffered sends are no guarantee. Its flush before a commit gives up after 0.1 s
    when the buffer is full (the kill test lost counts that way), and awaiting those sends stalled under load.

    Writes go through the service's idempotent producer, each changed key once per `durable()` (its last value),
    in one record batch per changelog partition; a batch is acknowledged only after `durable()`."""

    def __init__(self, table: Any, producer: AIOKafkaProducer) -> None:
        self.table, self._producer = table, producer
        # the memory store's own dict (key → stored value): `Store.data`, through its mapping methods, costs a
        # Python call per look-up
        self.data: dict[str, Any] = table.data.data
        # the memory store's key → partition map: it learns keys' partitions from the changelogs it recovers,
        # and after each recovery drops the keys of partitions no longer active here. Keys written here are
        # entered too, or a worker would keep the facts of every partition it ever held
        self._key_partition: dict[str, int] = table.data._key_partition
        self._pending: dict[tuple[int, str], bytes | None] = {}

    async def durable(self) -> None:
        """Write what was changed since the last call to the changelog, and wait until Kafka has it."""
        await durable(self)

    def _take(self) -> dict[tuple[int, str], bytes | None]:
        pending, self._pending = self._pending, {}
        return pending

    def _restore(self, pending: dict[tuple[int, str], bytes | None]) -> None:
        # written again next time, ahead of anything newer (a key's last write still wins)
        self._pending = {**pending, **self._pending}

    async def _send(self, pending: dict[tuple[int, str], bytes | None]) -> list[asyncio.Future[Any]]:
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
        futures: list[asyncio.Future[Any]] = []
        for partition, records in by_partition.items():
            batch = self._producer.create_batch()
            for key_bytes, value in records:
                if batch.append(key=key_bytes, value=value, timestamp=None) is None:  # full: send it, go on
                    futures.append(await self._producer.send_batch(batch, name, partition=partition))
                    batch = self._producer.create_batch()
                    if batch.append(key=key_bytes, value=value, timestamp=None) is None:
                        raise ValueError(f"a {name} record of {len(value or b'')} bytes fits in no batch")
            futures.append(await self._producer.send_batch(batch, name, partition=partition))
        return futures

    def get(self, key: str) -> Any:
        return decode(self.data.get(key))

    def keys(self) -> list[str]:
        return list(self.data)

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


async def durable(*tables: ChangelogTable) -> None:
    """Write what the tables changed since their last write to their changelogs, all at once, and wait until
    Kafka has all of it; on failure, everything is written again next time."""
    taken = [(table, table._take()) for table in tables]
    try:
        futures = [future for table, pending in taken for future in await table._send(pending)]
        await asyncio.gather(*futures)
    except BaseException:
        for table, pending in taken:
            table._restore(pending)
        raise


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
