"""Campaigns' rules, pure: what a draft is, who may change it and how, and which events each request records.

PRODUCT.md, "Every message": a campaign goes to one list of the account (optionally a segment of it, by the
list's custom fields), from the account's sender, with a text part (derived from the HTML when not given).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from inscriptis import get_text

from herald_shared.contract import Event
from herald_shared.contract.campaigns import (
    CampaignContent,
    CampaignCreated,
    CampaignCreatedPayload,
    CampaignDeleted,
    CampaignDeletedPayload,
    CampaignEdited,
    CampaignEditedPayload,
    Segment,
)
from herald_shared.contract.delivery import ComplaintReceived, LinkClicked, MessageBounced, MessageOpened, MessageSent
from herald_shared.contract.subscriptions import FieldValue, SubscriberUnsubscribed
from herald_shared.rules import RuleRefused

PRODUCER = "campaigns"
Status = Literal["draft", "deleted"]


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


@dataclass(frozen=True)
class CampaignState:
    account_id: str
    campaign_id: str
    status: Status
    name: str
    list_id: str
    segment: dict[str, FieldValue]
    content: CampaignContent


def new_campaign_id() -> str:
    return "c" + uuid.uuid4().hex[:12]


def text_of(html_body: str) -> str:
    """The text part of an HTML body (inscriptis: layout-aware, tables and lists kept readable)."""
    return get_text(html_body).strip() or " "


def _content(draft: Draft) -> CampaignContent:
    text = draft.text_body if draft.text_body else text_of(draft.html_body or "")
    return CampaignContent(subject=draft.subject, from_name=draft.from_name, from_email=draft.from_email,
                           reply_to=draft.reply_to, html_body=draft.html_body, text_body=text)


def _checked(draft: Draft, lst: ListInfo | None) -> CampaignContent:
    if lst is None or lst.deleted:
        raise UnknownList(f"list {draft.list_id!r} is not a list of this account")
    unknown = sorted(set(draft.segment) - set(lst.custom_fields))
    if unknown:
        raise UnknownField(f"list {draft.list_id!r} has no custom field {', '.join(unknown)}")
    return _content(draft)


def _event(cls: type[Event], account_id: str, payload: object) -> Event:
    return cls(account_id=account_id, producer=PRODUCER, payload=payload)  # type: ignore[call-arg]


def create(account_id: str, campaign_id: str, draft: Draft, lst: ListInfo | None,
           existing: CampaignState | None) -> list[Event]:
    if existing is not None:
        raise CampaignExists(f"campaign {campaign_id!r} already exists")
    content = _checked(draft, lst)
    return [_event(CampaignCreated, account_id, CampaignCreatedPayload(
        campaign_id=campaign_id, name=draft.name, list_id=draft.list_id,
        segment=Segment(field_equals=draft.segment), content=content))]


def _draft_of(current: CampaignState | None, campaign_id: str) -> CampaignState:
    if current is None or current.status == "deleted":
        raise CampaignNotFound(f"no campaign {campaign_id!r}")
    return current


def edit(current: CampaignState | None, campaign_id: str, draft: Draft, lst: ListInfo | None) -> list[Event]:
    state = _draft_of(current, campaign_id)
    content = _checked(draft, lst)
    if (state.name, state.list_id, state.segment, state.content) == (draft.name, draft.list_id, draft.segment,
                                                                     content):
        return []  # the same edit again
    return [_event(CampaignEdited, state.account_id, CampaignEditedPayload(
        campaign_id=campaign_id, name=draft.name, list_id=draft.list_id,
        segment=Segment(field_equals=draft.segment), content=content))]


def duplicate(current: CampaignState | None, campaign_id: str, new_id: str) -> list[Event]:
    state = _draft_of(current, campaign_id)
    name = f"{state.name} (copy)"[:200]
    return [_event(CampaignCreated, state.account_id, CampaignCreatedPayload(
        campaign_id=new_id, name=name, list_id=state.list_id, segment=Segment(field_equals=state.segment),
        content=state.content))]


def delete(current: CampaignState | None, campaign_id: str) -> list[Event]:
    state = _draft_of(current, campaign_id)
    return [_event(CampaignDeleted, state.account_id, CampaignDeletedPayload(campaign_id=campaign_id))]


def evolve(doc: dict[str, object] | None, event: Event, at: datetime) -> dict[str, object] | None:
    """The campaign document after one event (the read model's fold)."""
    match event:
        case CampaignCreated(payload=p) if doc is None:
            return {"account_id": event.account_id, "campaign_id": p.campaign_id, "status": "draft",
                    "name": p.name, "list_id": p.list_id, "segment": dict(p.segment.field_equals),
                    "content": p.content.model_dump(mode="json"), "created_at": at, "updated_at": at}
        case CampaignEdited(payload=p) if doc is not None and doc["status"] == "draft":
            return {**doc, "name": p.name, "list_id": p.list_id, "segment": dict(p.segment.field_equals),
                    "content": p.content.model_dump(mode="json"), "updated_at": at}
        case CampaignDeleted() if doc is not None:
            return {**doc, "status": "deleted", "updated_at": at}
    return doc


# Reports (issue 14, "Reports"): what each delivery or subscriptions event adds to its campaign's counts.

# Unsubscribes the recipient made (as compliance counts them): not the customer's own through the API, nor
# those a complaint caused (counted as the complaint).
RECIPIENT_UNSUBSCRIBES = frozenset({"one_click", "unsubscribe_page", "preference_page", "mailto"})
REPORT_EVENTS = (MessageSent, MessageBounced, ComplaintReceived, MessageOpened, LinkClicked, SubscriberUnsubscribed)


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
    time or given up after retries), the denominator of the rates, as compliance has it; `failed_later` are
    accepted messages a report later said failed for good."""
    match event:
        case MessageSent():
            return {"sent": 1, "accepted": 1}
        case MessageBounced(payload=p):
            counts = {f"bounced_{p.bounce_class}": 1}
            if p.source in ("smtp_reply", "retry_expired"):
                counts["sent"] = 1
            elif p.bounce_class != "soft":
                counts["failed_later"] = 1
            return counts
        case ComplaintReceived(payload=p) if p.feedback_type != "not-spam":
            return {"complaints": 1}
        case MessageOpened():
            return {"opens_total": 1}
        case LinkClicked(payload=p):
            return {"clicks_total": 1, f"clicks_link_{p.link_index}": 1}
        case SubscriberUnsubscribed():
            return {"unsubscribes": 1}
    return {}


def engagement(event: Event) -> tuple[str, str] | None:
    """(counter, marker) of a first open or click of a message: counted once per message, however often."""
    if isinstance(event, MessageOpened):
        return "opens_unique", f"o:{event.payload.message_id}"
    if isinstance(event, LinkClicked):
        return "clicks_unique", f"c:{event.payload.message_id}"
    return None


BOUNCE_CLASSES = ("hard", "soft", "block", "undetermined")


def report(counts: dict[str, int]) -> dict[str, object]:
    """The report of a campaign from its counts: never who complained, only how many."""
    sent = counts.get("sent", 0)
    bounces = {c: counts.get(f"bounced_{c}", 0) for c in BOUNCE_CLASSES}
    per_link = sorted((int(k.removeprefix("clicks_link_")), v) for k, v in counts.items()
                      if k.startswith("clicks_link_"))

    def rate(n: int) -> float | None:
        return n / sent if sent else None

    return {
        "sent": sent, "delivered": counts.get("accepted", 0) - counts.get("failed_later", 0), "bounces": bounces,
        "opens": {"unique": counts.get("opens_unique", 0), "total": counts.get("opens_total", 0)},
        "clicks": {"unique": counts.get("clicks_unique", 0), "total": counts.get("clicks_total", 0),
                   "per_link": [{"link_index": i, "clicks": n} for i, n in per_link]},
        "complaints": counts.get("complaints", 0), "unsubscribes": counts.get("unsubscribes", 0),
        "rates": {"hard_bounce_rate": rate(bounces["hard"]), "block_rate": rate(bounces["block"]),
                  "abuse_rate": rate(counts.get("complaints", 0)),
                  "unsubscribe_rate": rate(counts.get("unsubscribes", 0))}}
