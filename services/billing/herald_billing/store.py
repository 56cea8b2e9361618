"""Billing's read model in MongoDB, folded from events, and the reads the API and the clock need; every read
and write by `_id` or an `_id` range.

From herald.billing: `accounts` (`account`), `users` (`username`, unique across Herald), `ended_sessions` (`session
id`), `keys` (`account/key`: the account's API keys, for listing; authentication reads `herald_shared.apikeys`),
`audit` (`account/time/event`: logins, failed attempts, password changes, cancellations and their withdrawals,
billing details changed, staff access; staff access and refused API keys from the other services too). Listings kept
as the accounts fold (`SecondaryIndex`): `review` (`opened time/account`, the staff queue, oldest first), and what
the clock reads up to now, each `due time/account`: `trials` (trial end), `renewals` (paid period's end),
`credit_expiry`, `retention` (purge), `purchases` (a purchase recorded and not settled).

Outside the fold, so a rebuild keeps them: `invoice_numbers` (the last of each year), `kept_invoices` (a purged
account's invoices for their legal period, `invoice number`) with `kept_invoices_until` (`kept until/invoice
number`), `password_resets`.

Usage, from herald.subscriptions and herald.delivery: `members` (`account/subscriber`: each stored
subscriber once, with its list, its address (hash) and whether it counted: a pending double opt-in member counts
once confirmed), `addresses` (`account/list/address hash`: which subscriber id holds the address on the list, one
membership per address and list, `herald_shared.membership`), `lists` (`account/list`: created, deleted), and
`usage` (`Counters`: per
account its stored subscribers, their peak while on the trial and, per list, its members, from
herald.subscriptions; its emails sent, from herald.delivery; exact under replay).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.apikeys import key_event_refusal
from herald_shared.contract import Event
from herald_shared.contract.billing import (
    AccountApproved,
    AccountDeleted,
    AccountOpened,
    AccountRejected,
    ApiKeyIssued,
    ApiKeyRevoked,
    BillingDetailsChanged,
    CancellationRequested,
    CancellationWithdrawn,
    CreditsExpired,
    CreditsPurchased,
    InvoiceIssued,
    InvoiceVoided,
    LoggedOut,
    LoginFailed,
    LoginSucceeded,
    PasswordChanged,
    PasswordResetRequested,
    PaymentFailed,
    PaymentMethodSet,
    PaymentSucceeded,
    PlanChanged,
    QuotaExhausted,
    SendAllowanceChanged,
    SendingBlocked,
    SendingUnblocked,
    StaffAccessed,
    TrialEnded,
    UserAdded,
    UserDisabled,
)
from herald_shared.contract.campaigns import ApiKeyRefusedByCampaigns, StaffViewed
from herald_shared.contract.compliance import AccountReinstated, StaffViewedRates
from herald_shared.contract.delivery import MessageBounced, MessageSent, StaffViewedMessages
from herald_shared.contract.envelope import ApiKeyRefusedPayload, position_of
from herald_shared.contract.subscriptions import (
    ApiKeyRefusedBySubscriptions,
    ListCreated,
    ListDeleted,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
)
from herald_shared.membership import duplicate_reason
from herald_shared.mongo import Document, Projection, UpdateOne, WriteOp
from herald_shared.purging import delete_by_account_prefix
from herald_shared.readmodel import (
    Counters,
    SecondaryIndex,
    States,
    compose,
    keys_due,
    load,
    prefix_range,
    time_key,
    write_changes,
)
from herald_shared.rebuilding import ReadModelFormat, learn_from_start, once_per_database
from herald_shared.sent import email_sent
from herald_shared.settings import HeraldSettings

from . import domain
from .domain import (
    PAYG_PREFIX,
    Account,
    CreditBatch,
    OpenInvoice,
    PasswordReset,
    PlanSince,
    SendAllowance,
    Usage,
    User,
    payg_key,
    period_key,
)
from .plans import BillingCalendar
from .vat import Party

ACCOUNTS, USERS, ENDED, KEYS, AUDIT = "accounts", "users", "ended_sessions", "keys", "audit"
REVIEW, TRIALS, MEMBERS, LISTS, USAGE = "review", "trials", "members", "lists", "usage"
ADDRESSES = "addresses"
RENEWALS, INVOICES, INVOICE_NUMBERS = "renewals", "invoices", "invoice_numbers"
CREDIT_EXPIRY, RETENTION, PURCHASES = "credit_expiry", "retention", "purchases"
# Written by the handlers, not folded: a rebuild keeps them (an hour's worth), a purge deletes the account's.
PASSWORD_RESETS = "password_resets"
# A purged account's invoices, kept for their legal period (`invoice number`) and listed by when that ends
# (`kept until/invoice number`): written at the purge, not folded, so a rebuild neither drops nor revives them.
KEPT_INVOICES, KEPT_UNTIL = "kept_invoices", "kept_invoices_until"
# What an invoice document holds beyond what the invoice says: the account it links to and its payment attempts.
NOT_ON_THE_INVOICE = ("_id", "account_id", "attempts", "last_failure", "last_attempt_at")
# Everything of an account under an `account/...` key.
ACCOUNT_PREFIXED = (ENDED, KEYS, AUDIT, MEMBERS, LISTS, USAGE, INVOICES, ADDRESSES)
INVOICE_NUMBER = re.compile(r"^(\d{4})-(\d{6})$")
# Pay-as-you-go emails as a read model from before the credit windows counted them (no time kept).
LEGACY_PAYG = "payg_emails"
ACCOUNT_EVENTS = (AccountOpened, AccountApproved, AccountRejected, PlanChanged, TrialEnded, QuotaExhausted,
                  SendingBlocked, SendingUnblocked, UserAdded, PaymentMethodSet, CancellationRequested,
                  CancellationWithdrawn, BillingDetailsChanged, InvoiceIssued, InvoiceVoided, PaymentSucceeded,
                  PaymentFailed, CreditsPurchased, CreditsExpired, AccountDeleted, LoginSucceeded, SendAllowanceChanged)
USER_EVENTS = (UserAdded, PasswordChanged, UserDisabled)
# What billing counts of the other services' topics.
SUBSCRIPTION_EVENTS = (SubscriberAdded, SubscriberConfirmed, SubscriberErased, ListCreated, ListDeleted)
DELIVERY_EVENTS = (MessageSent, MessageBounced)  # the emails sent among them: domain.counts_as_sent
# Staff looks and actions, and refused API keys, the other services record: the account's one audit log shows
# them all.
SUBSCRIPTION_AUDIT_EVENTS = (ApiKeyRefusedBySubscriptions,)
CAMPAIGN_AUDIT_EVENTS = (StaffViewed, ApiKeyRefusedByCampaigns)
COMPLIANCE_AUDIT_EVENTS = (StaffViewedRates, AccountReinstated)
DELIVERY_AUDIT_EVENTS = (StaffViewedMessages,)
# The read model's format, marked beside it (`herald_shared.rebuilding`); unmarked, 1. 2 (2026-12-07): one
# membership per address and list (`herald_shared.membership`): a read model folded before counted an address added
# to a list under several subscriber ids (a CRM's) once per id, and its members keep no address; it is folded again
# (`python -m herald_billing.rebuild`) before this version serves or folds it.
FORMAT = 2
READ_MODEL = ReadModelFormat("billing", "billing", FORMAT, MEMBERS, "read model")

log = logging.getLogger(__name__)


def renewal_key(doc: Mapping[str, Any]) -> str | None:
    """A monthly plan waits here until its paid period ends (renewed then, or ended if cancelled)."""
    if doc.get("plan") != "monthly" or doc.get("paid_until") is None:
        return None
    return compose(time_key(doc["paid_until"]), doc["account_id"])


def purchase_key(doc: Mapping[str, Any]) -> str | None:
    """An account waits here while a purchase of it is recorded and not settled (charged and its outcome
    recorded): a request settles it at once, the plan clock after a crash or an outage."""
    pending = [i["period_start"] for i in doc.get("open_invoices", ()) if i.get("purchase") is not None]
    return compose(time_key(min(pending)), doc["account_id"]) if pending else None


def credit_expiry_key(doc: Mapping[str, Any]) -> str | None:
    """A pay-as-you-go account waits here until its next batch of credits expires."""
    if doc.get("plan") != "pay_as_you_go":
        return None
    due = [b["expires_at"] for b in doc.get("credit_batches", ()) if b.get("expired") is None]
    return compose(time_key(min(due)), doc["account_id"]) if due else None


def retention_key(calendar: BillingCalendar) -> Callable[[Mapping[str, Any]], str]:
    """Every account waits here for its purge: 3 months after its deletion, or 2 years after its last login."""

    def key(doc: Mapping[str, Any]) -> str:
        due, _, _ = domain.retention_due(account_of(doc), calendar)
        return compose(time_key(due), doc["account_id"])

    return key


def review_key(doc: Mapping[str, Any]) -> str | None:
    return compose(time_key(doc["opened_at"]), doc["account_id"]) if doc.get("review") == "in_review" else None


def trial_key(doc: Mapping[str, Any]) -> str | None:
    return compose(time_key(account_of(doc).trial_ends_at), doc["account_id"]) if doc.get("plan") == "trial" else None


def address_key(account_id: str, list_id: str, email_sha256: str) -> str:
    """The `addresses` document of an address (by hash) on a list: which subscriber id holds it."""
    return compose(account_id, list_id, email_sha256)


def subscriptions_usage(account_id: str) -> str:
    return compose(account_id, "subscriptions")


def list_usage(account_id: str, list_id: str) -> str:
    return compose(account_id, "list", list_id)


def delivery_usage(account_id: str) -> str:
    return compose(account_id, "delivery")


LIFETIME_PREFIX = "lifetime:"


def lifetime_key(kind: str) -> str:
    """The name an account's emails of one kind are counted under over its life (`Usage.lifetime_sent`)."""
    return LIFETIME_PREFIX + kind


def account_doc(account: Account) -> Document:
    return {"_id": account.account_id, **asdict(account)}


def account_of(doc: Mapping[str, Any]) -> Account:
    fields = {k: v for k, v in doc.items() if k != "_id"}
    for name in ("blocked", "exhausted", "users"):
        fields[name] = tuple(fields.get(name, ()))
    fields["open_invoices"] = tuple(OpenInvoice(**i) for i in fields.get("open_invoices", ()))
    fields["unblocks"] = dict(fields.get("unblocks", {}))
    fields["credit_batches"] = tuple(CreditBatch(**b) for b in fields.get("credit_batches", ()))
    fields["plan_history"] = tuple(PlanSince(**entry) for entry in fields.get("plan_history", ()))
    allowance = fields.get("allowance")
    fields["allowance"] = SendAllowance(**{**allowance, "counts": tuple(allowance["counts"])}) if allowance else None
    details = fields.get("billing_details")
    fields["billing_details"] = Party(**{**details, "address": tuple(details["address"])}) if details else None
    return Account(**fields)


def kept_invoice(invoice: Mapping[str, Any], company_name: str | None, kept_until: datetime) -> Document:
    """An invoice as kept past its account's purge: what it was issued with and its status (paid, void), the buyer
    as it names them (its billing details; without them, the company name its page showed), and nothing else of
    the account: not its id, registered address or payment attempts."""
    kept = {k: v for k, v in invoice.items() if k not in NOT_ON_THE_INVOICE}
    if kept.get("customer") is None:
        kept["customer_name"] = company_name
    return {"_id": invoice["invoice_id"], **kept, "kept_until": kept_until}


def user_doc(user: User) -> Document:
    return {"_id": user.username, **asdict(user)}


def user_of(doc: Mapping[str, Any]) -> User:
    return User(**{k: v for k, v in doc.items() if k != "_id"})


class BillingProjection(Projection):
    """Accounts and users folded in Python over the documents a batch touches (loaded by `_id`), usage counted
    as the events fold. `take_touched` names the accounts whose state or usage changed."""

    # Not `invoice_numbers`: the last number of each year outlives a rebuild (a purged account's invoices are
    # not folded again, and their numbers must never be given twice).
    collections = (ACCOUNTS, USERS, ENDED, KEYS, AUDIT, REVIEW, TRIALS, MEMBERS, LISTS, USAGE, RENEWALS, INVOICES,
                   CREDIT_EXPIRY, RETENTION, PURCHASES, ADDRESSES)

    def __init__(self, db: AsyncDatabase[Document], calendar: BillingCalendar = domain.PLATFORM_CALENDAR,
                 invoice_retention_years: int = domain.INVOICE_RETENTION_YEARS) -> None:
        super().__init__(db)
        self.calendar = calendar  # the billing periods sends are counted in, and retention's calendar months
        self.invoice_retention_years = invoice_retention_years
        self._accounts: list[Event] = []
        self._users: list[Event] = []
        self._usage: list[Event] = []
        self._review = SecondaryIndex(db[REVIEW], review_key)
        self._trials = SecondaryIndex(db[TRIALS], trial_key)
        self._renewals = SecondaryIndex(db[RENEWALS], renewal_key)
        self._credit_expiry = SecondaryIndex(db[CREDIT_EXPIRY], credit_expiry_key)
        self._retention = SecondaryIndex(db[RETENTION], retention_key(calendar))
        self._purchases = SecondaryIndex(db[PURCHASES], purchase_key)
        self._listings = (self._review, self._trials, self._renewals, self._credit_expiry, self._retention,
                          self._purchases)
        self._counts = Counters(db[USAGE])
        self._touched: set[str] = set()

    async def handle(self, event: Event) -> None:
        if isinstance(event, ACCOUNT_EVENTS):
            self._accounts.append(event)
        if isinstance(event, USER_EVENTS):
            self._users.append(event)
        if isinstance(event, SUBSCRIPTION_EVENTS) or email_sent(event):
            self._usage.append(event)
        await super().handle(event)

    async def flush(self) -> None:
        accounts, self._accounts = self._accounts, []
        users, self._users = self._users, []
        usage, self._usage = self._usage, []
        try:
            folded = await self._fold_accounts(accounts)
            await self._fold_users(users)
            await self._count(usage, folded)
            self._counts.settle()  # the members and lists counted are stored
            await super().flush()
        except Exception:
            self._accounts, self._users, self._usage = accounts + self._accounts, users + self._users, \
                usage + self._usage
            self._counts.discard()
            raise
        self._touched |= {e.account_id for e in (*accounts, *usage)}

    async def forget(self) -> None:
        """What the batch staged and counted in memory; its events are folded again from what the store holds,
        and what a refused flush counted ahead of the members and lists it could not store is taken back."""
        self._accounts, self._users, self._usage = [], [], []
        self._counts.discard()
        await self._counts.take_back()
        await super().forget()

    def take_touched(self) -> set[str]:
        """The accounts whose state or usage the flushes since the last call changed."""
        touched, self._touched = self._touched, set()
        return touched

    async def _fold_accounts(self, events: list[Event]) -> dict[str, Account]:
        """Fold; returns each account of the batch as it is after it."""
        if not events:
            return {}
        before = await load(self.db[ACCOUNTS], {e.account_id for e in events})
        after: dict[str, Document | None] = dict(before)
        states = States(after)
        for event in events:
            old = after.get(event.account_id)
            folded = domain.evolve_account(account_of(old) if old is not None else None, event)
            if folded is not None:
                states.set(event.account_id, account_doc(folded))
        changed = {k: v for k, v in after.items() if v != before.get(k)}
        await asyncio.gather(*(index.write(before, changed, states.passed) for index in self._listings))
        await write_changes(self.db[ACCOUNTS], before, changed)
        return {k: account_of(v) for k, v in after.items() if v is not None}

    async def _fold_users(self, events: list[Event]) -> None:
        if not events:
            return
        names = {str(e.payload.username) for e in events}  # type: ignore[attr-defined]
        before = await load(self.db[USERS], names)
        after: dict[str, Document | None] = dict(before)
        for event in events:
            name = str(event.payload.username)  # type: ignore[attr-defined]
            old = after.get(name)
            folded = domain.evolve_user(user_of(old) if old is not None else None, event)
            if folded is not None:
                after[name] = user_doc(folded)
        await write_changes(self.db[USERS], before, {k: v for k, v in after.items() if v != before.get(k)})

    async def _count(self, events: list[Event], folded: Mapping[str, Account]) -> None:
        """Stored subscribers (and their peak while on the trial) and emails sent. A membership counts from when it
        is active (`domain.member_counting`: added with single opt-in; a pending double opt-in one once
        SubscriberConfirmed), so addresses anyone may post to a list's form count only once their owners
        confirm; then it stays counted, unsubscribed or suppressed (still stored), until it is erased or its list
        deleted. Each member document says whether it counted (`counted`; a document from before the mark did,
        as every member was counted then), so an erased pending one takes nothing back. A subscriber added again
        (after an unsubscribe, or by a copy of the event) is stored once. A member added to a list never created
        (no ListCreated before it: another producer's typo) or deleted is not stored nor counted, as subscriptions
        dead-letters it; nor is one whose address is on the list under another subscriber id (a CRM's ids: one
        membership per address and list, `domain.other_holder`), so every later event of that id finds no member
        and moves nothing."""
        if not events:
            return
        accounts = {e.account_id for e in events}
        member_keys = {compose(e.account_id, e.payload.subscriber_id) for e in events
                       if isinstance(e, (SubscriberAdded, SubscriberConfirmed, SubscriberErased))}
        address_keys = {address_key(e.account_id, e.payload.list_id, e.payload.email_sha256) for e in events
                        if isinstance(e, SubscriberAdded)}
        members, addresses = await asyncio.gather(load(self.db[MEMBERS], member_keys),
                                                  load(self.db[ADDRESSES], address_keys))
        list_ids = {compose(e.account_id, e.payload.list_id) for e in events
                    if isinstance(e, (SubscriberAdded, ListCreated, ListDeleted))}
        list_ids |= {compose(str(d["account_id"]), str(d["list_id"])) for d in members.values()}
        # The addresses the members hold, which an erasure or an add of another address lets go: mostly those of
        # the batch's adds, loaded already.
        holding = {str(d["address"]) for d in members.values() if d.get("address")} - set(addresses)
        lists, more = await asyncio.gather(load(self.db[LISTS], list_ids), load(self.db[ADDRESSES], holding))
        addresses |= more
        member_after: dict[str, Document | None] = dict(members)
        lists_after: dict[str, Document | None] = dict(lists)
        addresses_after: dict[str, Document] = dict(addresses)
        known = dict(folded)
        missing = accounts - set(known)
        if missing:
            known |= {k: account_of(v) for k, v in (await load(self.db[ACCOUNTS], missing)).items()}
        await self._counts.prepare({subscriptions_usage(a) for a in accounts} | {delivery_usage(a) for a in accounts}
                                   | {list_usage(*key.split("/", 1)) for key in list_ids})
        for event in events:
            position = position_of(event)
            offset = position.offset if position is not None else None
            a = event.account_id
            match event:
                case SubscriberAdded() | SubscriberConfirmed() | SubscriberErased():
                    key = compose(a, event.payload.subscriber_id)
                    member = member_after.get(key)
                    if isinstance(event, SubscriberAdded) and not self._holds(event, offset, member,
                                                                              lists_after, addresses_after):
                        continue
                    list_id = str(member["list_id"]) if member is not None else event.payload.list_id
                    listed = lists_after.get(compose(a, str(list_id))) or {}
                    deleted = bool(listed.get("deleted"))
                    if isinstance(event, SubscriberConfirmed) and not listed.get("created"):
                        deleted = True  # pending on a list never created (stored before this rule): not counted
                    # A member document from before the mark was counted, as every member was then.
                    before = None if member is None else bool(member.get("counted", True))
                    counted, change = domain.member_counting(before, event, deleted)
                    if counted is None:
                        if member is not None and member.get("address"):  # erased: its address is free again
                            domain.leave_address(addresses_after, str(member["address"]), offset,
                                                 event.payload.subscriber_id, erased=True)
                        member_after[key] = None
                    elif isinstance(event, SubscriberAdded) or counted is not before:
                        updated = {**(member or {"_id": key, "account_id": a, "list_id": list_id}),
                                   "counted": counted}
                        if isinstance(event, SubscriberAdded):  # the address it holds (`_holds`)
                            updated |= {"email_sha256": event.payload.email_sha256,
                                        "address": address_key(a, event.payload.list_id, event.payload.email_sha256)}
                        member_after[key] = updated
                    if change > 0:
                        self._counts.add_at(subscriptions_usage(a), offset,
                                            self._one_more_subscriber(a, known.get(a), event.occurred_at))
                    elif change < 0:
                        self._counts.add_at(subscriptions_usage(a), offset, {"subscribers": -1})
                    if change:
                        self._counts.add_at(list_usage(a, str(list_id)), offset, {"members": change})
                case ListCreated(payload=p):
                    list_key = compose(a, p.list_id)
                    if lists_after.get(list_key) is None:  # once: a deleted list is not brought back
                        lists_after[list_key] = {"_id": list_key, "created": True}
                case ListDeleted(payload=p):
                    list_key = compose(a, p.list_id)
                    listed = lists_after.get(list_key) or {}
                    if listed.get("created") and not listed.get("deleted"):  # as subscriptions: a list never
                        lists_after[list_key] = {**listed, "deleted": True}  # created is not deleted either
                        held = self._counts.get(list_usage(a, p.list_id)).get("members", 0)
                        self._counts.add_at(subscriptions_usage(a), offset, {"subscribers": -held})
                case MessageSent() | MessageBounced():
                    # One count per event and counter (`Counters.add_at`): every one by kind, whatever the plan (what
                    # a send allowance is reckoned at: domain.allowance_changed), and an email sent (only those were
                    # kept: email_sent) under the plan in force when it went out, whenever it is counted; a
                    # test send on the trial only (domain.counts_as_sent). Dated by the sender's clock up to
                    # CLOCK_SKEW before a plan began, under no plan that counts: under that plan, at its start
                    # (domain.send_counted_at).
                    deltas = {lifetime_key(event.payload.kind): 1}
                    account = known.get(a)
                    sent_at = event.occurred_at if account is None else domain.send_counted_at(account,
                                                                                               event.occurred_at)
                    plan = account.plan_at(sent_at) if account is not None else None
                    counted = account is not None and plan is not None and domain.counts_as_sent(event, plan)
                    if counted and plan == "trial":
                        deltas["trial_emails"] = 1
                    elif counted and plan == "pay_as_you_go" and account is not None:
                        # In the credit window it was sent in: it takes a credit of the batches valid then.
                        deltas[payg_key(domain.credit_window(account, sent_at))] = 1
                    elif counted and plan == "monthly" and account is not None and account.billing_day is not None:
                        start, _ = account.period(sent_at, self.calendar)
                        deltas[period_key(start)] = 1
                    self._counts.add_at(delivery_usage(a), offset, deltas)
        # Counters before the documents they count: a replay after a crash repeats the documents' changes. The
        # addresses before the members: a replay decides on an address's holder at each event's offset
        # (`domain.holder_before`), whatever of the batch's changes it finds written.
        await self._counts.write()
        await write_changes(self.db[ADDRESSES], addresses,
                            {k: v for k, v in addresses_after.items() if v != addresses.get(k)})
        await write_changes(self.db[MEMBERS], members,
                            {k: v for k, v in member_after.items() if v != members.get(k)})
        await write_changes(self.db[LISTS], lists,
                            {k: v for k, v in lists_after.items() if v is not None and v != lists.get(k)})

    @staticmethod
    def _holds(event: SubscriberAdded, offset: int | None, member: Document | None,
               lists: Mapping[str, Document | None], addresses: dict[str, Document]) -> bool:
        """Whether an add is a membership, as subscriptions takes it: of a list created and not deleted, and of an
        address no other subscriber id holds on that list (`domain.add_membership`, at the add's offset, which
        makes the address this id's). If not, nothing changes."""
        a, p = event.account_id, event.payload
        listed = lists.get(compose(a, p.list_id)) or {}
        if listed.get("deleted") or not listed.get("created"):
            # A member of a list never created (another producer's typo'd list id) or deleted is no subscriber:
            # subscriptions dead-letters it, and it moves no trial or tier count here.
            return False
        held = str(member["address"]) if member is not None and member.get("address") else None
        existing = domain.add_membership(addresses, address_key(a, p.list_id, p.email_sha256), held, event, offset)
        if existing is None:
            return True
        log.info("a SubscriberAdded counts nothing: %s", duplicate_reason(
            subscriber_id=p.subscriber_id, list_id=p.list_id, account_id=a, existing=existing or "an erased id"),
            extra={"event_id": str(event.event_id), "account_id": a, "subscriber_id": p.subscriber_id})
        return False

    def _one_more_subscriber(self, account_id: str, account: Account | None, at: datetime) -> dict[str, int]:
        """The counts of one more subscriber stored: while on the trial, a new peak too (PRODUCT.md: the trial
        ends as soon as its limit is exceeded, even if subscribers are deleted afterwards, in the same batch
        too). Counted with the subscriber at its offset, so exact under replay. One dated before the account opened
        (another producer's clock, or a CRM giving when the person subscribed) is stored on the trial: on no plan,
        it would raise no peak."""
        counts = self._counts.get(subscriptions_usage(account_id))
        stored, peak = counts.get("subscribers", 0) + 1, counts.get("trial_peak_subscribers", 0)
        if account is None or account.plan_at(max(at, account.opened_at)) != "trial" or stored <= peak:
            return {"subscribers": 1}
        return {"subscribers": 1, "trial_peak_subscribers": stored - peak}

    async def purge(self, account_id: str) -> None:
        """Delete the account's data (`purging.PurgingHandler` calls this on AccountPurged): the account, its
        users, sessions, keys, audit log, usage, invoices and its places in the listings; its invoices are kept
        first, apart, for their legal period (`keep_invoices`)."""
        doc = await self.db[ACCOUNTS].find_one({"_id": account_id})
        await self.keep_invoices(account_id, doc.get("company_name") if doc is not None else None)
        if doc is not None:
            gone: dict[str, Document | None] = {account_id: None}
            for index in self._listings:
                await index.write({account_id: doc}, gone)
            users = await load(self.db[USERS], doc.get("users", ()))
            await self.db[USERS].delete_many({"_id": {"$in": [u for u, d in users.items()
                                                              if d.get("account_id") == account_id]}})
        key_ids = [d["key_id"] async for d in self.db[KEYS].find({"_id": prefix_range(account_id)}, {"key_id": 1})]
        if key_ids:
            await self.db["api_keys"].delete_many({"_id": {"$in": key_ids}})
        await delete_by_account_prefix(self.db, account_id, ACCOUNT_PREFIXED)
        await self.db[PASSWORD_RESETS].delete_many({"account_id": account_id})
        await self.db[ACCOUNTS].delete_one({"_id": account_id})

    async def keep_invoices(self, account_id: str, company_name: str | None) -> int:
        """Copy the account's invoices to `kept_invoices` (`kept_invoice`) until their legal period ends. Listed
        before they are written, and both before the account's are deleted: a purge stopped half-way and done
        again keeps each once, and nothing is kept that the clock would not find to delete."""
        invoices = [doc async for doc in self.db[INVOICES].find({"_id": prefix_range(account_id)})]
        if not invoices:
            return 0
        kept = [kept_invoice(doc, company_name, domain.invoice_kept_until(
            doc["issued_at"], self.invoice_retention_years, self.calendar)) for doc in invoices]
        await self.db[KEPT_UNTIL].bulk_write(
            [UpdateOne({"_id": compose(time_key(k["kept_until"]), k["_id"])},
                       {"$setOnInsert": {"invoice_id": k["_id"]}}, upsert=True) for k in kept], ordered=False)
        await self.db[KEPT_INVOICES].bulk_write(
            [UpdateOne({"_id": k["_id"]}, {"$setOnInsert": {f: v for f, v in k.items() if f != "_id"}}, upsert=True)
             for k in kept], ordered=False)
        return len(kept)

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        a = event.account_id
        if key_event_refusal(event) is not None:
            return []  # a key "issued" by another producer is in no listing either (ApiKeyProjection dead-letters it)
        match event:
            case LoggedOut(payload=p):
                return [(ENDED, UpdateOne({"_id": compose(a, p.session_id)}, {"$setOnInsert": {
                    "account_id": a, "username": p.username, "at": event.occurred_at}}, upsert=True))]
            case ApiKeyIssued(payload=p):
                return [(KEYS, UpdateOne({"_id": compose(a, p.key_id)}, {"$set": {
                    "account_id": a, "key_id": p.key_id, "label": p.label, "issued_by": p.issued_by,
                    "issued_at": event.occurred_at}}, upsert=True))]
            case ApiKeyRevoked(payload=p):
                return [(KEYS, UpdateOne({"_id": compose(a, p.key_id)}, {"$set": {
                    "account_id": a, "key_id": p.key_id, "revoked_at": event.occurred_at,
                    "revoked_by": p.revoked_by}}, upsert=True))]
            case LoginSucceeded(payload=p) | LoginFailed(payload=p):
                entry = {"kind": "login", "result": "success" if isinstance(event, LoginSucceeded) else "failure",
                         "reason": getattr(p, "reason", None), "username": p.username, "actor": p.actor,
                         "method": p.method, "ip": p.ip, "user_agent": p.user_agent, "session_id": p.session_id}
                return [self._audit(event, entry)]
            case PasswordChanged(payload=p):
                kind = "password_change" if p.reset_request_id is None else "password_reset_completed"
                return [self._audit(event, {"kind": kind, "result": "success", "username": p.username,
                                            "ip": p.ip, "user_agent": p.user_agent, "session_id": p.session_id,
                                            "request_id": p.reset_request_id})]
            case PasswordResetRequested(payload=p):
                return [self._audit(event, {"kind": "password_reset_requested", "result": "success",
                                            "username": p.username, "ip": p.ip, "user_agent": p.user_agent,
                                            "request_id": p.request_id})]
            case CancellationRequested(payload=p):
                return [self._audit(event, {"kind": "cancellation", "result": "success", "what": "requested",
                                            **_by(p.channel, p.requested_by)})]
            case CancellationWithdrawn(payload=p):
                return [self._audit(event, {"kind": "cancellation", "result": "success", "what": "withdrawn",
                                            **_by(p.channel, p.withdrawn_by)})]
            case BillingDetailsChanged(payload=p):
                return [self._audit(event, {"kind": "billing_details", "result": "success",
                                            "username": p.changed_by})]
            case StaffAccessed(payload=p):
                # billing's own, or the `herald` CLI's (herald-cli: the event log read with --reveal)
                return [self._audit(event, {"kind": "staff_access", "staff": p.staff, "what": p.what,
                                            "service": event.producer})]
            case StaffViewed(payload=p):
                return [self._audit(event, {"kind": "staff_access", "staff": p.staff, "what": p.action,
                                            "service": "campaigns", "campaign_id": p.campaign_id})]
            case StaffViewedRates(payload=p):
                return [self._audit(event, {"kind": "staff_access", "staff": p.staff, "what": "rates",
                                            "service": "compliance"})]
            case StaffViewedMessages(payload=p):
                return [self._audit(event, {"kind": "staff_access", "staff": p.staff, "what": "messages",
                                            "service": "delivery", "subscriber_id": p.subscriber_id,
                                            "email_sha256": p.email_sha256})]
            case AccountReinstated(payload=p):
                return [self._audit(event, {"kind": "staff_access", "staff": p.reinstated_by, "what": "reinstate",
                                            "service": "compliance"})]
            case ApiKeyRefusedBySubscriptions(payload=p):
                return [self._audit(event, key_refused(p, "subscriptions"))]
            case ApiKeyRefusedByCampaigns(payload=p):
                return [self._audit(event, key_refused(p, "campaigns"))]
            case InvoiceIssued(payload=p):
                ops: list[tuple[str, WriteOp]] = [(INVOICES, UpdateOne({"_id": compose(a, p.invoice_id)}, {
                    "$setOnInsert": {"account_id": a, "issued_at": event.occurred_at, "status": "open",
                                     "attempts": 0, **p.model_dump(mode="python")}}, upsert=True))]
                numbered = INVOICE_NUMBER.fullmatch(p.invoice_id)
                if numbered:  # billing's own numbers; an invoice id of another shape is kept, not counted
                    ops.append((INVOICE_NUMBERS, UpdateOne({"_id": numbered[1]}, {"$max": {"last": int(numbered[2])}},
                                                           upsert=True)))
                return ops
            case PaymentSucceeded(payload=p):
                return [(INVOICES, UpdateOne({"_id": compose(a, p.invoice_id)}, {"$set": {
                    "status": "paid", "paid_at": event.occurred_at}}))]
            case InvoiceVoided(payload=p):
                return [(INVOICES, UpdateOne({"_id": compose(a, p.invoice_id), "status": "open"}, {"$set": {
                    "status": "void", "voided_at": event.occurred_at, "void_reason": p.reason}}))]
            case PaymentFailed(payload=p):
                return [(INVOICES, UpdateOne({"_id": compose(a, p.invoice_id), "status": "open"}, {
                    "$set": {"last_failure": p.reason, "last_attempt_at": event.occurred_at},
                    "$max": {"attempts": p.attempt}}))]
        return []

    @staticmethod
    def _audit(event: Event, entry: Document) -> tuple[str, WriteOp]:
        key = compose(event.account_id, time_key(event.occurred_at), str(event.event_id))
        return (AUDIT, UpdateOne({"_id": key}, {"$setOnInsert": {
            "account_id": event.account_id, "at": event.occurred_at, **entry}}, upsert=True))


def _by(channel: str, who: str) -> Document:
    """Who made an account change: a user (self-service), or staff recording the customer's request."""
    return {"username": who} if channel == "self_service" else {"staff": who, "service": "billing"}


def key_refused(refused: ApiKeyRefusedPayload, service: str) -> Document:
    """The audit entry of an API key a service refused: a failed attempt with the key id, never a secret."""
    return {"kind": "api_key", "result": "failure", "reason": refused.reason, "key_id": refused.key_id,
            "ip": refused.ip, "user_agent": refused.user_agent, "path": refused.path, "service": service}


async def _accounts_due(collection: Any, now: datetime) -> list[str]:
    """The accounts of a `time/account` listing due at or before `now`."""
    return [key.rsplit("/", 1)[1] for key in await keys_due(collection, now)]


class BillingStore:
    """Reads of the projection. Every account-scoped read takes the account and never returns another's data."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db

    async def account(self, account_id: str) -> Account | None:
        doc = await self.db[ACCOUNTS].find_one({"_id": account_id})
        return account_of(doc) if doc else None

    async def user(self, username: str) -> User | None:
        doc = await self.db[USERS].find_one({"_id": username})
        return user_of(doc) if doc else None

    async def users(self, account: Account) -> list[User]:
        found = await load(self.db[USERS], account.users)
        return [user_of(found[name]) for name in sorted(found) if found[name]["account_id"] == account.account_id]

    async def session_ended(self, account_id: str, session_id: str) -> bool:
        return await self.db[ENDED].find_one({"_id": compose(account_id, session_id)}, {"_id": 1}) is not None

    async def key(self, account_id: str, key_id: str) -> Document | None:
        return await self.db[KEYS].find_one({"_id": compose(account_id, key_id)})

    async def keys(self, account_id: str, after: str | None, limit: int) -> list[Document]:
        return await self._page(KEYS, account_id, after, limit)

    async def audit(self, account_id: str, after: str | None, limit: int) -> list[Document]:
        return await self._page(AUDIT, account_id, after, limit)

    async def _page(self, collection: str, account_id: str, after: str | None, limit: int) -> list[Document]:
        bounds: dict[str, str] = prefix_range(account_id)
        if after is not None and after >= bounds["$gte"]:
            bounds = {"$gt": after, "$lt": bounds["$lt"]}
        cursor = self.db[collection].find({"_id": bounds}).sort("_id", 1).limit(limit)
        return [doc async for doc in cursor]

    async def usage(self, account_id: str) -> Usage:
        return (await self.usages([account_id]))[account_id]

    async def add_password_reset(self, reset: PasswordReset) -> None:
        await self.db[PASSWORD_RESETS].insert_one({"_id": reset.request_id, **asdict(reset)})

    async def password_reset(self, request_id: str) -> PasswordReset | None:
        doc = await self.db[PASSWORD_RESETS].find_one({"_id": request_id})
        return PasswordReset(**{k: v for k, v in doc.items() if k != "_id"}) if doc else None

    async def wrong_reset_token(self, request_id: str) -> None:
        await self.db[PASSWORD_RESETS].update_one({"_id": request_id}, {"$inc": {"wrong_tokens": 1}})

    async def use_password_reset(self, request_id: str) -> bool:
        """Mark it used; False when it was already (two completions at once: one wins)."""
        done = await self.db[PASSWORD_RESETS].update_one({"_id": request_id, "used": False},
                                                         {"$set": {"used": True}})
        return done.modified_count == 1

    async def usages(self, account_ids: Iterable[str]) -> dict[str, Usage]:
        """Each account's usage, its counters loaded together (`$in`)."""
        wanted = set(account_ids)
        counters = await load(self.db[USAGE], [k for a in wanted for k in (subscriptions_usage(a), delivery_usage(a))])

        def counts(key: str) -> dict[str, int]:
            return {k: int(v) for k, v in counters.get(key, {}).get("counts", {}).items()}

        found = {}
        for a in wanted:
            subscriptions, delivery = counts(subscriptions_usage(a)), counts(delivery_usage(a))
            payg = {k.removeprefix(PAYG_PREFIX): v for k, v in delivery.items() if k.startswith(PAYG_PREFIX)}
            if LEGACY_PAYG in delivery:  # counted before the windows were: as if sent before any batch
                payg[""] = payg.get("", 0) + delivery[LEGACY_PAYG]
            found[a] = Usage(subscribers=subscriptions.get("subscribers", 0),
                             trial_peak_subscribers=subscriptions.get("trial_peak_subscribers", 0),
                             trial_emails=delivery.get("trial_emails", 0),
                             emails_by_period={k: v for k, v in delivery.items() if k.startswith("sent:")},
                             payg_sent=payg,
                             lifetime_sent={k.removeprefix(LIFETIME_PREFIX): v for k, v in delivery.items()
                                            if k.startswith(LIFETIME_PREFIX)})
        return found

    async def last_invoice_number(self, year: int) -> int:
        doc = await self.db[INVOICE_NUMBERS].find_one({"_id": str(year)})
        return int(doc["last"]) if doc else 0

    async def invoice(self, account_id: str, invoice_id: str) -> Document | None:
        return await self.db[INVOICES].find_one({"_id": compose(account_id, invoice_id)})

    async def invoices(self, account_id: str, after: str | None, limit: int) -> list[Document]:
        return await self._page(INVOICES, account_id, after, limit)

    async def kept_invoice(self, invoice_id: str) -> Document | None:
        """An invoice kept past its account's purge, while its legal period lasts."""
        return await self.db[KEPT_INVOICES].find_one({"_id": invoice_id})

    async def drop_kept_invoices(self, now: datetime) -> int:
        """Delete the kept invoices whose legal period ended at or before `now` (an `_id` range of the listing)."""
        due = await keys_due(self.db[KEPT_UNTIL], now)
        if not due:
            return 0
        await self.db[KEPT_INVOICES].delete_many({"_id": {"$in": [key.rsplit("/", 1)[1] for key in due]}})
        await self.db[KEPT_UNTIL].delete_many({"_id": {"$in": due}})
        return len(due)

    async def paid_periods(self, account_id: str) -> list[tuple[str, datetime]]:
        """The account's paid invoices that paid a period (a plan's first, a renewal): number and period start."""
        cursor = self.db[INVOICES].find({"_id": prefix_range(account_id), "status": "paid",
                                         "kind": {"$in": ["plan", "renewal"]}}, {"invoice_id": 1, "period_start": 1})
        return [(str(d["invoice_id"]), d["period_start"]) async for d in cursor]

    async def credits_expiring(self, now: datetime) -> list[str]:
        """Pay-as-you-go accounts with a batch of credits expired at or before `now` and not told yet."""
        return await _accounts_due(self.db[CREDIT_EXPIRY], now)

    async def purges_due(self, now: datetime) -> list[str]:
        return await _accounts_due(self.db[RETENTION], now)

    async def active_keys(self, account_id: str, issued_by: str | None = None) -> list[str]:
        """The account's keys not revoked (those `issued_by` a user, when given)."""
        cursor = self.db[KEYS].find({"_id": prefix_range(account_id)})
        return [str(d["key_id"]) async for d in cursor
                if not d.get("revoked_at") and (issued_by is None or d.get("issued_by") == issued_by)]

    async def purchases_due(self, now: datetime) -> list[str]:
        """Accounts with a purchase recorded at or before `now` and not settled."""
        return await _accounts_due(self.db[PURCHASES], now)

    async def renewals_due(self, now: datetime) -> list[str]:
        """Monthly plans whose paid period ended at or before `now`."""
        return await _accounts_due(self.db[RENEWALS], now)

    async def review_queue(self, after: str | None, limit: int) -> tuple[list[Account], str | None]:
        """Accounts waiting for review, oldest first; the cursor is the last key of a full page."""
        cursor = self.db[REVIEW].find({"_id": {"$gt": after or ""}}, {"_id": 1}).sort("_id", 1).limit(limit)
        keys = [str(doc["_id"]) async for doc in cursor]
        ids = [key.rsplit("/", 1)[1] for key in keys]
        found = await load(self.db[ACCOUNTS], ids)
        return [account_of(found[a]) for a in ids if a in found], (keys[-1] if len(keys) == limit else None)

    async def trials_ending(self, now: datetime) -> list[str]:
        """Accounts whose trial ends at or before `now` and has not been ended yet."""
        return await _accounts_due(self.db[TRIALS], now)

    async def touched_usage(self, accounts: Iterable[str]) -> dict[str, tuple[Account, Usage]]:
        """The accounts that exist among these, with their usage: two `$in` reads, whatever their number (the
        usage guard asks after every batch)."""
        docs = await load(self.db[ACCOUNTS], accounts)
        usages = await self.usages(docs)
        return {account_id: (account_of(doc), usages[account_id]) for account_id, doc in sorted(docs.items())}


# The mark, beside the other services' read-model formats, that `learn_created_lists` ran on this database.
CREATED_LISTS_MARK = "billing.lists_created"


async def learn_created_lists(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int | None:
    """Once per database, before the consumer starts: the lists created before billing folded ListCreated (it
    counts a member only on a list it saw created, 2026-12-07), read from offset 0 of herald.subscriptions, so
    their later members still count. A database nothing was folded into (no account) needs none: its consumer
    reads the topic from the start. Returns the lists marked (None: learnt before)."""

    async def mark(events: list[Event]) -> None:
        await db[LISTS].bulk_write([UpdateOne({"_id": compose(e.account_id, e.payload.list_id)},  # type: ignore[attr-defined]
                                              {"$set": {"created": True}}, upsert=True) for e in events],
                                   ordered=False)

    async def learn() -> int:
        if await db[ACCOUNTS].find_one({"_id": {"$gt": ""}}, {"_id": 1}) is None:
            return 0
        return await learn_from_start(settings, db, "herald.subscriptions", [ListCreated], mark)

    return await once_per_database(db, CREATED_LISTS_MARK, learn)
