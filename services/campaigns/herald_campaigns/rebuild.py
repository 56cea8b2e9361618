"""The report read model's format (`reports` and `engaged`), and its upgrade: a database whose reports were counted
by the rules of an earlier format is folded again from offset 0, once, by the campaigns process itself at start
(README, "Upgrading"), while drafts, review and the scheduler go on."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from herald_shared.consumer_groups import live_members
from herald_shared.contract import Event
from herald_shared.contract.billing import AccountPurged
from herald_shared.mongo import Document, RunCopies, WindowDeduplicator
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.rebuilding import FORMATS, ReadModelFormat, events_from_start, refusal
from herald_shared.settings import HeraldSettings

from . import domain
from .store import REPORTS, ReportsProjection

SERVICE = "campaigns"
CONSUMER = "reports"  # the report read model's consumer: its group, checkpoints and remembered event ids
REPORT_TOPICS = ("herald.delivery", "herald.subscriptions")
# Copies of delivery's events come close behind the originals (republished from its watermark right after
# a restart); a copy further back than this many handled events would be counted again (WindowDeduplicator).
DEDUPLICATION_WINDOW = 200_000
# 2: what `domain.firsts` counts once per message (a failure two DSNs report, a delay report, a deferral, a
# recipient's repeated unsubscribe: 2026-12-07). The mark of a database of format 1 is written as 1 before its
# collections are dropped, so a refold cut short is never taken for a new install's empty read model.
REPORTS_FORMAT = ReadModelFormat(SERVICE, "reports", 2, REPORTS, "reports")
# How long the refold waits before looking again while another process consumes in the reports' group, or
# holds the refold's lease.
MEMBERS_RETRY_SECONDS = 15.0
# The refold's lease (a document in FORMATS): one process at a time empties and folds the reports. A process that
# refolds is not in the reports' group yet (its consumer starts after), so the group alone could not tell a second
# one: it emptied the counters under the first (a review: 18,047 of 30,000 sends counted, the second process never
# serving). Renewed every LEASE_SECONDS / 4 while folding; one not renewed for LEASE_SECONDS is a dead process's.
REFOLD_LEASE = "reports_refold"
LEASE_SECONDS = 60.0

log = logging.getLogger("herald.campaigns")


def report_events() -> dict[str, list[type[Event]]]:
    """What the report consumer reads, by topic (`EventConsumer(only=...)`): the events a report counts, and
    billing's AccountPurged (retention)."""
    only: dict[str, list[type[Event]]] = {topic: [cls for cls in domain.REPORT_EVENTS if cls.topic == topic]
                                          for topic in REPORT_TOPICS}
    only["herald.billing"] = [AccountPurged]
    return only


def deduplicator(db: AsyncDatabase[Document]) -> WindowDeduplicator:
    return WindowDeduplicator(db, CONSUMER, window=DEDUPLICATION_WINDOW)


async def reports_current(db: AsyncDatabase[Document]) -> bool:
    """Whether the reports are of this version's format: marked so, or nothing counted yet (a new install, marked
    now). Two reads by `_id`."""
    mark = await db[FORMATS].find_one({"_id": REPORTS_FORMAT.name})
    if mark is not None:
        return bool(mark.get("format") == REPORTS_FORMAT.version)
    if await REPORTS_FORMAT.empty(db):
        await REPORTS_FORMAT.mark(db)
        return True
    return False


class _Window:
    """The consumer's window of recent event ids as a rebuild's store of the ids it folded (`RunCopies`): emptied
    at the start, it ends holding what the live consumer would hold after the same events."""

    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db, self.window = db, deduplicator(db)

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        return await self.window.seen(event_ids)

    async def remember(self, event_ids: Sequence[str]) -> None:
        await self.window.remember(event_ids)

    async def drop(self) -> None:
        # WindowDeduplicator's documents (`recent_events.<consumer>`); dropped before its first look-up loads them.
        await self.db[f"recent_events.{CONSUMER}"].drop()


async def refold_reports(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Drop the report counters, the engagement markers and the window of recent ids, and fold them again from
    offset 0 of what the report consumer reads, by this version's rules; then mark the format. Waits while a
    process (an earlier version left running) consumes in the reports' group, before dropping and again before
    marking. Cut short, it is run again from the start at the next start (the mark says format 1 until the end).
    The report consumer, started after it, resumes from its committed offsets: what it reads again was counted here
    (`readmodel.Counters` skips by offset, markers and the window are there). Returns the events folded."""
    group = f"{settings.topic_prefix}{SERVICE}.{CONSUMER}"
    owner = uuid.uuid4().hex
    while not await _take_lease(db, owner):
        if await reports_current(db):
            return 0  # another process refolded them meanwhile
        log.warning("another campaigns process is recounting the reports: waiting for it")
        await asyncio.sleep(MEMBERS_RETRY_SECONDS)
    renewing = asyncio.create_task(_renew_lease(db, owner), name="reports refold lease")
    try:
        if await reports_current(db):
            return 0  # refolded by the holder before this one
        await db[FORMATS].update_one({"_id": REPORTS_FORMAT.name}, {"$set": {"format": 1}}, upsert=True)
        while True:
            await _alone(settings, group)
            folded = await _fold(settings, db)
            if not await live_members(settings, [group]):
                break
            log.error("a process joined the reports' consumer group during their refold: folded again")
        await REPORTS_FORMAT.mark(db)
        return folded
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        await db[FORMATS].delete_one({"_id": REFOLD_LEASE, "owner": owner})


async def _take_lease(db: AsyncDatabase[Document], owner: str) -> bool:
    """The refold's lease for `owner`: taken when none is held, or the one held was not renewed for LEASE_SECONDS
    (its process died). An insert by `_id`, the one write two processes cannot both win on FerretDB."""
    for _ in range(2):
        try:
            await db[FORMATS].insert_one({"_id": REFOLD_LEASE, "owner": owner, "renewed": time.time()})
            return True
        except DuplicateKeyError:
            held = await db[FORMATS].find_one({"_id": REFOLD_LEASE})
            if held is not None and held.get("renewed", 0) > time.time() - LEASE_SECONDS:
                return False
            if held is not None:
                await db[FORMATS].delete_one({"_id": REFOLD_LEASE, "owner": held.get("owner")})
    return False


async def _renew_lease(db: AsyncDatabase[Document], owner: str) -> None:
    while True:
        await asyncio.sleep(LEASE_SECONDS / 4)
        await db[FORMATS].update_one({"_id": REFOLD_LEASE, "owner": owner}, {"$set": {"renewed": time.time()}})


async def _alone(settings: HeraldSettings, group: str) -> None:
    while members := await live_members(settings, [group]):
        log.error(refusal(SERVICE, members, "reports not recounted yet", "Stop those campaigns processes"))
        await asyncio.sleep(MEMBERS_RETRY_SECONDS)


async def _fold(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    projection = ReportsProjection(db)
    handler = PurgingHandler(projection, PurgedAccounts(db), projection.purge)
    await handler.drop()  # the counters and markers; the purged accounts' tombstones stay
    await handler.ensure_indexes()
    copies = RunCopies(_Window(db))
    await copies.start()
    folded = 0
    async for events in events_from_start(settings, report_events(), batch_size=5000):
        handled = await copies.firsts(events)
        for event in handled:
            await handler.handle(event)
        await handler.flush()
        await copies.remember(handled)
        folded += len(handled)
    log.info("campaign reports recounted from offset 0", extra={"events": folded})
    return folded
