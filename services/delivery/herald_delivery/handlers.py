"""Handlers of the events delivery consumes: they keep the gates and campaigns, expand audiences into jobs,
turn test-send requests into test jobs, and confirmation requests and account events into transactional
jobs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from herald_shared import correlation
from herald_shared.campaign_links import tracked_links
from herald_shared.contract import Event
from herald_shared.contract.billing import (
    PasswordResetRequested,
    PaymentFailed,
    SendingBlocked,
)
from herald_shared.contract.campaigns import (
    CampaignCancelled,
    CampaignQueued,
    CampaignRejected,
    CampaignsEvent,
    CampaignTestRequested,
)
from herald_shared.contract.compliance import AccountSuspended
from herald_shared.contract.subscriptions import ConfirmationRequested, MembershipNoticeRequested, SubscriberErased
from herald_shared.kafka import TRANSIENT_ERRORS, Reject
from herald_shared.mongo import Document
from herald_shared.password_reset import ResetLinks
from herald_shared.sent import SENT_KINDS

from . import domain, metrics
from .completion import CampaignCompletion
from .customer_dkim import CUSTOMER_DKIM_EVENTS, CustomerDkim
from .domain import AccountState, CampaignState, Gate, MessageFlow
from .queue import JobQueue
from .store import DeliveryStore, scoped

log = logging.getLogger(__name__)
EXPANSION_CHUNK = 1000
EXPANSION_RETRY_SECONDS = 5.0
EXPANSION_ATTEMPTS = 3  # for failures other than the infrastructure's


class GateBook:
    """The sending gates of every account and campaign, in memory, for the sender to ask before each
    message. The control consumer closes a gate as it handles the event, before anything is written, so a
    suspension takes effect at once; it opens one only once the store holds what opens it
    (`account_until_stored`), so an event the store refuses, then dead-lettered, never lets a message out.
    `changed` wakes the sender when a gate opens or new jobs exist.

    The send allowance is a gate with a counter: per account, the lifetime counts of the sender's messages that
    billing counts as sent (`sent`, by kind: loaded at start, one more with each such outcome) and the messages
    that started their SMTP transaction and have no outcome yet (`in_flight`). A worker reserves its message
    (`reserve`) immediately before its transaction, and `settle`s it with the outcome: counted, or given back.
    From the allowance's `until` on (by `clock`), nothing counted starts until billing tells a newer one."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.accounts: dict[str, AccountState] = {}
        self.campaigns: dict[str, CampaignState] = {}
        # The flow of each campaign known here (`MessageFlow`: its CampaignQueued's), by `account:campaign`: the
        # sender's events about its messages carry it, and its log lines name it.
        self.flows: dict[str, MessageFlow] = {}
        self.changed = asyncio.Event()
        self.sent: dict[str, dict[str, int]] = {}
        self.in_flight: dict[str, dict[str, int]] = {}

    def account(self, account_id: str) -> AccountState:
        return self.accounts.get(account_id) or AccountState(account_id)

    def campaign(self, account_id: str, campaign_id: str) -> CampaignState:
        return self.campaigns.get(scoped(account_id, campaign_id)) or CampaignState(campaign_id)

    def closed(self, key: str) -> None:
        """A campaign (`account:campaign`) closed: every message of it has ended, and its end is announced."""
        self.campaigns.pop(key, None)
        self.flows.pop(key, None)

    def flow(self, account_id: str, campaign_id: str | None) -> MessageFlow | None:
        """The campaign's flow, if it has one (None for a message of no campaign)."""
        return self.flows.get(scoped(account_id, campaign_id)) if campaign_id else None

    def forget_account(self, account_id: str) -> None:
        """Retention: what is known of the account and its campaigns. Its gates are closed from then on (an
        unknown account is not approved), for any message still on its way."""
        self.accounts.pop(account_id, None)
        for key in [k for k in self.campaigns if k.startswith(account_id + ":")]:
            del self.campaigns[key]
        for key in [k for k in self.flows if k.startswith(account_id + ":")]:
            del self.flows[key]
        self.sent.pop(account_id, None)

    def gate_for(self, account_id: str, campaign_id: str | None) -> Gate | None:
        campaign = self.campaign(account_id, campaign_id) if campaign_id else None
        account = self.account(account_id)
        gate = domain.closed_gate(account, campaign)
        if gate is None and self.allowance_holds(account_id, "campaign"):
            return "send_allowance"
        return gate

    def _sent(self, account_id: str) -> dict[str, int]:
        """The account's own counts, never below what billing counted (a count lost with a crash, or a ledger
        older than the counts, would otherwise let its next sends go uncounted against the allowance)."""
        sent = self.sent.setdefault(account_id, {})
        allowance = self.account(account_id).allowance
        if allowance is not None:
            for kind in SENT_KINDS:
                if allowance.as_of(kind) > sent.get(kind, 0):
                    sent[kind] = allowance.as_of(kind)
        return sent

    def room(self, account_id: str) -> int | None:
        """How many more messages of a counted kind may start now (None: no limit)."""
        return domain.allowance_room(self.account(account_id).allowance, self._sent(account_id),
                                     self.in_flight.get(account_id, {}), self.clock())

    def allowance_holds(self, account_id: str, kind: str) -> bool:
        allowance = self.account(account_id).allowance
        if allowance is None or kind not in allowance.counts:
            return False  # asked before every message: no counts looked at where nothing limits
        return domain.allowance_holds(allowance, kind, self._sent(account_id), self.in_flight.get(account_id, {}),
                                      self.clock())

    def reserve(self, account_id: str, kind: str) -> bool | None:
        """Immediately before a message's SMTP transaction: True when reserved (its kind counts here), None when
        its kind takes nothing from an allowance, False when no room is left (it must not start)."""
        allowance = self.account(account_id).allowance
        if allowance is None or allowance.remaining is None or kind not in allowance.counts:
            return None
        if self.allowance_holds(account_id, kind):
            return False
        flying = self.in_flight.setdefault(account_id, {})
        flying[kind] = flying.get(kind, 0) + 1
        return True

    def settle(self, account_id: str, kind: str, reserved: bool | None, counted: bool) -> int | None:
        """The outcome of a message is known: its reservation ends, and when billing counts it as sent, the account's
        count of its kind grows by one; returns that count (None when not counted). A reservation given back (a
        deferral, a failure before the relay answered) may open the gate: the sender is woken."""
        if reserved:
            flying = self.in_flight.get(account_id, {})
            left = flying.get(kind, 0) - 1
            if left > 0:
                flying[kind] = left
            else:
                flying.pop(kind, None)
                if not flying:
                    self.in_flight.pop(account_id, None)
            if not counted:
                self.changed.set()
        if not counted:
            return None
        sent = self._sent(account_id)
        sent[kind] = sent.get(kind, 0) + 1
        return sent[kind]

    def note_sent(self, account_id: str, kind: str, count: int) -> None:
        """A count read back (at start: the stored counts, and outcomes recorded after them); never lowers one."""
        sent = self.sent.setdefault(account_id, {})
        sent[kind] = max(sent.get(kind, 0), count)


def account_until_stored(current: AccountState, staged: AccountState,
                         sent: Mapping[str, int] | None = None) -> AccountState:
    """What the gate book shows of an account while its `staged` state waits for the flush: each gate closed
    in either closed (a suspension or a block at once; the smaller send allowance, `sent` being the account's
    own counts), none opened yet, everything else as `current`."""
    suspended_by = staged if staged.suspended else current
    return replace(current, approved=current.approved and staged.approved,
                   suspended=suspended_by.suspended, suspension_reason=suspended_by.suspension_reason,
                   suspension_event_id=suspended_by.suspension_event_id,
                   blocked_reasons=current.blocked_reasons | staged.blocked_reasons,
                   allowance=domain.tighter_allowance(current.allowance, staged.allowance, sent or {}))


def campaign_until_stored(current: CampaignState, staged: CampaignState) -> CampaignState:
    """The same for a campaign: review asked, a rejection or a cancellation at once; an approval once stored."""
    return replace(staged, review_required=current.review_required or staged.review_required,
                   approved=current.approved and staged.approved, rejected=current.rejected or staged.rejected,
                   cancelled=current.cancelled or staged.cancelled)


GATES_WAIT_SECONDS = 60  # how long a notice waits for the control consumer to know the account's address


class AudienceJobs:
    """On herald.subscriptions (next to the audience projection): a ConfirmationRequested becomes the
    confirmation email's job, a MembershipNoticeRequested the customer's notice (to the account's registered
    address, which the control consumer's gates know); an erasure removes the address from jobs that hold it."""

    def __init__(self, store: DeliveryStore, jobs: JobQueue, gates: GateBook,
                 gates_caught_up: Callable[[], Awaitable[None]] | None = None) -> None:
        self._store = store
        self._jobs = jobs
        self._gates = gates
        self._gates_caught_up = gates_caught_up
        # What the batch asks for, in order: a job to add (a document), or another write (an erasure).
        self._staged: list[Document | Callable[[], Awaitable[None]]] = []

    async def handle(self, event: Event) -> None:
        if isinstance(event, ConfirmationRequested):
            p = event.payload
            job = new_job(domain.transactional_message_id("confirmation", str(event.event_id)), event.account_id,
                          "confirmation", event.occurred_at, subscriber_id=p.subscriber_id, list_id=p.list_id,
                          recipient=str(p.email), list_name=p.list_name, company_name=p.company_name,
                          confirm_url=str(p.confirm_url), expires_at=p.expires_at, flow=MessageFlow.of(event).stored())
            # p.greeting_name is not kept: the confirmation greets no one by name (sender.confirmation_text).
            self._staged.append(job)
        elif isinstance(event, MembershipNoticeRequested):
            owner = self._gates.account(event.account_id)
            if not owner.registered_email and self._gates_caught_up is not None:
                # The control consumer folds AccountOpened; after a restart with a backlog it may be behind
                # this one: wait until it has applied what billing held now, then look again.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(GATES_WAIT_SECONDS):
                        await self._gates_caught_up()
                owner = self._gates.account(event.account_id)
            if not owner.registered_email:
                raise Reject(f"{event.type} asks for a notice, but no AccountOpened gave account "
                             f"{event.account_id!r} a registered address")
            subject, text = membership_notice_text(event)
            notice = new_job(domain.transactional_message_id("account_notice", str(event.event_id)),
                             event.account_id, "account_notice", event.occurred_at,
                             recipient=owner.registered_email, subject=subject, text=text,
                             # Named, not mailed: an erasure of the member reaches it (`store.erasable_by`),
                             # and its outcome events name no subscriber (a bounce of the customer's mailbox
                             # must not suppress the member).
                             about_subscriber_id=event.payload.subscriber_id, flow=MessageFlow.of(event).stored())
            self._staged.append(notice)
        elif isinstance(event, SubscriberErased):
            account, subscriber = event.account_id, event.payload.subscriber_id
            self._staged.append(lambda: self._forget(account, subscriber))

    async def _forget(self, account_id: str, subscriber_id: str) -> None:
        await self._store.forget_recipient(account_id, subscriber_id)
        self._jobs.forget_recipient(account_id, subscriber_id)

    async def flush(self) -> None:
        """What the batch staged, in its order; each run of new jobs in one insert (a job at a time took three
        writes each: an import's 2,000 confirmations were written at 137 a second on FerretDB under load, 5,941 a
        second in runs of 500). An erasure between two runs still comes after the first and before the second."""
        while self._staged:
            run: list[Document] = []
            for staged in self._staged:
                if not isinstance(staged, dict):
                    break
                run.append(staged)
            if run:
                self._jobs.push(await self._store.add_jobs(run))
                del self._staged[:len(run)]
            else:
                write = self._staged[0]
                assert not isinstance(write, dict)
                await write()
                self._staged.pop(0)

    async def forget(self) -> None:
        """What the batch staged and did not write yet (a job is queued only once written: nothing else to
        undo); its events come again, and what was written of them is found there (job ids are the events')."""
        self._staged = []


@dataclass(frozen=True)
class Expansion:
    """What expanding a campaign needs: from its CampaignQueued, or after a restart from its document.
    `generation` tells a campaign's expansions apart when it is queued again while one waits or runs."""

    account_id: str
    campaign_id: str
    list_id: str
    segment: dict[str, Any]
    not_before: datetime
    token: str  # the campaign document's `expansion_pending`: only this expansion's end may clear it
    generation: int = 0
    flow: MessageFlow | None = None  # the campaign's: what the expansion logs (and announces) is of it

    @classmethod
    def of(cls, event: CampaignQueued) -> Expansion:
        p = event.payload
        return cls(event.account_id, p.campaign_id, p.list_id, dict(p.segment.field_equals),
                   p.send_at or event.occurred_at, str(event.event_id), flow=MessageFlow.of(event))

    @classmethod
    def of_document(cls, doc: Document) -> Expansion:
        return cls(doc["account_id"], doc["state"]["campaign_id"], doc["list_id"], dict(doc.get("segment") or {}),
                   doc.get("send_at") or doc["queued_at"], str(doc["expansion_pending"]),
                   flow=MessageFlow.from_document(doc))

    @property
    def key(self) -> tuple[str, str]:
        return self.account_id, self.campaign_id


class Expansions:
    """Campaign expansions, one at a time in the order they were queued, beside the control consumer rather
    than inside it. Expanding a large list takes seconds (a million members about a minute), and meanwhile
    the control consumer must go on closing gates: a suspension behind an expansion would otherwise wait for
    it, and the suspended account's messages would go on going out.

    The control consumer's checkpoint therefore passes a CampaignQueued before its expansion is done: the
    campaign's document says `expansion_pending` until its expansion has written every job, and a restart
    takes those up again (`ControlHandler.load`).
    - A campaign queued again while its expansion waits replaces it; while it runs, the running one is
      superseded (`latest`): it does not mark the campaign expanded, the newer one does.
    - An infrastructure failure (MongoDB or Kafka away, the audience not caught up in time) is waited out:
      tried again after `retry_seconds`, before any other. Any other failure is tried `attempts` times, then
      the expansion is given up until the next start (the campaign stays `expansion_pending`, and says why in
      `expansion_failed`), so one bad campaign does not hold up every other.
    - A purge of the account (`forget_account`) drops its expansions and waits until one under way has
      stopped, its last insert included."""

    def __init__(self, expand: Callable[[Expansion], Awaitable[None]],
                 give_up: Callable[[Expansion, str], Awaitable[None]] | None = None,
                 retry_seconds: float = EXPANSION_RETRY_SECONDS, attempts: int = EXPANSION_ATTEMPTS) -> None:
        self._expand = expand
        self._give_up = give_up
        self._retry_seconds = retry_seconds
        self._attempts = attempts
        self._pending: deque[Expansion] = deque()
        self._current: Expansion | None = None
        self._latest: dict[tuple[str, str], int] = {}
        self._generations = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # forget_account and stop, one at a time
        self._stopped = False
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        """Expansions waiting or under way."""
        return len(self._pending) + (self._current is not None)

    def latest(self, expansion: Expansion) -> bool:
        """Whether no newer expansion of its campaign was submitted since."""
        return self._latest.get(expansion.key) == expansion.generation

    def submit(self, expansion: Expansion) -> None:
        expansion = replace(expansion, generation=next(self._generations))
        self._latest[expansion.key] = expansion.generation
        self._pending = deque(e for e in self._pending if e.key != expansion.key)
        self._pending.append(expansion)
        self._ensure_task()

    async def idle(self) -> None:
        """Wait until no expansion is waiting or under way."""
        await self._idle.wait()

    async def forget_account(self, account_id: str) -> None:
        """Retention: the account's expansions are dropped, and one under way is stopped before this returns,
        for every caller (it must not write jobs after the account's ledger is purged)."""
        async with self._lock:
            self._pending = deque(e for e in self._pending if e.account_id != account_id)
            self._latest = {k: g for k, g in self._latest.items() if k[0] != account_id}
            if self._current is not None and self._current.account_id == account_id:
                await self._cancel()
            self._ensure_task()

    async def stop(self) -> None:
        """At shutdown: stop the expansion under way (its campaign stays pending, for the next start)."""
        async with self._lock:
            self._stopped = True
            await self._cancel()

    def _ensure_task(self) -> None:
        if self._pending and self._task is None and not self._stopped:
            self._idle.clear()
            self._task = asyncio.create_task(self._run(), name="campaign-expansions")
        elif self._task is None:
            self._idle.set()  # nothing runs (stopped, or nothing waits): nobody waits for it in vain

    async def _cancel(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # not gather: a cancel of this caller must not cancel the task again

    async def _run(self) -> None:
        failures: dict[int, int] = {}  # by generation: what other expansions did is not held against one
        try:
            while self._pending:
                expansion = self._current = self._pending.popleft()
                # Its own flow: this task runs in the flow of the CampaignQueued that started it, not of the others.
                with correlation.flow(expansion.flow.correlation_id if expansion.flow is not None else None):
                    try:
                        await self._expand(expansion)
                        self._done(expansion, failures)
                    except TRANSIENT_ERRORS:
                        metrics.EXPANSION_FAILURES.inc()
                        log.warning("expanding a campaign hit an infrastructure error; trying again", exc_info=True,
                                    extra={"account": expansion.account_id, "campaign": expansion.campaign_id})
                        self._retry(expansion)
                        await asyncio.sleep(self._retry_seconds)
                    except Exception as exc:
                        metrics.EXPANSION_FAILURES.inc()
                        failed = failures[expansion.generation] = failures.get(expansion.generation, 0) + 1
                        log.exception("expanding a campaign failed", extra={
                            "account": expansion.account_id, "campaign": expansion.campaign_id, "attempt": failed})
                        if failed < self._attempts:
                            self._retry(expansion)
                            await asyncio.sleep(self._retry_seconds)
                            continue
                        self._done(expansion, failures)
                        await self._given_up(expansion, f"{type(exc).__name__}: {exc}")
                    finally:
                        self._current = None
        finally:
            if asyncio.current_task() is self._task:
                self._task = None
            if not self._pending:
                self._idle.set()

    def _done(self, expansion: Expansion, failures: dict[int, int]) -> None:
        failures.pop(expansion.generation, None)
        if self.latest(expansion):
            del self._latest[expansion.key]

    async def _given_up(self, expansion: Expansion, reason: str) -> None:
        if self._give_up is None:
            return
        try:
            await self._give_up(expansion, reason)
        except Exception:  # only recording why: the expansions go on
            log.exception("could not record why a campaign's expansion was given up",
                          extra={"account": expansion.account_id, "campaign": expansion.campaign_id})

    def _retry(self, expansion: Expansion) -> None:
        """Before any other, unless the campaign was queued again meanwhile."""
        if not any(e.key == expansion.key for e in self._pending):
            self._pending.appendleft(expansion)
        self._current = None


def new_job(message_id: str, account_id: str, kind: domain.MessageKind, not_before: datetime,
            **fields: Any) -> Document:
    return {"_id": message_id, "account_id": account_id, "kind": kind, "attempts": 0, "first_attempt_at": None,
            "next_attempt_at": not_before, "created_at": datetime.now(UTC), **fields}


class ControlHandler:
    """On herald.billing, herald.compliance and herald.campaigns: folds the gates and campaigns, expands a
    queued campaign into one job per recipient, and asks for account notices.

    What handle() stages waits for the flush: the accounts' and campaigns' states (shown in the gate book
    closed at once, opened once stored: `account_until_stored`), the notices' jobs (queued once written) and
    the cancelled campaigns' later jobs brought forward (once the cancellation is stored). A CampaignQueued
    and a CampaignTestRequested are written by handle() itself, and only then take effect in memory (the
    campaign's state, its expansion, the jobs). So `forget` (`kafka.ForgetfulHandler`) has nothing to undo but
    the staged states: it drops them and reads what the store holds of their accounts and campaigns back into
    the gate book."""

    def __init__(self, store: DeliveryStore, gates: GateBook, jobs: JobQueue,
                 audience_caught_up: Callable[[], Awaitable[None]],
                 completion: CampaignCompletion | None = None, reset_links: ResetLinks | None = None,
                 customer_dkim: CustomerDkim | None = None) -> None:
        self._store = store
        self._customer_dkim = customer_dkim  # None: customers' DKIM keys are off (no HERALD_DKIM_ENCRYPTION_KEY)
        self._reset_links = reset_links or ResetLinks(None, "")  # without a key no reset link is mailed
        self._completion = completion
        self._gates = gates
        self._queue = jobs
        self._audience_caught_up = audience_caught_up
        self._dirty_accounts: dict[str, AccountState] = {}
        self._dirty_campaigns: dict[str, Document] = {}
        self._bring_forward: set[tuple[str, str]] = set()  # campaigns called off: their later jobs, once stored
        self._jobs: list[Document] = []
        self.expansions = Expansions(self._expand_campaign, self._expansion_failed)
        metrics.EXPANSIONS.set_function(lambda: len(self.expansions))

    async def load(self) -> None:
        """At start-up: the gates (of the open campaigns: any other is read when an event names it), and the
        expansions a stop or crash interrupted, taken up again."""
        self._gates.accounts = {s.account_id: s for s in await self._store.all_accounts()}
        self._gates.flows = {}
        self._gates.campaigns, pending = await self._store.campaigns_at_start(flows=self._gates.flows)
        for doc in pending:
            expansion = Expansion.of_document(doc)
            if self._completion is not None:
                self._completion.expanding(expansion.account_id, expansion.campaign_id)
            self.expansions.submit(expansion)

    async def handle(self, event: Event) -> None:
        account_id = event.account_id
        before = self._dirty_accounts.get(account_id) or self._gates.account(account_id)
        after = domain.evolve_account(before, event)
        if after != before:
            self._dirty_accounts[account_id] = after
            self._gates.accounts[account_id] = account_until_stored(self._gates.account(account_id), after,
                                                                    self._gates.sent.get(account_id))
        if self._customer_dkim is not None and isinstance(event, CUSTOMER_DKIM_EVENTS):
            await self._customer_dkim.handle(event)  # written at once: nothing staged for `flush` or `forget`
        if isinstance(event, CampaignTestRequested):
            await self._test_requested(event)
        elif isinstance(event, CampaignsEvent):
            await self._campaign_event(event)
        await self._notice_for(event, after)

    async def _campaign_event(self, event: CampaignsEvent) -> None:
        campaign_id = str(getattr(event.payload, "campaign_id", ""))
        key = scoped(event.account_id, campaign_id)
        doc = self._dirty_campaigns.get(key) or await self._store.campaign(event.account_id, campaign_id) or {
            "_id": key, "account_id": event.account_id, "state": CampaignState(campaign_id).__dict__}
        state = domain.evolve_campaign(CampaignState(**doc["state"]), event)
        doc = {**doc, "state": dict(state.__dict__)}
        if isinstance(event, CampaignQueued):
            p = event.payload
            doc.update(list_id=p.list_id, content=p.content.model_dump(mode="json"),
                       segment=p.segment.field_equals, links=tracked_links(p.content.html_body),
                       send_at=p.send_at, queued_at=event.occurred_at)
            doc.pop("expanded_jobs", None)  # written again when this expansion has written every job
            doc["expansion_pending"] = str(event.event_id)  # cleared by this expansion's end only
            flow = MessageFlow.of(event)
            doc["flow"] = flow.stored()  # an additive field: a document without it is a campaign of no flow
            # Written before its jobs exist: the sender renders from this document as soon as they do.
            await self._store.save_campaigns([doc])
            self._dirty_campaigns.pop(key, None)
            self._gates.campaigns[key] = state
            self._gates.flows[key] = flow
            if self._completion is not None:
                self._completion.expanding(event.account_id, campaign_id)
            self.expansions.submit(Expansion.of(event))
        else:
            self._dirty_campaigns[key] = doc
            self._gates.campaigns[key] = campaign_until_stored(self._gates.campaign(event.account_id, campaign_id),
                                                               state)
        if isinstance(event, CampaignCancelled | CampaignRejected):
            # The sender records each queued message of it as cancelled when it comes to it (at once: the gate
            # book says so already); those due later (scheduled, or deferred for a retry) are brought forward
            # once the cancellation is stored (`flush`): brought forward by one the store then refused, they
            # would go out before their time.
            self._bring_forward.add((event.account_id, campaign_id))
            if isinstance(event, CampaignCancelled):
                log.info("campaign cancelled", extra={"campaign": key})
            self._gates.changed.set()

    async def _expand_campaign(self, expansion: Expansion) -> None:
        """Expand, then say so: the campaign can end once its jobs have (`expanded_jobs`, which also ends
        `expansion_pending`), unless it was queued again meanwhile (the newer expansion says so). A
        cancellation or rejection handled while it expanded brings its later jobs forward, as one handled
        after it does."""
        jobs = await self._expand(expansion)
        if not self.expansions.latest(expansion):
            return
        e = expansion
        if self._completion is not None:
            await self._completion.expanded(e.account_id, e.campaign_id, jobs, e.token,
                                            still_latest=lambda: self.expansions.latest(e))
        else:
            await self._store.mark_expanded(e.account_id, e.campaign_id, jobs, e.token)
        state = self._gates.campaign(expansion.account_id, expansion.campaign_id)
        if state.cancelled or state.rejected:
            self._queue.bring_forward(expansion.account_id, expansion.campaign_id, datetime.now(UTC))
        self._gates.changed.set()

    async def _expansion_failed(self, expansion: Expansion, reason: str) -> None:
        """Given up until the next start: the campaign says why (it stays `expansion_pending`)."""
        await self._store.expansion_failed(expansion.account_id, expansion.campaign_id, reason)

    def _called_off(self, expansion: Expansion) -> bool:
        """Whether the campaign was cancelled or rejected (as the control consumer has handled so far)."""
        state = self._gates.campaign(expansion.account_id, expansion.campaign_id)
        return state.cancelled or state.rejected

    async def _expand(self, expansion: Expansion) -> int:
        """One job per member who receives it, as of the audience projection having caught up with
        herald.subscriptions when the expansion starts; returns how many it wrote. Jobs have deterministic
        ids: expanding again (a redelivered event, a restart) adds only what is missing. Stopped (a purge, the
        service's stop), it returns only once its insert under way has ended: jobs written after a purge
        would outlive it. A campaign cancelled or rejected before its expansion starts gets no jobs, and one
        called off while it expands gets no more: the jobs written already are recorded cancelled by the
        sender (a million of them one by one, before, for a campaign cancelled while it waited)."""
        await self._audience_caught_up()
        e = expansion
        if self._called_off(e):
            log.info("campaign called off before its expansion: no jobs", extra={"campaign": e.campaign_id})
            return 0
        if await self._store.list_deleted(e.account_id, e.list_id):
            log.warning("campaign queued for a deleted list: no recipients", extra={"list": e.list_id})
            return 0
        batch: list[Document] = []
        written = 0
        # One chunk is inserted while the next is read: the store works on both at once.
        inserting: asyncio.Task[None] | None = None
        try:
            async for subscriber_id in self._recipients(e):
                batch.append(new_job(domain.message_id_for(e.account_id, e.campaign_id, subscriber_id),
                                     e.account_id, "campaign", e.not_before, campaign_id=e.campaign_id,
                                     campaign_key=scoped(e.account_id, e.campaign_id),
                                     subscriber_id=subscriber_id, list_id=e.list_id))
                if len(batch) >= EXPANSION_CHUNK:
                    if inserting is not None:
                        await asyncio.shield(inserting)
                    if self._called_off(e):
                        batch = []
                        break
                    inserting, batch, written = asyncio.create_task(self._add_jobs(batch)), [], written + len(batch)
            if inserting is not None:
                await asyncio.shield(inserting)
            if batch and not self._called_off(e):
                inserting, written = asyncio.create_task(self._add_jobs(batch)), written + len(batch)
                await asyncio.shield(inserting)
        except BaseException:
            # An insert under way is let end, not cancelled (shielded above): the server may apply it anyway.
            if inserting is not None:
                await asyncio.wait({inserting})  # not gather: another cancel must not reach the insert
            raise
        if self._called_off(e):
            log.info("campaign called off during its expansion: no more jobs",
                     extra={"campaign": e.campaign_id, "jobs": written})
        return written

    async def _test_requested(self, event: CampaignTestRequested) -> None:
        """A test send: its content and sample stored first (the sender renders from them), then one job per
        address. Job ids are deterministic: a redelivered request sends nothing twice. Whether the account may
        send tests at all is asked when each is sent (`domain.gate_refusing_test`)."""
        p = event.payload
        key = scoped(event.account_id, p.test_id)
        await self._store.save_test_send({
            "_id": key, "account_id": event.account_id, "campaign_id": p.campaign_id, "test_id": p.test_id,
            "content": p.content.model_dump(mode="json"), "sample": p.sample, "requested_by": p.requested_by,
            "requested_at": event.occurred_at})
        recipients = {str(address).lower(): str(address) for address in p.recipients}
        # A person the account suppressed or who unsubscribed is not mailed by a test either (PRODUCT.md: only
        # confirmed, non-suppressed subscribers): the job is recorded skipped with why, as a refused test is.
        refused = await self._store.refused_test_recipients(event.account_id, recipients)
        await self._add_jobs([new_job(domain.message_id_for_test(event.account_id, p.test_id, lowered),
                                      event.account_id, "test", event.occurred_at, campaign_id=p.campaign_id,
                                      test_id=p.test_id, test_key=key, recipient=address,
                                      flow=MessageFlow.of(event).stored(),
                                      **({"refused": refused[lowered]} if lowered in refused else {}))
                              for lowered, address in recipients.items()])
        log.info("test send requested", extra={"campaign": p.campaign_id, "test": p.test_id,
                                               "recipients": len(recipients)})

    async def _recipients(self, e: Expansion) -> AsyncIterator[str]:
        """Who receives it. Without a segment, every member the list's listing holds as active: that is what
        `domain.receives` asks, so the members themselves are not read here (the sender reads each again
        before sending, and skips whoever unsubscribed, was suppressed or erased since). With a segment,
        the members are read and matched."""
        if not e.segment:
            async for page in self._store.active_member_ids(e.account_id, e.list_id):
                for subscriber_id in page:
                    yield subscriber_id
            return
        async for member in self._store.list_members(e.account_id, e.list_id):
            if domain.receives(member, e.list_id, e.segment, list_deleted=False):
                yield member.subscriber_id

    async def _add_jobs(self, jobs: list[Document]) -> None:
        self._queue.push(await self._store.add_jobs(jobs))

    async def _notice_for(self, event: Event, account: AccountState) -> None:
        """PRODUCT.md: a suspension, a block and a failed payment are emailed to the registered address; so is the
        link of a password reset (a member's too: users have no address of their own)."""
        if isinstance(event, PasswordResetRequested) and not self._reset_link_due(event):
            return
        subject, text = notice_text(event, account, self._reset_links)
        if subject is None or text is None:
            return
        if not account.registered_email:
            if event.account_id in self._dirty_accounts:
                # The suspension or block applies all the same (README), so it is stored now: the event goes to
                # the dead-letter topic and is not handed over again should its batch be set aside (`forget`).
                await self._store.save_accounts([account])
                self._gates.accounts[event.account_id] = account
                del self._dirty_accounts[event.account_id]
            raise Reject(f"{event.type} asks for a notice, but no AccountOpened gave account "
                         f"{event.account_id!r} a registered address")
        self._jobs.append(new_job(domain.transactional_message_id("account_notice", str(event.event_id)),
                                  event.account_id, "account_notice", event.occurred_at,
                                  recipient=account.registered_email, subject=subject, text=text,
                                  flow=MessageFlow.of(event).stored()))

    def _reset_link_due(self, event: PasswordResetRequested) -> bool:
        """A reset link is mailed only when it can work: with the key configured, and before it expires (a
        backlog may reach it late). Else it is no fault of the event's: logged and counted, not dead-lettered."""
        reason = ("password_reset_not_configured" if self._reset_links.key is None else
                  "password_reset_expired" if datetime.now(UTC) >= event.payload.expires_at else None)
        if reason is None:
            return True
        log.warning("password reset link not mailed", extra={"account_id": event.account_id, "reason": reason,
                                                             "request_id": event.payload.request_id})
        metrics.SKIPPED.labels(reason).inc()
        return False

    async def flush(self) -> None:
        """Write what handle() staged; each part takes effect in memory once written (gates open, jobs are
        queued)."""
        stored = False
        if self._dirty_accounts:
            states = [self._dirty_accounts[a] for a in sorted(self._dirty_accounts)]
            await self._store.save_accounts(states)
            self._gates.accounts.update((state.account_id, state) for state in states)
            self._dirty_accounts.clear()
            stored = True
        if self._dirty_campaigns:
            # Their state only: an expansion under way marks the same documents.
            await self._store.save_campaign_states(list(self._dirty_campaigns.values()))
            self._gates.campaigns.update((key, CampaignState(**doc["state"]))
                                         for key, doc in self._dirty_campaigns.items())
            self._dirty_campaigns.clear()
            stored = True
        now = datetime.now(UTC)
        for account_id, campaign_id in sorted(self._bring_forward):
            self._queue.bring_forward(account_id, campaign_id, now)
        self._bring_forward.clear()
        if self._jobs:
            self._queue.push(await self._store.add_jobs(self._jobs))
            self._jobs = []
        if stored:
            self._gates.changed.set()

    async def forget(self) -> None:
        """The store refused what the batch staged (`kafka.EventConsumer`): drop it, and put the gate book's
        accounts and campaigns it touched back as the store holds them (a flush that failed part way wrote
        some), so the events handed over again one at a time fold from there, and the gates of a refused one
        are neither opened nor left closed. Nothing else was done ahead of the store (see the class)."""
        accounts = sorted(self._dirty_accounts)
        campaigns = sorted(self._dirty_campaigns)
        stored_accounts = await self._store.accounts(accounts)
        stored_campaigns = await self._store.campaign_states(campaigns)
        for account_id in accounts:
            if account_id in stored_accounts:
                self._gates.accounts[account_id] = stored_accounts[account_id]
            else:
                self._gates.accounts.pop(account_id, None)
        for key in campaigns:
            if key in stored_campaigns:
                self._gates.campaigns[key] = stored_campaigns[key]
            else:
                self._gates.campaigns.pop(key, None)
        self._dirty_accounts.clear()
        self._dirty_campaigns.clear()
        self._bring_forward.clear()
        self._jobs = []


MEMBERSHIP_HOW = {"double_opt_in": "confirmed by the link in the confirmation email",
                  "form": "through the list's subscribe form", "api": "through the API",
                  "one_click": "with the one-click unsubscribe of an email", "unsubscribe_page":
                  "on the unsubscribe page", "preference_page": "on the preferences page",
                  "mailto": "by email to the unsubscribe address"}


def membership_notice_text(event: MembershipNoticeRequested) -> tuple[str, str]:
    """PRODUCT.md: the customer is notified of subscribes and unsubscribes when it asked to be."""
    p = event.payload
    verb, preposition = ("subscribed", "to") if p.change == "subscribed" else ("unsubscribed", "from")
    when = event.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Herald: {p.email} {verb} {preposition} {p.list_name}",
            f"Hello,\n\n{p.email} {verb} {preposition} your list {p.list_name} {MEMBERSHIP_HOW[p.how]}, on "
            f"{when}.\n\nYou get this email because the list's notifications are on "
            f"(PUT /v1/lists/{p.list_id}/notifications turns them off).\n")


def notice_text(event: Event, account: AccountState,
                reset_links: ResetLinks | None = None) -> tuple[str | None, str | None]:
    company = account.company_name or event.account_id
    if isinstance(event, PasswordResetRequested) and reset_links is not None:
        reset = event.payload
        link = reset_links.link(reset.request_id, reset.username, reset.expires_at)
        if link is None:
            return None, None
        return ("Herald: a password reset for " + reset.username,
                f"Hello,\n\nA password reset was asked for user {reset.username} of {company}.\n\nLink: {link}\n\n"
                "It works once, for one hour. If you did not ask, ignore this mail: the password stays as it "
                "is.\n\nThis mail goes to the account's registered address whichever of its users the reset is "
                "for.\n")
    if isinstance(event, AccountSuspended) and event.payload.notify_account:
        p = event.payload
        detail = ""
        if p.value is not None and p.threshold is not None:
            detail = f"\nMeasured {p.metric.replace('_', ' ')}: {p.value:.2%} (threshold {p.threshold:.2%}).\n"
        return ("Herald: sending is suspended for " + company,
                f"Hello,\n\nSending for the account {company} has been suspended.\n\nReason: {p.reason}\n{detail}\n"
                "Messages not yet sent are held, not dropped; they go out if staff reinstate the account.\n"
                "Reply to this email or contact support to ask for a review.\n")
    if isinstance(event, SendingBlocked) and event.payload.reason == "account_deleted":
        # Final: nothing held goes out later (the generic notice below would promise it does).
        return ("Herald: the account " + company + " is deleted",
                f"Hello,\n\nThe account {company} was deleted: nothing more is sent from it, and messages not yet "
                "sent will not go out. Its data is deleted 3 months from now.\n\nIf you did not ask for this, "
                "reply to this email or contact support at once.\n")
    if isinstance(event, SendingBlocked) and event.payload.reason != "payment_failed":
        # (A failed payment's notice is PaymentFailed's, below: one email, not two.)
        reason = event.payload.reason.replace("_", " ")
        return ("Herald: sending is paused for " + company,
                f"Hello,\n\nSending for the account {company} is paused: {reason}.\n"
                f"{event.payload.detail or ''}\n\nMessages not yet sent are held and go out once this is "
                "resolved (for example after an upgrade or a successful payment).\n")
    if isinstance(event, PaymentFailed):
        return ("Herald: your payment failed",
                f"Hello,\n\nThe automatic payment of {event.payload.amount_cents / 100:.2f} "
                f"{event.payload.currency} for {company} failed: {event.payload.reason}.\n"
                "Sending is suspended until a payment succeeds.\n")
    return None, None
