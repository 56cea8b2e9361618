"""Rebuild the subscriptions read model from offset 0 of its topics, the upgrade to a new read-model format
(README, "Upgrading"): `python -m herald_subscriptions.rebuild`, with every subscriptions process stopped."""

from __future__ import annotations

import asyncio
import logging

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.logs import configure_logging
from herald_shared.mongo import Document, MongoDeduplicator, make_client, rebuild
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.settings import HeraldSettings

from .main import PROJECTION_TOPICS, SERVICE
from .store import SubscriptionsProjection, mark_format

log = logging.getLogger(__name__)


async def rebuild_read_model(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Drop the projection's collections, fold them again from every event (purged accounts' dropped by their
    tombstones, which a rebuild keeps), then mark the format. The consumer resumes from its committed offsets:
    what it reads again was folded here and changes nothing. Interrupted, it is simply run again (the mark is
    written last). Returns the number of events folded."""
    projection = SubscriptionsProjection(db)
    applied = await rebuild(PurgingHandler(projection, PurgedAccounts(db), projection.purge), settings,
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
