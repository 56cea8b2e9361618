"""The sender: claims due jobs from the ledger, asks the gates, renders, sends over the relay pool, records
the outcome in the ledger, then publishes it.

Effectively once: a job is claimed (`sending`) before its SMTP transaction and recorded (`sent`, with the
outcome event) the moment the relay answers; the event is published afterwards and republished after a
crash (its id is deterministic, so consumers drop the copy). A job still `sending` after a crash is in
doubt and is sent again: the one window where that repeats a message is between the relay's 250 and the
ledger write, measured by herald_delivery_unrecorded_window_seconds (README, "Effectively once").

Gates bound: every worker asks the in-memory GateBook immediately before its SMTP transaction, and the
control consumer updates the book as it handles AccountSuspended, so after that moment at most
`concurrency` messages (one per worker, already past its check) can still reach the relay.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from herald_shared.contract import Event, parse_event, serialize_event
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.contract.delivery import (
    DeliveryHeld,
    MessageBounced,
    MessageDeferred,
    MessageSent,
)
from herald_shared.kafka import EventPublisher
from herald_shared.mongo import Document

from . import domain, metrics
from .domain import Member, RetryPolicy, SmtpReply, TokenBucket
from .handlers import GateBook
from .render import CampaignTemplate, Rendered, Renderer, TemplateError, compile_campaign
from .smtp import RelayConfig, RelayConnection
from .store import BOUNCED, QUEUED, SENT, SKIPPED, DeliveryStore, scoped

log = logging.getLogger(__name__)
PRODUCER = "delivery"


@dataclass(frozen=True)
class SenderConfig:
    concurrency: int = 10
    account_rate: float = 0.0  # messages per second per account; 0 = unlimited
    domain_rate: float = 0.0  # messages per second per recipient domain; 0 = unlimited
    poll_interval: float = 1.0  # how often to look for deferred messages that became due
    platform_from_name: str = "Herald"
    platform_from_email: str = "no-reply@herald.localhost"


class Sender:
    def __init__(self, store: DeliveryStore, gates: GateBook, renderer: Renderer, relay: RelayConfig,
                 publisher: EventPublisher, policy: RetryPolicy, config: SenderConfig,
                 rng: random.Random | None = None) -> None:
        self._store = store
        self._gates = gates
        self._renderer = renderer
        self._relay = relay
        self._publisher = publisher
        self._policy = policy
        self._config = config
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[tuple[Document, Member | None]] = asyncio.Queue()
        # Claimed jobs not finished yet: at most two per worker, so the next is ready when one is done.
        self._capacity = 2 * config.concurrency
        self._outstanding = 0
        self._slot_freed = asyncio.Event()
        self._templates: dict[tuple[str, bool], CampaignTemplate] = {}
        self._account_buckets: dict[str, TokenBucket] = {}
        self._domain_buckets: dict[str, TokenBucket] = {}
        self._to_mark_published: list[str] = []
        self._held_announced: set[tuple[str, str | None, str]] = set()
        self._stopping = asyncio.Event()
        self._busy = 0
        self.started = False
        self.dispatch_passes = 0  # looks at the ledger so far (tests wait on it to see that nothing is due)

    def request_stop(self) -> None:
        self._stopping.set()
        self._gates.changed.set()

    async def run(self) -> None:
        in_doubt = await self._store.recover_in_doubt()
        if in_doubt:
            metrics.IN_DOUBT.inc(in_doubt)
            log.warning("messages in doubt after a restart are queued again", extra={"count": in_doubt})
        await self._republish()
        connections = [RelayConnection(self._relay) for _ in range(self._config.concurrency)]
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
            for connection in connections:
                await connection.close(quit_politely=True)
            await self._flush_published()

    async def _dispatch(self) -> None:
        while not self._stopping.is_set():
            free = self._capacity - self._outstanding
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            held_accounts, held_campaigns = self._gates.held()
            self.dispatch_passes += 1
            now = datetime.now(UTC)
            self._gates.changed.clear()
            due = await self._store.due(now, free, held_accounts, held_campaigns)
            if due:
                await self._hand_out(due, now)
            else:
                await self._flush_published()
                try:
                    async with asyncio.timeout(self._config.poll_interval):
                        await self._gates.changed.wait()
                except TimeoutError:
                    pass

    async def _hand_out(self, due: list[Document], now: datetime) -> None:
        claim = uuid.uuid4().hex
        await self._store.claim([d["_id"] for d in due], now, claim)
        claimed = await self._store.claimed(claim)
        members: dict[tuple[str, str], Member] = {}
        by_account: dict[str, list[str]] = {}
        for job in claimed:
            if job["kind"] == "campaign":
                by_account.setdefault(job["account_id"], []).append(job["subscriber_id"])
        for account_id, subscriber_ids in by_account.items():
            for subscriber_id, member in (await self._store.members(account_id, subscriber_ids)).items():
                members[(account_id, subscriber_id)] = member
        for job in claimed:
            self._outstanding += 1
            self._queue.put_nowait((job, members.get((job["account_id"], job.get("subscriber_id") or ""))))

    async def _worker(self, connection: RelayConnection) -> None:
        while True:
            job, member = await self._queue.get()
            self._busy += 1
            metrics.POOL_CONNECTIONS.labels("busy").set(self._busy)
            try:
                await self._deliver(job, member, connection)
            except Exception:
                # Infrastructure trouble while recording: the job stays claimed and is retried after a
                # restart as in doubt; log loudly, never lose it silently.
                log.exception("delivering a message failed", extra={"message_id": job["_id"]})
                await self._release_quietly(job)
            finally:
                self._busy -= 1
                metrics.POOL_CONNECTIONS.labels("busy").set(self._busy)
                self._outstanding -= 1
                self._slot_freed.set()
                self._queue.task_done()

    async def _release_quietly(self, job: Document) -> None:
        try:
            await self._store.record(job["_id"], {"state": QUEUED})
        except Exception:
            log.exception("could not release a claimed message; it is recovered at the next start")

    def _gate_closed(self, job: Document) -> bool:
        if job["kind"] != "campaign":
            return False
        campaign = self._gates.campaign(job["account_id"], job["campaign_id"])
        return campaign.cancelled or self._gates.gate_for(job["account_id"], job["campaign_id"]) is not None

    async def _deliver(self, job: Document, member: Member | None, connection: RelayConnection) -> None:
        if self._gate_closed(job):
            await self._store.record(job["_id"], {"state": QUEUED})
            return
        started = time.perf_counter()
        try:
            rendered = await self._render(job, member)
        except Skip as skip:
            metrics.SKIPPED.labels(skip.reason).inc()
            await self._store.record(job["_id"], {"state": SKIPPED, "skip_reason": skip.reason})
            return
        metrics.RENDER_SECONDS.observe(time.perf_counter() - started)
        await self._respect_rate_limits(job["account_id"], rendered.recipient)
        if self._gate_closed(job):  # the gate may have closed while waiting for the rate limit
            await self._store.record(job["_id"], {"state": QUEUED})
            return
        reply = await connection.send(rendered.mail_from, rendered.recipient, rendered.data)
        answered = time.perf_counter()
        fields, event = self._outcome(job, rendered, reply)
        await self._store.record(job["_id"], fields)
        if fields["state"] == SENT:
            metrics.UNRECORDED_WINDOW.observe(time.perf_counter() - answered)
        await self._publisher.publish(event)
        self._to_mark_published.append(job["_id"])
        if len(self._to_mark_published) >= 200:
            await self._flush_published()

    async def _render(self, job: Document, member: Member | None) -> Rendered:
        kind = job["kind"]
        if kind == "campaign":
            if member is None:
                raise Skip("not_in_audience")
            if member.status != "active" or not member.email:
                raise Skip(f"member_{member.status}")
            template = await self._template(job["account_id"], job["campaign_id"])
            try:
                return self._renderer.campaign_message(template, member, job["_id"])
            except TemplateError:
                raise Skip("member_erased") from None
        recipient = job.get("recipient")
        if not recipient:
            raise Skip("recipient_erased")
        if kind == "confirmation":
            if job["expires_at"] <= datetime.now(UTC):
                raise Skip("confirmation_expired")
            return self._renderer.transactional_message(
                message_id=job["_id"], kind=kind, account_id=job["account_id"], recipient=recipient,
                from_name=job["company_name"], from_email=self._config.platform_from_email,
                subject=f"Please confirm your subscription to {job['list_name']}", text=confirmation_text(job))
        return self._renderer.transactional_message(
            message_id=job["_id"], kind=kind, account_id=job["account_id"], recipient=recipient,
            from_name=self._config.platform_from_name, from_email=self._config.platform_from_email,
            subject=job["subject"], text=job["text"])

    async def _template(self, account_id: str, campaign_id: str) -> CampaignTemplate:
        footer = self._gates.account(account_id).edition != "pro"
        key = (scoped(account_id, campaign_id), footer)
        template = self._templates.get(key)
        if template is None:
            doc = await self._store.campaign(account_id, campaign_id)
            if doc is None or "content" not in doc:
                raise Skip("campaign_unknown")
            template = compile_campaign(account_id, campaign_id, CampaignContent.model_validate(doc["content"]),
                                        footer=footer, settings=self._renderer.settings)
            self._templates[key] = template
        return template

    async def _respect_rate_limits(self, account_id: str, recipient: str) -> None:
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

    def _outcome(self, job: Document, rendered: Rendered, reply: SmtpReply) -> tuple[Document, Event]:
        now = datetime.now(UTC)
        attempt = int(job.get("attempts") or 0) + 1
        first = job.get("first_attempt_at") or now
        ref: dict[str, Any] = {"message_id": job["_id"], "kind": job["kind"], "campaign_id": job.get("campaign_id"),
                               "subscriber_id": job.get("subscriber_id"), "list_id": job.get("list_id")}
        envelope: dict[str, Any] = {"account_id": job["account_id"], "producer": PRODUCER}
        fields: Document = {"attempts": attempt, "first_attempt_at": first, "last_attempt_at": now,
                            "smtp_code": reply.code, "smtp_reply": reply.diagnostic, "published": False}
        outcome = domain.classify(reply)
        event: Event
        if outcome == "sent":
            fields.update(state=SENT, sent_at=now)
            event = MessageSent(event_id=domain.outcome_event_id(job["_id"], "sent", attempt), **envelope,
                                payload={**ref, "recipient_domain": rendered.recipient.rpartition("@")[2].lower(),
                                         "smtp_code": reply.code, "smtp_reply": reply.text[:1000],
                                         "attempt": attempt})
            metrics.MESSAGES.labels(job["kind"], "sent").inc()
        elif outcome == "bounced":
            fields.update(state=BOUNCED, bounce_class="hard")
            event = MessageBounced(event_id=domain.outcome_event_id(job["_id"], "bounced", attempt), **envelope,
                                   payload={**ref, "bounce_class": "hard", "smtp_code": reply.code,
                                            "enhanced_status_code": reply.enhanced_status,
                                            "diagnostic": reply.diagnostic, "source": "smtp_reply"})
            metrics.MESSAGES.labels(job["kind"], "bounced").inc()
            metrics.BOUNCES.labels("hard", "smtp_reply").inc()
        else:
            next_attempt = self._policy.next_attempt(attempt, first, now, self._rng)
            if next_attempt is None:
                fields.update(state=BOUNCED, bounce_class="soft")
                event = MessageBounced(event_id=domain.outcome_event_id(job["_id"], "expired", attempt), **envelope,
                                       payload={**ref, "bounce_class": "soft", "smtp_code": reply.code,
                                                "enhanced_status_code": reply.enhanced_status,
                                                "diagnostic": f"gave up after {attempt} attempts: "
                                                              f"{reply.diagnostic}"[:1000],
                                                "source": "retry_expired"})
                metrics.MESSAGES.labels(job["kind"], "bounced").inc()
                metrics.BOUNCES.labels("soft", "retry_expired").inc()
            else:
                fields.update(state=QUEUED, next_attempt_at=next_attempt)
                event = MessageDeferred(event_id=domain.outcome_event_id(job["_id"], "deferred", attempt),
                                        **envelope, payload={**ref, "smtp_code": reply.code,
                                                             "enhanced_status_code": reply.enhanced_status,
                                                             "diagnostic": reply.diagnostic, "attempt": attempt,
                                                             "next_attempt_at": next_attempt})
                metrics.MESSAGES.labels(job["kind"], "deferred").inc()
        fields["outcome_event"] = serialize_event(event).decode()
        return fields, event

    async def _flush_published(self) -> None:
        ids, self._to_mark_published = self._to_mark_published, []
        if ids:
            await self._store.mark_published(ids)

    async def _republish(self) -> None:
        """Outcomes recorded but maybe not published before a crash: publish again (same event ids)."""
        docs = await self._store.unpublished()
        for doc in docs:
            if doc.get("outcome_event"):
                await self._publisher.publish(parse_event(doc["outcome_event"]))
        if docs:
            await self._store.mark_published([d["_id"] for d in docs])
            log.info("republished outcomes recorded before a restart", extra={"count": len(docs)})

    async def announce_held(self) -> None:
        """DeliveryHeld once per campaign and closed gate (and queue-depth metrics); called periodically."""
        counts = await self._store.queued_by_campaign()
        by_gate: dict[str, int] = {}
        current: set[tuple[str, str | None, str]] = set()
        for (account_id, key), count in counts.items():
            campaign_id = key.split(":", 1)[1] if key else None
            gate = self._gates.gate_for(account_id, campaign_id) if campaign_id else None
            by_gate[gate or "none"] = by_gate.get(gate or "none", 0) + count
            if gate is None or campaign_id is None:
                continue
            current.add((account_id, campaign_id, gate))
            if (account_id, campaign_id, gate) in self._held_announced:
                continue
            account = self._gates.account(account_id)
            await self._publisher.publish(DeliveryHeld(
                account_id=account_id, producer=PRODUCER,
                payload={"campaign_id": campaign_id, "gate": gate, "reason": domain.gate_reason(gate, account),
                         "messages_held": count}))
        self._held_announced = current
        for gate_name in (*domain.GATES, "none"):
            metrics.QUEUE_DEPTH.labels(gate_name).set(by_gate.get(gate_name, 0))


class Skip(Exception):
    """A job that is not sent (the member left the audience, the link expired...): recorded with why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def confirmation_text(job: Document) -> str:
    """PRODUCT.md: the confirmation email contains only the request to confirm; no other link or offer."""
    greeting = f"Hello {job['greeting_name']}," if job.get("greeting_name") else "Hello,"
    return (f"{greeting}\n\nplease confirm that you want to receive emails from {job['company_name']} "
            f"(list: {job['list_name']}).\n\nConfirm your subscription:\n{job['confirm_url']}\n\n"
            "If you did not ask for this, ignore this email: you will not be subscribed.\n")
