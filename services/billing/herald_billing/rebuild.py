"""Fold billing's read model again from offset 0 of the topics its projection consumer reads, the upgrade to a new
read-model format (README, "Upgrading"): `python -m herald_billing.rebuild`, with every billing process stopped; it
refuses to start while a process still consumes in the service's group. What the handlers write outside the fold
(invoice numbers, kept invoices, password resets, the platform audit, the API keys' own collection) stays as it is."""

from __future__ import annotations

import asyncio
import sys

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.logs import configure_logging
from herald_shared.mongo import Document
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.rebuilding import REFUSED as REFUSED
from herald_shared.rebuilding import fold_again, run_rebuild
from herald_shared.settings import HeraldSettings

from .main import PROJECTION_LEAD, PROJECTION_ONLY, PROJECTION_TOPICS, SERVICE, BillingSettings
from .store import READ_MODEL, BillingProjection

# The group of the service's consumer (main.Billing: the EventConsumer's name, after the topic prefix).
CONSUMERS = ("projection",)
STOP = "Stop every billing process (README, \"Upgrading\")"


def consumer_groups(settings: HeraldSettings) -> list[str]:
    return [f"{settings.topic_prefix}{SERVICE}.{consumer}" for consumer in CONSUMERS]


async def fold_read_model(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Remove the format's mark, drop the projection's collections and fold them again from every event the
    projection consumer reads (purged accounts' dropped by their tombstones, which a rebuild keeps), herald.billing
    first as the consumer reads it (each account's history before its usage: a send counts under its plan). The
    consumer's deduplicator is emptied and refilled with the ids folded (`rebuilding.fold_again`), so that the
    consumer, resuming from its committed offsets, passes over what it reads again. Returns the number of events
    read."""
    # Unmarked until folded again: a process of this version refuses what an interrupted run (or one that processes
    # joined, `run_rebuild`) left, instead of serving it.
    await READ_MODEL.unmark(db)
    billing = settings if isinstance(settings, BillingSettings) else BillingSettings(**settings.model_dump())
    projection = BillingProjection(db, billing.calendar(), billing.invoice_retention_years)
    handler = PurgingHandler(projection, PurgedAccounts(db), projection.purge)
    return await fold_again(handler, settings, db, PROJECTION_TOPICS, "projection", only=PROJECTION_ONLY,
                            lead=PROJECTION_LEAD)


async def rebuild_read_model(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Fold the read model again (`fold_read_model`), then mark the format. The consumer resumes from its committed
    offsets: what it reads again was folded here and changes nothing. Interrupted, it is simply run again (the
    mark is written last). Returns the number of events read."""
    applied = await fold_read_model(settings, db)
    await READ_MODEL.mark(db)
    return applied


def main() -> int:
    settings = BillingSettings()
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(run_rebuild(settings, READ_MODEL, consumer_groups(settings), STOP, fold_read_model))


if __name__ == "__main__":
    sys.exit(main())
