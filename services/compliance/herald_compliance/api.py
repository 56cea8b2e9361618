"""The compliance staff API (`/v1/accounts/...`): an account's rates, and lifting its suspension; parse, authorise,
answer from the worker holding the account (a request for an account held elsewhere is forwarded there once),
map errors to RFC 9457."""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and `Staff` is local.
import asyncio
import logging
from typing import Annotated, Any, Literal, Protocol

from aiokafka.errors import KafkaTimeoutError
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from herald_shared.commands import PUBLISH_TIMEOUT
from herald_shared.contract import Event
from herald_shared.contract.compliance import (
    AccountReinstated,
    AccountReinstatedPayload,
    RateCounts,
    StaffViewedRates,
    StaffViewedRatesPayload,
)
from herald_shared.contract.envelope import Identifier, ShortText
from herald_shared.http import answers, problem, problems
from herald_shared.kafka import EventPublisher
from herald_shared.request_fields import Body, Out
from herald_shared.staff import StaffTokens, staff_member

from .domain import PRODUCER, AccountState, Policy, decision_id, rate_report

log = logging.getLogger(__name__)


class ScopeRates(Out):
    scope: Literal["campaign", "rolling_window"]
    name: str = Field(description="The campaign id, or the window: '24h', '7d'.")
    counts: RateCounts = Field(description="Since the latest reinstatement: what the rules judge.")
    rates: dict[str, float | None] = Field(description="Per metric, of what was sent; null before anything was.")
    raw_counts: RateCounts
    judged_sent: int | None = Field(description=(
        "What the rules divide by: the messages sent, or the minimum volume (minimum_sent) when fewer were sent. "
        "A rule compares count / judged_sent with its threshold, so below the minimum volume the rates shown are "
        "higher than the ones judged. Null: not judged, a rolling window below the minimum volume of an account "
        "whose longest window holds more (its complaints and unsubscribes may be about earlier mail)."))
    awaiting_unsubscribes: int = Field(description=(
        "Of counts.unsubscribe, those the rules do not judge yet: counted while the account's sends were read "
        "short of where they had been published, each waits until they are (so it is never divided by too few)."))
    awaiting_their_sends: int = Field(default=0, description=(
        "Bounces, complaints and unsubscribes in raw_counts but not in counts because their own message's send "
        "has not been read yet (a MessageSent republished after its DSN): each is judged once its send is read, "
        "or without it once no send that counts can come (clock skew plus the longest window after it)."))


class RatesOut(Out):
    account_id: Identifier
    suspended: bool
    suspension: dict[str, Any] | None
    reinstatements: int
    minimum_sent: int = Field(description="The least volume a scope's rates are judged against (judged_sent).")
    thresholds: dict[str, float]
    stream_time: str | None
    forgotten_until: str | None = Field(default=None, description=(
        "Set when this worker's fact index was full (HERALD_COMPLIANCE_MAX_FACTS) and forgot the account's "
        "oldest facts early: a fact of this time or older that it no longer remembers is not counted (it could "
        "be a duplicate)."))
    scopes: list[ScopeRates]


class ReinstatedOut(Out):
    event_id: str
    reinstated_by: str
    suspension_event_id: str


class ReinstateIn(Body):
    reason: ShortText
    suspension_event_id: Identifier | None = None


# Set on a request one worker forwards to another (the value: the forwarder's URL). Such a request is never
# forwarded again; a client sends it to ask the worker it reaches only.
FORWARDED = "X-Herald-Forwarded-By"
ANSWERED_BY = "X-Herald-Answered-By"  # on a forwarded request's answer: the holder's URL
# Headers of the staff request that go with it: the credentials (the holder authorises again) and the body's type.
FORWARDED_HEADERS = ("authorization", "content-type", "user-agent")
# Headers of the holder's answer that come back with it.
ANSWER_HEADERS = ("content-type", "retry-after", "www-authenticate")


class Holder(Protocol):
    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      ) -> tuple[int, dict[str, str], bytes]:
        """Send a request to another worker: its status, headers (lower-case names) and body. OSError or
        TimeoutError when it cannot be reached."""


class Accounts(Protocol):
    """What the routes read of the processor: the policy, the accounts this worker holds, and which worker
    holds the others."""

    policy: Policy
    publisher: EventPublisher

    def held_here(self, account_id: str) -> bool:
        """Whether this worker holds the account's partition, its tables recovered (standby copies may lag)."""

    def account(self, account_id: str) -> AccountState | None:
        """The account's state; None when nothing of it was seen, or it was purged."""

    def holder_url(self, account_id: str) -> str | None:
        """The base URL of the other worker holding the account's partition, as it advertised it; None when
        this worker is the one (still recovering), or the group's assignment does not say (a rebalance)."""

    @property
    def url(self) -> str:
        """This worker's advertised base URL."""

    @property
    def holders(self) -> Holder:
        """How requests reach another worker."""


def not_held_here() -> JSONResponse:
    return problem(421, "not_held_here", "Another worker holds this account's partition, and this request was "
                   "forwarded already or no holder is known yet (a rebalance, or this worker still starting); "
                   "retry, or ask the holder.")


async def held_elsewhere(accounts: Accounts, account_id: str, request: Request) -> Response:
    """Forward the request, once, to the worker holding the account, and answer what it answers."""
    holder = None if FORWARDED.lower() in request.headers else accounts.holder_url(account_id)
    if holder is None:
        return not_held_here()
    headers = {name: value for name, value in request.headers.items() if name in FORWARDED_HEADERS}
    headers[FORWARDED] = accounts.url
    target = holder.rstrip("/") + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    try:
        status, answer_headers, body = await accounts.holders.request(request.method, target, headers,
                                                                      await request.body())
    except (OSError, TimeoutError) as exc:
        log.warning("the worker holding an account did not answer", extra={"holder": holder, "error": repr(exc)})
        return problem(503, "holder_unreachable", "The worker holding this account's partition did not answer; "
                       "retry (after a rebalance another worker holds it).")
    kept = {name: value for name, value in answer_headers.items() if name in ANSWER_HEADERS}
    return Response(body, status_code=status, headers={**kept, ANSWERED_BY: holder})


async def recorded(accounts: Accounts, event: Event) -> None:
    """Publish a staff route's event within the shared deadline (`herald_shared.commands.PUBLISH_TIMEOUT`): the
    producer retries for as long as the broker is away, and held the request unanswered for the whole outage (a
    review: no answer in 120 s). After it, KafkaTimeoutError: 503 `dependency_unavailable` with Retry-After
    (`herald_shared.http`). The producer keeps the event, so it may still be recorded once the broker is back
    (README, "HTTP": what a 503 leaves behind)."""
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            await accounts.publisher.publish(event)
    except TimeoutError as exc:
        raise KafkaTimeoutError(f"the broker acknowledged {event.type} in no {PUBLISH_TIMEOUT:.0f} s") from exc


def build_staff_api(accounts: Accounts, staff_tokens: StaffTokens) -> APIRouter:
    """Platform staff only (a staff token); every look at an account's rates is audit-logged."""
    router = APIRouter(prefix="/v1/accounts", responses=problems(401, 429), tags=["staff"])

    Staff = Annotated[str, Depends(staff_member(staff_tokens))]

    @router.get("/{account_id}/rates", response_model=None,
                responses={**answers(200, RatesOut, "The account's counts and rates."),
                           **problems(404, 421, 422, 503)})
    async def rates(account_id: Identifier, staff: Staff, request: Request) -> Response:
        """An account's counts and rates per campaign and rolling window, from the worker holding it."""
        if not accounts.held_here(account_id):
            return await held_elsewhere(accounts, account_id, request)
        state = accounts.account(account_id)
        if state is None:
            return problem(404, "unknown_account", "No sending outcomes of this account on this worker.")
        await audited(account_id, staff, "rates")
        return JSONResponse({"account_id": account_id, **rate_report(state, accounts.policy)})

    async def audited(account_id: str, staff: str, what: str) -> None:
        """Record a staff look at the account's data before the answer that shows it leaves (the account's audit
        log, in billing, shows every one); when it cannot be recorded, the error (`recorded`) answers 503."""
        await recorded(accounts, StaffViewedRates(account_id=account_id, producer=PRODUCER,
                                                  payload=StaffViewedRatesPayload(staff=staff)))
        log.info("staff read account data", extra={"staff": staff, "account_id": account_id, "what": what})

    @router.post("/{account_id}/reinstatement", status_code=202, response_model=None,
                 responses={**answers(202, ReinstatedOut, "AccountReinstated is recorded."),
                            **problems(409, 421, 422, 503)})
    async def reinstate(account_id: Identifier, body: ReinstateIn, staff: Staff, request: Request) -> Response:
        """Lift the account's suspension (AccountReinstated): 409 when it is not suspended, or suspended again
        since the suspension named."""
        if not accounts.held_here(account_id):
            return await held_elsewhere(accounts, account_id, request)
        state = accounts.account(account_id)
        if state is None:
            return problem(409, "not_suspended", "The account is not suspended.")
        # A refusal shows the account's suspension state (whether suspended, which suspension): a look, recorded.
        if state.suspension is None:
            await audited(account_id, staff, "suspension")
            return problem(409, "not_suspended", "The account is not suspended.")
        suspension_id = str(state.suspension["event_id"])
        if body.suspension_event_id is not None and body.suspension_event_id != suspension_id:
            await audited(account_id, staff, "suspension")
            return problem(409, "suspension_mismatch", f"The account's current suspension is {suspension_id}, "
                           f"not {body.suspension_event_id}: it was lifted, or suspended again since.")
        # one id per suspension: a repeated request (a double click, a client's retry) is the same event
        event = AccountReinstated(
            event_id=decision_id("reinstated", account_id, suspension_id), account_id=account_id,
            producer=PRODUCER, payload=AccountReinstatedPayload(reinstated_by=staff, reason=body.reason,
                                                                suspension_event_id=suspension_id))
        await recorded(accounts, event)
        log.warning("account reinstated", extra={"staff": staff, "account_id": account_id, "reason": body.reason})
        return JSONResponse({"event_id": str(event.event_id), "reinstated_by": staff,
                             "suspension_event_id": suspension_id}, status_code=202)

    return router
