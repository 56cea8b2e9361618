"""Campaigns' read model in MongoDB, folded from events, and the queries the API needs; every read and write by
`_id` or an `_id` range, every query scoped by account.

`campaigns` (`account/campaign`): each campaign folded in Python (`domain.evolve`) over the documents a batch
touches, loaded by `_id`; `lists` (`account/list`): the account's lists and their custom fields, from
herald.subscriptions, so a draft's target and segment are checked without asking that service; `accounts`
(`account`): approval, plan, suspension and blocks, from herald.billing and herald.compliance;
`sending_domains` (`account/domain`): the account's sending domains, pending or verified
(`domain.evolve_sending_domain`); `test_opt_outs` (`account/address sha256`): who asked for no more test messages
of the account (RecipientOptedOutOfTests, from herald.subscriptions). `test_sends` (`account/time/test`, written by
the API, not folded): the account's test requests of the last 24 hours and their message counts.
Two listings kept as the campaigns fold (`SecondaryIndex`): `schedule` (`due time/account/campaign`, what the
scheduler reads as an `_id` range up to now) and `review` (`submitted time/account/campaign`, the staff
queue, oldest first). `stats` counts campaigns by status per partition of herald.campaigns (`Counters`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.contract import Event
from herald_shared.contract.campaigns import (
    CampaignApproved,
    CampaignCancelled,
    CampaignCompleted,
    CampaignCreated,
    CampaignDeleted,
    CampaignEdited,
    CampaignQueued,
    CampaignRejected,
    CampaignReturned,
    CampaignSubmitted,
    CampaignUnscheduled,
    StaffViewed,
)
from herald_shared.contract.delivery import CampaignDeliveryFinished, DeliveryHeld
from herald_shared.contract.envelope import position_of
from herald_shared.contract.subscriptions import ListCreated, ListDeleted, RecipientOptedOutOfTests
from herald_shared.mongo import Document, Projection, UpdateOne, WriteOp
from herald_shared.purging import delete_by_account_prefix
from herald_shared.readmodel import (
    Counters,
    SecondaryIndex,
    States,
    compose,
    insert_new,
    keys_due,
    load,
    prefix_range,
    stored_time_key,
    time_key,
    write_changes,
)

from . import domain
from .domain import AccountInfo, CampaignState, ListInfo

CAMPAIGNS, LISTS, REPORTS, ENGAGED = "campaigns", "lists", "reports", "engaged"
ACCOUNTS, SCHEDULE, REVIEW, STATS, AUDIT = "accounts", "schedule", "review", "stats", "audit"
COMPLETING, SENDING_DOMAINS = "completing", "sending_domains"
TEST_OPT_OUTS, TEST_SENDS = "test_opt_outs", "test_sends"
CAMPAIGN_EVENTS = (CampaignCreated, CampaignEdited, CampaignDeleted, CampaignSubmitted, CampaignApproved,
                   CampaignRejected, CampaignQueued, CampaignCancelled, CampaignCompleted, CampaignReturned,
                   CampaignUnscheduled)
# What the campaigns read model takes from herald.delivery (the reports have their own consumer).
DELIVERY_EVENTS = (DeliveryHeld, CampaignDeliveryFinished)


def campaign_key(account_id: str, campaign_id: str) -> str:
    return compose(account_id, campaign_id)


def sending_domain_key(account_id: str, domain_name: str) -> str:
    return compose(account_id, domain_name)


def schedule_key(doc: Mapping[str, Any]) -> str | None:
    """Where a scheduled campaign waits: at its send time (or its submission or approval, sent now)."""
    if doc.get("status") != "scheduled":
        return None
    return compose(stored_time_key(doc.get("send_at") or doc["updated_at"]), doc["account_id"], doc["campaign_id"])


def review_key(doc: Mapping[str, Any]) -> str | None:
    if doc.get("status") != "in_review":
        return None
    return compose(stored_time_key(doc["submitted_at"]), doc["account_id"], doc["campaign_id"])


def completing_key(doc: Mapping[str, Any]) -> str | None:
    """A queued campaign delivery has finished with waits here for its CampaignCompleted."""
    if doc.get("status") != "queued" or not doc.get("delivery"):
        return None
    return compose(doc["account_id"], doc["campaign_id"])


def _campaign_of_key(key: str) -> tuple[str, str]:
    """(account, campaign) of a key of one of the listings: `time/account/campaign` or `account/campaign`."""
    account_id, campaign_id = key.split("/")[-2:]
    return account_id, campaign_id


def key_parts(key: str) -> tuple[datetime, str, str]:
    """(time, account, campaign) of a `schedule` or `review` key."""
    at, account_id, campaign_id = key.split("/")
    return datetime.strptime(at, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC), account_id, campaign_id


# The states a campaign is in just before it enters a listing: a fold writes the key before the document, and a
# command whose commit timed out (`Recorder.commit`) has released its lock by then, so `relist` leaves such a key
# (of this version's format, for the schedule) to the fold; `mend_listings`, before any fold, takes it.
_BECOMING: dict[str, tuple[str, ...]] = {SCHEDULE: ("draft", "in_review", "rejected"), COMPLETING: ("queued",)}


def _written_now(key: str) -> bool:
    """Whether a time-first key is of this version's format (milliseconds: `stored_time_key`)."""
    return key.split("/", 1)[0].endswith("000Z")


# The listings a campaign is in by its state, each with its key function (`store.relist`, `mend_listings`).
_LISTINGS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    SCHEDULE: schedule_key, REVIEW: review_key, COMPLETING: completing_key}


def stats_key(event: Event) -> str:
    position = event.position
    return compose("status", str(position.partition) if position is not None else "live")


def _campaign_of(event: Event) -> str | None:
    if isinstance(event, CAMPAIGN_EVENTS):
        return str(event.payload.campaign_id)
    if isinstance(event, DELIVERY_EVENTS):
        return event.payload.campaign_id
    return None


class CampaignsProjection(Projection):
    collections = (CAMPAIGNS, LISTS, ACCOUNTS, SCHEDULE, REVIEW, COMPLETING, STATS, AUDIT, SENDING_DOMAINS,
                   TEST_OPT_OUTS)

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self._campaign_events: list[Event] = []
        self._account_events: list[Event] = []
        self._domain_events: list[Event] = []
        self._schedule = SecondaryIndex(db[SCHEDULE], schedule_key)
        self._review = SecondaryIndex(db[REVIEW], review_key)
        self._completing = SecondaryIndex(db[COMPLETING], completing_key)
        self._stats = Counters(db[STATS])

    async def purge(self, account_id: str) -> None:
        """Delete everything of a purged account (`herald_shared.purging`): its campaigns and their places in
        the schedule and the review queue (keyed by time first: found from the campaigns), its lists, account,
        staff audit log, sending domains, test opt-outs and test counts. The campaigns-by-status counters (per
        partition, no account in them) keep counting its campaigns until the read model is rebuilt."""
        before = {d["_id"]: d async for d in self.db[CAMPAIGNS].find({"_id": prefix_range(account_id)})}
        gone: dict[str, Document | None] = dict.fromkeys(before)
        for index in (self._schedule, self._review, self._completing):
            await index.write(before, gone)
        await delete_by_account_prefix(self.db, account_id, (CAMPAIGNS, LISTS, AUDIT, SENDING_DOMAINS,
                                                             TEST_OPT_OUTS, TEST_SENDS))
        await self.db[ACCOUNTS].delete_one({"_id": account_id})

    async def handle(self, event: Event) -> None:
        if _campaign_of(event) is not None:
            self._campaign_events.append(event)
        if isinstance(event, domain.ACCOUNT_EVENTS):
            self._account_events.append(event)
        if isinstance(event, domain.SENDING_DOMAIN_EVENTS):
            self._domain_events.append(event)
        await super().handle(event)

    async def flush(self) -> None:
        events, self._campaign_events = self._campaign_events, []
        accounts, self._account_events = self._account_events, []
        domains, self._domain_events = self._domain_events, []
        try:
            await self._fold_accounts(accounts)
            await self._fold_sending_domains(domains)
            await self._fold(events)
        except Exception:
            self._campaign_events = events + self._campaign_events
            self._account_events = accounts + self._account_events
            self._domain_events = domains + self._domain_events
            self._stats.discard()
            raise
        self._stats.settle()
        await super().flush()

    async def forget(self) -> None:
        """What the batch staged and counted in memory; its events are folded again from what the store holds,
        and what a refused flush counted ahead of the campaigns it could not store is taken back."""
        self._campaign_events, self._account_events, self._domain_events = [], [], []
        self._stats.discard()
        await self._stats.take_back()
        await super().forget()

    async def _fold_accounts(self, events: list[Event]) -> None:
        if not events:
            return
        before = await load(self.db[ACCOUNTS], {e.account_id for e in events})
        after: dict[str, Document | None] = dict(before)
        for event in events:
            folded = domain.evolve_account(after.get(event.account_id), event)
            if folded is not None:
                after[event.account_id] = {**folded, "_id": event.account_id}
        await write_changes(self.db[ACCOUNTS], before, {k: v for k, v in after.items() if v is not before.get(k)})

    async def _fold_sending_domains(self, events: list[Event]) -> None:
        if not events:
            return
        keys = [sending_domain_key(e.account_id, str(domain.sending_domain_of(e))) for e in events]
        before = await load(self.db[SENDING_DOMAINS], set(keys))
        after: dict[str, Document | None] = dict(before)
        for key, event in zip(keys, events, strict=True):
            old = after.get(key)
            folded = domain.evolve_sending_domain(old, event)
            if folded is not old:
                after[key] = None if folded is None else {**folded, "_id": key}
        await write_changes(self.db[SENDING_DOMAINS], before,
                            {k: v for k, v in after.items() if v is not before.get(k)})

    async def _fold(self, events: list[Event]) -> None:
        if not events:
            return
        keys = {campaign_key(e.account_id, str(_campaign_of(e))) for e in events}
        before = await load(self.db[CAMPAIGNS], keys)
        after: dict[str, Document | None] = dict(before)
        states = States(after)
        await self._stats.prepare({stats_key(e) for e in events if isinstance(e, CAMPAIGN_EVENTS)})
        for event in events:
            key = campaign_key(event.account_id, str(_campaign_of(event)))
            old = after.get(key)
            folded = domain.evolve(old, event, event.occurred_at)
            if folded is None or folded is old:
                continue
            states.set(key, {**folded, "_id": key})
            if isinstance(event, CAMPAIGN_EVENTS):
                was, now = (old or {}).get("status"), folded["status"]
                if was != now:
                    self._stats.add(stats_key(event), event, {**({str(was): -1} if was else {}), str(now): 1})
        changed = {k: v for k, v in after.items() if v is not before.get(k)}
        # Counters and listings before the documents: a replay after a crash repeats them idempotently.
        await asyncio.gather(self._stats.write(), *(index.write(before, changed, states.passed)
                                                   for index in (self._schedule, self._review, self._completing)))
        await write_changes(self.db[CAMPAIGNS], before, changed)

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        match event:
            case StaffViewed(payload=p):
                # Audit: who of the staff looked at which campaign of the account, when (a replay rewrites it).
                return [(AUDIT, UpdateOne({"_id": compose(event.account_id, time_key(event.occurred_at),
                                                          str(event.event_id))}, {"$setOnInsert": {
                    "account_id": event.account_id, "campaign_id": p.campaign_id, "staff": p.staff,
                    "action": p.action, "at": event.occurred_at}}, upsert=True))]
            case ListCreated(payload=p):
                return [(LISTS, UpdateOne({"_id": compose(event.account_id, p.list_id)}, {"$setOnInsert": {
                    "account_id": event.account_id, "list_id": p.list_id,
                    "custom_fields": {f.name: f.kind for f in p.custom_fields}}}, upsert=True))]
            case ListDeleted(payload=p):
                return [(LISTS, UpdateOne({"_id": compose(event.account_id, p.list_id)},
                                          {"$set": {"deleted": True}}))]
            case RecipientOptedOutOfTests(payload=p):
                # The first time counts; asking again changes nothing. Only the hash is kept (an erasure of a
                # subscriber with the same address need not touch it: it holds no address).
                return [(TEST_OPT_OUTS, UpdateOne({"_id": compose(event.account_id, p.email_sha256)}, {
                    "$setOnInsert": {"account_id": event.account_id, "email_sha256": p.email_sha256,
                                     "campaign_id": p.campaign_id, "at": event.occurred_at}}, upsert=True))]
        return []


def report_key(account_id: str, campaign_id: str, topic: str) -> str:
    """A campaign's counters, one document per input topic: `Counters` needs each key's events from one
    partition (an account's delivery events are on one, its subscriptions events on another)."""
    return compose(account_id, campaign_id, topic)


MARKER_LOOKUP = 500  # engagement markers looked up at a time while a batch is handled


class Counted(NamedTuple):
    """One event as a report counts it: the counter document, the event's offset (`Counters.add_at`), the
    increments, and what it counts once per message (`domain.firsts`), with its markers as stored."""

    key: str
    offset: int | None
    counts: dict[str, int]
    firsts: tuple[domain.First, ...]

    def markers(self) -> list[str]:
        """The markers to look up for it: each first's own, and the one it comes after."""
        return [m for first in self.firsts for m in (first.marker, first.after) if m is not None]


class ReportsProjection(Projection):
    """Per campaign, counters folded from herald.delivery and herald.subscriptions (`reports`, exact under
    replay: see herald_shared.readmodel.Counters), and a marker per message and kind (`engaged`, inserted in bulk
    once counted: opened, clicked, complained of, reported failed, deferred, settled after a deferral) so that
    what `domain.firsts` names counts each message once."""

    collections = (REPORTS, ENGAGED)

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self._counted: list[Counted] = []
        self._counts = Counters(db[REPORTS])
        # Markers of the batch not yet looked up, and the look-ups under way: started as the batch is handled,
        # so the store answers while the consumer parses the rest (every earlier batch is flushed by then,
        # and nothing else writes markers: campaigns runs one replica).
        self._unchecked: list[str] = []
        self._lookups: list[asyncio.Task[dict[str, Document]]] = []

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        return []

    async def purge(self, account_id: str) -> None:
        """A purged account's report counters and engagement markers (`herald_shared.purging`)."""
        await delete_by_account_prefix(self.db, account_id, (REPORTS, ENGAGED))

    async def handle(self, event: Event) -> None:
        campaign = domain.report_campaign(event)
        if campaign is None:
            return
        # What the fold needs of the event, not the event (the consumer hands it over in slices, to release).
        key = report_key(event.account_id, campaign, event.topic)
        position = position_of(event)
        firsts = tuple(replace(first, marker=compose(key, first.marker),
                               after=compose(key, first.after) if first.after is not None else None)
                       for first in domain.firsts(event))
        counted = Counted(key, position.offset if position is not None else None, domain.report_counts(event), firsts)
        self._counted.append(counted)
        if firsts:
            self._unchecked.extend(counted.markers())
            if len(self._unchecked) >= MARKER_LOOKUP:
                self._look_up()

    def _look_up(self) -> None:
        markers, self._unchecked = set(self._unchecked), []
        self._lookups.append(asyncio.create_task(load(self.db[ENGAGED], markers)))

    async def flush(self) -> None:
        counted, self._counted = self._counted, []
        if self._unchecked:
            self._look_up()
        lookups, self._lookups = self._lookups, []
        try:
            await self._fold(counted, lookups)
        except Exception:
            for lookup in lookups:
                lookup.cancel()
            await asyncio.gather(*lookups, return_exceptions=True)
            self._counted = counted + self._counted
            self._unchecked = [m for c in counted for m in c.markers()] + self._unchecked
            self._counts.discard()
            raise
        self._counts.settle()

    async def forget(self) -> None:
        """What the batch counted in memory and the look-ups of its markers (cancelled: the next batch looks
        up its own, after this one's events were counted again); what a refused flush counted ahead of the
        markers it could not store is taken back."""
        for lookup in self._lookups:
            lookup.cancel()
        self._counted, self._unchecked, self._lookups = [], [], []
        self._counts.discard()
        await self._counts.take_back()
        await super().forget()

    async def _fold(self, counted: list[Counted], lookups: list[asyncio.Task[dict[str, Document]]]) -> None:
        if not counted:
            return
        # Independent reads: wait for all at once.
        found, _ = await asyncio.gather(asyncio.gather(*lookups), self._counts.prepare({c.key for c in counted}))
        seen = {marker for engaged in found for marker in engaged}
        new: list[str] = []
        for c in counted:
            counts = c.counts
            for first in c.firsts:
                if first.marker in seen or (first.after is not None and first.after not in seen):
                    continue
                seen.add(first.marker)
                new.append(first.marker)
                counts = {**counts, **{k: counts.get(k, 0) + v for k, v in first.counts.items()}}
            self._counts.add_at(c.key, c.offset, counts)
        # Counters first: a replay after a crash skips what they counted, then inserts the markers again.
        await self._counts.write()
        await insert_new(self.db[ENGAGED], [{"_id": marker} for marker in new])


class CampaignsStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db

    async def campaign(self, account_id: str, campaign_id: str) -> Document | None:
        doc = await self.db[CAMPAIGNS].find_one({"_id": campaign_key(account_id, campaign_id)})
        return doc if doc is not None and doc["status"] != "deleted" else None

    async def campaign_state(self, account_id: str, campaign_id: str) -> CampaignState | None:
        doc = await self.db[CAMPAIGNS].find_one({"_id": campaign_key(account_id, campaign_id)})
        return domain.state_of(doc) if doc is not None else None

    async def account(self, account_id: str) -> AccountInfo | None:
        return domain.account_info(await self.db[ACCOUNTS].find_one({"_id": account_id}))

    async def due(self, now: datetime, after: str | None = None, limit: int = 100) -> list[str]:
        """The `schedule` keys of the campaigns whose time has come, earliest first (`key_parts` reads them); from
        after the key `after` (the next page: past campaigns the scheduler is holding back)."""
        if after is None:
            return await keys_due(self.db[SCHEDULE], now, limit)
        cursor = self.db[SCHEDULE].find({"_id": {"$gt": after, "$lt": time_key(now) + "0"}}, {"_id": 1})
        return [str(doc["_id"]) async for doc in cursor.sort("_id", 1).limit(limit)]

    async def relist(self, key: str, listing: str = SCHEDULE) -> None:
        """Put a key of `listing` (the schedule, or the campaigns to complete) right by the campaign it names, as
        the store holds it: where the stored campaign's key there is not `key`, `key` goes and the campaign's own
        key is written; called under the campaign's lock. A fold writes a key before its document, and no lock
        orders it with this (a command whose commit timed out released the lock; delivery's
        CampaignDeliveryFinished takes none), so a key of a campaign in a state just before that listing stays
        (`_BECOMING`; `mend_listings`, before any fold, takes it if it is stale). A key written before 2026-12-07
        kept the microseconds, a time the stored campaign does not give, so its campaign left the listing with the
        key still there: due for good, it held a place among the first 100 the scheduler reads, and enough of them
        stopped all queueing; a key a failed fold left among those to complete would hold up completion the same
        way."""
        key_of, (account_id, campaign_id) = _LISTINGS[listing], _campaign_of_key(key)
        doc = await self.db[CAMPAIGNS].find_one({"_id": campaign_key(account_id, campaign_id)})
        right = key_of(doc) if doc is not None else None
        if right == key or (doc is not None and doc.get("status") in _BECOMING.get(listing, ()) and (
                listing == COMPLETING or _written_now(key))):
            return  # the key may be one a fold wrote just before the document shows why (its commit timed out)
        if right is not None:
            await insert_new(self.db[listing], [{"_id": right}])
        await self.db[listing].delete_one({"_id": key})

    async def mend_listings(self, batch: int = 1000) -> int:
        """`relist` every key of the schedule, the review queue and the campaigns to complete whose campaign
        lists it elsewhere or not at all; before the consumers start. Returns how many were stale."""
        stale = 0
        for name, key_of in _LISTINGS.items():
            after = ""
            while True:
                keys = [d["_id"] async for d in self.db[name].find({"_id": {"$gt": after}}, {"_id": 1})
                        .sort("_id", 1).limit(batch)]
                if not keys:
                    break
                after = keys[-1]
                wanted = {key: campaign_key(*_campaign_of_key(key)) for key in keys}
                found = await load(self.db[CAMPAIGNS], list(set(wanted.values())))
                wrong = [key for key in keys if (found.get(wanted[key]) is None
                                                 or key_of(found[wanted[key]]) != key)]
                right = [{"_id": k} for k in {key_of(found[wanted[key]]) for key in wrong
                                              if found.get(wanted[key]) is not None} if k is not None]
                await insert_new(self.db[name], right)
                if wrong:
                    await self.db[name].delete_many({"_id": {"$in": wrong}})
                stale += len(wrong)
        return stale

    async def review_queue(self, after: str | None, limit: int) -> tuple[list[Document], str | None]:
        """A page of the staff review queue, oldest submission first, and the cursor of the next page."""
        bounds: dict[str, Any] = {"$gt": after} if after is not None else {"$gte": ""}
        keys = [doc["_id"] async for doc in self.db[REVIEW].find({"_id": bounds}, {"_id": 1})
                .sort("_id", 1).limit(limit)]
        wanted = [(key, campaign_key(a, c)) for key, (_, a, c) in zip(keys, map(key_parts, keys), strict=True)]
        found = await load(self.db[CAMPAIGNS], [k for _, k in wanted])
        # A campaign listed where it is not in review any more (a key written in the instant before its document
        # moved, or one left by a mending still to come) is not shown.
        docs = [found[k] for key, k in wanted if k in found and review_key(found[k]) == key]
        return docs, keys[-1] if len(keys) == limit else None

    async def completing(self, after: str | None = None, limit: int = 100) -> list[str]:
        """The `completing` keys (`account/campaign`) of queued campaigns delivery has finished with, not completed
        yet; from after the key `after`."""
        bounds = {"$gt": after} if after is not None else {"$gte": ""}
        cursor = self.db[COMPLETING].find({"_id": bounds}, {"_id": 1}).sort("_id", 1).limit(limit)
        return [str(doc["_id"]) async for doc in cursor]

    async def oldest_in_review(self) -> datetime | None:
        doc = await self.db[REVIEW].find_one({"_id": {"$gte": ""}}, {"_id": 1}, sort=[("_id", 1)])
        return key_parts(doc["_id"])[0] if doc is not None else None

    async def status_counts(self) -> dict[str, int]:
        """Campaigns by status, summed over the partitions' counters (a handful of documents)."""
        totals: dict[str, int] = {}
        async for doc in self.db[STATS].find({"_id": prefix_range("status")}):
            for name, value in doc.get("counts", {}).items():
                totals[name] = totals.get(name, 0) + int(value)
        return totals

    async def staff_access(self, account_id: str, limit: int = 100) -> list[Document]:
        """The account's audit log of staff looks at its campaigns, newest first."""
        cursor = self.db[AUDIT].find({"_id": prefix_range(account_id)}).sort("_id", -1).limit(limit)
        return [doc async for doc in cursor]

    async def campaigns(self, account_id: str, after: str | None, limit: int) -> tuple[list[Document], str | None]:
        """A page of the account's campaigns in id order (deleted ones left out, so a page may hold fewer),
        from after the campaign id `after`, and the id to continue after (None at the end)."""
        bounds: dict[str, Any] = prefix_range(account_id)
        if after is not None:
            bounds = {"$gt": campaign_key(account_id, after), "$lt": bounds["$lt"]}
        found = [doc async for doc in self.db[CAMPAIGNS].find({"_id": bounds}).sort("_id", 1).limit(limit)]
        last = str(found[-1]["campaign_id"]) if len(found) == limit else None
        return [doc for doc in found if doc["status"] != "deleted"], last

    async def report_counts(self, account_id: str, campaign_id: str) -> dict[str, int]:
        found = await load(self.db[REPORTS], [report_key(account_id, campaign_id, t)
                                              for t in ("herald.delivery", "herald.subscriptions")])
        counts: dict[str, int] = {}
        for doc in found.values():
            for name, value in doc.get("counts", {}).items():
                counts[name] = counts.get(name, 0) + int(value)
        return counts

    async def sending_domain(self, account_id: str, domain_name: str) -> Document | None:
        return await self.db[SENDING_DOMAINS].find_one({"_id": sending_domain_key(account_id, domain_name)})

    async def sending_domains_named(self, account_id: str, names: list[str]) -> list[Document]:
        """Those of these domains the account added (pending or verified), read by key."""
        found = await load(self.db[SENDING_DOMAINS], [sending_domain_key(account_id, n) for n in names])
        return list(found.values())

    async def sending_domains(self, account_id: str, after: str | None,
                              limit: int) -> tuple[list[Document], str | None]:
        """A page of the account's sending domains by name, from after the domain `after`, and the domain to
        continue after (None at the end)."""
        bounds: dict[str, Any] = prefix_range(account_id)
        if after is not None:
            bounds = {"$gt": sending_domain_key(account_id, after), "$lt": bounds["$lt"]}
        found = [doc async for doc in self.db[SENDING_DOMAINS].find({"_id": bounds}).sort("_id", 1).limit(limit)]
        return found, str(found[-1]["domain"]) if len(found) == limit else None

    async def test_opt_outs(self, account_id: str, hashes: Collection[str]) -> set[str]:
        """Of these address hashes, those that asked for no more test messages of the account (read by key)."""
        found = await load(self.db[TEST_OPT_OUTS], [compose(account_id, h) for h in hashes])
        return {str(doc["email_sha256"]) for doc in found.values()}

    async def count_test_send(self, account_id: str, test_id: str, at: datetime, messages: int) -> str:
        """Record a test request of `messages` messages before it is decided, so that a request another replica
        decides at the same time sees it (`test_sends_since`); its key, to take it back if refused. Requests
        older than the window are deleted here, one `_id` range."""
        key = compose(account_id, time_key(at), test_id)
        await self.db[TEST_SENDS].insert_one({"_id": key, "account_id": account_id, "at": at, "count": messages})
        await self.db[TEST_SENDS].delete_many({"_id": {"$gte": prefix_range(account_id)["$gte"],
                                                       "$lt": compose(account_id, time_key(
                                                           at - domain.TEST_SENDS_WINDOW))}})
        return key

    async def test_sends_since(self, account_id: str, since: datetime,
                               leaving_out: str) -> list[tuple[datetime, int]]:
        """The account's test requests from `since` on, but `leaving_out` (a key): (time, messages)."""
        bounds = {"$gte": compose(account_id, time_key(since)), "$lt": prefix_range(account_id)["$lt"]}
        return [(doc["at"], int(doc["count"]))
                async for doc in self.db[TEST_SENDS].find({"_id": bounds}) if doc["_id"] != leaving_out]

    async def uncount_test_send(self, key: str) -> None:
        await self.db[TEST_SENDS].delete_one({"_id": key})

    async def list_info(self, account_id: str, list_id: str) -> ListInfo | None:
        doc = await self.db[LISTS].find_one({"_id": compose(account_id, list_id)})
        if doc is None:
            return None
        return ListInfo(list_id=doc["list_id"], custom_fields=dict(doc.get("custom_fields", {})),
                        deleted=bool(doc.get("deleted")))

