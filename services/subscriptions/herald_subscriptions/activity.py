"""The `activity` read model: what delivery recorded about each subscriber's own messages (sent, deferred with the
receiving server's reply, bounced, opened, clicked, with the client an open or click came from; suppressed, by a
hard bounce or a complaint alike), for the GDPR export; removed by erasure and purge.

Written for FerretDB (`herald_shared.readmodel`): insert-only documents keyed
`account/subscriber/<time>/<event id>`, so one membership's activity is an `_id` prefix range (read newest first
for the export, deleted at once by an erasure) and an account's is the range of its prefix (purge). A batch is
one bulk insert; a redelivered event makes the same `_id`, and the duplicate is ignored, so no event ids are kept.

The export pages through a person's activity newest first, merging their memberships' ranges by time: a page
ends at an entry, and its cursor (`cursor_after`) bounds each membership's range below that entry
(`entries_after`), so following the cursors gives every entry once, the oldest included, each page one `_id`
range read per membership, sorted and limited by the store, and streamed in batches.

Erasure: the projection's consumer, folding SubscriberErased, writes a tombstone (`activity_erased`: ids and the
time, nothing personal) and then deletes the membership's range (`ActivityErasures`), so an erasure's answer comes
once it is done. The activity consumer (its own group, reading herald.delivery and billing's purges) stores
nothing for an erased membership (an open of an old message, a late bounce report would bring the person's IP
back): it skips what the tombstones refuse, and after its insert reads them once more and deletes what they refuse
now. Between the two consumers no order is needed: an erasure whose tombstone that second read missed was
written after the insert, and its range delete, after the tombstone, takes the entries with it. Only a membership
confirmed again after the erasure (the person's fresh double opt-in keeps the id) collects activity again, from its
confirmation on (`domain.activity_kept`): a re-add still pending (anyone can post a form with an address) is not
the person's return.
"""

from __future__ import annotations

import asyncio
import heapq
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.operations import DeleteMany, UpdateOne

from herald_shared.contract import Event
from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.delivery import (
    ComplaintReceived,
    LinkClicked,
    MessageBounced,
    MessageDeferred,
    MessageOpened,
    MessageSent,
)
from herald_shared.contract.subscriptions import SubscriberErased
from herald_shared.mongo import Projection, WriteOp
from herald_shared.purging import delete_by_account_prefix
from herald_shared.readmodel import SEPARATOR, compose, insert_new, load, prefix_range, time_key
from herald_shared.rebuilding import once_per_database

from . import domain
from .store import SUBSCRIBERS, member_key

Document = dict[str, Any]
ACTIVITY, ERASED = "activity", "activity_erased"
# What the activity consumer reads (its `only`): the rest of each topic is passed over unparsed. Not
# herald.subscriptions: an import's millions of events would all pass through it for the rare erasure.
ACTIVITY_EVENTS: dict[str, list[type[Event]]] = {
    # A complaint as a neutral `suppressed` entry, like a hard bounce (`domain.customer_activity`).
    "herald.delivery": [MessageSent, MessageDeferred, MessageBounced, MessageOpened, LinkClicked, ComplaintReceived],
    "herald.billing": [AccountPurged],
}
# The activity consumer's group, after the service name. A new group reads herald.delivery again from offset 0, so
# the events of a type the group before passed over are added (every other entry is the same `_id` again, ignored;
# erased memberships' refused): `.v2` for complaints (as `suppressed`, like a hard bounce), `.v3` for deferrals.
ACTIVITY_GROUP = "activity.v3"
# The export gives a person's activity in pages of at most this many entries, newest first.
EXPORT_LIMIT = 10_000
# Entries fetched at a time from each membership's range while a page is merged: what a page holds beyond its
# own entries, however many memberships the person has.
READ_BATCH = 500
# A cursor: the entry a page ended at, `<time>.<event id>.<subscriber id>` (fixed-width parts first, as a
# subscriber id may hold dots).
CURSOR_PATTERN = (r"^([0-9]{8}T[0-9]{12}Z)\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                  r"\.([A-Za-z0-9._:\-]{1,128})$")


def activity_key(account_id: str, subscriber_id: str, at: datetime, event_id: str) -> str:
    """An entry's `_id`: by membership, then time (sorts as time does), then the event (unique, deterministic)."""
    return compose(account_id, subscriber_id, time_key(at), event_id)


def order_key(entry_id: str) -> tuple[str, str]:
    """Where an entry stands in the export's order across memberships (read in reverse: newest first): its time,
    then its whole `_id`. Within one membership this is the order of `_id`s, so each range streams in it."""
    return entry_id.rsplit(SEPARATOR, 2)[1], entry_id


def cursor_after(entry_id: str) -> str:
    """The cursor of the page that ended at this entry."""
    _, subscriber_id, at, event_id = entry_id.split(SEPARATOR)
    return f"{at}.{event_id}.{subscriber_id}"


def entries_after(account_id: str, subscriber_id: str, cursor: str | None) -> dict[str, str]:
    """The `_id` range of a membership's entries that come after the cursor's entry in the export's order
    (`order_key`): the older ones, and of the same time those whose `_id` sorts below the cursor's. A cursor is
    any well-formed one (`CURSOR_PATTERN`): it only bounds the person's own ranges."""
    bounds = prefix_range(account_id, subscriber_id)
    if cursor is None:
        return bounds
    found = re.fullmatch(CURSOR_PATTERN, cursor)
    if found is None:
        raise ValueError(f"not an activity cursor: {cursor!r}")
    at, event_id, ended_in = found.groups()
    if subscriber_id == ended_in:
        return {**bounds, "$lt": compose(account_id, subscriber_id, at, event_id)}
    # Another membership's entries of that very time all sort on one side of the cursor's: ids hold no '/', so
    # `<subscriber>/` and `<ended_in>/` differ before the time does. '0' sorts just after '/'.
    same_time_before = subscriber_id + SEPARATOR < ended_in + SEPARATOR
    return {**bounds, "$lt": compose(account_id, subscriber_id, at) + ("0" if same_time_before else "")}


class _Newest:
    """A heap item that pops newest first (heapq pops the least)."""

    __slots__ = ("entry", "key", "source")

    def __init__(self, entry: Document, source: int) -> None:
        self.key, self.entry, self.source = order_key(entry["_id"]), entry, source

    def __lt__(self, other: _Newest) -> bool:
        return self.key > other.key


async def newest_first(ranges: Sequence[AsyncIterator[Document]], most: int) -> list[Document]:
    """Up to `most` entries of the ranges (each newest first), merged newest first, reading each range only as
    far as the merge needs."""
    heap: list[_Newest] = []

    async def take(source: int) -> None:
        entry = await anext(ranges[source], None)
        if entry is not None:
            heapq.heappush(heap, _Newest(entry, source))

    await asyncio.gather(*map(take, range(len(ranges))))
    merged: list[Document] = []
    while heap and len(merged) < most:
        newest = heapq.heappop(heap)
        merged.append(newest.entry)
        await take(newest.source)
    return merged


@dataclass(frozen=True)
class ActivityPage:
    """One page of a person's activity in the export."""

    entries: list[Document]  # newest first
    next_cursor: str | None  # where the next page starts; None on the last


class ActivityErasures(Projection):
    """In the projection's consumer: an erasure's tombstone, then the delete of the membership's activity (in this
    order: see the module). Both are repeated unchanged when the event comes again."""

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        if not isinstance(event, SubscriberErased):
            return []
        member = (event.account_id, event.payload.subscriber_id)
        return [(ERASED, UpdateOne({"_id": member_key(*member)}, {
            "$set": {"account_id": member[0], "subscriber_id": member[1]}, "$max": {"erased_at": event.occurred_at}},
            upsert=True)), (ACTIVITY, DeleteMany({"_id": prefix_range(*member)}))]


async def mark_erasures(db: AsyncDatabase[Document]) -> None:
    """Once per database: the tombstones of the memberships erased before tombstones were written. The activity
    consumer's group starts from offset 0 of herald.delivery when first deployed, and must not store an erased
    person's opens then. One scan of the memberships (FerretDB reads them all); repeating it (two processes
    starting at once) writes the same tombstones."""

    async def mark() -> int:
        erased = db[SUBSCRIBERS].find({"status": "erased"}, {"account_id": 1, "subscriber_id": 1, "erased_at": 1})
        ops = [UpdateOne({"_id": member_key(d["account_id"], d["subscriber_id"])}, {
            "$set": {"account_id": d["account_id"], "subscriber_id": d["subscriber_id"]},
            "$max": {"erased_at": d["erased_at"]}}, upsert=True) async for d in erased]
        for start in range(0, len(ops), 1000):
            await db[ERASED].bulk_write(ops[start:start + 1000], ordered=False)
        return len(ops)

    await once_per_database(db, ERASED, mark)


class Activity:
    """The activity consumer's handler (`handle` stages, `flush` writes), and the export's reads."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self._staged: dict[tuple[str, str], list[Document]] = {}  # entries by membership (account, subscriber)

    async def handle(self, event: Event) -> None:
        entry = domain.activity_entry(event)
        if entry is None:
            return
        entry["_id"] = activity_key(event.account_id, entry["subscriber_id"], event.occurred_at, str(event.event_id))
        self._staged.setdefault((event.account_id, entry["subscriber_id"]), []).append(entry)

    async def flush(self) -> None:
        """Insert what the erasures allow (one bulk insert), then delete what they refuse once it is in."""
        if not self._staged:
            return
        refused = await self._refused(self._staged)
        kept = [e for entries in self._staged.values() for e in entries if e["_id"] not in refused]
        if kept:
            await insert_new(self.db[ACTIVITY], kept)
            inserted: dict[tuple[str, str], list[Document]] = {}
            for entry in kept:
                inserted.setdefault((entry["account_id"], entry["subscriber_id"]), []).append(entry)
            late = sorted(await self._refused(inserted))
            if late:
                await self.db[ACTIVITY].delete_many({"_id": {"$in": late}})
        self._staged.clear()

    async def forget(self) -> None:
        self._staged.clear()

    async def _refused(self, entries: dict[tuple[str, str], list[Document]]) -> set[str]:
        """The ids of the entries an erasure of their membership refuses: one `$in` on the tombstones, and for
        the few memberships erased, one on their membership documents (added again since?)."""
        tombstones = await load(self.db[ERASED], (member_key(*m) for m in entries))
        if not tombstones:
            return set()
        members = await load(self.db[SUBSCRIBERS], tombstones, {"status": 1, "confirmed_at": 1})
        refused: set[str] = set()
        for key, tombstone in tombstones.items():
            doc = members.get(key)
            rejoined = domain.rejoined_at(doc) if doc is not None else None
            refused |= {e["_id"] for e in entries[(tombstone["account_id"], tombstone["subscriber_id"])]
                        if not domain.activity_kept(e["at"], tombstone["erased_at"], rejoined)}
        return refused

    async def purge(self, account_id: str) -> None:
        """Retention: the account's activity and erasure tombstones (ranges of its prefix). Both consumers that
        write here call it on AccountPurged (each drops the account's later events)."""
        await delete_by_account_prefix(self.db, account_id, (ACTIVITY, ERASED))

    async def page(self, account_id: str, subscriber_ids: list[str], after: str | None = None,
                   limit: int = EXPORT_LIMIT) -> ActivityPage:
        """The memberships' activity after the cursor (from the newest without one), newest first, at most
        `limit` entries: each membership's range read newest first by `_id`, at most `limit + 1` of it (the one
        more tells whether there is a next page), fetched READ_BATCH at a time as the merge takes them."""
        reads = [self.db[ACTIVITY].find({"_id": entries_after(account_id, subscriber_id, after)})
                 .sort("_id", -1).limit(limit + 1).batch_size(min(READ_BATCH, limit + 1))
                 for subscriber_id in subscriber_ids]
        try:
            found = await newest_first(reads, limit + 1)
        finally:
            await asyncio.gather(*(read.close() for read in reads))
        entries = found[:limit]
        return ActivityPage(entries, cursor_after(entries[-1]["_id"]) if len(found) > limit else None)
