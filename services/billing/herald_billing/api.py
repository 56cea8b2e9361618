"""The billing HTTP API (`/v1`): sign-up, sessions, the account's users, API keys and audit log, and the staff
review of new accounts; parse, authorise, call a handler, map errors to RFC 9457."""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and `Current` is local.
import re
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, StringConstraints, WithJsonSchema

from herald_shared.contract.envelope import Identifier, has_utc_time
from herald_shared.http import Problem, answers, client_host, problem, problems
from herald_shared.request_fields import NO_NUL, Body, EmailAddress, IsoTime, NameText, Out, Text
from herald_shared.staff import StaffTokens, staff_member

from .domain import (
    PASSWORD_MAX,
    PASSWORD_MIN,
    TRIAL_DAYS,
    TRIAL_EMAILS,
    TRIAL_SUBSCRIBERS,
    Account,
    Usage,
    User,
    attempted_username,
    credit_use,
    credits_left,
)
from .handlers import BillingService, Client, Session, TooManyAttempts
from .invoice_page import INVOICE_HEADERS, invoice_html
from .plans import BillingCalendar, Plans
from .vat import Party

Password = Annotated[str, StringConstraints(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, pattern=NO_NUL)]
Username = Annotated[str, StringConstraints(min_length=3, max_length=100, pattern=r"^[a-z0-9][a-z0-9._@+\-]*$")]
LoginName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NO_NUL)]
Cursor = Annotated[str, StringConstraints(max_length=300, pattern=r"^[A-Za-z0-9._:/\-]*$")]
Limit = Annotated[int, Query(ge=1, le=200)]
RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"


def _rfc3339(value: object) -> datetime:
    """A query's time as RFC 3339 text with its offset (pydantic alone would take '0.5' as Unix time)."""
    if not isinstance(value, str) or not re.fullmatch(RFC3339, value):
        raise ValueError("a time is RFC 3339 text with its offset, e.g. 2026-12-07T00:00:00Z")
    return datetime.fromisoformat(value)


Since = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(has_utc_time),
                  WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339}),
                  Query(description="From this time on (with its offset).")]
SESSION = HTTPBearer(auto_error=False, scheme_name="SessionToken",
                     description="A session token from POST /v1/sessions: `Authorization: Bearer hs_...`.")


class SignUpIn(Body):
    company_name: NameText
    email: EmailAddress = Field(description="The account's registered address: where notices go.")
    username: Username = Field(description="The main user's login name (lower case), unique across Herald.")
    password: Password
    accept_terms: bool = Field(description="The terms of service are accepted (the 30-day trial starts now).")
    age_18: bool = Field(description="The person signing up attests an age of 18 or more.")


class LoginIn(Body):
    username: LoginName
    password: Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX)]


class PasswordIn(Body):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX)]
    new_password: Password


class PasswordResetIn(Body):
    username: LoginName


class PasswordResetCompletionIn(Body):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-]+$")] = Field(
        description="The `token` of the link mailed to the account's registered address.")
    new_password: Password


class PasswordResetOut(Out):
    status: Literal["requested"]
    detail: str


class UserIn(Body):
    username: Username
    password: Password
    role: Literal["owner", "member"] = "member"


class KeyIn(Body):
    label: NameText | None = None


class RevokeIn(Body):
    reason: Text | None = None


class ApproveIn(Body):
    note: Text | None = None


class RejectIn(Body):
    reasons: list[Text] = Field(min_length=1, max_length=20)


class PlanIn(Body):
    subscribers: StrictInt = Field(gt=0, le=100_000_000,
                                   description="The tier, by its subscriber limit (GET /v1/plans).")
    edition: Literal["standard", "pro"] = Field(default="standard", description="PRO: no Herald footer.")


class CreditsIn(Body):
    credits: StrictInt = Field(gt=0, le=100_000_000, description="A credit pack, by its size (GET /v1/plans).")


class PaymentMethodIn(Body):
    provider: Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z0-9_\-]+$")] = Field(
        description="The platform's payment provider (`simulated` in development).")
    reference: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:\-]+$")] = \
        Field(description="The provider's reference to the method; with `simulated`: sim-card-ok, "
                          "sim-card-declined, sim-card-insufficient-funds or sim-card-expired.")


class CancellationIn(Body):
    # A time with an offset that is no time in UTC (0001-01-01T00:00+01:00) cannot be compared or stored: 422.
    received_at: Annotated[IsoTime, AfterValidator(has_utc_time)] = Field(
        description="When the customer's request reached Herald.")


class BillingDetailsIn(Body):
    legal_name: NameText = Field(description="Who the invoices are made out to: the company's legal name (or a sole "
                                             "trader's name).")
    address: list[NameText] = Field(min_length=1, max_length=4, description="The billing address, one line each "
                                                                            "(street, city and postcode...).")
    country: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] = Field(
        description="ISO 3166-1 alpha-2 (LV, DE, US...): decides the invoices' VAT.")
    vat_number: Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=NO_NUL)] | None = Field(
        default=None, description="A business's VAT number in an EU member state, with its country's prefix (LV and "
                                  "11 digits, DE and 9, EL for Greece); spaces, dots and dashes are left out. Its "
                                  "format is checked (422), not its registration: VIES is not consulted. In another "
                                  "member state than Latvia it makes the invoices reverse charge (0% VAT).")


class UsageOut(Out):
    subscribers: int = Field(description=(
        "Stored in the account's lists, counted from when each is active (added with single opt-in, or a pending "
        "double opt-in member once confirmed), then in any status until erased."))
    trial_emails: int = Field(description="Emails sent during the trial: campaign emails and test sends (those "
                                          "the receiving server refused when sent included).")
    period_emails: int | None = Field(description="Monthly plan: campaign emails sent in the current period.")


class CreditBatchOut(Out):
    batch_id: str
    credits: int
    used: int
    expires_at: datetime
    expired: int | None = Field(description="How many expired unused, once the batch expired.")


class CreditsOut(Out):
    left: int = Field(description="Credits that can still be spent: one per campaign email sent.")
    batches: list[CreditBatchOut]


class MonthlyOut(Out):
    subscriber_limit: int
    edition: Literal["standard", "pro"]
    monthly_fee_cents: int = Field(description="EUR cents, VAT excluded.")
    monthly_send_cap: int = Field(description=(
        "This billing period's cap: 109 x the subscriber limit; in a period the tier was raised in, 109 x each "
        "limit for the part of the period it held, rounded up (a raise is charged for the rest of the period)."))
    billing_day: int = Field(description="The first payment's day of the month in the platform's time zone "
                                         "(HERALD_BILLING_TIME_ZONE); the month's last day when it is shorter.")
    period_start: datetime
    period_end: datetime
    paid_until: datetime | None
    cancel_at: datetime | None = Field(description="When a cancellation takes effect (the end of a paid period).")


class TrialOut(Out):
    ends_at: datetime
    subscriber_limit: int
    email_limit: int
    ended_reason: Literal["expired", "subscriber_limit_exceeded"] | None


class BillingDetailsOut(Out):
    legal_name: str
    address: list[str]
    country: str = Field(description="ISO 3166-1 alpha-2.")
    vat_number: str | None


class AccountOut(Out):
    account_id: str
    company_name: str
    registered_email: str
    main_username: str
    opened_at: datetime
    review: Literal["in_review", "approved", "rejected"] = Field(
        description="Staff review of a new account: until approved, sending is held. A rejected account buys no "
                    "plan or credits (409 account_rejected), and its monthly plan ends with its paid period.")
    plan: str = Field(description="trial; trial_ended (no plan chosen yet: lists stay manageable, sending is "
                                  "blocked); monthly; pay_as_you_go; or none (a monthly plan ended: cancelled, or "
                                  "of a rejected account).")
    trial: TrialOut
    sending_blocked: list[str] = Field(description="Why sending is blocked (SendingBlocked reasons); empty: not "
                                                   "blocked by billing.")
    monthly: MonthlyOut | None = Field(description="The monthly plan, when that is the plan.")
    credits: CreditsOut | None = Field(description="Pay-as-you-go credits, once any were bought.")
    payment_method: str | None = Field(description="provider:reference of automatic payments.")
    billing_details: BillingDetailsOut | None = Field(description="Who the invoices are made out to (PUT "
                                                                  "/v1/account/billing-details); none given: the "
                                                                  "company name, and Latvian VAT.")
    open_invoices: list[str] = Field(description="Invoices not paid yet.")
    usage: UsageOut


class SessionOut(Out):
    token: str = Field(description="Send it as `Authorization: Bearer ...`; it ends at expires_at, on logout, on "
                                   "a password change or when the user is disabled.")
    expires_at: datetime
    account_id: str
    username: str
    role: Literal["owner", "member"]


class UserOut(Out):
    username: str
    role: Literal["owner", "member"]
    disabled: bool


class UsersOut(Out):
    items: list[UserOut]


class KeyOut(Out):
    key_id: str
    label: str | None
    issued_by: str
    issued_at: datetime
    revoked_at: datetime | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The whole key, shown this once: Herald keeps only its hash.")


class KeysOut(Out):
    items: list[KeyOut]
    next_cursor: str | None


class AuditEntryOut(Out):
    at: datetime
    kind: Literal["login", "password_change", "password_reset_requested", "password_reset_completed", "staff_access",
                  "api_key", "cancellation", "billing_details"] = Field(
        description="login: a login or a failed attempt (a wrong current password at a password change too, "
                    "and a password reset link tried with a token not its own: `reason` wrong_reset_token); "
                    "password_change: a user changed their password; password_reset_requested: someone asked for "
                    "a reset link for the user (mailed to the registered address; `request_id`); "
                    "password_reset_completed: the password was set by that link (`request_id`); "
                    "staff_access: staff looked or acted; "
                    "api_key: a service refused an API key of the account (a failed attempt: `key_id`, `service`, "
                    "`path`, `reason`); cancellation: the plan was cancelled or the cancellation withdrawn (`what`: "
                    "requested, withdrawn; by `username`, or by `staff` recording the customer's request); "
                    "billing_details: a user changed the billing details.")
    result: Literal["success", "failure"] | None = None
    reason: str | None = Field(default=None, description="Why an attempt failed; for a login "
                                                          "wrong_password, disabled_user, account_deleted, locked "
                                                          "(refused unchecked), malformed (not a valid request) or "
                                                          "wrong_reset_token (a password reset link tried with a "
                                                          "token not its own); for an API key revoked_key, "
                                                          "wrong_secret, throttled_key or throttled_ip (refused "
                                                          "unchecked: too many failed attempts on the key id, or "
                                                          "from the address).")
    username: str | None = None
    method: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    session_id: str | None = Field(default=None, description="The session a login opened; for a failure, the "
                                                             "session the current password was given wrong in "
                                                             "(a password change); for a password change, the "
                                                             "session it was made in.")
    staff: str | None = None
    what: str | None = Field(default=None, description="What staff looked at or did (billing: review_queue, "
                                                       "account, audit_log, approve, reject, cancel, "
                                                       "withdraw_cancellation; event_log: the account's events read "
                                                       "from the topics with their personal data shown, `herald tail "
                                                       "--reveal`; campaigns: "
                                                       "review_queue, campaign, approve, reject; compliance: rates, "
                                                       "reinstate; delivery: messages, a person's delivery record).")
    service: str | None = Field(default=None, description="Where staff looked (billing, campaigns, compliance, "
                                                           "delivery, or herald-cli: the event log, `herald tail "
                                                           "--reveal`), or which service refused an API key "
                                                           "(subscriptions, campaigns).")
    campaign_id: str | None = None
    key_id: str | None = Field(default=None, description="The id of the API key a service refused (never its "
                                                         "secret).")
    path: str | None = Field(default=None, description="The path a refused API key was presented to.")
    subscriber_id: str | None = Field(default=None, description="Whose delivery record staff looked up (delivery: "
                                                                "messages), when named by the membership's id.")
    email_sha256: str | None = Field(default=None, description="Whose delivery record staff looked up, when named by "
                                                               "the hash of the address (never the address).")
    request_id: str | None = Field(default=None, description="The password reset asked for, or used.")


class AuditOut(Out):
    items: list[AuditEntryOut]
    next_cursor: str | None


class TierOut(Out):
    subscribers: int
    monthly_cents: int
    pro_monthly_cents: int
    monthly_send_cap: int


class PackOut(Out):
    credits: int
    price_cents: int
    validity_days: int


class TrialTermsOut(Out):
    days: int
    subscriber_limit: int
    email_limit: int


class PlansOut(Out):
    currency: Literal["EUR"]
    vat_percent: str
    tiers: list[TierOut]
    credit_packs: list[PackOut]
    trial: TrialTermsOut


class InvoiceLineOut(Out):
    description: str
    amount_cents: int


class InvoicePartyOut(Out):
    name: str
    address: list[str]
    country: str = Field(description="ISO 3166-1 alpha-2.")
    vat_number: str | None


class InvoiceOut(Out):
    invoice_id: str
    issued_at: datetime
    status: Literal["open", "paid", "void"] = Field(description="open: not paid yet (a purchase being charged, "
                                                               "or a renewal whose payment failed); void: see "
                                                               "void_reason.")
    void_reason: Literal["agreement_ended", "payment_declined", "account_deleted"] | None = Field(
        description="agreement_ended: no longer due (the agreement ended before the period it bills), never "
                    "charged. payment_declined: a purchase whose payment was declined; it bought nothing. "
                    "account_deleted: a purchase the provider had not charged when the account was deleted; "
                    "never charged.")
    amount_cents: int
    net_cents: int | None
    vat_cents: int | None
    vat_percent: str | None
    vat_treatment: Literal["domestic", "reverse_charge", "outside_eu", "eu_consumer"] | None = Field(
        description="domestic: Latvian VAT (a customer in Latvia, or no billing details); reverse_charge: a business "
                    "in another EU member state with its VAT number, 0%; outside_eu: 0%, outside the scope of EU "
                    "VAT; eu_consumer: in another member state without a VAT number, Latvian VAT. None: issued "
                    "before treatments were decided (Latvian VAT).")
    vat_note: str | None = Field(description="What the invoice says of its VAT (reverse charge, outside the scope).")
    seller: InvoicePartyOut | None = Field(description="Who issued it: the platform's company (None: issued before "
                                                       "it was configured).")
    customer: InvoicePartyOut | None = Field(description="The account's billing details when it was issued (None: "
                                                         "none were given; the account's company name stands).")
    currency: Literal["EUR"]
    period_start: datetime
    period_end: datetime
    lines: list[InvoiceLineOut]
    attempts: int
    last_failure: str | None


class InvoicesOut(Out):
    items: list[InvoiceOut]
    next_cursor: str | None


class KeptInvoiceOut(Out):
    """An invoice as issued, kept past its account's purge for its legal period, with nothing else of the account."""

    invoice_id: str
    issued_at: datetime
    status: Literal["open", "paid", "void"] = Field(description="As it stood at the purge.")
    paid_at: datetime | None
    voided_at: datetime | None
    void_reason: Literal["agreement_ended", "payment_declined", "account_deleted"] | None
    kind: Literal["plan", "renewal", "upgrade", "credits"] | None
    amount_cents: int
    net_cents: int | None
    vat_cents: int | None
    vat_percent: str | None
    vat_treatment: Literal["domestic", "reverse_charge", "outside_eu", "eu_consumer"] | None
    vat_note: str | None
    seller: InvoicePartyOut | None
    customer: InvoicePartyOut | None = Field(description="The billing details it was issued to.")
    customer_name: str | None = Field(description="Without billing details: the account's company name, as the "
                                                  "invoice named its buyer.")
    currency: Literal["EUR"]
    period_start: datetime
    period_end: datetime
    due_at: datetime | None
    lines: list[InvoiceLineOut]
    kept_until: datetime = Field(description="When it is deleted: HERALD_BILLING_INVOICE_RETENTION_YEARS after the "
                                             "end of the calendar year it was issued in.")


class PlatformAuditEntryOut(Out):
    id: str = Field(description="Its key: time, then a random part; a page's last is its `next_cursor`.")
    at: datetime
    kind: Literal["login", "staff_access"] = Field(
        description="login: a failed attempt naming no user of any account (`reason` unknown_user; malformed, "
                    "a request that was not valid; wrong_reset_token, a password reset link of no request; locked "
                    "is only counted, in the hours); staff_access: staff "
                    "read a kept invoice (`invoice_id`) or this log (`what`).")
    result: Literal["failure"] | None = None
    reason: str | None = None
    username: str | None = Field(default=None, description="As typed, its first 100 characters.")
    ip: str | None = None
    user_agent: str | None = Field(default=None, description="Its first 256 characters.")
    staff: str | None = None
    what: Literal["kept_invoice", "platform_audit_log", "platform_audit_hours"] | None = None
    invoice_id: str | None = None


class PlatformAuditOut(Out):
    items: list[PlatformAuditEntryOut]
    next_cursor: str | None


class PlatformAuditHourOut(Out):
    id: str
    hour: datetime = Field(description="The hour's start (UTC).")
    attempts: int = Field(description="Login attempts naming no user in the hour, every one.")
    itemised: int = Field(description="Of them, written one by one in the log.")
    reasons: dict[str, int] = Field(description="The attempts by reason (unknown_user, malformed, "
                                                "wrong_reset_token, locked).")


class PlatformAuditHoursOut(Out):
    items: list[PlatformAuditHourOut]
    next_cursor: str | None


class QueueOut(Out):
    items: list[AccountOut]
    next_cursor: str | None


def account_out(account: Account, usage: Usage, now: datetime, calendar: BillingCalendar) -> dict[str, Any]:
    monthly, period_emails = None, None
    if account.plan == "monthly" and account.tier is not None and account.billing_day is not None:
        start, end = account.period(now, calendar)
        period_emails = usage.period_emails(start)
        monthly = {"subscriber_limit": account.tier, "edition": account.edition,
                   "monthly_fee_cents": account.fee_cents, "monthly_send_cap": account.send_cap(start, end),
                   "billing_day": account.billing_day, "period_start": start.isoformat(),
                   "period_end": end.isoformat(), "paid_until": _iso(account.paid_until),
                   "cancel_at": _iso(account.cancel_at)}
    return {"account_id": account.account_id, "company_name": account.company_name,
            "registered_email": account.registered_email, "main_username": account.main_username,
            "opened_at": account.opened_at.isoformat(), "review": account.review, "plan": account.plan,
            "trial": {"ends_at": account.trial_ends_at.isoformat(), "subscriber_limit": TRIAL_SUBSCRIBERS,
                      "email_limit": TRIAL_EMAILS, "ended_reason": account.trial_ended_reason},
            "sending_blocked": list(account.blocked), "monthly": monthly, "credits": credits_out(account, usage, now),
            "payment_method": account.payment_method,
            "billing_details": _details_out(account.billing_details),
            "open_invoices": [i.invoice_id for i in account.open_invoices],
            "usage": {"subscribers": usage.subscribers, "trial_emails": usage.trial_emails,
                      "period_emails": period_emails}}


def credits_out(account: Account, usage: Usage, now: datetime) -> dict[str, Any] | None:
    if not account.credit_batches:
        return None
    used, _ = credit_use(account, usage)
    return {"left": credits_left(account, usage, now),
            "batches": [{"batch_id": b.batch_id, "credits": b.credits, "used": used[b.batch_id],
                         "expires_at": b.expires_at.isoformat(), "expired": b.expired}
                        for b in sorted(account.credit_batches, key=lambda b: b.expires_at)]}


def _details_out(details: Party | None) -> dict[str, Any] | None:
    if details is None:
        return None
    return {"legal_name": details.name, "address": list(details.address), "country": details.country,
            "vat_number": details.vat_number}


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def plans_out(plans: Plans) -> dict[str, Any]:
    return {"currency": "EUR", "vat_percent": str(plans.vat_percent),
            "tiers": [{"subscribers": t.subscribers, "monthly_cents": t.monthly_cents,
                       "pro_monthly_cents": t.pro_monthly_cents, "monthly_send_cap": t.monthly_send_cap}
                      for t in plans.tiers],
            "credit_packs": [{"credits": c.credits, "price_cents": c.price_cents, "validity_days": c.validity_days}
                             for c in plans.packs],
            "trial": {"days": TRIAL_DAYS, "subscriber_limit": TRIAL_SUBSCRIBERS, "email_limit": TRIAL_EMAILS}}


def invoice_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"invoice_id": doc["invoice_id"], "issued_at": doc["issued_at"].isoformat(), "status": doc["status"],
            "amount_cents": doc["amount_cents"], "net_cents": doc.get("net_cents"), "vat_cents": doc.get("vat_cents"),
            "vat_percent": doc.get("vat_percent"), "vat_treatment": doc.get("vat_treatment"),
            "vat_note": doc.get("vat_note"), "seller": _party_out(doc.get("seller")),
            "customer": _party_out(doc.get("customer")), "currency": doc.get("currency", "EUR"),
            "period_start": doc["period_start"].isoformat(), "period_end": doc["period_end"].isoformat(),
            "lines": [{"description": line["description"], "amount_cents": line["amount_cents"]}
                      for line in doc["lines"]],
            "attempts": doc.get("attempts", 0), "last_failure": doc.get("last_failure"),
            "void_reason": doc.get("void_reason")}


def kept_invoice_out(doc: dict[str, Any]) -> dict[str, Any]:
    def iso(name: str) -> str | None:
        return doc[name].isoformat() if doc.get(name) is not None else None

    return {"invoice_id": doc["invoice_id"], "issued_at": doc["issued_at"].isoformat(), "status": doc["status"],
            "paid_at": iso("paid_at"), "voided_at": iso("voided_at"), "void_reason": doc.get("void_reason"),
            "kind": doc.get("kind"), "amount_cents": doc["amount_cents"], "net_cents": doc.get("net_cents"),
            "vat_cents": doc.get("vat_cents"), "vat_percent": doc.get("vat_percent"),
            "vat_treatment": doc.get("vat_treatment"), "vat_note": doc.get("vat_note"),
            "seller": _party_out(doc.get("seller")), "customer": _party_out(doc.get("customer")),
            "customer_name": doc.get("customer_name"), "currency": doc.get("currency", "EUR"),
            "period_start": doc["period_start"].isoformat(), "period_end": doc["period_end"].isoformat(),
            "due_at": iso("due_at"),
            "lines": [{"description": line["description"], "amount_cents": line["amount_cents"]}
                      for line in doc["lines"]],
            "kept_until": doc["kept_until"].isoformat()}


def platform_audit_out(doc: dict[str, Any]) -> dict[str, Any]:
    fields = ("result", "reason", "username", "ip", "user_agent", "staff", "what", "invoice_id")
    return {"id": doc["_id"], "at": doc["at"].isoformat(), "kind": doc["kind"], **{f: doc.get(f) for f in fields}}


def platform_audit_hour_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"id": doc["_id"], "hour": doc["hour"].isoformat(), "attempts": doc.get("attempts", 0),
            "itemised": doc.get("itemised", 0),
            "reasons": {k: int(v) for k, v in doc.get("reasons", {}).items()}}


def _party_out(party: dict[str, Any] | None) -> dict[str, Any] | None:
    if party is None:
        return None
    return {"name": party["name"], "address": list(party["address"]), "country": party["country"],
            "vat_number": party.get("vat_number")}


def user_out(user: User) -> dict[str, Any]:
    return {"username": user.username, "role": user.role, "disabled": user.disabled}


def key_out(doc: dict[str, Any]) -> dict[str, Any]:
    at = doc.get("revoked_at")
    return {"key_id": doc["key_id"], "label": doc.get("label"), "issued_by": doc.get("issued_by", ""),
            "issued_at": doc["issued_at"].isoformat(), "revoked_at": at.isoformat() if at else None}


def client_of(request: Request) -> Client:
    """Who is asking, for the audit log and the throttles."""
    return Client(client_host(request), request.headers.get("user-agent"))


RESET_REQUESTED = ("If this user exists and may log in, a link to set a new password was mailed to the registered "
                   "address of the user's account. It works once, for one hour.")


def too_many_attempts(exc: TooManyAttempts) -> JSONResponse:
    response = problem(429, "too_many_attempts", str(exc))
    response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


def failed_validation_too(on_invalid: Callable[[Request], Awaitable[None]]) -> type[APIRoute]:
    """A route class whose request, when it fails validation, is also handed to `on_invalid` before it is answered
    the usual 422 (the body has been read by then, and is read again from memory)."""

    class Route(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handle = super().get_route_handler()

            async def handled(request: Request) -> Response:
                try:
                    return await handle(request)
                except RequestValidationError:
                    await on_invalid(request)
                    raise

            return handled

    return Route


async def login_body(request: Request) -> object:
    """What a login request's body holds as JSON, or None when it is no JSON."""
    try:
        return await request.json()
    except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError)
        return None


def audit_out(doc: dict[str, Any]) -> dict[str, Any]:
    fields = ("result", "reason", "username", "method", "ip", "user_agent", "session_id", "staff", "what", "service",
              "campaign_id", "key_id", "path", "subscriber_id", "email_sha256", "request_id")
    return {"at": doc["at"].isoformat(), "kind": doc["kind"], **{f: doc.get(f) for f in fields}}


def page(items: list[dict[str, Any]], docs: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"items": items, "next_cursor": docs[-1]["_id"] if len(docs) == limit else None}


def build_api(service: BillingService) -> APIRouter:
    router = APIRouter(prefix="/v1")

    async def current(credentials: HTTPAuthorizationCredentials | None = Security(SESSION)) -> Session:  # noqa: B008
        return await service.session(credentials.credentials if credentials is not None else None)

    Current = Annotated[Session, Depends(current)]
    signed_in = problems(401)

    @router.post("/accounts", status_code=201, response_model=None, tags=["sign-up"],
                 responses={**answers(201, AccountOut, "Opened: on a 30-day trial, waiting for staff review."),
                            **problems(409, 422, 503)})
    async def sign_up(body: SignUpIn) -> dict[str, Any]:
        """Open an account: the terms accepted (the trial starts), an age of 18 or more attested, and its main
        user (owner). Log in with POST /v1/sessions."""
        account = await service.sign_up(body.company_name, body.email, body.username, body.password,
                                         body.accept_terms, body.age_18)
        return account_out(account, Usage(), service.clock(), service.calendar)

    async def malformed_login(request: Request) -> None:
        body = await login_body(request)
        typed = body.get("username") if isinstance(body, dict) else None
        await service.malformed_login(attempted_username(body), client_of(request),
                                      typed if isinstance(typed, str) else None)

    async def log_in(body: LoginIn, request: Request) -> JSONResponse:
        """Log in with a username and password. Every attempt is in the account's audit log, one that is not valid
        (422) too (an attempt naming no user: in the platform's, GET /v1/staff/platform-audit-log); after repeated
        failures for a user or from an address, attempts are refused for a while (429, Retry-After)."""
        try:
            session = await service.log_in(body.username, body.password, client_of(request))
        except TooManyAttempts as exc:
            return too_many_attempts(exc)
        return JSONResponse({"token": session.token, "expires_at": session.expires_at.isoformat(),
                             "account_id": session.user.account_id, "username": session.user.username,
                             "role": session.user.role}, status_code=201)

    # A request that fails validation is a failed login attempt (audited and throttled), answered 422 still.
    router.add_api_route("/sessions", log_in, methods=["POST"], status_code=201, response_model=None,
                         tags=["sessions"], responses={**answers(201, SessionOut, "Logged in."),
                                                       **problems(401, 422, 429, 503)},
                         route_class_override=failed_validation_too(malformed_login))

    @router.post("/password-resets", status_code=202, response_model=None, tags=["sessions"],
                 responses={**answers(202, PasswordResetOut, "Taken: the same answer whether the user exists or "
                                                             "not."),
                            **problems(422, 429, 503),
                            429: {"model": Problem, "description": (
                                "too_many_attempts: too many resets asked for this username or from this address "
                                "(Retry-After).")},
                            503: {"model": Problem, "description": (
                                "password_reset_not_configured: the platform has no HERALD_PASSWORD_RESET_KEY; or "
                                "the infrastructure is unavailable.")}})
    async def request_password_reset(body: PasswordResetIn, request: Request) -> JSONResponse:
        """A forgotten password (no credentials): if the user exists, is enabled and the account open, a link is
        mailed to the account's registered address (the owner's mailbox, for every user of the account, members
        too). It works once, for an hour, and only while the password stays as it was. In the account's audit
        log."""
        try:
            await service.request_password_reset(body.username, client_of(request))
        except TooManyAttempts as exc:
            return too_many_attempts(exc)
        return JSONResponse({"status": "requested", "detail": RESET_REQUESTED}, status_code=202)

    @router.post("/password-resets/{request_id}/completion", status_code=204, response_model=None,
                 tags=["sessions"],
                 responses={**problems(404, 422, 429, 503),
                            404: {"model": Problem, "description": (
                                "password_reset_not_found: no such request, or the token is not its own (one "
                                "answer for both). A few wrong tokens use the request up; each is a failed "
                                "attempt in the account's audit log (`wrong_reset_token`).")},
                            410: {"model": Problem, "description": (
                                "password_reset_used: used already, or too many wrong tokens were tried; "
                                "password_reset_expired: asked for more than an hour ago; password_reset_void: "
                                "the user was disabled, the account closed or the password changed since.")},
                            422: {"model": Problem, "description": (
                                "invalid_request, or weak_password: the new password breaks the password rules "
                                "(12 to 256 characters, not containing the username, not one character "
                                "repeated).")},
                            429: {"model": Problem, "description": (
                                "too_many_attempts: too many failed attempts from this address (Retry-After).")}})
    async def complete_password_reset(request_id: Identifier, body: PasswordResetCompletionIn,
                                      request: Request) -> Response:
        """Set a new password with a reset link's request id and token: every session of the user ends; log in
        with the new password."""
        try:
            await service.complete_password_reset(request_id, body.token, body.new_password, client_of(request))
        except TooManyAttempts as exc:
            return too_many_attempts(exc)
        return Response(status_code=204)

    @router.delete("/sessions/current", status_code=204, tags=["sessions"], responses={**signed_in,
                                                                                       **problems(503)})
    async def log_out(session: Current) -> Response:
        await service.log_out(session)
        return Response(status_code=204)

    @router.get("/account", response_model=None, tags=["account"],
                responses={**answers(200, AccountOut, "The account, its plan and usage."), **signed_in})
    async def account(session: Current) -> dict[str, Any]:
        return account_out(*await service.overview(session.user.account_id), service.clock(), service.calendar)

    @router.get("/plans", response_model=None, tags=["plans"],
                responses={**answers(200, PlansOut, "Tiers, prices (EUR cents, VAT excluded) and credit packs.")})
    async def offered_plans() -> dict[str, Any]:
        return plans_out(service.plans)

    @router.put("/account/payment-method", status_code=204, tags=["plans"],
                responses={**signed_in, **problems(403, 422, 503)})
    async def set_payment_method(body: PaymentMethodIn, session: Current) -> Response:
        """Owners set how automatic payments are taken (the provider's reference; never card data)."""
        await service.set_payment_method(session, body.provider, body.reference)
        return Response(status_code=204)

    @router.put("/account/plan", response_model=None, tags=["plans"],
                responses={**answers(200, AccountOut, "The plan now (paid; sending unblocked where it may be)."),
                           **signed_in, **problems(402, 403, 409, 422, 503),
                           409: {"model": Problem, "description": (
                               "account_rejected: staff rejected the account in review, it buys nothing; "
                               "tier_cannot_be_lowered: a lower subscriber limit; edition_cannot_be_lowered: PRO "
                               "back to standard at the same limit; cancellation_pending: the plan is cancelled, "
                               "withdraw the cancellation first (POST /v1/account/cancellation/withdrawal); "
                               "no_payment_method; renewal_pending; purchase_pending; account_closed.")}})
    async def choose_plan(body: PlanIn, session: Current) -> dict[str, Any]:
        """Choose a monthly tier, or raise it: the first period is charged in full (its day of the month, in the
        platform's time zone, is the billing day from then on), an upgrade the difference of the fees for the rest
        of the period (nothing when the new fee is lower: PRO to standard with a higher limit). A subscriber limit
        is never lowered, nor PRO changed back to standard at the same limit (409); a declined payment changes
        nothing (402). Not for an account staff rejected (409 `account_rejected`)."""
        account = await service.buy_monthly(session, body.subscribers, body.edition)
        return account_out(account, await service.store.usage(account.account_id), service.clock(), service.calendar)

    @router.post("/account/credits", response_model=None, tags=["plans"],
                 responses={**answers(200, AccountOut, "Bought: on pay-as-you-go, sending unblocked where it may "
                                                       "be."), **signed_in, **problems(402, 403, 409, 422, 503),
                            409: {"model": Problem, "description": (
                                "account_rejected: staff rejected the account in review, it buys nothing; "
                                "on_a_monthly_plan; no_payment_method; purchase_pending; account_closed.")}})
    async def buy_credits(body: CreditsIn, session: Current) -> dict[str, Any]:
        """Buy a pack of email credits (each batch expires; credits are spent earliest expiry first, one per
        campaign email sent, bounced or not). Not while on a monthly plan, nor for an account staff rejected
        (409); a declined payment changes nothing (402)."""
        account = await service.buy_credits(session, body.credits)
        return account_out(account, await service.store.usage(account.account_id), service.clock(), service.calendar)

    @router.post("/account/cancellation", response_model=None, tags=["plans"],
                 responses={**answers(200, AccountOut, "Cancelled at the end of the paid period (no refunds)."),
                            **signed_in, **problems(403, 409, 503)})
    async def cancel(session: Current) -> dict[str, Any]:
        """Owners cancel the monthly plan: it ends at the end of the paid period (withdraw it before then to keep
        the plan)."""
        account = await service.cancel(session)
        return account_out(account, await service.store.usage(account.account_id), service.clock(), service.calendar)

    @router.post("/account/cancellation/withdrawal", response_model=None, tags=["plans"],
                 responses={**answers(200, AccountOut, "Withdrawn: the plan goes on, renewed at the end of the paid "
                                                       "period as before."),
                            **signed_in, **problems(403, 409, 503),
                            403: {"model": Problem, "description": "owners_only: a member asked."},
                            409: {"model": Problem, "description": (
                                "no_pending_cancellation: the plan is not cancelled (or there is no monthly plan); "
                                "cancellation_took_effect: its time came, the plan is over: choose a plan again "
                                "(PUT /v1/account/plan); account_rejected: staff rejected the account, its plan "
                                "ends with its paid period; account_closed.")}})
    async def withdraw_cancellation(session: Current) -> dict[str, Any]:
        """Keep the monthly plan after all: an owner withdraws its cancellation before it takes effect. (Choosing
        or raising the plan while it is cancelled is refused, 409 `cancellation_pending`: withdraw first.)"""
        account = await service.withdraw_cancellation(session)
        return account_out(account, await service.store.usage(account.account_id), service.clock(), service.calendar)

    @router.put("/account/billing-details", response_model=None, tags=["invoices"],
                responses={**answers(200, AccountOut, "Set: every invoice issued from now on names them."),
                           **signed_in, **problems(403, 409, 422, 503),
                           403: {"model": Problem, "description": "owners_only: a member asked."},
                           422: {"model": Problem, "description": (
                               "invalid_request, or billing_details_invalid: a blank name or address line, a "
                               "country code ISO 3166-1 does not assign, or a VAT number not of the country's format "
                               "(or given for a country outside the EU); `errors` says which field and why.")}})
    async def set_billing_details(body: BillingDetailsIn, session: Current) -> dict[str, Any]:
        """Owners set who the invoices are made out to: the legal name, address, country and, for a business in the
        EU, its VAT number. From the next invoice on they are on it and decide its VAT: Latvian VAT in Latvia (and
        without details); 0% reverse charge for a business in another EU member state with its VAT number; 0%
        outside the EU; Latvian VAT for anyone else in the EU. Invoices issued before stay as they are."""
        account = await service.set_billing_details(session, body.legal_name, body.address, body.country,
                                                    body.vat_number)
        return account_out(account, await service.store.usage(account.account_id), service.clock(), service.calendar)

    @router.get("/account/invoices", response_model=None, tags=["invoices"],
                responses={**answers(200, InvoicesOut, "The account's invoices, oldest first."), **signed_in,
                           **problems(422)})
    async def invoices(session: Current, cursor: Cursor | None = None, limit: Limit = 50) -> dict[str, Any]:
        docs = await service.store.invoices(session.user.account_id, cursor, limit)
        return page([invoice_out(d) for d in docs], docs, limit)

    @router.get("/account/invoices/{invoice_id}", response_model=None, tags=["invoices"],
                responses={**answers(200, InvoiceOut, "The invoice."), **signed_in, **problems(404, 422)})
    async def invoice(invoice_id: Identifier, session: Current) -> dict[str, Any]:
        return invoice_out(await service.invoice(session, invoice_id))

    @router.get("/account/invoices/{invoice_id}/document", response_model=None, tags=["invoices"],
                responses={200: {"content": {"text/html": {"schema": {"type": "string"}}},
                                 "description": "The invoice as a page a person reads and prints."},
                           **signed_in, **problems(404, 422)})
    async def invoice_document(invoice_id: Identifier, session: Current) -> HTMLResponse:
        doc = await service.invoice(session, invoice_id)
        account, _ = await service.overview(session.user.account_id)
        return HTMLResponse(invoice_html(doc, account, service.calendar), headers=INVOICE_HEADERS)

    @router.post("/account/invoices/{invoice_id}/payment", response_model=None, tags=["invoices"],
                 responses={**answers(200, InvoiceOut, "Paid (or it was already)."), **signed_in,
                            **problems(402, 403, 404, 409, 422, 503)})
    async def pay(invoice_id: Identifier, session: Current) -> dict[str, Any]:
        """Pay an open invoice now with the current payment method; a success lifts the payment block. A void
        invoice is never paid: 409 `invoice_void`."""
        return invoice_out(await service.pay_invoice(session, invoice_id))

    @router.delete("/account", status_code=204, tags=["account"], responses={
        **signed_in, **problems(403, 409, 503),
        403: {"model": Problem, "description": "main_user_only: only the account's main user closes it."}})
    async def delete_account(session: Current) -> Response:
        """The main user closes the account (not another owner: 403): its keys are revoked, nothing more is sent,
        nobody logs in again. Its data is kept 3 months, then purged from every service (PRODUCT.md, "Data
        protection")."""
        await service.delete_account(session)
        return Response(status_code=204)

    @router.put("/account/password", status_code=204, response_model=None, tags=["account"],
                responses={**signed_in, **problems(403, 422, 429, 503)})
    async def change_password(body: PasswordIn, session: Current, request: Request) -> Response:
        """Change your own password (403 when the current one is not right); every session you opened before
        ends, this one too: log in again. A wrong current password is a failed login attempt: in the audit log,
        and counted toward the login throttles (429 with Retry-After once they are reached)."""
        try:
            await service.change_password(session, body.current_password, body.new_password, client_of(request))
        except TooManyAttempts as exc:
            return too_many_attempts(exc)
        return Response(status_code=204)

    @router.get("/account/users", response_model=None, tags=["users"],
                responses={**answers(200, UsersOut, "The account's users."), **signed_in})
    async def users(session: Current) -> dict[str, Any]:
        return {"items": [user_out(u) for u in await service.users(session)]}

    @router.post("/account/users", status_code=201, response_model=None, tags=["users"],
                 responses={**answers(201, UserOut, "Added."), **signed_in, **problems(403, 409, 422, 503)})
    async def add_user(body: UserIn, session: Current) -> dict[str, Any]:
        """Owners add users (owners or members)."""
        return user_out(await service.add_user(session, body.username, body.password, body.role))

    @router.post("/account/users/{username}/disabling", response_model=None, tags=["users"],
                 responses={**answers(200, UserOut, "Disabled: their sessions end, they cannot log in, and the API "
                                                    "keys they issued are revoked."),
                            **signed_in, **problems(403, 404, 409, 422, 503),
                            403: {"model": Problem, "description": (
                                "owners_only: a member asked; main_user_only: only the main user disables an "
                                "owner.")},
                            409: {"model": Problem, "description": (
                                "cannot_disable: nobody disables the main user, or themselves.")}})
    async def disable_user(username: Username, session: Current) -> dict[str, Any]:
        """Owners disable members; the main user disables any other user, owners too."""
        return user_out(await service.disable_user(session, username))

    @router.get("/account/api-keys", response_model=None, tags=["api keys"],
                responses={**answers(200, KeysOut, "The account's keys, revoked ones too (never the secrets)."),
                           **signed_in, **problems(422)})
    async def keys(session: Current, cursor: Cursor | None = None, limit: Limit = 50) -> dict[str, Any]:
        docs = await service.store.keys(session.user.account_id, cursor, limit)
        return page([key_out(d) for d in docs], docs, limit)

    @router.post("/account/api-keys", status_code=201, response_model=None, tags=["api keys"],
                 responses={**answers(201, NewKeyOut, "Issued; every service accepts it within moments."),
                            **signed_in, **problems(403, 422, 503)})
    async def issue_key(body: KeyIn, session: Current) -> dict[str, Any]:
        """Owners issue keys for the other services' APIs. The key is in this answer only."""
        key, doc = await service.issue_key(session, body.label)
        return {**key_out(doc), "key": key}

    @router.post("/account/api-keys/{key_id}/revocation", response_model=None, tags=["api keys"],
                 responses={**answers(200, KeyOut, "Revoked: every service refuses it from now on."),
                            **signed_in, **problems(403, 404, 422, 503)})
    async def revoke_key(key_id: Identifier, body: RevokeIn, session: Current) -> dict[str, Any]:
        return key_out(await service.revoke_key(session, key_id, body.reason))

    @router.get("/account/audit-log", response_model=None, tags=["account"],
                responses={**answers(200, AuditOut, "Logins, failed attempts and staff access, oldest first."),
                           **signed_in, **problems(403, 422)})
    async def audit_log(session: Current, cursor: Cursor | None = None, limit: Limit = 50) -> dict[str, Any]:
        """Owners read the account's audit log (PRODUCT.md: who, when, from where, success or not)."""
        docs = await service.audit(session, cursor, limit)
        return page([audit_out(d) for d in docs], docs, limit)

    return router


def build_staff_api(service: BillingService, staff_tokens: StaffTokens) -> APIRouter:
    """Platform staff only (a staff token, never a customer's credential); every look is audit-logged."""
    router = APIRouter(prefix="/v1/staff", responses=problems(401, 429), tags=["staff"])

    Staff = Annotated[str, Depends(staff_member(staff_tokens))]

    @router.get("/account-review", response_model=None,
                responses={**answers(200, QueueOut, "New accounts waiting for review, oldest first."),
                           **problems(422, 503)})
    async def review_queue(staff: Staff, cursor: Cursor | None = None, limit: Limit = 50) -> dict[str, Any]:
        accounts, last = await service.review_queue(staff, cursor, limit)
        usage = await service.store.touched_usage([a.account_id for a in accounts])
        return {"items": [account_out(*usage[a.account_id], service.clock(), service.calendar) for a in accounts
                          if a.account_id in usage],
                "next_cursor": last}

    @router.get("/accounts/{account_id}", response_model=None,
                responses={**answers(200, AccountOut, "The account."), **problems(404, 422, 503)})
    async def account(account_id: Identifier, staff: Staff) -> dict[str, Any]:
        return account_out(*await service.staff_account(staff, account_id), service.clock(), service.calendar)

    @router.post("/accounts/{account_id}/cancellation", response_model=None,
                 responses={**answers(200, AccountOut, "Cancelled: at the payment date that was next when the "
                                                       "request arrived, if it came at least 2 business days "
                                                       "before it, else at the one after; a renewal still open for "
                                                       "a period from then is void (agreement_ended)."),
                            **problems(404, 409, 422, 503),
                            409: {"model": Problem, "description": (
                                "not_on_a_monthly_plan, already_cancelled; or cancellation_needs_refund: the "
                                "plan should have ended at a date whose period was charged before the request was "
                                "recorded. Nothing is recorded; the detail gives the date, and `errors` names "
                                "each invoice to refund (`invoices.<number>`).")}})
    async def cancel(account_id: Identifier, body: CancellationIn, staff: Staff) -> dict[str, Any]:
        """A cancellation the customer sent another way (email, letter), recorded by staff: from the payment date
        that was next when it was received (`received_at`), however late it is recorded. If the period from the
        date it takes effect was already paid, it is refused (409 `cancellation_needs_refund`) rather than charge
        the customer for a period they cancelled."""
        account = await service.staff_cancel(staff, account_id, body.received_at)
        return account_out(account, await service.store.usage(account_id), service.clock(), service.calendar)

    @router.post("/accounts/{account_id}/cancellation/withdrawal", response_model=None,
                 responses={**answers(200, AccountOut, "Withdrawn: the plan goes on, renewed at the end of the paid "
                                                       "period as before."),
                            **problems(404, 409, 422, 503),
                            409: {"model": Problem, "description": (
                                "no_pending_cancellation; cancellation_took_effect: its time came before this was "
                                "recorded, the plan is over and the customer chooses a plan again; "
                                "account_rejected; account_closed.")},
                            422: {"model": Problem, "description": (
                                "invalid_request, or received_in_the_future: received_at is later than now.")}})
    async def withdraw_cancellation(account_id: Identifier, body: CancellationIn, staff: Staff) -> dict[str, Any]:
        """The customer's word that they keep the plan (email, letter), recorded by staff (`received_at`: when it
        reached Herald) before the cancellation takes effect."""
        account = await service.staff_withdraw_cancellation(staff, account_id, body.received_at)
        return account_out(account, await service.store.usage(account_id), service.clock(), service.calendar)

    @router.get("/accounts/{account_id}/audit-log", response_model=None,
                responses={**answers(200, AuditOut, "The account's audit log, oldest first."),
                           **problems(404, 422, 503)})
    async def audit_log(account_id: Identifier, staff: Staff, cursor: Cursor | None = None,
                        limit: Limit = 50) -> dict[str, Any]:
        docs = await service.staff_audit(staff, account_id, cursor, limit)
        return page([audit_out(d) for d in docs], docs, limit)

    @router.post("/accounts/{account_id}/approval", response_model=None,
                 responses={**answers(200, AccountOut, "Approved: it may send at its plan's limits."),
                            **problems(404, 422, 503)})
    async def approve(account_id: Identifier, body: ApproveIn, staff: Staff) -> dict[str, Any]:
        await service.approve(staff, account_id, body.note)
        return account_out(*await service.overview(account_id), service.clock(), service.calendar)

    @router.get("/kept-invoices/{invoice_id}", response_model=None,
                responses={**answers(200, KeptInvoiceOut, "The invoice, as issued."),
                           **problems(404, 422, 503),
                           404: {"model": Problem, "description": (
                               "invoice_not_found: no invoice of a purged account is kept under this number (never "
                               "issued, still its account's, or its legal period is over).")}})
    async def kept_invoice(invoice_id: Identifier, staff: Staff) -> dict[str, Any]:
        """An invoice of a purged account, kept for the period accounting law sets with the buyer's details it
        names and nothing else of the account (HERALD_BILLING_INVOICE_RETENTION_YEARS). Every look, found or not,
        is in the platform audit log."""
        return kept_invoice_out(await service.kept_invoice(staff, invoice_id))

    @router.get("/platform-audit-log", response_model=None,
                responses={**answers(200, PlatformAuditOut, "Oldest first."), **problems(422, 503)})
    async def platform_audit_log(staff: Staff, cursor: Cursor | None = None, since: Since | None = None,
                                 limit: Limit = 50) -> dict[str, Any]:
        """What belongs to no account: login attempts naming no user (within the hourly bound; every one is
        counted in `/platform-audit-log/hours`), and staff looks at kept invoices and at this log (this one too).
        From after `cursor` (a page's `next_cursor`) or from `since`."""
        docs = await service.platform_audit_log(staff, cursor, since, limit)
        return page([platform_audit_out(d) for d in docs], docs, limit)

    @router.get("/platform-audit-log/hours", response_model=None,
                responses={**answers(200, PlatformAuditHoursOut, "Oldest first: each hour with an attempt."),
                           **problems(422, 503)})
    async def platform_audit_hours(staff: Staff, cursor: Cursor | None = None, since: Since | None = None,
                                   limit: Limit = 50) -> dict[str, Any]:
        """Every login attempt naming no user, counted per hour and reason, those not written one by one too."""
        docs = await service.platform_audit_hours(staff, cursor, since, limit)
        return page([platform_audit_hour_out(d) for d in docs], docs, limit)

    @router.post("/accounts/{account_id}/rejection", response_model=None,
                 responses={**answers(200, AccountOut, "Rejected: sending stays held."),
                            **problems(404, 409, 422, 503)})
    async def reject(account_id: Identifier, body: RejectIn, staff: Staff) -> dict[str, Any]:
        await service.reject(staff, account_id, body.reasons)
        return account_out(*await service.overview(account_id), service.clock(), service.calendar)

    return router
