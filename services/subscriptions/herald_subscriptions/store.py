"""Subscriptions' read models in MongoDB, folded from events, and the queries the API needs.

Folding is pure (`domain.evolve_member`); applying an event again changes nothing. Every query is scoped
by account_id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.contract import Event
from herald_shared.contract.billing import AccountOpened
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    ImportCompleted,
    ListCreated,
    ListDeleted,
    ListRenamed,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)
from herald_shared.mongo import Document, Projection, UpdateOne, WriteOp, bulk_write

from . import domain
from .domain import ListState, MemberState

STATUSES = ("pending", "active", "unsubscribed", "suppressed")


def list_key(account_id: str, list_id: str) -> str:
    return f"{account_id}:{list_id}"


# Events folded in Python over the documents they touch (loaded by _id once per batch).
MEMBER_EVENTS = (SubscriberAdded, ConfirmationRequested, SubscriberConfirmed, SubscriberUnsubscribed,
                 SubscriberSuppressed, SubscriberErased)


class SubscriptionsProjection(Projection):
    """Memberships are folded in Python by `domain.evolve_member` (load the batch's documents by _id, fold,
    write back by _id): every read and write is by _id, which any MongoDB-speaking server serves fast.
    Filters with extra conditions are avoided on purpose: FerretDB 1.x (SQLite) answers them with a full
    collection scan per write. Lists, suppressions, accounts and imports are keyed writes."""

    collections = ("lists", "subscribers", "addresses", "suppressions", "imports", "accounts")

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        super().__init__(db)
        self._member_events: list[Event] = []

    async def ensure_indexes(self) -> None:
        await self.db["subscribers"].create_index([("account_id", 1), ("list_id", 1), ("status", 1)])

    async def handle(self, event: Event) -> None:
        if isinstance(event, MEMBER_EVENTS):
            self._member_events.append(event)
        await super().handle(event)

    async def flush(self) -> None:
        events, self._member_events = self._member_events, []
        try:
            await self._fold_members(events)
        except Exception:
            self._member_events = events + self._member_events
            raise
        await super().flush()

    async def _fold_members(self, events: list[Event]) -> None:
        if not events:
            return
        address_ids = {f"{e.account_id}:{e.payload.email_sha256}" for e in events
                       if isinstance(e, SubscriberAdded | SubscriberSuppressed)}
        addresses = await _by_id(self.db["addresses"], address_ids)
        member_ids = {e.payload.subscriber_id for e in events}  # type: ignore[attr-defined]
        for doc in addresses.values():
            member_ids.update(doc["members"])
        members = await _by_id(self.db["subscribers"], member_ids)
        before_members, before_addresses = dict(members), dict(addresses)
        for event in events:
            if isinstance(event, SubscriberSuppressed):
                address = addresses.get(f"{event.account_id}:{event.payload.email_sha256}")
                targets = set(address["members"]) if address else set()
                targets.add(event.payload.subscriber_id)
            else:
                targets = {event.payload.subscriber_id}  # type: ignore[attr-defined]
            for target in targets:
                folded = domain.evolve_member(members.get(target), event)
                if folded is not None:
                    members[target] = folded
            if isinstance(event, SubscriberAdded):
                key = f"{event.account_id}:{event.payload.email_sha256}"
                address = domain.evolve_address(addresses.get(key), event)
                if address is not None:
                    addresses[key] = address
        await _write_changes(self.db["subscribers"], before_members, members)
        await _write_changes(self.db["addresses"], before_addresses, addresses)

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        match event:
            case ListCreated(payload=p):
                return [("lists", UpdateOne({"_id": list_key(event.account_id, p.list_id)}, {"$setOnInsert": {
                    "account_id": event.account_id, "list_id": p.list_id, "name": p.name, "opt_in": p.opt_in,
                    "custom_fields": {f.name: f.kind for f in p.custom_fields}, "created_at": event.occurred_at}},
                    upsert=True))]
            case ListRenamed(payload=p):
                return [("lists", UpdateOne({"_id": list_key(event.account_id, p.list_id)},
                                            {"$set": {"name": p.name}}))]
            case ListDeleted(payload=p):
                return [("lists", UpdateOne({"_id": list_key(event.account_id, p.list_id)},
                                            {"$set": {"deleted_at": event.occurred_at}}))]
            case SubscriberSuppressed(payload=p):
                return [("suppressions", UpdateOne({"_id": f"{event.account_id}:{p.email_sha256}"}, {"$setOnInsert": {
                    "account_id": event.account_id, "email_sha256": p.email_sha256, "reason": p.reason,
                    "suppressed_at": event.occurred_at}}, upsert=True))]
            case ImportCompleted(payload=p):
                return [("imports", UpdateOne({"_id": f"{event.account_id}:{p.import_id}"}, {"$set": {
                    "account_id": event.account_id, **p.model_dump(mode="json"),
                    "completed_at": event.occurred_at}}, upsert=True))]
            case AccountOpened(payload=p):
                return [("accounts", UpdateOne({"_id": event.account_id}, {"$set": {
                    "company_name": p.company_name}}, upsert=True))]
        return []


async def _by_id(collection: AsyncCollection[Document], ids: set[str]) -> dict[str, Document]:
    if not ids:
        return {}
    return {doc["_id"]: doc async for doc in collection.find({"_id": {"$in": sorted(ids)}})}


async def _write_changes(collection: AsyncCollection[Document], before: dict[str, Document],
                         after: dict[str, Document]) -> None:
    """One bulk write of the documents the fold changed: $set what differs, $unset what went away."""
    ops: list[UpdateOne] = []
    for key, doc in after.items():
        old = before.get(key, {})
        changed = {k: v for k, v in doc.items() if k != "_id" and old.get(k, _MISSING) != v}
        removed = {k: "" for k in old if k not in doc}
        update: dict[str, Any] = {}
        if changed:
            update["$set"] = changed
        if removed:
            update["$unset"] = removed
        if update:
            ops.append(UpdateOne({"_id": key}, update, upsert=True))
    await bulk_write(collection, ops)


_MISSING = object()


class SubscriptionsStore:
    """Reads of the projection. Every method takes the account and never returns another account's data."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db

    async def list_state(self, account_id: str, list_id: str) -> ListState | None:
        doc = await self.db["lists"].find_one({"_id": list_key(account_id, list_id), "account_id": account_id})
        return _list_state(doc) if doc else None

    async def list_doc(self, account_id: str, list_id: str) -> Document | None:
        return await self.db["lists"].find_one({"_id": list_key(account_id, list_id), "account_id": account_id,
                                                 "deleted_at": {"$exists": False}})

    async def lists(self, account_id: str) -> list[Document]:
        cursor = self.db["lists"].find({"account_id": account_id, "deleted_at": {"$exists": False}}).sort("_id", 1)
        return [doc async for doc in cursor]

    async def member(self, account_id: str, subscriber_id: str) -> Document | None:
        return await self.db["subscribers"].find_one({"_id": subscriber_id, "account_id": account_id})

    async def member_state(self, account_id: str, subscriber_id: str) -> MemberState | None:
        doc = await self.member(account_id, subscriber_id)
        return _member_state(doc) if doc else None

    async def members_by_hash(self, account_id: str, email_hash: str) -> list[Document]:
        """Every membership of one address in the account (through its addresses document, by _id)."""
        address = await self.db["addresses"].find_one({"_id": f"{account_id}:{email_hash}"})
        if address is None:
            return []
        cursor = self.db["subscribers"].find({"_id": {"$in": address["members"]}, "account_id": account_id})
        return sorted([doc async for doc in cursor], key=lambda d: d["_id"])

    async def member_states(self, account_id: str, subscriber_ids: Sequence[str]) -> dict[str, MemberState]:
        cursor = self.db["subscribers"].find({"_id": {"$in": list(subscriber_ids)}, "account_id": account_id})
        return {doc["_id"]: _member_state(doc) async for doc in cursor}

    async def suppressed(self, account_id: str, email_hashes: Sequence[str]) -> set[str]:
        ids = [f"{account_id}:{h}" for h in email_hashes]
        cursor = self.db["suppressions"].find({"_id": {"$in": ids}, "account_id": account_id})
        return {doc["email_sha256"] async for doc in cursor}

    async def company_name(self, account_id: str) -> str | None:
        doc = await self.db["accounts"].find_one({"_id": account_id})
        return str(doc["company_name"]) if doc else None

    async def members_page(self, account_id: str, list_id: str, *, status: str | None,
                           field_equals: dict[str, Any], after: str | None, limit: int) -> list[Document]:
        query: dict[str, Any] = {"account_id": account_id, "list_id": list_id, "status": {"$ne": "erased"}}
        if status:
            query["status"] = status
        for name, value in field_equals.items():
            query[f"custom_fields.{name}"] = value
        if after:
            query["_id"] = {"$gt": after}
        cursor = self.db["subscribers"].find(query).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]

    async def status_counts(self, account_id: str, list_id: str) -> dict[str, int]:
        cursor = await self.db["subscribers"].aggregate([
            {"$match": {"account_id": account_id, "list_id": list_id}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}}])
        found = {doc["_id"]: doc["n"] async for doc in cursor}
        return {status: int(found.get(status, 0)) for status in STATUSES}


def _list_state(doc: Document) -> ListState:
    return ListState(account_id=doc["account_id"], list_id=doc["list_id"], name=doc["name"], opt_in=doc["opt_in"],
                     custom_fields=dict(doc.get("custom_fields", {})), deleted="deleted_at" in doc)


def _member_state(doc: Document) -> MemberState:
    return MemberState(subscriber_id=doc["_id"], list_id=doc.get("list_id", ""), email_sha256=doc["email_sha256"],
                       status=doc["status"], awaiting_confirmation=bool(doc.get("awaiting_confirmation")))
