"""The sender: takes due jobs from the ledger, asks the gates, renders, sends over the relay pool, records
the outcome in the ledger, then publishes it.

Effectively once: each batch of jobs handed to the workers is listed in a claim document before any of
them is sent; each outcome is recorded (with its event) the moment the relay answers; the claim is
deleted once every job of the batch is done with (its outcome recorded, or put back unsent), in the
once-a-second round that also saves the published-watermark. Outcome events are published after recording
and, after a crash, published again from the last published-watermark on (their ids are deterministic, so
consumers drop copies). Jobs of a claim left open by a crash, without an outcome, are in doubt and are sent
again: the one window where that repeats a message is between the relay's 250 and the ledger write, measured
by herald_delivery_unrecorded_window_seconds (README, "Effectively once").

Gates bound: every worker asks the in-memory GateBook (gates, and whether the campaign was cancelled or
rejected) immediately before its SMTP transaction, after the rate-limit and the signing waits, and the control
consumer updates the book as it handles AccountSuspended or CampaignCancelled, so after that moment at most
`concurrency` messages (one per worker, already past its check) can still reach the relay.

Members the same way: a campaign message's member is read when its batch is handed out and read again after
the worker's rate-limit wait (or when that read is older than MEMBER_RECHECK_SECONDS), so between the read that
decides and the relay there is a render and one SMTP transaction, never the wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared import correlation
from herald_shared.contract import Event, parse_event, serialize_event
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.contract.delivery import (
    DeliveryHeld,
    MessageBounced,
    MessageDeferred,
    MessageSent,
)
from herald_shared.kafka import MAX_REASON_CHARS, TRANSIENT_ERRORS, EventPublisher, expect_dead_letters
from herald_shared.mongo import Document
from herald_shared.sent import email_sent
from herald_shared.templating import RenderError, TemplateProblem

from . import domain, metrics
from .completion import CampaignCompletion
from .domain import Gate, Member, MessageFlow, RetryPolicy, SmtpReply, TokenBucket, caused_by
from .handlers import GateBook
from .queue import JobQueue
from .render import CampaignTemplate, Rendered, Renderer, TemplateError, compile_campaign
from .smtp import RelayConfig, RelayConnection
from .store import BOUNCED, CANCELLED, DEFERRED, SENT, SKIPPED, DeliveryStore, scoped

log = logging.getLogger(__name__)
PRODUCER = "delivery"
SENDER = "delivery.sender"  # the `consumer` of its dead letters (an outcome that could not become its event)
LIST_DELETED = "list_deleted"  # a member status the hand-out gives members of a list deleted after the expansion
LIST_RECHECK_SECONDS = 1.0  # how stale the hand-out's knowledge that a list is not deleted may be
# How old the hand-out's read of a member may be when a worker renders its message (it waited in the queue behind
# other messages); older, or after a rate-limit wait, the member is read again. Batches go at ~ms a message when
# nothing waits, so the batched read serves them all.
MEMBER_RECHECK_SECONDS = 1.0
HELD = "held"  # no outcome: the job waits behind a closed gate (`_stop`)
TEMPLATES_KEPT = 256  # compiled campaigns kept (the most recently used); one evicted is compiled again if needed
BUCKETS_PRUNE_SECONDS = 60.0  # how often the rate limits' buckets refilled to their burst are dropped
RELAY_REFUSAL_LOG_SECONDS = 60.0  # a relay refusing Herald is logged at most this often (every refusal is counted)
# Threads that make DKIM signatures (`Rendered.signatures`): OpenSSL releases the GIL while it signs (~0.2 ms
# an RSA-2048 signature), so the event loop goes on rendering and sending other messages meanwhile.
SIGNING_THREADS = 2


@dataclass(frozen=True)
class SenderConfig:
    concurrency: int = 10
    account_rate: float = 0.0  # messages per second per account; 0 = unlimited
    domain_rate: float = 0.0  # messages per second per recipient domain; 0 = unlimited
    poll_interval: float = 1.0  # how often to look for deferred messages that became due
    platform_from_name: str = "Herald"
    platform_from_email: str = "no-reply@herald.localhost"


class Sender:
    def __init__(self, store: DeliveryStore, gates: GateBook, jobs: JobQueue, renderer: Renderer,
                 relay: RelayConfig, publisher: EventPublisher, policy: RetryPolicy, config: SenderConfig,
                 rng: random.Random | None = None, ready: Callable[[], Awaitable[None]] | None = None,
                 completion: CampaignCompletion | None = None) -> None:
        self._ready = ready
        self._completion = completion
        self._store = store
        self._gates = gates
        self._jobs = jobs
        self._renderer = renderer
        self._relay = relay
        self._publisher = publisher
        self._policy = policy
        self._config = config
        self._rng = rng or random.Random()
        # A job handed out, its member (campaign jobs) and when the member was read (time.monotonic()).
        self._queue: asyncio.Queue[tuple[Document, Member | None, float, str]] = asyncio.Queue()
        # Each claim's jobs not done with yet, and the claims all done with, to delete (`_close_claims`): a claim
        # kept until the next start made that start read one id per message sent since the last one.
        self._claimed: dict[str, int] = {}
        self._settled_claims: list[str] = []
        # Jobs handed out and not finished: up to four per worker, refilled when half are done, so one
        # claim (and one member look-up) serves many messages and workers never wait for them.
        self._capacity = 4 * config.concurrency
        self._outstanding = 0
        self._slot_freed = asyncio.Event()
        # Compiled campaigns, or why one does not compile (asked once, not once per recipient): the most recently
        # used TEMPLATES_KEPT, so a process that has sent for months does not hold every campaign it ever sent.
        self._templates: OrderedDict[tuple[str, bool], CampaignTemplate | Skip] = OrderedDict()
        # Lists deleted (for good: a list id is never created again), and when each other list was last looked
        # at: a batch reads a list at most once a LIST_RECHECK_SECONDS, not once per batch.
        self._deleted_lists: set[tuple[str, str]] = set()
        self._lists_checked: dict[tuple[str, str], float] = {}
        self._account_buckets: dict[str, TokenBucket] = {}
        self._domain_buckets: dict[str, TokenBucket] = {}
        # Outcomes recorded but not yet acknowledged by Kafka, with when they were recorded.
        self._unpublished: dict[str, datetime] = {}
        self._closing: list[str] = []  # jobs (not a campaign's) finished and published, to close (`_close_jobs`)
        self._watermark_saved = 0.0
        self._buckets_pruned = 0.0
        self._held_announced: set[tuple[str, str | None, str]] = set()
        self._stopping = asyncio.Event()
        self._busy = 0
        self._relay_refusal_logged_at = -RELAY_REFUSAL_LOG_SECONDS
        self._relay_refusals_unlogged = 0
        self.started = False
        self.dispatch_passes = 0  # looks at the ledger so far (tests wait on it to see that nothing is due)
        self._signing: ThreadPoolExecutor | None = None  # while running
        expect_dead_letters(SENDER, ["herald.delivery"], ["handler_failed"])

    def forget_account(self, account_id: str) -> None:
        """Retention (AccountPurged): nothing of the account stays in memory: its compiled campaigns (their
        content), the lists it had, its rate bucket, the held notices announced."""
        prefix = account_id + ":"
        for key in [k for k in self._templates if k[0].startswith(prefix)]:
            del self._templates[key]
        self._deleted_lists = {k for k in self._deleted_lists if k[0] != account_id}
        self._lists_checked = {k: v for k, v in self._lists_checked.items() if k[0] != account_id}
        self._account_buckets.pop(account_id, None)
        self._held_announced = {k for k in self._held_announced if k[0] != account_id}

    def request_stop(self) -> None:
        self._stopping.set()
        self._gates.changed.set()

    async def run(self) -> None:
        if self._ready is not None and not await self._wait_until_ready():
            return
        started_at = datetime.now(UTC)
        ledger = await self._store.load_pending(keep=self._jobs.compact)
        if ledger.in_doubt:
            metrics.IN_DOUBT.inc(len(ledger.in_doubt))
            await self._store.mark_in_doubt([str(job["_id"]) for job in ledger.in_doubt])
            log.warning("messages in doubt after a restart are sent again", extra={"count": len(ledger.in_doubt)})
        await self._store.forget_claims(started_at)
        await self._load_sent_counts(ledger.republish)
        self._jobs.push(ledger.pending, compacted=True)
        ledger.pending, ledger.in_doubt = [], []  # queued; the lists would live as long as run()
        await self._republish(ledger.republish)
        self._closing.extend(ledger.closed)  # their outcomes are published now
        await self._close_jobs()
        if self._completion is not None:
            await self._completion.ledger_loaded(ledger.finished)
        connections = [RelayConnection(self._relay) for _ in range(self._config.concurrency)]
        self._signing = ThreadPoolExecutor(SIGNING_THREADS, thread_name_prefix="dkim")
        workers = [asyncio.create_task(self._worker(c), name=f"smtp-worker-{i}") for i, c in enumerate(connections)]
        self.started = True
        try:
            await self._dispatch()
        finally:
            self.started = False
            await self._queue.join()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._signing.shutdown(wait=False)
            for connection in connections:
                await connection.close(quit_politely=True)
            await self._save_watermark()

    async def _load_sent_counts(self, recent: list[Document]) -> None:
        """The send allowance's counts as stored, raised by the outcomes recorded since the published-watermark
        (each counted one carries the count it made): a crash between an outcome's insert and its count's write
        is recounted here, and the result stored before anything is sent."""
        stored = await self._store.sent_counts()
        for (account_id, kind), count in stored.items():
            self._gates.note_sent(account_id, kind, count)
        raised: dict[tuple[str, str], int] = {}
        for doc in recent:
            if (counted := doc.get("counted_kind")) is not None:
                key = (str(doc["account_id"]), str(counted))
                if int(doc["counted_total"]) > max(stored.get(key, 0), raised.get(key, 0)):
                    raised[key] = int(doc["counted_total"])
                    self._gates.note_sent(*key, int(doc["counted_total"]))
        if raised:
            await self._store.save_sent_counts(raised)
            log.info("send counts recounted from outcomes recorded before a restart", extra={"accounts": len(raised)})

    async def _wait_until_ready(self) -> bool:
        """The gates must be current before anything is sent (a suspension published while this process was
        down, or handled but not saved before a crash). False when asked to stop meanwhile."""
        assert self._ready is not None
        metrics.WAITING_FOR_GATES.set(1)  # the ledger is not loaded: the queue's depth is unknown meanwhile
        try:
            while not self._stopping.is_set():
                try:
                    async with asyncio.timeout(5):
                        await self._ready()
                    return True
                except TimeoutError:
                    log.info("the sender waits for the gates (billing, compliance, campaigns) to catch up")
            return False
        finally:
            metrics.WAITING_FOR_GATES.set(0)

    def _gate_of(self, job: Document) -> Gate | None:
        """The closed gate holding a campaign message; a cancelled campaign's jobs are let through to be
        recorded as cancelled."""
        if job["kind"] != "campaign":
            return None
        campaign = self._gates.campaign(job["account_id"], job["campaign_id"])
        if campaign.cancelled or campaign.rejected:
            return None
        return self._gates.gate_for(job["account_id"], job["campaign_id"])

    async def _dispatch(self) -> None:
        while not self._stopping.is_set():
            free = self._capacity - self._outstanding
            if free < self._capacity // 2:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self.dispatch_passes += 1
            self._gates.changed.clear()
            self._jobs.unpark(self._gate_of)
            due = self._jobs.take_due(datetime.now(UTC), free, self._gate_of)
            try:
                if time.monotonic() - self._watermark_saved > 1.0:
                    await self._save_watermark()
                if due:
                    await self._hand_out(due)
                    continue
            except TRANSIENT_ERRORS:
                # MongoDB away: the jobs wait (nothing was sent) and the sender keeps going when it is back.
                log.exception("the sender could not claim messages; trying again in 5 s")
                later = datetime.now(UTC) + timedelta(seconds=5)
                for job in due:
                    if job["_id"] in self._jobs:
                        self._jobs.retry_at(job["_id"], later)
                self._slot_freed.clear()
            try:
                async with asyncio.timeout(self._config.poll_interval):
                    await self._gates.changed.wait()
            except TimeoutError:
                pass

    async def _hand_out(self, due: list[Document]) -> None:
        claim = uuid.uuid4().hex
        await self._store.open_claim(claim, [d["_id"] for d in due], datetime.now(UTC))
        members = await self._members([job for job in due if job["kind"] == "campaign"])
        read_at = time.monotonic()
        self._claimed[claim] = len(due)  # handed out now (should the read above fail, the claim waits for a start)
        for job in due:
            self._outstanding += 1
            self._queue.put_nowait((job, members.get((job["account_id"], job.get("subscriber_id") or "")), read_at,
                                    claim))

    async def _members(self, jobs: list[Document]) -> dict[tuple[str, str], Member]:
        """The members of these campaign jobs as the audience holds them now, by (account, subscriber); those
        of a list deleted after the expansion marked LIST_DELETED."""
        members: dict[tuple[str, str], Member] = {}
        by_account: dict[str, list[str]] = {}
        for job in jobs:
            by_account.setdefault(job["account_id"], []).append(job["subscriber_id"])
        for account_id, subscriber_ids in by_account.items():
            for subscriber_id, member in (await self._store.members(account_id, subscriber_ids)).items():
                members[(account_id, subscriber_id)] = member
        if members:  # a list deleted after the expansion: its members are no campaign's audience any more
            await self._check_lists({(a, m.list_id) for (a, _), m in members.items()})
            for key, member in members.items():
                if (key[0], member.list_id) in self._deleted_lists:
                    members[key] = replace(member, status=LIST_DELETED)
        return members

    async def _check_lists(self, lists: set[tuple[str, str]]) -> None:
        now = time.monotonic()
        due = {key for key in lists - self._deleted_lists
               if now - self._lists_checked.get(key, -LIST_RECHECK_SECONDS) >= LIST_RECHECK_SECONDS}
        if due:
            self._deleted_lists |= await self._store.deleted_lists(due)
            self._lists_checked.update(dict.fromkeys(due, now))

    def _flow(self, job: Document) -> MessageFlow | None:
        """The flow of a message: a campaign message's is its campaign's (`GateBook.flows`), any other's on its job."""
        if job["kind"] == "campaign":
            return self._gates.flow(job["account_id"], job.get("campaign_id"))
        return MessageFlow.from_document(job)

    async def _worker(self, connection: RelayConnection) -> None:
        while True:
            job, member, member_read_at, claim = await self._queue.get()
            flow = self._flow(job)
            # In its campaign's flow, as a consumer handles an event in the event's: its log lines name it.
            with correlation.flow(flow.correlation_id if flow is not None else None):
                self._busy += 1
                metrics.POOL_CONNECTIONS.labels("busy").set(self._busy)
                done = False
                try:
                    await self._deliver(job, member, connection, member_read_at)
                    done = True
                except Exception:
                    # Infrastructure trouble while recording: the job is tried again in a while (and after a
                    # crash it is in doubt); logged loudly, never lost silently.
                    log.exception("delivering a message failed", extra={"message_id": job["_id"]})
                    if not job.get("_answered"):
                        done = True  # not sent (put back, or gone from the queue): nothing of it is in doubt
                        if job["_id"] in self._jobs:
                            self._jobs.retry_at(job["_id"], datetime.now(UTC) + timedelta(seconds=5))
                finally:
                    # A job the relay answered whose outcome was not recorded (stopping meanwhile) keeps its claim:
                    # the next start finds it in doubt.
                    if done:
                        self._done_with(claim)
                    self._busy -= 1
                    metrics.POOL_CONNECTIONS.labels("busy").set(self._busy)
                    self._outstanding -= 1
                    self._slot_freed.set()
                    self._queue.task_done()

    def _test_refused(self, job: Document) -> str | None:
        """A test send is refused, not held, while the account is suspended or blocked (domain), and to an
        address the account suppressed or that unsubscribed (`refused`, decided when the test was requested)."""
        if job["kind"] != "test":
            return None
        refused = job.get("refused") or domain.gate_refusing_test(self._gates.account(job["account_id"]))
        if refused is None and self._gates.allowance_holds(job["account_id"], "test"):
            return "send_allowance"
        return refused

    def _stop(self, job: Document) -> tuple[str, str] | None:
        """Why the job may not go now, as (outcome, reason), or None. A campaign cancelled or rejected is
        recorded `cancelled` (whatever its gates: it will never go), one behind a closed gate HELD (parked), a
        test of an account that may not send refused (`skipped`). Asked before the job is rendered and again
        immediately before its SMTP transaction: the control consumer may have handled a cancellation or a
        suspension during the rate-limit or the signing wait."""
        if job["kind"] == "campaign":
            campaign = self._gates.campaign(job["account_id"], job["campaign_id"])
            if campaign.cancelled or campaign.rejected:
                return CANCELLED, "campaign_cancelled" if campaign.cancelled else "campaign_rejected"
            gate = self._gates.gate_for(job["account_id"], job["campaign_id"])
            return None if gate is None else (HELD, gate)
        refused = self._test_refused(job)
        return None if refused is None else (SKIPPED, refused)

    async def _stopped(self, job: Document) -> bool:
        """Parks or records the job when `_stop` says it may not go now; True then."""
        stop = self._stop(job)
        if stop is None:
            return False
        outcome, reason = stop
        if outcome == HELD:
            self._jobs.retry_at(job["_id"], job["next_attempt_at"])  # parked at the next look
        else:
            if outcome == SKIPPED:
                metrics.SKIPPED.labels(reason).inc()
            await self._finish_without_sending(job, outcome, reason)
        return True

    async def _deliver(self, job: Document, member: Member | None, connection: RelayConnection,
                       member_read_at: float | None = None) -> None:
        """`member_read_at`: when the hand-out read `member` (time.monotonic()); None: just now."""
        if await self._stopped(job):
            return
        # Rendered first: a message that will not go (its campaign unknown, its member gone) takes no token.
        if (rendered := await self._render_or_skip(job, member)) is None:
            return
        waited = await self._respect_rate_limits(job["account_id"], rendered.recipient)
        stale = member_read_at is not None and time.monotonic() - member_read_at > MEMBER_RECHECK_SECONDS
        if job["kind"] == "campaign" and (waited or stale):
            # PRODUCT.md: only confirmed, non-suppressed subscribers. Whoever unsubscribed, was suppressed or
            # erased during the wait is skipped: the read that decides comes after it (rendered again if changed).
            fresh = (await self._members([job])).get((job["account_id"], job["subscriber_id"]))
            if fresh != member and (rendered := await self._render_or_skip(job, fresh)) is None:
                return
        if await self._stopped(job):  # cancelled, suspended... during the rate-limit or the signing wait
            return
        # The send allowance: no await between the check just made and the reservation, so no other worker takes
        # the same room. The reservation lasts until the outcome is known (`settle`, below or in `finally`).
        account_id, kind = job["account_id"], job["kind"]
        reserved = self._gates.reserve(account_id, kind)
        if reserved is False:  # not reached: `_stopped` asked the same an instant before
            self._jobs.retry_at(job["_id"], job["next_attempt_at"])
            return
        settled = False
        try:
            reply = await connection.send(rendered.mail_from, rendered.recipient, rendered.data)
            answered = time.perf_counter()
            job["_answered"] = True  # from here on, a failure never hands the job to a worker again
            try:
                outcome, event = self._outcome(job, rendered, reply)
            except Exception as exc:
                # No known reply gets here (each cause found was fixed); should one, the message is still recorded
                # as the relay answered, so it is neither sent again after a restart nor left unfinished, and what
                # its event could not say goes to the dead-letter topic with why (billing counts no such send).
                log.exception("the outcome of a message could not become its event; recorded without it",
                              extra={"message_id": job["_id"]})
                outcome, event = unannounced_outcome(job, reply, f"{type(exc).__name__}: {exc}"), None
            settled = True
            if (count := self._gates.settle(account_id, kind, reserved, email_sent(event))) is not None:
                outcome.update(counted_kind=kind, counted_total=count)
        finally:
            if not settled:
                self._gates.settle(account_id, kind, reserved, counted=False)
        self._unpublished[job["_id"]] = outcome["recorded_at"]
        # The relay has answered: from here on the message is never handed to a worker again. Recording and
        # publishing are retried until they pass (MongoDB or Kafka away); only a crash leaves it in doubt.
        await self._until_done("record the outcome", lambda: self._store.record(outcome))
        if outcome["outcome"] == SENT:
            metrics.UNRECORDED_WINDOW.observe(time.perf_counter() - answered)
        if not outcome["final"]:
            self._jobs.retry_at(job["_id"], outcome["next_attempt_at"], attempts=outcome["attempt"],
                                first_attempt_at=outcome["first_attempt_at"])
        if event is not None:
            await self._until_done("publish the outcome", lambda: self._publisher.publish(event))
        else:
            await self._until_done("dead-letter the outcome", lambda: self._publisher.dead_letter(
                "herald.delivery", json.dumps(outcome, default=str).encode(), outcome["reason"], origin="sender",
                consumer=SENDER, key=str(job["account_id"]).encode(), category="handler_failed"))
        self._unpublished.pop(job["_id"], None)
        if outcome["final"]:
            # Only once its event is out: the end of its campaign is announced after every outcome event.
            await self._finished(job, outcome["outcome"])

    async def _until_done(self, what: str, action: Callable[[], Awaitable[Any]]) -> None:
        delay = 0.2
        while True:
            try:
                await action()
                return
            except TRANSIENT_ERRORS:
                if self._stopping.is_set():
                    raise  # shutting down: the claim leaves the message in doubt for the next start
                log.exception("could not %s; retrying in %.1f s", what, delay)
                await asyncio.sleep(delay)  # backoff while the infrastructure is away
                delay = min(delay * 2, 10.0)

    async def _finish_without_sending(self, job: Document, outcome: str, reason: str,
                                      detail: str | None = None) -> None:
        attempt = int(job.get("attempts") or 0) + 1
        recorded: Document = {"_id": f"{job['_id']}:{attempt}", "message_id": job["_id"],
                              "account_id": job["account_id"], "campaign_id": job.get("campaign_id"),
                              "outcome": outcome, "reason": reason, "final": True, "attempt": attempt,
                              "recorded_at": datetime.now(UTC)}
        if detail:
            recorded["detail"] = detail[:1000]
        await self._store.record(recorded)
        await self._finished(job, outcome, reason)

    async def _finished(self, job: Document, outcome: str, reason: str | None = None) -> None:
        """The job's final outcome is recorded (and published, if it has an event): out of the queue, and
        counted toward its campaign's end, once (the queue says whether it still held the job)."""
        if job["kind"] != "campaign":
            self._closing.append(job["_id"])
        if not self._jobs.done(job["_id"]) or self._completion is None:
            return
        result = domain.final_result(outcome, reason)
        if result is not None:
            await self._completion.message_finished(job, result)

    async def _render(self, job: Document, member: Member | None) -> Rendered:
        rendered = await self._rendered(job, member)
        if rendered.signatures is None:
            return rendered
        signing = asyncio.get_running_loop().run_in_executor(self._signing, rendered.signatures.headers)
        return replace(rendered, data=await signing + rendered.data, signatures=None)

    async def _rendered(self, job: Document, member: Member | None) -> Rendered:
        kind = job["kind"]
        if kind == "campaign":
            if member is None:
                raise Skip("not_in_audience")
            if member.status == LIST_DELETED:
                raise Skip("list_deleted")
            if member.status != "active" or not member.email:
                raise Skip(f"member_{member.status}")
            template = await self._template(job["account_id"], job["campaign_id"])
            try:
                return self._renderer.campaign_message(template, member, job["_id"])
            except TemplateError:
                raise Skip("member_erased") from None
            except RenderError as exc:  # this member's values hit a limit: the others are rendered as usual
                raise Skip("render_failed", str(exc)) from None
        recipient = job.get("recipient")
        if not recipient:
            raise Skip("recipient_erased")
        if kind == "test":
            template, sample = await self._test_template(job)
            try:
                return self._renderer.test_message(template, recipient, sample, job["_id"], job["test_id"])
            except RenderError as exc:
                raise Skip("render_failed", str(exc)) from None
        if kind == "confirmation":
            if job["expires_at"] <= datetime.now(UTC):
                raise Skip("confirmation_expired")
            if "account_deleted" in self._gates.account(job["account_id"]).blocked_reasons:
                # Nothing more is sent in a deleted account's name (another producer's ConfirmationRequested, or one
                # queued before the deletion); its closure notice is an account notice, not this.
                raise Skip("account_deleted")
            return self._renderer.transactional_message(
                message_id=job["_id"], kind=kind, account_id=job["account_id"], recipient=recipient,
                from_name=domain.plain_label(job["company_name"]) or "Herald",
                from_email=self._config.platform_from_email, subject=confirmation_subject(job),
                text=confirmation_text(job), feedback_group=job["list_id"], subscriber_id=job.get("subscriber_id"))
        return self._renderer.transactional_message(
            message_id=job["_id"], kind=kind, account_id=job["account_id"], recipient=recipient,
            from_name=self._config.platform_from_name, from_email=self._config.platform_from_email,
            subject=job["subject"], text=job["text"], feedback_group="notices")

    async def _template(self, account_id: str, campaign_id: str) -> CampaignTemplate:
        footer = self._gates.account(account_id).edition != "pro"
        key = (scoped(account_id, campaign_id), footer)
        template = self._templates.get(key)
        if template is None:
            doc = await self._store.campaign(account_id, campaign_id)
            if doc is None or "content" not in doc:
                raise Skip("campaign_unknown")
            template = self._compile(account_id, campaign_id, doc["content"], footer)
            self._templates[key] = template
            while len(self._templates) > TEMPLATES_KEPT:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(key)
        if isinstance(template, Skip):
            raise template
        return template

    async def _test_template(self, job: Document) -> tuple[CampaignTemplate, dict[str, Any]]:
        """A test send's content (not cached: a test is at most five messages) and its sample values."""
        doc = await self._store.test_send(job["account_id"], job["test_id"])
        if doc is None:
            raise Skip("test_unknown")
        footer = self._gates.account(job["account_id"]).edition != "pro"
        template = self._compile(job["account_id"], job["campaign_id"], doc["content"], footer)
        if isinstance(template, Skip):
            raise template
        sample = dict(doc.get("sample") or {})
        sample.setdefault("email", job["recipient"])
        return template, sample

    def _compile(self, account_id: str, campaign_id: str, content: Document, footer: bool) -> CampaignTemplate | Skip:
        try:
            return compile_campaign(account_id, campaign_id, CampaignContent.model_validate(content),
                                    footer=footer, settings=self._renderer.settings)
        except TemplateProblem as exc:  # campaigns checks content before it is queued: stored content gone bad
            return Skip("template_invalid", str(exc))

    async def _render_or_skip(self, job: Document, member: Member | None) -> Rendered | None:
        """The message rendered (and signed); None once recorded as not sent (skipped: why, in the ledger)."""
        started = time.perf_counter()
        try:
            rendered = await self._render(job, member)
        except Skip as skip:
            metrics.SKIPPED.labels(skip.reason).inc()
            if skip.detail:
                log.warning("a message is not sent: %s", skip.detail,
                            extra={"message_id": job["_id"], "reason": skip.reason})
            await self._finish_without_sending(job, SKIPPED, skip.reason, skip.detail)
            return None
        except TRANSIENT_ERRORS:
            raise
        except Exception:
            # Bad stored content, a bad DKIM key, an address that cannot be encoded: trying again would fail
            # again, so it is recorded (with the error in the log), never retried forever.
            log.exception("a message could not be rendered", extra={"message_id": job["_id"]})
            metrics.SKIPPED.labels("render_failed").inc()
            await self._finish_without_sending(job, SKIPPED, "render_failed")
            return None
        metrics.RENDER_SECONDS.observe(time.perf_counter() - started)
        return rendered

    async def _respect_rate_limits(self, account_id: str, recipient: str) -> float:
        """Takes the message's tokens and waits for them; returns how long it waited (seconds)."""
        config = self._config
        domain_name = recipient.rpartition("@")[2].lower()
        account = self._account_buckets.setdefault(account_id, TokenBucket(config.account_rate,
                                                                           max(1.0, config.account_rate)))
        per_domain = self._domain_buckets.setdefault(domain_name, TokenBucket(config.domain_rate,
                                                                              max(1.0, config.domain_rate)))
        now = time.monotonic()
        wait = max(account.reserve(now), per_domain.reserve(now))
        if wait > 0:
            await asyncio.sleep(wait)  # the rate limit itself: the wait is the point
        return wait

    def _outcome(self, job: Document, rendered: Rendered, reply: SmtpReply) -> tuple[Document, Event]:
        """The ledger's outcome document for this attempt, and the event it publishes."""
        now = datetime.now(UTC)
        attempt = int(job.get("attempts") or 0) + 1
        first = job.get("first_attempt_at") or now
        ref: dict[str, Any] = {"message_id": job["_id"], "kind": job["kind"], "campaign_id": job.get("campaign_id"),
                               "subscriber_id": job.get("subscriber_id"), "list_id": job.get("list_id")}
        envelope: dict[str, Any] = {"account_id": job["account_id"], "producer": PRODUCER,
                                    **caused_by(self._flow(job))}
        outcome: Document = {"_id": f"{job['_id']}:{attempt}", "message_id": job["_id"],
                             "account_id": job["account_id"], "campaign_id": job.get("campaign_id"),
                             "attempt": attempt, "first_attempt_at": first, "recorded_at": now, "final": True,
                             "smtp_code": reply.code, "smtp_reply": reply.diagnostic}
        event: Event
        result = domain.classify(reply)
        if result == "sent":
            outcome["outcome"] = SENT
            event = MessageSent(event_id=domain.outcome_event_id(job["_id"], "sent", attempt), **envelope,
                                payload={**ref, "recipient_domain": rendered.recipient.rpartition("@")[2].lower(),
                                         "smtp_code": reply.code, "smtp_reply": reply.text[:1000],
                                         "attempt": attempt})
            metrics.MESSAGES.labels(job["kind"], "sent").inc()
        elif result == "bounced":
            # The receiver's refusal says whether the address is invalid or our mail is refused (a block).
            verdict = domain.classify_bounce(status=reply.enhanced_status, smtp_code=reply.code, text=reply.text,
                                             permanent=True)
            outcome.update(outcome=BOUNCED, bounce_class=verdict.bounce_class)
            event = MessageBounced(event_id=domain.outcome_event_id(job["_id"], "bounced", attempt), **envelope,
                                   payload={**ref, "bounce_class": verdict.bounce_class, "smtp_code": reply.code,
                                            "enhanced_status_code": reply.enhanced_status,
                                            "diagnostic": reply.diagnostic,
                                            "source": "local" if reply.local else "smtp_reply"})
            metrics.MESSAGES.labels(job["kind"], "bounced").inc()
            metrics.record_report(event)
        else:
            next_attempt = self._policy.next_attempt(attempt, first, now, self._rng)
            if next_attempt is None:
                outcome.update(outcome=BOUNCED, bounce_class="soft")
                event = MessageBounced(event_id=domain.outcome_event_id(job["_id"], "expired", attempt), **envelope,
                                       payload={**ref, "bounce_class": "soft", "smtp_code": reply.code,
                                                "enhanced_status_code": reply.enhanced_status,
                                                "diagnostic": f"gave up after {attempt} attempts: "
                                                              f"{reply.diagnostic}"[:1000],
                                                "source": "retry_expired"})
                metrics.MESSAGES.labels(job["kind"], "bounced").inc()
                metrics.record_report(event)
            else:
                if domain.refuses_us(reply):
                    self._relay_refused(job, reply)
                outcome.update(outcome=DEFERRED, final=False, next_attempt_at=next_attempt)
                event = MessageDeferred(event_id=domain.outcome_event_id(job["_id"], "deferred", attempt),
                                        **envelope, payload={**ref, "smtp_code": reply.code,
                                                             "enhanced_status_code": reply.enhanced_status,
                                                             "diagnostic": reply.diagnostic, "attempt": attempt,
                                                             "next_attempt_at": next_attempt})
                metrics.MESSAGES.labels(job["kind"], "deferred").inc()
        outcome["outcome_event"] = serialize_event(event).decode()
        return outcome, event

    def _relay_refused(self, job: Document, reply: SmtpReply) -> None:
        """Counted every time; logged once a minute (with how many since), as a refusing relay refuses every
        message: no customer can fix it, no retry gets through until the platform does."""
        metrics.RELAY_REFUSED.labels(reply.stage).inc()
        self._relay_refusals_unlogged += 1
        now = time.monotonic()
        if now - self._relay_refusal_logged_at < RELAY_REFUSAL_LOG_SECONDS:
            return
        log.error("the relay refuses Herald itself at %s (relaying, AUTH or our sender): %s; %d message(s) deferred "
                  "since the last such log, none bounced", reply.stage, reply.diagnostic,
                  self._relay_refusals_unlogged, extra={"message_id": job["_id"], "account_id": job["account_id"]})
        self._relay_refusal_logged_at, self._relay_refusals_unlogged = now, 0

    async def _save_watermark(self) -> None:
        """Everything recorded before the oldest unacknowledged outcome has been published; and the jobs
        finished since the last time closed."""
        self._watermark_saved = now = time.monotonic()
        await self._store.save_published_watermark(min(self._unpublished.values(), default=datetime.now(UTC)))
        await self._close_jobs()
        await self._close_claims()
        if now - self._buckets_pruned >= BUCKETS_PRUNE_SECONDS:
            self._buckets_pruned = now
            domain.forget_full(self._account_buckets, now)
            domain.forget_full(self._domain_buckets, now)

    def _done_with(self, claim: str) -> None:
        left = self._claimed.get(claim, 0) - 1
        if left > 0:
            self._claimed[claim] = left
        else:
            self._claimed.pop(claim, None)
            self._settled_claims.append(claim)

    async def _close_claims(self) -> None:
        """Claims whose jobs are all done with: deleted together (one statement a second). Should it fail, they
        stay: the next start reads them and finds their jobs finished or pending, and deletes them."""
        settled, self._settled_claims = self._settled_claims, []
        try:
            await self._store.close_claims(settled)
        except BaseException:
            self._settled_claims.extend(settled)
            raise

    async def _close_jobs(self) -> None:
        """Jobs other than a campaign's, finished and published: a start need not read them (a second a
        delete of all of them, not one per message). Should it fail, they stay open: the next start reads
        them and finds them finished."""
        closing, self._closing = self._closing, []
        try:
            await self._store.close_jobs(closing)
        except BaseException:
            self._closing.extend(closing)
            raise

    async def _republish(self, docs: list[Document]) -> None:
        """Outcomes recorded since the last watermark may be unpublished after a crash: publish them again
        (same event ids, so consumers that saw them drop the copies)."""
        for start in range(0, len(docs), 500):
            await self._publisher.publish_many([parse_event(d["outcome_event"]) for d in docs[start:start + 500]])
        if docs:
            log.info("republished outcomes recorded before a restart", extra={"count": len(docs)})

    async def announce_held(self) -> None:
        """DeliveryHeld once per campaign and closed gate (and queue-depth metrics); called periodically."""
        held = self._jobs.held(self._gate_of)
        current: set[tuple[str, str | None, str]] = set()
        for (account_id, campaign_id), (gate, count) in held.items():
            current.add((account_id, campaign_id, gate))
            if (account_id, campaign_id, gate) in self._held_announced:
                continue
            await self._publisher.publish(DeliveryHeld(
                account_id=account_id, producer=PRODUCER, **caused_by(self._gates.flow(account_id, campaign_id)),
                payload={"campaign_id": campaign_id, "gate": gate,
                         "reason": domain.gate_reason(gate, self._gates.account(account_id)),
                         "messages_held": count}))
        self._held_announced = current
        by_gate = {gate: 0 for gate in domain.GATES}
        for gate, count in held.values():
            by_gate[gate] += count
        for gate_name, count in by_gate.items():
            metrics.QUEUE_DEPTH.labels(gate_name).set(count)
        metrics.QUEUE_DEPTH.labels("none").set(len(self._jobs) - sum(by_gate.values()))


def unannounced_outcome(job: Document, reply: SmtpReply, failure: str) -> Document:
    """The ledger's outcome of an attempt whose event could not be made: what the relay answered, final (2xx
    sent, else bounced `undetermined`: retrying what cannot be recorded would fail again), with why."""
    now = datetime.now(UTC)
    attempt = int(job.get("attempts") or 0) + 1
    sent = reply.code is not None and 200 <= reply.code < 300
    outcome: Document = {"_id": f"{job['_id']}:{attempt}", "message_id": job["_id"], "account_id": job["account_id"],
                         "campaign_id": job.get("campaign_id"), "attempt": attempt,
                         "first_attempt_at": job.get("first_attempt_at") or now, "recorded_at": now, "final": True,
                         "outcome": SENT if sent else BOUNCED, "smtp_code": reply.code,
                         "smtp_reply": reply.diagnostic[:1000],
                         # No NUL, which the store refuses for good (it would be retried forever).
                         "reason": f"outcome event not made ({failure})"[:MAX_REASON_CHARS].replace("\0", " ")}
    if not sent:
        outcome["bounce_class"] = "undetermined"
    metrics.MESSAGES.labels(job["kind"], outcome["outcome"]).inc()
    return outcome


class Skip(Exception):
    """A job that is not sent (the member left the audience, the link expired...): recorded with why, and
    with the detail (a render limit, a template problem) where there is one."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def confirmation_subject(job: Document) -> str:
    list_name = domain.plain_label(job.get("list_name"))
    return f"Please confirm your subscription to {list_name}" if list_name else "Please confirm your subscription"


def confirmation_text(job: Document) -> str:
    """PRODUCT.md: the confirmation email contains only the request to confirm; no other link or offer. It greets
    no one by name: the name is what anyone typed into a public form for any address, and bots put offers and
    links there so that the platform mails them ("signup-form spam"); no filter tells a name from "Buy at
    evil.com". The list's and the company's names are the customer's, so only plain ones are shown
    (`domain.plain_label`)."""
    company = domain.plain_label(job.get("company_name")) or "this sender"
    list_name = domain.plain_label(job.get("list_name"))
    which = f" (list: {list_name})" if list_name else ""
    return (f"Hello,\n\nplease confirm that you want to receive emails from {company}{which}.\n\n"
            f"Confirm your subscription:\n{job['confirm_url']}\n\n"
            "If you did not ask for this, ignore this email: you will not be subscribed.\n")
