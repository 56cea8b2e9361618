"""Subscriptions' read models in MongoDB, folded from events, and the queries the API needs.

Folding is pure (`domain.evolve_member`); applying an event again changes nothing. Every query is scoped
by account_id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared import membership
from herald_shared.contract import Event
from herald_shared.contract.billing import AccountDeleted, AccountOpened
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    ImportCompleted,
    ListCreated,
    ListDeleted,
    ListFormConfigured,
    ListNotificationsConfigured,
    ListRenamed,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)
from herald_shared.kafka import EventsRefused, Reject
from herald_shared.mongo import DeleteOne, Document, FoldingProjection, UpdateOne, WriteOp
from herald_shared.mongo import WrittenKeys as WrittenKeys
from herald_shared.purging import delete_by_account_prefix
from herald_shared.readmodel import (
    APPLIED,
    Counters,
    KeyedReader,
    SecondaryIndex,
    States,
    applied,
    compose,
    load,
    marked,
    prefix_range,
    write_changes,
)
from herald_shared.rebuilding import FORMATS as FORMATS
from herald_shared.rebuilding import ReadModelFormat, learn_from_start, once_per_database
from herald_shared.rebuilding import ReadModelOutdated as ReadModelOutdated
from herald_shared.settings import HeraldSettings

from . import domain
from .domain import ListState, MemberState

STATUSES = ("pending", "active", "unsubscribed", "suppressed")
LISTS, SUBSCRIBERS, LIST_MEMBERS, LIST_COUNTS = "lists", "subscribers", "list_members", "list_counts"
ADDRESSES, SUPPRESSIONS = "addresses", "suppressions"
# The account's lists not deleted, `account/list` with nothing else: counted by an `_id` range when a list is
# created (`domain.MAX_LIVE_LISTS`), a few bytes a list where the lists' own documents are up to ~10 KB.
LIVE_LISTS = "live_lists"
# `account/subscriber id` of an add refused as a second membership of its address on a list -> the membership the
# address had (`_check_membership`): a message sent to that id by a version before the rule carries its links, and
# what the person does through them (an unsubscribe, a complaint) reaches the membership they have.
ALIASES = "aliases"


def list_key(account_id: str, list_id: str) -> str:
    return compose(account_id, list_id)


def member_key(account_id: str, subscriber_id: str) -> str:
    """A membership's `_id`: subscriber ids are unique per account only (the contract lets a producer such as a
    CRM choose them), so two accounts' memberships of one id are two documents."""
    return compose(account_id, subscriber_id)


def listing_key(doc: Document) -> str | None:
    """Where a membership is listed: by account, list, status, then id (an erased one is not listed)."""
    if doc["status"] not in STATUSES:
        return None
    return compose(doc["account_id"], doc["list_id"], doc["status"], doc["subscriber_id"])


# The read model's format, marked beside it (`herald_shared.rebuilding`). 2: memberships keyed by account and
# subscriber id (`member_key`); a read model of members without a mark is of the format before, keyed by subscriber
# id alone, and is rebuilt from the topics (`herald_subscriptions.rebuild`).
# 3: addresses carry the account's suppression (2026-12-06), so memberships added after it start suppressed.
# 4: one membership per address and list (2026-12-07, `herald_shared.membership`): a read model folded before holds
# the adds of an address already on the list under another id, each a member counted and listed (rebuilt, they are
# left out as the live fold dead-letters them).
FORMAT = 4
READ_MODEL = ReadModelFormat("subscriptions", "subscriptions", FORMAT, SUBSCRIBERS, "read model")


async def check_format(db: AsyncDatabase[Document]) -> None:
    """Refuse a read model of an earlier format (`ReadModelOutdated`); one holding no membership yet is marked."""
    await READ_MODEL.check(db)


async def mark_format(db: AsyncDatabase[Document]) -> None:
    await READ_MODEL.mark(db)


# The mark, beside the read model's format, that `learn_deleted_accounts` ran on this database.
DELETED_ACCOUNTS_MARK = "subscriptions.accounts_deleted"


async def learn_deleted_accounts(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int | None:
    """Once per database, before the consumers start: the accounts deleted before this service folded billing's
    AccountDeleted (2026-12-07; its consumer had passed them over), read from offset 0 of herald.billing, so their
    forms and links take no one (`domain.takes_members`) without waiting for a rebuild. A read model nothing was
    folded into (no account, no list) needs none. Returns the deletions learnt (None: learnt before)."""

    async def note(events: list[Event]) -> None:
        await db["accounts"].bulk_write([UpdateOne({"_id": e.account_id}, {"$set": {"deleted_at": e.occurred_at}},
                                                   upsert=True) for e in events], ordered=False)

    async def learn() -> int:
        if all([await db[name].find_one({"_id": {"$gt": ""}}, {"_id": 1}) is None for name in ("accounts", LISTS)]):
            return 0
        return await learn_from_start(settings, db, "herald.billing", [AccountDeleted], note)

    return await once_per_database(db, DELETED_ACCOUNTS_MARK, learn)


# The mark that `list_live_lists` ran on this database.
LIVE_LISTS_MARK = "subscriptions.live_lists"


async def list_live_lists(db: AsyncDatabase[Document]) -> int | None:
    """Once per database, before the consumers start: `live_lists` for the lists folded before it was kept
    (2026-12-07), so the cap of `domain.MAX_LIVE_LISTS` counts them without a rebuild. One read of every list
    (FerretDB reads each whole), once. Returns the lists listed (None: listed before)."""

    async def listed() -> int:
        live: dict[str, str] = {}
        async for doc in db[LISTS].find({}, {"list_id": 1, "deleted_at": 1}):
            if "deleted_at" not in doc:
                live[str(doc["_id"])] = str(doc["list_id"])
        keys = list(live)
        for start in range(0, len(keys), 1000):
            await db[LIVE_LISTS].bulk_write([UpdateOne({"_id": key}, {"$setOnInsert": {"list_id": live[key]}},
                                                       upsert=True) for key in keys[start:start + 1000]],
                                            ordered=False)
        # A list another process's fold deleted after it was read above: its entry goes again (the fold's
        # DeleteOne came before this step's write).
        deleted = [key for key, doc in (await load(db[LISTS], keys, {"deleted_at": 1})).items() if "deleted_at" in doc]
        if deleted:
            await db[LIVE_LISTS].delete_many({"_id": {"$in": deleted}})
        return len(keys) - len(deleted)

    return await once_per_database(db, LIVE_LISTS_MARK, listed)


# Events folded in Python over the documents they touch (loaded by _id once per batch). Each membership keeps
# the ids of the events folded into it (`readmodel.applied`), so its consumer stores none of theirs.
MEMBER_EVENTS = (SubscriberAdded, ConfirmationRequested, SubscriberConfirmed, SubscriberUnsubscribed,
                 SubscriberSuppressed, SubscriberErased)
# Of these, those that put a person on a list or make them a member of it: refused (dead-lettered) for a list never
# created or deleted. Another producer (a CRM) may publish them for a list id nobody created (a typo), and
# billing must not count such members either. An unsubscribe is refused only for a list never created: one from
# a deleted list's member (a link in a message sent before the deletion) is the person's, and its membership is
# still stored. A suppression and an erasure are the person's or the address's, whatever the list: never refused.
JOINING = (SubscriberAdded, ConfirmationRequested, SubscriberConfirmed)
# A rebuild is the lists' only writer, so what it has folded of them holds across batches: up to this many.
REBUILD_LISTS_KEPT = 100_000


class MembershipRefused(EventsRefused):
    """A batch's fold found adds that are an address's second membership of a list (`SubscriptionsProjection.fold`):
    the consumer hands its events over again one at a time, and `handle` refuses those."""


class SubscriptionsProjection(FoldingProjection):
    """Memberships are folded in Python by `domain.evolve_member` over the documents a batch touches (loaded
    by `_id`), then written back: new members inserted in bulk, changed ones updated by `_id`. Each list's
    members are listed by status in `list_members` (composed `_id`s, read as ranges) and counted in
    `list_counts` as they fold (see herald_shared.readmodel). Lists, suppressions, accounts and imports are
    keyed writes.

    `rebuilding`: folded by `rebuild` into collections it dropped, as their only writer, and run again from the
    start if it stops midway. Members and addresses it never wrote are not loaded (`WrittenKeys`), and a batch's
    counts, listing and documents are written at once: the order that makes a crashed batch's replay exact does
    not matter when nothing is replayed."""

    collections = (LISTS, LIVE_LISTS, SUBSCRIBERS, LIST_MEMBERS, LIST_COUNTS, ADDRESSES, SUPPRESSIONS, "imports",
                   "accounts", ALIASES)
    folded = MEMBER_EVENTS

    def __init__(self, db: AsyncDatabase[Document], *, rebuilding: bool = False) -> None:
        super().__init__(db)
        self._written = WrittenKeys() if rebuilding else None
        # Each list's state as the events handled so far leave it ("live", "deleted", None: never created), read by
        # `_id` once per batch (replicas fold other partitions and take them over: a state read before may be
        # another's by now); a rebuild keeps it across batches.
        self._lists: dict[str, str | None] = {}
        # A rebuild's: the memberships of the addresses this batch's adds name, as the events handled so far leave
        # them (`_id` of the membership -> its document, or what of it the rule needs), and each address's
        # memberships: read by `_id` at an address's first add in the batch (`_check_membership`).
        self._memberships: dict[str, Document] = {}
        self._address_members: dict[str, list[str]] = {}
        # Adds a live fold found to be an address's second membership of a list (event id -> the reason, and the
        # membership the address has), refused when the consumer hands them over again one at a time.
        self._refused: dict[str, tuple[str, str]] = {}
        # Both written ahead of the members: a batch the store refuses is counted and listed as it holds them.
        self._listing = self.ahead(SecondaryIndex(db[LIST_MEMBERS], listing_key, documents=db[SUBSCRIBERS]))
        self._counts = self.ahead(Counters(db[LIST_COUNTS]))

    async def purge(self, account_id: str) -> None:
        """Delete everything of a purged account (`herald_shared.purging`): every key starts with the account,
        so an `_id` range per collection reaches its documents and no other account's."""
        await delete_by_account_prefix(self.db, account_id, (LISTS, LIVE_LISTS, SUBSCRIBERS, LIST_MEMBERS,
                                                             LIST_COUNTS, ADDRESSES, SUPPRESSIONS, "imports",
                                                             ALIASES))
        await self.db["accounts"].delete_one({"_id": account_id})

    async def handle(self, event: Event) -> None:
        await self._check_list(event)
        await self._check_membership(event)
        await super().handle(event)

    async def flush(self) -> None:
        try:
            await super().flush()
        finally:
            self._memberships.clear()
            self._address_members.clear()
        if self._written is None or len(self._lists) > REBUILD_LISTS_KEPT:
            self._lists.clear()

    async def forget(self) -> None:
        self._lists.clear()
        self._memberships.clear()
        self._address_members.clear()
        await super().forget()

    async def _check_membership(self, event: Event) -> None:
        """One membership per address and list (`herald_shared.membership`): refuse (`Reject`, naming the
        membership the address has) a SubscriberAdded of an address already a member of the list, not erased,
        under another id; the fold never sees it, so every later event of that id finds no member. Delivery's
        audience and billing apply the same rule to the same partition. One already folded (a read model of before
        this rule, until rebuilt) passes: the fold ignores it.

        Live, the fold finds them (`fold`: the batch's addresses and their memberships are loaded by `$in` anyway)
        and refuses the batch, which the consumer then hands over again one event at a time (`kafka.EventConsumer`,
        as for a batch the store refuses): those it found are refused here. A read per add here would cost a round
        trip each (measured: 7,119 -> 1,416 events/s folding new members). A rebuild reads nothing for addresses it
        never wrote (`WrittenKeys`), so it decides here, as each add comes."""
        refused = self._refused.pop(str(event.event_id), None)
        if refused is not None:
            await self._refuse(event, *refused)
        if self._written is None:
            return
        match event:
            case SubscriberAdded(payload=p):
                key = member_key(event.account_id, p.subscriber_id)
                held = await self._members_of(compose(event.account_id, p.email_sha256))
                existing = membership.holder((self._memberships.get(k) for k in held), list_id=p.list_id,
                                             email_sha256=p.email_sha256, subscriber_id=p.subscriber_id)
                if existing is not None:
                    if applied(self._memberships.get(key), event):
                        return
                    await self._refuse(event, membership.duplicate_reason(
                        subscriber_id=p.subscriber_id, list_id=p.list_id, account_id=event.account_id,
                        existing=existing), existing)
                self._memberships[key] = {"subscriber_id": p.subscriber_id, "list_id": p.list_id,
                                          "email_sha256": p.email_sha256, "status": "pending"}
                if key not in held:
                    held.append(key)
            case SubscriberErased(payload=p):
                key = member_key(event.account_id, p.subscriber_id)
                self._memberships[key] = {**self._memberships.get(key, {"subscriber_id": p.subscriber_id,
                                                                        "list_id": p.list_id}), "status": "erased"}

    async def _refuse(self, event: Event, reason: str, existing: str) -> None:
        """Dead-letter an add of an address's second membership of a list, noting its id's alias (`ALIASES`)."""
        key = member_key(event.account_id, event.payload.subscriber_id)  # type: ignore[attr-defined]
        await self.db[ALIASES].update_one({"_id": key}, {"$set": {
            "account_id": event.account_id, "subscriber_id": existing}}, upsert=True)
        raise Reject(reason)

    async def _members_of(self, address_key: str) -> list[str]:
        """The `_id`s of an address's memberships, their documents in `_memberships`: read at its first add in
        the batch (the address by `_id`, then those of its memberships the batch has not changed)."""
        held = self._address_members.get(address_key)
        if held is None:
            address = (await load(self.db[ADDRESSES], self._stored({address_key}))).get(address_key)
            held = [member_key(address["account_id"], m) for m in address["members"]] if address else []
            unknown = {k for k in held if k not in self._memberships}
            if unknown:
                self._memberships.update(await load(self.db[SUBSCRIBERS], self._stored(unknown)))
            self._address_members[address_key] = held
        return held

    async def _check_list(self, event: Event) -> None:
        """Follow the lists' states as `apply` writes them, and refuse (`Reject`) a membership event of a list that
        is not there to take it (`JOINING`; an unsubscribe only of a list never created). ListCreated comes before
        its members on the account's partition, so a rebuild from offset 0 refuses the same events. One already
        folded into its membership (a redelivery after a crash, a copy published again after the list was deleted)
        passes: the fold ignores it."""
        match event:
            case ListCreated(payload=p):
                key = list_key(event.account_id, p.list_id)
                if await self._list_status(key) is None:  # $setOnInsert: a deleted list stays deleted
                    self._lists[key] = "live"
                    if self._written is not None:
                        self._written.add((key,))
            case ListDeleted(payload=p):
                key = list_key(event.account_id, p.list_id)
                if await self._list_status(key) == "live":  # no upsert: a list never created stays so
                    self._lists[key] = "deleted"
            case SubscriberAdded() | ConfirmationRequested() | SubscriberConfirmed() | SubscriberUnsubscribed():
                member = event.payload
                status = await self._list_status(list_key(event.account_id, member.list_id))
                if status == "live" or (status == "deleted" and not isinstance(event, JOINING)):
                    return
                key = member_key(event.account_id, member.subscriber_id)
                if applied((await load(self.db[SUBSCRIBERS], self._stored({key}))).get(key), event):
                    return
                why = "list deleted" if status == "deleted" else "list never created (no ListCreated before it)"
                raise Reject(f"{event.type} of subscriber {member.subscriber_id!r} to list {member.list_id!r} of "
                             f"account {event.account_id!r}: {why}")

    async def _list_status(self, key: str) -> str | None:
        if key not in self._lists:
            doc = None
            if self._stored({key}):
                doc = await self.db[LISTS].find_one({"_id": key}, {"deleted_at": 1})
            self._lists[key] = None if doc is None else "deleted" if "deleted_at" in doc else "live"
        return self._lists[key]

    async def fold(self, events: list[Event]) -> None:
        address_ids = {compose(e.account_id, h) for e in events if (h := domain.address_hash(e)) is not None}
        # The members and lists the events name, loaded alongside the addresses; a suppression reaches the
        # address's other memberships too, loaded once the address is (and their lists after them).
        member_ids = {member_key(e.account_id, e.payload.subscriber_id) for e in events}  # type: ignore[attr-defined]
        addresses, members, _ = await asyncio.gather(
            load(self.db[ADDRESSES], self._stored(address_ids)),
            load(self.db[SUBSCRIBERS], self._stored(member_ids)),
            self._counts.prepare({list_key(e.account_id, e.payload.list_id) for e in events  # type: ignore[attr-defined]
                                  if getattr(e.payload, "list_id", None)}))
        suppressed = {compose(e.account_id, e.payload.email_sha256) for e in events
                      if isinstance(e, SubscriberSuppressed)}
        # An add's address: its memberships, for the rule of one membership per address and list.
        added = {compose(e.account_id, e.payload.email_sha256) for e in events if isinstance(e, SubscriberAdded)}
        others = {member_key(addresses[key]["account_id"], m) for key in suppressed | added if key in addresses
                  for m in addresses[key]["members"]} - member_ids
        members.update(await load(self.db[SUBSCRIBERS], self._stored(others)))
        before_members, before_addresses = dict(members), dict(addresses)
        states = States(members)
        await self._counts.prepare(list_key(d["account_id"], d["list_id"]) for d in members.values())
        refused: dict[str, tuple[str, str]] = {}
        for event in events:
            if isinstance(event, SubscriberAdded) and (existing := self._held_by_another(event, members, addresses)):
                refused[str(event.event_id)] = (membership.duplicate_reason(
                    subscriber_id=event.payload.subscriber_id, list_id=event.payload.list_id,
                    account_id=event.account_id, existing=existing), existing)
                continue
            if isinstance(event, SubscriberSuppressed):
                address = addresses.get(compose(event.account_id, event.payload.email_sha256))
                targets = {member_key(event.account_id, m) for m in address["members"]} if address else set()
                targets.add(member_key(event.account_id, event.payload.subscriber_id))
            else:
                targets = {member_key(event.account_id, event.payload.subscriber_id)}  # type: ignore[attr-defined]
            for target in sorted(targets):
                old = members.get(target)
                if applied(old, event):
                    continue  # a redelivery, or a copy published again long after
                address_doc = addresses.get(compose(event.account_id, event.payload.email_sha256)) \
                    if isinstance(event, SubscriberAdded) else None
                folded = domain.evolve_member(old, event, address=address_doc)
                if folded is not None:
                    states.set(target, {**marked(folded, old, event), "_id": target})
                    self._count(event, old, folded)
            if isinstance(event, SubscriberAdded | ConfirmationRequested | SubscriberSuppressed):
                key = compose(event.account_id, domain.address_hash(event) or "")
                address = domain.evolve_address(addresses.get(key), event)
                if address is not None:
                    addresses[key] = {**address, "_id": key}
        if refused:
            self._refused.update(refused)
            raise MembershipRefused(f"{len(refused)} SubscriberAdded of an address already a member of the list under "
                                    "another id: the batch is handed over again one event at a time, and those "
                                    "are dead-lettered")
        changed = {k: v for k, v in members.items() if v is not before_members.get(k)}
        changed_addresses = {k: v for k, v in addresses.items() if v is not before_addresses.get(k)}

        async def ahead() -> None:
            await asyncio.gather(self._counts.write(), self._listing.write(before_members, changed, states.passed))

        async def documents() -> None:  # addresses depend on nothing else written here
            await asyncio.gather(write_changes(self.db[SUBSCRIBERS], before_members, changed),
                                 write_changes(self.db[ADDRESSES], before_addresses, changed_addresses))

        if self._written is not None:
            self._written.add(changed)
            self._written.add(changed_addresses)
            await asyncio.gather(ahead(), documents())
        else:  # counts and the listing, then the documents: see Counters and SecondaryIndex on why this order
            await ahead()
            await documents()

    def _stored(self, keys: set[str]) -> set[str]:
        """Of these keys, those that may be stored (all of them unless rebuilding)."""
        return keys if self._written is None or not keys else self._written.maybe(keys)

    @staticmethod
    def _held_by_another(event: SubscriberAdded, members: dict[str, Document],
                         addresses: dict[str, Document]) -> str | None:
        """The membership under another id that holds the add's address on its list (`herald_shared.membership`),
        as the batch's events before it leave them; None for an add folded already (a copy)."""
        p = event.payload
        if applied(members.get(member_key(event.account_id, p.subscriber_id)), event):
            return None
        address = addresses.get(compose(event.account_id, p.email_sha256)) or {}
        return membership.holder((members.get(member_key(event.account_id, m)) for m in address.get("members", ())),
                                 list_id=p.list_id, email_sha256=p.email_sha256, subscriber_id=p.subscriber_id)

    def _count(self, event: Event, old: Document | None, new: Document) -> None:
        before = old["status"] if old is not None else None
        if before == new["status"]:
            return
        deltas: dict[str, int] = {}
        if before in STATUSES:
            deltas[str(before)] = -1
        if new["status"] in STATUSES:
            deltas[new["status"]] = deltas.get(new["status"], 0) + 1
        self._counts.add(list_key(new["account_id"], new["list_id"]), event, deltas)

    def _live_listing(self, account_id: str, list_id: str) -> tuple[str, WriteOp]:
        """`live_lists` set to the list's state as `_check_list` left it for this event: written whether or not
        the event changed it, so the replay of a batch whose lists were written and this not mends it."""
        key = list_key(account_id, list_id)
        if self._lists.get(key) == "live":
            return LIVE_LISTS, UpdateOne({"_id": key}, {"$setOnInsert": {"list_id": list_id}}, upsert=True)
        return LIVE_LISTS, DeleteOne({"_id": key})

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        match event:
            case ListCreated(payload=p):
                return [(LISTS, UpdateOne({"_id": list_key(event.account_id, p.list_id)}, {"$setOnInsert": {
                    "account_id": event.account_id, "list_id": p.list_id, "name": p.name, "opt_in": p.opt_in,
                    "custom_fields": {f.name: f.kind for f in p.custom_fields}, "created_at": event.occurred_at}},
                    upsert=True)), self._live_listing(event.account_id, p.list_id)]
            case ListRenamed(payload=p):
                return [(LISTS, UpdateOne({"_id": list_key(event.account_id, p.list_id)},
                                          {"$set": {"name": p.name}}))]
            case ListFormConfigured(payload=p):
                return [(LISTS, UpdateOne({"_id": list_key(event.account_id, p.list_id)}, {"$set": {
                    "form_frame_ancestors": p.frame_ancestors, "form_challenge": p.challenge}}))]
            case ListNotificationsConfigured(payload=p):
                return [(LISTS, UpdateOne({"_id": list_key(event.account_id, p.list_id)}, {"$set": {
                    "notify_subscribes": p.subscribes, "notify_unsubscribes": p.unsubscribes}}))]
            case ListDeleted(payload=p):
                return [(LISTS, UpdateOne({"_id": list_key(event.account_id, p.list_id)},
                                          {"$set": {"deleted_at": event.occurred_at}})),
                        self._live_listing(event.account_id, p.list_id)]
            case SubscriberSuppressed(payload=p):
                return [(SUPPRESSIONS, UpdateOne({"_id": compose(event.account_id, p.email_sha256)}, {"$setOnInsert": {
                    "account_id": event.account_id, "email_sha256": p.email_sha256, "reason": p.reason,
                    "suppressed_at": event.occurred_at}}, upsert=True))]
            case ImportCompleted(payload=p):
                return [("imports", UpdateOne({"_id": compose(event.account_id, p.import_id)}, {"$set": {
                    "account_id": event.account_id, **p.model_dump(mode="json"),
                    "completed_at": event.occurred_at}}, upsert=True))]
            case AccountOpened(payload=p):
                return [("accounts", UpdateOne({"_id": event.account_id}, {"$set": {
                    "company_name": p.company_name}}, upsert=True))]
            case AccountDeleted():  # its lists take no one from now on (`domain.takes_members`)
                return [("accounts", UpdateOne({"_id": event.account_id}, {"$set": {
                    "deleted_at": event.occurred_at}}, upsert=True))]
        return []


class SubscriptionsStore:
    """Reads of the projection, each by `_id` or an `_id` range. Every method takes the account and never
    returns another account's data. Reads by `_id` from concurrent requests share queries (`KeyedReader`)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self._by_id = {name: KeyedReader(db[name]) for name in (LISTS, SUBSCRIBERS, ADDRESSES, SUPPRESSIONS,
                                                                 "accounts")}
        self._listing = SecondaryIndex(db[LIST_MEMBERS], listing_key)
        self._counts = Counters(db[LIST_COUNTS])

    async def list_state(self, account_id: str, list_id: str) -> ListState | None:
        """The list as the rules see it, its account's deletion included."""
        doc, account = await asyncio.gather(self._by_id[LISTS].get(list_key(account_id, list_id)),
                                            self._by_id["accounts"].get(account_id))
        return _list_state(doc, account) if doc else None

    async def list_doc(self, account_id: str, list_id: str) -> Document | None:
        doc = await self._by_id[LISTS].get(list_key(account_id, list_id))
        return doc if doc is not None and "deleted_at" not in doc else None

    async def lists_page(self, account_id: str, *, after: str | None,
                         limit: int) -> tuple[list[Document], str | None]:
        """One page of the account's lists not deleted, in id order, after the list id `after`, and the list id to
        continue after (None at the end). Read as an `_id` range in chunks of the page's size, so the deleted lists
        between live ones cost reads, never memory."""
        bounds = prefix_range(account_id)
        if after is not None:
            bounds = {"$gt": list_key(account_id, after), "$lt": bounds["$lt"]}
        page: list[Document] = []
        while True:
            chunk = [doc async for doc in self.db[LISTS].find({"_id": bounds}).sort("_id", 1).limit(limit)]
            for doc in chunk:
                if "deleted_at" not in doc:
                    page.append(doc)
                    if len(page) == limit:
                        return page, str(doc["list_id"])
            if len(chunk) < limit:
                return page, None
            bounds = {"$gt": chunk[-1]["_id"], "$lt": bounds["$lt"]}

    async def live_lists(self, account_id: str, *, most: int) -> int:
        """How many of the account's lists are not deleted, counted up to `most` (an `_id` range of `live_lists`).
        A read model folded before `live_lists` existed has them listed once at start (`list_live_lists`)."""
        found = self.db[LIVE_LISTS].find({"_id": prefix_range(account_id)}, {"_id": 1}).limit(most)
        return len([doc async for doc in found])

    async def member(self, account_id: str, subscriber_id: str) -> Document | None:
        doc = await self._by_id[SUBSCRIBERS].get(member_key(account_id, subscriber_id))
        return doc if doc is not None and doc["account_id"] == account_id else None

    async def member_id(self, account_id: str, subscriber_id: str) -> str:
        """The membership a subscriber id stands for: its own, or, for an id whose add was refused as a second
        membership of its address on a list (`ALIASES`), the one the address had."""
        if await self.member(account_id, subscriber_id) is not None:
            return subscriber_id
        return await self._alias(account_id, subscriber_id) or subscriber_id

    async def _alias(self, account_id: str, subscriber_id: str) -> str | None:
        alias = await self.db[ALIASES].find_one({"_id": member_key(account_id, subscriber_id)})
        return str(alias["subscriber_id"]) if alias is not None else None

    async def member_state_of_id(self, account_id: str, subscriber_id: str) -> MemberState | None:
        """The membership a subscriber id stands for (`member_id`), as the rules see it."""
        state = await self.member_state(account_id, subscriber_id)
        if state is not None:
            return state
        alias = await self._alias(account_id, subscriber_id)
        return await self.member_state(account_id, alias) if alias is not None else None

    async def member_state(self, account_id: str, subscriber_id: str) -> MemberState | None:
        doc = await self.member(account_id, subscriber_id)
        return _member_state(doc) if doc else None

    async def member_and_version(self, account_id: str, subscriber_id: str) -> tuple[MemberState | None, str]:
        """The membership, and the last event folded into it (`new` when there is none): what a change decided on
        it is claimed by (`claims.Claims.notice`)."""
        doc = await self.member(account_id, subscriber_id)
        if doc is None:
            return None, "new"
        return _member_state(doc), str(doc.get(APPLIED, "")).rsplit(" ", 1)[-1] or "new"

    async def members_by_hash(self, account_id: str, email_hash: str) -> list[Document]:
        """Every membership of one address in the account (through its addresses document, by _id)."""
        address = await self._by_id[ADDRESSES].get(compose(account_id, email_hash))
        if address is None:
            return []
        found = await load(self.db[SUBSCRIBERS], (member_key(account_id, m) for m in address["members"]))
        return sorted((d for d in found.values() if d["account_id"] == account_id), key=lambda d: d["_id"])

    async def memberships_of(self, account_id: str, email_hashes: Sequence[str]) -> dict[str, list[Document]]:
        """Every membership of each of these addresses (erased ones too), by address hash: the addresses by `$in`,
        then the memberships they list by `$in` (none to read for addresses never added)."""
        addresses = await self._by_id[ADDRESSES].get_many(compose(account_id, h) for h in email_hashes)
        keys = {member_key(account_id, m): doc["email_sha256"] for doc in addresses.values() for m in doc["members"]}
        found = await load(self.db[SUBSCRIBERS], keys) if keys else {}
        by_hash: dict[str, list[Document]] = {}
        for key, doc in found.items():
            if doc["account_id"] == account_id:
                by_hash.setdefault(keys[key], []).append(doc)
        return by_hash

    @staticmethod
    def member_state_of(doc: Document | None) -> MemberState | None:
        return _member_state(doc) if doc is not None else None

    async def confirmations_to_address(self, account_id: str, email_hash: str) -> tuple[datetime, ...]:
        """The last confirmations asked for to this address across the account's lists (newest last)."""
        return (await self.confirmations_to_addresses(account_id, [email_hash])).get(email_hash, ())

    async def confirmations_to_addresses(self, account_id: str,
                                         email_hashes: Sequence[str]) -> dict[str, tuple[datetime, ...]]:
        """The same for several addresses at once (an import's batch): one `$in` read."""
        found = await self._by_id[ADDRESSES].get_many(compose(account_id, h) for h in email_hashes)
        return {doc["email_sha256"]: tuple(doc.get("confirmations", ())) for doc in found.values()}

    async def member_states(self, account_id: str, subscriber_ids: Sequence[str]) -> dict[str, MemberState]:
        found = await load(self.db[SUBSCRIBERS], (member_key(account_id, i) for i in subscriber_ids))
        return {d["subscriber_id"]: _member_state(d) for d in found.values() if d["account_id"] == account_id}

    async def suppressed(self, account_id: str, email_hashes: Sequence[str]) -> set[str]:
        found = await self._by_id[SUPPRESSIONS].get_many(compose(account_id, h) for h in email_hashes)
        return {doc["email_sha256"] for doc in found.values()}

    async def suppression(self, account_id: str, email_hash: str) -> Document | None:
        """The account's suppression record of an address (GDPR export: why and since when it is not mailed)."""
        return await self._by_id[SUPPRESSIONS].get(compose(account_id, email_hash))

    async def company_name(self, account_id: str) -> str | None:
        doc = await self._by_id["accounts"].get(account_id)
        return str(doc["company_name"]) if doc and "company_name" in doc else None

    async def members_page(self, account_id: str, list_id: str, *, status: str | None,
                           field_equals: dict[str, Any], after: str | None,
                           limit: int) -> tuple[list[Document], str | None]:
        """One page of a list's members in listing order (status, then id) and the key to continue after,
        None at the end. Custom-field conditions are checked on the members read: a rare value reads the
        list's listing in chunks until the page is full."""
        prefix = (account_id, list_id, status) if status else (account_id, list_id)
        chunk = limit if not field_equals else max(limit, 1000)
        page: list[Document] = []
        while True:
            keys = await self._listing.keys(*prefix, after=after, limit=chunk)
            if not keys:
                return page, None
            found = await load(self.db[SUBSCRIBERS], (member_key(account_id, k.rsplit("/", 1)[1]) for k in keys))
            for key in keys:
                doc = found.get(member_key(account_id, key.rsplit("/", 1)[1]))
                if doc is not None and listing_key(doc) == key and _fields_match(doc, field_equals):
                    page.append(doc)
                    if len(page) == limit:
                        return page, key
            after = keys[-1]
            if len(keys) < chunk:
                return page, None

    async def status_counts(self, account_id: str, list_id: str) -> dict[str, int]:
        found = await self._counts.read(list_key(account_id, list_id))
        return {status: found.get(status, 0) for status in STATUSES}


def _fields_match(doc: Document, field_equals: dict[str, Any]) -> bool:
    fields = doc.get("custom_fields") or {}
    return all(_same_value(fields.get(name), value) for name, value in field_equals.items())


def _same_value(stored: Any, wanted: Any) -> bool:
    """Equality as MongoDB's filter has it: 3 equals 3.0, but true is not 1."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    return bool(stored == wanted)


def _list_state(doc: Document, account: Document | None) -> ListState:
    return ListState(account_id=doc["account_id"], list_id=doc["list_id"], name=doc["name"], opt_in=doc["opt_in"],
                     custom_fields=dict(doc.get("custom_fields", {})), deleted="deleted_at" in doc,
                     frame_ancestors=tuple(doc.get("form_frame_ancestors", ())),
                     form_challenge=doc.get("form_challenge", "none"),
                     notify_subscribes=bool(doc.get("notify_subscribes")),
                     notify_unsubscribes=bool(doc.get("notify_unsubscribes")),
                     account_deleted=account is not None and account.get("deleted_at") is not None)


def _member_state(doc: Document) -> MemberState:
    return MemberState(subscriber_id=doc["subscriber_id"], list_id=doc.get("list_id", ""),
                       email_sha256=doc["email_sha256"], status=doc["status"],
                       awaiting_confirmation=bool(doc.get("awaiting_confirmation")),
                       confirmation_requested_at=doc.get("confirmation_requested_at"),
                       opted_out=doc.get("opted_out"), opt_in=doc.get("opt_in"), added_at=doc.get("added_at"))
