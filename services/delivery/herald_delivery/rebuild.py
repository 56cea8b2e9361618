"""Fold delivery's audience again from offset 0 of the topics its consumer reads, the upgrade to a new audience
format (README, "Upgrading"): `python -m herald_delivery.rebuild`, with the delivery process that consumes and sends
stopped (an edge process may go on); it refuses to start while a process still consumes in the service's groups.
Only the audience is dropped and refilled: the ledger, jobs, outcomes, gates and campaigns are the other consumers'
and the sender's, and stay as they are."""

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

from .main import AUDIENCE_TOPICS, PURGES, SERVICE
from .store import AUDIENCE, MEMBER_EVENTS, AudienceProjection

# The groups of the service's consumers (main.Delivery: each EventConsumer's name, after the topic prefix). Not only
# the audience's: the control consumer expands campaigns from the audience, and the sender sends from it.
CONSUMERS = ("audience", "confirmations", "control")
STOP = "Stop the delivery processes that consume (README, \"Upgrading\": not the edge ones)"


def consumer_groups(settings: HeraldSettings) -> list[str]:
    return [f"{settings.topic_prefix}{SERVICE}.{consumer}" for consumer in CONSUMERS]


async def fold_audience(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Remove the format's mark, drop the audience's collections and fold them again from every event the audience
    consumer reads (purged accounts' dropped by their tombstones, which a rebuild keeps). Returns the number of
    events read."""
    # Unmarked until folded again: a process of this version refuses what an interrupted run (or one that processes
    # joined, `run_rebuild`) left, instead of sending from it.
    await AUDIENCE.unmark(db)
    projection = AudienceProjection(db, rebuilding=True)
    # The member events' ids are the members' to keep (`EventConsumer(self_deduplicated=MEMBER_EVENTS)` in main)
    return await fold_again(PurgingHandler(projection, PurgedAccounts(db), projection.purge), settings, db,
                            AUDIENCE_TOPICS, "audience", MEMBER_EVENTS, PURGES)


async def rebuild_audience(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Fold the audience again (`fold_audience`), then mark the format. The audience consumer resumes from its
    committed offsets: what it reads again was folded here and changes nothing. Interrupted, it is simply run again
    (the mark is written last). Returns the number of events read."""
    applied = await fold_audience(settings, db)
    await AUDIENCE.mark(db)
    return applied


def main() -> int:
    settings = HeraldSettings()
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(run_rebuild(settings, AUDIENCE, consumer_groups(settings), STOP, fold_audience))


if __name__ == "__main__":
    sys.exit(main())
