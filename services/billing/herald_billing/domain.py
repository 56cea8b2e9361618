"""Billing's rules, pure: who an account is and who may act for it (sign-up, users, sessions, API keys, staff
review), and what its plan allows (the trial's 30 days, 20 subscribers and 100 emails), as the events each
decision records. PRODUCT.md: "Accounts, users, access", "Review", "Plans and billing".
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from herald_shared.contract import Event
from herald_shared.contract.billing import (
    AccountApproved,
    AccountApprovedPayload,
    AccountDeleted,
    AccountDeletedPayload,
    AccountOpened,
    AccountOpenedPayload,
    AccountPurged,
    AccountPurgedPayload,
    AccountRejected,
    AccountRejectedPayload,
    ApiKeyIssued,
    ApiKeyIssuedPayload,
    ApiKeyRevoked,
    ApiKeyRevokedPayload,
    BillingDetailsChanged,
    BillingDetailsChangedPayload,
    BlockReason,
    CancellationRequested,
    CancellationRequestedPayload,
    CancellationWithdrawn,
    CancellationWithdrawnPayload,
    CreditsExpired,
    CreditsExpiredPayload,
    CreditsPurchased,
    CreditsPurchasedPayload,
    InvoiceIssued,
    InvoiceIssuedPayload,
    InvoiceLine,
    InvoiceParty,
    InvoiceVoided,
    InvoiceVoidedPayload,
    LoggedOut,
    LoggedOutPayload,
    LoginSucceeded,
    PasswordChanged,
    PasswordChangedPayload,
    PasswordResetRequested,
    PasswordResetRequestedPayload,
    PaymentFailed,
    PaymentFailedPayload,
    PaymentMethodSet,
    PaymentMethodSetPayload,
    PaymentSucceeded,
    PaymentSucceededPayload,
    PlanChanged,
    PlanChangedPayload,
    PurchaseTerms,
    QuotaExhausted,
    QuotaExhaustedPayload,
    SendAllowanceChanged,
    SendAllowanceChangedPayload,
    SendingBlocked,
    SendingBlockedPayload,
    SendingUnblocked,
    SendingUnblockedPayload,
    SentCounts,
    SentKind,
    TrialEnded,
    TrialEndedPayload,
    UserAdded,
    UserAddedPayload,
    UserDisabled,
    UserDisabledPayload,
    VatTreatment,
)
from herald_shared.contract.delivery import MessageBounced, MessageSent
from herald_shared.contract.subscriptions import SubscriberAdded, SubscriberConfirmed, SubscriberErased
from herald_shared.membership import holder
from herald_shared.readmodel import time_key
from herald_shared.rules import RuleRefused
from herald_shared.sent import SENT_KINDS, email_sent

from . import plans, vat
from .plans import BillingCalendar, Edition, Plans
from .vat import Party

PRODUCER = "billing"
PLATFORM_CALENDAR = BillingCalendar()  # Europe/Riga: HERALD_BILLING_TIME_ZONE's default
# Fixed: a decision billing may take twice (a batch folded again, two replicas) has one event id.
HERALD_BILLING_NAMESPACE = uuid.UUID("5b0e3c9a-1f7d-4e62-8a4b-c3d2e1f0a9b8")

# PRODUCT.md, "Plans and billing": the trial.
TRIAL_DAYS = 30
TRIAL_SUBSCRIBERS = 20
TRIAL_EMAILS = 100
PAYMENT_RETRY_INTERVAL = timedelta(days=1)  # a failed automatic payment is tried again this often
CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of this clock a time given to us may be
# PRODUCT.md, "Data protection": an account's data is deleted 3 months after the account is deleted, or when
# neither the main user nor any sub-user has logged in for 2 years.
RETENTION_AFTER_DELETION_MONTHS = 3
RETENTION_WITHOUT_LOGIN_YEARS = 2
# Issued invoices outlive their account's purge (GDPR art. 17(3)(b): a legal obligation) for this many whole
# calendar years after the year they were issued in: Latvia's accounting law keeps source documents 5 years
# (HERALD_BILLING_INVOICE_RETENTION_YEARS; the operator checks their own jurisdiction).
INVOICE_RETENTION_YEARS = 5

Role = Literal["owner", "member"]
ReviewStatus = Literal["in_review", "approved", "rejected"]
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{2,99}$")
PASSWORD_MIN = 12
PASSWORD_MAX = 256
PASSWORD_RESET_VALIDITY = timedelta(hours=1)
PASSWORD_RESET_TRIES = 5  # wrong tokens a reset request takes before it is burnt


# Errors: each a rule, answered as an RFC 9457 problem by herald_shared.http


class AccountNotFound(RuleRefused):
    code, http_status = "account_not_found", 404


class UserNotFound(RuleRefused):
    code, http_status = "user_not_found", 404


class KeyNotFound(RuleRefused):
    code, http_status = "api_key_not_found", 404


class UsernameTaken(RuleRefused):
    code, http_status = "username_taken", 409


class TermsNotAccepted(RuleRefused):
    code, http_status = "terms_not_accepted", 422


class WeakPassword(RuleRefused):
    code, http_status = "weak_password", 422


class InvalidUsername(RuleRefused):
    code, http_status = "invalid_username", 422


class OwnersOnly(RuleRefused):
    code, http_status = "owners_only", 403


class AlreadyReviewed(RuleRefused):
    code, http_status = "already_reviewed", 409


class WrongPassword(RuleRefused):
    code, http_status = "wrong_password", 403


class CannotDisable(RuleRefused):
    code, http_status = "cannot_disable", 409


class TierNotOffered(RuleRefused):
    code, http_status = "tier_not_offered", 422


class TierCannotBeLowered(RuleRefused):
    code, http_status = "tier_cannot_be_lowered", 409


class EditionCannotBeLowered(RuleRefused):
    """PRO back to standard at the same subscriber limit: it raises nothing, and would lower the fee agreed for
    the period (fees are not refunded). With a higher limit it is a raise like any other."""

    code, http_status = "edition_cannot_be_lowered", 409


class RejectedAccount(RuleRefused):
    """Staff rejected the account (PRODUCT.md, "Review"): it may not send, so it is sold nothing more."""

    code, http_status = "account_rejected", 409


class MainUserOnly(RuleRefused):
    code, http_status = "main_user_only", 403


class NoPaymentMethod(RuleRefused):
    code, http_status = "no_payment_method", 409


class NotOnAMonthlyPlan(RuleRefused):
    code, http_status = "not_on_a_monthly_plan", 409


class AlreadyCancelled(RuleRefused):
    code, http_status = "already_cancelled", 409


class NoPendingCancellation(RuleRefused):
    code, http_status = "no_pending_cancellation", 409


class CancellationTookEffect(RuleRefused):
    """The cancellation's time has come: the plan is over (or ends now), and is chosen again, not kept."""

    code, http_status = "cancellation_took_effect", 409


class CancellationPending(RuleRefused):
    """A plan chosen again, or raised, while its cancellation is pending: the customer withdraws the cancellation
    first, rather than pay for a plan that still ends (or have it withdrawn unasked)."""

    code, http_status = "cancellation_pending", 409


class BillingDetailsInvalid(RuleRefused):
    code, http_status = "billing_details_invalid", 422


class ReceivedInTheFuture(RuleRefused):
    code, http_status = "received_in_the_future", 422


class CancellationNeedsRefund(RuleRefused):
    """A request that came in time to end the plan at a payment date, recorded after that payment's period was
    charged: recording it would charge the customer for a period they cancelled, so it is refused, naming the
    invoices to refund and when the plan should have ended."""

    code, http_status = "cancellation_needs_refund", 409


class InvoiceNotFound(RuleRefused):
    code, http_status = "invoice_not_found", 404


class InvoiceVoid(RuleRefused):
    code, http_status = "invoice_void", 409


class PaymentDeclined(RuleRefused):
    code, http_status = "payment_declined", 402


class AccountClosed(RuleRefused):
    code, http_status = "account_closed", 409


class RenewalPending(RuleRefused):
    code, http_status = "renewal_pending", 409


class PurchasePending(RuleRefused):
    code, http_status = "purchase_pending", 409


class ProviderUnavailable(RuleRefused):
    """The payment provider did not answer: whether it took the money is not known. The purchase stays
    recorded and open; asked again for the same invoice, the provider answers what it did."""

    code, http_status = "payment_provider_unavailable", 503


class PackNotOffered(RuleRefused):
    code, http_status = "credit_pack_not_offered", 422


class OnAMonthlyPlan(RuleRefused):
    code, http_status = "on_a_monthly_plan", 409


class PaymentMethodInvalid(RuleRefused):
    code, http_status = "payment_method_invalid", 422


class PasswordResetNotConfigured(RuleRefused):
    code, http_status = "password_reset_not_configured", 503


class PasswordResetNotFound(RuleRefused):
    """No such request, or not its token: one answer, so a guess learns nothing."""

    code, http_status = "password_reset_not_found", 404


class PasswordResetExpired(RuleRefused):
    code, http_status = "password_reset_expired", 410


class PasswordResetUsed(RuleRefused):
    code, http_status = "password_reset_used", 410


class PasswordResetVoid(RuleRefused):
    """The user was disabled, the account closed, or the password changed since the request."""

    code, http_status = "password_reset_void", 410


@dataclass(frozen=True)
class User:
    username: str
    account_id: str
    role: Role
    password_hash: str
    disabled: bool = False
    # Sessions issued before this instant are over (a password change ends them).
    sessions_valid_from: datetime | None = None


@dataclass(frozen=True)
class PasswordReset:
    """A request to reset a forgotten password, kept by billing (not folded: it is no account state) until it is
    used, burnt by wrong tokens, or expired."""

    request_id: str
    account_id: str
    username: str
    requested_at: datetime
    expires_at: datetime
    # The user's password hash as it was, hashed again: a password changed since voids the request.
    password_marker: str
    used: bool = False
    wrong_tokens: int = 0


@dataclass(frozen=True)
class OpenInvoice:
    """An invoice issued and not paid yet: a renewal whose automatic payment failed, or a purchase between its
    recording and its charge (`purchase`: its terms, InvoiceIssued's `purchase` as stored)."""

    invoice_id: str
    amount_cents: int
    period_start: datetime
    period_end: datetime
    attempts: int = 0
    last_attempt_at: datetime | None = None
    pays_period: bool = True  # a plan's first period or a renewal: paying it pays up to period_end
    purchase: Mapping[str, Any] | None = None
    net_cents: int | None = None


@dataclass(frozen=True)
class PlanSince:
    since: datetime
    plan: str
    # A monthly plan's subscriber limit from then (a raise is an entry of its own): what the period's send cap is
    # prorated by. None in an entry folded before it was kept: the account's current tier stands for it.
    tier: int | None = None


@dataclass(frozen=True)
class CreditBatch:
    """Pay-as-you-go credits bought together (`bought_at`: when CreditsPurchased recorded them; None in an account
    folded before it was kept: valid from the start); `expired`: how many expired unused (CreditsExpired), once
    told."""

    batch_id: str
    credits: int
    expires_at: datetime
    expired: int | None = None
    bought_at: datetime | None = None


@dataclass(frozen=True)
class SendAllowance:
    """What billing last told delivery the account may still send (SendAllowanceChanged): `remaining` emails of
    the `counts` kinds (None: no limit), reckoned at the lifetime counts `as_of_campaign` and `as_of_test`."""

    remaining: int | None
    counts: tuple[str, ...]
    as_of_campaign: int
    as_of_test: int
    sequence: int
    until: datetime | None = None

    @property
    def ceiling(self) -> int | None:
        """The lifetime count of the counted kinds at which sending stops: the same while sends are counted (each
        takes one from `remaining` and adds one to `as_of`), so only a change of the quota itself changes it."""
        if self.remaining is None:
            return None
        as_of = {"campaign": self.as_of_campaign, "test": self.as_of_test}
        return self.remaining + sum(as_of.get(kind, 0) for kind in self.counts)

    def same_terms(self, other: SendAllowance | None) -> bool:
        """Whether a sender counting its own sends since `other` would allow the same: then nothing is published
        (the trial's 100th email changes no allowance, an expiry or a new period does)."""
        return other is not None and set(self.counts) == set(other.counts) and self.ceiling == other.ceiling and \
            self.until == other.until


@dataclass(frozen=True)
class Account:
    """An account as billing folds it from herald.billing."""

    account_id: str
    company_name: str
    registered_email: str
    main_username: str
    opened_at: datetime
    review: ReviewStatus = "in_review"
    plan: str = "trial"  # trial, trial_ended (no plan chosen after it), monthly, pay_as_you_go, none (cancelled)
    trial_ended_reason: str | None = None
    blocked: tuple[str, ...] = ()
    # How often each block reason was lifted: a block and its lifting carry this episode in their fixed ids.
    unblocks: Mapping[str, int] = field(default_factory=dict)
    exhausted: tuple[str, ...] = ()  # quotas announced as exhausted: "trial_emails", "monthly_emails:<period>:<cap>"
    users: tuple[str, ...] = ()
    # Monthly plan
    tier: int | None = None
    edition: Edition = "standard"
    fee_cents: int | None = None
    billing_day: int | None = None
    anchor: datetime | None = None  # the first payment: billing dates fall on its day, at its time of day
    paid_until: datetime | None = None
    cancel_at: datetime | None = None
    payment_method: str | None = None  # "provider:reference"
    open_invoices: tuple[OpenInvoice, ...] = ()
    credit_batches: tuple[CreditBatch, ...] = ()
    # (from, plan) in time order: which plan a send at a given time fell under, whenever it is counted.
    plan_history: tuple[PlanSince, ...] = ()
    deleted_at: datetime | None = None
    last_login_at: datetime | None = None
    billing_details: Party | None = None  # who its invoices are made out to (BillingDetailsChanged)
    allowance: SendAllowance | None = None  # the last SendAllowanceChanged (the highest sequence)

    def plan_at(self, at: datetime) -> str | None:
        """The plan in force at `at` (None before the account was opened)."""
        current = None
        for entry in self.plan_history:
            if entry.since > at:
                break
            current = entry.plan
        return current

    @property
    def trial_ends_at(self) -> datetime:
        return self.opened_at + timedelta(days=TRIAL_DAYS)

    @property
    def on_trial(self) -> bool:
        return self.plan == "trial"

    def period(self, at: datetime, calendar: BillingCalendar) -> tuple[datetime, datetime]:
        """The monthly plan's billing period holding `at`."""
        assert self.billing_day is not None and self.anchor is not None
        return calendar.period_containing(self.billing_day, self.anchor, at)

    def send_cap(self, start: datetime, end: datetime) -> int:
        """The monthly plan's send cap for the period [start, end): 109 x its subscriber limit, prorated by time
        over each limit it held in the period when the tier was raised during it (`plans.period_send_cap`), as
        the raise was charged: a raise an hour before the period ends buys an hour's worth of the higher cap."""
        assert self.tier is not None
        limits = [(e.since, e.tier if e.tier is not None else self.tier) for e in self.plan_history
                  if e.plan == "monthly"]
        return plans.period_send_cap(limits or [(start, self.tier)], start, end)

    @property
    def agreement_ends_at(self) -> datetime | None:
        """When the monthly plan ends: a cancellation's effective time, or the end of the paid period of an account
        staff rejected (never renewed), whichever comes first; None while it goes on."""
        rejected = self.paid_until if self.review == "rejected" else None
        return min((t for t in (self.cancel_at, rejected) if t is not None), default=None)


@dataclass(frozen=True)
class Usage:
    """What an account holds and has sent, counted from herald.subscriptions and herald.delivery."""

    # Stored in its lists from when active (`member_counting`), then in every status; a pending double opt-in
    # member nobody confirmed, erased members and deleted lists do not count.
    subscribers: int = 0
    # The most subscribers stored at once while on the trial: deleting them afterwards does not save it.
    trial_peak_subscribers: int = 0
    trial_emails: int = 0  # emails sent during the trial, test sends included (counts_as_sent)
    emails_by_period: Mapping[str, int] = field(default_factory=dict)  # monthly plan: by period_key(start)
    # Campaign emails sent on pay-as-you-go, each taking a credit, by the credit window they were sent in
    # (`credit_window`: "" before any batch).
    payg_sent: Mapping[str, int] = field(default_factory=dict)
    # Every email `email_sent` accepts, by kind, whatever the plan: what an allowance is reckoned at (`as_of`).
    lifetime_sent: Mapping[str, int] = field(default_factory=dict)

    def period_emails(self, start: datetime) -> int:
        return self.emails_by_period.get(period_key(start), 0)

    @property
    def payg_emails(self) -> int:
        return sum(self.payg_sent.values())


def member_counting(counted: bool | None, event: Event, list_deleted: bool) -> tuple[bool | None, int]:
    """How billing counts a list membership toward the trial's 20 and the tier's limit, after one event of it:
    whether it is stored and counted (None: not stored, never added or erased; False: stored, not counted; True:
    counted), and the change to the subscribers counted (+1, -1 or 0).

    It counts from when it is active: added with single opt-in (the API, an import, a single opt-in list's form:
    active at once), or, added pending with double opt-in, once its person confirmed (SubscriberConfirmed).
    Anyone may post an address to a list's public form; a stranger's posts nobody confirmed must not end a trial
    or block a paid account. Once counted it stays counted, unsubscribed or suppressed (still stored), until it
    is erased (or its list deleted, which takes its counted members off at once). A pending one erased never
    counted, so takes nothing back."""
    if isinstance(event, SubscriberAdded):
        if counted is not None:
            return counted, 0  # added again (after an unsubscribe, or a copy): stored once
        active = event.payload.opt_in == "single"
        return active, 1 if active else 0
    if isinstance(event, SubscriberConfirmed):
        if counted is False and not list_deleted:
            return True, 1
        return counted, 0
    if isinstance(event, SubscriberErased):
        return None, -1 if counted and not list_deleted else 0
    return counted, 0


# One membership per address and list (`herald_shared.membership`), as billing folds it: per account, list and
# address (its hash), which subscriber id holds it, kept as its changes, each {"at": offset, "by": id} (the offset on
# the account's partition of the event that made it; the id None when nobody holds it since, ERASED when the id that
# held it was erased: no id of an erased person is kept). A decision is taken on the holder just before the event's
# offset, so an event folded again after a crash (the store holding what the fold wrote after it, in part or all)
# decides as it did the first time, and counts nothing twice nor takes back what it never counted.
HOLDER_CHANGES_KEPT = 32  # exact under the replay of up to this many changes of one address on one list
ERASED = ""
Changes = Sequence[Mapping[str, Any]]


def holder_before(changes: Changes, offset: int | None) -> str | None:
    """The id holding the address on the list just before the event at `offset` (None for an event read from no
    record: the last); None when nobody does, ERASED when an id erased since did."""
    held: str | None = None
    for change in changes:
        if offset is not None and change["at"] is not None and change["at"] >= offset:
            break
        held = change["by"]
    return held


def held_from(changes: Changes, offset: int | None, who: str | None) -> list[dict[str, Any]]:
    """The changes with the address held by `who` (None: by nobody) from the event at `offset`: that event's change
    written again (a replay writes the same), those of later events kept (a replay after a crash finds them
    written; each decides the events after it), the oldest beyond HOLDER_CHANGES_KEPT left out."""
    this = {"at": offset, "by": who}
    if offset is None:
        kept = [*(dict(c) for c in changes), this]
    else:
        kept = [*(dict(c) for c in changes if c["at"] is not None and c["at"] < offset), this,
                *(dict(c) for c in changes if c["at"] is None or c["at"] > offset)]
    return kept[-HOLDER_CHANGES_KEPT:]


def other_holder(changes: Changes, offset: int | None, event: SubscriberAdded) -> str | None:
    """The id that holds the add's address on its list just before it, when another than the add's
    (`membership.holder`, the rule subscriptions dead-letters such an add by and delivery's audience leaves it out
    by): the add is no membership, and counts nothing. None: it is one (the address is free, or this id's)."""
    p = event.payload
    held = holder_before(changes, offset)
    memberships = [] if held is None else [{"subscriber_id": held, "list_id": p.list_id,
                                            "email_sha256": p.email_sha256, "status": "active"}]
    return holder(memberships, list_id=p.list_id, email_sha256=p.email_sha256, subscriber_id=p.subscriber_id)


def released(changes: Changes, offset: int | None, subscriber_id: str, erased: bool) -> list[dict[str, Any]] | None:
    """The changes once `subscriber_id` let the address go at `offset` (its membership erased, or added again with
    another address or list); None when it did not hold it then (nothing changes). Erased, its id is kept
    nowhere: the changes before that named it name ERASED."""
    if holder_before(changes, offset) != subscriber_id:
        return None
    if erased:
        changes = [{**c, "by": ERASED} if c["by"] == subscriber_id and (
            offset is None or c["at"] is None or c["at"] < offset) else c for c in changes]
    return held_from(changes, offset, None)


def add_membership(addresses: dict[str, Any], key: str, held: str | None, event: SubscriberAdded,
                   offset: int | None) -> str | None:
    """Fold an add (at `offset`) into the address documents (`_id` -> {"changes": ...}): when another id holds its
    address on its list (`other_holder`), nothing changes and that id is returned (ERASED: an erased one); else
    None, and the address (`key`) is the add's id from the add on, the one it held before (`held`, when another:
    added again with another address or list) free."""
    changes = addresses.get(key, {}).get("changes", [])
    existing = other_holder(changes, offset, event)
    if existing is not None:
        return existing
    if held is not None and held != key:
        leave_address(addresses, held, offset, event.payload.subscriber_id, erased=False)
    if holder_before(changes, offset) != event.payload.subscriber_id:
        addresses[key] = {"_id": key, "account_id": event.account_id, "subscriber_id": event.payload.subscriber_id,
                          "changes": held_from(changes, offset, event.payload.subscriber_id)}
    return None


def leave_address(addresses: dict[str, Any], key: str, offset: int | None, subscriber_id: str, erased: bool) -> None:
    """The address document `key` once `subscriber_id` let it go at `offset` (`released`); unchanged when it did not
    hold it then."""
    doc = addresses.get(key)
    changes = released(doc["changes"], offset, subscriber_id, erased) if doc is not None else None
    if doc is not None and changes is not None:
        addresses[key] = {**doc, "subscriber_id": holder_before(changes, None) or None, "changes": changes}


def period_key(start: datetime) -> str:
    return "sent:" + time_key(start)


PAYG_PREFIX = "payg:"


def payg_key(window: str) -> str:
    """The name an account's pay-as-you-go emails of one credit window are counted under."""
    return PAYG_PREFIX + window


# The plans under which an email sent is counted: the trial's 100, credits, the monthly cap.
COUNTING_PLANS = frozenset({"trial", "pay_as_you_go", "monthly"})


def send_counted_at(account: Account, sent_at: datetime) -> datetime:
    """When an email sent at `sent_at` (the sender's clock) is counted: then, or, when no plan that counts sends was
    in force then, the start of one that began at most CLOCK_SKEW later. Delivery sends only once it has read the
    purchase; with its clock behind billing's, its sends are dated before the plan began, and counted at their
    date they would take no credit and count toward no monthly cap. None is sent before the account opened: one
    dated before is counted at the opening (on the trial)."""
    sent_at = max(sent_at, account.opened_at)
    if account.plan_at(sent_at) in COUNTING_PLANS:
        return sent_at
    return next((e.since for e in account.plan_history
                 if sent_at < e.since <= sent_at + CLOCK_SKEW and e.plan in COUNTING_PLANS), sent_at)


def counts_as_sent(event: Event, plan: str | None) -> bool:
    """Whether an outcome is an email the plan in force when it was sent counts (the trial's 100, the monthly cap,
    credits): a campaign email sent (`herald_shared.sent.email_sent`), and on the trial a test send too.
    PRODUCT.md gives the trial "at most ... 100 emails", and a test send is an email: otherwise an account could
    send tests without end on a trial nobody paid for. A paid plan's quota and credits count campaign emails only
    (tests are free there)."""
    if not email_sent(event) or not isinstance(event, (MessageSent, MessageBounced)):
        return False
    kind = event.payload.kind
    return kind == "campaign" or (kind == "test" and plan == "trial")


def _event(cls: type[Event], account_id: str, payload: object, event_id: uuid.UUID | None = None,
           at: datetime | None = None) -> Event:
    fields: dict[str, object] = {"account_id": account_id, "producer": PRODUCER, "payload": payload}
    if event_id is not None:
        fields["event_id"] = event_id
    if at is not None:
        fields["occurred_at"] = at
    return cls(**fields)


def monthly_exhausted(period_start: datetime, cap: int) -> str:
    """The name a monthly cap's exhaustion is announced under: once per period and cap, so the higher cap of a tier
    raised in the period is announced when it is reached too."""
    return f"monthly_emails:{time_key(period_start)}:{cap}"


def fixed_id(*parts: str) -> uuid.UUID:
    return uuid.uuid5(HERALD_BILLING_NAMESPACE, ":".join(parts))


def new_account_id() -> str:
    return "a" + secrets.token_hex(8)


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise InvalidUsername("a username is 3 to 100 characters: letters, digits and . _ @ + - (lower case), "
                              "starting with a letter or digit", [("body.username", "not a valid username")])
    return name


def attempted_username(body: object) -> str | None:
    """The user a login request that is not valid was for, when its body names one as a login takes it (a string
    of 1 to 100 characters without NUL, compared in lower case): whose failed attempt it is, in the audit log and
    the throttles. None when the body names nobody readable (no JSON object, no such string)."""
    value = body.get("username") if isinstance(body, dict) else None
    if not isinstance(value, str):
        return None
    name = value.strip().lower()
    return name if 0 < len(name) <= 100 and "\x00" not in name else None


def check_password(password: str, username: str, where: str = "body.password") -> None:
    """A password of 12 to 256 characters that does not contain the username, and is not one character repeated
    (NIST SP 800-63B: length and context words, no composition rules)."""
    if len(password) < PASSWORD_MIN or len(password) > PASSWORD_MAX:
        raise WeakPassword(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters",
                           [(where, f"{len(password)} characters")])
    if username in password.lower() or len(set(password)) < 2:
        raise WeakPassword("the password may not contain the username or be one character repeated",
                           [(where, "too easy to guess")])


# Sign-up, users, sessions, keys


def sign_up(account_id: str, company_name: str, registered_email: str, username: str, password_hash: str,
            accepted_terms: bool, age_18: bool, existing_user: User | None, now: datetime) -> list[Event]:
    """PRODUCT.md: the account, its main user, and the 30-day trial from accepting the terms."""
    if not accepted_terms or not age_18:
        missing = [(f"body.{name}", "must be true") for name, given in
                   (("accept_terms", accepted_terms), ("age_18", age_18)) if not given]
        raise TermsNotAccepted("signing up takes accepting the terms and attesting an age of 18 or more", missing)
    if existing_user is not None:
        raise UsernameTaken(f"the username {username!r} is taken")
    return [
        _event(AccountOpened, account_id, AccountOpenedPayload(
            company_name=company_name, registered_email=registered_email, main_username=username,
            terms_accepted_at=now), at=now),
        _event(UserAdded, account_id, UserAddedPayload(username=username, role="owner",
                                                        password_hash=password_hash, added_by=username), at=now),
        _event(PlanChanged, account_id, PlanChangedPayload(plan="trial", effective_at=now), at=now),
    ]


def add_user(actor: User, username: str, role: Role, password_hash: str, existing_user: User | None) -> list[Event]:
    require_owner(actor)
    if existing_user is not None:
        raise UsernameTaken(f"the username {username!r} is taken")
    return [_event(UserAdded, actor.account_id, UserAddedPayload(username=username, role=role,
                                                                 password_hash=password_hash,
                                                                 added_by=actor.username))]


def disable_user(actor: User, account: Account, target: User | None, keys_issued: Sequence[str]) -> list[Event]:
    """An owner disables another user: their sessions end, they cannot log in, and the API keys they issued
    (`keys_issued`, still active) are revoked, as they may know them. The main user may disable any other user,
    owners too; another owner only members. Nobody disables the main user, or themselves."""
    require_owner(actor)
    if target is None or target.account_id != actor.account_id:
        raise UserNotFound("no such user in this account")
    if target.username == actor.username:
        raise CannotDisable("a user cannot disable themselves")
    if target.username == account.main_username:
        raise CannotDisable("the account's main user cannot be disabled")
    if target.role == "owner" and actor.username != account.main_username:
        raise MainUserOnly(f"only the main user ({account.main_username}) may disable an owner")
    if target.disabled:
        return []
    return [_event(UserDisabled, actor.account_id, UserDisabledPayload(username=target.username,
                                                                       disabled_by=actor.username)),
            *(_event(ApiKeyRevoked, actor.account_id, ApiKeyRevokedPayload(
                key_id=key_id, revoked_by=actor.username, reason=f"its issuer {target.username} was disabled"))
              for key_id in keys_issued)]


def change_password(user: User, current_matches: bool, new_hash: str, ip: str | None = None,
                    user_agent: str | None = None, session_id: str | None = None) -> list[Event]:
    """The change, with where it came from: it is in the account's audit log (PRODUCT.md: who, when, from where)."""
    if not current_matches:
        raise WrongPassword("the current password is not right")
    return [_event(PasswordChanged, user.account_id, PasswordChangedPayload(
        username=user.username, password_hash=new_hash, ip=ip, user_agent=user_agent, session_id=session_id))]


def password_marker(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def new_password_reset_id() -> str:
    return "pr" + secrets.token_hex(16)


def request_password_reset(user: User | None, account: Account | None, request_id: str, now: datetime,
                           ip: str | None = None, user_agent: str | None = None) -> tuple[PasswordReset | None,
                                                                                          list[Event]]:
    """PRODUCT.md: users can change their password at any time, a forgotten one too. A request for an existing,
    enabled user of an open account is kept and announced (delivery mails the link to the account's registered
    address); any other is nothing, and the asker is told the same."""
    if user is None or account is None or user.disabled or account.deleted_at is not None \
            or user.account_id != account.account_id:
        return None, []
    # Whole seconds: the link's token signs the expiry as both services read it back.
    expires_at = (now + PASSWORD_RESET_VALIDITY).replace(microsecond=0)
    reset = PasswordReset(request_id, user.account_id, user.username, now, expires_at,
                          password_marker(user.password_hash))
    return reset, [_event(PasswordResetRequested, user.account_id, PasswordResetRequestedPayload(
        request_id=request_id, username=user.username, expires_at=expires_at, ip=ip, user_agent=user_agent),
        at=now)]


def check_password_reset(reset: PasswordReset | None, token_matches: bool, user: User | None,
                         account: Account | None, now: datetime) -> PasswordReset:
    """Whether a reset link may set a new password now: its token right, unused (a few wrong tokens burn it),
    within its hour, its user still enabled in an open account and the password unchanged since the request."""
    if reset is None or not token_matches:
        raise PasswordResetNotFound("no such password reset, or not its token")
    if reset.used or reset.wrong_tokens >= PASSWORD_RESET_TRIES:
        raise PasswordResetUsed("this password reset link was used already (or too many wrong tokens were tried "
                                "with it); ask for a new one")
    if now >= reset.expires_at:
        raise PasswordResetExpired("this password reset link has expired (it works for an hour); ask for a new one")
    if user is None or user.disabled or account is None or account.deleted_at is not None \
            or user.account_id != reset.account_id:
        raise PasswordResetVoid("the user was disabled or the account closed since the reset was asked for")
    if password_marker(user.password_hash) != reset.password_marker:
        raise PasswordResetVoid("the password was changed since the reset was asked for")
    return reset


def complete_password_reset(reset: PasswordReset, user: User, new_hash: str, ip: str | None = None,
                            user_agent: str | None = None) -> list[Event]:
    """The new password (checked by `check_password_reset` first): every session of the user ends with it."""
    return [_event(PasswordChanged, user.account_id, PasswordChangedPayload(
        username=user.username, password_hash=new_hash, ip=ip, user_agent=user_agent,
        reset_request_id=reset.request_id))]


def log_out(user: User, session_id: str) -> list[Event]:
    return [_event(LoggedOut, user.account_id, LoggedOutPayload(username=user.username, session_id=session_id))]


def session_valid(user: User | None, account_id: str, issued_at: datetime, ended: bool) -> bool:
    """A session holds while its user is active, has not changed their password since, and did not log out."""
    if user is None or user.disabled or user.account_id != account_id or ended:
        return False
    return user.sessions_valid_from is None or issued_at >= user.sessions_valid_from


def issue_key(actor: User, account: Account, key_id: str, key_hash: str, label: str | None) -> list[Event]:
    require_owner(actor)
    _open(account)
    return [_event(ApiKeyIssued, actor.account_id, ApiKeyIssuedPayload(key_id=key_id, key_hash=key_hash,
                                                                       label=label, issued_by=actor.username))]


def revoke_key(actor: User, key_account: str | None, revoked: bool, key_id: str, reason: str | None) -> list[Event]:
    require_owner(actor)
    if key_account != actor.account_id:
        raise KeyNotFound("no such API key in this account")
    if revoked:
        return []
    return [_event(ApiKeyRevoked, actor.account_id, ApiKeyRevokedPayload(key_id=key_id, revoked_by=actor.username,
                                                                         reason=reason))]


def require_owner(actor: User) -> None:
    if actor.role != "owner":
        raise OwnersOnly("only an owner of the account may do this")


# Staff review (PRODUCT.md, "Review")


def approve(account: Account | None, reviewer: str, note: str | None) -> list[Event]:
    current = _existing(account)
    if current.review == "approved":
        return []
    return [_event(AccountApproved, current.account_id, AccountApprovedPayload(reviewer=reviewer, note=note))]


def reject(account: Account | None, reviewer: str, reasons: list[str], now: datetime) -> list[Event]:
    """A rejected account is sold nothing more (RejectedAccount) and its monthly plan is not renewed: it ends at the
    end of its paid period, at once when that is over already (a renewal left open is void, never charged)."""
    current = _existing(account)
    if current.review != "in_review":
        raise AlreadyReviewed(f"the account was already {current.review}")
    return [_event(AccountRejected, current.account_id, AccountRejectedPayload(reviewer=reviewer, reasons=reasons)),
            *end_of_agreement(replace(current, review="rejected"), now)]


def _not_rejected(account: Account) -> None:
    if account.review == "rejected":
        raise RejectedAccount("staff rejected this account in review: it cannot buy a plan or credits")


def _existing(account: Account | None) -> Account:
    if account is None:
        raise AccountNotFound("no such account")
    return account


# The plan: what usage allows (PRODUCT.md, "Plans and billing")


def enforce(account: Account, usage: Usage, now: datetime,
            calendar: BillingCalendar = PLATFORM_CALENDAR) -> list[Event]:
    """The events an account's plan calls for, given what it holds and sent, each at most once (fixed ids: the
    same decision taken again, after a crash or by another replica, is the same event).

    Trial: it ends at day 30 or as soon as more than 20 subscribers are stored (at any moment: their peak, so
    subscribers deleted in the same batch do not save it), and stays ended; 100 campaign emails exhaust it.
    Monthly: more subscribers stored than the tier allows, or 109 x the tier's limit of emails sent in the
    billing period (prorated over the limits it held when the tier was raised in the period: `Account.send_cap`),
    block sending until an upgrade, a reduction or the next period."""
    a = account.account_id
    if account.on_trial:
        peak = max(usage.subscribers, usage.trial_peak_subscribers)
        if peak > TRIAL_SUBSCRIBERS or now >= account.trial_ends_at:
            reason: Literal["expired", "subscriber_limit_exceeded"] = (
                "subscriber_limit_exceeded" if peak > TRIAL_SUBSCRIBERS else "expired")
            stored = peak if reason == "subscriber_limit_exceeded" else usage.subscribers
            detail = (f"{stored} subscribers stored; the trial allows {TRIAL_SUBSCRIBERS}"
                      if reason == "subscriber_limit_exceeded" else f"the {TRIAL_DAYS}-day trial is over")
            return [_event(TrialEnded, a, TrialEndedPayload(reason=reason, subscribers=stored,
                                                            emails_sent=usage.trial_emails),
                           fixed_id("trial-ended", a), at=now),
                    *gate(account, "trial_ended", True, detail + "; choose a plan to send again (lists stay "
                                                                  "manageable)", now)]
        if usage.trial_emails >= TRIAL_EMAILS and "trial_emails" not in account.exhausted:
            return [_event(QuotaExhausted, a, QuotaExhaustedPayload(
                        quota="trial_emails", limit=TRIAL_EMAILS, used=usage.trial_emails,
                        period_start=account.opened_at), fixed_id("exhausted", "trial_emails", a), at=now),
                    *gate(account, "trial_quota_reached", True, f"{usage.trial_emails} of the trial's "
                                                                f"{TRIAL_EMAILS} emails sent; choose a plan to "
                                                                "send more", now)]
        return []
    # Every gate is decided every time, closed only under the plan it belongs to: a block of an earlier plan
    # (credits run out, then a monthly plan bought) is lifted with the change.
    events: list[Event] = []
    over_tier, quota_reached, credits_gone = False, False, False
    tier_detail = quota_detail = None
    if account.plan == "monthly" and account.tier is not None and account.billing_day is not None:
        over_tier = usage.subscribers > account.tier
        tier_detail = (f"{usage.subscribers} subscribers stored; the tier allows {account.tier}: upgrade or remove "
                       "subscribers")
        start, end = account.period(now, calendar)
        cap, sent = account.send_cap(start, end), usage.period_emails(start)
        quota_reached = sent >= cap
        quota_detail = f"{sent} of this period's {cap} emails sent: upgrade, or wait for the next period"
        exhausted = monthly_exhausted(start, cap)
        # "monthly_emails:<period>" without the cap: announced by a version before caps were named; taken for this
        # cap, so an upgrade of Herald does not announce it again (a tier raised in that period is not announced).
        announced = exhausted in account.exhausted or f"monthly_emails:{time_key(start)}" in account.exhausted
        if quota_reached and not announced:
            events.append(_event(QuotaExhausted, a, QuotaExhaustedPayload(
                quota="monthly_emails", limit=cap, used=sent, period_start=start), fixed_id("exhausted", exhausted, a),
                at=now))
    if account.plan == "pay_as_you_go":
        events += expire_credits(account, usage, now)
        credits_gone = credits_left(account, usage, now) <= 0
        episode = f"credits:{account.unblocks.get('credits_exhausted', 0)}"
        if credits_gone and episode not in account.exhausted:
            bought = sum(b.credits for b in account.credit_batches)
            events.append(_event(QuotaExhausted, a, QuotaExhaustedPayload(
                quota="credits", limit=bought, used=min(usage.payg_emails, bought)),
                fixed_id("exhausted", episode, a), at=now))
    events += gate(account, "subscriber_limit_exceeded", over_tier, tier_detail, now)
    events += gate(account, "monthly_quota_reached", quota_reached, quota_detail, now)
    events += gate(account, "credits_exhausted", credits_gone, "no email credits left: buy more to send again", now)
    events += gate(account, "trial_ended", account.plan == "trial_ended", None, now)
    events += gate(account, "trial_quota_reached", False, None, now)
    events += gate(account, "no_plan", account.plan == "none", "no plan: choose one to send again", now)
    return events


def gate(account: Account, reason: BlockReason, closed: bool, detail: str | None, now: datetime) -> list[Event]:
    """Block sending for `reason` when it should be and is not, lift it when it is and should not be. Each
    block and its lifting form an episode, numbered by how often the reason was lifted before."""
    a, episode = account.account_id, str(account.unblocks.get(reason, 0))
    if closed and reason not in account.blocked:
        return [_event(SendingBlocked, a, SendingBlockedPayload(reason=reason, detail=detail),
                       fixed_id("blocked", reason, a, episode), at=now)]
    if not closed and reason in account.blocked:
        return [_event(SendingUnblocked, a, SendingUnblockedPayload(reason=reason),
                       fixed_id("unblocked", reason, a, episode), at=now)]
    return []


# The send allowance: what delivery may still send, so a quota is kept before each email rather than announced
# after the one that reached it (README, "The bound on messages past a quota")

ALLOWANCE_NAMESPACE = "send-allowance"


def send_allowance(account: Account, usage: Usage, now: datetime,
                   calendar: BillingCalendar = PLATFORM_CALENDAR) -> tuple[int | None, tuple[SentKind, ...]]:
    """How many more emails the account may send under its plan now, and which kinds count toward them
    (`counts_as_sent`): the trial's 100 less what it sent (tests included), the credits left (valid now, earliest
    expiry first: `credits_left`), the monthly cap of the current period less what the period sent (prorated over
    a raise: `Account.send_cap`). Nothing may be sent without a plan (its trial ended, cancelled, closed: blocked
    anyway, SendingBlocked says why); None where billing's quotas set no limit (a monthly plan folded without its
    tier or billing day)."""
    if account.deleted_at is not None or account.plan in ("trial_ended", "none"):
        return 0, ("campaign",)
    if account.plan == "trial":
        return max(0, TRIAL_EMAILS - usage.trial_emails), SENT_KINDS
    if account.plan == "pay_as_you_go":
        return max(0, credits_left(account, usage, now)), ("campaign",)
    if account.plan == "monthly" and account.tier is not None and account.billing_day is not None:
        start, end = account.period(now, calendar)
        return max(0, account.send_cap(start, end) - usage.period_emails(start)), ("campaign",)
    return None, ("campaign",)


def allowance_until(account: Account, usage: Usage, now: datetime) -> datetime | None:
    """When the allowance reckoned now stops holding other than by sends: the trial's end; the expiry of the
    earliest batch of credits with some left (those expiring unused leave less; a sender stops then until billing
    reckons again). None where only sends lower it: a monthly cap (the next period only raises it), no plan."""
    if account.deleted_at is not None:
        return None
    if account.plan == "trial":
        return account.trial_ends_at
    if account.plan == "pay_as_you_go":
        used, _ = credit_use(account, usage)
        return min((b.expires_at for b in account.credit_batches
                    if b.expired is None and b.expires_at > now and b.credits - used[b.batch_id] > 0), default=None)
    return None


def allowance_changed(account: Account, usage: Usage, now: datetime, calendar: BillingCalendar = PLATFORM_CALENDAR,
                      last: SendAllowance | None = None) -> Event | None:
    """SendAllowanceChanged when what the account may send differs from what was told last (`same_terms`: not
    for each send counted; `last`: the newer of the account's folded one and one published since, not folded
    yet), else None. Its sequence is one past the last's and its id fixed by the account, sequence and terms:
    decided again (a crash before the fold), it is the same event."""
    told = max((a for a in (account.allowance, last) if a is not None), key=lambda a: a.sequence, default=None)
    remaining, counts = send_allowance(account, usage, now, calendar)
    until = allowance_until(account, usage, now) if remaining else None  # nothing left: no end to tell
    as_of = {kind: usage.lifetime_sent.get(kind, 0) for kind in SENT_KINDS}
    wanted = SendAllowance(remaining, counts, as_of["campaign"], as_of["test"], told.sequence + 1 if told else 1,
                           until)
    if wanted.same_terms(told):
        return None
    a = account.account_id
    terms = [str(remaining), ",".join(counts), str(as_of["campaign"]), str(as_of["test"])]
    return _event(SendAllowanceChanged, a, SendAllowanceChangedPayload(
        remaining=remaining, counts=[k for k in SENT_KINDS if k in counts],
        as_of=SentCounts(campaign=as_of["campaign"], test=as_of["test"]), sequence=wanted.sequence, until=until),
        fixed_id(ALLOWANCE_NAMESPACE, a, str(wanted.sequence), *terms, *([until.isoformat()] if until else [])),
        at=now)


def told_allowance(event: SendAllowanceChanged) -> SendAllowance:
    p = event.payload
    return SendAllowance(p.remaining, tuple(p.counts), p.as_of.campaign, p.as_of.test, p.sequence, p.until)


# Buying: a monthly plan, an upgrade, credits, a renewal. Each is an invoice, recorded first, then charged; what a
# purchase buys is recorded once its payment succeeded (settle_purchase), and a declined purchase is voided.


def invoice_number(year: int, last: int) -> str:
    """The next invoice number of a year, after the last one issued (0: none yet)."""
    return f"{year}-{last + 1:06d}"


def _invoice(account: Account, config: Plans, number: str, kind: Literal["plan", "renewal", "upgrade", "credits"],
             lines: list[tuple[str, int]], start: datetime, end: datetime, now: datetime,
             purchase: PurchaseTerms | None = None) -> InvoiceIssued:
    """An invoice naming the seller and the customer as they are now, with the VAT their details call for."""
    net = sum(amount for _, amount in lines)
    treatment = invoice_vat(account.billing_details, config.vat_percent)
    vat_amount = plans.vat_cents(net, treatment.percent)
    return InvoiceIssued(account_id=account.account_id, producer=PRODUCER, occurred_at=now,
                         payload=InvoiceIssuedPayload(
                             invoice_id=number, amount_cents=net + vat_amount, period_start=start, period_end=end,
                             due_at=now, lines=[InvoiceLine(description=d, amount_cents=c) for d, c in lines],
                             kind=kind, net_cents=net, vat_cents=vat_amount, vat_percent=str(treatment.percent),
                             purchase=purchase, seller=_party(config.seller), customer=_party(account.billing_details),
                             vat_treatment=treatment.kind, vat_note=treatment.note))


def _party(party: Party | None) -> InvoiceParty | None:
    if party is None:
        return None
    return InvoiceParty(name=party.name, address=list(party.address), country=party.country,
                        vat_number=party.vat_number)


# VAT of an invoice (Council Directive 2006/112/EC; the platform is a Latvian company selling an electronically
# supplied service)

REVERSE_CHARGE_NOTE = ("Reverse charge: VAT to be accounted for by the customer (Council Directive 2006/112/EC, "
                       "art. 196).")
OUTSIDE_EU_NOTE = ("Outside the scope of EU VAT: the customer is established outside the EU (Council Directive "
                   "2006/112/EC, art. 44; art. 59 for a customer who is not a business).")


@dataclass(frozen=True)
class InvoiceVat:
    kind: VatTreatment
    percent: Decimal
    note: str | None


def invoice_vat(customer: Party | None, latvian_percent: Decimal) -> InvoiceVat:
    """The VAT treatment of an invoice, from the customer's billing details when it is issued:
    - in Latvia, or no details given: Latvian VAT at the configured rate;
    - a business in another EU member state, with a VAT number of it: 0%, reverse charge (art. 196), the number on
      the invoice (its format checked; whether it is registered is not: VIES is not reachable);
    - outside the EU (the French overseas departments and Åland too, outside its VAT area): 0%, outside the scope;
    - anyone else in the EU (no VAT number: a consumer): Latvian VAT still. Their own country's rate through the
      One-Stop Shop is not built; Latvian VAT is right only while the platform's sales to consumers in other member
      states stay under EUR 10,000 a year (art. 59c)."""
    if customer is None or customer.country == vat.SELLER_COUNTRY:
        return InvoiceVat("domestic", latvian_percent, None)
    if customer.country not in vat.EU_MEMBER_STATES:
        return InvoiceVat("outside_eu", Decimal(0), OUTSIDE_EU_NOTE)
    if customer.vat_number is not None:
        return InvoiceVat("reverse_charge", Decimal(0), REVERSE_CHARGE_NOTE)
    return InvoiceVat("eu_consumer", latvian_percent, None)


def billing_details(legal_name: str, address: Sequence[str], country: str, vat_number: str | None) -> Party:
    """Billing details as given, checked: a legal name and 1 to 4 address lines that are not blank, an assigned ISO
    3166-1 alpha-2 country code (any case), and, when given, a VAT number of that country if it is an EU member
    state (with its prefix: EL for Greece; its format only). Trimmed, the code and number in upper case."""
    errors: list[tuple[str, str]] = []
    name, lines = legal_name.strip(), tuple(line.strip() for line in address)
    if not name:
        errors.append(("body.legal_name", "blank"))
    if not 1 <= len(lines) <= 4:
        errors.append(("body.address", "1 to 4 lines"))
    errors += [(f"body.address.{n}", "blank") for n, line in enumerate(lines) if not line]
    code = country.strip().upper()
    if code not in vat.COUNTRIES:
        errors.append(("body.country", "not an ISO 3166-1 alpha-2 country code (LV, DE, US...)"))
    number = None
    if vat_number is not None and code in vat.COUNTRIES:
        try:
            number = vat.check_vat_number(code, vat_number)
        except vat.VatNumberInvalid as exc:
            errors.append(("body.vat_number", str(exc)))
    if errors:
        raise BillingDetailsInvalid("the billing details are not complete or not valid", errors)
    return Party(name, lines, code, number)


def change_billing_details(actor: User, account: Account, details: Party) -> list[Event]:
    """Owners set who the invoices are made out to; every invoice issued from then on names them and takes its
    VAT treatment from them (issued ones stay as they were)."""
    require_owner(actor)
    _open(account)
    if details == account.billing_details:
        return []
    return [_event(BillingDetailsChanged, account.account_id, BillingDetailsChangedPayload(
        legal_name=details.name, address=list(details.address), country=details.country,
        vat_number=details.vat_number, changed_by=actor.username))]


def pending_purchases(account: Account) -> list[OpenInvoice]:
    """Purchases recorded and not settled yet (their charge, or its outcome's recording, was interrupted)."""
    return [i for i in account.open_invoices if i.purchase is not None]


def _no_purchase_pending(account: Account) -> None:
    if pending_purchases(account):
        raise PurchasePending("an earlier purchase is still being charged; try again in a moment")


def buy_monthly(account: Account, usage: Usage, config: Plans, subscribers: int, edition: Edition,
                number: str, now: datetime, calendar: BillingCalendar = PLATFORM_CALENDAR) -> InvoiceIssued | None:
    """Choose a monthly tier, or raise it (PRODUCT.md: at any time, never lowered; mid-period, the difference
    for the rest of the period is charged at once): the invoice to record and charge. None: that is the plan
    already. "Never lowered" is the subscriber limit: a higher limit is a raise whatever the edition (PRO 500 to
    standard 1000 too), and costs the difference of the fees when the new one is higher, else nothing this period
    (no refunds; the lower fee from the next one). At the same limit, standard to PRO is a raise, PRO to standard
    is refused (EditionCannotBeLowered). The billing day is the first payment's day on the platform's calendar."""
    _open(account)
    _not_rejected(account)
    _no_purchase_pending(account)
    tier = config.tier(subscribers)
    if tier is None:
        offered = ", ".join(str(t.subscribers) for t in config.tiers)
        raise TierNotOffered(f"no tier of {subscribers} subscribers; the tiers are {offered}",
                             [("body.subscribers", "not a tier")])
    if account.payment_method is None:
        raise NoPaymentMethod("set a payment method first (PUT /v1/account/payment-method)")
    fee = tier.fee(edition)
    if account.plan == "monthly" and account.tier is not None and account.fee_cents is not None:
        if account.cancel_at is not None:
            _cancellation_pending(account.cancel_at, now)
        if (tier.subscribers, edition) == (account.tier, account.edition):
            return None
        if tier.subscribers < account.tier:
            raise TierCannotBeLowered(f"the plan is {account.tier} subscribers ({account.edition}); a tier is "
                                      "raised, never lowered, during the agreement")
        if tier.subscribers == account.tier and edition == "standard":
            raise EditionCannotBeLowered(f"the plan is {account.tier} subscribers (pro); at the same subscriber "
                                         "limit PRO is not changed back to standard during the agreement: raise the "
                                         "limit, or cancel and choose again")
        if account.paid_until is None or account.paid_until <= now or account.open_invoices:
            raise RenewalPending("the paid period is over and its renewal is not paid yet: pay the open invoice "
                                 "(or wait a moment for the renewal), then upgrade")
        start, end = account.period(now, calendar)
        difference = plans.prorated(max(0, fee - account.fee_cents), start, end, now)
        line = (f"Upgrade from {account.tier} ({account.edition}) to {tier.subscribers} subscribers ({edition}), "
                f"{calendar.day(now).isoformat()} to {calendar.day(end).isoformat()}", difference)
        return _invoice(account, config, number, "upgrade", [line], now, end, now,
                        _plan_terms(tier, edition, account.billing_day or calendar.billing_day(now)))
    billing_day = calendar.billing_day(now)
    end = calendar.next_billing_date(billing_day, now, now)
    line = (f"Monthly plan, {tier.subscribers} subscribers ({edition}), {calendar.day(now).isoformat()} to "
            f"{calendar.day(end).isoformat()}", fee)
    return _invoice(account, config, number, "plan", [line], now, end, now, _plan_terms(tier, edition, billing_day))


def _cancellation_pending(cancel_at: datetime, now: datetime) -> None:
    """Choosing the plan again, or raising it, while it is cancelled is refused, naming the withdrawal: the
    customer says which they mean. Choosing it again used to answer 200 and change nothing, so the plan ended all
    the same; a raise withdrawing the cancellation unasked would renew, and charge, a plan its customer had
    cancelled. (To raise the tier for the rest of a cancelled plan: withdraw, raise, cancel again.)"""
    if cancel_at <= now:
        raise CancellationTookEffect(f"the plan was cancelled and ends at {cancel_at.isoformat()}: once it has "
                                     "ended (in a moment), a plan chosen is a new one")
    raise CancellationPending(f"the plan is cancelled and ends at {cancel_at.isoformat()}: to keep it, withdraw the "
                              "cancellation first (POST /v1/account/cancellation/withdrawal), then choose or raise "
                              "the tier")


def _plan_terms(tier: plans.Tier, edition: Edition, billing_day: int) -> PurchaseTerms:
    return PurchaseTerms(tier_subscriber_limit=tier.subscribers, edition=edition,
                         monthly_send_cap=tier.monthly_send_cap, monthly_fee_cents=tier.fee(edition),
                         billing_day=billing_day)


def settle_purchase(account: Account, invoice_id: str, declined: str | None, now: datetime) -> list[Event]:
    """A purchase's invoice once charged: paid, then what it buys (and a payment block lifted where it may be);
    declined (None: paid), voided, buying nothing. Fixed ids: settled twice (a request and the plan clock
    after a crash) it is the same events; settled already, nothing."""
    invoice = next((i for i in pending_purchases(account) if i.invoice_id == invoice_id), None)
    if invoice is None or invoice.purchase is None:
        return []
    a = account.account_id
    if declined is not None:
        return [_event(InvoiceVoided, a, InvoiceVoidedPayload(invoice_id=invoice_id, reason="payment_declined"),
                       fixed_id("purchase-voided", a, invoice_id), at=now)]
    terms = PurchaseTerms.model_validate(invoice.purchase)
    bought: list[Event] = [_event(PaymentSucceeded, a, PaymentSucceededPayload(
        invoice_id=invoice_id, amount_cents=invoice.amount_cents), fixed_id("purchase-paid", a, invoice_id), at=now)]
    since = invoice.period_start  # the purchase's time
    if terms.credits is not None and terms.credits_expire_at is not None:
        bought.append(_event(CreditsPurchased, a, CreditsPurchasedPayload(
            batch_id=f"credits-{invoice_id}", credits=terms.credits, expires_at=terms.credits_expire_at,
            price_cents=invoice.net_cents if invoice.net_cents is not None else invoice.amount_cents),
            fixed_id("purchase-credits", a, invoice_id), at=now))
        if account.plan != "pay_as_you_go":
            bought.append(_event(PlanChanged, a, PlanChangedPayload(plan="pay_as_you_go", effective_at=since),
                                 fixed_id("purchase-plan", a, invoice_id), at=now))
    else:
        bought.append(_event(PlanChanged, a, PlanChangedPayload(
            plan="monthly", edition=terms.edition or "standard", tier_subscriber_limit=terms.tier_subscriber_limit,
            monthly_send_cap=terms.monthly_send_cap, monthly_fee_cents=terms.monthly_fee_cents,
            billing_day=terms.billing_day, effective_at=since), fixed_id("purchase-plan", a, invoice_id), at=now))
    return [*bought, *_payment_went_through(account, now)]


def abandon_purchase(account: Account, invoice_id: str, now: datetime) -> list[Event]:
    """A deleted account's purchase that the provider never charged: void (`account_deleted`), never charged
    now for an account that is gone. The same fixed id as a declined purchase's void: an invoice is voided
    once."""
    if not any(i.invoice_id == invoice_id for i in pending_purchases(account)):
        return []
    return [_event(InvoiceVoided, account.account_id, InvoiceVoidedPayload(invoice_id=invoice_id,
                                                                           reason="account_deleted"),
                   fixed_id("purchase-voided", account.account_id, invoice_id), at=now)]


def _payment_went_through(account: Account, now: datetime) -> list[Event]:
    """PRODUCT.md: sending is suspended after a failed payment "until a payment succeeds": one did, so the
    block is lifted, unless a declined invoice is still open (its next charge decides)."""
    declined = any(i.attempts for i in account.open_invoices)
    return [] if declined else gate(account, "payment_failed", False, None, now)


def renewal(account: Account, config: Plans, number: str, now: datetime,
            calendar: BillingCalendar = PLATFORM_CALENDAR) -> InvoiceIssued | None:
    """The invoice of the next period of a monthly plan once the paid one ended (None: nothing to renew; a plan
    that ends then, cancelled or of a rejected account, is ended by `end_of_agreement`)."""
    if account.plan != "monthly" or account.paid_until is None or account.paid_until > now or \
            account.fee_cents is None or account.billing_day is None or account.anchor is None:
        return None
    ends = account.agreement_ends_at
    if account.deleted_at is not None or (ends is not None and ends <= account.paid_until):
        return None
    if purge_is_due(account, now, calendar):
        return None  # purged now: a period it would never have is not charged
    if any(i.period_start == account.paid_until for i in account.open_invoices):
        return None  # issued already; its payment is retried
    start = account.paid_until
    end = calendar.next_billing_date(account.billing_day, account.anchor, start)
    line = (f"Monthly plan, {account.tier} subscribers ({account.edition}), {calendar.day(start).isoformat()} to "
            f"{calendar.day(end).isoformat()}", account.fee_cents)
    return _invoice(account, config, number, "renewal", [line], start, end, now)


def payment_outcome(account: Account, invoice_id: str, amount_cents: int, declined: str | None,
                    attempt: int, now: datetime) -> list[Event]:
    """After charging an open invoice automatically: paid (and the payment block lifted), or failed (and
    sending blocked until a payment succeeds; the account is emailed: delivery sends the notice)."""
    a = account.account_id
    if declined is None:
        return [_event(PaymentSucceeded, a, PaymentSucceededPayload(invoice_id=invoice_id, amount_cents=amount_cents),
                       at=now),
                *gate(account, "payment_failed", False, None, now)]
    return [_event(PaymentFailed, a, PaymentFailedPayload(invoice_id=invoice_id, amount_cents=amount_cents,
                                                          reason=declined[:1000], attempt=attempt), at=now),
            *gate(account, "payment_failed", True, f"the payment of invoice {invoice_id} failed: {declined}"[:1000],
                  now)]


# Pay-as-you-go: every campaign email sent takes a credit of a batch valid when it was sent, earliest expiry first


def _bought_key(batch: CreditBatch) -> str:
    return time_key(batch.bought_at) if batch.bought_at is not None else ""


def credit_window(account: Account, at: datetime) -> str:
    """The credit window holding `at`, named by its start: the latest instant at or before `at` when a batch of
    the account was bought or expired ("" before any). The same batches are valid throughout a window, so
    emails counted per window (`Usage.payg_sent`) are spent by the time they were sent, whenever they are
    counted: a batch bought or expired later changes no window of an earlier email."""
    sent = time_key(at)
    return max((k for b in account.credit_batches for k in (_bought_key(b), time_key(b.expires_at)) if k <= sent),
               default="")


def credit_use(account: Account, usage: Usage) -> tuple[dict[str, int], int]:
    """How many credits each batch has given, and how many emails were sent without one. The emails of each
    credit window, in time order, take credits from the batches valid in it (bought, not expired), earliest
    expiry first: a batch never gives a credit to an email sent after it expired. An email sent when none was
    left (past the bound) is taken from the next batch bought. A batch whose expiry was told keeps what it
    had given then (CreditsExpired: how many expired unused)."""
    room = {b.batch_id: b.credits if b.expired is None else b.credits - b.expired for b in account.credit_batches}
    used = dict.fromkeys(room, 0)

    def take(emails: int, batches: list[CreditBatch]) -> int:
        for batch in batches:
            given = min(emails, room[batch.batch_id] - used[batch.batch_id])
            used[batch.batch_id] += given
            emails -= given
        return emails

    bought = sorted(account.credit_batches, key=lambda b: (_bought_key(b), b.batch_id))
    by_expiry = sorted(account.credit_batches, key=lambda b: b.expires_at)
    unpaid = 0  # sent without a credit: taken from the next batch bought
    for window, emails in sorted(usage.payg_sent.items()):
        while bought and _bought_key(bought[0]) <= window:
            unpaid = take(unpaid, [bought.pop(0)])
        unpaid += take(emails, [b for b in by_expiry if _bought_key(b) <= window < time_key(b.expires_at)])
    return used, take(unpaid, bought)


def credits_left(account: Account, usage: Usage, now: datetime) -> int:
    used, _ = credit_use(account, usage)
    return sum(b.credits - used[b.batch_id] for b in account.credit_batches
               if b.expired is None and b.expires_at > now)


def expire_credits(account: Account, usage: Usage, now: datetime) -> list[Event]:
    used, _ = credit_use(account, usage)
    return [_event(CreditsExpired, account.account_id, CreditsExpiredPayload(
                batch_id=b.batch_id, credits_expired=b.credits - used[b.batch_id]),
            fixed_id("credits-expired", account.account_id, b.batch_id), at=now)
            for b in sorted(account.credit_batches, key=lambda b: b.expires_at)
            if b.expired is None and b.expires_at <= now]


def buy_credits(account: Account, config: Plans, credits: int, number: str, now: datetime,
                calendar: BillingCalendar = PLATFORM_CALENDAR) -> InvoiceIssued:
    """A pack of credits (PRODUCT.md: bought in advance, each batch with an expiry date): the invoice to record
    and charge; once paid, the account is on pay-as-you-go. Not on a monthly plan: that one ends by
    cancellation first. Not for an account staff rejected."""
    _open(account)
    _not_rejected(account)
    _no_purchase_pending(account)
    pack = config.pack(credits)
    if pack is None:
        offered = ", ".join(str(p.credits) for p in config.packs) or "none"
        raise PackNotOffered(f"no pack of {credits} credits; the packs are {offered}",
                             [("body.credits", "not a pack")])
    if account.plan == "monthly":
        raise OnAMonthlyPlan("credits are for pay-as-you-go; a monthly plan is cancelled first")
    if account.payment_method is None:
        raise NoPaymentMethod("set a payment method first (PUT /v1/account/payment-method)")
    expires_at = now + timedelta(days=pack.validity_days)
    line = (f"{pack.credits:,} email credits, valid until {calendar.day(expires_at).isoformat()}", pack.price_cents)
    return _invoice(account, config, number, "credits", [line], now, expires_at, now,
                    PurchaseTerms(credits=pack.credits, credits_expire_at=expires_at))


def set_payment_method(actor: User, provider: str, reference: str) -> list[Event]:
    require_owner(actor)
    return [_event(PaymentMethodSet, actor.account_id, PaymentMethodSetPayload(provider=provider,
                                                                               reference=reference))]


def cancel(account: Account, channel: Literal["self_service", "request"], received_at: datetime,
           requested_by: str, *, now: datetime, paid: Sequence[tuple[str, datetime]] = (),
           calendar: BillingCalendar = PLATFORM_CALENDAR) -> list[Event]:
    """PRODUCT.md: cancelling takes effect at the end of the paid period, no refunds; a request (not
    self-service) must arrive at least 2 business days before the next payment date, or it takes effect at
    the end of the period after. The next payment date is the one that was next when the request arrived,
    however late staff record it: a renewal for a period from then on that is still open is void; one paid
    already is refused (CancellationNeedsRefund, naming the invoices of `paid`: (invoice, period start) of
    the account's paid plan and renewal invoices). A request cannot have arrived after `now` (beyond clock
    skew). A cancellation whose effective time is past already (cancelled while the renewal was declined) ends
    the plan in the same commit (`end_of_agreement`)."""
    if received_at > now + CLOCK_SKEW:
        raise ReceivedInTheFuture(f"a request received at {received_at.isoformat()} has not arrived yet "
                                  f"(now {now.isoformat()})")
    if account.plan != "monthly" or account.paid_until is None or account.billing_day is None or \
            account.anchor is None:
        raise NotOnAMonthlyPlan("only a monthly plan is cancelled; credits simply expire")
    if account.cancel_at is not None:
        raise AlreadyCancelled(f"the plan already ends at {account.cancel_at.isoformat()}")
    effective = account.paid_until
    if channel == "request":
        # The payment date that was next when the request arrived (the first one after the plan began).
        _, due = account.period(account.anchor if received_at <= account.anchor else received_at.astimezone(UTC),
                                calendar)
        in_time = calendar.business_days_before(received_at, due) >= 2
        effective = due if in_time else calendar.next_billing_date(account.billing_day, account.anchor, due)
        if effective < account.paid_until:
            _refuse_paid_period(received_at, due, in_time, effective, paid)
    cancelled = _event(CancellationRequested, account.account_id, CancellationRequestedPayload(
        channel=channel, received_at=received_at, effective_at=effective, requested_by=requested_by))
    return [cancelled, *end_of_agreement(replace(account, cancel_at=to_stored_precision(effective)), now)]


def withdraw_cancellation(account: Account, channel: Literal["self_service", "request"], received_at: datetime,
                          withdrawn_by: str, *, now: datetime) -> list[Event]:
    """A customer who changes their mind before the cancellation takes effect keeps the plan: it is renewed at the
    end of the paid period as if never cancelled. Not once its time has come (the plan is over: chosen again, not
    kept), nor for an account staff rejected (its plan ends with its paid period whatever). A withdrawal staff
    record (`request`) cannot have arrived after now."""
    if received_at > now + CLOCK_SKEW:
        raise ReceivedInTheFuture(f"a request received at {received_at.isoformat()} has not arrived yet "
                                  f"(now {now.isoformat()})")
    _open(account)
    if account.plan == "none":
        raise CancellationTookEffect("the plan has ended already: choose a plan again (PUT /v1/account/plan)")
    if account.plan != "monthly" or account.cancel_at is None:
        raise NoPendingCancellation("no cancellation is pending" + (": the plan goes on" if account.plan == "monthly"
                                                                    else " (only a monthly plan is cancelled)"))
    if account.cancel_at <= now:
        raise CancellationTookEffect(f"the cancellation took effect at {account.cancel_at.isoformat()}: the plan is "
                                     "over; choose a plan again (PUT /v1/account/plan)")
    if account.review == "rejected":
        raise RejectedAccount("staff rejected this account in review: its plan ends with its paid period, "
                              "cancelled or not")
    return [_event(CancellationWithdrawn, account.account_id, CancellationWithdrawnPayload(
        channel=channel, received_at=received_at, cancel_at=account.cancel_at, withdrawn_by=withdrawn_by), at=now)]


def _refuse_paid_period(received_at: datetime, due: datetime, in_time: bool, effective: datetime,
                        paid: Sequence[tuple[str, datetime]]) -> None:
    """The period from `effective`, when the plan should have ended, was charged before the request was
    recorded: say what to refund rather than charge the customer for it."""
    refund = sorted(invoice for invoice, start in paid if start >= effective)
    named = ", ".join(refund) if refund else "the invoices of the periods from then"
    when = "in time for" if in_time else "too late for"
    raise CancellationNeedsRefund(
        f"the request arrived on {received_at.isoformat()}, {when} the payment of {due.isoformat()}: the plan "
        f"should have ended on {effective.isoformat()}, but the period from then is paid already. Refund {named} "
        "with the payment provider (Herald records no refunds); a cancellation recorded as received now ends "
        "the plan at the end of the paid period",
        [("body.received_at", f"the plan should have ended on {effective.isoformat()}"),
         *((f"invoices.{invoice}", "paid for a period after the plan should have ended: refund it")
           for invoice in refund)])


def end_of_agreement(account: Account, now: datetime) -> list[Event]:
    """A monthly plan that ends (cancelled, or of an account staff rejected: `Account.agreement_ends_at`) ends at
    that time once it is past: a renewal issued for a period from then on is void (`agreement_ended`, never
    charged), the plan is none (lists stay manageable) and sending is blocked (`no_plan`); only then, with nothing
    declined left open, is the block for a failed payment lifted. In this order and in one commit, so sending is
    never open between the two blocks."""
    ends = account.agreement_ends_at
    if account.plan != "monthly" or ends is None or ends > now:
        return []
    a = account.account_id
    void = [i for i in account.open_invoices if i.pays_period and i.period_start >= ends]
    voided = [_event(InvoiceVoided, a, InvoiceVoidedPayload(invoice_id=i.invoice_id, reason="agreement_ended"),
                     fixed_id("agreement-voided", a, i.invoice_id), at=now) for i in void]
    ended = _event(PlanChanged, a, PlanChangedPayload(plan="none", effective_at=ends),
                   fixed_id("plan-ended", a, time_key(ends)), at=now)
    if account.review == "rejected":
        detail = "the account was rejected in review: its plan ended with its paid period"
    else:
        detail = "the plan was cancelled; choose a plan to send again"
    owing = any(i.attempts for i in account.open_invoices if i not in void)
    return [*voided, ended, *gate(account, "no_plan", True, detail, now),
            *([] if owing else gate(account, "payment_failed", False, None, now))]


# Closing an account, and retention


def _open(account: Account) -> None:
    if account.deleted_at is not None:
        raise AccountClosed("the account was deleted")


def delete_account(actor: User, account: Account, active_keys: list[str], now: datetime) -> list[Event]:
    """The main user closes the account: every key is revoked (so every service refuses them), sending is blocked,
    nobody logs in again; the data stays 3 months (an export, a mistake), then is purged. Not another owner: the
    account is the main user's, who signed up and accepted the terms."""
    if actor.username != account.main_username:
        raise MainUserOnly(f"only the account's main user ({account.main_username}) may close the account")
    _open(account)
    a = account.account_id
    return [_event(AccountDeleted, a, AccountDeletedPayload(deleted_by=actor.username), at=now),
            *(_event(ApiKeyRevoked, a, ApiKeyRevokedPayload(key_id=key_id, revoked_by=actor.username,
                                                            reason="the account was deleted"), at=now)
              for key_id in active_keys),
            *gate(account, "account_deleted", True, "the account was deleted", now)]


def retention_due(account: Account, calendar: BillingCalendar = PLATFORM_CALENDAR,
                  ) -> tuple[datetime, Literal["deleted", "inactive"], datetime]:
    """When the account's data is to be purged (calendar months on the platform's calendar), why, and since when."""
    if account.deleted_at is not None:
        return (calendar.add_months(account.deleted_at, RETENTION_AFTER_DELETION_MONTHS), "deleted",
                account.deleted_at)
    since = account.last_login_at or account.opened_at
    return calendar.add_months(since, 12 * RETENTION_WITHOUT_LOGIN_YEARS), "inactive", since


def purge_is_due(account: Account, now: datetime, calendar: BillingCalendar = PLATFORM_CALENDAR) -> bool:
    return retention_due(account, calendar)[0] <= now


def invoice_kept_until(issued_at: datetime, years: int = INVOICE_RETENTION_YEARS,
                       calendar: BillingCalendar = PLATFORM_CALENDAR) -> datetime:
    """When an invoice kept past its account's purge is deleted: `years` after the end of the calendar year it was
    issued in, on the platform's calendar (the year its number and its date carry)."""
    return datetime(calendar.day(issued_at).year + 1 + years, 1, 1, tzinfo=calendar.zone).astimezone(UTC)


def purge(account: Account, now: datetime, calendar: BillingCalendar = PLATFORM_CALENDAR) -> list[Event]:
    due, reason, since = retention_due(account, calendar)
    if now < due:
        return []
    return [_event(AccountPurged, account.account_id, AccountPurgedPayload(reason=reason, since=since),
                   fixed_id("purged", account.account_id), at=now)]


# Folding herald.billing


def evolve_account(state: Account | None, event: Event) -> Account | None:
    if isinstance(event, AccountOpened):
        if state is not None:
            return state
        opened = event.payload
        opened_at = to_stored_precision(opened.terms_accepted_at)
        return Account(account_id=event.account_id, company_name=opened.company_name,
                       registered_email=str(opened.registered_email), main_username=opened.main_username,
                       opened_at=opened_at, plan_history=(PlanSince(opened_at, "trial"),))
    if state is None:
        return None
    if isinstance(event, AccountApproved):
        return replace(state, review="approved")
    if isinstance(event, AccountRejected):
        return state if state.review == "approved" else replace(state, review="rejected")
    if isinstance(event, PlanChanged):
        changed = _plan(state, event)
        return _history(changed, event.payload.effective_at, changed.plan,
                        changed.tier if changed.plan == "monthly" else None) if changed is not state else state
    if isinstance(event, TrialEnded):
        if state.plan != "trial":
            return replace(state, trial_ended_reason=event.payload.reason)
        return _history(replace(state, plan="trial_ended", trial_ended_reason=event.payload.reason),
                        event.occurred_at, "trial_ended")
    if isinstance(event, QuotaExhausted):
        quota = event.payload.quota
        start = event.payload.period_start
        name = monthly_exhausted(start, event.payload.limit) if quota == "monthly_emails" and start is not None \
            else f"credits:{state.unblocks.get('credits_exhausted', 0)}" if quota == "credits" else quota
        return replace(state, exhausted=tuple(sorted({*state.exhausted, name})))
    if isinstance(event, SendingBlocked):
        return replace(state, blocked=tuple(sorted({*state.blocked, event.payload.reason})))
    if isinstance(event, SendingUnblocked):
        reason = event.payload.reason
        if reason not in state.blocked:
            return state
        return replace(state, blocked=tuple(r for r in state.blocked if r != reason),
                       unblocks={**state.unblocks, reason: state.unblocks.get(reason, 0) + 1})
    if isinstance(event, UserAdded):
        return replace(state, users=tuple(sorted({*state.users, event.payload.username})))
    if isinstance(event, LoginSucceeded):
        # Rounded up: retention reckoned from a login cut to the millisecond would purge up to 999 us early.
        at = stored_precision_up(event.occurred_at)
        return replace(state, last_login_at=at if state.last_login_at is None else max(at, state.last_login_at))
    if isinstance(event, AccountDeleted):
        return state if state.deleted_at else replace(state, deleted_at=to_stored_precision(event.occurred_at))
    if isinstance(event, CreditsPurchased):
        bought = event.payload
        if any(b.batch_id == bought.batch_id for b in state.credit_batches):
            return state
        return replace(state, credit_batches=(*state.credit_batches, CreditBatch(
            bought.batch_id, bought.credits, to_stored_precision(bought.expires_at),
            bought_at=to_stored_precision(event.occurred_at))))
    if isinstance(event, CreditsExpired):
        return replace(state, credit_batches=tuple(
            replace(b, expired=event.payload.credits_expired) if b.batch_id == event.payload.batch_id
            and b.expired is None else b for b in state.credit_batches))
    if isinstance(event, PaymentMethodSet):
        return replace(state, payment_method=f"{event.payload.provider}:{event.payload.reference}")
    if isinstance(event, CancellationRequested):
        return replace(state, cancel_at=to_stored_precision(event.payload.effective_at))
    if isinstance(event, CancellationWithdrawn):
        # Only the cancellation it names: a later one stays.
        withdrawn = to_stored_precision(event.payload.cancel_at) == state.cancel_at
        return replace(state, cancel_at=None) if withdrawn else state
    if isinstance(event, SendAllowanceChanged):
        told = told_allowance(event)
        if state.allowance is not None and state.allowance.sequence > told.sequence:
            return state  # an older one read after a newer
        return replace(state, allowance=told)
    if isinstance(event, BillingDetailsChanged):
        given = event.payload
        return replace(state, billing_details=Party(given.legal_name, tuple(given.address), given.country,
                                                    given.vat_number))
    if isinstance(event, InvoiceIssued):
        issued = event.payload
        if any(i.invoice_id == issued.invoice_id for i in state.open_invoices):
            return state
        return replace(state, open_invoices=(*state.open_invoices, OpenInvoice(
            issued.invoice_id, issued.amount_cents, to_stored_precision(issued.period_start),
            to_stored_precision(issued.period_end), pays_period=issued.kind in ("plan", "renewal"),
            purchase=_stored_terms(issued.purchase), net_cents=issued.net_cents)))
    if isinstance(event, PaymentSucceeded):
        paid = next((i for i in state.open_invoices if i.invoice_id == event.payload.invoice_id), None)
        if paid is None:
            return state
        rest = tuple(i for i in state.open_invoices if i is not paid)
        if not paid.pays_period:
            return replace(state, open_invoices=rest)
        until = paid.period_end if state.paid_until is None else max(state.paid_until, paid.period_end)
        return replace(state, paid_until=until, open_invoices=rest)
    if isinstance(event, InvoiceVoided):
        return replace(state, open_invoices=tuple(
            i for i in state.open_invoices if i.invoice_id != event.payload.invoice_id))
    if isinstance(event, PaymentFailed):
        return replace(state, open_invoices=tuple(
            replace(i, attempts=i.attempts + 1, last_attempt_at=to_stored_precision(event.occurred_at))
            if i.invoice_id == event.payload.invoice_id else i for i in state.open_invoices))
    return state


def _stored_terms(terms: PurchaseTerms | None) -> dict[str, Any] | None:
    """A purchase's terms as the account document keeps them (times at the store's precision)."""
    if terms is None:
        return None
    return {k: to_stored_precision(v) if isinstance(v, datetime) else v
            for k, v in terms.model_dump(mode="python", exclude_none=True).items()}


def _history(state: Account, since: datetime, plan: str, tier: int | None = None) -> Account:
    entry = PlanSince(to_stored_precision(since), plan, tier)
    if entry in state.plan_history:
        return state
    # The same change folded again after its entry was kept without its tier (before tiers were): the tier now.
    kept = tuple(e for e in state.plan_history if (e.since, e.plan, e.tier) != (entry.since, plan, None))
    return replace(state, plan_history=tuple(sorted((*kept, entry), key=lambda e: e.since)))


def _plan(state: Account, event: PlanChanged) -> Account:
    changed = event.payload
    if changed.plan == "trial":
        return state  # the trial starts with the account and never again
    if changed.plan == "monthly":
        # Billing always names the tier and the billing day; a monthly plan from elsewhere without them has no
        # subscriber limit to hold it to, and bills on its effective day.
        effective = to_stored_precision(changed.effective_at)
        return replace(state, plan="monthly", tier=changed.tier_subscriber_limit, edition=changed.edition,
                       fee_cents=changed.monthly_fee_cents, billing_day=changed.billing_day or effective.day,
                       anchor=state.anchor or effective)
    return replace(state, plan=changed.plan, tier=None, fee_cents=None, billing_day=None, anchor=None,
                   cancel_at=None, edition=changed.edition)


def evolve_all(state: Account, events: list[Event]) -> Account:
    for event in events:
        folded = evolve_account(state, event)
        assert folded is not None
        state = folded
    return state


def evolve_user(state: User | None, event: Event) -> User | None:
    if isinstance(event, UserAdded):
        # The first account to add a username keeps it (two replicas could both take one).
        if state is not None:
            return state
        added = event.payload
        return User(username=added.username, account_id=event.account_id, role=added.role,
                    password_hash=added.password_hash)
    if state is None or state.account_id != event.account_id:
        return state
    if isinstance(event, PasswordChanged):
        # Rounded up to the millisecond MongoDB keeps: a session issued in the change's millisecond, just before
        # it, must not pass once the user is read back (a new one issued in it after the change ends too).
        return replace(state, password_hash=event.payload.password_hash,
                       sessions_valid_from=stored_precision_up(event.occurred_at))
    if isinstance(event, UserDisabled):
        return replace(state, disabled=True)
    return state


def to_stored_precision(at: datetime) -> datetime:
    """MongoDB keeps times to the millisecond: what is folded is what is read back."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def stored_precision_up(at: datetime) -> datetime:
    """`at` rounded up to the millisecond MongoDB keeps: never before it once read back."""
    return to_stored_precision(at + timedelta(microseconds=999))


def utcnow() -> datetime:
    return datetime.now(UTC)
