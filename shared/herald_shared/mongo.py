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
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

__all__ = [
    "DUPLICATE_KEY", "DeleteMany", "DeleteOne", "EventIdStore", "InsertOne", "MongoDeduplicator", "Projection",
    "ReplaceOne", "RunCopies", "UpdateMany", "UpdateOne", "WindowDeduplicator", "WriteOp", "WrittenKeys",
    "bulk_write", "make_client", "rebuild",
]

from .contract import Event, InvalidEvent
from .readmodel import DUPLICATE_KEY, insert_new
from .settings import HeraldSettings

log = logging.getLogger(__name__)

Document = dict[str, Any]
# Between the event ids (UUIDs) in one string of a WindowDeduplicator document.
IDS_SEPARATOR = " "
WriteOp = InsertOne[Document] | UpdateOne | UpdateMany | ReplaceOne[Document] | DeleteOne | DeleteMany


async def bulk_write(collection: AsyncCollection[Document], ops: Sequence[WriteOp], *, ordered: bool = True) -> None:
    """collection.bulk_write, when there is anything to write (the driver refuses an empty list)."""
    if ops:
        await collection.bulk_write(list(ops), ordered=ordered)


def make_client(settings: HeraldSettings, app_name: str) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(settings.mongodb_url, appname=app_name, tz_aware=True, tzinfo=UTC,
                            serverSelectionTimeoutMS=10_000)


class MongoDeduplicator:
    """Remembers which event ids a consumer has handled, in its own collection (`_id` = event id), with the digest
    of the event's content where `EventConsumer` gives one (`kafka.content_digest`: another producer's events),
    so that an id reused for another event is told from a copy."""

    def __init__(self, db: AsyncDatabase[Document], consumer_name: str) -> None:
        self._collection = db[f"processed_events.{consumer_name}"]

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        return set(await self.seen_digests(event_ids))

    async def seen_digests(self, event_ids: Sequence[str]) -> dict[str, str | None]:
        """The ids of these remembered, each with its digest (None: remembered without one)."""
        if not event_ids:
            return {}
        cursor = self._collection.find({"_id": {"$in": list(event_ids)}}, {"_id": 1, "digest": 1})
        return {doc["_id"]: doc.get("digest") async for doc in cursor}

    async def remember(self, event_ids: Sequence[str]) -> None:
        await self.remember_digests(dict.fromkeys(event_ids))

    async def remember_digests(self, digests: Mapping[str, str | None]) -> None:
        """Remember each id, with its digest when it has one."""
        # Ids remembered before a crash are fine (insert_new leaves them); anything else is a real failure.
        now = datetime.now(UTC)
        await insert_new(self._collection, [{"_id": i, "at": now} if d is None else {"_id": i, "at": now, "digest": d}
                                            for i, d in digests.items()])

    async def drop(self) -> None:
        """Forget every id (a rebuild refills them as it folds the events again)."""
        await self._collection.drop()


class WindowDeduplicator:
    """Remembers the last `window` event ids a consumer handled, for a consumer whose copies of an event come
    close behind the original and that cannot afford a stored document per event id (`MongoDeduplicator`:
    FerretDB writes each as a row, ~60 us an id, and looks a batch up in ~10 ms).

    Stored as one document per handled batch: `_id` a time-ordered sequence, `ids` the batch's event ids as
    one string (2,000 ids are written in ~8 ms; as an array FerretDB takes twice as long). A batch smaller
    than `fill` ids is added to the document before it instead, so a trickle of small batches still makes
    documents of about `fill` ids. The window is kept in memory (~130 bytes an id: 26 MB for 200,000) and
    loaded from the newest documents at the first look-up, so a restarted consumer knows what the last one
    handled; `seen` answers from memory. Documents older than the window are deleted (each time
    `prune_every` documents have left it, and at the load), so the collection holds about `window` ids.

    Semantics for `EventConsumer`, as `MongoDeduplicator`'s within the window: ids are remembered only after
    their batch was flushed (a crash before leaves them unremembered and the batch is replayed whole), and an
    id is in memory only once its document is written, so a write that failed, and is retried, never makes
    `seen` claim an id that is not stored.

    The limit: a copy that arrives more than `window` handled events after its original (counted over all
    the partitions the consumer reads) is not recognised and is handled again. Use it where the copies that
    come are near and a second count of a rare far one costs little: a redelivery of the same offsets after
    a crash (which `readmodel.Counters` makes exact by offset anyway), a producer's retry (the idempotent
    producer of `kafka.make_producer` drops those before they reach the topic), and outcomes delivery
    republishes from its watermark right after a restart (the last second or so of sending). Not recognised:
    an event replayed from a dead-letter topic long after the original was handled here, or one published
    again by hand with the same id. The memory is this process's: with two replicas, a partition that moves
    to the other arrives without the ids this one remembered since the other started, so use it in a service
    that runs one replica (campaigns does).
    """

    def __init__(self, db: AsyncDatabase[Document], consumer_name: str, *, window: int = 200_000,
                 fill: int = 1000, prune_every: int = 16) -> None:
        if window < 1 or fill < 1 or prune_every < 1:
            raise ValueError("window, fill and prune_every must be positive")
        self._collection = db[f"recent_events.{consumer_name}"]
        self._window, self._fill, self._prune_every = window, fill, prune_every
        self._documents: deque[tuple[str, list[str]]] = deque()  # in the window, oldest first
        self._held = 0  # ids in self._documents
        self._newest: dict[str, str] = {}  # event id -> the newest document holding it
        self._filling: tuple[str, list[str]] | None = None  # written by this instance, still taking ids
        self._left = 0  # documents that left the window since the last prune
        self._loaded = False
        self._instance = uuid.uuid4().hex[:8]
        self._last_sequence = 0

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        await self._load()
        newest = self._newest
        return {i for i in event_ids if i in newest}

    async def remember(self, event_ids: Sequence[str]) -> None:
        await self._load()
        if not event_ids:
            return
        ids = list(event_ids)
        document = await self._append(ids) or await self._insert(ids)
        self._held += len(ids)
        newest = self._newest
        for event_id in ids:
            newest[event_id] = document
        self._leave_window()
        if self._left >= self._prune_every:
            await self._prune()

    async def _append(self, ids: list[str]) -> str | None:
        """Add the ids to the document this instance is filling, if it has room; its `_id`, or None."""
        filling = self._filling
        if filling is None or len(filling[1]) >= self._fill:
            return None
        # The whole list again: FerretDB rewrites the document for a $push all the same, and $set is idempotent.
        result = await self._collection.update_one({"_id": filling[0]},
                                                   {"$set": {"ids": _joined([*filling[1], *ids])}})
        if not result.matched_count:  # pruned meanwhile by another writer
            self._filling = None
            return None
        filling[1].extend(ids)
        return filling[0]

    async def _insert(self, ids: list[str]) -> str:
        # A retry after an insert that reached the store but failed to answer stores the ids again under
        # another `_id`: harmless, as each id is remembered by its newest document.
        document = self._next_id()
        await self._collection.insert_one({"_id": document, "ids": _joined(ids)})
        self._filling = (document, list(ids))
        self._documents.append(self._filling)
        return document

    def _next_id(self) -> str:
        """Time-ordered and increasing in this process even if the clock steps back; the suffix keeps two
        writers of the same nanosecond apart."""
        self._last_sequence = max(time.time_ns(), self._last_sequence + 1)
        return f"{self._last_sequence:020d}.{self._instance}"

    def _leave_window(self) -> None:
        """Forget the oldest documents while the rest still hold `window` ids (the newest one always stays)."""
        documents, newest = self._documents, self._newest
        while len(documents) > 1 and self._held - len(documents[0][1]) >= self._window:
            document, ids = documents.popleft()
            self._held -= len(ids)
            for event_id in ids:
                if newest.get(event_id) == document:
                    del newest[event_id]
            self._left += 1

    async def _prune(self) -> None:
        """Delete the documents older than the window's oldest. Housekeeping: a failure is retried later,
        never made the batch's."""
        if not self._documents:
            return
        try:
            await self._collection.delete_many({"_id": {"$gte": "", "$lt": self._documents[0][0]}})
        except PyMongoError:
            log.warning("pruning remembered event ids failed; trying again later", exc_info=True)
            return
        self._left = 0

    async def _load(self) -> None:
        """The newest documents holding `window` ids, once; older ones are deleted."""
        if self._loaded:
            return
        found: list[Document] = []
        held = 0
        cursor = self._collection.find({"_id": {"$gte": ""}}).sort("_id", -1)
        try:
            async for doc in cursor:
                found.append({"_id": doc["_id"], "ids": doc["ids"].split(IDS_SEPARATOR)})
                held += len(found[-1]["ids"])
                if held >= self._window:
                    break
        finally:
            await cursor.close()
        self._documents.clear()
        self._newest.clear()
        self._held = 0
        for doc in reversed(found):
            ids = doc["ids"]
            self._documents.append((doc["_id"], ids))
            self._held += len(ids)
            for event_id in ids:
                self._newest[event_id] = doc["_id"]
        if found:
            newest_sequence = int(str(found[0]["_id"]).split(".")[0])
            self._last_sequence = max(self._last_sequence, newest_sequence)
        self._leave_window()
        await self._prune()
        self._loaded = True


def _joined(event_ids: Sequence[str]) -> str:
    joined = IDS_SEPARATOR.join(event_ids)
    if joined.count(IDS_SEPARATOR) != len(event_ids) - 1:
        raise ValueError("an event id contains the separator")
    return joined


class Checkpoints:
    """How far a consumer has applied each partition (the next offset), stored next to its projection.

    An HTTP handler that published an event waits here until the projection includes it, so it can answer
    from the read model (read-your-writes), whichever replica's consumer owns the partition. In the process
    whose consumer saves a checkpoint, waiters are woken at once. Otherwise the stored checkpoint is polled:
    one read every POLL_INTERVAL per partition, shared by all its waiters (an API-only process has many), which
    wakes them when it has moved.
    """

    POLL_INTERVAL = 0.01
    # A partition this process's consumer saved lately is woken here; its waiters read the stored
    # checkpoint only this often, in case the partition moved to another replica.
    LOCAL_POLL_INTERVAL = 1.0
    LOCAL_FOR = 5.0

    def __init__(self, db: AsyncDatabase[Document], consumer_name: str) -> None:
        self._collection = db[f"checkpoints.{consumer_name}"]
        self._known: dict[tuple[str, int], int] = {}
        self._saved: asyncio.Event | None = None
        self._saved_here: dict[tuple[str, int], float] = {}
        self._waiting: dict[tuple[str, int], int] = {}  # waiters per polled partition
        self._pollers: dict[tuple[str, int], asyncio.Task[None]] = {}

    def flushed(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """This process's consumer wrote a batch into the read model: its waiters here may read it now,
        before the checkpoint is stored (a crash in between replays the batch over what is already there)."""
        self._known_here(next_offsets)

    async def save(self, next_offsets: dict[tuple[str, int], int]) -> None:
        ops = [UpdateOne({"_id": f"{topic}:{partition}"}, {"$max": {"next_offset": offset}}, upsert=True)
               for (topic, partition), offset in next_offsets.items()]
        await bulk_write(self._collection, ops)
        self._known_here(next_offsets)

    def _known_here(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """Learn offsets this process's consumer reached, and wake its waiters."""
        self._learn(next_offsets)
        now = time.monotonic()
        for position in next_offsets:
            self._saved_here[position] = now
        self._wake()

    def _wake(self) -> None:
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
            position = (topic, partition)
            while self._known.get(position, 0) <= offset:
                if self._saved is None:
                    self._saved = asyncio.Event()
                saved = self._saved
                if time.monotonic() - self._saved_here.get(position, -math.inf) < self.LOCAL_FOR:
                    try:
                        async with asyncio.timeout(self.LOCAL_POLL_INTERVAL):
                            await saved.wait()
                    except TimeoutError:
                        await self.applied(topic, partition)  # in case it moved to another replica
                    continue
                self._waiting[position] = self._waiting.get(position, 0) + 1
                try:
                    if position not in self._pollers:
                        self._pollers[position] = asyncio.create_task(self._poll(position),
                                                                      name=f"poll checkpoint {topic}:{partition}")
                    await saved.wait()
                finally:
                    left = self._waiting.get(position, 1) - 1
                    if left:
                        self._waiting[position] = left
                    else:
                        self._waiting.pop(position, None)

    async def _poll(self, position: tuple[str, int]) -> None:
        """Read a partition's stored checkpoint while anyone waits on it (another process's consumer owns it),
        waking the waiters when it has moved. A failed read is logged and tried again: the waiters' own
        timeouts bound them."""
        try:
            while self._waiting.get(position, 0) > 0:
                before = self._known.get(position, 0)
                try:
                    if await self.applied(*position) > before:
                        self._wake()
                except Exception:
                    log.warning("reading a checkpoint failed; trying again", exc_info=True,
                                extra={"position": f"{position[0]}:{position[1]}"})
                await asyncio.sleep(self.POLL_INTERVAL)  # the polling interval: a wait is what it is for
        finally:
            self._pollers.pop(position, None)


class Projection(ABC):
    """A read model folded from events. Subclasses map an event to write operations, idempotently.

    `apply` must give operations whose repeated application changes nothing (upserts with $set,
    keyed by the entity), because an event can be applied again after a crash before commit.

    `forget` drops what was staged (`kafka.ForgetfulHandler`: a batch the store refuses is handled again event
    by event, as after a crash); a subclass that keeps more of a batch in memory before its flush forgets that
    too, and one that wrote ahead of the refused documents (`readmodel.Counters`, `readmodel.SecondaryIndex`)
    takes that back.
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

    async def forget(self) -> None:
        """Drop what was staged since the last flush that passed (what a failed flush kept included)."""
        self._staged = []

    async def drop(self) -> None:
        for name in self.collections:
            await self.db.drop_collection(name)


class WrittenAhead(Protocol):
    """What a fold writes ahead of its documents (`readmodel.Counters`, `readmodel.SecondaryIndex`): told how
    each fold ended, and mended once a batch whose documents the store refused is forgotten."""

    def settle(self) -> None: ...

    def discard(self) -> None: ...

    async def take_back(self) -> None: ...


Ahead = TypeVar("Ahead", bound=WrittenAhead)


class FoldingProjection(Projection):
    """A projection that folds some of its events in Python over the documents a batch touches (one load and
    one write per document, however many of the batch's events reach it): events of the `folded` types wait
    for the flush and are folded there together (`fold`), before what `apply` staged is written. A fold that
    passed calls `settle`; a flush whose fold fails keeps the batch's events for the next try, ahead of newer
    ones, and calls `discard`; `forget` drops them, calls `discard` too, so the next fold loads what the store
    holds, and `take_back`, so that what the failed fold wrote ahead of its documents (registered with `ahead`:
    its counts, its listings) counts and lists them as the store holds them."""

    #: The event types `fold` takes (they may also be applied by `apply`).
    folded: tuple[type[Event], ...] = ()

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self._folding: list[Event] = []
        self._ahead: list[WrittenAhead] = []

    def ahead(self, part: Ahead) -> Ahead:
        """Register (and return) what `fold` writes ahead of its documents: each fold's end is told to it
        (`settle`, `discard`), and a forgotten batch is taken back from it (`take_back`), in this order."""
        self._ahead.append(part)
        return part

    @abstractmethod
    async def fold(self, events: list[Event]) -> None:
        """Fold a batch's events of the `folded` types (never empty) and write the documents they change."""

    def discard(self) -> None:
        """Forget what a failed `fold` left in memory (what it counted and listed ahead); override when it keeps
        more."""
        for part in self._ahead:
            part.discard()

    def settle(self) -> None:
        """The fold passed: its documents are stored, and what it wrote ahead of them stands."""
        for part in self._ahead:
            part.settle()

    async def take_back(self) -> None:
        """The batch is forgotten: mend what the failed folds wrote ahead of the documents the store refused
        (`Counters.take_back`, `SecondaryIndex.take_back`)."""
        for part in self._ahead:
            await part.take_back()

    async def handle(self, event: Event) -> None:
        if isinstance(event, self.folded):
            self._folding.append(event)
        await super().handle(event)

    async def flush(self) -> None:
        events, self._folding = self._folding, []
        try:
            if events:
                await self.fold(events)
        except Exception:
            self._folding = events + self._folding
            self.discard()
            raise
        if events:
            self.settle()
        await super().flush()

    async def forget(self) -> None:
        self._folding = []
        self.discard()
        await self.take_back()
        await super().forget()


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

    async def forget(self) -> None:
        for projection in self.projections:
            await projection.forget()


class Rebuildable(Protocol):
    """What `rebuild` folds into: a projection, or a handler wrapping one (`purging.PurgingHandler`)."""

    async def drop(self) -> None: ...

    async def ensure_indexes(self) -> None: ...

    async def handle(self, event: Event) -> None: ...

    async def flush(self) -> None: ...


class WrittenKeys:
    """The keys a rebuild has written (its documents' `_id`s; the event ids it stored, `RunCopies`), as a Bloom
    filter: the rebuild writes into collections it dropped and is their only writer (`rebuilding.run_rebuild`
    refuses to run beside the service's consumers), so a key it never wrote cannot be stored and need not be read.
    A false positive only costs a read. Bounded whatever the size: by default 2**26 bits (8 MiB, ~4 bytes a key at
    2,000,000) and 4 probes, ~0.02% false positives at 2,000,000 keys (a million members and their addresses), ~23%
    at 20,000,000."""

    BITS, PROBES = 1 << 26, 4

    def __init__(self, bits: int = BITS) -> None:
        if bits < 8 or bits & (bits - 1):
            raise ValueError("bits must be a power of two, 8 or more")
        self._mask = bits - 1
        self._bits = bytearray(bits // 8)

    def _positions(self, key: str) -> list[int]:
        # Python's str hash (64 bits, of this process: the filter is never stored) split into two for double hashing.
        h = hash(key) & 0xFFFF_FFFF_FFFF_FFFF
        first, step = h & 0xFFFF_FFFF, (h >> 32) | 1
        return [(first + i * step) & self._mask for i in range(self.PROBES)]

    def add(self, keys: Iterable[str]) -> None:
        bits = self._bits
        for key in keys:
            for position in self._positions(key):
                bits[position >> 3] |= 1 << (position & 7)

    def maybe(self, keys: Iterable[str]) -> set[str]:
        """The keys that may have been written (every one that was, perhaps a few others)."""
        bits = self._bits
        return {key for key in keys
                if all(bits[position >> 3] >> (position & 7) & 1 for position in self._positions(key))}


class EventIdStore(Protocol):
    """Where a rebuild remembers the ids it folded (`MongoDeduplicator`): `seen` answers for what `remember` was
    given since `drop`."""

    async def seen(self, event_ids: Sequence[str]) -> set[str]: ...

    async def remember(self, event_ids: Sequence[str]) -> None: ...

    async def drop(self) -> None: ...


class RunCopies:
    """Which events of a rebuild's batch copy one handled before in the run, as the live consumer tells them
    (`EventConsumer`), in memory that does not grow with the run: a copy of an event earlier in the batch; a copy
    of one an earlier batch handled, whose id `store` remembers (dropped at the run's start, so it holds this run's
    ids alone), looked up only for ids `WrittenKeys` says it may hold; and nothing for `self_deduplicated` types,
    whose documents keep the ids folded into them and pass over a copy however late (`readmodel.applied`), as
    they do for the live consumer, which never stores those ids either."""

    def __init__(self, store: EventIdStore, self_deduplicated: tuple[type[Event], ...] = ()) -> None:
        self.store, self.self_deduplicated = store, self_deduplicated
        # The ids `store` was given in this run (and by chance a few others). 1 MiB: a service's rebuild stores few
        # (subscriptions: lists, imports, accounts; delivery: lists, confirmation requests), ~2% false positives at
        # 1,000,000, each a look-up of a few ids in a batch's one `$in`.
        self.stored = WrittenKeys(1 << 23)

    async def start(self) -> None:
        await self.store.drop()

    async def firsts(self, events: Sequence[Event]) -> list[Event]:
        """The batch's events less the copies, in order."""
        remembered = [str(e.event_id) for e in events if not isinstance(e, self.self_deduplicated)]
        maybe = self.stored.maybe(remembered)
        handled = await self.store.seen(sorted(maybe)) if maybe else set()
        firsts = []
        for event in events:
            event_id = str(event.event_id)
            if event_id not in handled:
                handled.add(event_id)
                firsts.append(event)
        return firsts

    async def remember(self, events: Sequence[Event]) -> None:
        """Once the batch's events are folded and flushed."""
        ids = [str(e.event_id) for e in events if not isinstance(e, self.self_deduplicated)]
        if ids:
            await self.store.remember(ids)
            self.stored.add(ids)


async def rebuild(projection: Rebuildable, settings: HeraldSettings, topics: Sequence[str],
                  deduplicator: MongoDeduplicator | None = None, lead: Sequence[str] = (),
                  self_deduplicated: tuple[type[Event], ...] = ()) -> int:
    """Drop the projection and fold it again from offset 0 of the given base topics (`lead`: of them, those
    read to their end first, as the service's consumer reads them).

    Messages that fail validation are skipped, as the live consumer dead-letters them; events replayed
    from a dead-letter topic sit later in the topic and are applied there, as they were live. A copy of an event
    (the same id) is applied once however far behind it comes (`RunCopies`): `deduplicator` (the consumer's, which
    the rebuild empties and refills with the ids it folds, but for the `self_deduplicated` types its documents
    recognise) or, without one, a store of the run's own, dropped at its end.
    Returns the number of events applied.
    """
    from .kafka import read_from_start, validate_record

    await projection.drop()
    await projection.ensure_indexes()
    scratch = None
    if deduplicator is None:
        scratch = make_client(settings, "rebuild")
        deduplicator = MongoDeduplicator(scratch[settings.database_name("rebuild")], uuid.uuid4().hex)
    copies = RunCopies(deduplicator, self_deduplicated)
    names = settings.topics
    applied = skipped = 0
    try:
        await copies.start()
        async for records in read_from_start(settings, [names(t) for t in topics], lead=[names(t) for t in lead]):
            events = []
            for record in records:
                try:
                    events.append(validate_record(record, names))
                except InvalidEvent as exc:
                    # Said, not silent: a record today's contract refuses (a dead letter when it was live, or one a
                    # later contract narrowed) is left out of the rebuilt projection.
                    skipped += 1
                    log.warning("rebuild skips a record the contract refuses", extra={
                        "topic": record.topic, "partition": record.partition, "offset": record.offset,
                        "reason": str(exc)[:500]})
            handled = await copies.firsts(events)
            for event in handled:
                await projection.handle(event)
            applied += len(handled)
            await projection.flush()
            await copies.remember(handled)
    finally:
        if scratch is not None:
            try:
                await deduplicator.drop()
            finally:
                await scratch.close()
    log.info("projection rebuilt", extra={"projection": type(projection).__name__, "events": applied,
                                          "skipped": skipped})
    return applied
