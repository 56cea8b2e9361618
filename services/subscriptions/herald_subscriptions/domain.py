"""Subscriptions' rules, pure: who may join a list and how, and which events each request records.

PRODUCT.md, "Lists and subscribers": single or double opt-in; consent evidence required; a suppressed
address never comes back by API or import, only by a fresh double opt-in by the person, nor does one that
unsubscribed, erased or not; unsubscribing is idempotent and remembers the campaign it came from.

Subscription bombing (a bot entering a victim's address into many forms, so the victim drowns in confirmation
emails and the platform's IPs get blocklisted): at most one confirmation email per address per list a day, and
at most CONFIRMATIONS_PER_ADDRESS_PER_DAY per address across one account's lists. A request beyond them is
recorded as usual (the membership stays pending) but sends nothing. What a hosted form screens out before it
gets here (honeypot, fill time, forged or cross-site posts) is `screen_form`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from herald_shared import membership
from herald_shared.contract import Event
from herald_shared.contract.delivery import (
    ComplaintReceived,
    LinkClicked,
    LinkClickedPayload,
    MessageBounced,
    MessageDeferred,
    MessageOpened,
    MessageRef,
    MessageSent,
)
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    ConfirmationRequestedPayload,
    ConsentEvidence,
    CustomFieldDefinition,
    FieldValue,
    FormChallenge,
    ListCreated,
    ListCreatedPayload,
    ListDeleted,
    ListDeletedPayload,
    ListFormConfigured,
    ListFormConfiguredPayload,
    ListNotificationsConfigured,
    ListNotificationsConfiguredPayload,
    ListRenamed,
    ListRenamedPayload,
    MembershipNoticeRequested,
    MembershipNoticeRequestedPayload,
    OptInMode,
    SubscriberAdded,
    SubscriberAddedPayload,
    SubscriberConfirmed,
    SubscriberConfirmedPayload,
    SubscriberErased,
    SubscriberErasedPayload,
    SubscriberSuppressed,
    SubscriberSuppressedPayload,
    SubscriberUnsubscribed,
    SubscriberUnsubscribedPayload,
)
from herald_shared.fields import fits
from herald_shared.request_fields import is_ip_address, sendable_email
from herald_shared.rules import RuleRefused

PRODUCER = "subscriptions"
Status = Literal["pending", "active", "unsubscribed", "suppressed", "erased"]
Channel = Literal["api", "form", "import"]
UnsubscribeSource = Literal["one_click", "unsubscribe_page", "preference_page", "api", "complaint", "mailto"]
CONFIRMATION_INTERVAL = timedelta(hours=24)  # per address and list
CONFIRMATIONS_PER_ADDRESS_PER_DAY = 3  # per address across the lists of one account


class SubscriptionError(RuleRefused):
    """A rule refused the request. `code` names the rule (problem type / import rejection reason)."""

    code = "subscription_error"


class ListNotFound(SubscriptionError):
    code, http_status = "list_not_found", 404


class ListAlreadyExists(SubscriptionError):
    code, http_status = "list_already_exists", 409


class DeletedListId(SubscriptionError):
    """The id belonged to a list that was deleted. Not reused: a deletion leaves the old list's members, their
    listing and counts under its id (and delivery's audience, campaigns and late events of its messages name it),
    so a new list of that id would take them in; and deleting a list to re-create it for the next send is the
    "one-off sending" PRODUCT.md asks to detect."""

    code, http_status = "list_id_of_deleted_list", 409


# What one account may make this service hold through its lists. 100 custom fields is what comparable ESPs allow
# a list or audience (their merge fields); a list's document, every page listing it and every member's fields
# check are sized by it. 1,000 live lists is far beyond what a sender uses (one per newsletter, product or
# language) and keeps `GET /v1/lists` a few pages and the count read at creation small.
MAX_CUSTOM_FIELDS = 100
MAX_LIVE_LISTS = 1000


class TooManyCustomFields(SubscriptionError):
    code, http_status = "too_many_custom_fields", 422


class TooManyLists(SubscriptionError):
    """The account has MAX_LIVE_LISTS lists not deleted: a conflict with its state, as a list id in use is."""

    code, http_status = "too_many_lists", 409


class SubscriberNotFound(SubscriptionError):
    code, http_status = "subscriber_not_found", 404


class InvalidEmail(SubscriptionError):
    code = "invalid_email"


class InvalidCustomField(SubscriptionError):
    """The values do not match the custom fields the list declares: a conflict with the list's state."""

    code, http_status = "invalid_custom_field", 409


class InvalidText(SubscriptionError):
    code = "invalid_text"


def check_text(**values: object) -> None:
    """Text holds no NUL character: PostgreSQL's jsonb (under FerretDB) cannot store one, so a recorded event
    carrying it could never be folded into a read model."""
    for name, value in values.items():
        texts = value.values() if isinstance(value, dict) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise InvalidText(f"{name} contains a NUL character")


class ConsentMissing(SubscriptionError):
    code = "missing_consent"


class InvalidConsent(SubscriptionError):
    code = "invalid_consent"


CONSENT_CLOCK_SKEW = timedelta(minutes=5)  # how far ahead of this clock a customer's consent time may be
# Earlier consent times are placeholders a system filled in (0001-01-01, 1900-01-01), not when anyone opted in.
EARLIEST_CONSENT = datetime(2000, 1, 1, tzinfo=UTC)


def consent_evidence(*, source: str, collected_at: datetime, method: str, ip: str | None = None,
                     user_agent: str | None = None) -> ConsentEvidence:
    """The evidence as the contract holds it. A time it refuses (no time in UTC, such as 0001-01-01T00:00+01:00)
    is evidence that is not valid (`InvalidConsent`), as one in the future is; any other refusal (a method too
    long) is raised as the contract's ValidationError, which each caller answers already."""
    try:
        return ConsentEvidence(source=source, collected_at=collected_at, method=method,
                               ip=ip, user_agent=user_agent)
    except ValidationError as exc:
        problem = exc.errors()[0]
        if problem["loc"] != ("collected_at",):
            raise
        raise InvalidConsent(f"consent collected at {collected_at.isoformat()}: {problem['msg']}") from None


# Consent methods that say nothing of how the person opted in: what a spreadsheet or a CRM holds when the evidence
# is missing. Compared without case, spaces and punctuation, so "N/A", "n.a.", "(none)", "-", "?" are among them.
PLACEHOLDER_CONSENT_METHODS = frozenset({
    "", "na", "none", "null", "nil", "nan", "undefined", "unknown", "unk", "notknown", "notapplicable",
    "notavailable", "missing", "empty", "tbd", "todo", "x", "xx", "xxx", "no", "0"})


def check_consent_method(method: str) -> None:
    if "".join(char for char in method.casefold() if char.isalnum()) in PLACEHOLDER_CONSENT_METHODS:
        raise ConsentMissing(f"consent method {method[:100]!r} is a placeholder, not how the person opted in "
                             "(e.g. 'signup form on example.com', 'checkout checkbox')")


def check_consent(consent: ConsentEvidence, now: datetime) -> None:
    """Evidence of an opt-in that happened (PRODUCT.md: each imported row carries its consent evidence): a method
    that is not a placeholder (else it is missing), not collected in the future (beyond clock skew) nor before
    EARLIEST_CONSENT, and its IP, where given, an IPv4 or IPv6 address."""
    check_consent_method(consent.method)
    if consent.collected_at > now + CONSENT_CLOCK_SKEW:
        raise InvalidConsent(f"consent collected at {consent.collected_at.isoformat()} is in the future")
    if consent.collected_at < EARLIEST_CONSENT:
        raise InvalidConsent(f"consent collected at {consent.collected_at.isoformat()} is before 2000-01-01: "
                             "a placeholder, not when the person opted in")
    if consent.ip is not None and not is_ip_address(consent.ip):
        raise InvalidConsent(f"consent ip {consent.ip[:100]!r} is not an IPv4 or IPv6 address")


class AddressSuppressed(SubscriptionError):
    code, http_status = "suppressed", 409


class PreviouslyUnsubscribed(SubscriptionError):
    code, http_status = "previously_unsubscribed", 409


class LinkNoLongerValid(SubscriptionError):
    code, http_status = "link_no_longer_valid", 410


def normalise_email(raw: str) -> str:
    """Syntax check and normalisation (no DNS); the whole address is lower-cased for identity. The same
    addresses as the API takes, on every channel: ones delivery can send to (ASCII, no special-use domain)."""
    try:
        return sendable_email(raw.strip())
    except ValueError as exc:
        raise InvalidEmail(f"{raw!r} is not a valid email address: {exc}") from None


def email_sha256(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()


def subscriber_id_for(account_id: str, list_id: str, email: str) -> str:
    """Deterministic: the same person on the same list is always the same subscriber."""
    return "s" + hashlib.sha256(f"{account_id}\0{list_id}\0{email}".encode()).hexdigest()[:24]


def member_id_for(memberships: Iterable[Mapping[str, Any]], account_id: str, list_id: str, email: str) -> str:
    """The membership a subscribe of this address to this list is decided on: the one that already holds the
    address on the list under another id (a CRM's: `herald_shared.membership`, one membership per address and
    list), else the deterministic one (`subscriber_id_for`). `memberships`: the address's, as stored."""
    own = subscriber_id_for(account_id, list_id, email)
    return membership.holder(memberships, list_id=list_id, email_sha256=email_sha256(email),
                             subscriber_id=own) or own


@dataclass(frozen=True)
class ListState:
    account_id: str
    list_id: str
    name: str
    opt_in: OptInMode
    custom_fields: dict[str, str]
    deleted: bool = False
    frame_ancestors: tuple[str, ...] = ()
    form_challenge: FormChallenge = "none"
    notify_subscribes: bool = False
    notify_unsubscribes: bool = False
    account_deleted: bool = False  # billing's AccountDeleted of the list's account (`takes_members`)

    def notifies(self, change: Literal["subscribed", "unsubscribed"]) -> bool:
        """Whether the customer asked to be emailed about this kind of membership change."""
        return self.notify_subscribes if change == "subscribed" else self.notify_unsubscribes


@dataclass(frozen=True)
class MemberState:
    subscriber_id: str
    list_id: str
    email_sha256: str
    status: Status
    awaiting_confirmation: bool = False
    confirmation_requested_at: datetime | None = None
    # Whether the person had unsubscribed or been suppressed and not confirmed a double opt-in since: kept by an
    # erased membership (nothing personal) and by one re-added, pending, since the opt-out.
    opted_out: Literal["unsubscribed", "suppressed"] | None = None
    opt_in: OptInMode | None = None  # as its add recorded it
    added_at: datetime | None = None


def standing(member: MemberState | None) -> Status | None:
    """The membership a request is decided on. Erasure forgets the person, not their opt-out: an erased
    membership whose person had unsubscribed or been suppressed stands as that (also when it was re-added,
    pending, before the erasure), so the customer cannot add the address again by erasing it first."""
    if member is None:
        return None
    return member.opted_out if member.status == "erased" else member.status


@dataclass(frozen=True)
class ConfirmationsSent:
    """The confirmation emails already asked for: to this membership (the last), and to this address across the
    account's lists (the last few, newest last)."""

    to_member: datetime | None = None
    to_address: tuple[datetime, ...] = ()

    def allow(self, now: datetime) -> bool:
        if self.to_member is not None and now - self.to_member < CONFIRMATION_INTERVAL:
            return False
        recent = [t for t in self.to_address if now - t < CONFIRMATION_INTERVAL]
        return len(recent) < CONFIRMATIONS_PER_ADDRESS_PER_DAY


@dataclass(frozen=True)
class SubscribeRequest:
    email: str
    consent: ConsentEvidence | None
    channel: Channel
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    custom_fields: dict[str, FieldValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfirmLink:
    url: str
    expires_at: datetime


Outcome = Literal["active", "pending", "already_active", "already_pending"]


@dataclass(frozen=True)
class Decision:
    events: list[Event]
    outcome: Outcome
    subscriber_id: str
    confirmation_withheld: bool = False  # one was due, but the address had its share for the day


def _event(cls: type[Event], account_id: str, payload: object, causation: Event | None = None, *,
           event_id: uuid.UUID | None = None) -> Event:
    if event_id is not None:
        return cls(producer=PRODUCER, payload=payload, account_id=account_id, event_id=event_id)  # type: ignore[call-arg]
    if causation is None:
        return cls(producer=PRODUCER, payload=payload, account_id=account_id)  # type: ignore[call-arg]  # `type` is each subclass's default
    # Derived from another event: the same cause always gives the same event id, so deciding again after a
    # retry or a redelivery publishes a duplicate that consumers drop by event_id.
    event_id = uuid.uuid5(causation.event_id, f"{cls.__name__}:{getattr(payload, 'subscriber_id', '')}")
    return cls(producer=PRODUCER, payload=payload, event_id=event_id, **causation.caused())


def create_list(account_id: str, list_id: str, name: str, opt_in: OptInMode,
                custom_fields: list[CustomFieldDefinition], existing: ListState | None, *,
                live_lists: int) -> list[Event]:
    """`live_lists`: how many lists of the account are not deleted (counted up to MAX_LIVE_LISTS)."""
    check_text(name=name)
    if len(custom_fields) > MAX_CUSTOM_FIELDS:
        raise TooManyCustomFields(f"a list has at most {MAX_CUSTOM_FIELDS:,} custom fields; this one asks for "
                                  f"{len(custom_fields):,}")
    if existing is not None and existing.deleted:
        raise DeletedListId(f"list id {list_id!r} belonged to a list that was deleted; a deleted list's id cannot "
                            "be used again: choose another id")
    if existing is not None:
        same = (existing.name, existing.opt_in, existing.custom_fields) == (
            name, opt_in, {f.name: f.kind for f in custom_fields})
        if same:
            return []  # the same request again
        raise ListAlreadyExists(f"list {list_id!r} already exists")
    if live_lists >= MAX_LIVE_LISTS:
        raise TooManyLists(f"an account has at most {MAX_LIVE_LISTS:,} lists (deleted ones do not count); delete "
                           "one to create another")
    payload = ListCreatedPayload(list_id=list_id, name=name, opt_in=opt_in, custom_fields=custom_fields)
    return [_event(ListCreated, account_id, payload)]


def rename_list(current: ListState | None, name: str) -> list[Event]:
    live = _live_list(current)
    check_text(name=name)
    if live.name == name:
        return []
    return [_event(ListRenamed, live.account_id, ListRenamedPayload(list_id=live.list_id, name=name))]


def configure_form(current: ListState | None, frame_ancestors: list[str], challenge: FormChallenge) -> list[Event]:
    """Who may frame the list's hosted form, and which challenge guards it; the same settings again change
    nothing."""
    live = _live_list(current)
    ancestors = list(dict.fromkeys(origin.lower().rstrip("/") for origin in frame_ancestors))
    if (tuple(ancestors), challenge) == (live.frame_ancestors, live.form_challenge):
        return []
    return [_event(ListFormConfigured, live.account_id, ListFormConfiguredPayload(
        list_id=live.list_id, frame_ancestors=ancestors, challenge=challenge))]


def configure_notifications(current: ListState | None, subscribes: bool, unsubscribes: bool) -> list[Event]:
    """Which membership changes the customer is emailed about (PRODUCT.md: "The customer is notified of
    subscribes and unsubscribes when it asked to be"); the same settings again record nothing."""
    live = _live_list(current)
    if (subscribes, unsubscribes) == (live.notify_subscribes, live.notify_unsubscribes):
        return []
    return [_event(ListNotificationsConfigured, live.account_id, ListNotificationsConfiguredPayload(
        list_id=live.list_id, subscribes=subscribes, unsubscribes=unsubscribes))]


# How a membership change came about, for the customer's notice; the rest notify nothing: an import (the
# customer brought those members), the customer's own API unsubscribe, and a complaint (who complained is
# never disclosed to the customer, PRODUCT.md "Sending suspension").
NoticeHow = Literal["double_opt_in", "form", "api", "one_click", "unsubscribe_page", "preference_page", "mailto"]
NOTICE_HOWS: dict[str, tuple[str, ...]] = {
    "subscribed": ("double_opt_in", "form", "api"),
    "unsubscribed": ("one_click", "unsubscribe_page", "preference_page", "mailto")}


def membership_notice(lst: ListState | None, subscriber_id: str, email: str | None,
                      change: Literal["subscribed", "unsubscribed"], how: str,
                      cause: Event | None = None) -> list[Event]:
    """The customer's notice of one membership change, when the list asks for it (`configure_notifications`)
    and the change came about in a way that notifies (NOTICE_HOWS). `cause`: the event it follows from, which
    fixes its id (decided again after a redelivery, it is the same notice)."""
    if lst is None or not takes_members(lst) or not email or how not in NOTICE_HOWS[change]:
        return []
    if not lst.notifies(change):
        return []
    return [_event(MembershipNoticeRequested, lst.account_id, MembershipNoticeRequestedPayload(
        list_id=lst.list_id, list_name=lst.name, subscriber_id=subscriber_id, email=email, change=change,
        how=how), cause)]


def delete_list(current: ListState | None, members: int) -> list[Event]:
    """A deletion is an event; the members stay in the read model, flagged by the list's deletion."""
    live = _live_list(current)
    return [_event(ListDeleted, live.account_id, ListDeletedPayload(list_id=live.list_id,
                                                                   members_at_deletion=members))]


def takes_members(lst: ListState | None) -> bool:
    """Whether a list is there to take people: created, not deleted, and its account not deleted. A deleted
    account's lists are gone with it (PRODUCT.md: "Herald processes subscriber data only for the customer's
    purposes", and billing's deletion: "every key is revoked, sending is blocked"): no form, subscribe or
    confirmation adds anyone in its name, nor sends a confirmation email for it. Its members' unsubscribes are
    still taken (`unsubscribe`): the person's right, whatever became of the sender."""
    return lst is not None and not lst.deleted and not lst.account_deleted


def _live_list(current: ListState | None) -> ListState:
    if current is None or not takes_members(current):
        raise ListNotFound("no such list")
    return current


CUSTOM_TEXT_CHARS = 1000  # the longest custom text the API's schema takes (request_fields.FieldValueIn)


def check_custom_fields(lst: ListState, values: dict[str, FieldValue]) -> None:
    """The values fit the custom fields the list declares; a text is at most CUSTOM_TEXT_CHARS long on every
    channel (an import's too)."""
    for name, value in values.items():
        kind = lst.custom_fields.get(name)
        if kind is None:
            raise InvalidCustomField(f"list {lst.list_id!r} has no custom field {name!r}")
        if not fits(kind, value):
            raise InvalidCustomField(f"custom field {name!r} expects a {kind}, got {value!r}")
        if isinstance(value, str) and len(value) > CUSTOM_TEXT_CHARS:
            raise InvalidCustomField(f"custom field {name!r} is {len(value):,} characters long; at most "
                                     f"{CUSTOM_TEXT_CHARS:,}")


def subscribe(lst: ListState | None, member: MemberState | None, address_suppressed: bool,
              request: SubscribeRequest, company_name: str, confirm_link: Callable[[], ConfirmLink],
              sent: ConfirmationsSent | None = None, now: datetime | None = None) -> Decision:
    """Decide a subscribe request. `request.email` must already be normalised. `confirm_link` is asked only
    when a confirmation is sent (signing one costs more than the rest of a single opt-in decision). `sent` says
    which confirmations went out before (`needs_confirmation_history` says when it matters); `now` is the time
    it is compared with."""
    live = _live_list(lst)
    check_custom_fields(live, request.custom_fields)
    consent = request.consent
    check_text(first_name=request.first_name, last_name=request.last_name, phone=request.phone,
               custom_fields=request.custom_fields, consent_method=consent and consent.method,
               user_agent=consent and consent.user_agent, ip=consent and consent.ip)
    if request.consent is None:
        raise ConsentMissing("consent evidence is required for every subscriber")
    check_consent(request.consent, now or datetime.now(UTC))
    # `member`: the address's membership of the list (`member_id_for`), which may be another producer's id.
    subscriber_id = member.subscriber_id if member is not None else subscriber_id_for(
        live.account_id, live.list_id, request.email)
    status = standing(member)
    double = live.opt_in == "double"
    if status == "active":
        return Decision([], "already_active", subscriber_id)
    if address_suppressed or status == "suppressed":
        if request.channel != "form":
            raise AddressSuppressed("this address is suppressed; only the person can lift it by confirming a "
                                    "fresh double opt-in")
        double = True
    elif status == "unsubscribed":
        if request.channel != "form":
            raise PreviouslyUnsubscribed("this person unsubscribed; only they can subscribe again")
        double = True
    elif status == "pending":
        if request.channel == "form":  # the person asks again: send the confirmation again, once a day at most
            if not (sent or ConfirmationsSent()).allow(now or datetime.now(UTC)):
                return Decision([], "already_pending", subscriber_id, confirmation_withheld=True)
            return Decision([_confirmation(live, subscriber_id, request, company_name, confirm_link)],
                            "already_pending", subscriber_id)
        assert member is not None
        if member.opt_in == "single" and _half_recorded(member) and member.added_at is not None:
            return Decision([_event(SubscriberConfirmed, live.account_id, SubscriberConfirmedPayload(
                list_id=live.list_id, subscriber_id=subscriber_id, method="single_opt_in"),
                event_id=completion_id(live.account_id, subscriber_id, member.added_at, SubscriberConfirmed))],
                "active", subscriber_id)
        if member.opt_in == "double" and _half_recorded(member) and member.added_at is not None:
            if not (sent or ConfirmationsSent()).allow(now or datetime.now(UTC)):
                return Decision([], "already_pending", subscriber_id, confirmation_withheld=True)
            return Decision([_confirmation(live, subscriber_id, request, company_name, confirm_link, event_id=(
                completion_id(live.account_id, subscriber_id, member.added_at, ConfirmationRequested)))],
                "already_pending", subscriber_id)
        return Decision([], "already_pending", subscriber_id)

    added = _event(SubscriberAdded, live.account_id, SubscriberAddedPayload(
        list_id=live.list_id, subscriber_id=subscriber_id, email=request.email,
        email_sha256=email_sha256(request.email), first_name=request.first_name, last_name=request.last_name,
        phone=request.phone, custom_fields=request.custom_fields, opt_in="double" if double else "single",
        consent=request.consent))
    if double:
        if not (sent or ConfirmationsSent()).allow(now or datetime.now(UTC)):
            return Decision([added], "pending", subscriber_id, confirmation_withheld=True)
        return Decision([added, _confirmation(live, subscriber_id, request, company_name, confirm_link)],
                        "pending", subscriber_id)
    confirmed = _event(SubscriberConfirmed, live.account_id, SubscriberConfirmedPayload(
        list_id=live.list_id, subscriber_id=subscriber_id, method="single_opt_in"),
        event_id=completion_id(live.account_id, subscriber_id, added.occurred_at, SubscriberConfirmed))
    return Decision([added, confirmed], "active", subscriber_id)


def _half_recorded(member: MemberState) -> bool:
    """A pending membership whose add was recorded without what completes it: a publish cut off mid-decision (the
    broker away: a batch's events are not published all or nothing) left its SubscriberAdded and lost the
    SubscriberConfirmed (single opt-in) or the ConfirmationRequested (double opt-in, or withheld by the daily
    caps). Not one that opted out before: only the person's own double opt-in brings them back."""
    return (member.status == "pending" and member.opted_out is None and not member.awaiting_confirmation
            and member.confirmation_requested_at is None)


def completion_id(account_id: str, subscriber_id: str, added_at: datetime, kind: type[Event]) -> uuid.UUID:
    """The event id of what completes the add made at `added_at` (its confirmation, or its confirmation email):
    the decision and any retry that issues it again give the same id, so consumers keep one of them. `added_at`
    is taken at the store's precision (milliseconds), as the membership keeps it."""
    at = added_at if added_at.tzinfo is not None else added_at.replace(tzinfo=UTC)
    millis = int(stored_time(at).timestamp() * 1000)
    return uuid.uuid5(uuid.NAMESPACE_URL, f"herald:{account_id}/{subscriber_id}/{millis}/{kind.__name__}")


def without_confirmation(decision: Decision) -> Decision:
    """The decision less its confirmation email, which the address had no share of the day left for (another
    process claimed it first: `claims.py`)."""
    return replace(decision, events=[e for e in decision.events if not isinstance(e, ConfirmationRequested)],
                   confirmation_withheld=True)


FormVerdict = Literal["accept", "cross_site", "no_token", "honeypot", "too_fast", "challenge"]
SILENT_VERDICTS = ("honeypot", "too_fast")  # answered as a success: a bot learns nothing from the answer
FORM_VALIDITY = timedelta(hours=12)  # a form served longer ago than this is reloaded
CLOCK_SKEW = timedelta(seconds=30)  # between the replicas that serve a form and take its post


def screen_form(*, cross_site: bool, served_at: datetime | None, now: datetime, honeypot: str,
                min_fill: timedelta | None, challenge_passed: bool | None) -> FormVerdict:
    """What a post to a hosted form gets before the list's rules are asked. Refused as forged: sent from
    another site's page, or without a token of this form served within FORM_VALIDITY (answered 403: reload the
    form). Screened out as a bot: the hidden honeypot field filled in, or the subscribe form sent sooner than
    `min_fill` after it was served (answered exactly as a success, nothing recorded, nothing mailed). Refused
    visibly: a challenge the list switched on and the post did not solve (`challenge_passed` None: no
    challenge). Forgery is checked first, so nobody learns from another site whether the rest would pass."""
    if cross_site:
        return "cross_site"
    if served_at is None or not -CLOCK_SKEW <= now - served_at <= FORM_VALIDITY:
        return "no_token"
    if honeypot:
        return "honeypot"
    if min_fill is not None and now - served_at < min_fill:
        return "too_fast"
    if challenge_passed is False:
        return "challenge"
    return "accept"


def needs_confirmation_history(lst: ListState | None, member: MemberState | None, address_suppressed: bool) -> bool:
    """Whether `subscribe` may send a confirmation, so the confirmations sent before must be read (a single
    opt-in list's new subscriber needs no read more)."""
    status = standing(member)
    return bool(lst is not None and (lst.opt_in == "double" or address_suppressed
                                     or status in ("pending", "unsubscribed", "suppressed")))


def _confirmation(live: ListState, subscriber_id: str, request: SubscribeRequest, company_name: str,
                  link: Callable[[], ConfirmLink], *, event_id: uuid.UUID | None = None) -> Event:
    made = link()
    return _event(ConfirmationRequested, live.account_id, ConfirmationRequestedPayload(
        list_id=live.list_id, subscriber_id=subscriber_id, email=request.email, greeting_name=request.first_name,
        list_name=live.name, company_name=company_name, confirm_url=made.url,
        expires_at=made.expires_at), event_id=event_id)


ConfirmOutcome = Literal["confirmed", "already_confirmed"]


def confirm(account_id: str, lst: ListState | None, member: MemberState | None,
            ip: str | None) -> tuple[list[Event], ConfirmOutcome]:
    """The person opened a valid confirmation link. `lst`: the membership's list; a deleted one, or one of a
    deleted account, takes no one (`takes_members`), so its links are dead like an erased membership's."""
    if member is None or member.status == "erased" or not takes_members(lst):
        raise LinkNoLongerValid("this confirmation link is no longer valid")
    if member.status == "active":
        return [], "already_confirmed"
    if member.status == "pending" or (member.status in ("suppressed", "unsubscribed")
                                      and member.awaiting_confirmation):
        return [_event(SubscriberConfirmed, account_id, SubscriberConfirmedPayload(
            list_id=member.list_id, subscriber_id=member.subscriber_id, method="double_opt_in", ip=ip))], "confirmed"
    raise LinkNoLongerValid("this confirmation link is no longer valid")


def unsubscribe(account_id: str, member: MemberState | None, source: UnsubscribeSource,
                campaign_id: str | None = None, message_id: str | None = None,
                cause: Event | None = None) -> list[Event]:
    """Idempotent: only a pending or active member produces an event."""
    if member is None or member.status not in ("pending", "active"):
        return []
    return [_event(SubscriberUnsubscribed, account_id, SubscriberUnsubscribedPayload(
        list_id=member.list_id, subscriber_id=member.subscriber_id, source=source, campaign_id=campaign_id,
        message_id=message_id), cause)]


def suppress(account_id: str, member: MemberState, already_suppressed: bool,
             reason: Literal["hard_bounce", "complaint"], cause: Event, message_id: str | None,
             campaign_id: str | None) -> list[Event]:
    """A hard bounce or a complaint suppresses the address for the whole account; a complaint also
    unsubscribes the person from the list the message went to."""
    events: list[Event] = []
    if not already_suppressed:
        events.append(_event(SubscriberSuppressed, account_id, SubscriberSuppressedPayload(
            subscriber_id=member.subscriber_id, email_sha256=member.email_sha256, reason=reason,
            message_id=message_id, campaign_id=campaign_id), cause))
    if reason == "complaint":
        events += unsubscribe(account_id, member, "complaint", campaign_id, message_id, cause)
    return events


def erase(account_id: str, members: list[MemberState],
          requested_by: Literal["subscriber", "account", "retention_policy"]) -> list[Event]:
    return [_event(SubscriberErased, account_id, SubscriberErasedPayload(
        subscriber_id=m.subscriber_id, list_id=m.list_id, email_sha256=m.email_sha256, requested_by=requested_by))
        for m in members if m.status != "erased"]


def remove_member(account_id: str, lst: ListState | None, member: MemberState | None) -> list[Event]:
    """The account removes one membership from its list (PRODUCT.md: an account over its tier is restricted
    "until it upgrades or removes subscribers"): that membership is erased (SubscriberErased, `requested_by:
    account`), the address's other memberships untouched. Every service already drops an erased membership: billing
    stops counting it, delivery's audience leaves it out. Erasure forgets the person, not their opt-out
    (`standing`), and the account's suppression of the address stays on the address: a member who unsubscribed
    or was suppressed cannot be added back by removing them first. A list not there (never created, deleted, or
    another account's) or a member not on it: 404. A membership already erased (removed before, or erased by the
    person's request): nothing to record, the removal is done (a retry after a 503 answers as the first did)."""
    if lst is None or lst.deleted:
        raise ListNotFound("no such list")
    if member is None or member.list_id != lst.list_id:
        raise SubscriberNotFound("no such subscriber on this list")
    return erase(account_id, [member], "account")


# Folding events into the read model: pure functions over plain documents. Applying the same event
# twice gives the same document, so a redelivery after a crash changes nothing.

Document = dict[str, Any]


def evolve_member(doc: Document | None, event: Event, *, address: Document | None = None) -> Document | None:
    """The subscriber (list membership) document after one event; the store keys it by account and
    subscriber id. A subscriber id is unique within its account only (a producer such as a CRM chooses it), so
    an event of another account never changes the document. `address`: the address's document
    (`evolve_address`), for a SubscriberAdded: a membership added after the account suppressed the address
    starts suppressed, so that another producer adding it under a new id or list cannot make it sendable; only
    the person's double opt-in does (as `decide` asks of the API and the forms)."""
    if doc is not None and doc.get("account_id") != event.account_id:
        return doc
    match event:
        case SubscriberAdded(payload=p):
            base = doc if doc is not None and doc["status"] != "erased" else {"subscriber_id": p.subscriber_id,
                                                                               "status": "pending"}
            new = {**base, "account_id": event.account_id, "list_id": p.list_id, "email": str(p.email),
                   "email_sha256": p.email_sha256, "first_name": p.first_name, "last_name": p.last_name,
                   "phone": p.phone, "custom_fields": p.custom_fields, "opt_in": p.opt_in,
                   "consent": p.consent.model_dump(mode="json"), "added_at": event.occurred_at}
            if doc is not None and doc["status"] in ("pending", "active"):
                # The same person added again (a CRM sending its contact once more): the opt-in's proof and when it
                # was made stay those of the add that made the membership; only the profile follows the event.
                new.update(consent=doc.get("consent", new["consent"]), added_at=doc.get("added_at", event.occurred_at))
            # An opt-out outlives a re-subscription nobody confirmed yet (anyone can post the hosted form with an
            # address) and an erasure of it: the customer may not add the person while it stands (`standing`).
            # Only the person's own double opt-in (SubscriberConfirmed) clears it.
            opted_out = "unsubscribed" if doc is not None and doc["status"] == "unsubscribed" else (
                doc or {}).get("opted_out")
            if opted_out:
                new["opted_out"] = opted_out
            if new["status"] == "unsubscribed":  # coming back after unsubscribing starts again as pending
                new["status"] = "pending"
            if new["status"] == "pending" and address is not None and address.get("suppressed_at") is not None:
                new.update(status="suppressed", suppressed_reason=address.get("suppressed_reason"),
                           suppressed_at=address["suppressed_at"])
            return new
        case ConfirmationRequested() if doc is not None:
            return {**doc, "awaiting_confirmation": True, "confirmation_requested_at": event.occurred_at}
        case SubscriberConfirmed(payload=p) if doc is not None and (
                (doc["status"] == "pending" and (p.method == "double_opt_in" or not doc.get("opted_out")))
                or (doc["status"] == "suppressed" and doc.get("awaiting_confirmation")
                    and p.method == "double_opt_in")):
            # An opt-out or a suppression is lifted by the person's own double opt-in only: another producer
            # (a CRM) re-adding them with a single opt-in leaves them pending or suppressed, as the API would
            # have refused them (`decide`: previously_unsubscribed, suppressed).
            confirmed = {**doc, "status": "active", "awaiting_confirmation": False,
                         "confirmed_at": event.occurred_at, "confirmation_method": p.method}
            if p.method == "double_opt_in":  # the person's own opt-in ends an earlier opt-out
                confirmed.pop("opted_out", None)
            return {**confirmed, "confirmation_ip": p.ip} if p.ip else confirmed  # the opt-in's proof
        case SubscriberUnsubscribed(payload=p) if doc is not None and doc["status"] in ("pending", "active"):
            return {**doc, "status": "unsubscribed", "awaiting_confirmation": False,
                    "unsubscribed_at": event.occurred_at, "unsubscribe_source": p.source,
                    "unsubscribe_campaign_id": p.campaign_id}
        case SubscriberSuppressed(payload=p) if doc is not None and doc["status"] != "erased":
            return {**doc, "status": "suppressed", "suppressed_reason": p.reason, "awaiting_confirmation": False,
                    "suppressed_at": event.occurred_at}
        case SubscriberErased(payload=p) if doc is not None:
            # Nothing personal stays: ids, the address hash (a suppression outlives erasure), when, and whether
            # the person had opted out (the customer may not add them again: `standing`).
            erased = {"subscriber_id": doc["subscriber_id"], "account_id": event.account_id,
                      "list_id": p.list_id or doc.get("list_id"),
                      "email_sha256": p.email_sha256, "status": "erased", "erased_at": event.occurred_at,
                      "erasure_requested_by": p.requested_by}
            opted_out = doc["status"] if doc["status"] in ("unsubscribed", "suppressed") else doc.get("opted_out")
            return {**erased, "opted_out": opted_out} if opted_out else erased
    return doc


def stored_time(at: datetime) -> datetime:
    """A time as MongoDB keeps it (milliseconds), so one read back compares equal to the one decided."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def address_hash(event: Event) -> str | None:
    """The address (by hash) whose document an event changes, if any."""
    if isinstance(event, SubscriberAdded | SubscriberSuppressed):
        return event.payload.email_sha256
    if isinstance(event, ConfirmationRequested):
        return email_sha256(str(event.payload.email))
    return None


def evolve_address(doc: Document | None, event: Event) -> Document | None:
    """Per account and address (by hash): which memberships it has, so a suppression finds them by _id, the
    last confirmations sent to it, and whether the account suppressed it. The store keys the document."""
    if isinstance(event, SubscriberAdded):
        p = event.payload
        members = list(doc["members"]) if doc else []
        if p.subscriber_id not in members:
            members.append(p.subscriber_id)
        return {**(doc or {}), "account_id": event.account_id, "email_sha256": p.email_sha256, "members": members}
    if isinstance(event, SubscriberSuppressed):
        # The account suppressed the address: memberships added later start suppressed (`evolve_member`). Never
        # lifted here; the first suppression's reason and time are kept.
        p_suppressed = event.payload
        base = doc or {"account_id": event.account_id, "email_sha256": p_suppressed.email_sha256, "members": []}
        if base.get("suppressed_at") is not None:
            return doc
        return {**base, "suppressed_at": event.occurred_at, "suppressed_reason": p_suppressed.reason}
    if isinstance(event, ConfirmationRequested) and doc is not None:
        # The last few confirmations to this address, for the daily cap across the account's lists.
        # The store keeps milliseconds: a redelivered copy is recognised at that precision, and the newest few are
        # kept whatever order copies arrive in.
        at = stored_time(event.occurred_at)
        known = set(doc.get("confirmations", ()))
        if at in known:
            return doc  # a redelivery
        return {**doc, "confirmations": sorted(known | {at})[-CONFIRMATIONS_PER_ADDRESS_PER_DAY:]}
    return doc


# The person's activity (PRODUCT.md, "Data protection": collected are the IP, country/city, device, browser and the
# times of opens, clicks and bounces; the GDPR export gives them with the messages sent, and the deferrals, whose
# receiving server's reply delivery keeps about the person). Folded from delivery's events into the `activity` read
# model (`activity.py`), one entry per event.

ActivityType = Literal["sent", "deferred", "bounced", "opened", "clicked", "suppressed"]
ACTIVITY_TYPES: dict[type[Event], ActivityType] = {
    MessageSent: "sent", MessageDeferred: "deferred", MessageBounced: "bounced", MessageOpened: "opened",
    LinkClicked: "clicked", ComplaintReceived: "suppressed"}
# Messages to the subscriber's own mailbox; an account notice names a member but goes to the customer, and a test
# send goes to addresses the customer typed.
ACTIVITY_KINDS = ("campaign", "confirmation")
# What a `suppressed` entry keeps: the membership, when, and the kind of message; not which message, nor anything
# of the cause (see `customer_activity`).
SUPPRESSED_FIELDS = ("account_id", "subscriber_id", "type", "at", "kind", "list_id")


def activity_entry(event: Event) -> Document | None:
    """What the export keeps of one delivery event about a subscriber's message: its type, time, the message, and
    what the event collected (a deferral's code, the receiving server's reply as delivery published it, addresses
    replaced, and which attempt it was; a bounce's class, diagnostic and source; an open's or click's client: IP,
    user agent, device, browser, country, city; a click's link); None when it is not the person's activity: another
    event type, a message of another kind, or one naming no subscriber. A hard bounce and a complaint, the two
    events that suppress the address, are both one neutral `suppressed` entry (`customer_activity`). Fields the
    event left empty are left out."""
    kind = ACTIVITY_TYPES.get(type(event))
    ref = getattr(event, "payload", None)
    if kind is None or not isinstance(ref, MessageRef) or ref.subscriber_id is None or ref.kind not in ACTIVITY_KINDS:
        return None
    entry: Document = {"account_id": event.account_id, "subscriber_id": ref.subscriber_id, "type": kind,
                       "at": event.occurred_at, "kind": ref.kind, "message_id": ref.message_id,
                       "campaign_id": ref.campaign_id, "list_id": ref.list_id}
    match event:
        case MessageDeferred(payload=p):
            entry |= {"smtp_code": p.smtp_code, "enhanced_status_code": p.enhanced_status_code,
                      "diagnostic": p.diagnostic, "attempt": p.attempt}
        case MessageBounced(payload=p):
            entry |= {"bounce_class": p.bounce_class, "diagnostic": p.diagnostic, "bounce_source": p.source,
                      "smtp_code": p.smtp_code, "enhanced_status_code": p.enhanced_status_code,
                      "reporting_mta": p.reporting_mta}
        case MessageOpened(payload=p) | LinkClicked(payload=p):
            entry |= {**p.client.model_dump(), "automated": p.automated, "automated_reason": p.automated_reason}
            if isinstance(p, LinkClickedPayload):
                entry |= {"url": str(p.url), "link_index": p.link_index}
    return customer_activity({k: v for k, v in entry.items() if v is not None})


def customer_activity(entry: Document) -> Document:
    """An activity entry as the customer may read it (the export answers the customer). Who complained is never
    disclosed to the customer (PRODUCT.md, "Sending suspension"), and a complaint and a hard bounce both suppress
    the address: were the hard bounce shown as such (class, diagnostic), a suppressed member without one would be
    a complainer. So both read as one `suppressed` entry of the same fields (SUPPRESSED_FIELDS): not even the
    message, as an open of the very message that suppressed someone would tell a complaint. Also applied when
    the export reads entries, for hard bounces an earlier version stored with their class."""
    if entry["type"] == "suppressed" or (entry["type"] == "bounced" and entry.get("bounce_class") == "hard"):
        return {k: v for k, v in {**entry, "type": "suppressed"}.items() if k in SUPPRESSED_FIELDS}
    return entry


def rejoined_at(doc: Document) -> datetime | None:
    """When the person of a membership joined again after an erasure, if they did: its confirmation. An erasure
    keeps no confirmation, so one the membership holds was made since; a re-add still pending is not a return
    (anyone can post the hosted form with an address, and the person never confirmed)."""
    if doc["status"] == "erased":
        return None
    confirmed: datetime | None = doc.get("confirmed_at")
    return confirmed


def activity_kept(at: datetime, erased_at: datetime | None, rejoined_at: datetime | None) -> bool:
    """Whether activity at `at` of a membership may be kept. Erasure deletes what the membership had and forgets
    the person for good (a message opened after it must not bring an IP back), unless the person joined the list
    again later (a fresh confirmation keeps the subscriber id): what happens from then on is theirs anew.
    `erased_at`: the last erasure of the membership, if any; `rejoined_at`: when it was confirmed since then
    (`rejoined_at(doc)`)."""
    if erased_at is None:
        return True
    return rejoined_at is not None and rejoined_at > erased_at and at >= rejoined_at
