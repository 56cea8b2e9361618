"""The campaigns HTTP API (`/v1`): parse, authorise by API key, call a handler, map errors to RFC 9457."""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and `Account` is local.
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, Field, StringConstraints

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.campaign_links import MAX_TRACKED_LINKS
from herald_shared.contract.campaigns import CampaignContent, ReturnReason, ScreeningMatch
from herald_shared.contract.envelope import Identifier
from herald_shared.contract.subscriptions import FieldName, FieldValue
from herald_shared.http import PROBLEM_STATUSES, Problem, RefusedKeys, answers, api_key_account, problem, problems
from herald_shared.request_fields import (
    NO_NUL,
    Body,
    EmailAddress,
    FieldValueIn,
    LocalOrAwareTime,
    NameText,
    Out,
    Text,
)
from herald_shared.staff import StaffTokens, staff_member

from .domain import (
    MAX_EVENT_BYTES,
    SCHEDULE_HORIZON,
    STATUSES,
    CampaignTooLarge,
    DnsUnavailable,
    Draft,
    TestRecipientsRefused,
    TestSendsExhausted,
    TooManyLinks,
    VerificationFailed,
    display_state,
    dkim_record,
    report,
    verification_record,
)
from .handlers import CampaignsService

Subject = Annotated[str, StringConstraints(min_length=1, max_length=998, pattern=NO_NUL)]
Preheader = Annotated[str, StringConstraints(max_length=255, pattern=NO_NUL)]
TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$")]
StatusName = Literal[STATUSES]  # type: ignore[valid-type]
Values = Annotated[dict[FieldName, FieldValueIn], Field(json_schema_extra={"additionalProperties": False})]

# A campaign's content travels whole in its events, none larger than `MAX_EVENT_BYTES` (1,000,000 bytes) encoded,
# so no body can be longer in characters; what fits of both bodies together is checked on the event itself (413
# `campaign_too_large`). Its routes take 8 MiB of JSON: a request whose content fits may still write every
# character as an escape (`\u0061`: 6 bytes for one). Other routes take api_app's default (1 MiB).
LARGER_BODIES = {r"/v1/campaigns(/.*)?": 8 << 20}
_BODY_LIMIT = (f"At most {MAX_EVENT_BYTES:,} characters; html_body and text_body (derived from the HTML when "
               f"absent) and the rest of the campaign must fit in one event of {MAX_EVENT_BYTES:,} bytes, as JSON "
               "in UTF-8 (an ASCII character 1 byte, others 2 to 4, a quote or a line break 2): else 413 "
               "campaign_too_large, with the sizes.")

HtmlBody = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_BYTES, pattern=NO_NUL),
                     Field(description=_BODY_LIMIT)]
TextBody = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_BYTES, pattern=NO_NUL)]


class DraftIn(Body):
    """A campaign's name, target and content (what an edit replaces whole)."""

    name: NameText
    list_id: Identifier = Field(description="The list it goes to: one of the account's lists.")
    segment: dict[FieldName, FieldValueIn] = Field(
        default_factory=dict, json_schema_extra={"additionalProperties": False},
        description="Only active members whose custom fields equal these (all must match); a field the list does "
                    "not declare is refused with 409.")
    subject: Subject
    preheader: Preheader | None = Field(default=None, description="The preview line inboxes show after the "
                                                                  "subject.")
    from_name: NameText
    from_email: EmailAddress
    reply_to: EmailAddress | None = None
    html_body: HtmlBody
    text_body: TextBody | None = Field(default=None, description="Derived from the HTML when absent. " + _BODY_LIMIT)

    def draft(self) -> Draft:
        return Draft(name=self.name, list_id=self.list_id, subject=self.subject, from_name=self.from_name,
                     from_email=self.from_email, reply_to=self.reply_to, html_body=self.html_body,
                     text_body=self.text_body, segment=dict(self.segment), preheader=self.preheader)


class CampaignIn(DraftIn):
    campaign_id: Identifier | None = Field(default=None, description="Chosen by the server when absent.")


class Returned(Out):
    reason: ReturnReason = Field(description="sender_unverified: its From domain is no verified one any more; "
                                             "content_too_large: a draft saved before the size limit, too large to "
                                             "queue (the detail says by how many bytes); content_refused / "
                                             "too_many_links: scheduled before the link rules, it breaks one "
                                             "(the detail says which links); list_deleted: its list was deleted "
                                             "after the submission.")
    detail: str
    at: AwareDatetime


class CampaignOut(Out):
    campaign_id: Identifier
    status: StatusName = Field(description=(
        "draft: being written (edit, test, submit or delete it). in_review: submitted, waiting for staff "
        "(approved: scheduled; rejected: rejected); unschedule it to edit it. scheduled: waiting for its send "
        "time; unschedule it to edit or reschedule it. queued: handed to delivery, being sent; only cancelled "
        "from here. done: delivery finished with every message (the report has the counts). rejected: staff "
        "refused it (`rejection`); edit it into a draft again. cancelled: stopped for good (duplicate it to "
        "send it anyway). deleted: a deleted draft (never shown: 404). A scheduled campaign that cannot be "
        "queued at its time (its list deleted, its From at no verified sending domain, too large, a link rule "
        "broken) goes back to draft (`returned`)."))
    name: str
    list_id: Identifier
    segment: dict[str, FieldValue]
    content: CampaignContent
    send_at: AwareDatetime | None = Field(default=None, description="When it goes (UTC); null: when submitted "
                                                                    "or approved.")
    time_zone: str | None = None
    review_reasons: list[str] = Field(default_factory=list, description="Why staff review it: "
                                      "account_not_approved, trial, flagged.")
    screening: list[ScreeningMatch] = Field(default_factory=list, description="What content screening matched.")
    rejection: list[str] | None = Field(default=None, description="Staff's reasons, when rejected.")
    review_note: str | None = Field(default=None, description="Staff's note with their approval, if they wrote "
                                                              "one (null until approved, and after a new "
                                                              "submission).")
    returned: Returned | None = Field(default=None, description="Why it went back to draft instead of being "
                                                                "queued at its time (null since it was submitted "
                                                                "again).")
    created_at: AwareDatetime
    updated_at: AwareDatetime


class SubmitIn(Body):
    send_at: LocalOrAwareTime | None = Field(
        default=None, description="When to send: a local time in `time_zone` (2026-12-24T09:00:00; a time "
                                  "the zone skips when clocks go forward is refused, one it has twice is the "
                                  "first), or a time with an offset and no `time_zone` (both: 422); now when "
                                  f"absent. At most {SCHEDULE_HORIZON.days} days ahead (422 `invalid_schedule`).")
    time_zone: TimeZone | None = Field(default=None, description="An IANA zone, e.g. Europe/Riga, of a local "
                                                                 "`send_at` (UTC when absent).")


class CancelIn(Body):
    reason: Text | None = None


class UnscheduleIn(Body):
    reason: Text | None = Field(default=None, description="Why, for the campaign's record (CampaignUnscheduled).")


class PreviewIn(Body):
    values: Values | None = Field(default=None, description="A member's fields (e.g. read from the members "
                                                            "API); a sample member's when absent.")


class PreviewOut(Out):
    subject: str
    preheader: str | None
    html_body: str | None
    text_body: str | None


class TestIn(Body):
    recipients: list[EmailAddress] = Field(
        min_length=1, max_length=5,
        description="While staff review the account (not approved yet, or on trial), or when screening flags the "
                    "content, only its registered address and addresses at a sending domain it verified (or a "
                    "subdomain of one); otherwise anyone once approved on a paid plan.")
    values: Values | None = Field(default=None, description="Merge values; a sample member's when absent.")


class TestRefused(Problem):
    """A test's 422: what any route's 422 holds, and for `test_recipient_not_allowed` the addresses refused."""

    refused: list[str] | None = Field(
        default=None, description="test_recipient_not_allowed: the addresses that are not the account's own (while "
                                  "staff review it, a test goes only to its registered address and its verified "
                                  "domains); test_recipient_opted_out: the addresses that asked for no more tests "
                                  "of the account.")


class LinksRefused(Problem):
    """A 422: what any problem holds, and for `too_many_links` the count and the limit."""

    links: int | None = Field(default=None, description="too_many_links: the tracked links of html_body.")
    limit: int | None = Field(default=None, description=f"too_many_links: the most a campaign may hold "
                                                        f"({MAX_TRACKED_LINKS}).")


LINKS_REFUSED: dict[int | str, dict[str, Any]] = {422: {"model": LinksRefused, "description": (
    PROBLEM_STATUSES[422] + " Or `content_refused` naming a link whose scheme or host a merge tag or template code "
    f"writes; or `too_many_links`: html_body holds more than {MAX_TRACKED_LINKS} tracked links (`links`, `limit`).")}}


async def too_many_links(_: Request, exc: Exception) -> JSONResponse:
    """The app's handler of TooManyLinks: its problem document with the count and the limit."""
    assert isinstance(exc, TooManyLinks)
    return problem(exc.http_status, exc.code, exc.detail, links=exc.links, limit=exc.limit,
                   errors=[{"location": where, "message": message} for where, message in exc.errors or ()])


class TooLarge(Problem):
    """A 413 `campaign_too_large`: what any problem holds, and the sizes."""

    event: str = Field(description="The event that would be too large: CampaignCreated, CampaignEdited, "
                                   "CampaignQueued or CampaignTestRequested.")
    encoded_bytes: int = Field(description="Its size, encoded (JSON in UTF-8).")
    limit_bytes: int = Field(description=f"The most an event may hold: {MAX_EVENT_BYTES:,} bytes.")


TOO_LARGE: dict[int | str, dict[str, Any]] = {413: {"model": TooLarge, "description": (
    "The request body is larger than this route takes (`body_too_large`), or `campaign_too_large`: an event of "
    f"the campaign (its draft, its CampaignQueued, a test with its values) would be over {MAX_EVENT_BYTES:,} bytes "
    "encoded, more than Kafka carries; `encoded_bytes` and `limit_bytes` say by how much. Nothing was recorded.")}}


async def too_large(_: Request, exc: Exception) -> JSONResponse:
    """The app's handler of CampaignTooLarge: its problem document with the sizes (api_app's handler of its base
    class, RuleRefused, has none)."""
    assert isinstance(exc, CampaignTooLarge)
    extra: dict[str, Any] = {"event": exc.event, "encoded_bytes": exc.encoded_bytes, "limit_bytes": exc.limit_bytes}
    if exc.errors:
        extra["errors"] = [{"location": where, "message": message} for where, message in exc.errors]
    return problem(exc.http_status, exc.code, exc.detail, **extra)


class TestOut(Out):
    test_id: Identifier
    recipients: list[str]


class StaffAccess(Out):
    campaign_id: Identifier
    staff: str
    action: str
    at: AwareDatetime


class StaffAccessPage(Out):
    items: list[StaffAccess]


class CampaignsPage(Out):
    items: list[CampaignOut]
    next_cursor: Identifier | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class Bounces(Out):
    hard: int
    soft: int
    block: int
    undetermined: int


class Engagement(Out):
    unique: int = Field(description="Messages opened (clicked) at least once by their reader.")
    total: int = Field(description="Opens (clicks) by readers, however often.")
    automated: int = Field(description="Opens (clicks) made by mail scanners, not readers (the event is marked "
                                       "`automated`): counted here, in none of the others.")
    by_country: dict[str, int] = Field(description=(
        "`unique` by where the reader was at the message's first open (click): ISO 3166 country code (from "
        "delivery's GeoIP database), `unknown` where it could not be placed; most first. Counted since "
        "2026-12-06: earlier first opens (clicks) are in `unique` only."))
    by_device: dict[str, int] = Field(description=(
        "`unique` by the reader's device at the first open (click): desktop, mobile, tablet, bot, other, or "
        "unknown; most first. Counted since 2026-12-06, as `by_country`."))


class LinkClicks(Out):
    link_index: int = Field(description="The link's place among the campaign's tracked links (0: the first "
                                        "http(s) link of the HTML part); a click in the text part counts for "
                                        "the same link.")
    url: str | None = Field(description="The link's URL as written in the campaign, before tracking (null "
                                        "only for an index the campaign's content does not hold).")
    clicks: int


class Clicks(Engagement):
    per_link: list[LinkClicks]


class ReportRates(Out):
    hard_bounce_rate: float | None
    block_rate: float | None
    abuse_rate: float | None
    unsubscribe_rate: float | None


ReportStatus = Literal[(*STATUSES, "suspended", "held", "sending")]  # type: ignore[valid-type]


class ReportOut(Out):
    """How a campaign went. Complaints are a count: who complained is never disclosed (PRODUCT.md). Once
    delivery finished, recipients = sent + skipped + failed + cancelled + the bounces never handed to a server
    (`local`), and delivered + the messages a later report said failed = sent - the bounces refused when sent
    or given up (CampaignCompleted's `sent` is `delivered` plus those failed later)."""

    campaign_id: Identifier
    status: ReportStatus = Field(description="The campaign's status (see the campaign's); while queued: "
                                             "suspended (the account is), held (delivery holds it behind a closed "
                                             "gate), sending (messages went out), or queued (none yet).")
    recipients: int | None = Field(description="Messages the campaign was expanded into (its audience when "
                                               "queued); null until delivery finished with it.")
    sent: int = Field(description="Handed to a receiving server: accepted, or refused at SMTP time, or given up "
                                  "after retries.")
    delivered: int = Field(description="Accepted, less those a report later said failed for good (each message "
                                       "once, however many reports say so).")
    deferred: int = Field(description="Messages being retried now: a receiving server asked to try again later "
                                      "and they have not been accepted, refused or given up yet (each message "
                                      "once, however many tries); 0 once delivery finished.")
    skipped: int | None = Field(description="Not sent: the member left the audience (unsubscribed, suppressed, "
                                            "erased, the list deleted) after the campaign was queued; null until "
                                            "delivery finished.")
    failed: int | None = Field(description="Not sent: the message could not be made (a member's values broke a "
                                           "render limit); null until delivery finished.")
    cancelled: int | None = Field(description="Not sent: the campaign was cancelled first (held or waiting "
                                              "messages included); null until delivery finished.")
    bounces: Bounces = Field(description="Messages by class of bounce: hard, soft, block (refused by policy), "
                                         "undetermined; refused when sent or given up, and those a report (DSN) "
                                         "said failed later, each message once, in the class of its first "
                                         "report.")
    opens: Engagement
    clicks: Clicks
    complaints: int
    unsubscribes: int
    rates: ReportRates = Field(description="Of `sent`, as compliance computes them; null before any send.")


# A domain as a request names it: any case, international labels in Unicode or as A-labels, a trailing dot or not.
# What IDNA and DNS accept beyond this (label lengths, hyphens, a top-level domain) is checked by the service: 422.
# No white space, spelt out: `\s` is not the same class in pydantic's regex engine, Python's and a JSON Schema
# client's (U+0085 and U+001C-U+001F are white space to the first two, U+FEFF to the last), and the OpenAPI
# document must refuse what the service refuses.
DOMAIN_PATTERN = (r"^[^\t\n\x0b\x0c\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
                  r"@/\\\x00]+$")
DomainText = Annotated[str, StringConstraints(min_length=3, max_length=254, pattern=DOMAIN_PATTERN)]


class SendingDomainIn(Body):
    domain: DomainText = Field(description="The domain to send From (its subdomains too, once verified), e.g. "
                                           "acme.example; a mailbox provider's is refused (sender_refused).")


class VerificationRecordOut(Out):
    type: Literal["TXT"]
    name: str = Field(description="Where to publish it: _herald-verification.<domain>.")
    value: str = Field(description="herald-verification=<token>: the record's whole text.")


class DkimRecordOut(Out):
    type: Literal["TXT"]
    name: str = Field(description="Where to publish it: <selector>._domainkey.<domain>.")
    value: str = Field(description="v=DKIM1; k=rsa; p=<the public key>: the record's whole text (~420 characters: "
                                   "DNS tools split it into strings of 255, which receivers join).")


class DkimOut(Out):
    status: Literal["pending", "verified"] = Field(
        description="pending: publish `record`, then ask for verification (which looks for both records); "
                    "verified: the account's mail From the domain and its subdomains is DKIM-signed d=<domain>, "
                    "aligned with the From for DMARC.")
    selector: str
    record: DkimRecordOut = Field(description="The DNS record of the domain's DKIM key (its public half).")
    verified_at: AwareDatetime | None


class SendingDomainOut(Out):
    domain: str = Field(description="Lower case, international labels as A-labels (IDNA), no trailing dot.")
    status: Literal["pending", "verified"] = Field(description="pending: publish `record` in the domain's DNS, "
                                                               "then ask for verification; verified: campaigns "
                                                               "may go From it and its subdomains.")
    record: VerificationRecordOut = Field(description="The DNS record that proves the account controls the domain.")
    added_at: AwareDatetime
    verified_at: AwareDatetime | None
    dkim: DkimOut | None = Field(description=(
        "The DKIM key delivery made for the domain; null until it has (a moment after the domain is added), and "
        "for good when the platform makes none (no key set up for it by the operator, or a domain added before)."))


class SendingDomainsPage(Out):
    items: list[SendingDomainOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


def sending_domain_out(doc: dict[str, Any]) -> dict[str, Any]:
    verified_at = doc.get("verified_at")
    dkim = doc.get("dkim")
    return {"domain": doc["domain"], "status": doc["status"],
            "record": verification_record(doc["domain"], doc["token"]).model_dump(),
            "added_at": doc["added_at"].isoformat(), "verified_at": verified_at.isoformat() if verified_at else None,
            "dkim": None if dkim is None else {
                "status": dkim["status"], "selector": dkim["selector"],
                "record": dkim_record(doc["domain"], dkim["selector"], dkim["public_key"]).model_dump(),
                "verified_at": dkim["verified_at"].isoformat() if dkim["verified_at"] else None}}


def campaign_out(doc: dict[str, Any]) -> dict[str, Any]:
    send_at = doc.get("send_at")
    returned = doc.get("returned")
    return {"campaign_id": doc["campaign_id"], "status": doc["status"], "name": doc["name"],
            "list_id": doc["list_id"], "segment": doc.get("segment", {}), "content": doc["content"],
            "send_at": send_at.isoformat() if send_at else None, "time_zone": doc.get("time_zone"),
            "review_reasons": doc.get("review_reasons", []), "screening": doc.get("screening", []),
            "rejection": doc.get("rejection"), "review_note": doc.get("review_note"),
            "returned": {**returned, "at": returned["at"].isoformat()} if returned else None,
            "created_at": doc["created_at"].isoformat(), "updated_at": doc["updated_at"].isoformat()}


class QueueItem(CampaignOut):
    account_id: Identifier
    submitted_at: AwareDatetime


class QueuePage(Out):
    items: list[QueueItem]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class ApproveIn(Body):
    note: Text | None = None


class RejectIn(Body):
    reasons: list[Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=NO_NUL)]] = Field(
        min_length=1, max_length=20, description="Why, for the customer.")


def queue_item(doc: dict[str, Any]) -> dict[str, Any]:
    return {**campaign_out(doc), "account_id": doc["account_id"], "submitted_at": doc["submitted_at"].isoformat()}


def build_api(service: CampaignsService, apikeys: ApiKeyProjection, refused_keys: RefusedKeys | None = None
              ) -> APIRouter:
    # Every route takes an API key: 401 without a valid one, 429 while failed attempts are throttled; a refused key
    # of an account is in its audit log (`refused_keys`).
    router = APIRouter(prefix="/v1", responses=problems(401, 429))
    Account = Annotated[str, Depends(api_key_account(apikeys, refusals=refused_keys))]

    @router.post("/campaigns", status_code=201, response_model=None,
                 responses={**answers(201, CampaignOut, "The draft."), **problems(409, 422, 503), **TOO_LARGE,
                            **LINKS_REFUSED})
    async def create(body: CampaignIn, account_id: Account) -> JSONResponse:
        """A draft for one of the account's lists; 409 when the list, a segment field or its value's kind does not fit
        the account's list; 422 when a template does not compile or names a field the list does not have, or the
        From is at a mailbox provider's domain (`sender_refused`) or at no verified sending domain of the account
        (`sender_unverified`: see /v1/sending-domains)."""
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
                responses={**answers(200, ReportOut, "The campaign's counts and rates."), **problems(404, 422, 503)})
    async def campaign_report(campaign_id: Identifier, account_id: Account) -> dict[str, Any]:
        """Counted from delivery's and subscriptions' events as they arrive, exact under redelivery. 503 with
        Retry-After (`reports_recounting`) while an upgrade counts every report again from the start."""
        doc = await service.store.campaign(account_id, campaign_id)
        if doc is None:
            return problem(404, "campaign_not_found", f"no campaign {campaign_id!r}")  # type: ignore[return-value]
        if service.reports_recounting:
            # Half-recounted counters would read as a drop in every rate: none rather than wrong ones.
            recounting = problem(503, "reports_recounting", "the platform is counting every campaign's report "
                                 "again after an upgrade; ask again in a few minutes")
            recounting.headers["Retry-After"] = "60"
            return recounting  # type: ignore[return-value]
        counts = await service.store.report_counts(account_id, campaign_id)
        account = await service.store.account(account_id)
        return {"campaign_id": campaign_id, "status": display_state(doc, account, counts.get("sent", 0)),
                **report(counts, doc["content"].get("html_body"), doc.get("delivery"))}

    @router.put("/campaigns/{campaign_id}", response_model=None,
                responses={**answers(200, CampaignOut, "The draft as edited."), **problems(404, 409, 422, 503),
                           **TOO_LARGE, **LINKS_REFUSED})
    async def edit(campaign_id: Identifier, body: DraftIn, account_id: Account) -> dict[str, Any]:
        """Replace the draft's name, target and content."""
        return campaign_out(await service.edit(account_id, campaign_id, body.draft()))

    @router.post("/campaigns/{campaign_id}/duplicate", status_code=201, response_model=None,
                 responses={**answers(201, CampaignOut, "The copy, a new draft."), **problems(404, 422, 503),
                            **TOO_LARGE})
    async def duplicate(campaign_id: Identifier, account_id: Account) -> JSONResponse:
        return JSONResponse(campaign_out(await service.duplicate(account_id, campaign_id)), status_code=201)

    @router.delete("/campaigns/{campaign_id}", status_code=204, responses=problems(404, 409, 422, 503))
    async def delete(campaign_id: Identifier, account_id: Account) -> Response:
        """Delete a draft (or a rejected campaign); 409 once it was submitted: cancel it instead."""
        await service.delete(account_id, campaign_id)
        return Response(status_code=204)

    @router.post("/campaigns/{campaign_id}/preview", response_model=None,
                 responses={**answers(200, PreviewOut, "Subject, preheader and bodies merged."),
                            **problems(404, 409, 422)})
    async def preview(campaign_id: Identifier, body: PreviewIn, account_id: Account) -> dict[str, Any]:
        """The campaign rendered for one member's values, or a sample member's (delivery adds the unsubscribe
        footer and tracking when it sends)."""
        return await service.preview(account_id, campaign_id, body.values)

    @router.post("/campaigns/{campaign_id}/tests", status_code=202, response_model=None,
                 responses={**answers(202, TestOut, "Delivery sends it, marked as a test."),
                            **problems(404, 409, 429, 503), **TOO_LARGE,
                            422: {"model": TestRefused, "description": PROBLEM_STATUSES[422] + " Or "
                                  "`test_recipient_not_allowed`: the account is under review, or screening flags "
                                  "the content (named in `detail`), and an address is not its own (`refused`); "
                                  "or `test_recipient_opted_out`: an address used the unsubscribe link of an "
                                  "earlier test of the account (`refused`)."}})
    async def test_send(campaign_id: Identifier, body: TestIn, account_id: Account) -> JSONResponse:
        """Send the campaign as it is now to up to 5 addresses, subject marked [Test]; never counted in reports,
        rates or quotas, but the trial's 100 emails (billing). Tests are not reviewed, so an account sends at most
        HERALD_CAMPAIGNS_TEST_SENDS_PER_DAY (50) test messages in 24 hours; more is refused 429. While staff
        review the account (not approved yet, or on trial), a test goes only to the account's own addresses: its
        registered address and addresses at a sending domain it verified, or a subdomain of one (not the
        platform's shared sending domains); so does content screening flags, whatever the account (a submission
        of it would go to staff first). Any other address refuses the whole test, 422
        `test_recipient_not_allowed`, naming them in `refused`. An address that used the unsubscribe link of an
        earlier test of the account gets no more: a test to it is refused whole, 422 `test_recipient_opted_out`,
        naming it in `refused` (nothing is sent; send again without it). The 429 says in Retry-After when enough
        of the day's tests leave the 24 hours."""
        recipients = list(dict.fromkeys(body.recipients))
        try:
            test_id = await service.test_send(account_id, campaign_id, recipients, body.values, "api")
        except TestRecipientsRefused as refused:
            return problem(refused.http_status, refused.code, refused.detail, refused=refused.refused,
                           errors=[{"location": where, "message": message} for where, message in refused.errors or ()])
        except TestSendsExhausted as exhausted:
            response = problem(exhausted.http_status, exhausted.code, exhausted.detail)
            response.headers["Retry-After"] = str(exhausted.retry_after)
            return response
        return JSONResponse({"test_id": test_id, "recipients": recipients}, status_code=202)

    @router.post("/campaigns/{campaign_id}/submission", response_model=None,
                 responses={**answers(200, CampaignOut, "Submitted: in_review (staff first) or scheduled."),
                            **problems(404, 409, 422, 503), **TOO_LARGE, **LINKS_REFUSED})
    async def submit(campaign_id: Identifier, body: SubmitIn, account_id: Account) -> dict[str, Any]:
        """Screen the draft and send it at `send_at`. It goes to staff review first when the account is not
        approved yet, is on trial, or screening matched prohibited content (the matches are in `screening`);
        422 when a template does not compile, the content hides the unsubscribe link or footer, or the From is at a
        mailbox provider's domain (`sender_refused`) or at no verified sending domain of the account
        (`sender_unverified`; checked again at the send time: a campaign whose domain was removed meanwhile goes
        back to draft, `returned`)."""
        return campaign_out(await service.submit(account_id, campaign_id, body.send_at, body.time_zone, "api"))

    @router.post("/campaigns/{campaign_id}/cancellation", response_model=None,
                 responses={**answers(200, CampaignOut, "Cancelled; delivery stops sending it."),
                            **problems(404, 409, 422, 503)})
    async def cancel(campaign_id: Identifier, body: CancelIn, account_id: Account) -> dict[str, Any]:
        """Cancel a submitted campaign: in review, scheduled, or sending (delivery stops); a draft is deleted."""
        return campaign_out(await service.cancel(account_id, campaign_id, "api", body.reason))

    @router.post("/campaigns/{campaign_id}/unscheduling", response_model=None,
                 responses={**answers(200, CampaignOut, "A draft again (or already one)."),
                            **problems(404, 409, 422, 503)})
    async def unschedule(campaign_id: Identifier, body: UnscheduleIn, account_id: Account) -> dict[str, Any]:
        """Take a campaign in review or scheduled back to a draft, to edit it or change its send time, then
        submit it again: that submission is screened, and reviewed by staff where the account's rules say so,
        as any other (an approval does not carry over; it leaves the staff queue at once). A draft answers as it
        is. A queued campaign is being sent: 409, cancel it instead; so is a done, rejected or cancelled one."""
        return campaign_out(await service.unschedule(account_id, campaign_id, "api", body.reason))

    @router.get("/staff-access", response_model=None,
                responses={**answers(200, StaffAccessPage, "Newest first: who of the platform's staff looked "
                                                           "at which campaign, when."), **problems(422)})
    async def staff_access(account_id: Account, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        docs = await service.store.staff_access(account_id, limit)
        return {"items": [{"campaign_id": d["campaign_id"], "staff": d["staff"], "action": d["action"],
                           "at": d["at"].isoformat()} for d in docs]}

    # Sending domains: a campaign's From must be at one the account verified (or a subdomain of one).
    DomainInPath = Annotated[str, Path(min_length=3, max_length=254, pattern=DOMAIN_PATTERN,
                                       description="The domain, in Unicode or as A-labels.")]

    @router.post("/sending-domains", status_code=201, response_model=None,
                 responses={**answers(201, SendingDomainOut, "Added, pending: publish `record`, then verify."),
                            **problems(409, 422, 503)})
    async def add_sending_domain(body: SendingDomainIn, account_id: Account) -> JSONResponse:
        """Add a domain to send From. The answer names the DNS TXT record to publish at
        `_herald-verification.<domain>` (value `herald-verification=<token>`); then ask for its verification. 409
        when the domain is added already, 422 when it is no domain name (`invalid_domain`) or a mailbox provider's
        (`sender_refused`)."""
        doc = await service.add_sending_domain(account_id, body.domain)
        return JSONResponse(sending_domain_out(doc), status_code=201)

    @router.get("/sending-domains", response_model=None,
                responses={**answers(200, SendingDomainsPage, "A page of the account's sending domains, by name."),
                           **problems(422)})
    async def sending_domains(account_id: Account, cursor: Annotated[str, StringConstraints(
            max_length=254, pattern=r"^[a-z0-9.\-]*$")] | None = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
        docs, last = await service.store.sending_domains(account_id, cursor, limit)
        return {"items": [sending_domain_out(d) for d in docs], "next_cursor": last}

    @router.get("/sending-domains/{domain}", response_model=None,
                responses={**answers(200, SendingDomainOut, "The sending domain."), **problems(404, 422)})
    async def sending_domain(domain: DomainInPath, account_id: Account) -> dict[str, Any]:
        return sending_domain_out(await service.sending_domain(account_id, domain))

    @router.post("/sending-domains/{domain}/verification", response_model=None,
                 responses={**answers(200, SendingDomainOut, "Verified (now, or before); `dkim.status` says whether "
                                                             "the DKIM record was found too."),
                            **problems(404, 409, 422, 503)})
    async def verify_sending_domain(domain: DomainInPath, account_id: Account) -> Response:
        """Look the domain's TXT record up in DNS now, and its DKIM record (`dkim.record`) when it has one not found
        yet. 409 `verification_failed` when DNS does not hold the first (or, the domain verified already, the DKIM
        record), with what it holds (`found`: the TXT records at that name; `record`: the one expected): the name
        does not exist, has no TXT record, holds other values, or the domain's name servers failed (SERVFAIL).
        A domain verified by this call whose DKIM record is not there yet is 200, `dkim.status` pending: mail From
        it is signed by the platform's domain until a later verification finds the record. 503 `dns_unavailable`
        when the name servers Herald asks could not be reached or did not answer in time."""
        try:
            doc = await service.verify_sending_domain(account_id, domain)
        except VerificationFailed as failed:
            return problem(409, failed.code, failed.detail, record=failed.record.model_dump(), found=list(failed.found))
        except DnsUnavailable as away:
            response = problem(503, away.code, away.detail)
            response.headers["Retry-After"] = "30"
            return response
        return JSONResponse(sending_domain_out(doc))

    @router.delete("/sending-domains/{domain}", status_code=204, responses=problems(404, 422, 503))
    async def remove_sending_domain(domain: DomainInPath, account_id: Account) -> Response:
        """Remove a sending domain: drafts From it are refused when saved, tested or submitted; a scheduled
        campaign From it goes back to draft at its time instead of being sent (`returned`); one already queued is
        sent (cancel it to stop it)."""
        await service.remove_sending_domain(account_id, domain)
        return Response(status_code=204)

    return router


def build_staff_api(service: CampaignsService, staff_tokens: StaffTokens) -> APIRouter:
    """Platform staff only (a staff token, never a customer's key); every look is audit-logged."""
    router = APIRouter(prefix="/v1/staff", responses=problems(401, 429), tags=["staff"])

    Staff = Annotated[str, Depends(staff_member(staff_tokens))]

    @router.get("/review-queue", response_model=None,
                responses={**answers(200, QueuePage, "Oldest submission first, with screening evidence."),
                           **problems(422)})
    async def review_queue(staff: Staff, cursor: Annotated[str, StringConstraints(
            max_length=300, pattern=r"^[A-Za-z0-9._:/\-]*$")] | None = None,
            limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
        docs, last = await service.staff_queue(staff, cursor, limit)
        return {"items": [queue_item(d) for d in docs], "next_cursor": last}

    @router.get("/campaigns/{account_id}/{campaign_id}", response_model=None,
                responses={**answers(200, CampaignOut, "The campaign."), **problems(404, 422, 503)})
    async def campaign(account_id: Identifier, campaign_id: Identifier, staff: Staff) -> dict[str, Any]:
        return campaign_out(await service.staff_campaign(staff, account_id, campaign_id))

    @router.post("/campaigns/{account_id}/{campaign_id}/approval", response_model=None,
                 responses={**answers(200, CampaignOut, "Approved: scheduled."), **problems(404, 409, 422, 503)})
    async def approve(account_id: Identifier, campaign_id: Identifier, body: ApproveIn,
                      staff: Staff) -> dict[str, Any]:
        return campaign_out(await service.approve(staff, account_id, campaign_id, body.note))

    @router.post("/campaigns/{account_id}/{campaign_id}/rejection", response_model=None,
                 responses={**answers(200, CampaignOut, "Rejected, with the reasons."),
                            **problems(404, 409, 422, 503)})
    async def reject(account_id: Identifier, campaign_id: Identifier, body: RejectIn,
                     staff: Staff) -> dict[str, Any]:
        return campaign_out(await service.reject(staff, account_id, campaign_id, body.reasons))

    return router
