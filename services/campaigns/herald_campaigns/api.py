"""The campaigns HTTP API (`/v1`): parse, authorise by API key, call a handler, map errors to RFC 9457."""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and `Account` is local.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, Field, StringConstraints

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.contract.envelope import Identifier
from herald_shared.contract.subscriptions import FieldName, FieldValue
from herald_shared.http import api_key_account, problem, problems
from herald_shared.request_fields import NO_NUL, Body, EmailAddress, FieldValueIn, NameText, Out

from .domain import Draft, report
from .handlers import CampaignsService

Subject = Annotated[str, StringConstraints(min_length=1, max_length=998, pattern=NO_NUL)]
HtmlBody = Annotated[str, StringConstraints(min_length=1, max_length=2_000_000, pattern=NO_NUL)]
TextBody = Annotated[str, StringConstraints(min_length=1, max_length=2_000_000, pattern=NO_NUL)]


class DraftIn(Body):
    """A campaign's name, target and content (what an edit replaces whole)."""

    name: NameText
    list_id: Identifier = Field(description="The list it goes to: one of the account's lists.")
    segment: dict[FieldName, FieldValueIn] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False},
        description="Only active members whose custom fields equal these (all must match); a field the list does "
                    "not declare is refused with 409.")
    subject: Subject
    from_name: NameText
    from_email: EmailAddress
    reply_to: EmailAddress | None = None
    html_body: HtmlBody
    text_body: TextBody | None = Field(default=None, description="Derived from the HTML when absent.")

    def draft(self) -> Draft:
        return Draft(name=self.name, list_id=self.list_id, subject=self.subject, from_name=self.from_name,
                     from_email=self.from_email, reply_to=self.reply_to, html_body=self.html_body,
                     text_body=self.text_body, segment=dict(self.segment))


class CampaignIn(DraftIn):
    campaign_id: Identifier | None = Field(default=None, description="Chosen by the server when absent.")


class CampaignOut(Out):
    campaign_id: Identifier
    status: str = Field(description="draft (today's only state; review, schedule and sending come next).")
    name: str
    list_id: Identifier
    segment: dict[str, FieldValue]
    content: CampaignContent
    created_at: AwareDatetime
    updated_at: AwareDatetime


class CampaignsPage(Out):
    items: list[CampaignOut]
    next_cursor: Identifier | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class Bounces(Out):
    hard: int
    soft: int
    block: int
    undetermined: int


class Engagement(Out):
    unique: int = Field(description="Messages opened (clicked) at least once.")
    total: int


class LinkClicks(Out):
    link_index: int
    clicks: int


class Clicks(Engagement):
    per_link: list[LinkClicks]


class ReportRates(Out):
    hard_bounce_rate: float | None
    block_rate: float | None
    abuse_rate: float | None
    unsubscribe_rate: float | None


class ReportOut(Out):
    """How a campaign went. Complaints are a count: who complained is never disclosed (PRODUCT.md)."""

    campaign_id: Identifier
    status: str
    sent: int = Field(description="Handed to a receiving server: accepted, or refused at SMTP time.")
    delivered: int = Field(description="Accepted, less those a report later said failed for good.")
    bounces: Bounces = Field(description="By class: hard, soft, block (refused by policy), undetermined.")
    opens: Engagement
    clicks: Clicks
    complaints: int
    unsubscribes: int
    rates: ReportRates = Field(description="Of `sent`, as compliance computes them; null before any send.")


def campaign_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"campaign_id": doc["campaign_id"], "status": doc["status"], "name": doc["name"],
            "list_id": doc["list_id"], "segment": doc.get("segment", {}), "content": doc["content"],
            "created_at": doc["created_at"].isoformat(), "updated_at": doc["updated_at"].isoformat()}


def answers(status: int, model: type[Out], description: str) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": description}}


def build_api(service: CampaignsService, apikeys: ApiKeyProjection) -> APIRouter:
    router = APIRouter(prefix="/v1", responses=problems(401))
    Account = Annotated[str, Depends(api_key_account(apikeys))]

    @router.post("/campaigns", status_code=201, response_model=None,
                 responses={**answers(201, CampaignOut, "The draft."), **problems(409, 422, 503)})
    async def create(body: CampaignIn, account_id: Account) -> JSONResponse:
        """A draft for one of the account's lists; 409 when the list or a segment field is not the account's."""
        doc = await service.create(account_id, body.campaign_id, body.draft())
        return JSONResponse(campaign_out(doc), status_code=201)

    @router.get("/campaigns", response_model=None,
                responses={**answers(200, CampaignsPage, "A page of the account's campaigns, by id."),
                           **problems(422)})
    async def campaigns(account_id: Account, cursor: Identifier | None = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        docs, last = await service.store.campaigns(account_id, cursor, limit)
        return {"items": [campaign_out(d) for d in docs], "next_cursor": last}

    @router.get("/campaigns/{campaign_id}", response_model=None,
                responses={**answers(200, CampaignOut, "The campaign."), **problems(404, 422)})
    async def campaign(campaign_id: Identifier, account_id: Account) -> dict[str, Any]:
        doc = await service.store.campaign(account_id, campaign_id)
        if doc is None:
            return problem(404, "campaign_not_found", f"no campaign {campaign_id!r}")  # type: ignore[return-value]
        return campaign_out(doc)

    @router.get("/campaigns/{campaign_id}/report", response_model=None,
                responses={**answers(200, ReportOut, "The campaign's counts and rates."), **problems(404, 422)})
    async def campaign_report(campaign_id: Identifier, account_id: Account) -> dict[str, Any]:
        """Counted from delivery's and subscriptions' events as they arrive, exact under redelivery."""
        doc = await service.store.campaign(account_id, campaign_id)
        if doc is None:
            return problem(404, "campaign_not_found", f"no campaign {campaign_id!r}")  # type: ignore[return-value]
        counts = await service.store.report_counts(account_id, campaign_id)
        return {"campaign_id": campaign_id, "status": doc["status"], **report(counts)}

    @router.put("/campaigns/{campaign_id}", response_model=None,
                responses={**answers(200, CampaignOut, "The draft as edited."), **problems(404, 409, 422, 503)})
    async def edit(campaign_id: Identifier, body: DraftIn, account_id: Account) -> dict[str, Any]:
        """Replace the draft's name, target and content."""
        return campaign_out(await service.edit(account_id, campaign_id, body.draft()))

    @router.post("/campaigns/{campaign_id}/duplicate", status_code=201, response_model=None,
                 responses={**answers(201, CampaignOut, "The copy, a new draft."), **problems(404, 422, 503)})
    async def duplicate(campaign_id: Identifier, account_id: Account) -> JSONResponse:
        return JSONResponse(campaign_out(await service.duplicate(account_id, campaign_id)), status_code=201)

    @router.delete("/campaigns/{campaign_id}", status_code=204, responses=problems(404, 422, 503))
    async def delete(campaign_id: Identifier, account_id: Account) -> Response:
        await service.delete(account_id, campaign_id)
        return Response(status_code=204)

    return router
