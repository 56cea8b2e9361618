"""Campaigns' rules, pure: what a draft is, who may change it and how, and which events each request records.

PRODUCT.md, "Every message": a campaign goes to one list of the account (optionally a segment of it, by the
list's custom fields), from the account's sender, with a text part (derived from the HTML when not given).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from inscriptis.model.tag import CustomHtmlTagHandlerMapping

from herald_shared import templating
from herald_shared.campaign_links import MAX_TRACKED_LINKS, broken_links, text_link, tracked_links
from herald_shared.contract import Event, serialize_event
from herald_shared.contract.billing import (
    AccountApproved,
    AccountOpened,
    PlanChanged,
    SendingBlocked,
    SendingUnblocked,
    TrialEnded,
)
from herald_shared.contract.campaigns import (
    CampaignApproved,
    CampaignApprovedPayload,
    CampaignCancelled,
    CampaignCancelledPayload,
    CampaignCompleted,
    CampaignCompletedPayload,
    CampaignContent,
    CampaignCreated,
    CampaignCreatedPayload,
    CampaignDeleted,
    CampaignDeletedPayload,
    CampaignEdited,
    CampaignEditedPayload,
    CampaignQueued,
    CampaignQueuedPayload,
    CampaignRejected,
    CampaignRejectedPayload,
    CampaignReturned,
    CampaignReturnedPayload,
    CampaignSubmitted,
    CampaignSubmittedPayload,
    CampaignTestRequested,
    CampaignTestRequestedPayload,
    CampaignUnscheduled,
    CampaignUnscheduledPayload,
    DkimRecord,
    ReturnReason,
    ReviewReason,
    ScreeningMatch,
    Segment,
    SendingDomainAdded,
    SendingDomainAddedPayload,
    SendingDomainDkimVerified,
    SendingDomainDkimVerifiedPayload,
    SendingDomainRemoved,
    SendingDomainRemovedPayload,
    SendingDomainVerified,
    SendingDomainVerifiedPayload,
    VerificationRecord,
)
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended
from herald_shared.contract.delivery import (
    CampaignDeliveryFinished,
    ComplaintReceived,
    DeliveryHeld,
    DkimKeyCreated,
    LinkClicked,
    MessageBounced,
    MessageDeferred,
    MessageOpened,
    MessageSent,
)
from herald_shared.contract.envelope import MAX_REQUEST_BYTES
from herald_shared.contract.subscriptions import FieldValue, SubscriberUnsubscribed
from herald_shared.fields import fits
from herald_shared.rules import RuleRefused

from .screening import Match, Screening, screen, screen_readings, templated_link_targets

PRODUCER = "campaigns"
# Fixed: the CampaignQueued of a campaign has the same event id in every process, before and after a crash.
HERALD_CAMPAIGNS_NAMESPACE = uuid.UUID("0f4b8f2e-6a57-4d8e-9c1e-2b7d4e1f9a63")
Status = Literal["draft", "in_review", "rejected", "scheduled", "queued", "done", "cancelled", "deleted"]
STATUSES: tuple[Status, ...] = ("draft", "in_review", "rejected", "scheduled", "queued", "done", "cancelled",
                                "deleted")
EDITABLE: tuple[Status, ...] = ("draft", "rejected")  # a rejected campaign is edited back into a draft
CANCELLABLE: tuple[Status, ...] = ("in_review", "scheduled", "queued")  # not done: nothing is left to stop
# Not queued: delivery has nothing of it yet, so it can go back to a draft. Once queued it is only cancelled.
UNSCHEDULABLE: tuple[Status, ...] = ("in_review", "scheduled")
# A send time this far in the past is a mistake, not "now".
PAST_TOLERANCE = timedelta(minutes=5)
# The furthest ahead a campaign may be scheduled: a later time is a typo (the year 2999), and a campaign waiting
# longer would go out from a list, a sending domain and a review that have long changed.
SCHEDULE_HORIZON = timedelta(days=365)
TEST_RECIPIENTS_MAX = 5
# The largest event campaigns publishes, as encoded (JSON, UTF-8). Each event is one Kafka record, which the
# producer (`MAX_REQUEST_BYTES`, passed by `herald_shared.kafka.make_producer`) and the broker (message.max.bytes,
# 1,048,588 by default) take only up to 1 MiB with its key, headers and batch overhead. A campaign's content travels
# whole in CampaignCreated/Edited, CampaignQueued and CampaignTestRequested, so a draft is held to what its largest
# one can carry. The headroom covers the key and headers (a few hundred bytes) and a dead-letter copy's headers
# (its reason: up to 2,000 characters, 8,000 bytes at most), should a consumer dead-letter it; the round figure it
# leaves, 1,000,000, is what the API documents. Before this bound a draft could be stored whose CampaignQueued never
# could be published (README, Decisions): the scheduler returns such a campaign to its author (`queue`).
RECORD_HEADROOM_BYTES = 48_576
MAX_EVENT_BYTES = MAX_REQUEST_BYTES - RECORD_HEADROOM_BYTES


class CampaignError(RuleRefused):
    """A rule refused the request. `code` names the rule (the problem type)."""

    code = "campaign_error"


class CampaignNotFound(CampaignError):
    code, http_status = "campaign_not_found", 404


class CampaignExists(CampaignError):
    code, http_status = "campaign_exists", 409


class UnknownList(CampaignError):
    """The target list is not a list of the account (or was deleted): a conflict with the account's lists."""

    code, http_status = "unknown_list", 409


class UnknownField(CampaignError):
    """The segment names a field the target list does not declare."""

    code, http_status = "unknown_field", 409


class InvalidSegment(CampaignError):
    """A segment value that is not of its field's kind, which could never match a member: a conflict with the
    list's definition (as subscriptions answers a member's value of the wrong kind)."""

    code, http_status = "invalid_segment", 409


class InvalidLink(CampaignError):
    code = "invalid_link"


class TooManyLinks(CampaignError):
    """More tracked links than delivery rewrites for every message at a cost the other accounts can bear
    (`herald_shared.campaign_links.MAX_TRACKED_LINKS`)."""

    code = "too_many_links"

    def __init__(self, detail: str, links: int, limit: int) -> None:
        super().__init__(detail, errors=[("body.html_body", detail)])
        self.links = links
        self.limit = limit


class TestSendsExhausted(CampaignError):
    """More test messages than the account has left in the last 24 hours; `retry_after`: seconds until enough of
    them leave the window (a full day when the request alone is more than the limit)."""

    code, http_status = "test_sends_exhausted", 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class TestRecipientsRefused(CampaignError):
    """A test refused whole because of some of its addresses, which `refused` names."""

    def __init__(self, detail: str, refused: list[str], errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(detail, errors)
        self.refused = refused


class TestRecipientNotAllowed(TestRecipientsRefused):
    """A test of an account still under review (not approved, or on trial) to an address the account has not
    shown to be its own: tests are not reviewed, so until staff have reviewed the account they would carry
    unreviewed content to strangers (PRODUCT.md, "Review"). `refused` names those addresses."""

    code, http_status = "test_recipient_not_allowed", 422


class TestRecipientOptedOut(TestRecipientsRefused):
    """A test to an address that used the unsubscribe link of an earlier test of the account
    (RecipientOptedOutOfTests): it asked for no more, and a test belongs to no subscription it could leave instead."""

    code, http_status = "test_recipient_opted_out", 422


class InvalidTemplate(CampaignError):
    """A subject, preheader or body that does not compile, uses what the sandbox refuses, or names a field the
    list does not have: refused with the part, the line and the reason."""

    code, http_status = "invalid_template", 422


class InvalidValues(CampaignError):
    """Merge values (a preview's, a test's) that no member could hold: a value not of its field's kind, or a
    number MongoDB cannot store (beyond 64 bits, not finite). A test's values travel in its event to delivery,
    which stores them: refused here, with the field, rather than dead-lettered there after a 202."""

    code, http_status = "invalid_values", 422


class ContentRefused(CampaignError):
    """Content that hides or neutralises the unsubscribe link or the footer (PRODUCT.md, "Every message")."""

    code, http_status = "content_refused", 422


class SenderRefused(CampaignError):
    """A From address at a mailbox provider's domain (`MAILBOX_PROVIDERS`): nobody but the provider can publish
    DKIM keys or a DMARC policy for it, so no campaign From it can pass DMARC when another platform sends it, and
    those providers ask receivers to refuse such mail (Gmail and Yahoo publish p=reject or quarantine, and their
    bulk-sender rules require an aligned From)."""

    code, http_status = "sender_refused", 422


class SenderUnverified(CampaignError):
    """A From address at no verified sending domain of the account (nor a subdomain of one, nor an operator's
    shared domain): anyone could otherwise send From another company's domain, and receivers would refuse it
    (Gmail's and Yahoo's bulk-sender rules want an aligned, authenticated From domain)."""

    code, http_status = "sender_unverified", 422


class InvalidDomain(CampaignError):
    code, http_status = "invalid_domain", 422


class SendingDomainNotFound(CampaignError):
    code, http_status = "sending_domain_not_found", 404


class SendingDomainExists(CampaignError):
    code, http_status = "sending_domain_exists", 409


class VerificationFailed(CampaignError):
    """DNS was asked and did not hold the verification record: what it held instead is in `found`."""

    code, http_status = "verification_failed", 409

    def __init__(self, detail: str, record: VerificationRecord | DkimRecord, found: tuple[str, ...]) -> None:
        super().__init__(detail)
        self.record = record
        self.found = found


class DnsUnavailable(CampaignError):
    """The name servers campaigns asks could not be reached, refused, or did not answer in time: nothing is
    known of the domain's records, so nothing changed; try again."""

    code, http_status = "dns_unavailable", 503


class WrongState(CampaignError):
    """The campaign is not in a state that allows this (e.g. editing a scheduled campaign)."""

    code, http_status = "wrong_state", 409


class CampaignTooLarge(CampaignError):
    """A campaign (or a test of it, with its merge values) one of whose events would be larger than Kafka takes
    (`MAX_EVENT_BYTES`): the event could never be published, so nothing is recorded. 413, with the sizes in
    bytes, so the author knows how much to cut."""

    code, http_status = "campaign_too_large", 413

    def __init__(self, detail: str, event: str, encoded_bytes: int, errors: list[tuple[str, str]] | None = None
                 ) -> None:
        super().__init__(detail, errors)
        self.event = event
        self.encoded_bytes = encoded_bytes
        self.limit_bytes = MAX_EVENT_BYTES


class InvalidSchedule(CampaignError):
    """An unknown time zone, a local time that does not exist there (DST), a time in the past or more than
    SCHEDULE_HORIZON ahead, or a time with an offset given with a zone as well."""

    code, http_status = "invalid_schedule", 422


@dataclass(frozen=True)
class AccountInfo:
    """What campaigns knows of an account (herald.billing, herald.compliance) to decide on review."""

    account_id: str
    opened: bool = False
    approved: bool = False
    plan: str | None = None  # trial, monthly, pay_as_you_go; None before any PlanChanged
    suspended: bool = False
    blocked: tuple[str, ...] = ()
    # AccountOpened's; None for an account folded before campaigns kept it (until a rebuild) or not opened yet.
    registered_email: str | None = None

    @property
    def on_trial(self) -> bool:
        """From accepting the terms until a paid plan (or the trial's end, after which billing blocks)."""
        return self.plan == "trial" or (self.opened and self.plan is None)


@dataclass(frozen=True)
class ListInfo:
    """What campaigns knows of a list of the account (from herald.subscriptions)."""

    list_id: str
    custom_fields: dict[str, str]
    deleted: bool = False


@dataclass(frozen=True)
class Draft:
    """What a request asks a campaign to be."""

    name: str
    list_id: str
    subject: str
    from_name: str
    from_email: str
    reply_to: str | None = None
    html_body: str | None = None
    text_body: str | None = None
    segment: dict[str, FieldValue] = field(default_factory=dict)
    preheader: str | None = None


@dataclass(frozen=True)
class CampaignState:
    account_id: str
    campaign_id: str
    status: Status
    name: str
    list_id: str
    segment: dict[str, FieldValue]
    content: CampaignContent
    send_at: datetime | None = None
    review_reasons: tuple[str, ...] = ()
    screening: tuple[dict[str, str], ...] = ()
    # The flow of the submission (its request's id) and the event that scheduled the campaign (the submission, or
    # staff's approval): its CampaignQueued, made later by the scheduler out of any request, carries them.
    # None for a campaign scheduled before they were kept.
    flow: uuid.UUID | None = None
    scheduled_by: uuid.UUID | None = None


def state_of(doc: Mapping[str, Any]) -> CampaignState:
    return CampaignState(account_id=doc["account_id"], campaign_id=doc["campaign_id"], status=doc["status"],
                         name=doc["name"], list_id=doc["list_id"], segment=dict(doc.get("segment", {})),
                         content=CampaignContent.model_validate(doc["content"]), send_at=doc.get("send_at"),
                         review_reasons=tuple(doc.get("review_reasons", ())),
                         screening=tuple(doc.get("screening", ())),
                         flow=_uuid_or_none(doc.get("flow")), scheduled_by=_uuid_or_none(doc.get("scheduled_by")))


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None


def new_campaign_id() -> str:
    return "c" + uuid.uuid4().hex[:12]


# The link targets a reader of the text part can follow: web, mail and phone addresses, and one template code
# writes (`{{ unsubscribe_url }}`); not a page's own anchors (`#top`) nor scripts.
_FOLLOWABLE = re.compile(r"(?:https?:|mailto:|tel:|\{)", re.IGNORECASE)


def text_of(html_body: str) -> str:
    """The text part of an HTML body (inscriptis: layout-aware, tables and lists kept readable), each link's
    target after its label (`Shop <https://shop.example/>`, `herald_shared.campaign_links.text_link`), so a
    reader of the text part can follow every link, and delivery tracks there the links it tracks in the HTML.
    (inscriptis' own `display_links` writes Markdown, `[Shop](https://shop.example/)`.)"""
    open_links: list[str] = []  # the target of each <a> open now ("" when not written out)
    targets: set[str] = set()

    def start(state: Any, attrs: dict[str, str]) -> None:
        href = (attrs.get("href") or "").strip()
        open_links.append(href if _FOLLOWABLE.match(href) else "")
        targets.add(open_links[-1])

    def end(state: Any) -> None:
        # Written into the <a> itself (the handler API's `tags[-1]`): a hidden link's target stays hidden.
        if url := open_links.pop():
            state.tags[-1].write(" " + text_link(url))

    text = get_text(html_body, ParserConfig(custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping(
        start_tag_mapping={"a": start}, end_tag_mapping={"a": end})))
    for url in targets - {""}:
        text = text.replace(f"{url} {text_link(url)}", text_link(url))  # a link whose label is its URL: once
    return text.strip() or " "


def _content(draft: Draft) -> CampaignContent:
    text = draft.text_body if draft.text_body else text_of(draft.html_body or "")
    return CampaignContent(subject=draft.subject, preheader=draft.preheader, from_name=draft.from_name,
                           from_email=draft.from_email, reply_to=draft.reply_to, html_body=draft.html_body,
                           text_body=text)


# Domains whose mailboxes are the provider's (free mail): a From at one of them is refused (`SenderRefused`). Herald's
# own list, of the providers most mail goes to in Europe and beyond; a domain missing from it is let through.
MAILBOX_PROVIDERS = frozenset({
    "gmail.com", "googlemail.com",
    "yahoo.com", "yahoo.co.uk", "yahoo.de", "yahoo.fr", "yahoo.it", "yahoo.es", "yahoo.co.jp", "ymail.com",
    "rocketmail.com", "aol.com", "aim.com",
    "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.de", "hotmail.fr", "hotmail.it", "live.com",
    "live.co.uk", "msn.com",
    "icloud.com", "me.com", "mac.com",
    "gmx.com", "gmx.net", "gmx.de", "web.de", "t-online.de", "freenet.de",
    "mail.ru", "bk.ru", "inbox.ru", "list.ru", "yandex.ru", "yandex.com", "ya.ru",
    "proton.me", "protonmail.com", "pm.me", "tutanota.com", "tuta.io", "zoho.com", "fastmail.com", "mail.com",
    "inbox.lv", "one.lv", "apollo.lv", "inbox.lt", "mail.ee",
    "wp.pl", "o2.pl", "interia.pl", "onet.pl", "seznam.cz", "libero.it", "orange.fr", "free.fr", "laposte.net",
    "qq.com", "163.com", "126.com", "naver.com",
})


def _refuse_provider(domain: str, where: str) -> None:
    if domain in MAILBOX_PROVIDERS:
        reason = (f"{domain} is a mailbox provider's domain: mail From it sent by another platform fails DMARC "
                  "(its owner publishes the policy and the keys, and Gmail and Yahoo refuse such mail); send "
                  "From a domain of your own")
        raise SenderRefused(reason, errors=[(where, reason)])


def check_sender(content: CampaignContent, senders: Senders) -> None:
    """Refuse a From at a mailbox provider's domain (`SenderRefused`), or at no domain the account verified nor
    an operator's shared one, or a subdomain of those (`SenderUnverified`): at saving, and again at a test send
    and at submitting (a draft saved before these rules, or a domain removed since)."""
    _refuse_provider(content.from_email.rpartition("@")[2].lower(), "body.from_email")
    reason = unverified_sender(content.from_email, senders)
    if reason is not None:
        raise SenderUnverified(reason, errors=[("body.from_email", reason)])


# Sending domains: a campaign goes From a domain the account proved it controls by publishing a DNS TXT record, or
# a subdomain of one (relaxed alignment), or from a domain the operator shares with every account.

VERIFICATION_LABEL = "_herald-verification"
VERIFICATION_PREFIX = "herald-verification="
# The longest domain whose verification name DNS can hold (253 characters in all).
LONGEST_DOMAIN = 253 - len(VERIFICATION_LABEL) - 1
SendingDomainStatus = Literal["pending", "verified"]


@dataclass(frozen=True)
class Senders:
    """What decides whether an account may send From a domain: its verified sending domains and the operator's
    shared ones (each with its subdomains), and, to say what is missing, those it added but has not verified
    yet (domain: token). All in A-labels."""

    verified: frozenset[str] = frozenset()
    shared: frozenset[str] = frozenset()
    pending: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DnsAnswer:
    """What DNS said of the TXT records at `name` (`resolver.DnsResolver`): `answered` with `texts` (each
    record's strings joined), `no_record` (the name exists, without TXT), `no_domain` (NXDOMAIN),
    `server_failure` (SERVFAIL: the domain's name servers failed), or `unreachable` (the name servers campaigns
    asks could not be reached or did not answer in time); `detail` says more."""

    name: str
    outcome: Literal["answered", "no_record", "no_domain", "server_failure", "unreachable"]
    texts: tuple[str, ...] = ()
    detail: str = ""


def domain_name(text: str, where: str = "body.domain") -> str:
    """A domain as sending domains are kept and compared: lower case, each international label as its A-label
    (IDNA 2008 with UTS 46 mapping, as addresses are checked: `Bücher.de` is `xn--bcher-kva.de`), without the
    trailing dot; a host name of two labels or more, not a special-use name (`.test`, `.local`...), short enough
    for its verification name. InvalidDomain (422) otherwise."""
    name = text.strip()
    name = name[:-1] if name.endswith(".") else name
    if not name or "@" in name:
        raise InvalidDomain(f"{text!r} is not a domain name", errors=[(where, "expects a domain, e.g. acme.example")])
    try:
        ascii_domain = validate_email(f"postmaster@{name}", check_deliverability=False).ascii_domain.lower()
    except EmailNotValidError as exc:
        # email-validator speaks of the part after an address's @-sign: here, that is the domain.
        reason = (str(exc).replace("The part after the @-sign", "The domain")
                  .replace("After the @-sign, periods", "In a domain, periods")
                  .replace("An email address cannot have a hyphen immediately after the @-sign",
                           "A domain cannot start with a hyphen"))
        raise InvalidDomain(f"{text!r} is not a domain name: {reason}", errors=[(where, reason)]) from None
    if len(ascii_domain) > LONGEST_DOMAIN:
        reason = (f"at most {LONGEST_DOMAIN} characters (as A-labels), so that its verification name "
                  f"{VERIFICATION_LABEL}.<domain> fits in DNS")
        raise InvalidDomain(f"{text!r} is too long: {reason}", errors=[(where, reason)])
    return ascii_domain


def shared_domains(text: str) -> frozenset[str]:
    """The operator's shared sending domains from their setting (a comma-separated list); ValueError names a
    domain that is not one."""
    try:
        return frozenset(domain_name(item, "HERALD_CAMPAIGNS_SHARED_SENDING_DOMAINS")
                         for item in text.split(",") if item.strip())
    except InvalidDomain as exc:
        raise ValueError(exc.detail) from None


def from_domain(address: str) -> str:
    """The domain of a From address in A-labels (as it is compared with sending domains)."""
    domain = address.rpartition("@")[2]
    try:
        return domain_name(domain)
    except InvalidDomain:
        return domain.lower()  # a contract address always has a domain; this one can match no sending domain


def sender_candidates(address: str) -> list[str]:
    """The sending domains that could cover a From address: its domain and each parent of two labels or more."""
    labels = from_domain(address).split(".")
    return [".".join(labels[start:]) for start in range(max(len(labels) - 1, 1))]


def covering_domain(domain: str, domains: Collection[str]) -> str | None:
    """Of `domains`, the one a From at `domain` may use: the domain itself or its nearest parent (relaxed
    alignment, RFC 7489 3.1.1: `news.acme.example` is aligned with `acme.example`). Never by the name's end alone
    (`evil-acme.example` is not `acme.example`'s), and never a subdomain (a verified `news.acme.example` says
    nothing of `acme.example`)."""
    labels = domain.split(".")
    for start in range(max(len(labels) - 1, 1)):
        candidate = ".".join(labels[start:])
        if candidate in domains:
            return candidate
    return None


def unverified_sender(address: str, senders: Senders) -> str | None:
    """Why an account may not send From `address` (None: it may), and how to make it so."""
    domain = from_domain(address)
    if covering_domain(domain, senders.verified | senders.shared) is not None:
        return None
    pending = covering_domain(domain, senders.pending)
    if pending is not None:
        record = verification_record(pending, senders.pending[pending])
        return (f"{domain} is not verified yet: publish the TXT record {record.name} with the value "
                f"\"{record.value}\" in its DNS, then verify it (POST /v1/sending-domains/{pending}/verification)")
    shared = (f"; or send From the platform's shared domain{'s' if len(senders.shared) > 1 else ''} "
              f"{', '.join(sorted(senders.shared))}" if senders.shared else "")
    return (f"{domain} is not a verified sending domain of this account: add it (POST /v1/sending-domains with "
            f"{{\"domain\": \"{domain}\"}}), publish the TXT record the answer names in the domain's DNS, then "
            f"verify it (POST /v1/sending-domains/{domain}/verification); a verified domain's subdomains may be "
            f"used too{shared}")


def senders_of(docs: Iterable[Mapping[str, Any]], shared: frozenset[str]) -> Senders:
    """Senders from the account's sending-domain documents (`evolve_sending_domain`) and the shared domains."""
    docs = list(docs)
    return Senders(verified=frozenset(d["domain"] for d in docs if d["status"] == "verified"), shared=shared,
                   pending={d["domain"]: d["token"] for d in docs if d["status"] == "pending"})


def new_verification_token() -> str:
    """128 random bits, base32 in lower case (26 characters): not a secret, a proof of who published it."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def verification_record(domain: str, token: str) -> VerificationRecord:
    return VerificationRecord(type="TXT", name=f"{VERIFICATION_LABEL}.{domain}", value=f"{VERIFICATION_PREFIX}{token}")


def add_sending_domain(account_id: str, domain: str, existing: Mapping[str, Any] | None, token: str) -> list[Event]:
    """A domain (`domain_name`'s) the account will send From once verified; a mailbox provider's is refused
    (`SenderRefused`: only the provider can publish records there), one already added conflicts."""
    _refuse_provider(domain, "body.domain")
    if existing is not None:
        raise SendingDomainExists(f"{domain} is a sending domain of this account already ({existing['status']}); "
                                  "delete it first for a new verification record")
    return [_event(SendingDomainAdded, account_id, SendingDomainAddedPayload(domain=domain, token=token))]


def awaiting_verification(doc: Mapping[str, Any] | None) -> bool:
    """Whether verifying this sending domain needs DNS to be asked for its verification record (it exists and
    is pending)."""
    return doc is not None and doc["status"] == "pending"


def awaiting_dkim(doc: Mapping[str, Any] | None) -> DkimRecord | None:
    """The DKIM record DNS is to be asked for when the domain is verified (delivery made its key, and the record
    was not found yet); None when there is none to look for."""
    if doc is None or doc.get("dkim") is None or doc["dkim"]["status"] != "pending":
        return None
    return dkim_record(doc["domain"], doc["dkim"]["selector"], doc["dkim"]["public_key"])


def dkim_record(domain: str, selector: str, public_key: str) -> DkimRecord:
    return DkimRecord(name=f"{selector}._domainkey.{domain}", value=f"v=DKIM1; k=rsa; p={public_key}")


def dkim_record_found(texts: Iterable[str], public_key: str) -> bool:
    """Whether one of the TXT records is a DKIM record of this RSA key (RFC 6376 3.6.1: tags in any order, white
    space around and inside the base64 of p= allowed, v= optional but first, k= rsa by default)."""
    for text in texts:
        tags: dict[str, str] = {}
        for item in text.split(";"):
            name, equals, value = item.partition("=")
            if equals:
                tags.setdefault(name.strip().lower(), value.strip())
        if (tags.get("v", "DKIM1") == "DKIM1" and tags.get("k", "rsa").lower() == "rsa"
                and "".join(tags.get("p", "").split()) == public_key):
            return True
    return False


def verify_sending_domain(doc: Mapping[str, Any] | None, domain: str, answer: DnsAnswer | None,
                          dkim_answer: DnsAnswer | None = None) -> list[Event]:
    """SendingDomainVerified when DNS holds the domain's verification record (`answer`, asked when
    `awaiting_verification`); SendingDomainDkimVerified when it holds the record of the DKIM key delivery made for
    it (`dkim_answer`, asked when `awaiting_dkim`); nothing when there is nothing left to verify. VerificationFailed
    (409) says what DNS held instead (of the DKIM record: only when the domain was verified before, or a domain
    verified now waits for it: DKIM stays pending); DnsUnavailable (503) when DNS could not be asked."""
    if doc is None:
        raise SendingDomainNotFound(f"{domain} is not a sending domain of this account")
    events = [] if doc["status"] == "verified" else [_verified_domain(doc, domain, answer)]
    expected = awaiting_dkim(doc)
    if expected is None:
        return events
    if dkim_answer is None:
        raise ValueError("a pending DKIM record is verified against a DNS answer")
    if dkim_answer.outcome == "answered" and dkim_record_found(dkim_answer.texts, doc["dkim"]["public_key"]):
        return [*events, _event(SendingDomainDkimVerified, doc["account_id"], SendingDomainDkimVerifiedPayload(
            domain=domain, selector=doc["dkim"]["selector"], public_key=doc["dkim"]["public_key"], record=expected))]
    if events:
        return events  # the domain is verified; its DKIM record is asked for again at the next verification
    raise _not_found(expected, dkim_answer, "the DKIM record")


def _verified_domain(doc: Mapping[str, Any], domain: str, answer: DnsAnswer | None) -> Event:
    if answer is None:
        raise ValueError("a pending domain is verified against a DNS answer")
    record = verification_record(domain, doc["token"])
    if answer.outcome == "answered" and any(text.strip().lower() == record.value for text in answer.texts):
        return _event(SendingDomainVerified, doc["account_id"], SendingDomainVerifiedPayload(domain=domain,
                                                                                             record=record))
    raise _not_found(record, answer, "the TXT record")


def _not_found(record: VerificationRecord | DkimRecord, answer: DnsAnswer, what: str) -> CampaignError:
    """Why DNS did not verify `record`: VerificationFailed with what it held, DnsUnavailable when not asked."""
    publish = (f"publish {what} {record.name} with the value \"{record.value}\" and try again (a new "
               "record can take minutes to reach every name server)")
    match answer.outcome:
        case "unreachable":
            return DnsUnavailable(f"DNS could not be asked about {record.name} ({answer.detail}): nothing changed; "
                                  "try again")
        case "answered":
            found = ", ".join(f"\"{text[:300]}\"" for text in answer.texts[:10])
            detail = f"the TXT records at {record.name} are {found}, and none is \"{record.value}\": {publish}"
        case "no_record":
            detail = f"{record.name} has no TXT record: {publish}"
        case "no_domain":
            detail = f"{record.name} does not exist in DNS (NXDOMAIN): {publish}"
        case _:
            detail = (f"DNS could not answer for {record.name} ({answer.detail}): check the domain's name servers, "
                      "then try again")
    return VerificationFailed(detail, record, answer.texts)


def remove_sending_domain(doc: Mapping[str, Any] | None, domain: str) -> list[Event]:
    if doc is None:
        raise SendingDomainNotFound(f"{domain} is not a sending domain of this account")
    return [_event(SendingDomainRemoved, doc["account_id"], SendingDomainRemovedPayload(domain=domain))]


SENDING_DOMAIN_EVENTS = (SendingDomainAdded, SendingDomainVerified, SendingDomainRemoved, DkimKeyCreated,
                         SendingDomainDkimVerified)


def sending_domain_of(event: Event) -> str | None:
    """The sending domain an event is about, if any."""
    return event.payload.domain if isinstance(event, SENDING_DOMAIN_EVENTS) else None


def evolve_sending_domain(doc: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """A sending domain of the account after one event (None: there is none): pending once added, verified
    when the record found is its own token's, gone when removed. An event that does not fit (a replay, a
    verification of an earlier addition) returns `doc` itself."""
    match event:
        case SendingDomainAdded(payload=p) if doc is None:
            return {"account_id": event.account_id, "domain": p.domain, "token": p.token, "status": "pending",
                    "added_at": event.occurred_at, "verified_at": None, "added_event_id": str(event.event_id)}
        case DkimKeyCreated(payload=p) if (doc is not None and doc.get("dkim") is None
                                           and doc.get("added_event_id") == p.sending_domain_added_id):
            # The first key made for this addition (a key of an earlier addition of the domain is not its own).
            return {**doc, "dkim": {"selector": p.selector, "public_key": p.public_key, "status": "pending",
                                    "verified_at": None}}
        case SendingDomainDkimVerified(payload=p) if (
                doc is not None and doc.get("dkim") is not None and doc["dkim"]["status"] == "pending"
                and (doc["dkim"]["selector"], doc["dkim"]["public_key"]) == (p.selector, p.public_key)):
            return {**doc, "dkim": {**doc["dkim"], "status": "verified", "verified_at": event.occurred_at}}
        case SendingDomainVerified(payload=p) if (doc is not None and doc["status"] == "pending"
                                                  and p.record == verification_record(doc["domain"], doc["token"])):
            return {**doc, "status": "verified", "verified_at": event.occurred_at}
        case SendingDomainRemoved() if doc is not None:
            return None
    return doc


def _live_list(list_id: str, lst: ListInfo | None) -> ListInfo:
    if lst is None or lst.deleted:
        raise UnknownList(f"list {list_id!r} is not a list of this account")
    return lst


def check_templates(content: CampaignContent, lst: ListInfo) -> None:
    """Every part compiles in the sandbox and names only the list's fields (at save and again at submit: the
    list may have changed in between). All problems are reported, each with its part and line."""
    parts = [("subject", content.subject, False), ("preheader", content.preheader, False),
             ("html_body", content.html_body, True), ("text_body", content.text_body, False)]
    problems = []
    for where, source, is_html in parts:
        if source is None:
            continue
        try:
            templating.check(source, lst.custom_fields, where=where, html=is_html)
        except templating.TemplateProblem as problem:
            line = f"line {problem.line}: " if problem.line else ""
            problems.append((f"body.{where}", f"{line}{problem.reason}"))
    if problems:
        raise InvalidTemplate("; ".join(f"{where.removeprefix('body.')} {message}" for where, message in problems),
                              errors=problems)


def check_links(content: CampaignContent) -> None:
    """At save and submission: no link whose scheme or host template code writes (ContentRefused: a member's
    value would choose where it goes, unscreened), and at most MAX_TRACKED_LINKS tracked links (TooManyLinks)."""
    templated = templated_link_targets(content.html_body, content.text_body)
    if any(where == "html_body" for where, _ in templated):
        # A text part derived from that HTML repeats its links: the HTML is what the author writes.
        templated = [(where, link) for where, link in templated if where == "html_body"]
    if templated:
        raise ContentRefused(
            "a merge tag or template code writes the scheme or host of a link, so each member's value would choose "
            "where it goes and what it says, and no screening reads those values: " +
            ", ".join(link for _, link in templated) + ". Write the site yourself and put a merge tag in the path "
            "or query only (https://shop.example/{{ city }})",
            errors=[(f"body.{where}", f"the link {link} takes its scheme or host from template code")
                    for where, link in templated])
    links = len(tracked_links(content.html_body))
    if links > MAX_TRACKED_LINKS:
        raise TooManyLinks(f"html_body holds {links:,} tracked links, more than the {MAX_TRACKED_LINKS} a campaign may "
                           "hold: delivery rewrites each one for every message it sends. Link to a page that lists "
                           "the rest", links, MAX_TRACKED_LINKS)


def _checked(draft: Draft, lst: ListInfo | None, senders: Senders) -> CampaignContent:
    lst = _live_list(draft.list_id, lst)
    unknown = sorted(set(draft.segment) - set(lst.custom_fields))
    if unknown:
        raise UnknownField(f"list {draft.list_id!r} has no custom field {', '.join(unknown)}")
    wrong = [(name, value) for name, value in draft.segment.items() if not fits(lst.custom_fields[name], value)]
    if wrong:
        raise InvalidSegment("; ".join(f"custom field {name!r} is a {lst.custom_fields[name]}, not {value!r}"
                                       for name, value in wrong),
                             errors=[(f"body.segment.{name}", f"expects a {lst.custom_fields[name]}")
                                     for name, _ in wrong])
    content = _content(draft)
    check_sender(content, senders)
    try:
        check_templates(content, lst)
    except InvalidTemplate as exc:
        if draft.text_body or not exc.errors or not any(where == "body.text_body" for where, _ in exc.errors):
            raise
        # The text part was derived from html_body (hidden elements and markup dropped, which can cut template
        # code apart): say so where the author wrote something, and how to avoid it.
        raise InvalidTemplate(str(exc), errors=[
            ("body.html_body", f"the text part Herald derives from it: {message} (give text_body yourself)")
            if where == "body.text_body" else (where, message) for where, message in exc.errors]) from None
    check_links(content)
    return content


def _event(cls: type[Event], account_id: str, payload: object) -> Event:
    return cls(account_id=account_id, producer=PRODUCER, payload=payload)  # type: ignore[call-arg]


# Event sizes (`MAX_EVENT_BYTES`). What a draft does not set yet is taken at its longest: a send time with
# microseconds, a test to five addresses of the longest kind (254 characters) with the list's sample values.
_LONGEST_SEND_AT = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
_LONGEST_ADDRESSES = [f"{n}{'x' * 63}@{'y' * 63}.{'y' * 63}.{'y' * 61}" for n in range(TEST_RECIPIENTS_MAX)]
_STAND_IN_TEST_ID = "t" + "0" * 12
_BYTES_COUNTED = ("as JSON in UTF-8: a character outside ASCII takes 2 to 4 bytes, a quote, a backslash or a line "
                  "break 2; the text part counts too, derived from html_body when text_body is not given")


def encoded_bytes(event: Event) -> int:
    """An event's size as it is published: its record's value (`herald_shared.kafka.EventPublisher`)."""
    return len(serialize_event(event))


def check_fits(events: Iterable[Event], cut: str, fields: Iterable[str] = ()) -> None:
    """Refuse (CampaignTooLarge) when the largest of `events` is over MAX_EVENT_BYTES: it could never be
    published. `cut`: what the author makes smaller; `fields`: where the request holds it."""
    size, largest = max(((encoded_bytes(e), e) for e in events), key=lambda sized: sized[0])
    if size <= MAX_EVENT_BYTES:
        return
    over = size - MAX_EVENT_BYTES
    raise CampaignTooLarge(
        f"the campaign's {largest.type} event would be {size:,} bytes, over the {MAX_EVENT_BYTES:,} bytes an event "
        f"may hold: make {cut} {over:,} bytes smaller or more ({_BYTES_COUNTED})", largest.type, size,
        errors=[(where, f"the campaign is {over:,} bytes over the {MAX_EVENT_BYTES:,} an event may hold")
                for where in fields] or None)


def _drafted(account_id: str, campaign_id: str, draft: Draft, content: CampaignContent) -> CampaignState:
    return CampaignState(account_id=account_id, campaign_id=campaign_id, status="draft", name=draft.name,
                         list_id=draft.list_id, segment=dict(draft.segment), content=content)


def _content_events(state: CampaignState, lst: ListInfo | None) -> list[Event]:
    """The later events a draft's content travels in, at their longest: its CampaignQueued, and a test."""
    return [_queued(state, _LONGEST_SEND_AT, review_required=False),
            _test_requested(state, _STAND_IN_TEST_ID, _LONGEST_ADDRESSES, sample_values(lst), "api")]


def _check_draft_fits(events: list[Event], state: CampaignState, lst: ListInfo | None, draft: Draft) -> None:
    check_fits([*events, *_content_events(state, lst)], "html_body and text_body",
               ["body.html_body", *(["body.text_body"] if draft.text_body else [])])


def create(account_id: str, campaign_id: str, draft: Draft, lst: ListInfo | None,
           existing: CampaignState | None, *, senders: Senders) -> list[Event]:
    """A new draft; refused when any event its content travels in would be too large (`check_fits`)."""
    if existing is not None:
        raise CampaignExists(f"campaign {campaign_id!r} already exists")
    content = _checked(draft, lst, senders)
    events = [_event(CampaignCreated, account_id, CampaignCreatedPayload(
        campaign_id=campaign_id, name=draft.name, list_id=draft.list_id,
        segment=Segment(field_equals=draft.segment), content=content))]
    _check_draft_fits(events, _drafted(account_id, campaign_id, draft, content), lst, draft)
    return events


def existing(current: CampaignState | None, campaign_id: str) -> CampaignState:
    if current is None or current.status == "deleted":
        raise CampaignNotFound(f"no campaign {campaign_id!r}")
    return current


def _in(state: CampaignState, allowed: tuple[Status, ...], doing: str) -> CampaignState:
    if state.status not in allowed:
        raise WrongState(f"campaign {state.campaign_id!r} is {state.status}: only a campaign that is "
                         f"{' or '.join(allowed)} can be {doing}")
    return state


def _draft_of(current: CampaignState | None, campaign_id: str, doing: str = "changed") -> CampaignState:
    return _in(existing(current, campaign_id), EDITABLE, doing)


def edit(current: CampaignState | None, campaign_id: str, draft: Draft, lst: ListInfo | None, *,
         senders: Senders) -> list[Event]:
    state = _draft_of(current, campaign_id, "edited")
    content = _checked(draft, lst, senders)
    events = [_event(CampaignEdited, state.account_id, CampaignEditedPayload(
        campaign_id=campaign_id, name=draft.name, list_id=draft.list_id,
        segment=Segment(field_equals=draft.segment), content=content))]
    # Before the same edit is let pass: a draft stored before the size rule is told it is too large.
    _check_draft_fits(events, _drafted(state.account_id, campaign_id, draft, content), lst, draft)
    if state.status == "draft" and (state.name, state.list_id, state.segment, state.content) == (
            draft.name, draft.list_id, draft.segment, content):
        return []  # the same edit again
    return events


def duplicate(current: CampaignState | None, campaign_id: str, new_id: str,
              lst: ListInfo | None = None) -> list[Event]:
    state = existing(current, campaign_id)  # any campaign can be the start of a new draft
    name = f"{state.name} (copy)"[:200]
    events = [_event(CampaignCreated, state.account_id, CampaignCreatedPayload(
        campaign_id=new_id, name=name, list_id=state.list_id, segment=Segment(field_equals=state.segment),
        content=state.content))]
    # A campaign stored before the size rule may be too large, and its copy with it (or one at the bound whose id
    # was shorter than the copy's).
    copy = CampaignState(account_id=state.account_id, campaign_id=new_id, status="draft", name=name,
                         list_id=state.list_id, segment=state.segment, content=state.content)
    check_fits([*events, *_content_events(copy, lst)], "the html_body and text_body of a new draft")
    return events


def delete(current: CampaignState | None, campaign_id: str) -> list[Event]:
    state = _draft_of(current, campaign_id, "deleted")
    return [_event(CampaignDeleted, state.account_id, CampaignDeletedPayload(campaign_id=campaign_id))]


# Submit, review, schedule, queue, cancel (PRODUCT.md "Content and industries", "Review")


def send_time(send_at: datetime | None, time_zone: str | None, now: datetime) -> datetime | None:
    """The UTC instant of a send time: an aware time as given, a local (naive) time in `time_zone` (UTC when
    absent). A local time that does not exist in the zone (the hour skipped when clocks go forward) is
    refused; one that happens twice (clocks go back) is the first of the two. A time with an offset and a zone
    too is refused: which of the two the author meant is unknown (until 2026-12-07 the zone was dropped). So is
    a time more than SCHEDULE_HORIZON ahead. None: now."""
    if send_at is None:
        return None
    if send_at.tzinfo is not None and time_zone is not None:
        raise InvalidSchedule(
            f"send_at {send_at.isoformat()} has an offset and time_zone {time_zone!r} is given too: give a local "
            "send_at (no offset) with time_zone, or a send_at with an offset and no time_zone",
            errors=[("body.send_at", "has an offset while time_zone is given"),
                    ("body.time_zone", "given with a send_at that has an offset")])
    if send_at.tzinfo is None:
        try:
            zone = ZoneInfo(time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a name that is a folder ("Europe")
            raise InvalidSchedule(f"unknown time zone {time_zone!r} (an IANA name, e.g. Europe/Riga)") from exc
        local = send_at.replace(tzinfo=zone, fold=0)
        instant = _in_utc(local)
        if instant.astimezone(zone).replace(tzinfo=None) != send_at:
            raise InvalidSchedule(f"{send_at.isoformat()} does not exist in {zone.key} (clocks go forward then)")
    else:
        instant = _in_utc(send_at)
    if instant < now - PAST_TOLERANCE:
        raise InvalidSchedule(f"{instant.isoformat()} is in the past", errors=[("body.send_at", "in the past")])
    if instant > now + SCHEDULE_HORIZON:
        latest = (now + SCHEDULE_HORIZON).isoformat(timespec="seconds")
        raise InvalidSchedule(f"{instant.isoformat()} is more than {SCHEDULE_HORIZON.days} days ahead: a campaign is "
                              f"scheduled at most {SCHEDULE_HORIZON.days} days ahead (now: until {latest})",
                              errors=[("body.send_at", f"at most {SCHEDULE_HORIZON.days} days ahead ({latest})")])
    return instant


def _in_utc(moment: datetime) -> datetime:
    """`moment` in UTC; InvalidSchedule when that falls outside the years datetime can hold (9999-12-31 in a
    zone behind UTC)."""
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidSchedule(f"{moment.isoformat()} is out of range") from exc


def _refuse(screening: Screening) -> None:
    if screening.refusals:
        raise ContentRefused("; ".join(r.reason for r in screening.refusals),
                             errors=[(f"body.{r.where}", f"{r.reason} ({r.matched})") for r in screening.refusals])


def review_reasons(account: AccountInfo | None, screening: Screening) -> list[ReviewReason]:
    """PRODUCT.md "Review": a new account's campaigns until staff approve the account, every campaign during
    the trial, and every campaign screening flagged go to staff first."""
    reasons = account_review_reasons(account)
    if screening.flagged:
        reasons.append("flagged")
    return reasons


def account_review_reasons(account: AccountInfo | None) -> list[ReviewReason]:
    """Why staff review every campaign of this account whatever it says: not approved yet, or on trial."""
    reasons: list[ReviewReason] = []
    if account is None or not account.approved:
        reasons.append("account_not_approved")
    if account is not None and account.on_trial:
        reasons.append("trial")
    return reasons


def submittable(current: CampaignState | None, campaign_id: str, lst: ListInfo | None, *,
                senders: Senders) -> CampaignState:
    """A draft From a domain the account may send From, whose templates compile against its live list: what
    may be screened and submitted."""
    state = _in(existing(current, campaign_id), ("draft",), "submitted")
    # A draft stored before the size rule could never be queued: refused here, not at its time.
    check_fits([_queued(state, _LONGEST_SEND_AT, review_required=False)],
               "the draft's html_body and text_body (edit it)")
    check_sender(state.content, senders)
    check_templates(state.content, _live_list(state.list_id, lst))
    check_links(state.content)  # a draft saved before these rules
    broken = broken_links(state.content.html_body)
    if broken:
        raise InvalidLink("; ".join(f"{url}: {why}" for url, why in broken),
                          errors=[("body.html_body", f"the link {url[:200]} is not a valid URL ({why}): a reader "
                                                     "could not follow it") for url, why in broken])
    return state


def submit(current: CampaignState | None, campaign_id: str, lst: ListInfo | None, account: AccountInfo | None,
           screening: Screening, send_at: datetime | None, time_zone: str | None, now: datetime,
           submitted_by: str, *, senders: Senders) -> list[Event]:
    state = submittable(current, campaign_id, lst, senders=senders)
    _refuse(screening)
    instant = send_time(send_at, time_zone, now)
    reasons = review_reasons(account, screening)
    matches = [ScreeningMatch(category=m.category, matched=m.matched, where=m.where, rule=m.rule)
               for m in screening.matches]
    return [_event(CampaignSubmitted, state.account_id, CampaignSubmittedPayload(
        campaign_id=campaign_id, submitted_by=submitted_by, review_required=bool(reasons),
        review_reasons=reasons, screening=matches, send_at=instant,
        time_zone=time_zone if send_at is not None and send_at.tzinfo is None else None))]


def approve(current: CampaignState | None, campaign_id: str, reviewer: str, note: str | None) -> list[Event]:
    state = _in(existing(current, campaign_id), ("in_review",), "approved")
    return [_event(CampaignApproved, state.account_id, CampaignApprovedPayload(
        campaign_id=campaign_id, reviewer=reviewer, note=note))]


def reject(current: CampaignState | None, campaign_id: str, reviewer: str, reasons: list[str]) -> list[Event]:
    state = _in(existing(current, campaign_id), ("in_review",), "rejected")
    return [_event(CampaignRejected, state.account_id, CampaignRejectedPayload(
        campaign_id=campaign_id, reviewer=reviewer, reasons=reasons))]


def cancel(current: CampaignState | None, campaign_id: str, by: str, reason: str | None) -> list[Event]:
    state = existing(current, campaign_id)
    if state.status == "cancelled":
        return []  # cancelled already: the same request again
    _in(state, CANCELLABLE, "cancelled (delete a draft instead)")
    return [_event(CampaignCancelled, state.account_id, CampaignCancelledPayload(
        campaign_id=campaign_id, cancelled_by=by, reason=reason))]


def unschedule(current: CampaignState | None, campaign_id: str, by: str, reason: str | None) -> list[Event]:
    """A campaign in review or scheduled back to a draft, by its author, to be edited (or rescheduled) and
    submitted again: that submission is screened and reviewed as any other, so an approval of the content before
    it does not carry over. Nothing to do for a draft (the same request again). A queued campaign is delivery's:
    only cancelled."""
    state = existing(current, campaign_id)
    if state.status == "draft":
        return []
    _in(state, UNSCHEDULABLE, "unscheduled (a queued campaign is being sent: cancel it instead)")
    return [_event(CampaignUnscheduled, state.account_id, CampaignUnscheduledPayload(
        campaign_id=campaign_id, unscheduled_by=by, reason=reason))]


def queued_event_id(account_id: str, campaign_id: str) -> uuid.UUID:
    return uuid.uuid5(HERALD_CAMPAIGNS_NAMESPACE, f"queued:{account_id}:{campaign_id}")


def due(state: CampaignState, now: datetime) -> bool:
    return state.status == "scheduled" and (state.send_at is None or state.send_at <= now)


def queue(current: CampaignState | None, now: datetime, *, senders: Senders, lst: ListInfo | None) -> list[Event]:
    """The CampaignQueued of a scheduled campaign whose time has come, with everything delivery needs to send
    it; nothing if it is not (any more) scheduled and due. Its event id is fixed per campaign. A campaign that
    cannot be queued is sent back to its author as a draft by CampaignReturned, with the reason: its list (`lst`)
    was deleted since the submission (it would reach nobody, and end `done` with nothing said), its From is at no
    domain the account may send From any more (its sending domain removed since the submission), a link rule
    of 2026-12-07 it breaks (scheduled before it: a templated link host, more than MAX_TRACKED_LINKS links), or
    its CampaignQueued is larger than an event may be (a draft stored before the size rule: no retry could ever
    publish it)."""
    if current is None or not due(current, now):
        return []
    state = current
    if lst is None or lst.deleted:
        return [_returned(state, "list_deleted", f"not sent at its time: its list {state.list_id!r} was deleted "
                                                 "after the submission; choose another list, then submit it again")]
    unverified = unverified_sender(state.content.from_email, senders)
    if unverified is not None:
        return [_returned(state, "sender_unverified", f"not sent at its time: {unverified}; then submit it again")]
    try:
        check_links(state.content)  # scheduled before the link rules: checked at submission since, not then
    except ContentRefused as refused:
        return [_returned(state, "content_refused", f"not sent at its time: {refused}; then submit it again")]
    except TooManyLinks as too_many:
        return [_returned(state, "too_many_links", f"not sent at its time: {too_many}; then submit it again")]
    queued = _queued(state, state.send_at, review_required=bool(state.review_reasons))
    try:
        check_fits([queued], "the draft's html_body and text_body")
    except CampaignTooLarge as too_large:
        return [_returned(state, "content_too_large", (
            f"not sent at its time: its CampaignQueued would be {too_large.encoded_bytes:,} bytes encoded, over the "
            f"{too_large.limit_bytes:,} bytes an event may hold (a draft saved before that limit); make html_body "
            f"and text_body {too_large.encoded_bytes - too_large.limit_bytes:,} bytes smaller or more ("
            f"{_BYTES_COUNTED}), then submit it again"))]
    return [queued]


def _submission_flow(state: CampaignState) -> dict[str, Any]:
    """The envelope fields of an event the scheduler makes about a campaign: in its submission's flow, caused by
    the event that scheduled it. Nothing for a campaign scheduled before they were kept (the flow under way)."""
    if state.flow is None:
        return {}
    return {"correlation_id": state.flow, "causation_id": state.scheduled_by}


def _returned(state: CampaignState, reason: ReturnReason, detail: str) -> Event:
    return CampaignReturned(account_id=state.account_id, producer=PRODUCER, **_submission_flow(state),
                            payload=CampaignReturnedPayload(campaign_id=state.campaign_id, reason=reason,
                                                            detail=detail[:1000]))


def _queued(state: CampaignState, send_at: datetime | None, *, review_required: bool) -> CampaignQueued:
    return CampaignQueued(event_id=queued_event_id(state.account_id, state.campaign_id), **_submission_flow(state),
                          account_id=state.account_id, producer=PRODUCER, payload=CampaignQueuedPayload(
                              campaign_id=state.campaign_id, list_id=state.list_id,
                              segment=Segment(field_equals=state.segment), content=state.content,
                              send_at=send_at, review_required=review_required))


def completed_event_id(account_id: str, campaign_id: str) -> uuid.UUID:
    return uuid.uuid5(HERALD_CAMPAIGNS_NAMESPACE, f"completed:{account_id}:{campaign_id}")


def complete(doc: Mapping[str, Any] | None) -> list[Event]:
    """CampaignCompleted of a queued campaign delivery has finished with (CampaignDeliveryFinished), once: a
    fixed event id per campaign, with delivery's counts as delivery gives them. A cancelled campaign stays
    cancelled."""
    if doc is None or doc.get("status") != "queued" or not doc.get("delivery"):
        return []
    counts = doc["delivery"]
    return [CampaignCompleted(event_id=completed_event_id(doc["account_id"], doc["campaign_id"]),
                              account_id=doc["account_id"], producer=PRODUCER, payload=CampaignCompletedPayload(
                                  campaign_id=doc["campaign_id"], recipients=counts["recipients"],
                                  sent=counts["sent"], bounced=counts["bounced"],
                                  failed=counts["failed"] + counts["skipped"] + counts["cancelled"],
                                  skipped=counts["skipped"], cancelled=counts["cancelled"]))]


def testable(current: CampaignState | None, campaign_id: str, lst: ListInfo | None, *,
             senders: Senders) -> CampaignState:
    """A campaign whose templates compile against its live list: what may be screened and tested."""
    state = existing(current, campaign_id)
    check_sender(state.content, senders)  # a test is a message too: receivers refuse it the same way
    check_templates(state.content, _live_list(state.list_id, lst))
    return state


def test_send(current: CampaignState | None, campaign_id: str, lst: ListInfo | None, recipients: list[str],
              sample: dict[str, FieldValue], requested_by: str, test_id: str, screening: Screening, *,
              senders: Senders) -> list[Event]:
    """A test of the campaign as it is now to at most 5 addresses, rendered with `sample` values. Content
    screening refuses (422) what it refuses at submission, content that hides the footer or the unsubscribe
    link (PRODUCT.md, "Every message": tests are messages too); its flags do not hold a test. Tests are not
    reviewed, so they are capped per account and day (`check_test_room`)."""
    state = testable(current, campaign_id, lst, senders=senders)
    checked_values(lst, sample)
    _refuse(screening)
    unique = list(dict.fromkeys(address.lower() for address in recipients))
    if not 1 <= len(unique) <= TEST_RECIPIENTS_MAX:
        raise WrongState(f"a test goes to 1 to {TEST_RECIPIENTS_MAX} addresses")
    events: list[Event] = [_test_requested(state, test_id, unique, sample, requested_by)]
    check_fits(events, "the test's values, or the campaign's html_body and text_body,")
    return events


def _test_requested(state: CampaignState, test_id: str, recipients: list[str], sample: dict[str, FieldValue],
                    requested_by: str) -> CampaignTestRequested:
    return CampaignTestRequested(account_id=state.account_id, producer=PRODUCER, payload=CampaignTestRequestedPayload(
        campaign_id=state.campaign_id, test_id=test_id, recipients=recipients, content=state.content, sample=sample,
        requested_by=requested_by))


# Test recipients of an account under review (PRODUCT.md, "Review"): tests are not reviewed, so until staff have
# reviewed the account (and while it is on trial) they go only to addresses the account has shown are its own.

_UNDER_REVIEW = {"account_not_approved": "staff have not approved the account yet",
                 "trial": "the account is on trial (until a paid plan)"}


def _address_key(address: str) -> str:
    """An address as test recipients are compared: in lower case (as a test is sent), its domain in A-labels."""
    local = address.rpartition("@")[0]
    return f"{local.lower()}@{from_domain(address)}"


def test_recipient_domains(recipients: Iterable[str]) -> list[str]:
    """The sending domains that could make these addresses the account's own: each one's domain and parents (read
    by key)."""
    return sorted({candidate for address in recipients for candidate in sender_candidates(address)})


def test_review_reasons(account: AccountInfo | None, flags: Sequence[Match] = ()) -> list[ReviewReason]:
    """Why a test may go only to the account's own addresses: the account is under review
    (`account_review_reasons`), or screening flagged the content tested (a submission would go to staff first, so
    a test must not take it to strangers unreviewed)."""
    reasons = account_review_reasons(account)
    if flags:
        reasons.append("flagged")
    return reasons


def refused_test_recipients(account: AccountInfo | None, recipients: Iterable[str], senders: Senders,
                            flags: Sequence[Match] = ()) -> list[str]:
    """Of a test's addresses, those the account may not test to. An account under review (not approved, or on
    trial: `account_review_reasons`, what sends its every campaign to staff) may test only to its registered
    address (AccountOpened's: an account campaigns folded before it kept that address has none until a rebuild)
    and to addresses at a sending domain it verified itself, or at a subdomain of one (verifying proves control
    of the domain's DNS, its subdomains' included, as for a From; never by the name's end alone). The operator's
    shared domains (`senders.shared`) do not count: every account may send From them, none owns their mailboxes.
    The same holds for content screening flagged (`flags`), whatever the account. Any other test of an approved
    account on a paid plan may go to anyone. Compared in lower case."""
    if not test_review_reasons(account, flags):
        return []
    registered = account.registered_email if account is not None else None
    own = _address_key(registered) if registered else None
    return [address for address in recipients
            if _address_key(address) != own and covering_domain(from_domain(address), senders.verified) is None]


def check_test_recipients(account: AccountInfo | None, recipients: Iterable[str], senders: Senders,
                          flags: Sequence[Match] = ()) -> None:
    """Refuse the whole test (TestRecipientNotAllowed, 422) when any address is one the account may not test to
    (`refused_test_recipients`), saying which are refused, which would be allowed, and why (naming what screening
    flagged, when it did)."""
    refused = list(dict.fromkeys(refused_test_recipients(account, recipients, senders, flags)))
    if not refused:
        return
    why = " and ".join(_UNDER_REVIEW[reason] if reason != "flagged" else _flagged(flags)
                       for reason in test_review_reasons(account, flags))
    registered = account.registered_email if account is not None else None
    own = (f"the account's registered address {registered}" if registered else
           "the account's registered address (campaigns holds none for this account yet)")
    pending = sorted({found for address in refused
                      if (found := covering_domain(from_domain(address), senders.pending)) is not None})
    verify = (f" ({', '.join(pending)}: added, not verified yet)" if pending else "")
    detail = (f"not sent: a test may not go to {', '.join(refused)}. Tests are not reviewed, and {why}, so until "
              f"staff review allows it (PRODUCT.md, \"Review\") a test goes only to addresses that are the "
              f"account's own: {own}, and addresses at a sending domain the account verified, or a subdomain of "
              f"one{verify} (POST /v1/sending-domains; the platform's shared sending domains are no account's "
              "own). Once the account is approved and on a paid plan, a test of content screening does not flag "
              "may go to any address")
    raise TestRecipientNotAllowed(detail, refused, errors=[
        ("body.recipients", f"{address}: not the account's registered address nor at a domain it verified")
        for address in refused])


def _flagged(flags: Sequence[Match]) -> str:
    named = "; ".join(f"{m.category}: {m.matched!r} in {m.where}" for m in list(dict.fromkeys(flags))[:5])
    more = f" and {len(flags) - 5} more" if len(flags) > 5 else ""
    return f"screening flagged its content for staff review ({named}{more})"


# Whoever received a test may stop the account's next ones: its unsubscribe link names the address by hash
# (herald_shared.links), subscriptions publishes RecipientOptedOutOfTests, the read model keeps it by account and hash.

def recipient_sha256(address: str) -> str:
    """An address as a test's unsubscribe link and RecipientOptedOutOfTests name it: sha256 of it lower-cased (as
    delivery sends a test, and as the contract hashes every address)."""
    return hashlib.sha256(address.lower().encode()).hexdigest()


def check_test_opt_outs(recipients: Iterable[str], opted_out: Collection[str]) -> None:
    """Refuse the whole test (422 `test_recipient_opted_out`, nothing sent) when an address asked for no more tests
    from the account (`opted_out`: the hashes of those who did, among these addresses), naming them: the caller
    drops them and sends again. A whole refusal, not a silent skip, so that the author knows who will not see it."""
    refused = list(dict.fromkeys(a for a in recipients if recipient_sha256(a) in opted_out))
    if not refused:
        return
    raise TestRecipientOptedOut(
        f"not sent: {', '.join(refused)} used the unsubscribe link of an earlier test message of this account and "
        "get no more test messages from it; send the test to other addresses", refused,
        errors=[("body.recipients", f"{address}: asked for no more test messages from this account")
                for address in refused])


# Tests are not reviewed, so an account sends at most HERALD_CAMPAIGNS_TEST_SENDS_PER_DAY test messages in any 24
# hours: each request is kept in the read model with its time and count, and those of the window are summed.
TEST_SENDS_WINDOW = timedelta(days=1)


def check_test_room(earlier: Iterable[tuple[datetime, int]], asked: int, limit: int, now: datetime) -> None:
    """Refuse (429 `test_sends_exhausted`) a test of `asked` messages when, with the account's `earlier` tests
    (time, messages) of the last 24 hours, it would pass `limit`; `retry_after` is when enough of those leave the
    window for it to fit (a day when it could never fit)."""
    # (a time after `now`, another replica's clock a little ahead, is counted all the same)
    recent = sorted((at, count) for at, count in earlier if now - at < TEST_SENDS_WINDOW)
    used = sum(count for _, count in recent)
    if used + asked <= limit:
        return
    wait = TEST_SENDS_WINDOW
    excess = used + asked - limit
    if asked <= limit:
        for at, count in recent:
            excess -= count
            if excess <= 0:
                wait = at + TEST_SENDS_WINDOW - now
                break
    left = max(0, limit - used)
    raise TestSendsExhausted(f"{asked} test message(s) asked, {left} left of {limit} in 24 hours: tests are not "
                             "reviewed, so an account sends a limited number a day",
                             retry_after=max(1, math.ceil(wait.total_seconds())))


def evolve(doc: dict[str, Any] | None, event: Event, at: datetime) -> dict[str, Any] | None:
    """The campaign document after one event (the read model's fold). Events that do not fit the state are
    ignored: a replay, or an approval of a campaign cancelled meanwhile."""
    if doc is None:
        if isinstance(event, CampaignCreated):
            p = event.payload
            return {"account_id": event.account_id, "campaign_id": p.campaign_id, "status": "draft",
                    "name": p.name, "list_id": p.list_id, "segment": dict(p.segment.field_equals),
                    "content": p.content.model_dump(mode="json"), "created_at": at, "updated_at": at}
        return None
    status = doc["status"]
    match event:
        case CampaignEdited(payload=edited) if status in EDITABLE:
            return {**doc, "status": "draft", "name": edited.name, "list_id": edited.list_id,
                    "segment": dict(edited.segment.field_equals), "content": edited.content.model_dump(mode="json"),
                    "updated_at": at}
        case CampaignDeleted() if status in EDITABLE:
            return {**doc, "status": "deleted", "updated_at": at}
        case CampaignSubmitted(payload=submitted) if status == "draft":
            return {**doc, "status": "in_review" if submitted.review_required else "scheduled",
                    "send_at": submitted.send_at, "time_zone": submitted.time_zone,
                    "review_reasons": list(submitted.review_reasons),
                    "screening": [m.model_dump() for m in submitted.screening], "submitted_at": at,
                    "updated_at": at, "rejection": None, "review_note": None, "returned": None,
                    "flow": str(event.correlation_id or event.event_id), "scheduled_by": str(event.event_id)}
        case CampaignApproved(payload=approved) if status == "in_review":
            return {**doc, "status": "scheduled", "reviewed_by": approved.reviewer, "review_note": approved.note,
                    "updated_at": at, "scheduled_by": str(event.event_id)}
        case CampaignRejected(payload=rejected) if status == "in_review":
            return {**doc, "status": "rejected", "reviewed_by": rejected.reviewer, "rejection": list(rejected.reasons),
                    "updated_at": at}
        case CampaignQueued() if status == "scheduled":
            return {**doc, "status": "queued", "queued_at": at, "updated_at": at}
        case CampaignReturned(payload=returned) if status == "scheduled":
            return {**doc, "status": "draft", "send_at": None, "time_zone": None, "updated_at": at,
                    "returned": {"reason": returned.reason, "detail": returned.detail, "at": at}}
        case CampaignUnscheduled() if status in UNSCHEDULABLE:
            return {**doc, "status": "draft", "send_at": None, "time_zone": None, "updated_at": at}
        case CampaignCancelled(payload=cancelled) if status in CANCELLABLE:
            return {**doc, "status": "cancelled", "cancelled_by": cancelled.cancelled_by, "updated_at": at}
        case DeliveryHeld(payload=held) if status == "queued":
            return {**doc, "held_gate": held.gate}
        case CampaignDeliveryFinished(payload=finished) if status in ("queued", "cancelled", "scheduled"):
            # Kept whatever the status: delivery's event may be folded before the campaign's own CampaignQueued.
            return {**doc, "delivery": finished.model_dump(include={"recipients", "sent", "bounced", "skipped",
                                                                    "failed", "cancelled"})}
        case CampaignCompleted() if status == "queued":
            return {**doc, "status": "done", "completed_at": at, "updated_at": at}
    return doc


def display_state(doc: Mapping[str, Any], account: AccountInfo | None, sent: int) -> str:
    """A campaign's state as its report shows it: its own status until it is queued, and done once delivery
    finished with it; while queued: suspended (the account is), held (delivery holds it behind a gate that is
    still closed), sending (messages went out), or queued (none yet)."""
    status = str(doc["status"])
    if status != "queued":
        return status
    if account is not None and account.suspended:
        return "suspended"
    gate = doc.get("held_gate")
    # Delivery holds a message at the send allowance an instant before billing blocks the account for the quota
    # that allowance kept (the trial's emails, the credits, the period's cap): held while that block stands.
    still_closed = {"account_suspended": account is not None and account.suspended,
                    "sending_blocked": account is not None and bool(account.blocked),
                    "send_allowance": account is not None and bool(account.blocked),
                    "account_review": account is None or not account.approved,
                    "campaign_review": False}
    if gate is not None and still_closed.get(str(gate), False):
        return "held"
    return "sending" if sent else "queued"


def evolve_account(doc: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """What campaigns keeps of an account: approved, plan (trial), suspended (and by which AccountSuspended: a
    reinstatement naming another, stale or sent twice, changes nothing), blocked, and the registered address
    (where its tests may go while it is under review)."""
    base: dict[str, Any] = doc or {"account_id": event.account_id, "opened": False, "approved": False,
                                   "plan": None, "suspended": False, "blocked": []}
    match event:
        case AccountOpened(payload=p):
            return {**base, "opened": True, "registered_email": p.registered_email}
        case AccountApproved():
            return {**base, "approved": True}
        case PlanChanged(payload=p):
            return {**base, "plan": p.plan}
        case TrialEnded():
            return {**base, "plan": "trial_ended" if base["plan"] in (None, "trial") else base["plan"]}
        case AccountSuspended():
            return {**base, "suspended": True, "suspension_event_id": str(event.event_id)}
        case AccountReinstated(payload=p):
            named, current = p.suspension_event_id, base.get("suspension_event_id")
            if named is not None and current is not None and named != current:
                return doc  # it lifts an earlier suspension, not the one in force (as compliance and delivery)
            return {**base, "suspended": False, "suspension_event_id": None}
        case SendingBlocked(payload=p):
            return {**base, "blocked": sorted({*base["blocked"], p.reason})}
        case SendingUnblocked(payload=p):
            return {**base, "blocked": [r for r in base["blocked"] if r != p.reason]}
    return doc


ACCOUNT_EVENTS = (AccountOpened, AccountApproved, PlanChanged, TrialEnded, AccountSuspended, AccountReinstated,
                  SendingBlocked, SendingUnblocked)


def account_info(doc: Mapping[str, Any] | None) -> AccountInfo | None:
    if doc is None:
        return None
    return AccountInfo(account_id=doc["account_id"], opened=bool(doc.get("opened")),
                       approved=bool(doc.get("approved")), plan=doc.get("plan"),
                       suspended=bool(doc.get("suspended")), blocked=tuple(doc.get("blocked", ())),
                       registered_email=doc.get("registered_email"))


# Reports (issue 14, "Reports"): what each delivery or subscriptions event adds to its campaign's counts.

# Unsubscribes the recipient made (as compliance counts them): not the customer's own through the API, nor
# those a complaint caused (counted as the complaint).
RECIPIENT_UNSUBSCRIBES = frozenset({"one_click", "unsubscribe_page", "preference_page", "mailto"})
REPORT_EVENTS = (MessageSent, MessageBounced, MessageDeferred, ComplaintReceived, MessageOpened, LinkClicked,
                 SubscriberUnsubscribed)


def report_campaign(event: Event) -> str | None:
    """The campaign an event reports on, if any (transactional mail and account notices are not reported)."""
    if not isinstance(event, REPORT_EVENTS):
        return None
    payload = event.payload
    if isinstance(event, SubscriberUnsubscribed):
        return payload.campaign_id if payload.source in RECIPIENT_UNSUBSCRIBES else None  # type: ignore[union-attr]
    return payload.campaign_id if payload.kind == "campaign" else None  # type: ignore[union-attr]


def report_counts(event: Event) -> dict[str, int]:
    """Counter increments. `sent` is every message handed to a receiving server (accepted, or refused at SMTP
    time or given up after retries), the denominator of the rates, as compliance has it. An open or click
    delivery marked `automated` (a mail scanner's) is counted apart, never as the reader's. What is counted once
    per message (complaints, a report's bounce, a deferral) is `firsts`'."""
    match event:
        case MessageSent():
            return {"sent": 1, "accepted": 1}
        case MessageBounced(payload=p) if p.source != "dsn":
            counts = {f"bounced_{p.bounce_class}": 1}
            if p.source in ("smtp_reply", "retry_expired"):
                counts["sent"] = 1  # (a `local` one never left Herald: not sent)
            return counts
        case MessageOpened(payload=p):
            return {"opens_automated": 1} if p.automated else {"opens_total": 1}
        case LinkClicked(payload=p):
            return {"clicks_automated": 1} if p.automated else {"clicks_total": 1, f"clicks_link_{p.link_index}": 1}
    return {}


@dataclass(frozen=True)
class First:
    """Counters an event adds only the first time its `marker` (per message) is met, and, when `after` is set,
    only once that marker was met before: a message counted once however many events say the same of it."""

    counts: dict[str, int]
    marker: str
    after: str | None = None


def firsts(event: Event) -> list[First]:
    """What an event counts once per message (the report's consumer keeps a marker per message and kind):
    - a first open or click, with where the reader was (`opens_unique_country_LV`, `unknown` where delivery could
      not place the client) and on what (`opens_unique_device_mobile`); a mail scanner's (`automated`) is not the
      reader's: it neither counts nor takes the message's first;
    - a first complaint: one person complaining twice (two reports of one message, from a feedback loop and a
      relay) is one complaint, as compliance counts the abuse rate;
    - a first report (DSN) that an accepted message failed (`failed_later`, taken off `delivered`), in the class
      of that first report: a relay and its backup MX reporting the same message as hard and as block is one
      bounce, in the class that came first (until 2026-12-07 each report counted: one message taken twice off
      delivered, shown as two bounces). A first delay report (a soft DSN) likewise, apart from a failure;
    - a recipient's first unsubscribe from the list through the campaign: one who came back (double opt-in) and
      pressed the old message's link again is one unsubscribe, as compliance counts the unsubscribe rate (until
      2026-12-07 the report counted two);
    - a first deferral (`deferred_messages`), and once the message settles after one (accepted, refused, given
      up: `deferred_settled`), so that the report shows how many messages are being retried now."""
    match event:
        case ComplaintReceived(payload=complaint) if complaint.feedback_type != "not-spam":
            return [First({"complaints": 1}, f"x:{complaint.message_id}")]
        case MessageOpened(payload=engaged) | LinkClicked(payload=engaged) if not engaged.automated:
            name, tag = ("opens", "o") if isinstance(event, MessageOpened) else ("clicks", "c")
            place, device = country_of(engaged.client.country), engaged.client.device or UNKNOWN_PLACE
            return [First({f"{name}_unique": 1, f"{name}_unique_country_{place}": 1,
                           f"{name}_unique_device_{device}": 1}, f"{tag}:{engaged.message_id}")]
        case MessageBounced(payload=bounced) if bounced.source == "dsn":
            if bounced.bounce_class == "soft":
                return [First({"bounced_soft": 1}, f"w:{bounced.message_id}")]
            return [First({"failed_later": 1, f"bounced_{bounced.bounce_class}": 1}, f"f:{bounced.message_id}")]
        case SubscriberUnsubscribed(payload=left):
            return [First({"unsubscribes": 1}, f"u:{left.list_id}:{left.subscriber_id}")]
        case MessageDeferred(payload=deferred):
            return [First({"deferred_messages": 1}, f"d:{deferred.message_id}")]
        case MessageBounced(payload=bounced):
            return [_settled(bounced.message_id)]
        case MessageSent(payload=sent) if sent.attempt > 1:
            # A first attempt's send settles no deferral: no marker is looked up for the many sends.
            return [_settled(sent.message_id)]
    return []


def _settled(message_id: str) -> First:
    return First({"deferred_settled": 1}, f"r:{message_id}", after=f"d:{message_id}")


UNKNOWN_PLACE = "unknown"


def country_of(code: str | None) -> str:
    """A country code as a counter names it, `unknown` for none (an address the GeoIP database does not place, or
    no database configured) or anything but two capital letters: nothing else of the event reaches a field name."""
    if code is not None and len(code) == 2 and code.isascii() and code.isalpha() and code.isupper():
        return code
    return UNKNOWN_PLACE


def _by(counts: dict[str, int], prefix: str) -> dict[str, int]:
    """The counters named `<prefix><value>`, by value, most first (ties by value)."""
    found = {k.removeprefix(prefix): v for k, v in counts.items() if k.startswith(prefix) and v}
    return dict(sorted(found.items(), key=lambda kv: (-kv[1], kv[0])))


BOUNCE_CLASSES = ("hard", "soft", "block", "undetermined")


def report(counts: dict[str, int], html_body: str | None,
           delivery: Mapping[str, int] | None = None) -> dict[str, object]:
    """The report of a campaign from its counts: never who complained, only how many. Each link's clicks name
    its URL as the campaign's HTML part writes it (`campaign_links.tracked_links`: what a click's link index
    names for delivery; the content cannot change once queued). `delivery`: delivery's counts once it finished
    with the campaign (CampaignDeliveryFinished), which give the recipients and those not sent (skipped, failed,
    cancelled); until then they are null. Nothing is being retried once delivery finished (a deferred message of
    a cancelled campaign ends cancelled, with no event of its own)."""
    links = tracked_links(html_body)
    sent = counts.get("sent", 0)
    bounces = {c: counts.get(f"bounced_{c}", 0) for c in BOUNCE_CLASSES}
    per_link = sorted((int(k.removeprefix("clicks_link_")), v) for k, v in counts.items()
                      if k.startswith("clicks_link_"))

    def rate(n: int) -> float | None:
        return n / sent if sent else None

    deferred = 0 if delivery else max(0, counts.get("deferred_messages", 0) - counts.get("deferred_settled", 0))
    return {
        "recipients": delivery["recipients"] if delivery else None,
        "sent": sent, "delivered": counts.get("accepted", 0) - counts.get("failed_later", 0), "bounces": bounces,
        "deferred": deferred,
        **{name: delivery[name] if delivery else None for name in ("skipped", "failed", "cancelled")},
        "opens": {"unique": counts.get("opens_unique", 0), "total": counts.get("opens_total", 0),
                  "automated": counts.get("opens_automated", 0),
                  "by_country": _by(counts, "opens_unique_country_"), "by_device": _by(counts, "opens_unique_device_")},
        "clicks": {"unique": counts.get("clicks_unique", 0), "total": counts.get("clicks_total", 0),
                   "automated": counts.get("clicks_automated", 0),
                   "by_country": _by(counts, "clicks_unique_country_"),
                   "by_device": _by(counts, "clicks_unique_device_"),
                   "per_link": [{"link_index": i, "url": links[i] if i < len(links) else None, "clicks": n}
                                for i, n in per_link]},
        "complaints": counts.get("complaints", 0), "unsubscribes": counts.get("unsubscribes", 0),
        "rates": {"hard_bounce_rate": rate(bounces["hard"]), "block_rate": rate(bounces["block"]),
                  "abuse_rate": rate(counts.get("complaints", 0)),
                  "unsubscribe_rate": rate(counts.get("unsubscribes", 0))}}


# Previews and test sends render with the shared sandboxed renderer, as delivery does.

SAMPLE_MEMBER: dict[str, FieldValue] = {"email": "anna.berzina@example.com", "first_name": "Anna",
                                        "last_name": "Bērziņa"}


def sample_values(lst: ListInfo | None) -> dict[str, FieldValue]:
    """Plausible values for every field of the list: what a preview or test shows without a chosen member."""
    values: dict[str, FieldValue] = dict(SAMPLE_MEMBER)
    if lst is not None:
        values.update({k: v for k, v in templating.sample_values(lst.custom_fields).items()
                       if isinstance(v, str | int | float | bool) or v is None})
    return values


def checked_values(lst: ListInfo | None, values: dict[str, FieldValue] | None) -> None:
    """Refuse (InvalidValues) merge values no member could hold: the standard fields are text, a custom field
    of the list takes its kind (`fields.fits`), and any other name a storable value."""
    kinds = {**{name: "text" for name in SAMPLE_MEMBER}, **(lst.custom_fields if lst is not None else {})}
    wrong = [(name, kinds.get(name)) for name, value in (values or {}).items()
             if not (fits(kinds[name], value) if name in kinds else
                     isinstance(value, str | bool) or value is None or fits("number", value))]
    if wrong:
        raise InvalidValues("; ".join(f"{name!r}: not a {kind}" if kind else f"{name!r}: not a value MongoDB can "
                                      "store (a number beyond 64 bits or not finite)" for name, kind in wrong),
                            errors=[(f"body.values.{name}", f"expects a {kind}" if kind else
                                     "expects a 64-bit integer or a finite number") for name, kind in wrong])


def preview(current: CampaignState | None, campaign_id: str, lst: ListInfo | None,
            values: dict[str, FieldValue] | None) -> dict[str, str | None]:
    """Subject, preheader and bodies merged for one member's values (the sample when none are given).
    Delivery adds the unsubscribe footer and tracking on top when it sends."""
    checked_values(lst, values)
    return _rendered(existing(current, campaign_id).content, lst, values,
                     "https://example.invalid/unsubscribe/preview")


def as_rendered(current: CampaignState | None, campaign_id: str, lst: ListInfo | None,
                values: dict[str, FieldValue] | None = None) -> dict[str, str | None]:
    """What a member with the sample values would get, for screening what template code writes (the source
    alone can hide it: `{{ "ca" ~ "sino" }}`, `{% set %}` into a style); the unsubscribe link stays
    `{{ unsubscribe_url }}`, as screening knows it. A template that cannot render is refused here (422), not
    when delivery renders it for every member."""
    return _rendered(existing(current, campaign_id).content, lst, values, "{{ unsubscribe_url }}")


def screening_of(current: CampaignState | None, campaign_id: str, lst: ListInfo | None,
                 values: dict[str, FieldValue] | None = None) -> Screening:
    """What screening finds in a campaign (PRODUCT.md, "Content and industries"; the same for a submission and a
    test): its content as written, the sender's name and addresses included; as the member with `values` (the
    sample's when None) gets it (`as_rendered`); and, as a condition shows other members what that one does
    not get, its template code with every arm of every condition written out (`templating.every_branch`) and
    every text that code holds (`templating.constant_texts`). These last readings can join arms no member gets
    together: what only they find goes to staff review with the rest, it is never refused."""
    content = existing(current, campaign_id).content
    verdict = screen(subject=content.subject, preheader=content.preheader, html_body=content.html_body,
                     text_body=content.text_body, from_name=content.from_name, from_email=content.from_email,
                     reply_to=content.reply_to)
    rendered = as_rendered(current, campaign_id, lst, values)
    verdict = verdict.together(screen(subject=rendered["subject"] or "", preheader=rendered["preheader"],
                                      html_body=rendered["html_body"], text_body=rendered["text_body"]))
    merged = _merge_values(lst, values, "{{ unsubscribe_url }}")
    readings: list[tuple[str, str, bool]] = []
    for where, source, is_html in _parts(content):
        try:
            readings.extend((where, text, is_html)
                            for text in templating.every_branch(source, merged, html=is_html, where=where))
            readings.extend((where, text, False)
                            for text in templating.constant_texts(source, html=is_html, where=where))
        except (templating.TemplateProblem, templating.RenderError) as exc:
            raise InvalidTemplate(f"{where}: {exc}", errors=[(f"body.{where}", str(exc))]) from exc
    return verdict.together(screen_readings(readings))


def _parts(content: CampaignContent) -> list[tuple[str, str, bool]]:
    """The templates of a campaign: (part, source, whether it is HTML)."""
    return [(where, source, is_html) for where, source, is_html in (
        ("subject", content.subject, False), ("preheader", content.preheader, False),
        ("html_body", content.html_body, True), ("text_body", content.text_body, False)) if source is not None]


def _merge_values(lst: ListInfo | None, values: dict[str, FieldValue] | None,
                  unsubscribe_url: str) -> dict[str, object]:
    """A member's merge values, typed as delivery merges them: the sample's for fields `values` lacks."""
    merged: dict[str, object] = {**sample_values(lst), **(values or {}), "unsubscribe_url": unsubscribe_url}
    return {k: "" if v is None else v for k, v in merged.items()}


def _rendered(content: CampaignContent, lst: ListInfo | None, values: dict[str, FieldValue] | None,
              unsubscribe_url: str) -> dict[str, str | None]:
    merged = _merge_values(lst, values, unsubscribe_url)
    out: dict[str, str | None] = {"subject": None, "preheader": None, "html_body": None, "text_body": None}
    for where, source, is_html in _parts(content):
        try:
            out[where] = templating.compile_template(source, html=is_html).render(merged)
        except (templating.TemplateProblem, templating.RenderError) as exc:
            raise InvalidTemplate(f"{where}: {exc}", errors=[(f"body.{where}", str(exc))]) from exc
    return out
