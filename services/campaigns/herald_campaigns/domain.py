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
from herald_shared.contract.subscriptions import FieldValue
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
