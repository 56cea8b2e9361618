"""Read models built for a store that is fast only by `_id`: the one way every service folds its projections.

FerretDB 1.x (with the project's patches) answers `_id` equality, `_id` `$in` and `_id` ranges from the
primary key index and scans the whole table for anything else; a real MongoDB is fast at all of it. So:
- documents are loaded by `$in` on `_id` once per batch, folded in Python and written back by `_id`;
  documents that are new are inserted in bulk (no upsert per document);
- a listing ("members of list L with status S") is a *secondary index*: a collection whose `_id`s are
  composed keys (`account/list/status/member`), read as an `_id` prefix range, written before the documents
  and mended by the fold that applies a crashed batch again, however differently its batch is cut (`States`);
  and after a batch whose documents the store refused, set aside by the consumer: its documents are listed
  again as the store holds them (`SecondaryIndex.take_back`);
- counts are kept as the events fold (`Counters`), never computed by scanning, and stay exact when a
  batch is applied again after a crash: each counter document remembers the offset of the last event
  it counted; and after a batch whose documents the store refused, set aside by the consumer: what it
  counted is taken back (`Counters.take_back`).

Keys are joined with `/`, which no identifier of the contract contains, so a prefix range of one list
can never reach into another.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError
from pymongo.operations import DeleteOne, UpdateOne

from .contract import Event
from .contract.envelope import position_of

Document = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")
DUPLICATE_KEY = 11000
SEPARATOR = "/"
# Ids per `$in` query: one index lookup each, and a query of this size answers in milliseconds.
LOAD_CHUNK = 1000
# A big load or insert goes out as up to this many concurrent requests of at least PART_MIN documents each:
# FerretDB converts every document of a request on one core, so one request leaves the server's other cores
# idle. On 2 cores, 844 subscriber documents in 3 parts: insert 79 -> 54 ms, load by `$in` 182 -> 112 ms.
PARTS, PART_MIN = 3, 200

__all__ = ["APPLIED", "Counters", "KeyedReader", "SecondaryIndex", "States", "applied", "compose", "in_parts",
           "insert_new", "keys_due", "load", "marked", "prefix_range", "relisted", "stored_time_key", "time_key",
           "write_changes"]


# The ids of the events folded into a document, kept in it: a fold that skips an event already there
# recognises a copy however late it comes (a dead letter replayed, a producer re-sending), so its consumer need
# not store an id per event (`EventConsumer(self_deduplicated=...)`). UUIDs, space-separated: FerretDB stores a
# string for a fraction of an array's cost, and a 36-character id can only match a whole one of them.
APPLIED = "applied_events"


def applied(doc: Document | None, event: Event) -> bool:
    """True when this event was folded into the document already."""
    return doc is not None and str(event.event_id) in doc.get(APPLIED, "")


def marked(folded: Document, before: Document | None, event: Event) -> Document:
    """`folded` (the event folded over `before`) carrying the ids applied to `before` and this event's."""
    ids = before.get(APPLIED, "") if before is not None else ""
    return {**folded, APPLIED: f"{ids} {event.event_id}" if ids else str(event.event_id)}


def compose(*parts: str) -> str:
    """A composed `_id`. Parts must not contain '/' (contract identifiers never do)."""
    return SEPARATOR.join(parts)


def time_key(at: datetime) -> str:
    """A UTC instant as a fixed-width key part that sorts as time does (microseconds included)."""
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def stored_time_key(at: datetime) -> str:
    """`time_key` to the millisecond, for a key worked out again from a document's date: MongoDB stores a date to
    the millisecond, so the key a listing wrote from an event's time must be the one worked out from the stored
    document when the listing is left (campaigns' schedule kept keys of the microsecond nothing removed, and
    stopped queueing once 100 of them were due). Same width and order as `time_key`'s keys."""
    at = at.astimezone(UTC)
    return time_key(at.replace(microsecond=at.microsecond - at.microsecond % 1000))


async def keys_due(collection: AsyncCollection[Document], now: datetime, limit: int | None = None) -> list[str]:
    """The keys of a listing keyed by time first (`time_key(...)/...`) that are due at or before `now`, earliest
    first: one `_id` range ('0' sorts after the '/' that follows a key's time)."""
    cursor = collection.find({"_id": {"$lt": time_key(now) + "0"}}, {"_id": 1}).sort("_id", 1)
    if limit is not None:
        cursor = cursor.limit(limit)
    return [str(doc["_id"]) async for doc in cursor]


def prefix_range(*parts: str) -> dict[str, str]:
    """The `_id` filter of every key that starts with these parts (and a '/' after the last)."""
    prefix = compose(*parts) + SEPARATOR
    return {"$gte": prefix, "$lt": prefix[:-1] + chr(ord(SEPARATOR) + 1)}


def in_parts(items: Sequence[T], most: int = LOAD_CHUNK) -> list[Sequence[T]]:
    """Items split for concurrent requests: up to PARTS parts of at least PART_MIN items (fewer for few
    items), none larger than `most`."""
    size = max(1, min(most, max(PART_MIN, -(-len(items) // PARTS))))
    return [items[start:start + size] for start in range(0, len(items), size)]


async def _gather_parts(work: Sequence[Callable[[], Awaitable[R]]]) -> list[R]:
    """Run the parts' requests, PARTS at a time; a failure is raised once none of them is still running."""
    results: list[R] = []
    for start in range(0, len(work), PARTS):
        done = await asyncio.gather(*(request() for request in work[start:start + PARTS]), return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
    return results


async def load(collection: AsyncCollection[Document], ids: Iterable[str],
               fields: Document | None = None) -> dict[str, Document]:
    """The documents with these `_id`s (absent ones are simply missing), by `$in`, in concurrent parts; only
    `fields` of each (a projection) when given."""
    async def read(part: Sequence[str]) -> list[Document]:
        return await collection.find({"_id": {"$in": list(part)}}, fields).to_list()

    found: dict[str, Document] = {}
    for docs in await _gather_parts([functools.partial(read, part) for part in in_parts(sorted(set(ids)))]):
        found.update((doc["_id"], doc) for doc in docs)
    return found


class KeyedReader:
    """Reads one collection by `_id` for many concurrent callers with few queries: the ids asked for while a
    query is out travel together in the next one (one `$in`), so under load a request costs a share of a
    query instead of one of its own, and when idle a read goes out at once.

    A read always starts after it was asked for, so it sees every write completed before the call (what
    read-your-writes needs). Each caller gets a document of its own (copies when several asked for one id).
    """

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection
        self._asked: dict[str, list[asyncio.Future[Document | None]]] = {}
        self._reading: asyncio.Task[None] | None = None

    async def get(self, doc_id: str) -> Document | None:
        future: asyncio.Future[Document | None] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(doc_id, []).append(future)
        if self._reading is None:
            self._reading = asyncio.create_task(self._read(), name=f"read {self._collection.name} by _id")
        return await future

    async def get_many(self, ids: Iterable[str]) -> dict[str, Document]:
        wanted = list(dict.fromkeys(ids))
        found = await asyncio.gather(*(self.get(i) for i in wanted))
        return {i: doc for i, doc in zip(wanted, found, strict=True) if doc is not None}

    async def _read(self) -> None:
        asked: dict[str, list[asyncio.Future[Document | None]]] = {}
        try:
            while self._asked:
                asked, self._asked = self._asked, {}
                try:
                    found = await load(self._collection, asked)
                except Exception as exc:  # every caller of this round gets the error, none hangs
                    for futures in asked.values():
                        for future in futures:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for doc_id, futures in asked.items():
                    doc = found.get(doc_id)
                    for n, future in enumerate(futures):
                        if not future.done():
                            future.set_result(doc if n == 0 or doc is None else copy.deepcopy(doc))
        finally:
            self._reading = None
            for futures in asked.values():  # cancelled mid-round (shutting down): its callers do not hang
                for future in futures:
                    future.cancel()


async def insert_new(collection: AsyncCollection[Document], docs: Sequence[Document]) -> set[str]:
    """Insert in bulk, in concurrent parts; returns the `_id`s that already existed (written before a crash,
    or by a redelivered event), which are left as they are. Any other error is raised, once no part is
    still being written."""
    async def insert(part: Sequence[Document]) -> set[str]:
        try:
            await collection.insert_many(list(part), ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(err.get("code") != DUPLICATE_KEY for err in errors):
                raise
            return {str(part[err["index"]]["_id"]) for err in errors}
        return set()

    existed: set[str] = set()
    for found in await _gather_parts([functools.partial(insert, part) for part in in_parts(docs, len(docs))]):
        existed |= found
    return existed


_MISSING = object()


async def write_changes(collection: AsyncCollection[Document], before: Mapping[str, Document],
                        after: Mapping[str, Document | None]) -> None:
    """Write what a fold changed: documents new since `before` are inserted in bulk (a document that exists
    after all is replaced by its `$set`), changed ones get `$set`/`$unset` of what differs, `None` deletes."""
    new = [doc for key, doc in after.items() if doc is not None and key not in before]
    ops: list[UpdateOne | DeleteOne] = []
    for key, doc in after.items():
        old = before.get(key)
        if doc is None:
            if old is not None:
                ops.append(DeleteOne({"_id": key}))
        elif old is not None:
            update = _difference(old, doc)
            if update:
                ops.append(UpdateOne({"_id": key}, update))
    existed = await insert_new(collection, new)
    # Only after a crash between a write and its offset commit: make the stored copy what the fold says.
    ops += [UpdateOne({"_id": doc["_id"]}, {"$set": {k: v for k, v in doc.items() if k != "_id"}})
            for doc in new if str(doc["_id"]) in existed]
    if ops:
        await collection.bulk_write(ops, ordered=True)


def _difference(old: Document, new: Document) -> dict[str, Any]:
    changed = {k: v for k, v in new.items() if k != "_id" and old.get(k, _MISSING) != v}
    removed = {k: "" for k in old if k not in new}
    update: dict[str, Any] = {}
    if changed:
        update["$set"] = changed
    if removed:
        update["$unset"] = removed
    return update


class States:
    """What a fold made of each document of a batch, state after state (`SecondaryIndex.write`'s `passed`):
    `set(key, doc)` in place of `after[key] = doc`."""

    def __init__(self, after: dict[str, Any]) -> None:  # documents by key (None: deleted)
        self.after = after
        self.passed: dict[str, list[Document]] = {}

    def set(self, key: str, doc: Document) -> None:
        self.after[key] = doc
        self.passed.setdefault(key, []).append(doc)


class SecondaryIndex:
    """A listing kept as a collection of composed keys: `key(doc)` says where a document is listed (None: not
    listed). Write it before the documents it lists. A crash between the two leaves keys the documents do
    not show yet; the fold that applies those events again after the restart starts from the same documents
    but may fold more events at once (its batch is whatever the consumer reads then), so it passes over the
    states the crashed fold ended in. So `write` removes, besides the key a document had before the batch, the
    key of every state it passed through in the batch (`passed`) that is not its final one: each such key could
    have been written by a fold of a shorter batch. Keys name their document, so no other one is touched.

    A fold whose documents the store refuses has written their keys all the same, and removed the keys they
    still have; the consumer forgets the batch and folds its events again one at a time (`kafka.EventConsumer`),
    and what it folds again starts from the stored documents, so nothing else mends those keys. Given the
    `documents` it lists (the collection of the `_id`s `write` is given), the index remembers which documents
    each fold listed, like `Counters` their counting: `settle` once the fold's documents are stored, `discard`
    when it failed, and `take_back`, once the batch is forgotten, lists the documents of the failed folds as the
    store holds them (`relisted`): a member refused is listed nowhere, a refused change leaves its key."""

    def __init__(self, collection: AsyncCollection[Document], key: Callable[[Document], str | None],
                 documents: AsyncCollection[Document] | None = None) -> None:
        self.collection = collection
        self._key = key
        self._documents = documents
        # What this fold wrote for each document: its id, the keys removed, the key added (None: none). A list
        # of tuples costs a passing fold least; only a failed one gathers it (`discard`).
        self._listing: list[tuple[str, set[str], str | None]] = []
        self._unstored: dict[str, set[str]] = {}  # by document: the keys the folds that failed wrote or removed

    async def write(self, before: Mapping[str, Document], after: Mapping[str, Document | None],
                    passed: Mapping[str, Iterable[Document]] | None = None) -> None:
        """`after`: the documents the batch changed; `passed`: for each document, the states the fold made of it
        on the way (the last one included or not). A document that came back to where it started is in
        `passed` alone: its key goes back too (a shorter fold may have moved it)."""
        passed = passed or {}
        remembered = self._listing if self._documents is not None else None
        removed: set[str] = set()
        added: list[Document] = []
        for doc_id in {**after, **passed}:
            old = before.get(doc_id)
            doc = after[doc_id] if doc_id in after else old
            old_key = self._key(old) if old is not None else None
            new_key = self._key(doc) if doc is not None else None
            keys = (old_key, *(self._key(state) for state in passed.get(doc_id, ())))
            stale = {k for k in keys if k is not None and k != new_key}
            removed |= stale
            listed = new_key if new_key is not None and (new_key != old_key or stale) else None
            if listed is not None:
                added.append({"_id": listed})
            if remembered is not None and (stale or listed is not None):
                remembered.append((doc_id, stale, listed))
        ids = sorted(removed)
        # The keys removed and the keys added are apart (neither holds a final key of the other), so both go
        # out at once: a batch whose members passed over a state (added, then confirmed) waits for no extra
        # round trip. One delete statement per chunk, found through the `_id` index.
        await asyncio.gather(insert_new(self.collection, added), self._delete(ids))

    async def _delete(self, ids: Sequence[str]) -> None:
        await asyncio.gather(*(self.collection.delete_many({"_id": {"$in": list(ids[start:start + LOAD_CHUNK])}})
                               for start in range(0, len(ids), LOAD_CHUNK)))

    def settle(self) -> None:
        """The fold's documents are stored: the keys it wrote stand."""
        self._listing, self._unstored = [], {}

    def discard(self) -> None:
        """The fold failed: what it listed joins what the failed folds before it listed, for `take_back` (a
        document one of them stored is not folded again by the next, which starts from it). Once more after
        that (a handler that forgets calls it again) it changes nothing."""
        for doc_id, removed, added in self._listing:
            keys = self._unstored.setdefault(doc_id, set())
            keys.update(removed)
            if added is not None:
                keys.add(added)
        self._listing = []

    async def take_back(self) -> None:
        """List the documents of the failed folds as the store holds them now (their batch is forgotten): the
        keys written for a document it does not hold go, and a document it holds unchanged has its key back.
        Safe to repeat after a failure (kept until it passed); nothing to do without `documents`."""
        unstored = self._unstored
        if not unstored or self._documents is None:
            self._unstored = {}
            return
        stored = await load(self._documents, unstored)
        removed, kept = relisted(unstored, stored, self._key)
        await asyncio.gather(insert_new(self.collection, [{"_id": k} for k in sorted(kept)]),
                             self._delete(sorted(removed)))
        self._unstored = {}

    async def keys(self, *prefix: str, after: str | None = None, limit: int = 100) -> list[str]:
        """Keys under a prefix in `_id` order, after a given key (a page's cursor)."""
        bounds = prefix_range(*prefix)
        if after is not None and after >= bounds["$gte"]:
            bounds = {"$gt": after, "$lt": bounds["$lt"]}
        cursor = self.collection.find({"_id": bounds}, {"_id": 1}).sort("_id", 1).limit(limit)
        return [doc["_id"] async for doc in cursor]


def relisted(listing: Mapping[str, Iterable[str]], stored: Mapping[str, Document],
             key: Callable[[Document], str | None]) -> tuple[set[str], set[str]]:
    """For the documents a failed fold listed (by `_id`: the keys it wrote or removed for each), the keys that
    list them as `stored` holds them: (those to remove, those to have). A document not stored is listed nowhere;
    each document's own key is the only one of its keys kept (keys name their document)."""
    removed: set[str] = set()
    kept: set[str] = set()
    for doc_id, keys in listing.items():
        doc = stored.get(doc_id)
        current = key(doc) if doc is not None else None
        removed.update(k for k in keys if k != current)
        if current is not None:
            kept.add(current)
    return removed, kept


# A counter's offsets at or before its `through` whose events it does not count (`Counters.take_back`).
UNCOUNTED = "uncounted"
# What one event counted in one counter: its key, its offset (None: made here, not read) and the changes.
Counting = tuple[str, int | None, Mapping[str, int]]


class Counters:
    """Counts per key (e.g. members of a list by status), folded with the events, exact under replay.

    Every event of one key must come from one Kafka partition (true for anything of one account, the
    message key). Each counter document stores `through`, the offset of the last event it counted; an
    event at or before it was counted already. Write the counters before the documents they count: a
    crash after the counters and before the documents makes the replay fold the documents again without
    counting twice.

    A flush whose documents the store refuses, after the counters were written, leaves counted in the store
    events whose documents are not there; the consumer then forgets the batch and folds its events again one
    at a time (`kafka.EventConsumer`), and dead-letters the one refused, to be replayed later at a new offset.
    So the owner of the counters says how each fold ends: `settle` once its documents are stored, `discard`
    when it failed; the failed fold's counting (what it added, and what it found counted already: the events
    whose documents it still had to write) is what `take_back` subtracts when the handler forgets the batch,
    noting their offsets in the counter (`uncounted`) so that they count when folded again, once.
    That is exact when the failed fold saw what the store kept of the attempts before it: the store refuses
    the same writes at every attempt and the flush was tried at least twice (the consumer's default, 3), so
    the last attempt counts only the events whose documents are still missing. After a single attempt that
    wrote some of a batch's documents, their events are taken back too (and, already folded, not counted again).
    """

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._loaded: dict[str, Document] = {}
        self._current: dict[str, Document] = {}
        self._counting = False  # a fold is under way (prepared, and neither settled nor discarded)
        self._unwritten: list[Counting] = []  # added by this fold, not written yet
        self._stored: list[Counting] = []  # this fold's counting the store holds (written, or counted before)
        self._unstored: list[Counting] = []  # the last failed fold's, for `take_back`

    async def prepare(self, keys: Iterable[str]) -> None:
        """Load the counters a batch will touch."""
        self._counting = True
        missing = set(keys) - set(self._current)
        loaded = await load(self.collection, missing)
        for key in missing:
            doc = loaded.get(key)
            self._loaded[key] = doc if doc is not None else {}
            self._current[key] = _copy_counter(doc) if doc is not None else {"_id": key, "counts": {}}

    def add(self, key: str, event: Event, deltas: Mapping[str, int]) -> None:
        """Count one event's changes (name → +n/-n), unless this counter already counted that event."""
        position = position_of(event)
        self.add_at(key, position.offset if position is not None else None, deltas)

    def add_at(self, key: str, offset: int | None, deltas: Mapping[str, int]) -> None:
        """`add` for an event read at this offset (None: made here, not read), for a fold that keeps only what
        it needs of its events."""
        current = self._current[key]
        if offset is not None:
            through = current.get("through")
            if through is not None and offset <= through:
                uncounted = current.get(UNCOUNTED, ())
                if offset not in uncounted:
                    self._stored.append((key, offset, deltas))
                    return
                rest = [o for o in uncounted if o != offset]  # taken back: it counts now
                if rest:
                    current[UNCOUNTED] = rest
                else:
                    del current[UNCOUNTED]
            else:
                current["through"] = offset
        self._unwritten.append((key, offset, deltas))
        counts = current["counts"]
        for name, delta in deltas.items():
            if delta:
                counts[name] = counts.get(name, 0) + delta

    def get(self, key: str) -> dict[str, int]:
        return dict(self._current[key]["counts"])

    async def write(self) -> None:
        """Write the changed counters (absolute values and `through`: repeating the write changes nothing)."""
        before = {k: v for k, v in self._loaded.items() if v}
        after: dict[str, Document | None] = {k: v for k, v in self._current.items() if v != self._loaded[k]}
        await write_changes(self.collection, before, after)
        self._stored += self._unwritten
        self._unwritten = []
        self._loaded.clear()
        self._current.clear()

    def settle(self) -> None:
        """The fold's documents are stored: what it counted stays counted."""
        self._counting = False
        self._unwritten, self._stored, self._unstored = [], [], []

    def discard(self) -> None:
        """Forget what was counted in memory (the fold failed; the batch will be folded again, or forgotten and
        taken back). Its counting replaces an earlier failed fold's for `take_back`: it saw what that one
        stored. Once more after that (a handler that forgets calls it again) it changes nothing."""
        if self._counting:
            self._unstored, self._counting = self._stored, False
        self._unwritten, self._stored = [], []
        self._loaded.clear()
        self._current.clear()

    async def take_back(self) -> None:
        """Subtract what the last failed fold left counted in the store, its documents unwritten (the handler
        forgets the batch), and note its offsets as not counted: folded again, alone or replayed at a new
        offset, each of its events counts once. Safe to repeat after a write whose answer was lost (an offset
        noted is not subtracted again); an event made here (no offset) has nothing to note it by."""
        unstored, self._counting = self._unstored, False
        if not unstored:
            return
        before = await load(self.collection, {key for key, _, _ in unstored})
        after: dict[str, Document | None] = {}
        for key, offset, deltas in unstored:
            doc = after.get(key) or before.get(key)
            if doc is None:
                continue  # nothing counted there any more (the account purged meanwhile)
            if offset is not None:
                noted = doc.get(UNCOUNTED, [])
                if doc.get("through") is None or offset > doc["through"] or offset in noted:
                    continue
                doc = after[key] = {**_copy_counter(doc), UNCOUNTED: [*noted, offset]}
            else:
                doc = after[key] = _copy_counter(doc)
            counts = doc["counts"]
            for name, delta in deltas.items():
                if delta:
                    counts[name] = counts.get(name, 0) - delta
        await write_changes(self.collection, before, after)
        self._unstored = []

    async def read(self, key: str) -> dict[str, int]:
        doc = await self.collection.find_one({"_id": key})
        return {k: int(v) for k, v in (doc or {}).get("counts", {}).items()}


def _copy_counter(doc: Document) -> Document:
    copied = {**doc, "counts": dict(doc.get("counts", {}))}
    if UNCOUNTED in doc:
        copied[UNCOUNTED] = list(doc[UNCOUNTED])
    return copied
