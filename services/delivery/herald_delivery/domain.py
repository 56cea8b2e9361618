"""Pure rules of delivery: message identity, the sending gates, SMTP outcomes, the retry policy, which tracking
hits a machine made, and what a staff look-up says of a message.

No I/O here. The sending gates are a fold over billing, compliance and campaign events; the sender asks
`closed_gate` before every message, and the retry policy decides when a deferred message is tried again.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
import uuid
from collections.abc import Container, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email

from herald_shared.contract import Event
from herald_shared.contract.billing import (
    AccountApproved,
    AccountOpened,
    PlanChanged,
    SendAllowanceChanged,
    SendingBlocked,
    SendingUnblocked,
)
from herald_shared.contract.campaigns import (
    CampaignApproved,
    CampaignCancelled,
    CampaignQueued,
    CampaignRejected,
)
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended
from herald_shared.contract.delivery import (
    CampaignDeliveryFinished,
    CampaignDeliveryFinishedPayload,
)
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    FieldValue,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)

# Fixed namespace: message ids and derived event ids are the same in every process and every replay.
HERALD_DELIVERY_NAMESPACE = uuid.UUID("5b1c2f7e-8f0b-4d55-9a43-2f6f4f1a7d10")

Gate = Literal["account_suspended", "sending_blocked", "account_review", "campaign_review", "send_allowance"]
GATES: tuple[Gate, ...] = ("account_suspended", "sending_blocked", "account_review", "campaign_review",
                           "send_allowance")
MessageKind = Literal["campaign", "confirmation", "account_notice", "test"]
PRODUCER = "delivery"


@dataclass(frozen=True, slots=True)
class MessageFlow:
    """The flow a message belongs to: that of the event that asked for it (its correlation, or its own id when it
    has none, as `Event.caused` says), which caused it. A campaign's messages: its CampaignQueued's, kept once per
    campaign (its document's `flow`, the gate book in memory), not per job; a campaign queued before 2026-12-07 has
    none. A confirmation, an account notice or a test send: its ConfirmationRequested's, MembershipNoticeRequested's
    (or the suspension's, block's, failed payment's, password reset's) or CampaignTestRequested's, kept on its job
    (`flow`); none on a job written before 2026-12-08."""

    correlation_id: uuid.UUID
    cause: uuid.UUID

    @classmethod
    def of(cls, asking: Event) -> MessageFlow:
        return cls(asking.correlation_id or asking.event_id, asking.event_id)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> MessageFlow | None:
        """The flow a campaign or job document keeps (`stored`), or None (written before it was kept)."""
        stored = doc.get("flow")
        if not isinstance(stored, Mapping):
            return None
        try:
            return cls(uuid.UUID(str(stored["correlation_id"])), uuid.UUID(str(stored["queued_event_id"])))
        except (KeyError, ValueError):
            return None

    def stored(self) -> dict[str, str]:
        # "queued_event_id": the name campaign documents have had since 2026-12-07 (the cause of a campaign's
        # messages is its CampaignQueued); a job's says the same of the event that asked for it.
        return {"correlation_id": str(self.correlation_id), "queued_event_id": str(self.cause)}

    def caused(self) -> dict[str, uuid.UUID]:
        """Envelope fields of an event about one of its messages: its flow, caused by the event that asked."""
        return {"correlation_id": self.correlation_id, "causation_id": self.cause}


def caused_by(flow: MessageFlow | None) -> dict[str, uuid.UUID]:
    """`flow.caused()`, or nothing (the event carries no flow but the one under way, if any)."""
    return flow.caused() if flow is not None else {}


def message_id_for(account_id: str, campaign_id: str, subscriber_id: str) -> str:
    """Deterministic: the same campaign and subscriber always give the same message id."""
    return str(uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"campaign:{account_id}:{campaign_id}:{subscriber_id}"))


def transactional_message_id(kind: MessageKind, cause_event_id: str) -> str:
    """A confirmation or account notice is one message per event that asked for it."""
    return str(uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"{kind}:{cause_event_id}"))


def message_id_for_test(account_id: str, test_id: str, recipient: str) -> str:
    """One message per test send and address: a redelivered CampaignTestRequested sends nothing twice."""
    return str(uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"test:{account_id}:{test_id}:{recipient.lower()}"))


def outcome_event_id(message_id: str, outcome: str, attempt: int) -> uuid.UUID:
    """The event id of one outcome of one attempt: republishing it after a crash is deduplicated downstream."""
    return uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"outcome:{message_id}:{outcome}:{attempt}")


def inbound_bounce_event_id(message_id: str, bounce_class: str) -> uuid.UUID:
    """The MessageBounced a report to the inbound server makes of one message and class (one per pair: a second
    report of the same failure adds nothing); the ids published are kept, so a look-up can ask for them."""
    return uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"inbound:{message_id}:bounce:{bounce_class}")


# Account and campaign gates


@dataclass(frozen=True)
class SendAllowance:
    """What billing last said the account may still send (SendAllowanceChanged): `remaining` emails of the
    `counts` kinds (None: no limit), reckoned when billing had counted `as_of_campaign` and `as_of_test` of its
    sends (lifetime counts of the outcomes billing counts as sent, `herald_shared.sent.email_sent`), and holding
    until `until` at the latest (a trial's end, credits expiring; None: only sends lower it)."""

    remaining: int | None
    counts: tuple[str, ...]
    as_of_campaign: int = 0
    as_of_test: int = 0
    sequence: int = 0
    until: datetime | None = None

    def as_of(self, kind: str) -> int:
        return self.as_of_campaign if kind == "campaign" else self.as_of_test if kind == "test" else 0


@dataclass(frozen=True)
class AccountState:
    """What delivery knows of an account, folded from herald.billing and herald.compliance."""

    account_id: str
    approved: bool = False
    suspended: bool = False
    suspension_reason: str | None = None
    suspension_event_id: str | None = None
    blocked_reasons: frozenset[str] = frozenset()
    edition: Literal["standard", "pro"] = "standard"
    registered_email: str | None = None
    company_name: str | None = None
    allowance: SendAllowance | None = None  # None: billing said nothing yet, and nothing limits the account here


def evolve_account(state: AccountState, event: Event) -> AccountState:
    """Fold one billing or compliance event into the account's sending state; other events change nothing."""
    if isinstance(event, AccountOpened):
        return replace(state, registered_email=str(event.payload.registered_email),
                       company_name=event.payload.company_name)
    if isinstance(event, AccountApproved):
        return replace(state, approved=True)
    if isinstance(event, PlanChanged):
        return replace(state, edition=event.payload.edition)
    if isinstance(event, SendAllowanceChanged):
        p = event.payload
        if state.allowance is not None and state.allowance.sequence > p.sequence:
            return state  # an older one read after a newer
        return replace(state, allowance=SendAllowance(p.remaining, tuple(p.counts), p.as_of.campaign, p.as_of.test,
                                                      p.sequence, p.until))
    if isinstance(event, SendingBlocked):
        return replace(state, blocked_reasons=state.blocked_reasons | {event.payload.reason})
    if isinstance(event, SendingUnblocked):
        return replace(state, blocked_reasons=state.blocked_reasons - {event.payload.reason})
    if isinstance(event, AccountSuspended):
        return replace(state, suspended=True, suspension_reason=event.payload.reason,
                       suspension_event_id=str(event.event_id))
    if isinstance(event, AccountReinstated):
        named, current = event.payload.suspension_event_id, state.suspension_event_id
        if named is not None and current is not None and named != current:
            return state  # it lifts an earlier suspension, not the one in force (unknown: one stored before ids)
        return replace(state, suspended=False, suspension_reason=None, suspension_event_id=None)
    return state


@dataclass(frozen=True)
class CampaignState:
    """A queued campaign as delivery sees it, folded from herald.campaigns (events may come in any order
    relative to each other: an approval can precede the queueing)."""

    campaign_id: str
    queued: bool = False
    review_required: bool = False
    approved: bool = False
    rejected: bool = False
    cancelled: bool = False


def evolve_campaign(state: CampaignState, event: Event) -> CampaignState:
    if isinstance(event, CampaignQueued):
        # Queued once per campaign, after the last submission's review: a rejection before it judged an earlier
        # submission, which the author edited and submitted again (with no review needed once off the trial).
        return replace(state, queued=True, review_required=event.payload.review_required, rejected=False)
    if isinstance(event, CampaignApproved):
        return replace(state, approved=True, rejected=False)
    if isinstance(event, CampaignRejected):
        return replace(state, rejected=True, approved=False)
    if isinstance(event, CampaignCancelled):
        return replace(state, cancelled=True)
    return state


def closed_gate(account: AccountState, campaign: CampaignState | None) -> Gate | None:
    """The first gate that holds a campaign message, or None when it may go out (PRODUCT.md: "Sending
    suspension", "Review", "Plans and billing"). Transactional mail (confirmations, account notices) is
    not held: a suspended account must still receive its notice, and a subscriber can still confirm."""
    if account.suspended:
        return "account_suspended"
    if account.blocked_reasons:
        return "sending_blocked"
    if not account.approved:
        return "account_review"
    if campaign is not None and campaign.review_required and not campaign.approved:
        return "campaign_review"
    return None


def gate_refusing_test(account: AccountState) -> Gate | None:
    """The gate that refuses a test send, or None. A test goes to the few addresses its author names, so
    staff review holds none (it is how a campaign is prepared for review); but a suspended or blocked
    account may not mail anyone, tests included. A test is refused rather than held: it is wanted now, not
    whenever the account is reinstated."""
    if account.suspended:
        return "account_suspended"
    if account.blocked_reasons:
        return "sending_blocked"
    return None


# The send allowance: a quota kept before each SMTP transaction (README, "Gates")

def allowance_room(allowance: SendAllowance | None, sent: Mapping[str, int], in_flight: Mapping[str, int],
                   now: datetime | None) -> int | None:
    """How many more messages of a counted kind may start their SMTP transaction: what billing allowed, less what
    this sender sent of the counted kinds since billing's count (`sent`: its own lifetime counts, never taken
    below billing's), less those in flight (each may yet count); none from its `until` on (`now`; None: the
    counts alone are compared). None: nothing limits the account."""
    if allowance is None or allowance.remaining is None:
        return None
    used = sum(max(0, sent.get(kind, 0) - allowance.as_of(kind)) + in_flight.get(kind, 0)
               for kind in allowance.counts)
    room = allowance.remaining - used
    return min(room, 0) if allowance_ended(allowance, now) else room


def allowance_ended(allowance: SendAllowance | None, now: datetime | None) -> bool:
    """Whether the allowance's `until` has come: nothing counted is sent until billing tells a newer one."""
    return allowance is not None and allowance.until is not None and now is not None and now >= allowance.until


def allowance_holds(allowance: SendAllowance | None, kind: str, sent: Mapping[str, int],
                    in_flight: Mapping[str, int], now: datetime | None) -> bool:
    """Whether a message of `kind` must wait for a newer allowance: its kind counts and no room is left (the
    counts used, or its `until` come)."""
    if allowance is None or kind not in allowance.counts:
        return False
    room = allowance_room(allowance, sent, in_flight, now)
    return room is not None and room < 1


def tighter_allowance(current: SendAllowance | None, staged: SendAllowance | None,
                      sent: Mapping[str, int]) -> SendAllowance | None:
    """Of an allowance in force and one waiting to be stored, the one to keep meanwhile: a smaller one at once, a
    larger only once stored (as a gate closes at once and opens once stored). None is no limit, the largest."""
    if current is None or staged is None:
        return staged if current is None else current
    if staged.remaining is None or current.remaining is None:
        return current if staged.remaining is None else staged
    no_flight: dict[str, int] = {}  # each judged by the kinds it counts: the one leaving less room is kept
    staged_room = allowance_room(staged, sent, no_flight, None)
    current_room = allowance_room(current, sent, no_flight, None)
    assert staged_room is not None and current_room is not None
    kept = staged if staged_room < current_room else current
    # ... and it ends at the earlier of their ends
    ends = [a.until for a in (current, staged) if a.until is not None]
    return replace(kept, until=min(ends)) if ends else kept


def gate_reason(gate: Gate, account: AccountState) -> str:
    if gate == "account_suspended":
        return f"account suspended: {account.suspension_reason or 'by compliance'}"
    if gate == "sending_blocked":
        return "sending blocked by billing: " + ", ".join(sorted(account.blocked_reasons))
    if gate == "account_review":
        return "the account has not passed staff review yet"
    if gate == "send_allowance":
        allowed = account.allowance.remaining if account.allowance is not None else None
        until = account.allowance.until if account.allowance is not None else None
        ends = f", allowed until {until.isoformat()}" if until is not None else ""
        return (f"the account's emails allowed by billing are sent or their time is up ({allowed} when it last "
                f"counted{ends}): held until more are allowed (a plan, credits, the next period)")
    return "the campaign waits for staff approval (trial: every campaign is reviewed)"


# The end of a campaign

# How one campaign message ended, as CampaignDeliveryFinished counts it.
FinalResult = Literal["sent", "bounced", "skipped", "failed", "cancelled"]
# Why the sender skips a message whose member left the audience after the expansion (it reads each member
# again when it hands the message out): `not_in_audience`, `member_<status>`. Any other skip is a failure.
LEFT_THE_AUDIENCE = re.compile(r"^(not_in_audience|member_[a-z_]+|list_deleted)$")


def final_result(outcome: str, reason: str | None = None) -> FinalResult | None:
    """How a recorded outcome counts at the end of its campaign; None for a deferral, which is tried again."""
    if outcome == "sent":
        return "sent"
    if outcome == "bounced":  # refused when sent, or given up at the retry age
        return "bounced"
    if outcome == "cancelled":
        return "cancelled"
    if outcome == "skipped":
        return "skipped" if reason is not None and LEFT_THE_AUDIENCE.match(reason) else "failed"
    return None


@dataclass(frozen=True)
class CampaignProgress:
    """How far delivery is with one campaign: how many jobs its expansion wrote (None until it has written
    all of them) and how its finished messages ended. The unfinished ones are the sender's queue's to count."""

    expanded_jobs: int | None = None
    sent: int = 0
    bounced: int = 0
    skipped: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def finished_messages(self) -> int:
        return self.sent + self.bounced + self.skipped + self.failed + self.cancelled

    def counted(self, result: FinalResult, messages: int = 1) -> CampaignProgress:
        return replace(self, **{result: getattr(self, result) + messages})


def delivery_finished_event_id(account_id: str, campaign_id: str) -> uuid.UUID:
    """One CampaignDeliveryFinished per campaign: announcing it again after a crash is deduplicated downstream."""
    return uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"campaign-delivery-finished:{account_id}:{campaign_id}")


def delivery_finished(account_id: str, campaign_id: str, progress: CampaignProgress, unfinished: int,
                      now: datetime, flow: MessageFlow | None = None) -> CampaignDeliveryFinished | None:
    """The end of a campaign, or None: it has ended when its expansion has written every job and none of its
    messages is unfinished (pending, held behind a closed gate, or deferred for a retry). A campaign nobody
    receives ends right after its expansion; a cancelled one once its remaining messages are recorded
    cancelled. Each message ends once, so `recipients` is the sum of how they ended: the messages the
    campaign has in the ledger."""
    if progress.expanded_jobs is None or unfinished > 0:
        return None
    return CampaignDeliveryFinished(
        event_id=delivery_finished_event_id(account_id, campaign_id), account_id=account_id, producer=PRODUCER,
        occurred_at=now, **caused_by(flow), payload=CampaignDeliveryFinishedPayload(
            campaign_id=campaign_id, recipients=progress.finished_messages, sent=progress.sent,
            bounced=progress.bounced, skipped=progress.skipped, failed=progress.failed,
            cancelled=progress.cancelled))


# SMTP outcomes

# Digits are ASCII ones ([0-9]; \d is any script's): what the contract's EnhancedStatus takes, and the published
# schema, read as ECMA-262 reads it, too. "5.1.\u0661" in a reply is no status.
ENHANCED_STATUS = re.compile(r"^\s*([245])\.([0-9]{1,3})\.([0-9]{1,3})\b")
# An email address as a relay or a bounce report quotes it ("550 5.1.1 <bob@example.org>: Recipient address
# rejected"): a reply's words say why, the message id says whose, and the address would outlive an erasure in the
# ledger and in the events.
ADDRESS_IN_TEXT = re.compile(r"[^\s<>()\[\]\",;:@]+@[^\s<>()\[\]\",;:@]+")  # any script: no \w (marks)


def ascii_address(address: str) -> str:
    """The address as a relay without SMTPUTF8 takes it, when there is such a form: an ASCII local part at an
    internationalised domain goes with the domain's A-labels (`anna@bücher.de` is `anna@xn--bcher-kva.de`, the
    same mailbox, RFC 5890); a non-ASCII local part has none (RFC 6530), and stays as it is."""
    if address.isascii() or not address.rpartition("@")[0].isascii():
        return address
    try:
        return validate_email(address, check_deliverability=False).ascii_email or address
    except EmailNotValidError:
        return address


def ascii_domain(domain: str) -> str:
    """A domain as a head without SMTPUTF8 and DNS write it: lower case, an international label as its A-label
    (`bücher.de` and `xn--bcher-kva.de` are both `xn--bcher-kva.de`), by the rule of `ascii_address`; as it
    is, lower-cased, when IDNA refuses it."""
    return ascii_address(f"postmaster@{domain}").rpartition("@")[2].lower()


def signing_domain(from_domain: str, keyed: Container[str]) -> str | None:
    """Of the domains with DKIM keys (`keyed`, A-labels), the one that signs mail From `from_domain`: the domain
    itself, else its nearest parent with keys, never one of fewer than two labels (no public-suffix list here:
    a key is the operator's, for a domain they hold). `mail.acme.example` signed as `acme.example` is aligned
    for DMARC (relaxed alignment, RFC 7489 3.1.1), the platform's key is not. None: no domain of its own."""
    labels = ascii_domain(from_domain).split(".")
    for start in range(0, max(len(labels) - 1, 1)):
        candidate = ".".join(labels[start:])
        if candidate in keyed:
            return candidate
    return None


def without_addresses(text: str, known: str = "") -> str:
    """`text` with every email address in it (and `known`, one the caller knows it may quote, however written)
    replaced by the word `address`."""
    if known and known in text:
        text = text.replace(known, "address")
    return ADDRESS_IN_TEXT.sub("address", text) if "@" in text else text


@dataclass(frozen=True)
class SmtpReply:
    """A reply from the relay, or a connection failure (code None)."""

    code: int | None
    text: str
    # Where the relay answered: a refusal of our MAIL FROM is about us (the sender), not the recipient.
    stage: Literal["connect", "mail", "rcpt", "data"] = "data"
    # Made by Herald's own client, the message never handed to the relay (an address it cannot carry).
    local: bool = False

    @property
    def enhanced_status(self) -> str | None:
        match = ENHANCED_STATUS.match(self.text)
        if not match or self.code is None or match.group(1) != str(self.code)[0]:
            return None
        return ".".join(match.groups())

    @property
    def diagnostic(self) -> str:
        if self.code is None:
            return self.text[:1000] or "connection failed"
        return f"{self.code} {self.text}"[:1000]


Outcome = Literal["sent", "deferred", "bounced"]


# Our relay refusing Herald, not a receiver refusing the mail (services/delivery/README.md, "The relay refusing
# us"). Postfix answers its relay and sender restrictions at RCPT TO (smtpd_delay_reject), so the stage does not
# tell; the codes and words do. Codes that say it alone: RFC 4954's AUTH replies (530 required, 534 too weak,
# 535 invalid, 538 encryption required), X.1.7/X.1.8 (our sender's address or domain: Herald's own return path,
# never the customer's address), X.7.8 (RFC 4954 credentials invalid), and Exchange Online's X.7.54 (unable to
# relay), X.7.57 (client not authenticated), X.7.60 (not allowed to send as this sender), X.7.64 (tenant
# attribution: relay access denied).
RELAY_REFUSAL_CODES = frozenset({530, 534, 535, 538})
RELAY_REFUSAL_STATUS = frozenset({"1.7", "1.8", "7.8", "7.54", "7.57", "7.60", "7.64"})
# Statuses too generic to decide (X.0.0, X.1.0, X.7.0, X.7.1: a relay's denial and a receiver's spam refusal
# both use 5.7.1): their words do. Any other status (5.1.1 user unknown, 5.7.26 DMARC...) is the receiver's.
GENERIC_STATUS = frozenset({"0.0", "1.0", "7.0", "7.1"})
# The words relays write when they refuse us: Postfix (reject_unauth_destination, reject_sender_login_mismatch,
# reject_unknown_sender_domain), Sendmail and Exim (relaying denied, not permitted, prohibited), qmail (not in
# my list of allowed rcpthosts: a smarthost says it, never the recipient's server), Exchange (unable to relay,
# client not authenticated), Gmail's SMTP relay (mail relay denied, invalid credentials for relay), Amazon SES
# (address not verified, sending paused, IAM not authorized to perform), SendGrid (verified sender identity,
# unauthenticated senders). Never "unauthenticated" or "access denied" alone: Gmail refuses unauthenticated
# mail under DMARC and Microsoft 365 answers an unknown recipient "Recipient address rejected: Access denied",
# both receivers.
RELAY_REFUSAL = re.compile(
    r"\brelay(ing)?\b[^;\n]{0,120}?\b(denied|not (permitted|allowed)|prohibited|refused)|unable to relay"
    r"|(not permitted|not allowed|not authori[sz]ed) to relay|we do not relay|relay not permitted"
    r"|sender address rejected|not owned by (the )?user|authentication (is )?required|must authenticate"
    r"|must issue a starttls|(client|sender|you) (was |were |are |is )?not authenticated"
    r"|unauthenticated (senders?|relay|clients?)( are)? not (allowed|permitted)|invalid credentials"
    r"|(email )?address(es)? (is |are )?not verified|verified sender identity|sending (is )?paused"
    r"|not authori[sz]ed to perform|does not have permissions? to send as|in my list of allowed rcpthosts",
    re.IGNORECASE)


def relay_refused(reply: SmtpReply) -> bool:
    """Whether a 5xx from the relay refuses Herald itself (its access, credentials or sender), not the
    recipient or the mail: the platform's configuration, which no customer is counted for."""
    if reply.code is None or not 500 <= reply.code < 600 or reply.local:
        return False
    if reply.code in RELAY_REFUSAL_CODES:
        return True
    status = reply.enhanced_status
    subject_detail = status.partition(".")[2] if status else None
    if subject_detail in RELAY_REFUSAL_STATUS:
        return True
    if subject_detail is not None and subject_detail not in GENERIC_STATUS:
        return False
    return RELAY_REFUSAL.search(reply.text) is not None


def refuses_us(reply: SmtpReply) -> bool:
    """A relay's 5xx about Herald rather than the recipient: to our MAIL FROM, or `relay_refused`."""
    if reply.code is None or not 500 <= reply.code < 600 or reply.local:
        return False
    return reply.stage == "mail" or relay_refused(reply)


def classify(reply: SmtpReply) -> Outcome:
    """2xx sent; 4xx or no reply (connection trouble) deferred; 5xx to RCPT or DATA a hard bounce (RFC 5321
    4.2.1). A 5xx to MAIL FROM refuses our sender, not the address, and so does our relay refusing to relay
    for us at any stage (`relay_refused`): deferred, so no subscriber is suppressed and no account counted for
    the platform's own configuration (it soft-bounces at the give-up age if never fixed)."""
    if reply.code is None or 400 <= reply.code < 500 or reply.stage in ("connect", "mail"):
        return "deferred"
    if relay_refused(reply):
        return "deferred"
    if 200 <= reply.code < 300:
        return "sent"
    if 500 <= reply.code < 600:
        return "bounced"
    # 1xx/3xx at the end of a transaction is a protocol error of the relay: try again later.
    return "deferred"


# Bounce classification: one table for SMTP replies at sending time and for reports that come back later.
#
# hard: the address is invalid, so it is suppressed and counts toward the hard-bounce rate. block: the receiver
# refused our mail, not the address (policy, spam, reputation, authentication), so it counts toward the block
# rate and never suppresses anyone. soft: temporary. undetermined: nothing below says; reported only.
# Mailgun, SendGrid and Amazon SES draw the same line between bounces (the address) and blocks (the sender).

BounceClass = Literal["hard", "soft", "block", "undetermined"]

# Enhanced status codes of a permanent failure (RFC 3463 "5.subject.detail"), by "subject.detail", then by
# "subject". Every 4.x.x is soft. Codes not here (5.0.0, 5.1.0's siblings, 5.5.x...) say too little alone:
# the phrases, then the SMTP code decide.
PERMANENT_STATUS: dict[str, BounceClass] = {
    "1.1": "hard",   # RFC 3463 X.1.1 bad destination mailbox address: no such user
    "1.2": "hard",   # X.1.2 bad destination system address: the domain does not exist or takes no mail
    "1.3": "hard",   # X.1.3 bad destination mailbox address syntax
    "1.4": "hard",   # X.1.4 destination mailbox address ambiguous
    "1.6": "hard",   # X.1.6 destination mailbox has moved, no forwarding address
    "1.10": "hard",  # RFC 7505 X.1.10: the recipient's domain publishes a null MX, it takes no mail
    "1.7": "block",  # X.1.7 bad sender's mailbox address syntax: our sender is refused, not the address
    "1.8": "block",  # X.1.8 bad sender's system address: our sending domain is refused
    "2.1": "hard",   # X.2.1 mailbox disabled, not accepting messages (a closed or deactivated account)
    "2.2": "soft",   # X.2.2 mailbox full: RFC 3463 allows it as a persistent transient failure
    "2.3": "soft",   # X.2.3 message length exceeds administrative limit: this message, not the address
    "3.4": "soft",   # X.3.4 message too big for system: as X.2.3
    "4.1": "hard",   # X.4.1 no answer from host; Microsoft 365 answers unknown recipients with 5.4.1
    "4.4": "hard",   # X.4.4 unable to route: the domain has no MX or address record
    "4.7": "soft",   # X.4.7 delivery time expired: the receiver never refused the address
    # X.6.x the message's content or media (RFC 3463), e.g. 5.6.7 a non-ASCII address a server on the way cannot
    # carry (RFC 6531): neither the address's fault nor a refusal of our mail; never suppresses anyone.
    "6": "undetermined",
    "7": "block",    # X.7.x security or policy: spam or content, blocklists, SPF/DKIM/DMARC (5.7.26), rDNS (5.7.25)
}

# Known phrases, matched in this order in the reply or the report's text when the status code decides nothing.
# Blocks come first: wrongly calling a block "hard" suppresses a valid subscriber, the costlier mistake.
_PHRASES: tuple[tuple[BounceClass, str, str], ...] = (
    ("block", r"\bspam\b|unsolicited|\bjunk\b|bulk mail",
     "spam or bulk-mail rejection (Gmail 5.7.1 'likely unsolicited mail')"),
    ("block", r"\bblock(ed|ing)?\b|blocklist|blacklist|denylist|\bdnsbl\b|\brbl\b|listed (at|on|in|by)\b"
              r"|spamhaus|spamcop|barracuda|sorbs|uceprotect|surbl",
     "blocked, or a blocklist listing (PRODUCT.md: IPs or domains blocklisted)"),
    ("block", r"reputation|policy (reason|violation|rejection)|rejected (by|for|due to) policy"
              r"|content (rejected|filter)|virus|malware|phishing",
     "reputation, policy or content rejection"),
    ("block", r"\bdmarc\b|\bspf\b|\bdkim\b|not authenticated|unauthenticated|reverse dns|\bptr\b",
     "the receiver's sender authentication (RFC 7208/6376/7489) or reverse DNS checks"),
    ("soft", r"mailbox (is )?full|over ?quota|quota exceeded|exceeded (its )?(storage|quota)"
             r"|insufficient (storage|disk)|storage allocation",
     "mailbox full (RFC 3463 X.2.2; RFC 5321 552)"),
    ("soft", r"gr[ae]ylist|try again later|temporar(il)?y",
     "greylisting or a temporary refusal"),
    ("hard", r"user unknown|unknown (user|recipient|mailbox|address)|no such (user|mailbox|recipient|address)"
             r"|(user|mailbox|recipient|address) (not found|does not exist|doesn't exist|unknown)"
             r"|invalid (recipient|mailbox|address)|not a valid (recipient|mailbox|user)|no mailbox"
             r"|mailbox unavailable|bad destination|unrouteable address|does not exist",
     "the address does not exist (RFC 3463 X.1.1, RFC 5321 550 'mailbox unavailable')"),
    ("hard", r"(account|mailbox|user) (has been |is )?(disabled|deactivated|inactive|closed|suspended)"
             r"|no longer (active|in use|available)",
     "the mailbox was closed (RFC 3463 X.2.1)"),
)
BOUNCE_PHRASES = tuple((bounce_class, re.compile(pattern, re.IGNORECASE), why)
                       for bounce_class, pattern, why in _PHRASES)

# Basic SMTP reply codes of a permanent failure (RFC 5321 4.2, RFC 7504) that decide when nothing else does;
# 550 and 554 are too generic to.
PERMANENT_SMTP: dict[int, BounceClass] = {
    521: "hard",   # RFC 7504: the host does not accept mail
    551: "hard",   # RFC 5321: user not local
    553: "hard",   # RFC 5321: mailbox name not allowed
    556: "hard",   # RFC 7504: the domain does not accept mail
    552: "soft",   # RFC 5321: exceeded storage allocation (mailbox full)
    530: "block",  # RFC 4954: authentication required: our sending, not the address
    535: "block",  # RFC 4954: authentication credentials invalid
}

# Its digits ASCII, as ENHANCED_STATUS's; next to a digit of any script it is no status.
TEXT_STATUS = re.compile(r"(?<![\d.])([245])\.([0-7])\.([0-9]{1,3})(?![.\d])")
# A reply code where replies put them: at a line's start or after "said:", "smtp;", "error:" and the like.
TEXT_SMTP_CODE = re.compile(r"(?:^|[:;]\s*)([245][0-5][0-9])(?=[ \t-])", re.MULTILINE)


@dataclass(frozen=True)
class BounceVerdict:
    bounce_class: BounceClass
    why: str


def status_in(text: str) -> str | None:
    match = TEXT_STATUS.search(text)
    return ".".join(match.groups()) if match else None


def smtp_code_in(text: str) -> int | None:
    match = TEXT_SMTP_CODE.search(text)
    return int(match.group(1)) if match else None


def classify_bounce(*, status: str | None, smtp_code: int | None, text: str,
                    permanent: bool | None = None) -> BounceVerdict:
    """The class of one failure: its enhanced status code, then known phrases in its text, then its SMTP
    code, then what the report says of it (`permanent`: failed for good, False: delayed, None: unknown).
    The codes are taken from the text when not given."""
    status = status or status_in(text)
    smtp_code = smtp_code or smtp_code_in(text)
    if (status or "").startswith("4") or (smtp_code is not None and 400 <= smtp_code < 500) or permanent is False:
        return BounceVerdict("soft", f"temporary failure {status or smtp_code or ''}".strip())
    if status is not None and status.startswith("5"):
        _, subject, detail = status.split(".")
        decided = PERMANENT_STATUS.get(f"{subject}.{detail}") or PERMANENT_STATUS.get(subject)
        if decided is not None:
            return BounceVerdict(decided, f"status {status}")
    for bounce_class, pattern, why in BOUNCE_PHRASES:
        if pattern.search(text):
            return BounceVerdict(bounce_class, why)
    if smtp_code in PERMANENT_SMTP:
        return BounceVerdict(PERMANENT_SMTP[smtp_code], f"SMTP code {smtp_code}")
    if permanent and status is None and smtp_code is None:
        # A bounce format recognised as a permanent failure of the address, with no code to say otherwise.
        return BounceVerdict("hard", "permanent failure reported for the address")
    return BounceVerdict("undetermined", f"nothing classifies {status or smtp_code or 'the report'}")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, until a give-up age after the first attempt (72 hours by
    default, as large senders do; RFC 5321 4.5.4.1 allows 4-5 days). Then the message soft-bounces."""

    first_delay: timedelta = timedelta(minutes=5)
    max_delay: timedelta = timedelta(hours=4)
    give_up_after: timedelta = timedelta(hours=72)
    multiplier: float = 2.0
    jitter: float = 0.5  # each delay is drawn from [delay * (1 - jitter), delay]

    def __post_init__(self) -> None:
        if self.first_delay <= timedelta(0) or self.max_delay < self.first_delay:
            raise ValueError("retry delays must be positive and first_delay <= max_delay")
        if not 0 <= self.jitter < 1 or self.multiplier < 1:
            raise ValueError("jitter must be in [0, 1) and multiplier >= 1")

    def delay(self, attempt: int, rng: random.Random) -> timedelta:
        """Wait after the `attempt`-th failed attempt (1-based)."""
        first, most = self.first_delay.total_seconds(), self.max_delay.total_seconds()
        # multiplier ** (attempt - 1) overflows a float past ~1,000 attempts (possible with short delays and a
        # long give-up age): the exponent stops growing once the ceiling is reached anyway
        exponent = min(attempt - 1, math.ceil(math.log(most / first, self.multiplier)) if self.multiplier > 1 else 0)
        ceiling = min(first * self.multiplier ** exponent, most)
        return timedelta(seconds=ceiling * (1 - self.jitter * rng.random()))

    def next_attempt(self, attempt: int, first_attempt_at: datetime, now: datetime,
                     rng: random.Random) -> datetime | None:
        """When to try again after failed attempt `attempt`, or None: give up (the age limit is reached)."""
        deadline = first_attempt_at + self.give_up_after
        if now >= deadline:
            return None
        return min(now + self.delay(attempt, rng), deadline)


# Audience


@dataclass(frozen=True)
class Member:
    """A list member as delivery's own projection of herald.subscriptions holds it."""

    subscriber_id: str
    list_id: str
    email: str | None
    status: str
    first_name: str | None = None
    last_name: str | None = None
    custom_fields: dict[str, FieldValue] = field(default_factory=dict)


AudienceDoc = dict[str, Any]


def evolve_audience_member(doc: AudienceDoc | None, event: Event, *,
                           address_suppressed: bool = False) -> AudienceDoc | None:
    """A member of delivery's audience after one herald.subscriptions event (`doc` is None for one not seen
    yet); the store keys the documents. Its status follows subscriptions' fold (`domain.evolve_member` there)
    event for event, so delivery never mails someone subscriptions holds unsubscribed or suppressed: a re-add
    keeps a suppression (an unsubscribe starts again as pending), and a suppressed member becomes active only by
    a confirmation after a ConfirmationRequested (the person's double opt-in), never by a producer's single
    opt-in. A suppression reaches every membership of the address (the store finds them) but an erased one.

    `address_suppressed`: the account suppressed this address before (`evolve_audience_address`). A membership
    added then starts suppressed, not pending, so that another producer (a CRM) adding the address under a new
    id or list cannot have it mailed; like any suppressed member, only the person's double opt-in makes it
    active. (Subscriptions' fold takes such a membership as pending and a single opt-in makes it active there.)"""
    account = event.account_id
    match event:
        case SubscriberAdded(payload=p):
            base = doc if doc is not None and doc["status"] != "erased" else {"status": "pending"}
            status = "pending" if base["status"] == "unsubscribed" else base["status"]
            if address_suppressed and status == "pending":
                status = "suppressed"
            added = {"account_id": account, "subscriber_id": p.subscriber_id,
                     "list_id": p.list_id, "email": str(p.email), "email_sha256": p.email_sha256,
                     "first_name": p.first_name, "last_name": p.last_name, "custom_fields": p.custom_fields,
                     "status": status}
            if base.get("awaiting_confirmation"):
                added["awaiting_confirmation"] = True
            if (doc or {}).get("erased_at"):
                # The id came back (a CRM re-adds it): the messages of the membership erased under it stay out of
                # staff look-ups of the new one (their ids are made of the subscriber id, so a look-up finds them).
                added["erased_at"] = (doc or {})["erased_at"]
            if (doc or {}).get("opted_out") or (doc or {}).get("status") == "unsubscribed":
                added["opted_out"] = True  # outlives the re-add and an erasure, as in subscriptions
            return added
        case SubscriberErased(payload=p):
            # Kept: the id (the key: the erasure is final for it, and a late copy of an earlier event must not bring
            # the member back), its list (the customer's, not the person's), when (a staff look-up answers that it
            # was erased, and shows no message of it) and the opt-out below. Not the address's hash: anyone who
            # knows the address makes it, and it led staff look-ups to the person's messages. No rule needs it
            # here: the account's suppression of the address is on the address's document, which SubscriberErased
            # and SubscriberSuppressed find by the hash they carry (`evolve_audience_address`).
            list_id = p.list_id or (doc or {}).get("list_id")
            erased = {"account_id": account, "subscriber_id": p.subscriber_id,
                      "list_id": list_id, "email": None, "status": "erased", "erased_at": event.occurred_at}
            if doc is not None and (doc.get("opted_out") or doc["status"] in ("unsubscribed", "suppressed")):
                erased["opted_out"] = True  # the person's opt-out or suppression outlives their erasure
            return erased
    if doc is None or doc["status"] == "erased":  # erasure is final for this id
        return doc
    settled = {k: v for k, v in doc.items() if k != "awaiting_confirmation"}
    match event:
        case ConfirmationRequested():
            return {**doc, "awaiting_confirmation": True}
        case SubscriberConfirmed(payload=confirmation) if (
                (doc["status"] == "pending" and (confirmation.method == "double_opt_in" or not doc.get("opted_out")))
                or (doc["status"] == "suppressed" and doc.get("awaiting_confirmation")
                    and confirmation.method == "double_opt_in")):
            # A confirmation decided before a suppression or an unsubscribe that came first in the topic (a race
            # between the two) makes no one active again; an opt-out or a suppression is lifted by the person's
            # double opt-in only.
            active = {**settled, "status": "active"}
            if confirmation.method == "double_opt_in":
                active.pop("opted_out", None)
            return active
        case SubscriberUnsubscribed() if doc["status"] in ("pending", "active"):
            return {**settled, "status": "unsubscribed"}
        case SubscriberSuppressed():
            return {**settled, "status": "suppressed"}
    return doc


def evolve_audience_address(doc: AudienceDoc | None, event: SubscriberAdded | SubscriberSuppressed | SubscriberErased,
                            erased: AudienceDoc | None = None) -> AudienceDoc:
    """Every membership of one address in an account, so a suppression reaches them, and whether the account
    suppressed the address (PRODUCT.md: a suppression is of the address, account-wide; like subscriptions'
    suppression record it is never lifted, and outlives the erasure of the memberships). The store keys it.

    An erased membership (`erased`: the member as its erasure left it) leaves the list: the hash of the address
    must lead nowhere near its messages. What of it a rule still needs stays, naming no membership: that it had
    opted out (`opted_out`: a test send to the address is refused as unsubscribed, `refused_test_recipients`) and
    when the last erasure was (`erased_at`: a staff look-up by the address answers that it was erased)."""
    members = list(doc["members"]) if doc else []
    if isinstance(event, SubscriberAdded) and event.payload.subscriber_id not in members:
        members.append(event.payload.subscriber_id)
    if isinstance(event, SubscriberErased) and event.payload.subscriber_id in members:
        members.remove(event.payload.subscriber_id)
    folded: AudienceDoc = {"account_id": event.account_id, "members": members}
    if isinstance(event, SubscriberSuppressed) or (doc and doc.get("suppressed")):
        folded["suppressed"] = True
    if (doc and doc.get("opted_out")) or (erased or {}).get("opted_out"):
        folded["opted_out"] = True
    if isinstance(event, SubscriberErased):
        folded["erased_at"] = event.occurred_at
    elif doc and doc.get("erased_at"):
        folded["erased_at"] = doc["erased_at"]
    return folded


def receives(member: Member, list_id: str, segment: dict[str, FieldValue], list_deleted: bool) -> bool:
    """PRODUCT.md "Every message": only confirmed (active), not unsubscribed, not suppressed, not erased
    members of the target list, and only those the segment selects."""
    if list_deleted or member.list_id != list_id or member.status != "active" or not member.email:
        return False
    return all(member.custom_fields.get(name) == value for name, value in segment.items())


# Rate limits


@dataclass
class TokenBucket:
    """`rate` messages per second with bursts of `burst`; `reserve` answers how long to wait (seconds) for
    the next message and takes its token. A rate of 0 means unlimited."""

    rate: float
    burst: float
    tokens: float = 0.0
    updated: float | None = None

    def reserve(self, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        if self.updated is None:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def full(self, now: float) -> bool:
        """Whether it has refilled to its burst by `now`: it then answers exactly as a new one would."""
        if self.rate <= 0 or self.updated is None:
            return True
        return self.tokens + (now - self.updated) * self.rate >= self.burst


def forget_full(buckets: dict[str, TokenBucket], now: float) -> int:
    """Drop the buckets refilled to their burst (a new one is made at the next message, the same): the per
    recipient domain and per account buckets would otherwise keep one for every domain and account ever sent
    to. Returns how many went."""
    full = [key for key, bucket in buckets.items() if bucket.full(now)]
    for key in full:
        del buckets[key]
    return len(full)


# Tracking hits made by machines (issue 20, "Tracking"): mail scanners fetch a message's images and follow its
# links before, or instead of, the reader. Such a hit gets the same image or redirect as any other; its event is
# marked so that reports leave it out of opens and clicks.
#
# Each entry is the name of a mail scanner, matched case-insensitively anywhere in the user agent: a fetch that
# names the scanner is its. A reader's browser or mail client never carries these names, so a match never marks
# a person; a scanner that poses as a browser is not caught (nothing in the request tells it apart).
SCANNER_USER_AGENTS: tuple[str, ...] = (
    "barracuda",  # Barracuda Email Protection: Link Protection and intent analysis follow a message's links
    "mimecast",  # Mimecast URL Protect: scans the targets of the links it rewrites
    "proofpoint",  # Proofpoint URL Defense: sandboxes the targets of the links it rewrites
    "symantec",  # Symantec (now Broadcom) Email Security.cloud: scans the links of the mail it filters
    "bingpreview",  # Microsoft's BingPreview: fetches linked pages to preview and check them
)
# Not scanners, on purpose:
# - GoogleImageProxy (Gmail) and YahooMailProxy (Yahoo Mail) fetch images when the reader opens the message,
#   on their behalf: a person's open. ua-parser calls YahooMailProxy a spider (the event's device "bot"), so the
#   device is not a signal here. Outlook's own user agents ("Microsoft Office", "Outlook") are the reader's too.
# - Apple Mail Privacy Protection loads images through Apple's proxies with a generic user agent whether or not
#   the message is read; nothing in the request tells it apart, so it is not claimed.
# - A HEAD request (a link checker's) is not answered by the tracking routes (405): it records nothing.
# - Timing (a hit seconds after sending): the send time is only in the ledger, under message and attempt (which
#   a hit does not know), the pixel reads nothing today, and a reader with the mail open can open it on arrival.
NO_USER_AGENT = "no_user_agent"


def automated_reason(user_agent: str | None) -> str | None:
    """Why a tracking hit was made by a machine rather than the reader, or None: `no_user_agent` (every browser
    and mail client sends one; scripts and scanners may not), or `scanner:<name>` for a known mail scanner."""
    if user_agent is None or not user_agent.strip():
        return NO_USER_AGENT
    lowered = user_agent.lower()
    return next((f"scanner:{name}" for name in SCANNER_USER_AGENTS if name in lowered), None)


# What mail clients turn into a link, or what reads as an offer, in a name the customer chose (read in its
# NFKC form, so fullwidth "www." is "www."; a scheme's slashes may be backslashes, as browsers read them).
_NOT_A_LABEL = re.compile(r"[a-z][a-z0-9+.\-]*:[/\\]|www[.。｡]|[/@?=%$€£]|\d+ ?%", re.IGNORECASE)
# A bare domain ("shoedeals.example", "Booking.com", "bücher.de", "Shop24.com", "220.lv", "xn--80ak6aa92e.com"):
# a letter or digit, a dot (or an ideographic one, which IDNA reads as a dot), then a top-level domain's run of two
# letters or more, or a punycode label; mail clients make it a link whatever the labels before the dot are.
# "Acme & Co.", "J.P. Morgan", "No.5", "v1.2" and "Web 2.0" are none (nothing, one letter or digits after the dot);
# "St.Petersburg" is taken for one (it only loses its mention).
_BARE_DOMAIN = re.compile(r"(?<=[^\W_])[.。｡](?:[^\W\d_]{2,}|xn--[a-z0-9-]+)\b", re.IGNORECASE)
# A telephone number: seven digits or more, as people write them ("555 0100", "+371 2000 0000", "(555) 010-0100").
_PHONE_NUMBER = re.compile(r"\d(?:[ \-.()]{0,3}\d){6,}")
# Words that make a name an offer, English and Latvian, matched as whole words without case or diacritics
# (Latvian is often typed without them: "izpardosana"); a Latvian stem ends with `\w*`, as its endings change
# with case. A small closed list: words that say what a list is about ("News and offers", "Ziņas un
# piedāvājumi") stay.
OFFER_WORDS: tuple[str, ...] = (
    "sale", "free", "off", "discounts?", "cheap(?:er|est)?", "bargains?", "clearance", "coupons?", "vouchers?",
    "half price", "today only", "limited time", "buy one get one", "bogo",
    "atlai[dz]\\w*",  # atlaide, atlaides, atlaižu: discount
    "bezmaksas", "par brivu",  # free of charge
    "izpardosan\\w*",  # izpārdošana: clearance sale
    "akcija",  # akcija, akcijā: a sales promotion (its plural, akcijas, is also "shares": AS is akciju sabiedrība)
    "leti",  # lēti: cheaply
    "tikai sodien",  # tikai šodien: today only
    "puscen\\w*",  # puscenā: at half price
    # Calls to action (PRODUCT.md allows the confirmation no other): imperatives to buy, order, call or visit, in
    # forms that do not name a subject ("Shop news", "Order of Malta" stay).
    "buy", "buy now", "shop now", "order (?:now|today)", "call (?:now|us|today)", "visit us", "click", "hurry",
    "(?:best|lowest) prices?",
    "perc(?:iet)?",  # pērc, pērciet: buy
    "pasuti(?:et)?",  # pasūti, pasūtiet: order
    "zvan(?:i|iet)",  # zvani, zvaniet: call
    "apmekle(?:jiet)?",  # apmeklē, apmeklējiet: visit
)
_OFFER = re.compile(r"\b(?:" + "|".join(OFFER_WORDS) + r")\b|\b\d+ ?(?:for|par) ?\d+\b")


def _without_marks(text: str) -> str:
    return "".join(char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char))


def plain_label(name: object, limit: int = 60) -> str | None:
    """A list or company name fit to name in a confirmation email, else None (the email says "this list",
    "this sender"). The customer chooses them, and PRODUCT.md allows the confirmation nothing but the request
    to confirm, so neither may carry a link, an address, a telephone number or an offer: one line of at most
    `limit` characters without a URL, `www.`, a bare domain (so not "Booking.com" either: a mail client makes it
    a link, and the name of a shop at another domain is its advertisement), an @, a slash, a query, a
    percentage or currency sign, seven digits or more, or a word of OFFER_WORDS ("2 for 1" too)."""
    if not isinstance(name, str) or not name.strip() or len(name) > limit or not name.isprintable():
        return None
    folded = unicodedata.normalize("NFKC", name)
    if (_NOT_A_LABEL.search(folded) or any(unicodedata.category(char) == "Sc" for char in folded)
            or _BARE_DOMAIN.search(folded) or _PHONE_NUMBER.search(folded)
            or _OFFER.search(_without_marks(folded.casefold()))):
        return None
    return name.strip()


# Staff support look-ups (PRODUCT.md "Data protection": was it sent, when, why blocked)

BOUNCE_CLASSES: tuple[BounceClass, ...] = ("hard", "soft", "block", "undetermined")
MessageState = Literal["queued", "held", "deferred", "sent", "bounced", "skipped", "cancelled"]


@dataclass(frozen=True)
class QueuedCampaign:
    """A campaign of the account that was queued (only those have messages), as a look-up orders them."""

    campaign_id: str
    queued_at: datetime
    state: CampaignState

    @property
    def position(self) -> tuple[str, str]:
        """Newest first is this, descending: the queueing time as a fixed-width key, then the id."""
        return self.queued_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ"), self.campaign_id


class CursorInvalid(ValueError):
    """A look-up's cursor that no page gave."""


@dataclass(frozen=True)
class LookupCursor:
    """Where a page of a person's campaign messages ended: its last campaign (by position) and message."""

    queued_key: str
    campaign_id: str
    message_id: str

    def text(self) -> str:
        return f"{self.queued_key}/{self.campaign_id}/{self.message_id}"

    @classmethod
    def read(cls, text: str) -> LookupCursor:
        parts = text.split("/")
        if len(parts) != 3 or not re.fullmatch(r"[0-9]{8}T[0-9]{12}Z", parts[0]) or not parts[1] or not parts[2]:
            raise CursorInvalid("not a cursor this look-up gave (next_cursor of an earlier page)")
        return cls(*parts)

    @classmethod
    def after(cls, campaign: QueuedCampaign, message_id: str) -> LookupCursor:
        return cls(*campaign.position, message_id)


def newest_first(campaigns: list[QueuedCampaign], cursor: LookupCursor | None = None) -> list[QueuedCampaign]:
    """The campaigns in the order a look-up answers (the latest queued first), from the cursor's campaign on
    (itself included: its messages after the cursor's are still to come)."""
    ordered = sorted(campaigns, key=lambda c: c.position, reverse=True)
    if cursor is None:
        return ordered
    return [c for c in ordered if c.position <= (cursor.queued_key, cursor.campaign_id)]


def still_to_come(campaign: QueuedCampaign, message_ids: list[str], cursor: LookupCursor | None) -> list[str]:
    """A campaign's messages for the person in answer order (by id), less those a page before gave."""
    ordered = sorted(message_ids)
    if cursor is None or campaign.position != (cursor.queued_key, cursor.campaign_id):
        return ordered
    return [m for m in ordered if m > cursor.message_id]


@dataclass(frozen=True)
class AllowanceAsStored:
    """What a look-up judges the send allowance by: the account's counts as the sender last stored them, at `now`
    (no messages in flight are known outside the sending process)."""

    sent: Mapping[str, int]
    now: datetime


def message_state(kind: str, attempts: list[dict[str, Any]], account: AccountState, campaign: CampaignState | None,
                  due: datetime | None = None, allowance: AllowanceAsStored | None = None) -> dict[str, Any]:
    """Where one message stands, from its recorded attempts (in order) and, while it has no final outcome, the
    stored account and campaign states: `state`, whether the ledger holds it as final, and why
    (`bounce_class`, `reason`, `held_by`, `next_attempt_at`: the next attempt of a deferred one, the first of one
    never tried, `due`, its campaign's send time).

    A final outcome is what the ledger says. Otherwise the message is pending, and the sender would do what
    `closed_gate` says: a campaign cancelled or rejected records it cancelled when the sender comes to it; a
    closed gate holds a campaign message (transactional mail is never held), and so does a send allowance with
    no room left by the stored counts (`allowance`); else it waits for its (next) attempt. The stored states are
    the control consumer's at its last flush and the sender's last group commit (milliseconds behind the
    sender's gate book, which lives only in the sending process)."""
    answer: dict[str, Any] = {"state": "queued", "final": False, "bounce_class": None, "reason": None,
                              "held_by": None, "next_attempt_at": None}
    last = attempts[-1] if attempts else None
    if last is not None and last.get("final"):
        state: MessageState = last["outcome"]
        return {**answer, "state": state, "final": True, "reason": last.get("reason"),
                "bounce_class": last.get("bounce_class") if state == "bounced" else None}
    if kind == "campaign" and campaign is not None and (campaign.cancelled or campaign.rejected):
        return {**answer, "state": "cancelled",
                "reason": "campaign_cancelled" if campaign.cancelled else "campaign_rejected"}
    gate = closed_gate(account, campaign) if kind == "campaign" else None
    if gate is None and kind == "campaign" and allowance is not None and \
            allowance_holds(account.allowance, kind, allowance.sent, {}, allowance.now):
        gate = "send_allowance"
    if gate is not None:
        return {**answer, "state": "held", "held_by": gate, "reason": gate_reason(gate, account)}
    if last is not None:
        return {**answer, "state": "deferred", "next_attempt_at": last.get("next_attempt_at")}
    return {**answer, "next_attempt_at": due}


def attempt_answer(outcome: dict[str, Any]) -> dict[str, Any]:
    """One recorded attempt as a look-up shows it: when, what the relay answered (its reply as recorded, with
    no address: `without_addresses`), and how it ended."""
    return {"attempt": outcome["attempt"], "at": outcome["recorded_at"], "outcome": outcome["outcome"],
            "smtp_code": outcome.get("smtp_code"), "smtp_reply": outcome.get("smtp_reply"),
            "bounce_class": outcome.get("bounce_class"), "reason": outcome.get("reason"),
            "next_attempt_at": outcome.get("next_attempt_at")}


def made_before_erasure(job: dict[str, Any], erased_before: Mapping[str, datetime] | None) -> bool:
    """A job made for an earlier membership under its subscriber id, erased since (`erased_before`: when, by
    subscriber id): a look-up of the id's new membership must not show the erased person's messages."""
    erased_at = (erased_before or {}).get(str(job.get("subscriber_id")))
    created_at = job.get("created_at")
    return erased_at is not None and (created_at is None or created_at <= erased_at)


def message_answer(job: dict[str, Any], attempts: list[dict[str, Any]], account: AccountState,
                   campaign: QueuedCampaign | None, reported_bounces: list[str],
                   allowance: AllowanceAsStored | None = None) -> dict[str, Any]:
    """One message of the person, as a staff look-up answers it: the job (never its recipient or content), its
    state (`message_state`), every attempt, and the bounce classes reports to the inbound server gave it after
    the relay had accepted it (no time is kept of those)."""
    ordered = sorted(attempts, key=lambda a: a["attempt"])
    return {"message_id": job["_id"], "kind": job["kind"], "campaign_id": job.get("campaign_id"),
            "campaign_queued_at": campaign.queued_at if campaign is not None else None,
            "subscriber_id": job.get("subscriber_id"), "list_id": job.get("list_id"),
            "created_at": job.get("created_at"), "in_doubt": bool(job.get("in_doubt")),
            **message_state(job["kind"], ordered, account, campaign.state if campaign is not None else None,
                            job.get("next_attempt_at"), allowance),
            "attempts": [attempt_answer(a) for a in ordered],
            "reported_bounces": [c for c in BOUNCE_CLASSES if c in reported_bounces]}
