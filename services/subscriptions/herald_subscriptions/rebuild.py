"""Rebuild the subscriptions read model from offset 0 of its topics, the upgrade to a new read-model format
(README, "Upgrading"): `python -m herald_subscriptions.rebuild`, with every subscriptions process stopped."""

from __future__ import annotations

import asyncio
import logging

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.contract import Event
from herald_shared.logs import configure_logging
from herald_shared.mongo import Document, MongoDeduplicator, make_client, rebuild
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.settings import HeraldSettings

from .activity import Activity, ActivityErasures
from .main import PROJECTION_TOPICS, SERVICE
from .store import SubscriptionsProjection, mark_format

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
        await self.projection.handle(event)
        await self.erasures.handle(event)

    async def flush(self) -> None:
        await self.projection.flush()
        await self.erasures.flush()


async def rebuild_read_model(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Drop the projection's collections, fold them again from every event (purged accounts' dropped by their
    tombstones, which a rebuild keeps), then mark the format. The consumer resumes from its committed offsets:
    what it reads again was folded here and changes nothing. Interrupted, it is simply run again (the mark is
    written last). Returns the number of events folded."""
    projection = SubscriptionsProjection(db)
    folded = _WithErasures(projection, ActivityErasures(db))
    activity = Activity(db)

    async def purge(account_id: str) -> None:
        await projection.purge(account_id)
        await activity.purge(account_id)

    applied = await rebuild(PurgingHandler(folded, PurgedAccounts(db), purge), settings,
                            PROJECTION_TOPICS, deduplicator=MongoDeduplicator(db, "projection"))
    await mark_format(db)
    return applied


async def _run(settings: HeraldSettings) -> None:
    mongo = make_client(settings, f"{SERVICE}-rebuild")
    try:
        applied = await rebuild_read_model(settings, mongo[settings.database_name(SERVICE)])
        log.info("subscriptions read model rebuilt", extra={"events": applied})
    finally:
        await mongo.close()


def main() -> None:
    settings = HeraldSettings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
