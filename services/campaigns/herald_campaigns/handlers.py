"""One function per request: load state, let the domain decide, publish, and wait until the projection holds
the result so the answer reflects it. The scheduler is one more caller: it queues what is due."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError

from herald_shared import correlation
from herald_shared.commands import Recorder
from herald_shared.contract import Event
from herald_shared.contract.campaigns import (
    CampaignReturned,
    CampaignTestRequested,
    StaffViewed,
    StaffViewedPayload,
)
from herald_shared.contract.subscriptions import FieldValue
from herald_shared.kafka import end_offsets, is_transient
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


# Due campaigns (and finished ones to complete) tried in one scheduling round; more wait for the next round.
SCHEDULER_BATCH = 100
# Kafka's client errors that refuse the record for what it is (its size), not a broker away: no retry changes them
# (`is_transient` counts every KafkaError as the broker's).
REFUSED_RECORDS: tuple[type[Exception], ...] = (MessageSizeTooLargeError, RecordTooLargeError,
                                                RecordListTooLargeError)


class HeldBack:
    """Campaigns (listing keys) whose last try failed for a reason of their own, each tried again after `first`
    seconds, then twice as long each time, `longest` at most: a campaign that can never pass costs a try and a log
    line every 15 minutes, and delays no other. Held in memory: a restart tries each once more."""

    def __init__(self, first: float = 1.0, longest: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.first, self.longest, self._clock = first, longest, clock
        self._failing: dict[str, tuple[int, float]] = {}  # key -> (failures in a row, when to try again)

    def __len__(self) -> int:
        return len(self._failing)

    def waiting(self, key: str) -> bool:
        failing = self._failing.get(key)
        return failing is not None and self._clock() < failing[1]

    def failed(self, key: str) -> tuple[int, float]:
        """Count a failure of `key`: how many in a row, and the seconds until it is tried again."""
        failures = self._failing.get(key, (0, 0.0))[0] + 1
        delay = min(self.first * 2 ** min(failures - 1, 30), self.longest)
        self._failing[key] = (failures, self._clock() + delay)
        return failures, delay

    def passed(self, key: str) -> None:
        self._failing.pop(key, None)

    def keep_only(self, keys: Collection[str]) -> None:
        self._failing = {key: failing for key, failing in self._failing.items() if key in keys}


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
        # The scheduler's campaigns that failed for a reason of their own (`_each`).
        self.queueing, self.completing = HeldBack(), HeldBack()
        # Reports counted by an earlier format's rules are being counted again (`rebuild`): none is served meanwhile.
        self.reports_recounting = False

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
        lst = await self.store.list_info(account_id, current.list_id) if current is not None else None
        await self.recorder.commit(domain.duplicate(current, campaign_id, new_id, lst))
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

    async def unschedule(self, account_id: str, campaign_id: str, by: str, reason: str | None) -> Document:
        """Back to a draft, under the campaign's lock: the scheduler queues it under the same lock, so either it
        was queued first (409: cancel it) or it never will be from this submission."""
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            current = await self.store.campaign_state(account_id, campaign_id)
            await self.recorder.commit(domain.unschedule(current, campaign_id, by, reason))
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
        account = await self.store.account(account_id)
        await self._check_test_recipients(account_id, account, recipients)
        domain.check_test_opt_outs(recipients, await self.store.test_opt_outs(
            account_id, {domain.recipient_sha256(address) for address in recipients}))
        verdict = await screened(self.screening, state, campaign_id, lst, values)
        if verdict.flagged and not domain.account_review_reasons(account):
            # What a submission would send to staff first goes, as a test, only to the account's own people.
            await self._check_test_recipients(account_id, account, recipients, verdict.matches)
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

    async def _check_test_recipients(self, account_id: str, account: domain.AccountInfo | None,
                                     recipients: Sequence[str], flags: Sequence[screening.Match] = ()) -> None:
        """Refuse a test of an account under review, or of content screening flagged, to an address not the
        account's own (`domain.check_test_recipients`); its sending domains are read, by key, only then."""
        if not domain.test_review_reasons(account, flags):
            return
        docs = await self.store.sending_domains_named(account_id, domain.test_recipient_domains(recipients))
        domain.check_test_recipients(account, recipients, domain.senders_of(docs, self.shared_sending_domains), flags)

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

    # The scheduler: each campaign on its own. Kafka or MongoDB away fails the round (`every` tries it again, as it
    # does while they are away); any other failure is the campaign's, so it is logged, counted and held back
    # (`HeldBack`) while the round goes on with the next: one whose document no code reads any more, or whose
    # record Kafka refuses all the same, delays no other account's. (One no event can carry, stored before the size
    # rule, is known before publishing and returned to its author: `domain.queue`.)

    async def queue_due(self, now: datetime) -> int:
        """Queue the scheduled campaigns whose time has come, earliest first; each decided under its lock against
        the state the projection holds, and waited for, so it is queued once."""
        return await self._each(self.queueing, "queue", lambda after: self.store.due(now, after, SCHEDULER_BATCH),
                                lambda key: self._queue(key, now))

    async def _queue(self, key: str, now: datetime) -> int:
        send_at, account_id, campaign_id = key_parts(key)
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            current = await self.store.campaign_state(account_id, campaign_id)
            lst = await self.store.list_info(account_id, current.list_id) if current is not None else None
            events = domain.queue(current, now, senders=await self._senders_of(account_id, current), lst=lst)
            if not events:
                # Nothing to queue: a key its campaign no longer gives would stay due for good, ahead of
                # every campaign due after it, so it goes (safe under the lock: `store.relist`).
                await self.store.relist(key)
                return 0
            await self.recorder.commit(events)
        # What is logged of it is in the submission's flow, as its CampaignQueued is (domain.queue).
        with correlation.flow(events[0].correlation_id):
            return self._queued_or_returned(events, send_at, account_id, campaign_id)

    @staticmethod
    def _queued_or_returned(events: list[Event], send_at: datetime, account_id: str, campaign_id: str) -> int:
        returned = [e.payload for e in events if isinstance(e, CampaignReturned)]
        if returned:
            log.warning("campaign returned to its author, not queued", extra={
                "account_id": account_id, "campaign": campaign_id, "reason": returned[0].reason,
                "detail": returned[0].detail})
            return 0
        metrics.SCHEDULE_LAG.observe(max(0.0, (datetime.now(UTC) - send_at).total_seconds()))
        log.info("campaign queued", extra={"account_id": account_id, "campaign": campaign_id,
                                           "send_at": send_at.isoformat()})
        return 1

    async def complete_finished(self) -> int:
        """CampaignCompleted for every queued campaign delivery has finished with."""
        return await self._each(self.completing, "complete",
                                lambda after: self.store.completing(after, SCHEDULER_BATCH), self._complete)

    async def _complete(self, key: str) -> int:
        account_id, campaign_id = key.split("/")
        async with self.recorder.serialised(_lock(account_id, campaign_id)):
            events = domain.complete(await self.store.campaign(account_id, campaign_id))
            if not events:
                # A key its campaign no longer gives would stay among the first read for good (`queue_due`).
                await self.store.relist(compose(account_id, campaign_id), COMPLETING)
                return 0
            await self.recorder.commit(events)
        log.info("campaign completed", extra={"account_id": account_id, "campaign": campaign_id})
        return 1

    @staticmethod
    async def _each(held: HeldBack, step: str, page: Callable[[str | None], Awaitable[list[str]]],
                    attempt: Callable[[str], Awaitable[int]]) -> int:
        """`attempt` each key of a listing in order, SCHEDULER_BATCH a round (the rest next round), reading pages
        past the keys held back so that a page of them does not stop the line; how many it did. Once a round has
        read the listing to its end, what is held back of a key gone from it (a campaign cancelled) is forgotten."""
        done = tried = 0
        seen: set[str] = set()
        after: str | None = None
        while True:
            keys = await page(after)
            for key in keys:
                seen.add(key)
                if held.waiting(key):
                    continue
                if tried == SCHEDULER_BATCH:
                    return done
                tried += 1
                try:
                    done += await attempt(key)
                except Exception as exc:
                    if is_transient(exc) and not isinstance(exc, REFUSED_RECORDS):
                        raise  # Kafka or MongoDB away: the round fails, and the next one tries again
                    failures, delay = held.failed(key)
                    metrics.SCHEDULER_FAILURES.labels(step).inc()
                    # The traceback the first time; then a line per try, at most every HeldBack.longest seconds.
                    # Named as every other line of the campaign is (a key ends `account/campaign`).
                    *_, account_id, campaign_id = ["", *key.split("/")]
                    log.error("a campaign failed to %s for a reason of its own; the others go on, it is tried "
                              "again later", step, extra={"account_id": account_id or None, "campaign": campaign_id,
                                                          "key": key, "failures": failures,
                                                          "retry_in_seconds": delay, "error": repr(exc)[:500]},
                              exc_info=exc if failures == 1 else None)
                else:
                    held.passed(key)
            if len(keys) < SCHEDULER_BATCH:
                break
            after = keys[-1]
        held.keep_only(seen)
        return done

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
        """Ask DNS now for the domain's verification record (a pending domain only) and its DKIM key's record (one
        delivery made and DNS did not hold yet); verified, or refused with what DNS held instead."""
        name = self._named(text)
        async with self.recorder.serialised(_domain_lock(account_id, name)):
            doc = await self.store.sending_domain(account_id, name)
            answer = dkim_answer = None
            if doc is not None and domain.awaiting_verification(doc):
                answer = await self._looked_up(account_id, name, domain.verification_record(name, doc["token"]).name)
            dkim = domain.awaiting_dkim(doc)
            if dkim is not None:
                dkim_answer = await self._looked_up(account_id, name, dkim.name)
            await self.recorder.commit(domain.verify_sending_domain(doc, name, answer, dkim_answer))
        return await self.sending_domain(account_id, name)

    async def _looked_up(self, account_id: str, name: str, record_name: str) -> domain.DnsAnswer:
        answer = await self.dns.txt(record_name)
        log.info("sending domain looked up", extra={"account_id": account_id, "domain": name, "record": record_name,
                                                    "dns": answer.outcome})
        return answer

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
        metrics.SCHEDULER_HELD_BACK.labels("queue").set(len(self.service.queueing))
        metrics.SCHEDULER_HELD_BACK.labels("complete").set(len(self.service.completing))
        await self._read_model_gauges()

    async def _read_model_gauges(self) -> None:
        store = self.service.store
        counts = await store.status_counts()
        for status in domain.STATUSES:
            metrics.CAMPAIGNS.labels(status).set(counts.get(status, 0))
        oldest = await store.oldest_in_review()
        metrics.REVIEW_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0)
        metrics.REVIEW_DEPTH.set(counts.get("in_review", 0))
