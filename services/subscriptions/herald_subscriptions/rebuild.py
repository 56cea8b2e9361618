"""Rebuild the subscriptions read model from offset 0 of its topics, the upgrade to a new read-model format
(README, "Upgrading"): `python -m herald_subscriptions.rebuild`, with every subscriptions process stopped; it
refuses to start while a process still consumes in the service's groups."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from herald_shared.consumer_groups import GroupMember, live_members
from herald_shared.contract import Event
from herald_shared.logs import configure_logging
from herald_shared.mongo import Document, MongoDeduplicator, make_client, rebuild
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.settings import HeraldSettings

from .activity import ACTIVITY_GROUP, Activity, ActivityErasures
from .main import PROJECTION_TOPICS, SERVICE
from .store import FORMATS, MEMBER_EVENTS, SubscriptionsProjection, mark_format

log = logging.getLogger(__name__)
# The groups of the service's consumers (main.Subscriptions: each EventConsumer's name, after the topic prefix).
CONSUMERS = ("projection", "suppression", ACTIVITY_GROUP)
# The exit status of a rebuild refused because processes consume (deploy/k8s/upgrade: the Job is not retried).
REFUSED = 3


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


class _MemberEventsNotRemembered(MongoDeduplicator):
    """The projection consumer's deduplicator as the service leaves it: the member events' ids are not stored
    (the memberships keep them: `EventConsumer(self_deduplicated=MEMBER_EVENTS)` in `main`), only the others'.
    It also spares the rebuild a stored document per member event."""

    def __init__(self, db: AsyncDatabase[Document], consumer_name: str) -> None:
        super().__init__(db, consumer_name)
        self.member_events: set[str] = set()  # ids handled since the last `remember`

    async def remember(self, event_ids: Sequence[str]) -> None:
        member_events, self.member_events = self.member_events, set()
        await super().remember([i for i in event_ids if i not in member_events])


class _NotingMemberEvents:
    """The rebuild's handler, noting each member event's id for `_MemberEventsNotRemembered`."""

    def __init__(self, inner: PurgingHandler, deduplicator: _MemberEventsNotRemembered) -> None:
        self.inner, self.deduplicator = inner, deduplicator

    async def drop(self) -> None:
        await self.inner.drop()

    async def ensure_indexes(self) -> None:
        await self.inner.ensure_indexes()

    async def handle(self, event: Event) -> None:
        if isinstance(event, MEMBER_EVENTS):
            self.deduplicator.member_events.add(str(event.event_id))
        await self.inner.handle(event)

    async def flush(self) -> None:
        await self.inner.flush()


def consumer_groups(settings: HeraldSettings) -> list[str]:
    return [f"{settings.topic_prefix}{SERVICE}.{consumer}" for consumer in CONSUMERS]


def refusal(members: Sequence[GroupMember], outcome: str) -> str:
    """What the operator reads when processes consume beside the rebuild: which, where, and what to do."""
    return "\n".join([
        f"herald-subscriptions rebuild refused ({outcome}): these processes consume in the subscriptions consumer "
        "groups, and a rebuild beside them leaves a corrupt read model (they fold into what it drops and refills):",
        *(f"  {member}" for member in members),
        "Stop every subscriptions process (README, \"Upgrading\": the folding ones and subscriptions-api), then run "
        "the rebuild again. A process killed rather than stopped stays a member until its session times out "
        "(HERALD_KAFKA_SESSION_TIMEOUT_SECONDS, 10 s by default)."])


async def fold_read_model(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Remove the format's mark, drop the projection's collections and fold them again from every event (purged
    accounts' dropped by their tombstones, which a rebuild keeps). Returns the number of events folded."""
    # Unmarked until folded again: a process of this version refuses what an interrupted run (or one that processes
    # joined, `_run`) left, instead of serving it.
    await db[FORMATS].delete_one({"_id": "subscriptions"})  # store.mark_format's
    projection = SubscriptionsProjection(db, rebuilding=True)
    folded = _WithErasures(projection, ActivityErasures(db))
    activity = Activity(db)

    async def purge(account_id: str) -> None:
        await projection.purge(account_id)
        await activity.purge(account_id)

    deduplicator = _MemberEventsNotRemembered(db, "projection")
    return await rebuild(_NotingMemberEvents(PurgingHandler(folded, PurgedAccounts(db), purge), deduplicator),
                         settings, PROJECTION_TOPICS, deduplicator=deduplicator)


async def rebuild_read_model(settings: HeraldSettings, db: AsyncDatabase[Document]) -> int:
    """Fold the read model again (`fold_read_model`), then mark the format. The consumer resumes from its committed
    offsets: what it reads again was folded here and changes nothing. Interrupted, it is simply run again (the
    mark is written last). Returns the number of events folded."""
    applied = await fold_read_model(settings, db)
    await mark_format(db)
    return applied


async def _run(settings: HeraldSettings) -> int:
    groups = consumer_groups(settings)
    if members := await live_members(settings, groups):
        print(refusal(members, "nothing was dropped"), file=sys.stderr, flush=True)
        return REFUSED
    mongo = make_client(settings, f"{SERVICE}-rebuild")
    try:
        db = mongo[settings.database_name(SERVICE)]
        applied = await fold_read_model(settings, db)
        # A process that started meanwhile folded beside the rebuild: the format stays unmarked (a process of this
        # version refuses the read model), and the rebuild is run again once it is stopped.
        if members := await live_members(settings, groups):
            print(refusal(members, "they joined while it ran: the read model is folded again but "
                                   "left unmarked, refused by this version"),
                  file=sys.stderr, flush=True)
            return REFUSED
        await mark_format(db)
        log.info("subscriptions read model rebuilt", extra={"events": applied})
        return 0
    finally:
        await mongo.close()


def main() -> int:
    settings = HeraldSettings()
    configure_logging(settings.log_level, settings.log_format)
    return asyncio.run(_run(settings))


if __name__ == "__main__":
    sys.exit(main())
