"""When delivery is done with a campaign: each campaign's progress, kept as its messages end, and
CampaignDeliveryFinished announced once when the last one has.

Nothing is counted by a query. The expansion says when it has written every job; the sender's queue knows
how many of a campaign's messages are unfinished; each message is counted once, when the sender drops it
from the queue after its final outcome is recorded and published. Both change together, with no await
between, so the counts always add up to the messages the campaign has. After a restart the counts come
from the ledger fold the sender does at start-up anyway (jobs and their last outcomes): exact whatever
was in flight, and no counter can be off by a write that a crash interrupted.

The announcement is written to `finished_campaigns` before it is published and marked published after; at
start-up one not marked is published again, with the same deterministic event id (README, "Effectively
once"). Once published, the campaign leaves the open listing (`store.OPEN_CAMPAIGNS`), which is all a start
reads: no key of the campaigns announced is held, here or anywhere, and one that comes up again (a redelivered
CampaignQueued) is looked up by `_id` in `finished_campaigns` before it could be announced a second time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol

from herald_shared.contract import Event, parse_event, serialize_event
from herald_shared.mongo import Document

from . import domain
from .domain import CampaignProgress, FinalResult, MessageFlow
from .queue import JobQueue
from .store import scoped

log = logging.getLogger(__name__)


class CompletionStore(Protocol):
    async def mark_expanded(self, account_id: str, campaign_id: str, jobs: int, token: str) -> None: ...

    async def expansions(self) -> dict[str, int]: ...

    async def finished_campaigns(self) -> list[Document]: ...

    async def record_finished(self, doc: Document) -> Document: ...

    async def mark_finished_published(self, key: str) -> None: ...

    async def announcement(self, key: str) -> bool | None: ...

    async def close_campaign(self, key: str) -> None: ...


class Publisher(Protocol):
    async def publish(self, event: Event) -> Any: ...


class CampaignCompletion:
    def __init__(self, store: CompletionStore, jobs: JobQueue, publisher: Publisher,
                 closed: Callable[[str], object] = lambda key: None,
                 flow: Callable[[str, str], MessageFlow | None] = lambda account_id, campaign_id: None) -> None:
        """`closed`: told each campaign (`account:campaign`) this process closed, whose gates need not be held.
        `flow`: a campaign's flow (`GateBook.flow`), which its CampaignDeliveryFinished carries."""
        self._store = store
        self._closed = closed
        self._flow = flow
        self._jobs = jobs
        self._publisher = publisher
        self._progress: dict[str, CampaignProgress] = {}
        # Being announced by this process, or found announced and unpublished at start: never again. Dropped once
        # published (from then on `finished_campaigns`, read by `_id`, says so).
        self._finished: set[str] = set()
        self._to_announce: dict[str, Event] = {}  # decided, not yet recorded and published
        self._announcing = asyncio.Lock()
        self._ledger_loaded = False

    async def load(self) -> None:
        """At start-up, before the consumers, of the open campaigns: those announced already (those not published
        yet are published with the ledger; those published are closed, a stop or crash having come between),
        and those whose expansion wrote every job."""
        announced: set[str] = set()
        for doc in await self._store.finished_campaigns():
            announced.add(doc["_id"])
            if doc.get("published"):
                await self._close(doc["_id"])
            else:
                self._finished.add(doc["_id"])
                self._to_announce[doc["_id"]] = parse_event(doc["event"])
        for key, jobs in (await self._store.expansions()).items():
            if key not in announced:
                self._progress[key] = CampaignProgress(expanded_jobs=jobs)

    def forget_account(self, account_id: str) -> None:
        """Retention: the account's campaigns are never announced (their jobs and ledger are gone)."""
        prefix = account_id + ":"
        for key in [k for k in self._progress if k.startswith(prefix)]:
            del self._progress[key]
        for key in [k for k in self._to_announce if k.startswith(prefix)]:
            del self._to_announce[key]
        self._finished |= {k for k in self._finished if k.startswith(prefix)}

    def expanding(self, account_id: str, campaign_id: str) -> None:
        """Its expansion (again, for a redelivered CampaignQueued) is under way: not finished before it is done."""
        key = scoped(account_id, campaign_id)
        if key not in self._finished:
            self._progress[key] = replace(self._progress.get(key, CampaignProgress()), expanded_jobs=None)

    async def expanded(self, account_id: str, campaign_id: str, jobs: int, token: str,
                       still_latest: Callable[[], bool] = lambda: True) -> None:
        """The expansion has written every job; a campaign nobody receives ends here. `still_latest`: False
        once the campaign was queued again (its newer expansion is the one that counts)."""
        await self._store.mark_expanded(account_id, campaign_id, jobs, token)
        key = scoped(account_id, campaign_id)
        if key in self._finished or not still_latest():
            return
        if (published := await self._store.announcement(key)) is not None:
            # Queued again after its end was announced (a redelivered CampaignQueued): announced once, ever.
            self._progress.pop(key, None)
            if published:
                await self._close(key)  # listed open again by that CampaignQueued
            return
        self._progress[key] = replace(self._progress.get(key, CampaignProgress()), expanded_jobs=jobs)
        if self._ledger_loaded:
            await self._settle(account_id, campaign_id)

    async def ledger_loaded(self, finished: Mapping[str, Mapping[FinalResult, int]]) -> None:
        """The sender has folded the ledger (and queued every unfinished job): how the finished messages of
        each campaign ended. From now on the queue's count of unfinished messages is complete."""
        for key, counts in finished.items():
            if key in self._finished:
                continue
            progress = CampaignProgress(expanded_jobs=self._progress.get(key, CampaignProgress()).expanded_jobs)
            for result, messages in counts.items():  # nothing was sent before: the ledger's counts are all
                progress = progress.counted(result, messages)
            self._progress[key] = progress
        self._ledger_loaded = True
        for key in list(self._progress):
            account_id, _, campaign_id = key.partition(":")
            await self._settle(account_id, campaign_id)
        await self.announce_pending()

    async def message_finished(self, job: Document, result: FinalResult) -> None:
        """Count a campaign message the sender has just dropped from its queue (once per job: the queue
        says whether it held it), and announce its campaign's end if it was the last."""
        if job["kind"] != "campaign":
            return
        key = scoped(job["account_id"], job["campaign_id"])
        if key in self._finished:
            return
        self._progress[key] = self._progress.get(key, CampaignProgress()).counted(result)
        await self._settle(job["account_id"], job["campaign_id"])

    async def _settle(self, account_id: str, campaign_id: str) -> None:
        key = scoped(account_id, campaign_id)
        progress = self._progress.get(key)
        if progress is None or key in self._finished:
            return
        event = domain.delivery_finished(account_id, campaign_id, progress, self._jobs.unfinished(account_id,
                                                                                                  campaign_id),
                                         datetime.now(UTC), self._flow(account_id, campaign_id))
        if event is None:
            return
        if progress.expanded_jobs != progress.finished_messages:
            # Only after a crash in the middle of an expansion whose audience then changed: the ledger's
            # jobs are the truth, and every one of them was finished.
            log.warning("a campaign ended with another number of messages than its expansion wrote",
                        extra={"campaign": key, "expanded": progress.expanded_jobs,
                               "messages": progress.finished_messages})
        self._finished.add(key)
        del self._progress[key]
        self._to_announce[key] = event
        await self.announce_pending()

    async def _close(self, key: str) -> None:
        await self._store.close_campaign(key)
        self._closed(key)

    async def announce_pending(self) -> None:
        """Record and publish every end decided and not yet published; what fails (MongoDB or Kafka away)
        stays for the next call (the service calls it periodically)."""
        if not self._ledger_loaded:
            return
        async with self._announcing:
            for key, event in list(self._to_announce.items()):
                try:
                    stored = await self._store.record_finished({
                        "_id": key, "account_id": event.account_id,
                        "campaign_id": getattr(event.payload, "campaign_id", None),
                        "event": serialize_event(event).decode(), "published": False})
                    await self._publisher.publish(parse_event(stored["event"]))
                except Exception:
                    log.exception("announcing the end of a campaign failed; trying again later",
                                  extra={"campaign": key})
                    continue
                del self._to_announce[key]
                log.info("delivery finished a campaign", extra={"campaign": key,
                                                                "counts": event.payload.model_dump()})
                self._finished.discard(key)  # `finished_campaigns` holds it: a later look-up finds it there
                try:
                    await self._store.mark_finished_published(key)
                    await self._close(key)  # only after: a start reads what is still listed
                except Exception:  # published: the next start publishes it again, and consumers drop the copy
                    log.exception("could not mark the end of a campaign published and close it",
                                  extra={"campaign": key})
