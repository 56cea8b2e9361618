"""The subscriptions HTTP API (`/v1`): parse, authorise by API key, call a handler, map errors to RFC 9457."""


import base64
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.contract.envelope import Identifier, Name, ShortText
from herald_shared.contract.subscriptions import ConsentEvidence, CustomFieldDefinition, FieldValue, OptInMode
from herald_shared.http import problem

from .domain import SubscribeRequest, SubscriptionError
from .handlers import SubscriptionsService
from .importer import run_import, spool


class Unauthorised(Exception):
    pass


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ListIn(Body):
    list_id: Identifier | None = None
    name: Name
    opt_in: OptInMode = "double"
    custom_fields: list[CustomFieldDefinition] = Field(default_factory=list)


class RenameIn(Body):
    name: Name


class ConsentIn(Body):
    method: ShortText = Field(description="Where and how the person opted in, e.g. 'checkout checkbox'.")
    collected_at: AwareDatetime | None = None
    ip: str | None = None
    user_agent: ShortText | None = None


class SubscribeIn(Body):
    email: Annotated[str, StringConstraints(max_length=320)]
    first_name: Name | None = None
    last_name: Name | None = None
    phone: Annotated[str, StringConstraints(max_length=40)] | None = None
    custom_fields: dict[str, FieldValue] = Field(default_factory=dict)
    consent: ConsentIn | None = None


class EraseIn(Body):
    email: Annotated[str, StringConstraints(max_length=320)]
    requested_by: Literal["subscriber", "account"] = "subscriber"


def list_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"list_id": doc["list_id"], "name": doc["name"], "opt_in": doc["opt_in"],
            "custom_fields": [{"name": k, "kind": v} for k, v in doc.get("custom_fields", {}).items()],
            "created_at": doc["created_at"].isoformat()}


def subscriber_out(doc: dict[str, Any]) -> dict[str, Any]:
    keep = ("list_id", "email", "first_name", "last_name", "phone", "custom_fields", "status", "opt_in", "consent",
            "unsubscribe_source")
    out = {"subscriber_id": doc["_id"], **{k: doc.get(k) for k in keep if k in doc}}
    for key in ("added_at", "confirmed_at", "unsubscribed_at", "erased_at"):
        if doc.get(key):
            out[key] = doc[key].isoformat()
    return out


def encode_cursor(listing_key: str) -> str:
    return base64.urlsafe_b64encode(listing_key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, account_id: str, list_id: str) -> str:
    """The listing key a page ended at; only a key of this list is accepted."""
    try:
        value = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        value = ""
    if not re.fullmatch(rf"{re.escape(account_id)}/{re.escape(list_id)}/[a-z]+/s[0-9a-f]{{24}}", value):
        raise SubscriptionError("cursor is not valid; use next_cursor from the previous page")
    return value


def build_api(service: SubscriptionsService, apikeys: ApiKeyProjection) -> APIRouter:
    router = APIRouter(prefix="/v1")

    async def account(authorization: Annotated[str | None, Header()] = None,
                      x_api_key: Annotated[str | None, Header()] = None) -> str:
        key = x_api_key or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
        account_id = await apikeys.authenticate(key) if key else None
        if account_id is None:
            raise Unauthorised()
        return account_id

    Account = Annotated[str, Depends(account)]

    @router.post("/lists", status_code=201)
    async def create_list(body: ListIn, account_id: Account) -> dict[str, Any]:
        doc = await service.create_list(account_id, body.list_id, body.name, body.opt_in, body.custom_fields)
        return list_out(doc)

    @router.get("/lists")
    async def lists(account_id: Account) -> dict[str, Any]:
        return {"items": [list_out(d) for d in await service.store.lists(account_id)]}

    @router.get("/lists/{list_id}")
    async def get_list(list_id: str, account_id: Account) -> dict[str, Any]:
        doc = await service.store.list_doc(account_id, list_id)
        if doc is None:
            return problem(404, "list_not_found", "no such list")  # type: ignore[return-value]
        counts = await service.store.status_counts(account_id, list_id)
        return {**list_out(doc), "counts": counts}

    @router.patch("/lists/{list_id}")
    async def rename_list(list_id: str, body: RenameIn, account_id: Account) -> dict[str, Any]:
        return list_out(await service.rename_list(account_id, list_id, body.name))

    @router.delete("/lists/{list_id}", status_code=204)
    async def delete_list(list_id: str, account_id: Account) -> Response:
        await service.delete_list(account_id, list_id)
        return Response(status_code=204)

    @router.post("/lists/{list_id}/subscribers")
    async def subscribe(list_id: str, body: SubscribeIn, account_id: Account) -> JSONResponse:
        consent = None if body.consent is None else ConsentEvidence(
            source="api", collected_at=body.consent.collected_at or datetime.now(UTC), method=body.consent.method,
            ip=body.consent.ip, user_agent=body.consent.user_agent)
        decision, doc = await service.subscribe(account_id, list_id, SubscribeRequest(
            email=body.email, consent=consent, channel="api", first_name=body.first_name,
            last_name=body.last_name, phone=body.phone, custom_fields=body.custom_fields))
        status = 201 if decision.outcome in ("active", "pending") else 200
        return JSONResponse({**subscriber_out(doc), "outcome": decision.outcome}, status_code=status)

    @router.post("/lists/{list_id}/imports", status_code=202)
    async def import_csv(list_id: str, request: Request, account_id: Account) -> dict[str, Any]:
        """CSV (UTF-8, with or without BOM; ',' or ';'), one subscriber a row. Columns: email, consent_method,
        consent_at (ISO 8601) required; first_name, last_name, phone, consent_ip and the list's custom
        fields optional. Answers 202 once every row's events are recorded, with the counts and the rejected
        rows (line, reason); the members show in queries as the read model folds them in."""
        raw = await spool(request.stream())
        try:
            report = await run_import(service, account_id, list_id, raw)
        finally:
            raw.close()
        return report.as_json()

    @router.get("/lists/{list_id}/subscribers")
    async def members(list_id: str, request: Request, account_id: Account,
                      status: Literal["pending", "active", "unsubscribed", "suppressed"] | None = None,
                      cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Filter by status and by custom fields (`field.<name>=<value>`, all must match)."""
        lst = await service.store.list_doc(account_id, list_id)
        if lst is None:
            return problem(404, "list_not_found", "no such list")  # type: ignore[return-value]
        kinds: dict[str, str] = lst.get("custom_fields", {})
        fields = {k[len("field."):]: _typed(v, kinds.get(k[len("field."):], "text"))
                  for k, v in request.query_params.items() if k.startswith("field.")}
        after = decode_cursor(cursor, account_id, list_id) if cursor else None
        docs, last = await service.store.members_page(account_id, list_id, status=status, field_equals=fields,
                                                      after=after, limit=limit)
        return {"items": [subscriber_out(d) for d in docs], "next_cursor": encode_cursor(last) if last else None,
                "counts": await service.store.status_counts(account_id, list_id)}

    @router.get("/subscribers/{subscriber_id}")
    async def get_subscriber(subscriber_id: str, account_id: Account) -> dict[str, Any]:
        doc = await service.store.member(account_id, subscriber_id)
        if doc is None or doc["status"] == "erased":
            return problem(404, "subscriber_not_found", "no such subscriber")  # type: ignore[return-value]
        return subscriber_out(doc)

    @router.post("/subscribers/{subscriber_id}/unsubscribe")
    async def unsubscribe(subscriber_id: str, account_id: Account) -> dict[str, Any]:
        return subscriber_out(await service.unsubscribe(account_id, subscriber_id, "api"))

    @router.get("/gdpr/export")
    async def export(email: str, account_id: Account) -> dict[str, Any]:
        """Everything held about one person in this account, across lists."""
        docs = await service.export(account_id, email)
        return {"email": email, "memberships": [subscriber_out(d) for d in docs if d["status"] != "erased"]}

    @router.post("/gdpr/erase")
    async def erase(body: EraseIn, account_id: Account) -> dict[str, Any]:
        return {"erased_memberships": await service.erase(account_id, body.email, body.requested_by)}

    return router


def _typed(value: str, kind: str) -> FieldValue:
    """Query values arrive as text; compare them as the list declares the field (a zip code stays text)."""
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    if kind == "number":
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                raise SubscriptionError(f"{value!r} is not a number") from None
    return value


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SubscriptionError)
    async def rule_refused(_: Request, exc: SubscriptionError) -> JSONResponse:
        return problem(exc.http_status, exc.code, exc.detail)

    @app.exception_handler(Unauthorised)
    async def unauthorised(_: Request, __: Unauthorised) -> JSONResponse:
        response = problem(401, "unauthorised", "a valid API key of the account is required "
                                                "(Authorization: Bearer hk_... or X-API-Key)")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"location": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return problem(422, "invalid_request", "the request is not valid", errors=errors)

    @app.exception_handler(TimeoutError)
    async def lagging(_: Request, __: TimeoutError) -> JSONResponse:
        return problem(503, "projection_lagging", "the change was recorded but is not visible yet; retry the read")
