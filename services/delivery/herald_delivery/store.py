"""MongoDB of the delivery service: its audience projection, account and campaign state, and the job ledger.

The job ledger is the durable queue: one document per message (`_id` = the deterministic message id), so
expanding a campaign twice creates nothing new, and the ledger's state says what was sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.contract import Event
from herald_shared.contract.subscriptions import (
    ListCreated,
    ListDeleted,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)
from herald_shared.mongo import Document, Projection, ReplaceOne, UpdateMany, UpdateOne, WriteOp, bulk_write

from .domain import AccountState, CampaignState, Member

MEMBERS = "members"
LISTS = "lists"
ACCOUNTS = "accounts"
CAMPAIGNS = "campaigns"
JOBS = "jobs"

# Job states. `queued` includes messages held by a closed gate: holding is not a state of the message,
# it is the gate's (they go out when it opens). `sending` is claimed by the sender; after a crash it is
# "in doubt" and queued again (see README, "Effectively once").
QUEUED, SENDING, SENT, BOUNCED, SKIPPED, CANCELLED = "queued", "sending", "sent", "bounced", "skipped", "cancelled"
FINAL_STATES = (SENT, BOUNCED, SKIPPED, CANCELLED)


def scoped(account_id: str, local_id: str) -> str:
    """Ids chosen by other services are unique per account only; documents are keyed by both."""
    return f"{account_id}:{local_id}"


class AudienceProjection(Projection):
    """Delivery's own view of herald.subscriptions: who is on which list, in which status, with merge data."""

    collections = (MEMBERS, LISTS)

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        account = event.account_id
        match event:
            case ListCreated(payload=p):
                return [(LISTS, UpdateOne({"_id": scoped(account, p.list_id)},
                                          {"$set": {"account_id": account, "deleted": False}}, upsert=True))]
            case ListDeleted(payload=p):
                return [(LISTS, UpdateOne({"_id": scoped(account, p.list_id)},
                                          {"$set": {"account_id": account, "deleted": True}}, upsert=True))]
            case SubscriberAdded(payload=p):
                return [(MEMBERS, UpdateOne({"_id": scoped(account, p.subscriber_id)}, {"$set": {
                    "account_id": account, "subscriber_id": p.subscriber_id, "list_id": p.list_id,
                    "email": str(p.email), "email_sha256": p.email_sha256, "first_name": p.first_name,
                    "last_name": p.last_name, "custom_fields": p.custom_fields, "status": "pending"}}, upsert=True))]
            case SubscriberConfirmed(payload=p):
                return [self._status(account, p.subscriber_id, "active")]
            case SubscriberUnsubscribed(payload=p):
                return [self._status(account, p.subscriber_id, "unsubscribed")]
            case SubscriberSuppressed(payload=p):
                # Suppression is of the address for the whole account (PRODUCT.md), whichever list.
                return [self._status(account, p.subscriber_id, "suppressed"),
                        (MEMBERS, UpdateMany({"account_id": account, "email_sha256": p.email_sha256,
                                              "status": {"$in": ["pending", "active"]}},
                                             {"$set": {"status": "suppressed"}}))]
            case SubscriberErased(payload=p):
                return [(MEMBERS, ReplaceOne({"_id": scoped(account, p.subscriber_id)}, {
                    "account_id": account, "subscriber_id": p.subscriber_id, "list_id": p.list_id,
                    "email": None, "email_sha256": p.email_sha256, "status": "erased"}, upsert=True))]
        return []

    @staticmethod
    def _status(account: str, subscriber_id: str, status: str) -> tuple[str, WriteOp]:
        # Never revive an erased member's row: erasure is final for this id.
        return (MEMBERS, UpdateOne({"_id": scoped(account, subscriber_id), "status": {"$ne": "erased"}},
                                   {"$set": {"status": status}}))


def member_from(doc: Document) -> Member:
    return Member(subscriber_id=doc["subscriber_id"], list_id=doc["list_id"], email=doc.get("email"),
                  status=doc["status"], first_name=doc.get("first_name"), last_name=doc.get("last_name"),
                  custom_fields=dict(doc.get("custom_fields") or {}))


class DeliveryStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.jobs = db[JOBS]

    async def ensure_indexes(self) -> None:
        await self.jobs.create_index([("state", ASCENDING), ("next_attempt_at", ASCENDING)])
        await self.jobs.create_index([("campaign_key", ASCENDING)])
        await self.db[MEMBERS].create_index([("account_id", ASCENDING), ("list_id", ASCENDING)])

    # Audience

    async def list_deleted(self, account_id: str, list_id: str) -> bool:
        doc = await self.db[LISTS].find_one({"_id": scoped(account_id, list_id)})
        return bool(doc and doc.get("deleted"))

    async def list_members(self, account_id: str, list_id: str) -> AsyncIterator[Member]:
        async for doc in self.db[MEMBERS].find({"account_id": account_id, "list_id": list_id, "status": "active"}):
            yield member_from(doc)

    async def members(self, account_id: str, subscriber_ids: Sequence[str]) -> dict[str, Member]:
        keys = [scoped(account_id, s) for s in subscriber_ids]
        found: dict[str, Member] = {}
        for start in range(0, len(keys), 500):
            async for doc in self.db[MEMBERS].find({"_id": {"$in": keys[start:start + 500]}}):
                found[doc["subscriber_id"]] = member_from(doc)
        return found

    async def member(self, account_id: str, subscriber_id: str) -> Member | None:
        doc = await self.db[MEMBERS].find_one({"_id": scoped(account_id, subscriber_id)})
        return member_from(doc) if doc else None

    # Accounts and campaigns (written only by the control consumer, which folds them in memory)

    async def all_accounts(self) -> list[AccountState]:
        states = []
        async for doc in self.db[ACCOUNTS].find({}):
            doc.pop("_id")
            doc["blocked_reasons"] = frozenset(doc.get("blocked_reasons") or ())
            states.append(AccountState(**doc))
        return states

    async def save_accounts(self, states: Sequence[AccountState]) -> None:
        ops: list[WriteOp] = []
        for state in states:
            doc: dict[str, Any] = asdict(state)
            doc["blocked_reasons"] = sorted(state.blocked_reasons)
            ops.append(ReplaceOne({"_id": state.account_id}, doc, upsert=True))
        await bulk_write(self.db[ACCOUNTS], ops)

    async def campaign(self, account_id: str, campaign_id: str) -> Document | None:
        return await self.db[CAMPAIGNS].find_one({"_id": scoped(account_id, campaign_id)})

    async def save_campaigns(self, docs: Sequence[Document]) -> None:
        await bulk_write(self.db[CAMPAIGNS], [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs])

    async def all_campaign_states(self) -> dict[str, CampaignState]:
        states = {}
        async for doc in self.db[CAMPAIGNS].find({}, {"state": 1}):
            states[doc["_id"]] = CampaignState(**doc["state"])
        return states

    # The job ledger

    async def add_jobs(self, docs: Sequence[Document]) -> None:
        """Insert jobs that do not exist yet; an existing job (same message id) is left as it is."""
        await bulk_write(self.jobs, [UpdateOne({"_id": d["_id"]}, {"$setOnInsert": d}, upsert=True) for d in docs],
                         ordered=False)

    async def due(self, now: datetime, limit: int, held_accounts: Sequence[str],
                  held_campaigns: Sequence[str]) -> list[Document]:
        query: Document = {"state": QUEUED, "next_attempt_at": {"$lte": now}}
        sendable: Document = {}
        if held_accounts:
            sendable["account_id"] = {"$nin": list(held_accounts)}
        if held_campaigns:
            sendable["campaign_key"] = {"$nin": list(held_campaigns)}
        if sendable:
            # Gates hold campaign mail only: confirmations and account notices go out regardless.
            query["$or"] = [{"kind": {"$ne": "campaign"}}, sendable]
        return [doc async for doc in self.jobs.find(query).limit(limit)]

    async def claim(self, message_ids: Sequence[str], now: datetime, claim: str) -> None:
        """Mark queued jobs as being sent by this claim; a job that changed state meanwhile is not taken."""
        for start in range(0, len(message_ids), 500):
            await self.jobs.update_many({"_id": {"$in": list(message_ids[start:start + 500])}, "state": QUEUED},
                                        {"$set": {"state": SENDING, "claimed_at": now, "claim": claim}})

    async def claimed(self, claim: str) -> list[Document]:
        return [doc async for doc in self.jobs.find({"claim": claim, "state": SENDING})]

    async def record(self, message_id: str, fields: Document) -> None:
        await self.jobs.update_one({"_id": message_id}, {"$set": fields})

    async def mark_published(self, message_ids: Sequence[str]) -> None:
        for start in range(0, len(message_ids), 500):
            await self.jobs.update_many({"_id": {"$in": list(message_ids[start:start + 500])}},
                                        {"$set": {"published": True}})

    async def recover_in_doubt(self) -> int:
        """Jobs claimed when the process died: queued again (sent again: see README on the window)."""
        result = await self.jobs.update_many({"state": SENDING},
                                             {"$set": {"state": QUEUED, "in_doubt": True}})
        return int(result.modified_count)

    async def unpublished(self) -> list[Document]:
        return [doc async for doc in self.jobs.find({"published": False})]

    async def cancel_campaign(self, account_id: str, campaign_id: str) -> int:
        result = await self.jobs.update_many({"campaign_key": scoped(account_id, campaign_id),
                                              "state": QUEUED}, {"$set": {"state": CANCELLED}})
        return int(result.modified_count)

    async def queued_by_campaign(self) -> dict[tuple[str, str | None], int]:
        """Queued messages per (account, campaign key), for queue-depth and held-by-gate metrics."""
        counts: dict[tuple[str, str | None], int] = {}
        pipeline: list[Document] = [{"$match": {"state": {"$in": [QUEUED, SENDING]}}},
                    {"$group": {"_id": {"a": "$account_id", "c": "$campaign_key"}, "n": {"$sum": 1}}}]
        async for row in await self.jobs.aggregate(pipeline):
            counts[(row["_id"]["a"], row["_id"].get("c"))] = int(row["n"])
        return counts

    async def forget_recipient(self, account_id: str, subscriber_id: str) -> None:
        """Erasure: confirmation jobs hold the address; drop it from every job of this subscriber."""
        await self.jobs.update_many({"account_id": account_id, "subscriber_id": subscriber_id,
                                     "state": {"$in": [QUEUED, SENDING]}, "kind": "confirmation"},
                                    {"$set": {"state": CANCELLED}})
        await self.jobs.update_many({"account_id": account_id, "subscriber_id": subscriber_id},
                                    {"$unset": {"recipient": "", "greeting_name": ""}})
