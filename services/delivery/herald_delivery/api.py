"""The delivery staff API (`/v1/staff/...`): support look-ups of one person's messages in an account (PRODUCT.md
"Data protection": was it sent, when, why blocked); parse, authorise, audit, read, answer, map errors to RFC 9457."""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and `Staff` is local.
import logging
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import Field, StringConstraints

from herald_shared.contract import Event
from herald_shared.contract.delivery import BounceClass, StaffViewedMessages, StaffViewedMessagesPayload
from herald_shared.contract.envelope import AccountId, EmailHash, Identifier
from herald_shared.http import answers, problem, problems
from herald_shared.kafka import TRANSIENT_ERRORS
from herald_shared.mongo import Document
from herald_shared.request_fields import Out
from herald_shared.staff import StaffTokens, staff_member

from . import domain
from .domain import PRODUCER, AccountState, Gate, LookupCursor, MessageState, QueuedCampaign

log = logging.getLogger(__name__)

CONFIRMATIONS_SHOWN = 20  # the newest of a person's confirmation emails, on a look-up's first page
CAMPAIGNS_PER_READ = 200  # campaigns whose message ids go to the ledger in one read (times the memberships)


class AttemptOut(Out):
    attempt: int = Field(ge=1)
    at: datetime = Field(description="When its outcome was recorded.")
    outcome: Literal["sent", "bounced", "deferred", "skipped", "cancelled"]
    smtp_code: int | None = Field(description="The relay's reply code; null when the relay was not asked (skipped, "
                                              "cancelled) or the connection failed.")
    smtp_reply: str | None = Field(description="The relay's reply as recorded (addresses taken out).")
    bounce_class: BounceClass | None
    reason: str | None = Field(description="Why it was not sent (skipped, cancelled: `member_unsubscribed`, "
                                           "`campaign_cancelled`...), or why its event could not be made.")
    next_attempt_at: datetime | None = Field(description="Deferred: when it was to be tried again.")


class MessageOut(Out):
    message_id: str
    kind: Literal["campaign", "confirmation"]
    campaign_id: str | None
    campaign_queued_at: datetime | None
    subscriber_id: str | None = Field(description="The membership it went (or goes) to.")
    list_id: str | None
    created_at: datetime | None = Field(description="When it was made: the campaign's expansion, or the "
                                                    "confirmation's request.")
    in_doubt: bool = Field(description="The process died during one of its SMTP transactions and it was sent again: "
                                       "the person may have got it twice.")
    state: MessageState = Field(description=(
        "sent, bounced, skipped, cancelled: its final outcome; deferred: tried, to be tried again at "
        "`next_attempt_at`; held: a closed gate holds it (`held_by`, `reason`); queued: waiting for its turn (or "
        "its send time, `next_attempt_at`)."))
    final: bool = Field(description="The state is a final outcome in the ledger; false: it is pending, and the "
                                    "state is what the stored account and campaign make of it (a cancelled "
                                    "campaign's is recorded cancelled when the sender comes to it).")
    bounce_class: BounceClass | None
    reason: str | None = Field(description="Why it was skipped, cancelled or is held.")
    held_by: Gate | None
    next_attempt_at: datetime | None
    attempts: list[AttemptOut] = Field(description="Every attempt recorded, oldest first.")
    reported_bounces: list[BounceClass] = Field(description=(
        "Bounce classes that reports to the inbound server gave it after the relay accepted it (when they came "
        "is not kept)."))


class MembershipOut(Out):
    subscriber_id: str
    list_id: str | None
    status: str = Field(description="As delivery's audience holds it now: pending, active, unsubscribed, "
                                    "suppressed or erased. A campaign reaches the active members of its list.")
    erased_at: datetime | None = Field(description=(
        "Erased: when (none of its messages or confirmations is shown). Any other status: when an earlier "
        "membership under this subscriber id was erased (its messages, made before then, are not shown). Null when "
        "none was, or it was erased before delivery kept the time."))


class LookedUpOut(Out):
    subscriber_id: str | None
    email_sha256: str | None
    erased_at: datetime | None = Field(description=(
        "By address: when memberships of it were last erased. An erased membership is no longer tied to the "
        "address, so it is not listed under `memberships`; null when none was (or by subscriber id)."))


class MessagesOut(Out):
    account_id: str
    looked_up: LookedUpOut
    memberships: list[MembershipOut] = Field(description="The memberships looked at: the subscriber's, or every "
                                                         "membership of the address in the account that is not "
                                                         "erased.")
    messages: list[MessageOut] = Field(description=(
        "Campaign messages of these memberships, newest campaign first; none of an erased membership, nor any made "
        "before the erasure of an earlier membership under the same subscriber id. A campaign that has none was "
        "not sent to them: they were not active members of its list (or its segment) when it was expanded."))
    confirmations: list[MessageOut] | None = Field(description=(
        f"First page only (null after): the newest {CONFIRMATIONS_SHOWN} confirmation emails of these "
        "memberships that are keyed under them (not after an erasure). Account notices go to the customer, not "
        "the person, and test sends name an address, not a subscriber: neither is here."))
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class StaffReads(Protocol):
    """What a look-up reads (DeliveryStore): every read by `_id`, an `_id` range or `$in`, none a scan."""

    async def accounts(self, account_ids: Collection[str]) -> dict[str, AccountState]: ...

    async def memberships(self, account_id: str, *, subscriber_id: str | None = None,
                          email_sha256: str | None = None) -> tuple[list[Document], datetime | None]: ...

    async def queued_campaigns(self, account_id: str) -> list[QueuedCampaign]: ...

    async def ledger_jobs(self, message_ids: Collection[str]) -> dict[str, Document]: ...

    async def attempts(self, message_ids: Sequence[str]) -> dict[str, list[Document]]: ...

    async def reported_bounces(self, message_ids: Collection[str]) -> dict[str, list[str]]: ...

    async def confirmation_jobs(self, account_id: str, subscriber_ids: Sequence[str], most: int) -> list[Document]: ...

    async def account_sent_counts(self, account_id: str) -> dict[str, int]: ...


class Publisher(Protocol):
    async def publish(self, event: Event) -> object: ...


async def campaign_messages(reads: StaffReads, account_id: str, subscriber_ids: Sequence[str],
                            cursor: LookupCursor | None, limit: int,
                            erased_before: Mapping[str, datetime] | None = None,
                            ) -> tuple[list[tuple[QueuedCampaign, Document]], LookupCursor | None]:
    """A page of the memberships' campaign messages in answer order, and the cursor after it (None: the last).
    No index lists a person's messages, but each one's id is known: `message_id_for(account, campaign,
    subscriber)`. So the account's queued campaigns are read (an `_id` range), and the ids of each with each
    membership asked of the ledger by `_id`, CAMPAIGNS_PER_READ campaigns at a time, until one more than `limit`
    is found (there is a next page) or no campaign is left. `erased_before`: of a subscriber id whose earlier
    membership was erased, when: its messages made before then are that person's, not this one's, and left out."""
    campaigns = domain.newest_first(await reads.queued_campaigns(account_id), cursor)
    found: list[tuple[QueuedCampaign, Document]] = []
    for start in range(0, len(campaigns), CAMPAIGNS_PER_READ):
        part = campaigns[start:start + CAMPAIGNS_PER_READ]
        ids = {c.campaign_id: [domain.message_id_for(account_id, c.campaign_id, s) for s in subscriber_ids]
               for c in part}
        jobs = await reads.ledger_jobs([message_id for of_one in ids.values() for message_id in of_one])
        for campaign in part:
            present = [message_id for message_id in ids[campaign.campaign_id]
                       if message_id in jobs and not domain.made_before_erasure(jobs[message_id], erased_before)]
            found += [(campaign, jobs[m]) for m in domain.still_to_come(campaign, present, cursor)]
        if len(found) > limit:
            break
    if len(found) <= limit:
        return found, None
    last_campaign, last_job = found[limit - 1]
    return found[:limit], LookupCursor.after(last_campaign, str(last_job["_id"]))


async def look_up(reads: StaffReads, account: AccountState, subscriber_ids: Sequence[str],
                  cursor: LookupCursor | None, limit: int,
                  erased_before: Mapping[str, datetime] | None = None) -> dict[str, Any]:
    """The messages, confirmations (first page) and next cursor of a look-up, each message with its attempts."""
    if not subscriber_ids:  # every membership looked at is erased: nothing of theirs is read
        return {"messages": [], "confirmations": None if cursor is not None else [], "next_cursor": None}
    page, after = await campaign_messages(reads, account.account_id, subscriber_ids, cursor, limit, erased_before)
    confirmations = [] if cursor is not None else [
        job for job in await reads.confirmation_jobs(account.account_id, subscriber_ids, CONFIRMATIONS_SHOWN)
        if not domain.made_before_erasure(job, erased_before)]
    message_ids = [str(job["_id"]) for _, job in page] + [str(job["_id"]) for job in confirmations]
    attempts = await reads.attempts(message_ids)
    accepted = [m for m in message_ids if any(a["outcome"] == "sent" for a in attempts.get(m, ()))]
    reported = await reads.reported_bounces(accepted) if accepted else {}
    allowance = domain.AllowanceAsStored(await reads.account_sent_counts(account.account_id), datetime.now(UTC)) \
        if account.allowance is not None else None

    def answer(job: Document, campaign: QueuedCampaign | None) -> dict[str, Any]:
        return domain.message_answer(job, attempts.get(job["_id"], []), account, campaign,
                                     reported.get(job["_id"], []), allowance)

    return {"messages": [answer(job, campaign) for campaign, job in page],
            "confirmations": None if cursor is not None else [answer(job, None) for job in confirmations],
            "next_cursor": after.text() if after is not None else None}


SubscriberQuery = Annotated[Identifier | None, Query(description="The membership to look up (exactly one of "
                                                                 "this and `email_sha256`).")]
PersonQuery = Annotated[EmailHash | None, Query(description=(
    "sha256 (64 lower-case hex digits) of the person's address lower-cased, as the event contract's "
    "`email_sha256`: every membership of the address in the account (exactly one of this and `subscriber_id`). "
    "Staff never need the address itself."))]
Cursor = Annotated[str, StringConstraints(max_length=300, pattern=r"^[A-Za-z0-9._:/\-]*$")]
Limit = Annotated[int, Query(ge=1, le=200, description="Campaign messages per page.")]


def build_staff_api(reads: StaffReads, publisher: Publisher, staff_tokens: StaffTokens) -> APIRouter:
    """Platform staff only (a staff token, never a customer's key); every look-up is audit-logged first."""
    router = APIRouter(prefix="/v1/staff", responses=problems(401, 429), tags=["staff"])

    Staff = Annotated[str, Depends(staff_member(staff_tokens))]

    @router.get("/accounts/{account_id}/messages", response_model=None,
                responses={**answers(200, MessagesOut, "The person's messages in the account, and where each stands."),
                           **problems(404, 422, 503)})
    async def messages(account_id: AccountId, staff: Staff, subscriber_id: SubscriberQuery = None,
                       email_sha256: PersonQuery = None, cursor: Cursor | None = None, limit: Limit = 50) -> Response:
        """Support: was a person's message sent, when, and if not why (skipped, held by a gate, deferred,
        bounced). The look-up is published as StaffViewedMessages (the account's audit log) before anything of
        the person is read: 503 when it cannot be. 404 when delivery knows no such account (not audited: no data
        of an account is shown), or the account has no such subscriber or address (audited)."""
        if (subscriber_id is None) == (email_sha256 is None):
            return problem(422, "invalid_request", "name the person by exactly one of subscriber_id and email_sha256",
                           errors=[{"location": "query.subscriber_id", "message": "exactly one of subscriber_id and "
                                                                                 "email_sha256 is required"}])
        try:
            after = None if cursor is None else LookupCursor.read(cursor)
        except domain.CursorInvalid as exc:
            return problem(422, "invalid_request", "the request is not valid",
                           errors=[{"location": "query.cursor", "message": str(exc)}])
        account = (await reads.accounts([account_id])).get(account_id)
        if account is None:
            return problem(404, "unknown_account", "Delivery knows no account of this id (never opened, or purged).")
        try:
            await publisher.publish(StaffViewedMessages(account_id=account_id, producer=PRODUCER,
                                                        payload=StaffViewedMessagesPayload(
                                                            staff=staff, subscriber_id=subscriber_id,
                                                            email_sha256=email_sha256)))
        except TRANSIENT_ERRORS:
            return problem(503, "audit_unavailable", "The look-up could not be recorded in the audit log; retry.")
        log.info("staff read account data", extra={"staff": staff, "account_id": account_id, "what": "messages"})
        memberships, address_erased_at = await reads.memberships(account_id, subscriber_id=subscriber_id,
                                                                 email_sha256=email_sha256)
        if not memberships and address_erased_at is None:
            return problem(404, "unknown_subscriber", "The account has no such subscriber, nor any membership of "
                                                      "this address.")
        # An erased membership is shown as erased and when, and nothing of it is read: its messages are no longer
        # the person's to look up (PRODUCT.md, "Subject rights"); the ledger keeps them for the counts alone.
        live = [m for m in memberships if m["status"] != "erased"]
        found = await look_up(reads, account, [str(m["subscriber_id"]) for m in live], after, limit,
                              {str(m["subscriber_id"]): m["erased_at"] for m in live if m.get("erased_at")})
        body = MessagesOut.model_validate({
            "account_id": account_id,
            "looked_up": {"subscriber_id": subscriber_id, "email_sha256": email_sha256, "erased_at": address_erased_at},
            "memberships": [{"subscriber_id": m["subscriber_id"], "list_id": m.get("list_id"),
                             "status": m["status"], "erased_at": m.get("erased_at")} for m in memberships], **found})
        return JSONResponse(body.model_dump(mode="json"))

    return router
