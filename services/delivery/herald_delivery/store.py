"""MongoDB of the delivery service: its audience projection, account and campaign state, and the job ledger.

The job ledger is the durable queue: one document per message (`_id` = the deterministic message id), so
expanding a campaign twice creates nothing new, and the ledger's state says what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from herald_shared import membership
from herald_shared.contract import Event
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    ListCreated,
    ListDeleted,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)
from herald_shared.kafka import MAX_REASON_CHARS
from herald_shared.mongo import Document, FoldingProjection, ReplaceOne, UpdateOne, WriteOp, WrittenKeys, bulk_write
from herald_shared.purging import delete_by_account_prefix
from herald_shared.readmodel import (
    LOAD_CHUNK,
    SecondaryIndex,
    States,
    applied,
    compose,
    insert_new,
    load,
    marked,
    prefix_range,
    write_changes,
)
from herald_shared.rebuilding import ReadModelFormat

from . import domain
from .domain import AccountState, CampaignState, FinalResult, Member, MessageFlow, QueuedCampaign, SendAllowance

log = logging.getLogger(__name__)

MEMBERS = "members"
ACTIVE_MEMBERS = "active_members"
ADDRESSES = "addresses"
LISTS = "lists"
ACCOUNTS = "accounts"
CAMPAIGNS = "campaigns"
TESTS = "tests"  # test sends: the content and sample values each was requested with
JOBS = "jobs"
OUTCOMES = "outcomes"
CLAIMS = "claims"
SENDER_STATE = "sender_state"
BOUNCE_REPORTS = "bounce_reports"  # the inbound bounce events published, by event id (one per message and class)
# CampaignDeliveryFinished of each campaign delivery is done with (`_id` = account:campaign), written before
# it is published and marked `published` after.
FINISHED_CAMPAIGNS = "finished_campaigns"
# Members loaded per query when a campaign is expanded.
EXPANSION_PAGE = 1000

# The ledger is append-only (inserts are the cheapest write on every MongoDB-speaking store; updates and
# queries beyond `_id` are not, on FerretDB): `jobs` (one per message, written once), `outcomes` (one per
# attempt: sent, bounced, deferred, skipped, cancelled; `final` unless deferred) and `claims` (the message
# ids of each batch handed to the SMTP workers, so a crash leaves them identifiable as in doubt).
#
# What a start reads of it is the work that may be unfinished, never the history (README, "Effectively once"):
# each insert of a campaign's jobs lists their ids in `job_index` (`account:campaign/<digest of the ids>`), and
# each campaign with jobs has a `job_buckets` document (`account:campaign`); a start reads the lists of the
# campaigns not announced finished. Every other job (confirmation, notice, test send) has an `open_jobs`
# document, deleted once its final outcome is published. Both are written before the jobs they name, so a crash
# in between leaves a listed id without its job (which a start passes over), never a job nobody lists.
JOB_BUCKETS, JOB_INDEX, OPEN_JOBS = "job_buckets", "job_index", "open_jobs"
# The jobs that hold a subscriber's address (confirmations): `account:subscriber/<message id>`, written with the
# job, so an erasure finds them by an `_id` range instead of scanning every job ever written.
RECIPIENT_JOBS = "recipient_jobs"
# In `sender_state`: every job is listed (and every job holding an address, in RECIPIENT_JOBS). Missing (a ledger
# written before the lists existed, or none yet), the next start folds the whole ledger once and lists what is
# open in it, and the jobs holding an address; until then an erasure scans the jobs.
LEDGER_LISTED = "ledger_listed"
# The campaigns delivery is not done with (`_id` = account:campaign): queued and not yet announced finished, or
# announced and not yet published. Every start-up read of campaigns, their expansions, announcements and job lists
# goes through it by `_id`, so a start costs the open campaigns, not every campaign ever queued. Written before
# what it names (the campaign document of a CampaignQueued, a campaign's first job list), deleted only once its
# CampaignDeliveryFinished is published (`close_campaign`), and by the purge (README, "The end of a campaign").
OPEN_CAMPAIGNS = "open_campaigns"
# In `sender_state`: the open campaigns are listed. Missing (a database written before the listing), the first
# start lists them once from what the version before read at every start (README, "Upgrading").
CAMPAIGNS_LISTED = "campaigns_listed"
# Per account (`_id`), by kind, how many of its messages billing counts as sent (`herald_shared.sent.email_sent`), over
# its life: what the send allowance is counted against. Written by the sender alone, with the outcomes' group
# commit, as absolute values (`$set`; FerretDB 1.24 loses concurrent `$inc`). Each counted outcome carries the
# count it made (`counted_kind`, `counted_total`), so a start recounts what a crash left unwritten here.
SENT_COUNTS = "sent_counts"
# Customer DKIM (`customer_dkim`): the keys made for sending domains (`account/domain/SendingDomainAdded id`, the
# first written wins), and the key each domain signs with once campaigns found its record (`account/domain`).
DKIM_KEYS, DKIM_SIGNING = "dkim_keys", "dkim_signing"
SENT, BOUNCED, DEFERRED, SKIPPED, CANCELLED = "sent", "bounced", "deferred", "skipped", "cancelled"
FINAL_STATES = (SENT, BOUNCED, SKIPPED, CANCELLED)


def scoped(account_id: str, local_id: str) -> str:
    """Ids chosen by other services are unique per account only; documents are keyed by both."""
    return f"{account_id}:{local_id}"


def scoped_range(account_id: str) -> dict[str, str]:
    """The `_id` filter of every `scoped` key of an account (account ids hold no ':' or ';')."""
    return {"$gte": account_id + ":", "$lt": account_id + ";"}


def active_key(doc: Document) -> str | None:
    """Where an active member is listed for expansion: account, list, member."""
    if doc["status"] != "active":
        return None
    return compose(doc["account_id"], doc["list_id"], doc["subscriber_id"])


MEMBER_EVENTS = (SubscriberAdded, SubscriberConfirmed, SubscriberUnsubscribed, SubscriberSuppressed,
                 SubscriberErased)

# The audience's format, marked beside it (`herald_shared.rebuilding`). 2 (2026-12-06): a suppressed address stays
# suppressed when another producer re-adds it, and a later membership of it starts suppressed. Members without the
# mark were folded by the version before, which made such a re-added membership active: it is folded again
# (`herald_delivery.rebuild`) before this version serves or sends from it. 3 (2026-12-07): an erased membership
# keeps no hash of its address and leaves its address's document, so no staff look-up by the address leads to it;
# one folded before still does, until the audience is folded again.
# 4 (2026-12-07): one membership per address and list (`herald_shared.membership`): an add of an address already
# on the list under another id is none; an audience folded before holds such duplicates (one campaign mailed the
# person once per id) until folded again.
AUDIENCE_FORMAT = 4
AUDIENCE = ReadModelFormat("delivery", "audience", AUDIENCE_FORMAT, MEMBERS, "audience")


class AudienceProjection(FoldingProjection):
    """Delivery's own view of herald.subscriptions: who is on which list, in which status, with merge data.

    Members are folded in Python (`domain.evolve_audience_member`) over the documents a batch touches,
    loaded by `_id`; the active members of each list are listed in `active_members` (composed `_id`s, read
    as a range when a campaign is expanded); `addresses` finds every membership of an address, which a
    suppression reaches across lists, and remembers that the account suppressed it, so a membership added later
    starts suppressed (see herald_shared.readmodel). ConfirmationRequested is folded too: only a confirmation
    after it (the person's double opt-in) makes a suppressed member active, as in subscriptions.

    `rebuilding`: folded by `herald_delivery.rebuild` into collections it dropped, as their only writer, and run
    again from the start if it stops midway. Members and addresses it never wrote are not loaded (`WrittenKeys`),
    and a batch's listing and documents are written at once: the order that makes a crashed batch's replay exact
    does not matter when nothing is replayed."""

    collections = (MEMBERS, ACTIVE_MEMBERS, ADDRESSES, LISTS)
    # Not in MEMBER_EVENTS, the events whose ids the audience consumer leaves to the members (main.py): a
    # ConfirmationRequested's id is still stored by the consumer, as before it was folded.
    folded = (*MEMBER_EVENTS, ConfirmationRequested)

    def __init__(self, db: AsyncDatabase[Document], *, rebuilding: bool = False) -> None:
        super().__init__(db)
        # Written ahead of the members: a batch the store refuses is listed again as it holds them (an active
        # member whose refused change had removed its key would be left out of every campaign).
        self._active = self.ahead(SecondaryIndex(db[ACTIVE_MEMBERS], active_key, documents=db[MEMBERS]))
        # A rebuild marks the format once it is done (`herald_delivery.rebuild`), not at its first fold.
        self._format_checked = rebuilding
        self._written = WrittenKeys() if rebuilding else None

    async def purge(self, account_id: str) -> None:
        """Retention, of the audience alone (the rebuild's; the service's `DeliveryStore.purge` deletes it too)."""
        for name in (MEMBERS, LISTS):
            await self.db[name].delete_many({"_id": scoped_range(account_id)})
        await delete_by_account_prefix(self.db, account_id, (ACTIVE_MEMBERS, ADDRESSES))

    async def fold(self, events: list[Event]) -> None:
        if not self._format_checked:
            # Members folded into an empty audience are of this format: marked before the first of them is written,
            # so a process started on them later finds it (one folded by this projection outside the service too).
            await AUDIENCE.mark_if_empty(self.db)
            self._format_checked = True
        address_ids = {compose(e.account_id, e.payload.email_sha256) for e in events
                       if isinstance(e, SubscriberAdded | SubscriberSuppressed | SubscriberErased)}
        addresses = await load(self.db[ADDRESSES], self._stored(address_ids))
        member_ids = {scoped(e.account_id, e.payload.subscriber_id) for e in events}  # type: ignore[attr-defined]
        for doc in addresses.values():
            member_ids.update(scoped(doc["account_id"], s) for s in doc["members"])
        members: dict[str, Document] = await load(self.db[MEMBERS], self._stored(member_ids))
        before_members, before_addresses = dict(members), dict(addresses)
        states = States(members)
        for event in events:
            # Each member keeps the ids of the events folded into it: a copy, however late, changes nothing.
            key = scoped(event.account_id, event.payload.subscriber_id)  # type: ignore[attr-defined]
            address_key = compose(event.account_id, event.payload.email_sha256) if isinstance(
                event, SubscriberAdded | SubscriberSuppressed | SubscriberErased) else None
            address = addresses.get(address_key) if address_key else None
            old = members.get(key)
            if isinstance(event, SubscriberAdded) and not applied(old, event) and self._duplicate(
                    event, address, members):
                continue
            if not applied(old, event):
                folded = domain.evolve_audience_member(old, event, address_suppressed=suppressed_address(
                    address, members, event.account_id))
                if folded is not None:
                    states.set(key, marked({**folded, "_id": key}, old, event))
                if address_key is not None and isinstance(event, SubscriberErased):
                    # Only when the member took it: a late copy of an old erasure must not drop a re-added id.
                    addresses[address_key] = {"_id": address_key,
                                              **domain.evolve_audience_address(address, event, folded)}
            if isinstance(event, SubscriberSuppressed):
                # Suppression is of the address for the whole account (PRODUCT.md), whichever list.
                for other in address["members"] if address else ():
                    other_key = scoped(event.account_id, other)
                    other_doc = members.get(other_key)
                    if other_key == key or other_doc is None or applied(other_doc, event):
                        continue
                    suppressed = domain.evolve_audience_member(other_doc, event)
                    if suppressed is not None:
                        states.set(other_key, marked({**suppressed, "_id": other_key}, other_doc, event))
            if address_key is not None and isinstance(event, SubscriberAdded | SubscriberSuppressed):  # for mypy
                addresses[address_key] = {"_id": address_key, **domain.evolve_audience_address(address, event)}
        changed = {k: v for k, v in members.items() if v is not before_members.get(k)}
        changed_addresses = {k: v for k, v in addresses.items() if v is not before_addresses.get(k)}
        if self._written is not None:
            self._written.add(changed)
            self._written.add(changed_addresses)
            await asyncio.gather(self._active.write(before_members, changed, states.passed),
                                 write_changes(self.db[MEMBERS], before_members, changed),
                                 write_changes(self.db[ADDRESSES], before_addresses, changed_addresses))
            return
        await self._active.write(before_members, changed, states.passed)  # the listing before its documents
        await write_changes(self.db[MEMBERS], before_members, changed)
        await write_changes(self.db[ADDRESSES], before_addresses, changed_addresses)

    def _stored(self, keys: set[str]) -> set[str]:
        """Of these keys, those that may be stored (all of them unless rebuilding)."""
        return keys if self._written is None or not keys else self._written.maybe(keys)

    @staticmethod
    def _duplicate(event: SubscriberAdded, address: Document | None, members: dict[str, Document]) -> bool:
        """Whether the add is of an address already a member of the list under another id: no membership
        (`herald_shared.membership`, as subscriptions, which dead-letters it, and billing decide), so nobody is
        mailed twice by one campaign, and every later event of that id finds no member here. Logged, to be seen.
        The fold has every membership of the address loaded (through its document)."""
        p = event.payload
        existing = membership.holder((members.get(scoped(event.account_id, m)) for m in (address or {}).get(
            "members", ())), list_id=p.list_id, email_sha256=p.email_sha256, subscriber_id=p.subscriber_id)
        if existing is None:
            return False
        log.warning("audience: a SubscriberAdded left out: %s", membership.duplicate_reason(
            subscriber_id=p.subscriber_id, list_id=p.list_id, account_id=event.account_id, existing=existing),
            extra={"event_id": str(event.event_id), "account_id": event.account_id,
                   "subscriber_id": p.subscriber_id, "existing_subscriber_id": existing})
        return True

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        account = event.account_id
        match event:
            case ListCreated(payload=p):
                return [(LISTS, UpdateOne({"_id": scoped(account, p.list_id)},
                                          {"$set": {"account_id": account, "deleted": False}}, upsert=True))]
            case ListDeleted(payload=p):
                return [(LISTS, UpdateOne({"_id": scoped(account, p.list_id)},
                                          {"$set": {"account_id": account, "deleted": True}}, upsert=True))]
        return []


def suppressed_address(address: Document | None, members: dict[str, Document], account_id: str) -> bool:
    """Whether the account suppressed this address: its flag, or, for an address folded before the flag was kept
    (a read model of an earlier version), one of its memberships still suppressed (a membership is suppressed only
    by a suppression of its address; the fold has every membership of the address loaded)."""
    if address is None:
        return False
    return bool(address.get("suppressed")) or any(
        (members.get(scoped(account_id, other)) or {}).get("status") == "suppressed" for other in address["members"])


def member_from(doc: Document) -> Member:
    return Member(subscriber_id=doc["subscriber_id"], list_id=doc["list_id"], email=doc.get("email"),
                  status=doc["status"], first_name=doc.get("first_name"), last_name=doc.get("last_name"),
                  custom_fields=dict(doc.get("custom_fields") or {}))


def account_from(doc: Document) -> AccountState:
    fields = {key: value for key, value in doc.items() if key != "_id"}
    allowance = fields.pop("allowance", None)
    return AccountState(**{**fields, "blocked_reasons": frozenset(doc.get("blocked_reasons") or ())},
                        allowance=SendAllowance(**{**allowance, "counts": tuple(allowance["counts"])})
                        if allowance else None)


class GroupCommit:
    """Outcome inserts from all SMTP workers, written together: whoever arrives while an insert is under way
    goes into the next one, so the window between the relay's answer and the ledger stays short under
    load (one command per round instead of one per message)."""

    def __init__(self, collection: AsyncCollection[Document],
                 then: Callable[[list[Document]], Awaitable[None]] | None = None) -> None:
        """`then`: written after each round's insert, before its waiters learn it is done (the send counts)."""
        self._collection = collection
        self._then = then
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
            batch, self._pending = self._pending, []
            try:
                docs = [doc for doc, _ in batch]
                await insert_new(self._collection, docs)
                if self._then is not None:
                    await self._then(docs)
            except Exception as exc:  # every waiter learns it; none is left hanging
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)


# What the start-up fold keeps of a message's last outcome: (attempt, True, how it ended) when final, else
# (attempt, False, first attempt at, next attempt at, recorded at).
_LastOutcome = tuple[Any, ...]
_COUNTED_FIELDS = {"account_id": 1, "counted_kind": 1, "counted_total": 1}  # what a start recounts the sends from
_OUTCOME_FIELDS = {"message_id": 1, "attempt": 1, "final": 1, "outcome": 1, "reason": 1, "first_attempt_at": 1,
                   "next_attempt_at": 1, "recorded_at": 1}


@dataclass
class LedgerFold:
    """The ledger as the sender needs it at start-up."""

    pending: list[Document] = field(default_factory=list)  # jobs without a final outcome
    in_doubt: list[Document] = field(default_factory=list)  # among them, those claimed after their last outcome
    # How the finished messages of each campaign not announced finished ended, by campaign (`account:campaign`).
    finished: dict[str, dict[FinalResult, int]] = field(default_factory=dict)
    # Outcomes recorded since the published-watermark, with their events: maybe unpublished when the process
    # stopped (`_id` and `outcome_event`).
    republish: list[Document] = field(default_factory=list)
    # Open jobs (not a campaign's) found finished: closed once their outcomes are surely published.
    closed: list[str] = field(default_factory=list)
    whole: bool = False  # the whole ledger was read (its first start with the lists), not the open work alone


# What a staff look-up reads of a membership and of a job: no address, name, merge value or content.
_MEMBERSHIP_FIELDS = {"subscriber_id": 1, "list_id": 1, "status": 1, "erased_at": 1}
_LOOKUP_JOB_FIELDS = {"kind": 1, "account_id": 1, "campaign_id": 1, "subscriber_id": 1, "list_id": 1, "created_at": 1,
                      "next_attempt_at": 1, "in_doubt": 1}
_JOB_FIELDS = {"kind": 1, "account_id": 1, "campaign_id": 1, "subscriber_id": 1, "recipient": 1}
_READ_AHEAD_BATCH, _READ_AHEAD_BATCHES = 1000, 4


def _campaign_key(job: Document) -> str | None:
    """The campaign a job is listed under (JOB_INDEX), or None for a job that is kept open instead."""
    return scoped(job["account_id"], job["campaign_id"]) if job["kind"] == "campaign" else None


def erasable_by(job: Document) -> str | None:
    """The subscriber whose erasure must reach this job: the one whose address it keeps (a confirmation), or the
    one a notice to the customer names (`about_subscriber_id`); None for the others (a campaign job holds no
    address: the member is read when it is sent)."""
    if not job.get("recipient"):
        return None
    return job.get("subscriber_id") or job.get("about_subscriber_id")


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


class _OutOfOrder(Exception):
    """Jobs and outcomes did not come in the order the start-up fold's merge needs."""


async def _by_id(collection: AsyncCollection[Document], fields: Document) -> AsyncGenerator[Document, None]:
    """Every document with a string `_id`, in `_id` order (an `_id` range, which FerretDB reads by its index).
    Read ahead by a task of its own, a few thousand documents at most, so that the two collections the fold
    merges are read at once rather than in turns."""
    ahead: asyncio.Queue[list[Document] | BaseException | None] = asyncio.Queue(maxsize=_READ_AHEAD_BATCHES)

    async def read() -> None:
        try:
            batch: list[Document] = []
            async for doc in collection.find({"_id": {"$gte": ""}}, fields).sort("_id", ASCENDING):
                batch.append(doc)
                if len(batch) == _READ_AHEAD_BATCH:
                    await ahead.put(batch)
                    batch = []
            await ahead.put(batch)
            await ahead.put(None)
        except Exception as exc:  # handed to the reader, which raises it
            await ahead.put(exc)

    reader = asyncio.create_task(read(), name=f"read {collection.name} in _id order")
    try:
        while (batch := await ahead.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            for doc in batch:
                yield doc
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def _later(current: _LastOutcome | None, recorded: Document) -> _LastOutcome:
    """A message's last outcome so far, given one more recorded (a later attempt, or the final one of it)."""
    if current is not None and (recorded["attempt"], recorded["final"]) <= (current[0], current[1]):
        return current
    if recorded["final"]:
        return recorded["attempt"], True, domain.final_result(recorded["outcome"], recorded.get("reason"))
    return (recorded["attempt"], False, recorded.get("first_attempt_at"), recorded["next_attempt_at"],
            recorded["recorded_at"])


@dataclass
class _Listing:
    """Where the whole ledger is read to list it: the job ids of each campaign not announced finished, and the
    jobs holding an address (RECIPIENT_JOBS)."""

    announced: set[str]
    ids: dict[str, list[str]] = field(default_factory=dict)
    holding: list[Document] = field(default_factory=list)
    full: bool = False  # a list holds LOAD_CHUNK ids: `take` them and write them

    def add(self, job: Document) -> None:
        if (key := _campaign_key(job)) is not None and key not in self.announced:
            ids = self.ids.setdefault(key, [])
            ids.append(str(job["_id"]))
            self.full = self.full or len(ids) >= LOAD_CHUNK
        if erasable_by(job) is not None:
            self.holding.append(job)
            self.full = self.full or len(self.holding) >= LOAD_CHUNK

    def take(self) -> tuple[dict[str, list[str]], list[Document]]:
        """The lists that are full, handed over to be written (so the fold holds at most a chunk of each)."""
        taken = {key: ids for key, ids in self.ids.items() if len(ids) >= LOAD_CHUNK}
        for key in taken:
            del self.ids[key]
        holding, self.holding = (self.holding, []) if len(self.holding) >= LOAD_CHUNK else ([], self.holding)
        self.full = False
        return taken, holding


def _judge(fold: LedgerFold, unfinished: list[tuple[str, _LastOutcome | None]], job: Document,
           last: _LastOutcome | None, listing: _Listing | None = None) -> None:
    """A finished job counts toward its campaign's end; an unfinished one is kept, with its last deferral."""
    if listing is not None:
        listing.add(job)
    if last is not None and last[1]:
        result = last[2]
        if job["kind"] == "campaign" and result is not None:
            counts = fold.finished.setdefault(scoped(job["account_id"], job["campaign_id"]), {})
            counts[result] = counts.get(result, 0) + 1
        return
    unfinished.append((job["_id"], last))


class DeliveryStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.jobs = db[JOBS]
        self._active = SecondaryIndex(db[ACTIVE_MEMBERS], active_key)
        self._group_commit = GroupCommit(db[OUTCOMES], self._write_sent_counts)
        self._sent_written: dict[tuple[str, str], int] = {}  # the counts as last written (never lowered)
        # Open campaigns whose `job_buckets` and OPEN_CAMPAIGNS documents this process wrote (dropped when closed).
        self._buckets: set[str] = set()
        self._listed = False  # LEDGER_LISTED seen (it is never unset)
        self._campaigns_listed = False  # CAMPAIGNS_LISTED seen (never unset)
        self._listing_campaigns = asyncio.Lock()

    async def ensure_indexes(self) -> None:
        await self.db[OUTCOMES].create_index([("message_id", ASCENDING)])

    # Audience

    async def list_deleted(self, account_id: str, list_id: str) -> bool:
        doc = await self.db[LISTS].find_one({"_id": scoped(account_id, list_id)})
        return bool(doc and doc.get("deleted"))

    async def deleted_lists(self, lists: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of these (account, list) pairs, the lists deleted."""
        found = await load(self.db[LISTS], (scoped(a, list_id) for a, list_id in lists))
        return {(a, list_id) for a, list_id in lists if found.get(scoped(a, list_id), {}).get("deleted")}

    async def list_members(self, account_id: str, list_id: str) -> AsyncIterator[Member]:
        """The list's active members: their listing read as an `_id` range, a page at a time, then the
        members of each page by `_id`."""
        async for keys in self._active_pages(account_id, list_id):
            found = await load(self.db[MEMBERS], (scoped(account_id, k.rsplit("/", 1)[1]) for k in keys))
            for key in keys:
                doc = found.get(scoped(account_id, key.rsplit("/", 1)[1]))
                if doc is not None and active_key(doc) == key:
                    yield member_from(doc)

    async def active_member_ids(self, account_id: str, list_id: str) -> AsyncIterator[list[str]]:
        """The subscriber ids of the list's active members, a page at a time, from the listing alone (as of
        the audience projection's last flush: it writes the listing and the members in one batch)."""
        async for keys in self._active_pages(account_id, list_id):
            yield [k.rsplit("/", 1)[1] for k in keys]

    async def _active_pages(self, account_id: str, list_id: str) -> AsyncIterator[list[str]]:
        after: str | None = None
        while True:
            keys = await self._active.keys(account_id, list_id, after=after, limit=EXPANSION_PAGE)
            if keys:
                yield keys
            if len(keys) < EXPANSION_PAGE:
                return
            after = keys[-1]

    async def members(self, account_id: str, subscriber_ids: Sequence[str]) -> dict[str, Member]:
        found = await load(self.db[MEMBERS], (scoped(account_id, s) for s in subscriber_ids))
        return {doc["subscriber_id"]: member_from(doc) for doc in found.values()}

    # Accounts and campaigns (written only by the control consumer, which folds them in memory)

    async def all_accounts(self) -> list[AccountState]:
        return [account_from(doc) async for doc in self.db[ACCOUNTS].find({})]

    async def accounts(self, account_ids: Collection[str]) -> dict[str, AccountState]:
        """These accounts as stored (absent ones missing)."""
        return {key: account_from(doc) for key, doc in (await load(self.db[ACCOUNTS], account_ids)).items()}

    async def save_accounts(self, states: Sequence[AccountState]) -> None:
        ops: list[WriteOp] = []
        for state in states:
            doc: dict[str, Any] = asdict(state)
            doc["blocked_reasons"] = sorted(state.blocked_reasons)
            if state.allowance is not None:
                doc["allowance"]["counts"] = list(state.allowance.counts)
            ops.append(ReplaceOne({"_id": state.account_id}, doc, upsert=True))
        await bulk_write(self.db[ACCOUNTS], ops)

    async def campaign(self, account_id: str, campaign_id: str) -> Document | None:
        return await self.db[CAMPAIGNS].find_one({"_id": scoped(account_id, campaign_id)})

    async def campaign_flow(self, account_id: str, campaign_id: str) -> MessageFlow | None:
        """The campaign's flow (`MessageFlow`), or None (unknown, or queued before its flow was kept)."""
        doc = await self.db[CAMPAIGNS].find_one({"_id": scoped(account_id, campaign_id)}, {"flow": 1})
        return MessageFlow.from_document(doc) if doc is not None else None

    async def save_campaigns(self, docs: Sequence[Document]) -> None:
        """Listed open first when queued: a crash before the document leaves a listed key a start passes over."""
        if queued := [{"_id": d["_id"]} for d in docs if d.get("queued_at") is not None]:
            await insert_new(self.db[OPEN_CAMPAIGNS], queued)
        await bulk_write(self.db[CAMPAIGNS], [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs])

    async def campaign_states(self, keys: Collection[str]) -> dict[str, CampaignState]:
        """The states of these campaigns (`account:campaign`) as stored (absent ones missing)."""
        found = await load(self.db[CAMPAIGNS], keys, {"state": 1})
        return {key: CampaignState(**doc["state"]) for key, doc in found.items()}

    async def save_campaign_states(self, docs: Sequence[Document]) -> None:
        """Each campaign's state alone (the rest of its document is its expansion's)."""
        await bulk_write(self.db[CAMPAIGNS], [UpdateOne({"_id": d["_id"]}, {"$set": {
            "account_id": d["account_id"], "state": d["state"]}}, upsert=True) for d in docs])

    async def test_send(self, account_id: str, test_id: str) -> Document | None:
        return await self.db[TESTS].find_one({"_id": scoped(account_id, test_id)})

    async def save_test_send(self, doc: Document) -> None:
        await self.db[TESTS].replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def mark_expanded(self, account_id: str, campaign_id: str, jobs: int, token: str) -> None:
        """The campaign's expansion has written every job (`jobs` of them): it can end once they have. Only
        while the campaign still waits for this expansion (`token`): if it was queued again meanwhile, the
        newer expansion says so."""
        await self.db[CAMPAIGNS].update_one({"_id": scoped(account_id, campaign_id), "expansion_pending": token}, {
            "$set": {"expanded_jobs": jobs}, "$unset": {"expansion_pending": "", "expansion_failed": ""}})

    async def expansion_failed(self, account_id: str, campaign_id: str, reason: str) -> None:
        """Why the campaign's expansion was given up (until the next start tries it again)."""
        stored = reason.replace("\0", "\\0")[:MAX_REASON_CHARS]  # the store refuses a NUL
        await self.db[CAMPAIGNS].update_one({"_id": scoped(account_id, campaign_id)},
                                            {"$set": {"expansion_failed": stored}})

    async def expansions(self) -> dict[str, int]:
        """The open campaigns whose expansion wrote every job, with how many (read once, at start-up, by `_id`)."""
        found = await load(self.db[CAMPAIGNS], await self.open_campaigns(), {"expanded_jobs": 1})
        return {key: int(doc["expanded_jobs"]) for key, doc in found.items() if "expanded_jobs" in doc}

    async def finished_campaigns(self) -> list[Document]:
        """The announcements of the open campaigns: recorded, and not published or not yet closed (a stop or
        crash in between); read once, at start-up, by `_id`."""
        return list((await load(self.db[FINISHED_CAMPAIGNS], await self.open_campaigns())).values())

    async def announcement(self, key: str) -> bool | None:
        """Whether the campaign's end was announced: None if never, else whether its event was published."""
        doc = await self.db[FINISHED_CAMPAIGNS].find_one({"_id": key}, {"published": 1})
        return None if doc is None else bool(doc.get("published"))

    async def close_campaign(self, key: str) -> None:
        """Its CampaignDeliveryFinished is published: no start needs to read anything of it again."""
        await self.db[OPEN_CAMPAIGNS].delete_one({"_id": key})
        self._buckets.discard(key)

    async def open_campaigns(self) -> list[str]:
        """The open campaigns' keys (a database written before the listing is listed first, once)."""
        if not self._campaigns_listed:
            async with self._listing_campaigns:
                if not self._campaigns_listed:
                    if await self.db[SENDER_STATE].find_one({"_id": CAMPAIGNS_LISTED}) is None:
                        await self._list_open_campaigns()
                    self._campaigns_listed = True
        return [str(doc["_id"]) async for doc in self.db[OPEN_CAMPAIGNS].find({}, {"_id": 1})]

    async def _list_open_campaigns(self) -> None:
        """Once, on a database of a version before the listing: what that version read at every start (every
        campaign queued, every campaign with jobs), less the campaigns whose end is published, listed a thousand
        at a time (announcements looked up by `_id`), then marked listed. Interrupted, it is done again."""
        candidates: list[str] = []

        async def list_part() -> None:
            published = await load(self.db[FINISHED_CAMPAIGNS], candidates, {"published": 1})
            if part := [{"_id": key} for key in candidates if not published.get(key, {}).get("published")]:
                await insert_new(self.db[OPEN_CAMPAIGNS], part)
            candidates.clear()

        listed = 0
        for name, fields in ((CAMPAIGNS, {"queued_at": 1}), (JOB_BUCKETS, {"_id": 1})):
            async for doc in self.db[name].find({}, fields):
                if name == CAMPAIGNS and doc.get("queued_at") is None:
                    continue  # never queued: no message, nothing to end
                candidates.append(str(doc["_id"]))
                listed += 1
                if len(candidates) >= LOAD_CHUNK:
                    await list_part()
        await list_part()
        await self.db[SENDER_STATE].update_one({"_id": CAMPAIGNS_LISTED}, {"$set": {"at": datetime.now(UTC)}},
                                               upsert=True)
        log.info("the open campaigns were listed once", extra={"campaigns_read": listed})

    async def record_finished(self, doc: Document) -> Document:
        """Write the announcement of a campaign's end before it is published; returns the one stored (the
        first written, should it exist already)."""
        if await insert_new(self.db[FINISHED_CAMPAIGNS], [doc]):
            stored = await self.db[FINISHED_CAMPAIGNS].find_one({"_id": doc["_id"]})
            assert stored is not None
            return stored
        return doc

    async def mark_finished_published(self, key: str) -> None:
        await self.db[FINISHED_CAMPAIGNS].update_one({"_id": key}, {"$set": {"published": True}})

    async def campaigns_at_start(self, flows: dict[str, MessageFlow] | None = None,
                                 ) -> tuple[dict[str, CampaignState], list[Document]]:
        """The open campaigns' states, and those whose expansion a stop or crash interrupted (oldest first):
        one read by `_id` at start-up, without their content. Any other campaign is read when an event names it.
        `flows`, when given, gets the flow of each open campaign that keeps one (`MessageFlow`)."""
        states: dict[str, CampaignState] = {}
        pending: list[Document] = []
        found = await load(self.db[CAMPAIGNS], await self.open_campaigns(), {"content": 0, "links": 0})
        for doc in found.values():  # a key listed by a CampaignQueued whose document a crash kept out: passed over
            states[doc["_id"]] = CampaignState(**doc["state"])
            if flows is not None and (flow := MessageFlow.from_document(doc)) is not None:
                flows[doc["_id"]] = flow
            if "expansion_pending" in doc:
                pending.append(doc)
        return states, sorted(pending, key=lambda doc: doc["queued_at"])

    # Staff look-ups (README, "Staff look-ups"): one person's messages, found by keys alone

    async def memberships(self, account_id: str, *, subscriber_id: str | None = None,
                          email_sha256: str | None = None) -> tuple[list[Document], datetime | None]:
        """The memberships a look-up names, by subscriber id or by every membership of the address (`addresses`,
        by account and hash): their ids, lists, statuses and erasure times, never their address or merge values;
        and, by the address, when memberships of it were last erased (an erased one is no longer listed there)."""
        erased_at = None
        if subscriber_id is not None:
            ids = [subscriber_id]
        else:
            doc = await self.db[ADDRESSES].find_one({"_id": compose(account_id, str(email_sha256))})
            ids = list(doc["members"]) if doc else []
            erased_at = doc.get("erased_at") if doc else None
        found = await load(self.db[MEMBERS], [scoped(account_id, s) for s in ids], _MEMBERSHIP_FIELDS)
        return sorted(found.values(), key=lambda doc: str(doc["subscriber_id"])), erased_at

    async def refused_test_recipients(self, account_id: str, addresses: Collection[str]) -> dict[str, str]:
        """Of these addresses (as the contract hashes them: lower-cased), those a test send may not go to, with
        why: `address_suppressed` (the account suppressed it: a hard bounce or a complaint) or
        `address_unsubscribed` (every membership of it ended by the person's unsubscribe). An address the account
        holds no membership of (a colleague's) may be sent tests. Read by keys: the addresses, then their
        memberships."""
        keys = {compose(account_id, hashlib.sha256(a.lower().encode()).hexdigest()): a for a in addresses}
        found = await load(self.db[ADDRESSES], keys)
        member_ids = {scoped(account_id, m) for doc in found.values() for m in doc.get("members", ())}
        members = await load(self.db[MEMBERS], member_ids, {"status": 1, "opted_out": 1}) if member_ids else {}
        refused: dict[str, str] = {}
        for key, doc in found.items():
            held = [members[m] for m in (scoped(account_id, m) for m in doc.get("members", ())) if m in members]
            # An erased membership counts only by the opt-out it keeps (the person is otherwise forgotten).
            statuses = [("unsubscribed" if m.get("opted_out") else None) if m["status"] == "erased" else m["status"]
                        for m in held] + (["unsubscribed"] if doc.get("opted_out") else [])
            if doc.get("suppressed") or "suppressed" in statuses:
                refused[keys[key]] = "address_suppressed"
            elif "unsubscribed" in statuses and all(s in ("unsubscribed", None) for s in statuses):
                refused[keys[key]] = "address_unsubscribed"
        return refused

    async def queued_campaigns(self, account_id: str) -> list[QueuedCampaign]:
        """Every campaign of the account that was queued (only those have messages): an `_id` range, without
        their content."""
        found = self.db[CAMPAIGNS].find({"_id": scoped_range(account_id)}, {"state": 1, "queued_at": 1})
        return [QueuedCampaign(str(doc["_id"]).partition(":")[2], doc["queued_at"], CampaignState(**doc["state"]))
                async for doc in found if doc.get("queued_at") is not None]

    async def ledger_jobs(self, message_ids: Collection[str]) -> dict[str, Document]:
        """These jobs by `_id`, as a look-up shows them: never the address or content a confirmation keeps."""
        return await load(self.jobs, message_ids, _LOOKUP_JOB_FIELDS)

    async def attempts(self, message_ids: Sequence[str]) -> dict[str, list[Document]]:
        """Every recorded attempt of these messages, in order, by `_id`: `<message id>:1`, then `:2` of those
        whose first was not final, and so on."""
        found: dict[str, list[Document]] = {message_id: [] for message_id in message_ids}
        asking, attempt = list(message_ids), 1
        while asking:
            recorded = await load(self.db[OUTCOMES], [f"{m}:{attempt}" for m in asking], {"outcome_event": 0})
            for doc in recorded.values():
                found[doc["message_id"]].append(doc)
            asking = [m for m in asking if not recorded.get(f"{m}:{attempt}", {"final": True})["final"]]
            attempt += 1
        return found

    async def reported_bounces(self, message_ids: Collection[str]) -> dict[str, list[str]]:
        """The bounce classes reports to the inbound server gave these messages (`bounce_reports`, by the event
        ids they were published with)."""
        names = {str(domain.inbound_bounce_event_id(m, c)): (m, c) for m in message_ids for c in domain.BOUNCE_CLASSES}
        reported: dict[str, list[str]] = {}
        for key in await load(self.db[BOUNCE_REPORTS], names, {"_id": 1}):
            message_id, bounce_class = names[key]
            reported.setdefault(message_id, []).append(bounce_class)
        return reported

    async def confirmation_jobs(self, account_id: str, subscriber_ids: Sequence[str], most: int) -> list[Document]:
        """The newest `most` confirmation emails of these subscribers, found by their RECIPIENT_JOBS keys (an `_id`
        range each; an erasure deletes the keys with the address, and a ledger not listed yet has none of the
        jobs written before its first start with the lists)."""
        ids: list[str] = []
        for subscriber_id in subscriber_ids:
            keys = prefix_range(scoped(account_id, subscriber_id))
            ids += [str(doc["_id"]).rpartition("/")[2] async for doc in self.db[RECIPIENT_JOBS].find({"_id": keys})]
        jobs = await load(self.jobs, ids, _LOOKUP_JOB_FIELDS)
        confirmations = [job for job in jobs.values() if job["kind"] == "confirmation"]
        return sorted(confirmations, key=lambda job: (job["created_at"], job["_id"]), reverse=True)[:most]

    # The job ledger

    async def add_jobs(self, docs: Sequence[Document]) -> list[Document]:
        """Insert jobs whose message id is new; returns those (a job that exists is left as it is). Listed
        first, so a start finds them (see JOB_INDEX)."""
        by_campaign: dict[str, list[str]] = {}
        others: list[Document] = []
        for doc in docs:
            if (key := _campaign_key(doc)) is not None:
                by_campaign.setdefault(key, []).append(str(doc["_id"]))
            else:
                others.append({"_id": doc["_id"], "account_id": doc["account_id"]})
        await asyncio.gather(self._list_jobs(by_campaign, others), self._list_recipients(docs))
        existing = await insert_new(self.jobs, docs)
        return [doc for doc in docs if str(doc["_id"]) not in existing]

    async def _list_jobs(self, by_campaign: dict[str, list[str]], others: Sequence[Document]) -> None:
        """Each campaign's job ids (one `job_index` document per campaign and call, its `_id` a digest of the
        ids, so writing the same list again changes nothing), its bucket once, and an open document for each
        other job."""
        buckets = [key for key in by_campaign if key not in self._buckets]
        writes = []
        if buckets:
            writes.append(insert_new(self.db[JOB_BUCKETS], [{"_id": key} for key in buckets]))
            # A campaign with jobs is open (already listed by its CampaignQueued, but for jobs written otherwise).
            writes.append(insert_new(self.db[OPEN_CAMPAIGNS], [{"_id": key} for key in buckets]))
        lists = [{"_id": compose(key, _digest(part)), "ids": part} for key, ids in by_campaign.items()
                 for part in (ids[start:start + LOAD_CHUNK] for start in range(0, len(ids), LOAD_CHUNK))]
        if lists:
            writes.append(insert_new(self.db[JOB_INDEX], lists))
        if others:
            writes.append(insert_new(self.db[OPEN_JOBS], list(others)))
        await asyncio.gather(*writes)
        self._buckets.update(buckets)

    async def _list_recipients(self, docs: Sequence[Document]) -> None:
        """The jobs among these that hold a subscriber's address (RECIPIENT_JOBS)."""
        holding = [{"_id": compose(scoped(doc["account_id"], subscriber), str(doc["_id"]))} for doc in docs
                   if (subscriber := erasable_by(doc)) is not None]
        if holding:
            await insert_new(self.db[RECIPIENT_JOBS], holding)

    async def _write_listing(self, lists: dict[str, list[str]], holding: Sequence[Document]) -> None:
        await asyncio.gather(self._list_jobs(lists, []), self._list_recipients(holding))

    async def close_jobs(self, message_ids: Sequence[str]) -> None:
        """Jobs other than a campaign's whose final outcome is published: a start need not read them again."""
        for start in range(0, len(message_ids), LOAD_CHUNK):
            await self.db[OPEN_JOBS].delete_many({"_id": {"$in": list(message_ids[start:start + LOAD_CHUNK])}})

    async def open_claim(self, claim: str, message_ids: Sequence[str], now: datetime) -> None:
        """Record, in one insert, that these jobs are being sent: after a crash they are in doubt."""
        await self.db[CLAIMS].insert_one({"_id": claim, "message_ids": list(message_ids), "at": now})

    async def record(self, outcome: Document) -> None:
        """Append one attempt's outcome (`_id` = message id and attempt, so a repeat is a no-op)."""
        await self._group_commit.insert(outcome)

    async def _write_sent_counts(self, outcomes: list[Document]) -> None:
        """The counts the round's counted outcomes made, each account's highest per kind (a round retried after
        a failure may hold lower ones than a later round wrote: never written back over them)."""
        highest: dict[tuple[str, str], int] = {}
        for doc in outcomes:
            if (kind := doc.get("counted_kind")) is not None:
                key = (str(doc["account_id"]), str(kind))
                highest[key] = max(highest.get(key, 0), int(doc["counted_total"]))
        await self.save_sent_counts({key: count for key, count in highest.items()
                                     if count > self._sent_written.get(key, -1)})

    async def save_sent_counts(self, counts: dict[tuple[str, str], int]) -> None:
        by_account: dict[str, dict[str, int]] = {}
        for (account_id, kind), count in counts.items():
            by_account.setdefault(account_id, {})[kind] = count
        if not by_account:
            return
        await bulk_write(self.db[SENT_COUNTS], [UpdateOne({"_id": account_id}, {"$set": kinds}, upsert=True)
                                                for account_id, kinds in sorted(by_account.items())])
        for key, count in counts.items():
            self._sent_written[key] = max(self._sent_written.get(key, 0), count)

    async def account_sent_counts(self, account_id: str) -> dict[str, int]:
        """One account's counts as stored (by `_id`), for a look-up."""
        doc = await self.db[SENT_COUNTS].find_one({"_id": account_id})
        return {kind: int(count) for kind, count in (doc or {}).items() if kind != "_id"}

    async def sent_counts(self) -> dict[tuple[str, str], int]:
        """Every account's counts as stored (one small document per account that ever sent)."""
        counts: dict[tuple[str, str], int] = {}
        async for doc in self.db[SENT_COUNTS].find({}):
            for kind, count in doc.items():
                if kind != "_id":
                    counts[(str(doc["_id"]), kind)] = int(count)
        self._sent_written.update(counts)
        return counts

    async def load_pending(self, keep: Callable[[Document], Document] | None = None) -> LedgerFold:
        """The ledger folded at start-up: jobs without a final outcome (with their attempt count and next
        attempt time), and among them those in doubt: claimed after their last recorded outcome, i.e. the
        process died during their SMTP transaction; how the other messages of each campaign not announced
        finished ended; and the outcomes maybe unpublished.

        Only the work that may be unfinished is read (see JOB_INDEX): the jobs of the campaigns not announced
        finished and the other jobs still open, and their outcomes, by `_id`. So a start costs what is in
        flight, not the history. A ledger not listed yet (written before the lists existed) is read whole
        once (`_fold_whole_ledger`), and what is open in it listed. Unfinished jobs are read whole by `_id`, a
        thousand at a time, each kept as `keep` makes it (the sender's queue keeps a compact copy)."""
        claimed_at: dict[str, datetime] = {}
        async for claim in self.db[CLAIMS].find({}):
            for message_id in claim["message_ids"]:
                claimed_at[message_id] = max(claim["at"], claimed_at.get(message_id, claim["at"]))
        if await self.db[SENDER_STATE].find_one({"_id": LEDGER_LISTED}) is None:
            announced = {str(doc["_id"]) async for doc in self.db[FINISHED_CAMPAIGNS].find({}, {"_id": 1})}
            return await self._fold_whole_ledger(announced, claimed_at, keep)
        open_keys = await self.open_campaigns()
        announced = set(await load(self.db[FINISHED_CAMPAIGNS], open_keys, {"_id": 1}))
        fold, unfinished = await self._fold_open_work([key for key in open_keys if key not in announced])
        await self._take_unfinished(fold, unfinished, claimed_at, keep)
        return fold

    async def _fold_open_work(self, campaigns: Sequence[str]) -> tuple[LedgerFold,
                                                                       list[tuple[str, _LastOutcome | None]]]:
        """The listed jobs of these campaigns (open, not announced finished), and the open other jobs, judged by
        their outcomes (read by `_id`: message id and attempt)."""
        published = await self.db[SENDER_STATE].find_one({"_id": "published"})
        since = published["before"] if published is not None else None
        fold = LedgerFold()
        unfinished: list[tuple[str, _LastOutcome | None]] = []
        recent: list[str] = []
        for key in campaigns:
            account_id, _, campaign_id = key.partition(":")
            ids = {message_id async for doc in self.db[JOB_INDEX].find({"_id": prefix_range(key)})
                   for message_id in doc["ids"]}
            job = {"kind": "campaign", "account_id": account_id, "campaign_id": campaign_id}
            for message_id, last in await self._last_outcomes(sorted(ids), since, recent):
                _judge(fold, unfinished, {**job, "_id": message_id}, last)
        others = [str(doc["_id"]) async for doc in self.db[OPEN_JOBS].find({}, {"_id": 1})]
        for message_id, last in await self._last_outcomes(others, since, recent):
            if last is not None and last[1]:
                fold.closed.append(message_id)
            else:
                unfinished.append((message_id, last))
        found = await load(self.db[OUTCOMES], recent, {"outcome_event": 1, "recorded_at": 1, **_COUNTED_FIELDS})
        fold.republish = sorted((doc for doc in found.values() if "outcome_event" in doc),
                                key=lambda doc: (doc["recorded_at"], doc["_id"]))
        return fold, unfinished

    async def _last_outcomes(self, message_ids: Sequence[str], since: datetime | None,
                             recent: list[str]) -> list[tuple[str, _LastOutcome | None]]:
        """Each message's last outcome (None: never tried), asked attempt by attempt (`<id>:1`, then `<id>:2` of
        those deferred, ...), a few thousand messages at a time. The outcomes recorded at or after `since` (all,
        when None) are added to `recent`."""
        judged: list[tuple[str, _LastOutcome | None]] = []
        for start in range(0, len(message_ids), 5 * LOAD_CHUNK):
            chunk = message_ids[start:start + 5 * LOAD_CHUNK]
            last: dict[str, _LastOutcome] = {}
            asking, attempt = list(chunk), 1
            while asking:
                found = await load(self.db[OUTCOMES], [f"{m}:{attempt}" for m in asking], _OUTCOME_FIELDS)
                for doc in found.values():
                    last[doc["message_id"]] = _later(last.get(doc["message_id"]), doc)
                    if since is None or doc["recorded_at"] >= since:
                        recent.append(doc["_id"])
                # A deferral is followed by the next attempt's outcome, if any; a final outcome by none.
                asking = [m for m in asking if f"{m}:{attempt}" in found and not last[m][1]]
                attempt += 1
            judged.extend((m, last.get(m)) for m in chunk)
        return judged

    async def _take_unfinished(self, fold: LedgerFold, unfinished: list[tuple[str, _LastOutcome | None]],
                               claimed_at: dict[str, datetime],
                               keep: Callable[[Document], Document] | None) -> None:
        """The unfinished jobs read whole, with their last deferral; in doubt when claimed after it."""
        for start in range(0, len(unfinished), 1000):
            chunk = unfinished[start:start + 1000]
            found = await load(self.jobs, (message_id for message_id, _ in chunk))
            for message_id, deferral in chunk:
                if (pending := found.get(message_id)) is None:
                    continue  # purged meanwhile, or listed by an insert a crash interrupted
                if deferral is not None:
                    pending.update(attempts=deferral[0], first_attempt_at=deferral[2], next_attempt_at=deferral[3])
                if keep is not None:
                    pending = keep(pending)
                fold.pending.append(pending)
                claimed = claimed_at.get(message_id)
                # Strictly later: MongoDB keeps milliseconds, and an attempt's outcome can land in the same
                # millisecond as its own claim; a re-claim after a deferral is seconds later.
                if claimed is not None and (deferral is None or claimed > deferral[4]):
                    fold.in_doubt.append(pending)

    async def _fold_whole_ledger(self, announced: set[str], claimed_at: dict[str, datetime],
                                 keep: Callable[[Document], Document] | None) -> LedgerFold:
        """Every job and outcome, once, for a ledger not listed yet: folded as before the lists existed, then
        what is open in it listed (the jobs of each campaign not announced finished, the other unfinished
        jobs), then marked listed. Jobs and outcomes are read side by side in `_id` order (an outcome's `_id`
        is its message id and attempt), so a message is judged when its outcomes have been read and only the
        unfinished ones are kept. Should the two orders not agree (ids that are not the uuids Herald writes),
        every finished message's id and how it ended is held until the jobs are read (~0.2 KB a message)."""
        listing = _Listing(announced)
        try:
            fold, unfinished = await self._fold_in_id_order(listing)
        except _OutOfOrder as exc:
            log.warning("the ledger is folded holding every finished message (slower, more memory): %s", exc)
            listing = _Listing(announced)
            fold, unfinished = await self._fold_unordered(listing)
        await self._take_unfinished(fold, unfinished, claimed_at, keep)
        fold.republish = await self.outcomes_to_republish()
        fold.whole = True
        await self._list_jobs(listing.ids, [{"_id": job["_id"], "account_id": job["account_id"]}
                                            for job in fold.pending if job["kind"] != "campaign"])
        await self._list_recipients(listing.holding)
        await self.db[SENDER_STATE].update_one({"_id": LEDGER_LISTED}, {"$set": {"at": datetime.now(UTC)}},
                                               upsert=True)
        log.info("the ledger was read whole once and its open work listed",
                 extra={"campaigns": len(listing.ids), "pending": len(fold.pending)})
        return fold

    async def _fold_in_id_order(self, listing: _Listing) -> tuple[LedgerFold, list[tuple[str, _LastOutcome | None]]]:
        """Jobs and outcomes merged in `_id` order: each job with its outcomes, read just before the next job's.
        Raises _OutOfOrder when a stream is not in the order the merge needs (then nothing is returned)."""
        expected = await self.jobs.estimated_document_count()
        fold = LedgerFold()
        unfinished: list[tuple[str, _LastOutcome | None]] = []
        async with aclosing(_by_id(self.db[OUTCOMES], _OUTCOME_FIELDS)) as outcomes, \
                aclosing(_by_id(self.jobs, _JOB_FIELDS)) as job_docs:
            recorded = await anext(outcomes, None)
            previous_job = previous_outcome = ""
            jobs = 0
            async for job in job_docs:
                message_id = job["_id"]
                if message_id <= previous_job:
                    raise _OutOfOrder(f"job {message_id!r} read after {previous_job!r}")
                previous_job = message_id
                jobs += 1
                last: _LastOutcome | None = None
                while recorded is not None and recorded["message_id"] <= message_id:
                    if recorded["message_id"] < previous_outcome:
                        raise _OutOfOrder(f"an outcome of {recorded['message_id']!r} after {previous_outcome!r}'s")
                    previous_outcome = recorded["message_id"]
                    if previous_outcome == message_id:  # else an outcome whose job was purged
                        last = _later(last, recorded)
                    recorded = await anext(outcomes, None)
                _judge(fold, unfinished, job, last, listing)
                if listing.full:
                    await self._write_listing(*listing.take())
            while recorded is not None:  # outcomes of no job still read, for the order's sake
                if recorded["message_id"] < previous_outcome:
                    raise _OutOfOrder(f"an outcome of {recorded['message_id']!r} after {previous_outcome!r}'s")
                previous_outcome = recorded["message_id"]
                recorded = await anext(outcomes, None)
        if jobs < expected:
            raise _OutOfOrder(f"{jobs} jobs read by string `_id`, {expected} in the collection")
        return fold, unfinished

    async def _fold_unordered(self, listing: _Listing) -> tuple[LedgerFold, list[tuple[str, _LastOutcome | None]]]:
        """Every finished message's last outcome held while the jobs are read, in whatever order they come."""
        last: dict[str, _LastOutcome] = {}
        async for recorded in self.db[OUTCOMES].find({}, _OUTCOME_FIELDS):
            found = _later(last.get(recorded["message_id"]), recorded)
            last[recorded["message_id"]] = found
        fold = LedgerFold()
        unfinished: list[tuple[str, _LastOutcome | None]] = []
        async for job in self.jobs.find({}, _JOB_FIELDS):
            _judge(fold, unfinished, job, last.pop(job["_id"], None), listing)
            if listing.full:
                await self._write_listing(*listing.take())
        return fold, unfinished

    async def mark_in_doubt(self, message_ids: Sequence[str]) -> None:
        """Kept on the job for look-ups ("was it sent twice?"); written once, at start-up."""
        for start in range(0, len(message_ids), 500):
            await self.jobs.update_many({"_id": {"$in": list(message_ids[start:start + 500])}},
                                        {"$set": {"in_doubt": True}})

    async def close_claims(self, claims: Sequence[str]) -> None:
        """Claims whose jobs are all done with (outcome recorded, or put back unsent): nothing of them is in doubt."""
        for start in range(0, len(claims), 1000):
            await self.db[CLAIMS].delete_many({"_id": {"$in": list(claims[start:start + 1000])}})

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
        return [d async for d in self.db[OUTCOMES].find(query, {"outcome_event": 1, **_COUNTED_FIELDS})]

    async def purge(self, account_id: str) -> None:
        """Retention: everything of the account. Members, lists, campaigns, test sends and finished campaigns
        are keyed `account:...`, the active members and addresses `account/...`; the ledger (jobs, outcomes) is
        keyed by message and found by its `account_id` field, a scan of both collections (and of the open jobs),
        once per purge."""
        for name in (MEMBERS, LISTS, CAMPAIGNS, TESTS, FINISHED_CAMPAIGNS, JOB_BUCKETS, JOB_INDEX, RECIPIENT_JOBS,
                     OPEN_CAMPAIGNS):
            await self.db[name].delete_many({"_id": scoped_range(account_id)})
        self._buckets = {key for key in self._buckets if not key.startswith(account_id + ":")}
        await self.db[OPEN_JOBS].delete_many({"account_id": account_id})
        await delete_by_account_prefix(self.db, account_id, (ACTIVE_MEMBERS, ADDRESSES, DKIM_KEYS, DKIM_SIGNING))
        await self.db[ACCOUNTS].delete_one({"_id": account_id})
        await self.db[SENT_COUNTS].delete_one({"_id": account_id})
        self._sent_written = {key: count for key, count in self._sent_written.items() if key[0] != account_id}
        await self.db[JOBS].delete_many({"account_id": account_id})
        await self.db[OUTCOMES].delete_many({"account_id": account_id})

    async def outcomes(self, query: Document) -> list[Document]:
        return [d async for d in self.db[OUTCOMES].find(query, {"outcome_event": 0})]

    async def bounces_reported(self, event_ids: Sequence[str]) -> set[str]:
        return set(await load(self.db[BOUNCE_REPORTS], event_ids))

    async def mark_bounces_reported(self, event_ids: Sequence[str]) -> None:
        await insert_new(self.db[BOUNCE_REPORTS], [{"_id": event_id} for event_id in event_ids])

    async def forget_recipient(self, account_id: str, subscriber_id: str) -> None:
        """Erasure: confirmation jobs hold the address, the customer's notices about a member name it; drop it
        from every job of this subscriber (the sender skips a job without a recipient). They are found by their
        RECIPIENT_JOBS keys (an `_id` range); on a ledger not listed yet (written by a version before them), by
        a scan of every job."""
        unset = {"$unset": {"recipient": "", "greeting_name": "", "text": "", "subject": ""}}
        if not self._listed and await self.db[SENDER_STATE].find_one({"_id": LEDGER_LISTED}) is None:
            await self.jobs.update_many({"account_id": account_id, "subscriber_id": subscriber_id}, unset)
            return
        self._listed = True
        keys = prefix_range(scoped(account_id, subscriber_id))
        ids = [str(doc["_id"]).rpartition("/")[2] async for doc in self.db[RECIPIENT_JOBS].find({"_id": keys})]
        for start in range(0, len(ids), LOAD_CHUNK):
            await self.jobs.update_many({"_id": {"$in": ids[start:start + LOAD_CHUNK]}}, unset)
        await self.db[RECIPIENT_JOBS].delete_many({"_id": keys})


class CustomerKeyStore:
    """The customer DKIM keys (sealed, as DkimKeyCreated carries them) and which of them signs (`customer_dkim`)."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db

    async def key(self, account_id: str, domain: str, added_id: str) -> Document | None:
        return await self.db[DKIM_KEYS].find_one({"_id": compose(account_id, domain, added_id)})

    async def add_key(self, doc: Document) -> Document:
        """The key of `doc` unless one is stored for its addition already: the stored one, first come, is returned."""
        key = compose(doc["account_id"], doc["domain"], doc["sending_domain_added_id"])
        await self.db[DKIM_KEYS].update_one({"_id": key}, {"$setOnInsert": doc}, upsert=True)
        stored = await self.db[DKIM_KEYS].find_one({"_id": key})
        assert stored is not None
        return stored

    async def keys_of(self, account_id: str, domain: str) -> list[Document]:
        return [d async for d in self.db[DKIM_KEYS].find({"_id": prefix_range(account_id, domain)})]

    async def sign_with(self, account_id: str, domain: str, selector: str, public_key: str, at: datetime) -> None:
        await self.db[DKIM_SIGNING].update_one({"_id": compose(account_id, domain)}, {"$set": {
            "account_id": account_id, "domain": domain, "selector": selector, "public_key": public_key,
            "verified_at": at}}, upsert=True)

    async def stop_signing(self, account_id: str, domain: str) -> None:
        await self.db[DKIM_SIGNING].delete_one({"_id": compose(account_id, domain)})

    async def signing(self) -> list[Document]:
        """Every domain signed with a customer key: read once, at start (one small document per domain)."""
        return [d async for d in self.db[DKIM_SIGNING].find({})]
