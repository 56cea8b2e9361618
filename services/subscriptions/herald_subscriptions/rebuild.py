"""Rebuild the subscriptions read model from offset 0 of its topics, the upgrade to a new read-model format
(README, "Upgrading"): `python -m herald_subscriptions.rebuild`, with every subscriptions process stopped; it
refuses to start while a process still consumes in the service's groups."""

from __future__ import annotations

import asyncio
import logging
import sys

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.contract import Event
from herald_shared.kafka import Reject
from herald_shared.logs import configure_logging
from herald_shared.mongo import Document
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.rebuilding import REFUSED as REFUSED
from herald_shared.rebuilding import fold_again, run_rebuild
from herald_shared.settings import HeraldSettings

from .activity import ACTIVITY_GROUP, Activity, ActivityErasures
from .main import PROJECTION_TOPICS, SERVICE
from .store import MEMBER_EVENTS, READ_MODEL, SubscriptionsProjection

# The groups of the service's consumers (main.Subscriptions: each EventConsumer's name, after the topic prefix).
CONSUMERS = ("projection", "suppression", ACTIVITY_GROUP)
STOP = "Stop every subscriptions process (README, \"Upgrading\": the folding ones and subscriptions-api)"
log = logging.getLogger(__name__)


class _WithErasures:
    """The projection rebuilt, and every erasure's tombstone of the activity written again on the way (a person
    erased, then back on the list, is a membership no longer marked erased: `activity.mark_erasures` cannot see
    them). The activity itself is the activity consumer's: not dropped here."""

    def __init__(self, projection: SubscriptionsProjection, erasures: ActivityErasures) -> None:
        self.projection, self.erasures = projection, erasures

    async def drop(self) -> None:
        await self.projection.drop()

    async def ensure_indexes(self) -> None:
        await self.projection.ensure_indexes()

    async def handle(self, event: Event) -> None:
        try:
            await self.projection.handle(event)
        except Reject as exc:
            # Left out, as the live consumer dead-lettered it (a member of a list never created); a replay of that
            # dead letter sits later in the topic and is folded there.
            log.warning("rebuild leaves out an event the projection refuses", extra={
                "event_id": str(event.event_id), "type": event.type, "reason": exc.reason})
            return
        await self.erasures.handle(event)

    async def flush(self) -> None:
        await self.projection.flush()
        await self.erasures.flush()


def consumer_groups(settings: HeraldSettings) -> list[str]:
    return [f"{settings.topic_prefix}{SERVICE}.{consumer}" for consumer in CONSUMERS]


async def fold_read_model(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Remove the format's mark, drop the projection's collections and fold them again from every event (purged
    accounts' dropped by their tombstones, which a rebuild keeps). Returns the number of events folded."""
    # Unmarked until folded again: a process of this version refuses what an interrupted run (or one that processes
    # joined, `run_rebuild`) left, instead of serving it.
    await READ_MODEL.unmark(db)
    projection = SubscriptionsProjection(db, rebuilding=True)
    folded = _WithErasures(projection, ActivityErasures(db))
    activity = Activity(db)

    async def purge(account_id: str) -> None:
        await projection.purge(account_id)
        await activity.purge(account_id)

    # The member events' ids are the memberships' to keep (`EventConsumer(self_deduplicated=MEMBER_EVENTS)` in main)
    return await fold_again(PurgingHandler(folded, PurgedAccounts(db), purge), settings, db, PROJECTION_TOPICS,
                            "projection", MEMBER_EVENTS)


async def rebuild_read_model(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Fold the read model again (`fold_read_model`), then mark the format. The consumer resumes from its committed
    offsets: what it reads again was folded here and changes nothing. Interrupted, it is simply run again (the
    mark is written last). Returns the number of events folded."""
    applied = await fold_read_model(settings, db)
    await READ_MODEL.mark(db)
    return applied


def main() -> int:
    settings = HeraldSettings()
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(run_rebuild(settings, READ_MODEL, consumer_groups(settings), STOP, fold_read_model))


if __name__ == "__main__":
    sys.exit(main())
