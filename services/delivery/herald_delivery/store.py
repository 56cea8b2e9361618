"""MongoDB of the delivery service: its audience projection, account and campaign state, and the job ledger.

The job ledger is the durable queue: one document per message (`_id` = the deterministic message id), so
expanding a campaign twice creates nothing new, and the ledger's state says what was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

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
from herald_shared.mongo import (
    DUPLICATE_KEY,
    MAX_OPS_PER_COMMAND,
    Document,
    Projection,
    ReplaceOne,
    UpdateMany,
    UpdateOne,
    WriteOp,
    bulk_write,
)

from .domain import AccountState, CampaignState, Member

MEMBERS = "members"
LISTS = "lists"
ACCOUNTS = "accounts"
CAMPAIGNS = "campaigns"
JOBS = "jobs"
OUTCOMES = "outcomes"
CLAIMS = "claims"
SENDER_STATE = "sender_state"

# The ledger is append-only, because FerretDB (SQLite) scans a collection for every update or non-`_id`
# query while inserts are cheap: `jobs` (one per message, written once), `outcomes` (one per attempt:
# sent, bounced, deferred, skipped, cancelled; `final` unless deferred) and `claims` (the message ids of
# each batch handed to the SMTP workers, so a crash leaves them identifiable as in doubt).
SENT, BOUNCED, DEFERRED, SKIPPED, CANCELLED = "sent", "bounced", "deferred", "skipped", "cancelled"
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


class GroupCommit:
    """Outcome inserts from all SMTP workers, written together: whoever arrives while an insert is under way
    goes into the next one, so the window between the relay's answer and the ledger stays short under
    load (one command per round instead of one per message)."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection
        self._pending: list[tuple[Document, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, doc: Document) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((doc, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_rounds())
        await future

    async def _write_rounds(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_OPS_PER_COMMAND], self._pending[MAX_OPS_PER_COMMAND:]
            try:
                await insert_new(self._collection, [doc for doc, _ in batch])
            except Exception as exc:  # every waiter learns it; none is left hanging
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)


async def insert_new(collection: AsyncCollection[Document], docs: Sequence[Document]) -> set[str]:
    """Insert documents whose `_id` is new; returns the ids that already existed (written before a crash,
    or by a redelivered event). Any other error is raised."""
    existing: set[str] = set()
    for start in range(0, len(docs), MAX_OPS_PER_COMMAND):
        chunk = docs[start:start + MAX_OPS_PER_COMMAND]
        try:
            await collection.insert_many(list(chunk), ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(err.get("code") != DUPLICATE_KEY for err in errors):
                raise
            existing.update(str(chunk[err["index"]]["_id"]) for err in errors)
    return existing


class DeliveryStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.jobs = db[JOBS]
        self._group_commit = GroupCommit(db[OUTCOMES])

    async def ensure_indexes(self) -> None:
        await self.db[OUTCOMES].create_index([("message_id", ASCENDING)])
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

    async def add_jobs(self, docs: Sequence[Document]) -> list[Document]:
        """Insert jobs whose message id is new; returns those (a job that exists is left as it is)."""
        existing = await insert_new(self.jobs, docs)
        return [doc for doc in docs if str(doc["_id"]) not in existing]

    async def open_claim(self, claim: str, message_ids: Sequence[str], now: datetime) -> None:
        """Record, in one insert, that these jobs are being sent: after a crash they are in doubt."""
        await self.db[CLAIMS].insert_one({"_id": claim, "message_ids": list(message_ids), "at": now})

    async def record(self, outcome: Document) -> None:
        """Append one attempt's outcome (`_id` = message id and attempt, so a repeat is a no-op)."""
        await self._group_commit.insert(outcome)

    async def load_pending(self) -> tuple[list[Document], list[Document]]:
        """The ledger folded at start-up: jobs without a final outcome (with their attempt count and next
        attempt time), and among them those in doubt: claimed after their last recorded outcome, i.e. the
        process died during their SMTP transaction."""
        last: dict[str, Document] = {}
        async for recorded in self.db[OUTCOMES].find({}, {"outcome_event": 0}):
            current = last.get(recorded["message_id"])
            if current is None or (recorded["attempt"], recorded["final"]) > (current["attempt"], current["final"]):
                last[recorded["message_id"]] = recorded
        claimed_at: dict[str, datetime] = {}
        async for claim in self.db[CLAIMS].find({}):
            for message_id in claim["message_ids"]:
                claimed_at[message_id] = max(claim["at"], claimed_at.get(message_id, claim["at"]))
        pending: list[Document] = []
        in_doubt: list[Document] = []
        async for job in self.jobs.find({}):
            outcome: Document | None = last.get(job["_id"])
            if outcome is not None and outcome["final"]:
                continue
            if outcome is not None:
                job.update(attempts=outcome["attempt"], first_attempt_at=outcome.get("first_attempt_at"),
                           next_attempt_at=outcome["next_attempt_at"])
            pending.append(job)
            claimed = claimed_at.get(job["_id"])
            # Strictly later: MongoDB keeps milliseconds, and an attempt's outcome can land in the same
            # millisecond as its own claim; a re-claim after a deferral is seconds later.
            if claimed is not None and (outcome is None or claimed > outcome["recorded_at"]):
                in_doubt.append(job)
        return pending, in_doubt

    async def mark_in_doubt(self, message_ids: Sequence[str]) -> None:
        """Kept on the job for look-ups ("was it sent twice?"); written once, at start-up."""
        for start in range(0, len(message_ids), 500):
            await self.jobs.update_many({"_id": {"$in": list(message_ids[start:start + 500])}},
                                        {"$set": {"in_doubt": True}})

    async def forget_claims(self, before: datetime) -> None:
        """Claims older than the start-up fold are settled (their jobs are pending or finished)."""
        await self.db[CLAIMS].delete_many({"at": {"$lt": before}})

    async def save_published_watermark(self, before: datetime) -> None:
        """Every outcome recorded before `before` has been published (one write, not one per message)."""
        await self.db[SENDER_STATE].update_one({"_id": "published"}, {"$max": {"before": before}}, upsert=True)

    async def outcomes_to_republish(self) -> list[Document]:
        """Outcomes recorded at or after the watermark: maybe unpublished when the process died."""
        doc = await self.db[SENDER_STATE].find_one({"_id": "published"})
        query: Document = {"outcome_event": {"$exists": True}}
        if doc is not None:
            query["recorded_at"] = {"$gte": doc["before"]}
        return [d async for d in self.db[OUTCOMES].find(query, {"outcome_event": 1})]

    async def outcomes(self, query: Document) -> list[Document]:
        return [d async for d in self.db[OUTCOMES].find(query, {"outcome_event": 0})]

    async def forget_recipient(self, account_id: str, subscriber_id: str) -> None:
        """Erasure: confirmation jobs hold the address; drop it from every job of this subscriber (the sender
        skips a job without a recipient)."""
        await self.jobs.update_many({"account_id": account_id, "subscriber_id": subscriber_id},
                                    {"$unset": {"recipient": "", "greeting_name": ""}})
