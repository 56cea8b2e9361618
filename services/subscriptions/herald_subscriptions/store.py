"""Subscriptions' read models in MongoDB, folded from events, and the queries the API needs.

Every fold is a write whose filter is the transition's guard (e.g. unsubscribe only a pending or active
member), so applying an event again changes nothing. Every query is scoped by account_id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
from herald_shared.mongo import Document, Projection, ReplaceOne, UpdateMany, UpdateOne, WriteOp

from .domain import ListState, MemberState

STATUSES = ("pending", "active", "unsubscribed", "suppressed")


def list_key(account_id: str, list_id: str) -> str:
    return f"{account_id}:{list_id}"


class SubscriptionsProjection(Projection):
    collections = ("lists", "subscribers", "suppressions", "imports", "accounts")

    async def ensure_indexes(self) -> None:
        await self.db["subscribers"].create_index([("account_id", 1), ("list_id", 1), ("status", 1)])
        await self.db["subscribers"].create_index([("account_id", 1), ("email_sha256", 1)])

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
                                            {"$set": {"deleted_at": event.occurred_at}})),
                        ("subscribers", UpdateMany({"account_id": event.account_id, "list_id": p.list_id},
                                                   {"$set": {"list_deleted": True}}))]
            case SubscriberAdded(payload=p):
                return [("subscribers", UpdateOne({"_id": p.subscriber_id}, {
                    "$set": {"account_id": event.account_id, "list_id": p.list_id, "email": str(p.email),
                             "email_sha256": p.email_sha256, "first_name": p.first_name, "last_name": p.last_name,
                             "phone": p.phone, "custom_fields": p.custom_fields, "opt_in": p.opt_in,
                             "consent": p.consent.model_dump(mode="json"), "added_at": event.occurred_at},
                    "$setOnInsert": {"status": "pending"}}, upsert=True)),
                    # Coming back after unsubscribing or erasure starts again as pending.
                    ("subscribers", UpdateOne({"_id": p.subscriber_id, "status": {"$in": ["unsubscribed", "erased"]}},
                                              {"$set": {"status": "pending"}}))]
            case ConfirmationRequested(payload=p):
                return [("subscribers", UpdateOne({"_id": p.subscriber_id}, {"$set": {
                    "awaiting_confirmation": True, "confirmation_requested_at": event.occurred_at}}))]
            case SubscriberConfirmed(payload=p):
                guard: dict[str, Any] = {"_id": p.subscriber_id, "$or": [
                    {"status": "pending"}, {"status": "suppressed", "awaiting_confirmation": True}]}
                return [("subscribers", UpdateOne(guard, {"$set": {
                    "status": "active", "awaiting_confirmation": False, "confirmed_at": event.occurred_at,
                    "confirmation_method": p.method}}))]
            case SubscriberUnsubscribed(payload=p):
                return [("subscribers", UpdateOne(
                    {"_id": p.subscriber_id, "status": {"$in": ["pending", "active"]}},
                    {"$set": {"status": "unsubscribed", "awaiting_confirmation": False,
                              "unsubscribed_at": event.occurred_at, "unsubscribe_source": p.source,
                              "unsubscribe_campaign_id": p.campaign_id}}))]
            case SubscriberSuppressed(payload=p):
                return [("suppressions", UpdateOne({"_id": f"{event.account_id}:{p.email_sha256}"}, {"$setOnInsert": {
                    "account_id": event.account_id, "email_sha256": p.email_sha256, "reason": p.reason,
                    "suppressed_at": event.occurred_at}}, upsert=True)),
                    ("subscribers", UpdateMany(
                        {"account_id": event.account_id, "email_sha256": p.email_sha256, "status": {"$ne": "erased"}},
                        {"$set": {"status": "suppressed", "suppressed_reason": p.reason,
                                  "awaiting_confirmation": False}}))]
            case SubscriberErased(payload=p):
                # Nothing personal stays: only ids, the address hash (suppression must outlive erasure) and when.
                return [("subscribers", ReplaceOne({"_id": p.subscriber_id, "account_id": event.account_id}, {
                    "account_id": event.account_id, "list_id": p.list_id, "email_sha256": p.email_sha256,
                    "status": "erased",
                    "erased_at": event.occurred_at, "erasure_requested_by": p.requested_by}))]
            case ImportCompleted(payload=p):
                return [("imports", UpdateOne({"_id": f"{event.account_id}:{p.import_id}"}, {"$set": {
                    "account_id": event.account_id, **p.model_dump(mode="json"),
                    "completed_at": event.occurred_at}}, upsert=True))]
            case AccountOpened(payload=p):
                return [("accounts", UpdateOne({"_id": event.account_id}, {"$set": {
                    "company_name": p.company_name}}, upsert=True))]
        return []


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
        cursor = self.db["subscribers"].find({"account_id": account_id, "email_sha256": email_hash}).sort("_id", 1)
        return [doc async for doc in cursor]

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
