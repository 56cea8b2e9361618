"""One function per request: load state, let the domain decide, publish, and wait until the projection holds
the result so the answer reflects it. The scheduler is one more caller: it queues what is due."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

from herald_shared.commands import Recorder
from herald_shared.contract import Event
from herald_shared.contract.campaigns import (
    CampaignReturned,
    CampaignTestRequested,
    StaffViewed,
    StaffViewedPayload,
)
from herald_shared.contract.subscriptions import FieldValue
from herald_shared.kafka import end_offsets
from herald_shared.lifecycle import every
from herald_shared.mongo import Document
from herald_shared.readmodel import compose
from herald_shared.rules import RuleRefused
from herald_shared.settings import HeraldSettings

from . import domain, metrics, screening
from .domain import Draft
from .store import COMPLETING, CampaignsStore, key_parts

log = logging.getLogger("herald.campaigns")


def _lock(account_id: str, campaign_id: str) -> str:
    return f"campaign:{account_id}:{campaign_id}"


def _domain_lock(account_id: str, domain_name: str) -> str:
    return f"sending-domain:{account_id}:{domain_name}"


# Screening's own threads (made in main.py): a body of the largest allowed size takes seconds (README, Limits),
# and on the default pool many such submissions at once would keep the API-key checks (`asyncio.to_thread`)
# waiting behind them.
SCREENING_THREADS = 2


def screening_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=SCREENING_THREADS, thread_name_prefix="herald-screening")


async def screened(pool: Executor, current: domain.CampaignState, campaign_id: str, lst: domain.ListInfo | None,
                   values: dict[str, FieldValue] | None) -> screening.Screening:
    """The content as written, as its template code writes it for these values (the sample's), and with every
    branch of that code written out (`domain.screening_of`): off the event loop, on screening's own threads."""
    return await asyncio.get_running_loop().run_in_executor(
        pool, domain.screening_of, current, campaign_id, lst, values)


class TxtLookup(Protocol):
    """DNS as the sending domains' verification asks it (`resolver.DnsResolver`)."""

    async def txt(self, name: str) -> domain.DnsAnswer: ...


class CampaignsService:
    def __init__(self, store: CampaignsStore, recorder: Recorder, test_sends_per_day: int = 50, *,
                 dns: TxtLookup, screening: Executor, shared_sending_domains: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.recorder = recorder
        self.dns = dns
        self.screening = screening
        # The operator's own domains, usable by every account without verification (HERALD_CAMPAIGNS_SHARED_...).
        self.shared_sending_domains = shared_sending_domains
        # Test messages an account may send in 24 hours, counted in the store (`count_test_send`).
        self.test_sends_per_day = test_sends_per_day

    async def create(self, account_id: str, campaign_id: str | None, draft: Draft) -> Document:
        campaign_id = campaign_id or domain.new_campaign_id()
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            existing = await self.store.campaign_state(account_id, campaign_id)
            lst = await self.store.list_info(account_id, draft.list_id)
            senders = await self.senders(account_id, draft.from_email)
            await self.recorder.commit(domain.create(account_id, campaign_id, draft, lst, existing, senders=senders))
        return await self._campaign(account_id, campaign_id)

    async def edit(self, account_id: str, campaign_id: str, draft: Draft) -> Document:
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            current = await self.store.campaign_state(account_id, campaign_id)
            lst = await self.store.list_info(account_id, draft.list_id)
            senders = await self.senders(account_id, draft.from_email)
            await self.recorder.commit(domain.edit(current, campaign_id, draft, lst, senders=senders))
        return await self._campaign(account_id, campaign_id)

    async def duplicate(self, account_id: str, campaign_id: str) -> Document:
        new_id = domain.new_campaign_id()
        current = await self.store.campaign_state(account_id, campaign_id)
        await self.recorder.commit(domain.duplicate(current, campaign_id, new_id))
        return await self._campaign(account_id, new_id)

    async def delete(self, account_id: str, campaign_id: str) -> None:
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            current = await self.store.campaign_state(account_id, campaign_id)
            await self.recorder.commit(domain.delete(current, campaign_id))

    async def submit(self, account_id: str, campaign_id: str, send_at: datetime | None, time_zone: str | None,
                     submitted_by: str) -> Document:
        """Screen, check and schedule (or send to staff review) a draft."""
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            current = domain.existing(await self.store.campaign_state(account_id, campaign_id), campaign_id)
            lst = await self.store.list_info(account_id, current.list_id)
            account = await self.store.account(account_id)
            senders = await self.senders(account_id, current.content.from_email)
            # before screening: a draft that compiles, From a domain the account may use
            domain.submittable(current, campaign_id, lst, senders=senders)
            verdict = await screened(self.screening, current, campaign_id, lst, None)
            try:
                events = domain.submit(current, campaign_id, lst, account, verdict, send_at, time_zone,
                                       datetime.now(UTC), submitted_by, senders=senders)
            except domain.ContentRefused:
                metrics.SCREENING.labels("refused").inc()
                raise
            for category in sorted({m.category for m in verdict.matches}) or ["clean"]:
                metrics.SCREENING.labels(category).inc()
            await self.recorder.commit(events)
        return await self._campaign(account_id, campaign_id)

    async def cancel(self, account_id: str, campaign_id: str, by: str, reason: str | None) -> Document:
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            current = await self.store.campaign_state(account_id, campaign_id)
            await self.recorder.commit(domain.cancel(current, campaign_id, by, reason))
        return await self._campaign(account_id, campaign_id)

    async def test_send(self, account_id: str, campaign_id: str, recipients: Sequence[str],
                        sample: dict[str, FieldValue] | None, requested_by: str) -> str:
        current = await self.store.campaign_state(account_id, campaign_id)
        lst = await self.store.list_info(account_id, current.list_id) if current is not None else None
        senders = await self._senders_of(account_id, current)
        values = sample if sample is not None else domain.sample_values(lst)
        test_id = "t" + uuid.uuid4().hex[:12]
        now = datetime.now(UTC)
        state = domain.testable(current, campaign_id, lst, senders=senders)
        await self._check_test_recipients(account_id, recipients)
        domain.check_test_opt_outs(recipients, await self.store.test_opt_outs(
            account_id, {domain.recipient_sha256(address) for address in recipients}))
        verdict = await screened(self.screening, state, campaign_id, lst, values)
        events = domain.test_send(state, campaign_id, lst, list(recipients), values, requested_by, test_id,
                                  verdict, senders=senders)
        messages = sum(len(e.payload.recipients) for e in events if isinstance(e, CampaignTestRequested))
        # Counted in the store before it is decided, so the count outlives the process and a request decided at
        # the same time by another replica sees this one (both may then be refused; neither passes the limit).
        # The account's lock keeps one process's requests in turn.
        async with self.recorder.serialised(f"tests:{account_id}"):
            counted = await self.store.count_test_send(account_id, test_id, now, messages)
            try:
                earlier = await self.store.test_sends_since(account_id, now - domain.TEST_SENDS_WINDOW, counted)
                domain.check_test_room(earlier, messages, self.test_sends_per_day, now)
                await self.recorder.publish_only(events)
            except BaseException:
                await self.store.uncount_test_send(counted)
                raise
        return test_id

    async def _check_test_recipients(self, account_id: str, recipients: Sequence[str]) -> None:
        """Refuse a test of an account under review to an address not its own (`domain.check_test_recipients`);
        its sending domains are read, by key, only for such an account."""
        account = await self.store.account(account_id)
        if not domain.account_review_reasons(account):
            return
        docs = await self.store.sending_domains_named(account_id, domain.test_recipient_domains(recipients))
        domain.check_test_recipients(account, recipients, domain.senders_of(docs, self.shared_sending_domains))

    async def preview(self, account_id: str, campaign_id: str,
                      values: dict[str, FieldValue] | None) -> dict[str, str | None]:
        current = await self.store.campaign_state(account_id, campaign_id)
        lst = await self.store.list_info(account_id, current.list_id) if current is not None else None
        return domain.preview(current, campaign_id, lst, values)

    # Staff (separate credentials; every look is audit-logged as StaffViewed on the account's events)

    async def staff_queue(self, staff: str, after: str | None, limit: int) -> tuple[list[Document], str | None]:
        docs, cursor = await self.store.review_queue(after, limit)
        await self._audit(staff, docs, "review_queue")
        return docs, cursor

    async def staff_campaign(self, staff: str, account_id: str, campaign_id: str) -> Document:
        doc = await self._campaign(account_id, campaign_id)
        await self._audit(staff, [doc], "campaign")
        return doc

    async def approve(self, staff: str, account_id: str, campaign_id: str, note: str | None) -> Document:
        return await self._staff_decides(staff, account_id, campaign_id, "approve",
                                         lambda current: domain.approve(current, campaign_id, staff, note))

    async def reject(self, staff: str, account_id: str, campaign_id: str, reasons: list[str]) -> Document:
        return await self._staff_decides(staff, account_id, campaign_id, "reject",
                                         lambda current: domain.reject(current, campaign_id, staff, reasons))

    async def _staff_decides(self, staff: str, account_id: str, campaign_id: str, action: str,
                             decide: Callable[[domain.CampaignState | None], list[Event]]) -> Document:
        """A staff decision recorded with its look (StaffViewed). A refusal (409) answers with the campaign's
        state, so it is a look too, recorded before the answer leaves; a campaign that does not exist shows
        nothing."""
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            current = await self.store.campaign_state(account_id, campaign_id)
            try:
                events = decide(current)
            except domain.CampaignNotFound:
                raise  # before any look is made: the ids asked for may not even make an event's
            except RuleRefused:
                await self.recorder.publish_only([self._viewed(staff, account_id, campaign_id, action)])
                raise
            await self.recorder.commit([*events, self._viewed(staff, account_id, campaign_id, action)])
        return await self._campaign(account_id, campaign_id)

    def _viewed(self, staff: str, account_id: str, campaign_id: str, action: str) -> StaffViewed:
        return StaffViewed(account_id=account_id, producer=domain.PRODUCER, payload=StaffViewedPayload(
            campaign_id=campaign_id, staff=staff, action=action))

    async def _audit(self, staff: str, docs: list[Document], action: str) -> None:
        """Recorded before the answer leaves: no look goes unlogged."""
        await self.recorder.publish_only([self._viewed(staff, d["account_id"], d["campaign_id"], action)
                                          for d in docs])
        for doc in docs:
            log.info("staff looked at a campaign", extra={"staff": staff, "account_id": doc["account_id"],
                                                          "campaign": doc["campaign_id"], "what": action})

    # The scheduler

    async def queue_due(self, now: datetime) -> int:
        """Queue every scheduled campaign whose time has come; each decided under its lock against the state
        the projection holds, and waited for, so it is queued once."""
        queued = 0
        for key in await self.store.due(now):
            send_at, account_id, campaign_id = key_parts(key)
            async with self.recorder.serialised(_lock(account_id, campaign_id)):
                current = await self.store.campaign_state(account_id, campaign_id)
                events = domain.queue(current, now, senders=await self._senders_of(account_id, current))
                if not events:
                    # Nothing to queue: a key its campaign no longer gives would stay due for good, ahead of
                    # every campaign due after it, so it goes (safe under the lock: `store.relist`).
                    await self.store.relist(key)
                    continue
                await self.recorder.commit(events)
            if any(isinstance(e, CampaignReturned) for e in events):
                log.warning("campaign returned to its author, not queued: its From domain is not verified any "
                            "more", extra={"account_id": account_id, "campaign": campaign_id})
                continue
            metrics.SCHEDULE_LAG.observe(max(0.0, (datetime.now(UTC) - send_at).total_seconds()))
            log.info("campaign queued", extra={"account_id": account_id, "campaign": campaign_id,
                                               "send_at": send_at.isoformat()})
            queued += 1
        return queued

    async def complete_finished(self) -> int:
        """CampaignCompleted for every queued campaign delivery has finished with."""
        completed = 0
        for account_id, campaign_id in await self.store.completing():
            async with self.recorder.serialised(_lock(account_id, campaign_id)):
                events = domain.complete(await self.store.campaign(account_id, campaign_id))
                if not events:
                    # A key its campaign no longer gives would stay among the first read for good (`queue_due`).
                    await self.store.relist(compose(account_id, campaign_id), COMPLETING)
                    continue
                await self.recorder.commit(events)
            log.info("campaign completed", extra={"account_id": account_id, "campaign": campaign_id})
            completed += 1
        return completed

    # Sending domains

    async def senders(self, account_id: str, from_email: str) -> domain.Senders:
        """What decides whether the account may send From this address: of its sending domains, those that
        could cover it (its domain and parents, read by key), and the shared ones."""
        docs = await self.store.sending_domains_named(account_id, domain.sender_candidates(from_email))
        return domain.senders_of(docs, self.shared_sending_domains)

    async def _senders_of(self, account_id: str, current: domain.CampaignState | None) -> domain.Senders:
        if current is None:
            return domain.Senders(shared=self.shared_sending_domains)
        return await self.senders(account_id, current.content.from_email)

    async def add_sending_domain(self, account_id: str, text: str) -> Document:
        name = domain.domain_name(text)
        async with self.recorder.serialised(_domain_lock(account_id, name)):
            existing = await self.store.sending_domain(account_id, name)
            await self.recorder.commit(domain.add_sending_domain(account_id, name, existing,
                                                                 domain.new_verification_token()))
        return await self.sending_domain(account_id, name)

    async def verify_sending_domain(self, account_id: str, text: str) -> Document:
        """Ask DNS now for the domain's verification record (a pending domain only); verified, or refused with
        what DNS held instead."""
        name = self._named(text)
        async with self.recorder.serialised(_domain_lock(account_id, name)):
            doc = await self.store.sending_domain(account_id, name)
            answer = None
            if doc is not None and domain.awaiting_verification(doc):
                answer = await self.dns.txt(domain.verification_record(name, doc["token"]).name)
                log.info("sending domain looked up", extra={"account_id": account_id, "domain": name,
                                                            "dns": answer.outcome})
            await self.recorder.commit(domain.verify_sending_domain(doc, name, answer))
        return await self.sending_domain(account_id, name)

    async def remove_sending_domain(self, account_id: str, text: str) -> None:
        name = self._named(text)
        async with self.recorder.serialised(_domain_lock(account_id, name)):
            doc = await self.store.sending_domain(account_id, name)
            await self.recorder.commit(domain.remove_sending_domain(doc, name))

    async def sending_domain(self, account_id: str, text: str) -> Document:
        name = self._named(text)
        doc = await self.store.sending_domain(account_id, name)
        if doc is None:
            raise domain.SendingDomainNotFound(f"{name} is not a sending domain of this account")
        return doc

    @staticmethod
    def _named(text: str) -> str:
        """A sending domain a path names, as it is kept; what is no domain name is no sending domain either."""
        try:
            return domain.domain_name(text, "path.domain")
        except domain.InvalidDomain:
            raise domain.SendingDomainNotFound(f"{text[:300]!r} is not a sending domain of this account (not a "
                                               "domain name)") from None

    async def _campaign(self, account_id: str, campaign_id: str) -> Document:
        doc = await self.store.campaign(account_id, campaign_id)
        if doc is None:
            raise domain.CampaignNotFound(f"no campaign {campaign_id!r}")
        return doc


class Scheduler:
    """Emits CampaignQueued at each campaign's time, and CampaignCompleted once delivery has finished one. It
    starts only once the projection has applied everything herald.campaigns held when the process started (its
    own CampaignQueued of before a crash included), so a campaign queued just before a SIGKILL is not queued
    again; from then on every decision waits for its own event to be applied."""

    def __init__(self, service: CampaignsService, settings: HeraldSettings, interval: float = 0.5) -> None:
        self.service = service
        self.settings = settings
        self.interval = interval
        self.caught_up = False
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        topic = self.settings.topics("herald.campaigns")
        ends = await end_offsets(self.settings, topic)
        await self.service.recorder.checkpoints.wait_until_applied(
            [(topic, partition, end - 1) for partition, end in ends.items() if end > 0])
        self.caught_up = True
        log.info("scheduler caught up with herald.campaigns", extra={"partitions": len(ends)})
        await every(self.interval, self._stopping, self._round, "scheduling round")

    async def _round(self) -> None:
        await self.service.queue_due(datetime.now(UTC))
        await self.service.complete_finished()
        await self._gauges()

    async def _gauges(self) -> None:
        store = self.service.store
        counts = await store.status_counts()
        for status in domain.STATUSES:
            metrics.CAMPAIGNS.labels(status).set(counts.get(status, 0))
        oldest = await store.oldest_in_review()
        metrics.REVIEW_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0)
        metrics.REVIEW_DEPTH.set(counts.get("in_review", 0))
