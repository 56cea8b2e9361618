"""MongoDB adapters on PyMongo's async API: client, event-id deduplication, and projections.

Only what both MongoDB and FerretDB 1.x serve is used: CRUD, upserts, unique indexes, bulk writes.
Writes are batched (one bulk write per Kafka batch and collection). How read models use the store (loads
and writes by `_id`, listings as `_id` ranges, counts kept as events fold) is in `readmodel`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

__all__ = [
    "DUPLICATE_KEY", "DeleteMany", "DeleteOne", "InsertOne", "MongoDeduplicator", "Projection",
    "ReplaceOne", "UpdateMany", "UpdateOne", "WriteOp", "bulk_write", "make_client", "rebuild",
]

from .contract import Event, InvalidEvent
from .readmodel import DUPLICATE_KEY, insert_new
from .settings import HeraldSettings

log = logging.getLogger(__name__)

Document = dict[str, Any]
WriteOp = InsertOne[Document] | UpdateOne | UpdateMany | ReplaceOne[Document] | DeleteOne | DeleteMany


async def bulk_write(collection: AsyncCollection[Document], ops: Sequence[WriteOp], *, ordered: bool = True) -> None:
    """collection.bulk_write, when there is anything to write (the driver refuses an empty list)."""
    if ops:
        await collection.bulk_write(list(ops), ordered=ordered)


def make_client(settings: HeraldSettings, app_name: str) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(settings.mongodb_url, appname=app_name, tz_aware=True, tzinfo=UTC,
                            serverSelectionTimeoutMS=10_000)


class MongoDeduplicator:
    """Remembers which event ids a consumer has handled, in its own collection (`_id` = event id)."""

    def __init__(self, db: AsyncDatabase[Document], consumer_name: str) -> None:
        self._collection = db[f"processed_events.{consumer_name}"]

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        cursor = self._collection.find({"_id": {"$in": list(event_ids)}}, {"_id": 1})
        return {doc["_id"] async for doc in cursor}

    async def remember(self, event_ids: Sequence[str]) -> None:
        # Ids remembered before a crash are fine (insert_new leaves them); anything else is a real failure.
        now = datetime.now(UTC)
        await insert_new(self._collection, [{"_id": i, "at": now} for i in event_ids])


class Checkpoints:
    """How far a consumer has applied each partition (the next offset), stored next to its projection.

    An HTTP handler that published an event waits here until the projection includes it, so it can answer
    from the read model (read-your-writes), whichever replica's consumer owns the partition. In the process
    whose consumer saves a checkpoint, waiters are woken at once; otherwise they poll the stored one.
    """

    POLL_INTERVAL = 0.05
    # A partition this process's consumer saved lately is woken here; its waiters read the stored
    # checkpoint only this often, in case the partition moved to another replica.
    LOCAL_POLL_INTERVAL = 1.0
    LOCAL_FOR = 5.0

    def __init__(self, db: AsyncDatabase[Document], consumer_name: str) -> None:
        self._collection = db[f"checkpoints.{consumer_name}"]
        self._known: dict[tuple[str, int], int] = {}
        self._saved: asyncio.Event | None = None
        self._saved_here: dict[tuple[str, int], float] = {}

    async def save(self, next_offsets: dict[tuple[str, int], int]) -> None:
        ops = [UpdateOne({"_id": f"{topic}:{partition}"}, {"$max": {"next_offset": offset}}, upsert=True)
               for (topic, partition), offset in next_offsets.items()]
        await bulk_write(self._collection, ops)
        self._learn(next_offsets)
        now = time.monotonic()
        for position in next_offsets:
            self._saved_here[position] = now
        if self._saved is not None:
            self._saved.set()
            self._saved = None

    def _learn(self, next_offsets: dict[tuple[str, int], int]) -> None:
        for position, offset in next_offsets.items():
            self._known[position] = max(offset, self._known.get(position, 0))

    async def applied(self, topic: str, partition: int) -> int:
        doc = await self._collection.find_one({"_id": f"{topic}:{partition}"})
        offset = int(doc["next_offset"]) if doc else 0
        self._learn({(topic, partition): offset})
        return self._known[(topic, partition)]

    async def wait_until_applied(self, positions: Sequence[tuple[str, int, int]]) -> None:
        """Wait until every (topic, partition, offset) is applied; the caller bounds it with asyncio.timeout."""
        for topic, partition, offset in positions:
            while self._known.get((topic, partition), 0) <= offset:
                if self._saved is None:
                    self._saved = asyncio.Event()
                local = time.monotonic() - self._saved_here.get((topic, partition), -math.inf) < self.LOCAL_FOR
                try:
                    async with asyncio.timeout(self.LOCAL_POLL_INTERVAL if local else self.POLL_INTERVAL):
                        await self._saved.wait()
                except TimeoutError:
                    await self.applied(topic, partition)  # another process's consumer may own it


class Projection(ABC):
    """A read model folded from events. Subclasses map an event to write operations, idempotently.

    `apply` must give operations whose repeated application changes nothing (upserts with $set,
    keyed by the entity), because an event can be applied again after a crash before commit.
    """

    #: Collections this projection owns; a rebuild drops and refills exactly these.
    collections: tuple[str, ...] = ()

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self._staged: list[tuple[str, WriteOp]] = []

    @abstractmethod
    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        """(collection, operation) pairs for one event; [] for events this projection ignores."""

    async def ensure_indexes(self) -> None:
        """Create the projection's indexes; override when it has any."""
        return None

    async def handle(self, event: Event) -> None:
        self._staged.extend(self.apply(event))

    async def flush(self) -> None:
        """Write what was staged, in order, one bulk request per run of the same collection."""
        staged, self._staged = self._staged, []
        try:
            while staged:
                collection = staged[0][0]
                run = 0
                while run < len(staged) and staged[run][0] == collection:
                    run += 1
                await bulk_write(self.db[collection], [op for _, op in staged[:run]])
                staged = staged[run:]
        except Exception:
            self._staged = staged + self._staged
            raise

    async def drop(self) -> None:
        for name in self.collections:
            await self.db.drop_collection(name)


class ProjectionGroup:
    """Several projections fed by one consumer: each sees every event, all flush before the commit."""

    def __init__(self, *projections: Projection) -> None:
        self.projections = projections

    async def handle(self, event: Event) -> None:
        for projection in self.projections:
            await projection.handle(event)

    async def flush(self) -> None:
        for projection in self.projections:
            await projection.flush()


async def rebuild(projection: Projection, settings: HeraldSettings, topics: Sequence[str],
                  deduplicator: MongoDeduplicator | None = None) -> int:
    """Drop the projection and fold it again from offset 0 of the given base topics.

    Messages that fail validation are skipped, as the live consumer dead-letters them; events replayed
    from a dead-letter topic sit later in the topic and are applied there, as they were live.
    Returns the number of events applied.
    """
    from .kafka import read_from_start, validate_record

    await projection.drop()
    await projection.ensure_indexes()
    names = settings.topics
    seen: set[str] = set()
    applied = 0
    async for records in read_from_start(settings, [names(t) for t in topics]):
        handled = []
        for record in records:
            try:
                event = validate_record(record, names)
            except InvalidEvent:
                continue
            event_id = str(event.event_id)
            if event_id in seen:
                continue
            seen.add(event_id)
            await projection.handle(event)
            handled.append(event_id)
            applied += 1
        await projection.flush()
        if deduplicator is not None and handled:
            await deduplicator.remember(handled)
    log.info("projection rebuilt", extra={"projection": type(projection).__name__, "events": applied})
    return applied
