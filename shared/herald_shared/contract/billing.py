"""Events of the billing service (topic `herald.billing`): accounts, access, plans, quotas, credits, payments."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from .envelope import (
    Cents,
    Count,
    Currency,
    Email,
    Event,
    Identifier,
    Instant,
    Name,
    Payload,
    ShortText,
    StorableInt,
    personal_data,
)

Username = Annotated[str, StringConstraints(min_length=1, max_length=100)]
PlanKind = Literal["trial", "monthly", "pay_as_you_go", "none"]
BlockReason = Literal["trial_ended", "subscriber_limit_exceeded", "monthly_quota_reached", "credits_exhausted",
                      "payment_failed", "no_plan", "trial_quota_reached", "account_deleted"]
UserRole = Literal["owner", "member"]
PasswordHash = Annotated[str, StringConstraints(min_length=20, max_length=512)]
# A count or limit of one or more, that a store can keep (`StorableInt`).
Positive = Annotated[int, Field(gt=0), StorableInt]


class BillingEvent(Event):
    topic: ClassVar[str] = "herald.billing"


class AccountOpenedPayload(Payload):
    company_name: Name
    registered_email: Email = personal_data("Where account notices (suspension, payment) go.")
    main_username: Username
    terms_accepted_at: Instant = Field(description="Starts the 30-day trial.")


class AccountOpened(BillingEvent):
    type: Literal["AccountOpened"] = "AccountOpened"
    payload: AccountOpenedPayload


class AccountApprovedPayload(Payload):
    reviewer: Name
    note: ShortText | None = None


class AccountApproved(BillingEvent):
    """Staff reviewed the new account; it may now send at its plan's limits."""

    type: Literal["AccountApproved"] = "AccountApproved"
    payload: AccountApprovedPayload


class AccountRejectedPayload(Payload):
    reviewer: Name
    reasons: list[ShortText] = Field(min_length=1, max_length=20)


class AccountRejected(BillingEvent):
    """Staff reviewed the new account and refused it: it stays held (it may still manage its lists)."""

    type: Literal["AccountRejected"] = "AccountRejected"
    payload: AccountRejectedPayload


class AccountDeletedPayload(Payload):
    deleted_by: Username


class AccountDeleted(BillingEvent):
    """The account was closed by its owner: nothing is sent, nobody logs in, no key is accepted; its data is
    purged 3 months later (AccountPurged)."""

    type: Literal["AccountDeleted"] = "AccountDeleted"
    payload: AccountDeletedPayload


class AccountPurgedPayload(Payload):
    reason: Literal["deleted", "inactive"] = Field(description="deleted: 3 months after AccountDeleted; inactive: "
                                                               "no user logged in for 2 years.")
    since: Instant = Field(description="The deletion, or the last login (the opening when none).")


class AccountPurged(BillingEvent):
    """Retention (PRODUCT.md, "Data protection"): every service deletes all of the account's data from its read
    models and stores, and ignores the account's events from then on, in a rebuild too."""

    type: Literal["AccountPurged"] = "AccountPurged"
    payload: AccountPurgedPayload


class UserAddedPayload(Payload):
    username: Username = Field(description="Unique across Herald (lower case); what the user logs in with.")
    role: UserRole
    password_hash: PasswordHash = Field(description="argon2id hash of the password (PHC string); never the "
                                                    "password.")
    added_by: Username


class UserAdded(BillingEvent):
    """A user of the account: its main user (owner, at sign-up) or a sub-user."""

    type: Literal["UserAdded"] = "UserAdded"
    payload: UserAddedPayload


class PasswordChangedPayload(Payload):
    username: Username
    password_hash: PasswordHash
    ip: str | None = personal_data("Where the change came from (audit log).", default=None)
    user_agent: ShortText | None = None
    session_id: Identifier | None = Field(default=None, description="The session the change was made in.")
    reset_request_id: Identifier | None = Field(
        default=None, description="Set when the password was reset by the link mailed for this "
                                  "PasswordResetRequested (no session: the user had forgotten the password).")


class PasswordChanged(BillingEvent):
    """Sessions the user opened before this end with it; in the account's audit log."""

    type: Literal["PasswordChanged"] = "PasswordChanged"
    payload: PasswordChangedPayload


class PasswordResetRequestedPayload(Payload):
    request_id: Identifier = Field(description="The request, as the reset link names it. Not a secret: the link's "
                                               "token (an HMAC of the request under a key only billing and delivery "
                                               "hold) is in no event.")
    username: Username = Field(description="The user whose password the link resets.")
    expires_at: Instant = Field(description="The link works once, until then (an hour after the request).")
    ip: str | None = personal_data("Where the request came from (audit log).", default=None)
    user_agent: ShortText | None = None


class PasswordResetRequested(BillingEvent):
    """Someone asked to reset a user's password (an existing, enabled user of an open account): delivery mails a
    link to the account's registered address; in the account's audit log."""

    type: Literal["PasswordResetRequested"] = "PasswordResetRequested"
    payload: PasswordResetRequestedPayload


class UserDisabledPayload(Payload):
    username: Username
    disabled_by: Username


class UserDisabled(BillingEvent):
    type: Literal["UserDisabled"] = "UserDisabled"
    payload: UserDisabledPayload


class LoggedOutPayload(Payload):
    username: Username
    session_id: Identifier


class LoggedOut(BillingEvent):
    type: Literal["LoggedOut"] = "LoggedOut"
    payload: LoggedOutPayload


class StaffAccessedPayload(Payload):
    staff: Name = Field(description="The staff member (their credential's name).")
    what: Literal["review_queue", "account", "audit_log", "approve", "reject", "cancel", "withdraw_cancellation",
                  "event_log"] = Field(description="event_log: the account's events read from the topics with "
                                                   "their personal data shown (`herald tail --reveal`).")


class StaffAccessed(BillingEvent):
    """Audit: a member of the platform staff looked at (or decided on) the account's data in billing."""

    type: Literal["StaffAccessed"] = "StaffAccessed"
    payload: StaffAccessedPayload


class ApiKeyIssuedPayload(Payload):
    key_id: Identifier = Field(description="Public part of the key, also its lookup prefix.")
    key_hash: Annotated[str, StringConstraints(min_length=20, max_length=512)] = Field(
        description="Slow hash of the secret (scrypt, encoded as 'scrypt$n$r$p$salt$hash'); never the secret.")
    label: Name | None = None
    issued_by: Username


class ApiKeyIssued(BillingEvent):
    type: Literal["ApiKeyIssued"] = "ApiKeyIssued"
    payload: ApiKeyIssuedPayload


class ApiKeyRevokedPayload(Payload):
    key_id: Identifier
    revoked_by: Username
    reason: ShortText | None = None


class ApiKeyRevoked(BillingEvent):
    type: Literal["ApiKeyRevoked"] = "ApiKeyRevoked"
    payload: ApiKeyRevokedPayload


class LoginAttempt(Payload):
    username: Username
    actor: Literal["user", "staff"] = "user"
    method: Literal["password", "api_key"]
    ip: str | None = personal_data("Where the attempt came from (audit log).", default=None)
    user_agent: ShortText | None = personal_data("The client's User-Agent (audit log).", default=None)
    session_id: Identifier | None = Field(default=None, description="The session a password login opened.")


class LoginSucceeded(BillingEvent):
    type: Literal["LoginSucceeded"] = "LoginSucceeded"
    payload: LoginAttempt


class LoginFailedPayload(LoginAttempt):
    reason: Literal["unknown_user", "wrong_password", "revoked_key", "locked", "disabled_user",
                    "account_deleted", "malformed", "wrong_reset_token"] = Field(
        description="locked: refused unchecked, too many failed attempts for this user or address. malformed: "
                    "the request was not a valid login (422), e.g. a password longer than any Herald takes. "
                    "wrong_reset_token: a password reset was tried with a token that is not its own.")


class LoginFailed(BillingEvent):
    type: Literal["LoginFailed"] = "LoginFailed"
    payload: LoginFailedPayload


class PlanChangedPayload(Payload):
    plan: PlanKind
    edition: Literal["standard", "pro"] = Field(default="standard", description="PRO drops the Herald footer.")
    tier_subscriber_limit: Positive | None = Field(
        default=None, description="Monthly plans: subscriber limit of the tier.")
    monthly_send_cap: Count | None = Field(default=None, description="109 x the tier's subscriber limit.")
    monthly_fee_cents: Cents | None = None
    currency: Currency = "EUR"
    billing_day: Annotated[int, Field(ge=1, le=31)] | None = None
    effective_at: Instant


class PlanChanged(BillingEvent):
    """The account's plan from `effective_at` ("none": no plan, after a cancellation took effect)."""

    type: Literal["PlanChanged"] = "PlanChanged"
    payload: PlanChangedPayload


class TrialEndedPayload(Payload):
    reason: Literal["expired", "subscriber_limit_exceeded"]
    subscribers: Count
    emails_sent: Count


class TrialEnded(BillingEvent):
    type: Literal["TrialEnded"] = "TrialEnded"
    payload: TrialEndedPayload


class QuotaExhaustedPayload(Payload):
    quota: Literal["monthly_emails", "trial_emails", "trial_subscribers", "credits"]
    limit: Count
    used: Count
    period_start: Instant | None = None


class QuotaExhausted(BillingEvent):
    type: Literal["QuotaExhausted"] = "QuotaExhausted"
    payload: QuotaExhaustedPayload


class CreditsPurchasedPayload(Payload):
    batch_id: Identifier
    credits: Positive
    expires_at: Instant
    price_cents: Cents
    currency: Currency = "EUR"


class CreditsPurchased(BillingEvent):
    type: Literal["CreditsPurchased"] = "CreditsPurchased"
    payload: CreditsPurchasedPayload


class CreditsExpiredPayload(Payload):
    batch_id: Identifier
    credits_expired: Count


class CreditsExpired(BillingEvent):
    type: Literal["CreditsExpired"] = "CreditsExpired"
    payload: CreditsExpiredPayload


class PaymentFailedPayload(Payload):
    invoice_id: Identifier
    amount_cents: Cents
    currency: Currency = "EUR"
    reason: ShortText
    attempt: Annotated[int, Field(ge=1), StorableInt] = 1


class PaymentFailed(BillingEvent):
    type: Literal["PaymentFailed"] = "PaymentFailed"
    payload: PaymentFailedPayload


class PaymentSucceededPayload(Payload):
    invoice_id: Identifier
    amount_cents: Cents
    currency: Currency = "EUR"


class PaymentSucceeded(BillingEvent):
    type: Literal["PaymentSucceeded"] = "PaymentSucceeded"
    payload: PaymentSucceededPayload


class InvoiceLine(Payload):
    description: ShortText
    amount_cents: Cents


class PurchaseTerms(Payload):
    """What a purchase's invoice buys, recorded with the invoice before it is charged: once it is paid, its
    PaymentSucceeded is followed by the PlanChanged (plan, upgrade) or CreditsPurchased (credits) these terms
    make; a declined charge voids the invoice (`payment_declined`) and buys nothing."""

    tier_subscriber_limit: Positive | None = Field(default=None, description="Plan, upgrade.")
    edition: Literal["standard", "pro"] | None = Field(default=None, description="Plan, upgrade.")
    monthly_send_cap: Count | None = Field(default=None, description="Plan, upgrade.")
    monthly_fee_cents: Cents | None = Field(default=None, description="Plan, upgrade: the tier's full fee.")
    billing_day: Annotated[int, Field(ge=1, le=31)] | None = Field(default=None, description="Plan, upgrade.")
    credits: Positive | None = Field(default=None, description="Credits: how many.")
    credits_expire_at: Instant | None = Field(default=None, description="Credits: when they expire.")


# ISO 3166-1 alpha-2, upper case.
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
# An EU VAT number with its country's prefix (EL for Greece), without spaces; billing checks each country's format.
VatNumber = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}[0-9A-Z+*]{2,13}$")]
VatTreatment = Literal["domestic", "reverse_charge", "outside_eu", "eu_consumer"]


class InvoiceParty(Payload):
    """Who an invoice is from or to, as a VAT invoice names them (Directive 2006/112/EC, art. 226 (3) to (5))."""

    name: Name = personal_data("The legal name (a sole trader's is a person's name).")
    address: list[Name] = personal_data("The address, one line each.", min_length=1, max_length=4)
    country: CountryCode
    vat_number: VatNumber | None = Field(default=None, description="The VAT number, with its country's prefix.")


class InvoiceIssuedPayload(Payload):
    invoice_id: Identifier = Field(description="Its number: sequential per year without gaps, e.g. 2026-000042.")
    amount_cents: Cents = Field(description="What is due, VAT included.")
    currency: Currency = "EUR"
    period_start: Instant
    period_end: Instant
    due_at: Instant
    lines: list[InvoiceLine] = Field(min_length=1)
    kind: Literal["plan", "renewal", "upgrade", "credits"] | None = Field(
        default=None, description="What was bought: a plan's first period, a renewal, an upgrade's difference, "
                                  "credits. Paying a plan or renewal invoice pays its period.")
    net_cents: Cents | None = Field(default=None, description="The lines' sum, VAT excluded.")
    vat_cents: Cents | None = None
    vat_percent: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,2}(\.[0-9]{1,2})?$")] | None = None
    purchase: PurchaseTerms | None = Field(
        default=None, description="A purchase (plan, upgrade, credits) is recorded before it is charged: what "
                                  "it buys once paid. Absent on renewals and on purchases recorded only once paid.")
    seller: InvoiceParty | None = Field(default=None, description="The platform's company (absent on invoices "
                                                                  "issued before it was configured).")
    customer: InvoiceParty | None = Field(default=None, description="The account's billing details when the "
                                                                    "invoice was issued (absent: none were given).")
    vat_treatment: VatTreatment | None = Field(
        default=None, description="domestic: Latvian VAT (a customer in Latvia, or without billing details); "
                                  "reverse_charge: a business in another EU country with a VAT number, 0% "
                                  "(art. 196); outside_eu: 0%, outside the scope of EU VAT; eu_consumer: an EU "
                                  "customer elsewhere without a VAT number, Latvian VAT. Absent on invoices "
                                  "issued before treatments were decided (Latvian VAT).")
    vat_note: ShortText | None = Field(default=None, description="What the invoice says of its VAT treatment.")


class InvoiceIssued(BillingEvent):
    type: Literal["InvoiceIssued"] = "InvoiceIssued"
    payload: InvoiceIssuedPayload


class InvoiceVoidedPayload(Payload):
    invoice_id: Identifier
    reason: Literal["agreement_ended", "payment_declined", "account_deleted"] = Field(
        description="agreement_ended: the period it bills begins when or after the agreement ends (the plan was "
                    "cancelled while that period's renewal was unpaid). payment_declined: a purchase whose charge "
                    "was declined; it bought nothing. account_deleted: a purchase left open by an outage, which "
                    "the provider had not charged when the account was deleted; it is never charged.")


class InvoiceVoided(BillingEvent):
    """An open invoice that is no longer due, and is never charged."""

    type: Literal["InvoiceVoided"] = "InvoiceVoided"
    payload: InvoiceVoidedPayload


class PaymentMethodSetPayload(Payload):
    provider: Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[a-z0-9_\-]+$")]
    reference: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="The provider's reference to the method (never card data).")


class PaymentMethodSet(BillingEvent):
    """How automatic payments are taken from now on."""

    type: Literal["PaymentMethodSet"] = "PaymentMethodSet"
    payload: PaymentMethodSetPayload


class CancellationRequestedPayload(Payload):
    channel: Literal["self_service", "request"]
    received_at: Instant
    effective_at: Instant = Field(description="The end of a paid period: fees are not refunded.")
    requested_by: Name


class CancellationRequested(BillingEvent):
    """The agreement ends at `effective_at` (then PlanChanged to "none")."""

    type: Literal["CancellationRequested"] = "CancellationRequested"
    payload: CancellationRequestedPayload


class CancellationWithdrawnPayload(Payload):
    channel: Literal["self_service", "request"] = Field(description="self_service: an owner withdrew it; "
                                                                    "request: staff recorded the customer's word.")
    received_at: Instant
    cancel_at: Instant = Field(description="When the withdrawn cancellation would have taken effect.")
    withdrawn_by: Name


class CancellationWithdrawn(BillingEvent):
    """A cancellation withdrawn before it took effect: the plan goes on, renewed as before."""

    type: Literal["CancellationWithdrawn"] = "CancellationWithdrawn"
    payload: CancellationWithdrawnPayload


class BillingDetailsChangedPayload(Payload):
    legal_name: Name = personal_data("Who the invoices are made out to (a sole trader's is a person's name).")
    address: list[Name] = personal_data("The billing address, one line each.", min_length=1, max_length=4)
    country: CountryCode
    vat_number: VatNumber | None = Field(default=None, description="An EU VAT number of the country, with its "
                                                                   "prefix (format checked, not looked up in VIES).")
    changed_by: Username


class BillingDetailsChanged(BillingEvent):
    """The account's billing details: every invoice issued from now on names them and takes its VAT treatment
    from them."""

    type: Literal["BillingDetailsChanged"] = "BillingDetailsChanged"
    payload: BillingDetailsChangedPayload


class SendingBlockedPayload(Payload):
    reason: BlockReason
    detail: ShortText | None = None


class SendingBlocked(BillingEvent):
    """Billing closes the sending gate for one reason; each reason is lifted by its own SendingUnblocked."""

    type: Literal["SendingBlocked"] = "SendingBlocked"
    payload: SendingBlockedPayload


class SendingUnblockedPayload(Payload):
    reason: BlockReason


class SendingUnblocked(BillingEvent):
    type: Literal["SendingUnblocked"] = "SendingUnblocked"
    payload: SendingUnblockedPayload


SentKind = Literal["campaign", "test"]


class SentCounts(Payload):
    """Per kind, how many of the account's emails billing counts as sent (`MessageSent`, and `MessageBounced` with
    source `smtp_reply`, of campaign and test messages), over the account's life, whatever the plan."""

    campaign: Count = 0
    test: Count = 0


class SendAllowanceChangedPayload(Payload):
    remaining: Count | None = Field(description=(
        "How many more emails of the kinds in `counts` the account may send, reckoned when billing had counted "
        "`as_of`; null: billing's quotas set no limit."))
    counts: list[SentKind] = Field(max_length=2, description=(
        "The kinds of email that take from `remaining` now: campaign and test on the trial, campaign on a paid "
        "plan."))
    as_of: SentCounts = Field(description=(
        "What billing had counted as sent when it reckoned `remaining`: a sender subtracts only what it sent "
        "since."))
    sequence: Positive = Field(description=(
        "Per account, higher for each newer allowance: a copy or an older one read later changes nothing."))
    until: Instant | None = Field(default=None, description=(
        "The allowance holds until then at the latest (the trial's end, the expiry of the earliest batch of "
        "credits with some left); from then on a sender sends nothing more of the kinds in `counts` until a newer "
        "allowance comes. Null: only sends lower it (a monthly cap: a new period only raises it)."))


class SendAllowanceChanged(BillingEvent):
    """What an account may still send under its trial, credits or monthly cap, as of a count of its sends.

    `remaining` as of `as_of`: a sender subtracts only what it sent since, and sends nothing counted from `until` on.
    Published when the quota itself changes (the trial's start, credits bought or expired, a plan chosen or raised,
    a new period, a send past the bound, `until` moving as the earliest batch of credits is used up), not for each
    send counted (which changes `remaining` and `as_of` alike). Delivery counts its own sends against it before each
    SMTP transaction, so a quota is a bound, not a block announced after the send that reached it, and an expiry
    stops sending when it falls due, not at billing's next look at the clock."""

    type: Literal["SendAllowanceChanged"] = "SendAllowanceChanged"
    payload: SendAllowanceChangedPayload
