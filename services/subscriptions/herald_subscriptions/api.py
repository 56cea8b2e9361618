"""The subscriptions HTTP API (`/v1`): parse, authorise by API key, call a handler, map errors to RFC 9457."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, Field, StrictBool, StringConstraints

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.contract.delivery import BounceClass
from herald_shared.contract.envelope import EmailHash, Identifier
from herald_shared.contract.subscriptions import (
    ConsentEvidence,
    CustomFieldDefinition,
    FieldValue,
    FormChallenge,
    FrameOrigin,
    OptInMode,
)
from herald_shared.fields import fits
from herald_shared.http import RefusedKeys, answers, api_key_account, problem, problems
from herald_shared.readmodel import SEPARATOR, compose
from herald_shared.request_fields import (
    NO_NUL,
    Body,
    EmailAddress,
    FieldValueIn,
    IpAddress,
    IsoTime,
    NameText,
    Out,
    Text,
)

from . import domain
from .activity import CURSOR_PATTERN, EXPORT_LIMIT
from .domain import SubscribeRequest
from .handlers import PersonalData, SubscriptionsService
from .importer import run_import, spool

# A page cursor: the status and subscriber id the previous page ended at. Any id the event contract allows
# (`Identifier`: a CRM may choose its subscribers' ids), not only the ones this service makes, or a page ending
# at such a member would have a next_cursor the next request refuses.
Cursor = Annotated[str, StringConstraints(
    max_length=len("unsubscribed.") + 128,
    pattern=r"^(pending|active|unsubscribed|suppressed)\.[A-Za-z0-9._:\-]{1,128}$")]
# Where the export's activity continues: `next_cursor` of the page before (`activity.cursor_after`).
ActivityCursor = Annotated[str, StringConstraints(max_length=len("20261102T093000000000Z.") + 37 + 128,
                                                  pattern=CURSOR_PATTERN)]
ActivityCursorParam = Annotated[ActivityCursor | None, Query(description=(
    "`next_cursor` of the page before: the activity continues after it (a cursor that is none is refused with "
    "422)."))]
# The most lists one page of `GET /v1/lists` holds: each up to MAX_CUSTOM_FIELDS fields, a few MB at most.
MAX_LISTS_PAGE = 500
# A `field.<name>=<value>` filter of the members' listing: no longer than a custom field's value may be.
MAX_FILTER_CHARS = 1000

# A CSV import's body is streamed to a temporary file as it arrives; this bounds it (about two million rows of
# ~120 bytes). Other routes take api_app's default (1 MiB).
MAX_IMPORT_BYTES = 256 << 20
LARGER_BODIES = {r"/v1/lists/[^/]+/imports": MAX_IMPORT_BYTES}


class ListIn(Body):
    list_id: Identifier | None = None
    name: NameText
    opt_in: OptInMode = "double"
    custom_fields: list[CustomFieldDefinition] = Field(
        default_factory=list, max_length=domain.MAX_CUSTOM_FIELDS,
        description=f"At most {domain.MAX_CUSTOM_FIELDS} (more: 422).")


class RenameIn(Body):
    name: NameText


class FormSettings(Body):
    """The list's hosted subscribe form (`/subscribe/{account_id}/{list_id}`)."""

    frame_ancestors: list[FrameOrigin] = Field(default_factory=list, max_length=20, description=(
        "Origins (`https://www.example.com`, `https://*.example.com`) whose pages may embed the form in a frame "
        "(CSP frame-ancestors). Empty: no site may frame it."))
    challenge: FormChallenge = Field(default="none", description=(
        "`proof_of_work`: the browser solves a small hash puzzle before each post (a cost per post for a bot, "
        "about a second for a person)."))


class NotificationSettings(Body):
    """Which membership changes of the list the account's registered address is emailed about (PRODUCT.md:
    "The customer is notified of subscribes and unsubscribes when it asked to be"). Both off for a new list."""

    subscribes: StrictBool = Field(description=(
        "Someone subscribed: confirmed by the link of a double opt-in, or became active at once through the "
        "hosted form or the API. An import never notifies."))
    unsubscribes: StrictBool = Field(description=(
        "A member unsubscribed by an email's link (one-click or the page), the preferences page or a mail to the "
        "List-Unsubscribe address. Not for the account's own API call, nor a complaint (who complained is never "
        "disclosed)."))


class ConsentIn(Body):
    method: Text = Field(description="Where and how the person opted in, e.g. 'checkout checkbox'.")
    collected_at: IsoTime | None = None
    ip: IpAddress | None = None
    user_agent: Text | None = None


class SubscribeIn(Body):
    email: EmailAddress
    first_name: NameText | None = None
    last_name: NameText | None = None
    phone: Annotated[str, StringConstraints(max_length=40, pattern=NO_NUL)] | None = None
    custom_fields: dict[str, FieldValueIn] = Field(
        default_factory=dict, description="Values of the list's custom fields; a field the list does not declare, "
                                          "or a value of the wrong kind, is refused with 409.")
    consent: ConsentIn = Field(description="Consent evidence is required for every subscriber (PRODUCT.md).")


# The person a GDPR export or erasure is about, by the sha256 (hex) of their address lower-cased: the event
# contract's `email_sha256`, so every address the contract allows (a CRM's `jörg@example.com`, `anna@bücher.de`, a
# local part over 64 characters) can be named, not only the ones `email` takes (the API's sendable addresses).
EMAIL_SHA256_DESCRIPTION = (
    "sha256 (64 lower-case hex digits) of the address lower-cased, as the event contract's `email_sha256`: names "
    "any address a producer (a CRM) may have added, also one `email` does not take (not ASCII, a local part over "
    "64 characters).")
PersonHash = Annotated[EmailHash, Field(description=EMAIL_SHA256_DESCRIPTION)]


class EraseByEmail(Body):
    email: EmailAddress
    requested_by: Literal["subscriber", "account"] = "subscriber"


class EraseByHash(Body):
    email_sha256: PersonHash
    requested_by: Literal["subscriber", "account"] = "subscriber"


# What the API answers, for its OpenAPI document (the routes build the JSON themselves; schemathesis checks
# every answer against these in CI).
class ListOut(Out):
    list_id: Identifier
    name: str
    opt_in: OptInMode
    custom_fields: list[CustomFieldDefinition]
    form: FormSettings
    notifications: NotificationSettings
    created_at: AwareDatetime


class StatusCounts(Out):
    pending: int
    active: int
    unsubscribed: int
    suppressed: int


class ListWithCounts(ListOut):
    counts: StatusCounts


class ListsOut(Out):
    items: list[ListOut]
    next_cursor: Identifier | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class SubscriberOut(Out):
    """A list membership; fields appear once known (an erased one keeps only ids, status and when)."""

    subscriber_id: Identifier
    list_id: Identifier | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    custom_fields: dict[str, FieldValue] | None = None
    status: Literal["pending", "active", "unsubscribed", "suppressed", "erased"]
    opt_in: Literal["single", "double"] | None = None
    consent: ConsentEvidence | None = None
    confirmation_method: Literal["single_opt_in", "double_opt_in"] | None = None
    confirmation_ip: str | None = Field(default=None, description="Where the double opt-in link was confirmed from.")
    unsubscribe_source: Literal["one_click", "unsubscribe_page", "preference_page", "api", "mailto"] | None = Field(
        default=None, description="How the member unsubscribed. A complaint is never shown (PRODUCT.md: who "
        "complained is never disclosed): a complainer reads as suppressed, like a hard bounce, with no cause.")
    unsubscribe_campaign_id: Identifier | None = None
    added_at: AwareDatetime | None = None
    confirmed_at: AwareDatetime | None = None
    unsubscribed_at: AwareDatetime | None = None
    suppressed_at: AwareDatetime | None = None
    erased_at: AwareDatetime | None = None


class SubscribedOut(SubscriberOut):
    outcome: domain.Outcome = Field(description="active or pending: added (201); already_*: on the list (200).")


class MembersPage(Out):
    items: list[SubscriberOut]
    next_cursor: Cursor | None = Field(description="Pass as `cursor` for the next page; null on the last.")
    counts: StatusCounts


class ImportRejection(Out):
    line: int
    reason: str
    detail: str


class ImportReportOut(Out):
    import_id: str
    rows_total: int
    rows_imported: int
    rows_rejected: int
    rejected_by_reason: dict[str, int]
    rejections: list[ImportRejection] = Field(description="The first 1,000 rejected rows.")
    rejections_truncated: bool


class SuppressionOut(Out):
    """Why (a hard bounce or a complaint) is not said: who complained is never disclosed to the customer."""

    suppressed_at: AwareDatetime


class ActivityOut(Out):
    """One thing a message to the person recorded: sent, deferred, bounced, opened or clicked, with what was
    collected; or suppressed. Who complained is never disclosed to the customer: a hard bounce and a complaint,
    which both suppress the address, read alike, as one `suppressed` entry with its time, membership and kind of
    message only (no message, no cause)."""

    type: domain.ActivityType = Field(description=(
        "sent, deferred (the receiving server refused it for now; tried again later), bounced (soft, block or "
        "undetermined), opened, clicked; suppressed: the address is no longer mailed because of this message (a "
        "hard bounce or a complaint: which one is not said)."))
    at: AwareDatetime
    kind: Literal["campaign", "confirmation"] = Field(description="A campaign's message, or the confirmation email "
                                                                  "of a double opt-in.")
    subscriber_id: Identifier = Field(description="The membership the message went to.")
    list_id: Identifier | None = None
    campaign_id: Identifier | None = Field(default=None, description="The campaign (not for `suppressed`).")
    message_id: Identifier | None = Field(default=None, description="The message (not for `suppressed`).")
    bounce_class: BounceClass | None = Field(default=None, description="bounced: soft (temporary), block (the "
                                             "receiver refused our mail), undetermined. A hard bounce (the address "
                                             "is invalid) reads as `suppressed`.")
    diagnostic: str | None = Field(default=None, description="bounced, deferred: the receiving server's words.")
    bounce_source: Literal["smtp_reply", "dsn", "retry_expired", "local"] | None = Field(
        default=None, description="bounced: refused when sent, reported later, given up after retrying, or never "
                                  "handed to the relay.")
    smtp_code: int | None = None
    enhanced_status_code: str | None = None
    attempt: int | None = Field(default=None, description="deferred: which attempt to send the message it was.")
    reporting_mta: str | None = None
    ip: str | None = Field(default=None, description="opened/clicked: the client's IP address.")
    user_agent: str | None = Field(default=None, description="opened/clicked: the client's user agent.")
    device: Literal["desktop", "mobile", "tablet", "bot", "other"] | None = None
    browser: str | None = None
    country: str | None = None
    city: str | None = None
    automated: bool | None = Field(default=None, description="opened/clicked: by a machine (a mail scanner), not "
                                                             "the reader.")
    automated_reason: str | None = None
    url: str | None = Field(default=None, description="clicked: the link followed.")
    link_index: int | None = None


class ExportOut(Out):
    email: str | None = Field(description=(
        "The address asked for; by `email_sha256`, the address the memberships hold (null when none holds it "
        "any more: erased)."))
    memberships: list[SubscriberOut]
    suppression: SuppressionOut | None = Field(description=(
        "The account's record that the address is not mailed (a hard bounce or a complaint), if any."))
    activity: list[ActivityOut] = Field(description=(
        "What the messages to the person's memberships recorded (sent, deferred, bounced, opened, clicked, "
        f"suppressed), newest first, at most {EXPORT_LIMIT:,} entries a page: the newest, or those after "
        "`activity_cursor`."))
    activity_truncated: bool = Field(description="There is older activity than this page: follow `next_cursor`.")
    next_cursor: ActivityCursor | None = Field(description=(
        "Pass as `activity_cursor` for the next page of the activity (older entries; the memberships and the "
        "suppression are given again); null on the last page. Following it gives every entry once."))


class ErasedOut(Out):
    erased_memberships: int


def list_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"list_id": doc["list_id"], "name": doc["name"], "opt_in": doc["opt_in"],
            "custom_fields": [{"name": k, "kind": v} for k, v in doc.get("custom_fields", {}).items()],
            "form": {"frame_ancestors": doc.get("form_frame_ancestors", []),
                     "challenge": doc.get("form_challenge", "none")},
            "notifications": {"subscribes": bool(doc.get("notify_subscribes")),
                              "unsubscribes": bool(doc.get("notify_unsubscribes"))},
            "created_at": doc["created_at"].isoformat()}


def subscriber_out(doc: dict[str, Any]) -> dict[str, Any]:
    """A membership as the customer sees it. Who complained is never disclosed (PRODUCT.md, "Sending
    suspension"): a suppressed member says no cause, and a complaint's unsubscribe (its source, campaign and
    time) is left out, so a complainer reads exactly as a hard bounce does."""
    keep = ["list_id", "email", "first_name", "last_name", "phone", "custom_fields", "status", "opt_in", "consent",
            "confirmation_method", "confirmation_ip"]
    times = ["added_at", "confirmed_at", "suppressed_at", "erased_at"]
    if doc.get("unsubscribe_source") != "complaint":
        keep += ["unsubscribe_source", "unsubscribe_campaign_id"]
        times.append("unsubscribed_at")
    out = {"subscriber_id": doc["subscriber_id"], **{k: doc.get(k) for k in keep if k in doc}}
    for key in times:
        if doc.get(key):
            out[key] = doc[key].isoformat()
    return out


def activity_out(doc: dict[str, Any]) -> dict[str, Any]:
    """An activity entry as the customer reads it (`domain.customer_activity`: a hard bounce stored by an earlier
    version reads as `suppressed`, as a complaint does)."""
    entry = domain.customer_activity(doc)
    return {**{k: v for k, v in entry.items() if k not in ("_id", "account_id", "at")},
            "at": entry["at"].isoformat()}


def export_out(email: str | None, held: PersonalData) -> dict[str, Any]:
    return {"email": email, "memberships": [subscriber_out(d) for d in held.memberships if d["status"] != "erased"],
            "suppression": None if held.suppression is None else {
                "suppressed_at": held.suppression["suppressed_at"].isoformat()},
            "activity": [activity_out(d) for d in held.activity.entries],
            "activity_truncated": held.activity.next_cursor is not None, "next_cursor": held.activity.next_cursor}


def encode_cursor(listing_key: str) -> str:
    _, _, status, subscriber_id = listing_key.rsplit(SEPARATOR, 3)
    return f"{status}.{subscriber_id}"


def decode_cursor(cursor: str, account_id: str, list_id: str) -> str:
    """The listing key a page ended at (any well-formed cursor is a place in the list to continue from)."""
    status, _, subscriber_id = cursor.partition(".")
    return compose(account_id, list_id, status, subscriber_id)


def build_api(service: SubscriptionsService, apikeys: ApiKeyProjection, refused_keys: RefusedKeys | None = None
              ) -> APIRouter:
    # Every route takes an API key: 401 without a valid one, 429 while failed attempts are throttled; a refused key
    # of an account is in its audit log (`refused_keys`).
    router = APIRouter(prefix="/v1", responses=problems(401, 429))
    Account = Annotated[str, Depends(api_key_account(apikeys, refusals=refused_keys))]

    @router.post("/lists", status_code=201, response_model=None,
                 responses={**answers(201, ListOut, "The list."), **problems(409, 422, 503)})
    async def create_list(body: ListIn, account_id: Account) -> dict[str, Any]:
        """Create a list (`list_id` optional: one is made). The same request again answers the list; 409
        `list_already_exists` when a list of that id has other settings, 409 `list_id_of_deleted_list` when the
        id belonged to a deleted list: its id is never used again, as the deleted list's members, counts and
        campaigns stay recorded under it and would mix into a new one. A list has at most 100 custom fields
        (more: 422, naming `body.custom_fields`); an account at most 1,000 lists not deleted (409
        `too_many_lists`: delete one first)."""
        doc = await service.create_list(account_id, body.list_id, body.name, body.opt_in, body.custom_fields)
        return list_out(doc)

    @router.get("/lists", response_model=None,
                responses={**answers(200, ListsOut, "One page of the account's lists, in id order."),
                           **problems(422)})
    async def lists(account_id: Account, cursor: Annotated[Identifier | None, Query(description=(
                        "`next_cursor` of the previous page: the lists after it."))] = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_LISTS_PAGE)] = 100) -> dict[str, Any]:
        """The account's lists not deleted, `limit` a page (at most 500); follow `next_cursor` for
        the rest."""
        docs, last = await service.store.lists_page(account_id, after=cursor, limit=limit)
        return {"items": [list_out(d) for d in docs], "next_cursor": last}

    @router.get("/lists/{list_id}", response_model=None,
                responses={**answers(200, ListWithCounts, "The list and its members by status."),
                           **problems(404, 422)})
    async def get_list(list_id: Identifier, account_id: Account) -> dict[str, Any]:
        doc = await service.store.list_doc(account_id, list_id)
        if doc is None:
            return problem(404, "list_not_found", "no such list")  # type: ignore[return-value]
        counts = await service.store.status_counts(account_id, list_id)
        return {**list_out(doc), "counts": counts}

    @router.patch("/lists/{list_id}", response_model=None,
                  responses={**answers(200, ListOut, "The renamed list."), **problems(404, 422, 503)})
    async def rename_list(list_id: Identifier, body: RenameIn, account_id: Account) -> dict[str, Any]:
        return list_out(await service.rename_list(account_id, list_id, body.name))

    @router.put("/lists/{list_id}/form", response_model=None,
                responses={**answers(200, ListOut, "The list with its form's new settings."),
                           **problems(404, 422, 503)})
    async def configure_form(list_id: Identifier, body: FormSettings, account_id: Account) -> dict[str, Any]:
        return list_out(await service.configure_form(account_id, list_id, body.frame_ancestors, body.challenge))

    @router.put("/lists/{list_id}/notifications", response_model=None,
                responses={**answers(200, ListOut, "The list with its new notification settings."),
                           **problems(404, 422, 503)})
    async def configure_notifications(list_id: Identifier, body: NotificationSettings,
                                      account_id: Account) -> dict[str, Any]:
        """Email the account's registered address when someone subscribes to or unsubscribes from the list: one
        email per change, naming the address and how it happened (delivery sends it)."""
        return list_out(await service.configure_notifications(account_id, list_id, body.subscribes,
                                                              body.unsubscribes))

    @router.delete("/lists/{list_id}", status_code=204, responses=problems(404, 422, 503))
    async def delete_list(list_id: Identifier, account_id: Account) -> Response:
        """The list no longer shows nor takes subscribers; its members stay recorded under its id, so the id
        cannot be used for a new list (`POST /v1/lists` answers 409 `list_id_of_deleted_list`)."""
        await service.delete_list(account_id, list_id)
        return Response(status_code=204)

    @router.post("/lists/{list_id}/subscribers", status_code=201, response_model=None, responses={
        **answers(201, SubscribedOut, "Added: active, or pending its double opt-in confirmation."),
        **answers(200, SubscribedOut, "Already on the list (`outcome` says how); nothing changed."),
        **problems(404, 409, 422, 503)})
    async def subscribe(list_id: Identifier, body: SubscribeIn, account_id: Account) -> JSONResponse:
        """Add one subscriber: 201 when added (`outcome` active, or pending a double opt-in confirmation),
        200 when already on the list. 409 when the address is suppressed or the person unsubscribed (only
        they can come back), or the custom fields do not match the list's."""
        consent = domain.consent_evidence(
            source="api", collected_at=body.consent.collected_at or datetime.now(UTC), method=body.consent.method,
            ip=body.consent.ip, user_agent=body.consent.user_agent)
        decision, doc = await service.subscribe(account_id, list_id, SubscribeRequest(
            email=body.email, consent=consent, channel="api", first_name=body.first_name,
            last_name=body.last_name, phone=body.phone, custom_fields=body.custom_fields))
        status = 201 if decision.outcome in ("active", "pending") else 200
        return JSONResponse({**subscriber_out(doc), "outcome": decision.outcome}, status_code=status)

    @router.post("/lists/{list_id}/imports", status_code=202, response_model=None,
                 responses={**answers(202, ImportReportOut, "Every row recorded or rejected; the report."),
                            **problems(404, 415, 422, 503)}, openapi_extra={
        "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}})
    async def import_csv(list_id: Identifier, request: Request, account_id: Account) -> dict[str, Any]:
        """CSV (UTF-8, with or without BOM; ',' or ';'), one subscriber a row. Columns: email, consent_method,
        consent_at (ISO 8601) required; first_name, last_name, phone, consent_ip and the list's custom
        fields optional. Answers 202 once every row's events are recorded, with the counts and the rejected
        rows (line, reason); the members show in queries as the read model folds them in. A file whose header
        is not UTF-8 CSV with those columns is refused with 422; a row further down that cannot be read (a
        quote left open over the next lines, a field over 131,072 characters, bytes that are not UTF-8) is a
        rejected row, and so is a line of separators and empty cells (`empty_row`); a blank line is no row."""
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "text/csv":
            return problem(415, "unsupported_media_type", "send the file as text/csv")  # type: ignore[return-value]
        raw = await spool(request.stream())
        try:
            report = await run_import(service, account_id, list_id, raw)
        finally:
            raw.close()
        return report.as_json()

    @router.get("/lists/{list_id}/subscribers", response_model=None,
                responses={**answers(200, MembersPage, "One page of members, in status then id order."),
                           **problems(404, 422)})
    async def members(list_id: Identifier, request: Request, account_id: Account,
                      status: Literal["pending", "active", "unsubscribed", "suppressed"] | None = None,
                      cursor: Cursor | None = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Filter by status and by custom fields (`field.<name>=<value>`, all must match; a name that is not a
        custom field of the list, a value that is not of the field's kind, or one longer than 1,000 characters,
        is refused with 422). `cursor` is `next_cursor` of the previous page."""
        filters = {k[len("field."):]: v for k, v in request.query_params.items() if k.startswith("field.")}
        too_long = [name for name, value in filters.items() if len(value) > MAX_FILTER_CHARS]
        if too_long:
            return problem(422, "invalid_request", "the request is not valid", errors=[  # type: ignore[return-value]
                {"location": f"query.field.{name}", "message": f"at most {MAX_FILTER_CHARS:,} characters"}
                for name in too_long])
        lst = await service.store.list_doc(account_id, list_id)
        if lst is None:
            return problem(404, "list_not_found", "no such list")  # type: ignore[return-value]
        kinds: dict[str, str] = lst.get("custom_fields", {})
        fields, wrong = {}, []
        for name, value in filters.items():
            if name not in kinds:
                wrong.append((name, "not a custom field of the list"))
            elif not fits(kinds[name], typed := _typed(value, kinds[name])):
                wrong.append((name, f"not a {kinds[name]} value"))
            else:
                fields[name] = typed
        if wrong:  # a typo in a name, or a value the field cannot hold, would only ever match nobody
            return problem(422, "invalid_request", "the request is not valid", errors=[  # type: ignore[return-value]
                {"location": f"query.field.{name}", "message": message} for name, message in wrong])
        after = decode_cursor(cursor, account_id, list_id) if cursor else None
        docs, last = await service.store.members_page(account_id, list_id, status=status, field_equals=fields,
                                                      after=after, limit=limit)
        return {"items": [subscriber_out(d) for d in docs], "next_cursor": encode_cursor(last) if last else None,
                "counts": await service.store.status_counts(account_id, list_id)}

    @router.delete("/lists/{list_id}/subscribers/{subscriber_id}", status_code=204, responses={
        204: {"description": "Removed: the membership is erased (also when it already was: a retry answers the "
                             "same)."}, **problems(404, 422, 503)})
    async def remove_member(list_id: Identifier, subscriber_id: Identifier, account_id: Account) -> Response:
        """Remove one member from the list, e.g. to get back under the plan's subscriber limit (PRODUCT.md: an
        account over it is restricted "until it upgrades or removes subscribers"). The membership is erased
        (SubscriberErased, `requested_by: account`): its personal data is deleted, billing no longer counts it,
        campaigns no longer mail it; the address's memberships of other lists stay. What the person decided
        stays too: someone who unsubscribed, or an address suppressed by a hard bounce or complaint, cannot be
        added back by the account afterwards (409, as before the removal); someone who was active or pending
        can be added again, with new consent. 404 `list_not_found` for a list not there (or deleted),
        `subscriber_not_found` for a member not on that list; a member already removed or erased answers 204
        again, recording nothing. To erase a person from every list, `POST /v1/gdpr/erase`."""
        await service.remove_member(account_id, list_id, subscriber_id)
        return Response(status_code=204)

    @router.get("/subscribers/{subscriber_id}", response_model=None,
                responses={**answers(200, SubscriberOut, "The membership."), **problems(404, 422)})
    async def get_subscriber(subscriber_id: Identifier, account_id: Account) -> dict[str, Any]:
        doc = await service.store.member(account_id, subscriber_id)
        if doc is None or doc["status"] == "erased":
            return problem(404, "subscriber_not_found", "no such subscriber")  # type: ignore[return-value]
        return subscriber_out(doc)

    @router.post("/subscribers/{subscriber_id}/unsubscribe", response_model=None,
                 responses={**answers(200, SubscriberOut, "The membership, unsubscribed."),
                            **problems(404, 422, 503)})
    async def unsubscribe(subscriber_id: Identifier, account_id: Account) -> dict[str, Any]:
        return subscriber_out(await service.unsubscribe(account_id, subscriber_id, "api"))

    @router.get("/gdpr/export", response_model=None,
                responses={**answers(200, ExportOut, "Every membership of the address, and a page of its "
                                                     "activity."), **problems(422)})
    async def export(email: EmailAddress, account_id: Account,
                     activity_cursor: ActivityCursorParam = None) -> dict[str, Any]:
        """Everything held about one person in this account, across lists; the activity a page at a time (follow
        `next_cursor`). For an address `email` does not take (a producer's, not ASCII or with a local part over 64
        characters), name the person by `GET /v1/gdpr/export/{email_sha256}`."""
        return export_out(email, await service.export(account_id, domain.email_sha256(email), activity_cursor))

    @router.get("/gdpr/export/{email_sha256}", response_model=None,
                responses={**answers(200, ExportOut, "Every membership of the address, and a page of its "
                                                     "activity."), **problems(422)})
    async def export_by_hash(email_sha256: PersonHash, account_id: Account,
                             activity_cursor: ActivityCursorParam = None) -> dict[str, Any]:
        """The same export, the person named by the sha256 of their address lower-cased (the event contract's
        `email_sha256`): any address the contract allows."""
        held = await service.export(account_id, email_sha256, activity_cursor)
        held_address = next((str(d["email"]) for d in held.memberships if d.get("email")), None)
        return export_out(held_address, held)

    @router.post("/gdpr/erase", response_model=None,
                 responses={**answers(200, ErasedOut, "How many memberships were erased."), **problems(422, 503)})
    async def erase(body: EraseByEmail | EraseByHash, account_id: Account) -> dict[str, Any]:
        """Erase one person in this account, named by `email` or, for any address the event contract allows,
        by `email_sha256`."""
        email_hash = body.email_sha256 if isinstance(body, EraseByHash) else domain.email_sha256(body.email)
        return {"erased_memberships": await service.erase(account_id, email_hash, body.requested_by)}

    return router


def _typed(value: str, kind: str) -> FieldValue:
    """Query values arrive as text; compare them as the list declares the field (a zip code stays text). A
    value the kind cannot read stays text, which `fits` then refuses."""
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    if kind == "number":
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value
