"""The HTTP side every service has: a FastAPI app whose errors are RFC 9457 problem documents and whose
OpenAPI document says so, /healthz, /readyz and /metrics, served by uvicorn."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import uvicorn
from aiokafka.errors import KafkaError, KafkaTimeoutError
from fastapi import FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from pymongo.errors import ConnectionFailure, ExecutionTimeout, OperationFailure, PyMongoError, WTimeoutError
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match

from .apikeys import KeyHolder, key_id_of
from .contract import Event
from .contract.envelope import ApiKeyRefusal, ApiKeyRefusedPayload
from .correlation import RequestCorrelation
from .kafka import TRANSIENT_CODES
from .metrics import API_KEY_REFUSALS, HTTP_REQUESTS, HTTP_SECONDS
from .rules import RuleRefused
from .serving import ServerLimits, serve_guarded
from .throttle import PREFIX_REMEMBERED, CredentialAttempts, Reason, Refusal, Throttle

ReadinessCheck = Callable[[], Awaitable[bool]]
READINESS_CHECK_SECONDS = 2.0  # each check's, all at once: under the kubelet's probe timeout (3 s)
PROBLEM = "application/problem+json"


class NotReady(Exception):
    """What a readiness check raises to say why it is not ready: /readyz shows `not ready: <why>`."""


class FieldProblem(BaseModel):
    location: str = Field(description="Where in the request, e.g. 'body.email' or 'query.limit'.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document: how every Herald API answers an error."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="Names the kind of problem: https://herald.dev/problems/<code>.")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[FieldProblem] | None = Field(default=None, description="What is wrong, field by field (422, and "
                                                                       "409 where a rule names fields).")


log = logging.getLogger(__name__)

# What each error status means in Herald's APIs; a route declares the ones it can answer with `problems`.
PROBLEM_STATUSES = {
    400: "The request body could not be read (not UTF-8, or not the declared media type).",
    401: "No valid credentials: an API key (Authorization: Bearer, or X-API-Key), a session or a staff token.",
    402: "A payment was needed and was declined; nothing changed.",
    403: "The credentials are valid but may not do this.",
    404: "No such resource in this account.",
    408: "The request's head or body did not arrive in time (`herald_shared.serving`); the connection is closed.",
    409: "The request conflicts with the resource's current state.",
    413: "The request body is larger than this route takes.",
    414: "The request target (path and query) is longer than any route takes.",
    415: "The request body is not of a media type this route takes.",
    421: "Another worker holds this resource; ask that one.",
    422: "The request is not valid; `errors` says where.",
    429: "Too many requests; wait as long as Retry-After says.",
    503: "The change is recorded but not visible yet, or a dependency is away; retry.",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route or router that can answer with these problem statuses."""
    return {status: {"description": PROBLEM_STATUSES[status], "model": Problem} for status in statuses}


def answers(status: int, model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route's success answer: its status, body model and meaning."""
    return {status: {"model": model, "description": description}}


def client_host(request: Request) -> str | None:
    """The client's address. Behind a proxy of HERALD_FORWARDED_ALLOW_IPS the server has already taken it from
    X-Forwarded-For (the nearest address no trusted proxy added); anyone else's header is ignored."""
    return request.client.host if request.client else None


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document."""
    return JSONResponse({"type": f"https://herald.dev/problems/{code}", "title": code.replace("_", " "),
                         "status": status, "detail": detail, **extra}, status_code=status, media_type=PROBLEM)


NO_VALID_KEY = "a valid API key of the account is required (Authorization: Bearer hk_... or X-API-Key)"


class Unauthorised(Exception):
    """No valid credentials; answered 401 with a `WWW-Authenticate: Bearer` challenge."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TooManyAttempts(Exception):
    """Refused by a throttle without being checked; answered 429 with Retry-After."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"too many failed attempts; retry in {refusal.retry_after} s")
        self.refusal = refusal


class ApiKeys(Protocol):
    """What api_key_account needs of the API keys (herald_shared.apikeys.ApiKeyProjection)."""

    attempts: CredentialAttempts

    async def authenticate(self, key: str, *, remembered_only: bool = False) -> str | None: ...


class KeyHolders(Protocol):
    """What RefusedKeys needs of the API keys (herald_shared.apikeys.ApiKeyProjection)."""

    attempts: CredentialAttempts

    async def holder(self, key_id: str) -> KeyHolder | None: ...


class Publisher(Protocol):
    """What RefusedKeys publishes with (herald_shared.kafka.EventPublisher)."""

    async def publish(self, event: Event) -> object: ...


# Why a key was refused, as the log and `herald_api_key_refusals_total` say it.
RefusalReason = Literal["bad_key"] | Reason

# How long a stopping process waits for the refusals it is still recording (RefusedKeys.close).
REFUSALS_DRAIN_SECONDS = 5.0
# Refusals being recorded at once, at most: beyond it one is only the log line (a flood must not grow tasks).
MAX_REFUSALS_RECORDING = 1000


class RefusedKeys:
    """Puts a refused API key of a known account into that account's audit log (PRODUCT.md: every login attempt
    is audited): an event on the refusing service's own topic (`event`: ApiKeyRefusedBySubscriptions,
    ApiKeyRefusedByCampaigns), which billing folds. A key id no key has here belongs to no account and is only the
    log line (as an unknown username is for a password login).

    What an attacker can make Herald write is bounded per key id and process: each checked failure is recorded
    (revoked_key, wrong_secret: at most the key throttle's limit per window, since the throttle refuses the rest
    unchecked), and a key id's unchecked refusals (throttled_key, throttled_ip) once per the key throttle's window.
    Recording runs beside the answer: the refusal neither waits for the key's look-up or the publish nor fails
    with them (a failure is logged)."""

    def __init__(self, keys: KeyHolders, publisher: Publisher, event: Callable[..., Event], producer: str,
                 max_keys: int = 100_000) -> None:
        self._keys, self._publisher, self._event, self._producer = keys, publisher, event, producer
        # A key id whose unchecked refusal was recorded within the window: the next ones are not.
        self._unchecked = Throttle(1, keys.attempts.per_prefix.window, max_keys)
        self._recording: set[asyncio.Task[None]] = set()

    def refused(self, key_id: str, reason: RefusalReason, request: Request, at: datetime) -> None:
        """Record, beside the answer, that the request's key was refused (`refused_key`'s reasons)."""
        unchecked = reason != "bad_key"
        prefix = key_id[:PREFIX_REMEMBERED]
        if unchecked and self._unchecked.retry_after(prefix, at) > 0:
            return
        if len(self._recording) >= MAX_REFUSALS_RECORDING:
            log.warning("API key refusal not audited: too many being recorded", extra={"key_id": prefix})
            return
        if unchecked:
            self._unchecked.failed(prefix, at)  # before the look-up: concurrent refusals are recorded once
        agent = user_agent(request)
        task = asyncio.create_task(self._record(key_id, reason, client_host(request), agent and storable(agent),
                                                storable(request.url.path[:1000]), at), name="audit refused API key")
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record(self, key_id: str, reason: RefusalReason, ip: str | None, agent: str | None, path: str,
                      at: datetime) -> None:
        try:
            holder = await self._keys.holder(key_id)
            if holder is None:
                # Nobody's key id: not remembered either, so guessed ids cannot push real ones out.
                self._unchecked.succeeded(key_id[:PREFIX_REMEMBERED])
                return
            await self._publisher.publish(self._event(
                account_id=holder.account_id, producer=self._producer, occurred_at=at,
                payload=ApiKeyRefusedPayload(key_id=key_id, reason=audited_reason(reason, holder), ip=ip,
                                             user_agent=agent, path=path)))
        except Exception:
            log.exception("API key refusal not audited", extra={"key_id": key_id[:PREFIX_REMEMBERED],
                                                                "reason": reason})

    async def drain(self) -> None:
        """Wait for the refusals being recorded."""
        while self._recording:
            await asyncio.wait(set(self._recording))

    async def close(self) -> None:
        """Before the process's producer closes: wait for the refusals being recorded, at most
        REFUSALS_DRAIN_SECONDS; those still out then are given up, and logged."""
        if not self._recording:
            return
        _, late = await asyncio.wait(set(self._recording), timeout=REFUSALS_DRAIN_SECONDS)
        for task in late:
            task.cancel()
        if late:
            log.warning("API key refusals not audited: the service is stopping", extra={"count": len(late)})


def storable(text: str) -> str:
    """A text a client sent, as an event may carry it: a NUL (a path's `%00`) would make every consumer
    dead-letter the event (the contract refuses it: no read model can store one)."""
    return text.replace("\x00", "\ufffd")


def audited_reason(reason: RefusalReason, holder: KeyHolder) -> ApiKeyRefusal:
    """What the audit log says of a refusal of a known key: the log's `bad_key` is a revoked key or a wrong
    secret; a throttle's reason stays."""
    if reason != "bad_key":
        return reason
    return "revoked_key" if holder.revoked else "wrong_secret"


def api_key_account(apikeys: ApiKeys, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                    refusals: RefusedKeys | None = None) -> Callable[..., Awaitable[str]]:
    """A dependency answering the account of the request's API key. The key comes in `Authorization: Bearer`
    or `X-API-Key`; when both are sent, Authorization wins and X-API-Key is not looked at.

    Failed attempts are throttled (`apikeys.attempts`), and a throttled attempt is answered 429 with Retry-After
    before any scrypt work:
    - per client address: while it is throttled, everything from it is refused but a key this process has already
      verified (others' guesses from a shared address lock no known key out);
    - per key id (`hk_<key id>.`, counted alike whether such a key exists or not, so the answer tells no key id
      from another): while it is throttled, a secret this process has already verified for the key is still
      accepted, so guessing on a key id does not lock its owner out; any other secret is refused 429 unchecked
      (a process that has not verified the owner's key since it started refuses it too, until the window passes).
      A key id's failures are forgotten when its key is issued (ApiKeyProjection.apply): a new key used a moment
      before it was projected is not locked out.
    Only attempts that were checked and failed count (401); a request without a key costs nothing and does not.

    Every refused key (401, 429) is a WARNING in the service's log (`refused_key`): the key id it names (never
    its secret), the client's address and user agent, and the reason (`herald_api_key_refusals_total`'s). With
    `refusals`, a refused key of a known account is in that account's audit log too (RefusedKeys)."""
    bearer = HTTPBearer(auto_error=False, scheme_name="ApiKeyBearer",
                        description="An API key of the account: `Authorization: Bearer hk_...`.")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader",
                          description="The same API key in `X-API-Key` (used only without Authorization).")

    def refuse(request: Request, key_id: str | None, reason: RefusalReason, now: datetime) -> None:
        refused_key(request, key_id, reason)
        if refusals is not None and key_id:
            try:
                refusals.refused(key_id, reason, request, now)
            except Exception:  # the answer goes out whatever the audit does
                log.exception("API key refusal not audited", extra={"reason": reason})

    # Defaults, not Annotated: this module's annotations are strings, and `bearer` is local.
    async def account(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
                      x_api_key: str | None = Security(header)) -> str:
        key = credentials.credentials if credentials is not None else x_api_key
        address = client_host(request)
        key_id = key_id_of(key) if key else None
        now = clock()
        refusal = apikeys.attempts.refusal(address, key_id, now)
        if refusal is not None and refusal.reason == "throttled_ip":
            # Others' guesses from a shared address (an office, a NAT) do not lock out a key this process knows.
            if key and (known := await apikeys.authenticate(key, remembered_only=True)) is not None:
                return known
            refuse(request, key_id, refusal.reason, now)
            raise TooManyAttempts(refusal)
        if not key:
            raise Unauthorised(NO_VALID_KEY)
        account_id = await apikeys.authenticate(key, remembered_only=refusal is not None)
        if account_id is not None:
            return account_id
        if refusal is not None:
            refuse(request, key_id, refusal.reason, now)
            raise TooManyAttempts(refusal)
        apikeys.attempts.failed(address, key_id, now)
        refuse(request, key_id, "bad_key", now)
        raise Unauthorised(NO_VALID_KEY)

    return account


def refused_key(request: Request, key_id: str | None, reason: RefusalReason) -> None:
    """Counted, and a WARNING in the service's log: which key id (None: the key names none), from where, and why
    (bad_key: unknown, revoked, malformed or wrong secret; throttled_ip, throttled_key: refused unchecked)."""
    API_KEY_REFUSALS.labels(reason).inc()
    log.warning("API key refused", extra={"key_id": key_id[:PREFIX_REMEMBERED] if key_id else None,
                                          "ip": client_host(request), "user_agent": user_agent(request),
                                          "reason": reason, "path": request.url.path})


def user_agent(request: Request) -> str | None:
    """The request's User-Agent, cut to what an audit record keeps (1,000 characters)."""
    return (request.headers.get("user-agent") or "")[:1000] or None


def html_security_headers(style: str = "", *, scripts: bool = False, forms: bool = False,
                          frame_ancestors: Sequence[str] = ()) -> dict[str, str]:
    """The security headers of an HTML page Herald serves: a Content-Security-Policy that loads nothing but the
    page's one inline stylesheet (`style`, allowed by its hash), scripts from the service itself when `scripts`,
    forms posting back to it when `forms`, and framing only by `frame_ancestors` (none by default, with
    X-Frame-Options DENY for older browsers); no referrer leaves (paths may carry signed tokens); no sniffing."""
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    allowed = {True: "'self'", False: "'none'"}
    policy = (f"default-src 'none'; style-src 'sha256-{digest}'; script-src {allowed[scripts]}; "
              f"form-action {allowed[forms]}; base-uri 'none'; frame-ancestors {ancestors}")
    headers = {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
    if not frame_ancestors:
        headers["X-Frame-Options"] = "DENY"
    return headers


MAX_BODY_BYTES = 1 << 20  # a request body, unless a route says otherwise (api_app's `larger_bodies`)


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body larger than its route's limit is answered 413 (a problem document) before
    the route runs. A declared Content-Length is judged at once; a body without one (chunked) is counted as the
    route reads it, and the route's read fails at the limit, so nothing past it is ever held or handled."""

    def __init__(self, app: Any, default: int, larger: Sequence[tuple[re.Pattern[str], int]] = ()) -> None:
        self.app, self.default, self.larger = app, default, list(larger)

    def limit_for(self, path: str) -> int:
        return next((limit for pattern, limit in self.larger if pattern.fullmatch(path)), self.default)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = next((value for key, value in scope["headers"] if key == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(limit, receive, send)
            return
        received, started = 0, False

        async def counted_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(limit, receive, send)

    @staticmethod
    async def _refuse(limit: int, receive: Any, send: Any) -> None:
        response = problem(413, "body_too_large", f"this route takes at most {limit:,} bytes of request body")
        await response({"type": "http"}, receive, send)


MAX_TARGET_BYTES = 8 << 10  # a request's path and query, as sent (percent-encoded)


class TargetLimit:
    """ASGI middleware: a request whose target (path and query string, as sent) is longer than `limit` bytes is
    answered 414 (a problem document) before any routing. No route takes anything near it (ids are at most 128
    characters); it bounds what a server must hold and parse for parameters no route declares."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope.get("raw_path") or scope["path"].encode()
            query = scope.get("query_string", b"")
            if len(path) + (len(query) + 1 if query else 0) > self.limit:
                response = problem(414, "uri_too_long", f"the request target (path and query) takes at most "
                                                        f"{self.limit:,} bytes")
                await response({"type": "http"}, receive, send)
                return
        await self.app(scope, receive, send)


UNMATCHED = "unmatched"  # the route label of a request no route took (a 404 of an unknown path, a 414)
# Methods by name; any other a client makes up is `other`, so no request adds a series of its own choosing.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """ASGI middleware, outermost: every HTTP request counted in `herald_http_requests_total` by its route's
    template (never the path itself: ids would make a series per customer), method and status, and timed to its
    response's last byte. A request whose handler raised, answered 500 by Starlette outside this middleware, counts
    as 500; one whose client left before any answer counts as 499, as proxies log it."""

    def __init__(self, app: Any, routes: Sequence[BaseRoute] = ()) -> None:
        self.app, self.routes = app, routes
        self._children: dict[tuple[str, str, int], Any] = {}  # label look-ups cost more than the increment

    def template(self, scope: dict[str, Any]) -> str:
        """The template of the route that took the request; for one refused before routing (413, 414), of the
        route that would have taken it."""
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        return getattr(route, "path", None) or UNMATCHED

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def noted_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, noted_send)
        except Exception:
            status = status or 500
            raise
        except BaseException:  # cancelled: the client went away, or the server stops
            status = status or 499
            raise
        finally:
            template = self.template(scope)
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            key = (template, method, status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = (HTTP_REQUESTS.labels(template, method, str(status)),
                                               HTTP_SECONDS.labels(template, method))
            child[0].inc()
            child[1].observe(time.perf_counter() - started)


def api_app(title: str, description: str, version: str = "1.0.0",
            larger_bodies: Mapping[str, int] | None = None) -> FastAPI:
    """A service's FastAPI app: errors are problem documents (invalid requests, unknown routes, refused
    credentials), and its OpenAPI document says so for every error status its routes declare. Request bodies
    are limited to MAX_BODY_BYTES, or for paths matching a `larger_bodies` pattern (a regular expression over the
    whole path) to its limit; a larger body is refused 413. A request target (path and query) longer than
    MAX_TARGET_BYTES is refused 414. Every request is counted and timed (`RequestMetrics`)."""
    app = FastAPI(title=title, version=version, description=description)
    app.add_middleware(BodyLimit, default=MAX_BODY_BYTES,
                       larger=[(re.compile(pattern), limit) for pattern, limit in (larger_bodies or {}).items()])
    app.add_middleware(TargetLimit, limit=MAX_TARGET_BYTES)
    # Added last: runs first, so the 413s and 414s are counted too.
    app.add_middleware(RequestMetrics, routes=app.router.routes)
    # Outermost: every answer says its request's id, and whatever the request logs or publishes carries it.
    app.add_middleware(RequestCorrelation)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"location": ".".join(str(p) for p in e["loc"]), "message": str(e["msg"])} for e in exc.errors()]
        return problem(422, "invalid_request", "the request is not valid", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        response = problem(exc.status_code, "_".join(str(exc.detail).lower().split()), str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path only (RFC 9110 15.5.6: all).
            allowed = {method for route in app.routes if isinstance(route, BaseRoute)
                       and route.matches(request.scope)[0] != Match.NONE for method in getattr(route, "methods", ())}
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.exception_handler(RuleRefused)
    async def rule_refused(_: Request, exc: RuleRefused) -> JSONResponse:
        if exc.errors:
            return problem(exc.http_status, exc.code, exc.detail,
                           errors=[{"location": where, "message": message} for where, message in exc.errors])
        return problem(exc.http_status, exc.code, exc.detail)

    @app.exception_handler(TimeoutError)
    async def lagging(_: Request, __: TimeoutError) -> JSONResponse:
        # What a request waiting for its own writes raises (herald_shared.commands.Recorder.commit).
        return problem(503, "projection_lagging", "the change was recorded but is not visible yet; retry the read")

    @app.exception_handler(PyMongoError)
    @app.exception_handler(KafkaError)
    async def dependency_failed(request: Request, exc: Exception) -> JSONResponse:
        if dependency_away(exc):
            response = problem(503, "dependency_unavailable", "the database or the event log is out of reach; "
                                                              "retry (nothing was changed unless a retry says so)")
            response.headers["Retry-After"] = "1"
            return response
        log.error("request failed in a dependency", exc_info=exc, extra={"path": request.url.path})
        return problem(500, "internal_error", "the request failed; it is logged")

    @app.exception_handler(Unauthorised)
    async def unauthorised(_: Request, exc: Unauthorised) -> JSONResponse:
        response = problem(401, "unauthorised", exc.detail)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(TooManyAttempts)
    async def too_many_attempts(_: Request, exc: TooManyAttempts) -> JSONResponse:
        response = problem(429, "too_many_attempts", str(exc))
        response.headers["Retry-After"] = str(exc.refusal.retry_after)
        return response

    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _problem_content(original())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def dependency_away(exc: BaseException) -> bool:
    """Whether an error of MongoDB's driver or Kafka's client says the dependency is out of reach for now (a
    request may be retried: 503), rather than that the request itself failed."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    if isinstance(exc, OperationFailure) and exc.code in TRANSIENT_CODES:
        # As the consumers judge it (`herald_shared.kafka.is_transient`): FerretDB answers 1 (InternalError) while
        # PostgreSQL under it is away, which answered 500 to every request (a review).
        return True
    if isinstance(exc, PyMongoError):
        return exc.has_error_label("RetryableWriteError") or exc.has_error_label("TransientTransactionError")
    return isinstance(exc, KafkaError) and (bool(getattr(exc, "retriable", False))
                                             or isinstance(exc, KafkaTimeoutError))


def _problem_content(schema: dict[str, Any]) -> None:
    """Every error response is `application/problem+json` with the Problem schema, FastAPI's own 422 too; every
    operation may answer 408 (a head or body too slow to arrive: `serving`), 414 (TargetLimit) and 503 (a
    dependency away), and one with a body 400 and 413 (BodyLimit)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "Problem" not in components:
        components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components["FieldProblem"] = components["Problem"].pop("$defs")["FieldProblem"]
    reference = {"schema": {"$ref": "#/components/schemas/Problem"}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation["responses"].setdefault("408", {"description": PROBLEM_STATUSES[408]})
            operation["responses"].setdefault("414", {"description": PROBLEM_STATUSES[414]})
            operation["responses"].setdefault("503", {"description": PROBLEM_STATUSES[503]})
            if "requestBody" in operation:
                operation["responses"].setdefault("400", {"description": PROBLEM_STATUSES[400]})
                operation["responses"].setdefault("413", {"description": PROBLEM_STATUSES[413]})
            for code, response in operation.get("responses", {}).items():
                # A route's own non-JSON error page (an HTML page for a person) is left as it says.
                if code[:1] in ("4", "5") and set(response.get("content", {})) <= {"application/json"}:
                    response["content"] = {PROBLEM: reference}
                    if code == "422":
                        response["description"] = PROBLEM_STATUSES[422]
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)


async def _readiness_of(check: ReadinessCheck) -> str:
    try:
        ok = await asyncio.wait_for(check(), timeout=READINESS_CHECK_SECONDS)
    except NotReady as exc:
        return f"not ready: {exc}"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok" if ok else "not ready"


def add_health_routes(app: FastAPI, readiness: Mapping[str, ReadinessCheck]) -> FastAPI:
    """/healthz: the process answers (nothing else is asked: a dependency away must not get it restarted).
    /readyz: every dependency check passes (503 with each check's answer if not); the checks run at once."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        outcomes = await asyncio.gather(*(_readiness_of(check) for check in readiness.values()))
        results = dict(zip(readiness, outcomes, strict=True))
        ready = all(v == "ok" for v in results.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": results},
                            status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def make_server(app: FastAPI, host: str, port: int, forwarded_allow_ips: str = "127.0.0.1",
                limits: ServerLimits | None = None) -> uvicorn.Server:
    """A uvicorn server to run inside the service's own event loop (`await server.serve()`). A request from one of
    `forwarded_allow_ips` (addresses or networks, comma-separated) is taken to come from the client its
    `X-Forwarded-For` names (HERALD_FORWARDED_ALLOW_IPS). What one connection and one client address may hold of
    it (the time a request may take to arrive, connections at once) is `limits`, by default the environment's
    (HERALD_HTTP_*; `herald_shared.serving`)."""
    return serve_guarded(app, host, port, forwarded_allow_ips, limits)
