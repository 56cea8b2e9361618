"""Bootstrap of the subscriptions service: settings, wiring, the three consumers, the HTTP server, shutdown."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from pydantic import Field

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.consuming import ConsumingService
from herald_shared.contract.subscriptions import ApiKeyRefusedBySubscriptions
from herald_shared.http import RefusedKeys, add_health_routes, api_app
from herald_shared.kafka import BULK_BATCH_BYTES, EventConsumer, EventPublisher
from herald_shared.lifecycle import run_service
from herald_shared.links import LinkSigner
from herald_shared.mongo import Checkpoints, MongoDeduplicator, ProjectionGroup
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.settings import EdgeSettings

from .activity import ACTIVITY_EVENTS, ACTIVITY_GROUP, Activity, ActivityErasures, mark_erasures
from .api import LARGER_BODIES, build_api
from .claims import ClaimDocuments, Claims
from .forms import Limits
from .handlers import SubscriptionsService, SuppressionHandler
from .pages import FormGuard, build_pages
from .store import (
    MEMBER_EVENTS,
    SubscriptionsProjection,
    SubscriptionsStore,
    check_format,
    learn_deleted_accounts,
    list_live_lists,
)

SERVICE = "subscriptions"
# The projection folds a batch with a fixed number of store round trips (loads by `_id`, bulk inserts), so
# a backlog (an import) is folded in big batches; a quiet topic still gives batches of what just arrived.
PROJECTION_BATCH = 2000
PROJECTION_TOPICS = ["herald.subscriptions", "herald.billing"]
# A campaign's messages each record a MessageSent here: one bulk insert per batch, so big batches.
ACTIVITY_BATCH = 2000
log = logging.getLogger(__name__)


class SubscriptionsSettings(EdgeSettings):
    link_secret: str = Field(alias="HERALD_LINK_SECRET", min_length=16,
                             description="Signs confirmation and unsubscribe links (shared with delivery).")
    public_url: str | None = Field(default=None, alias="HERALD_PUBLIC_URL",
                                   description="Base URL of the hosted pages in links; default http://host:port.")
    form_posts_per_ip: int = Field(default=Limits.posts_per_ip, ge=1, alias="HERALD_FORM_POSTS_PER_IP",
                                   description="Subscribe form posts one client address may send per window.")
    form_posts_per_address: int = Field(default=Limits.posts_per_address, ge=1,
                                        alias="HERALD_FORM_POSTS_PER_ADDRESS",
                                        description="Subscribe form posts for one email address per window.")
    form_window_seconds: int = Field(default=int(Limits.window.total_seconds()), ge=1,
                                     alias="HERALD_FORM_WINDOW_SECONDS",
                                     description="The sliding window of the two form limits above.")
    form_min_fill_seconds: float = Field(default=Limits.min_fill.total_seconds(), ge=0,
                                         alias="HERALD_FORM_MIN_FILL_SECONDS",
                                         description="A subscribe form sent sooner after it was served is a "
                                                     "bot's: answered as a success, nothing recorded.")

    def form_limits(self) -> Limits:
        return Limits(self.form_posts_per_ip, self.form_posts_per_address,
                      timedelta(seconds=self.form_window_seconds), timedelta(seconds=self.form_min_fill_seconds))


class Subscriptions(ConsumingService):
    """The wired service. `start()` runs the consumers in the background; `app` serves HTTP."""

    def __init__(self, settings: SubscriptionsSettings) -> None:
        super().__init__(settings, SERVICE, batch_bytes=BULK_BATCH_BYTES)  # an import publishes in thousands
        self.settings: SubscriptionsSettings = settings
        self.projection = SubscriptionsProjection(self.db)
        self.activity = Activity(self.db)
        # One set of tombstones for the consumers that read AccountPurged: a purge either handles is seen by both.
        purged = PurgedAccounts(self.db)
        self.apikeys = ApiKeyProjection(self.db, settings.api_key_attempts())
        base_url = settings.public_url or f"http://{settings.http_host}:{settings.http_port}"
        # One instance for the consumer that saves and the requests that wait: a save wakes them at once.
        checkpoints = Checkpoints(self.db, "projection")
        self.claims = ClaimDocuments(self.db)
        publisher = EventPublisher(self.producer, settings.topics)
        # A refused key of an account goes to its audit log (billing's), as this service's event.
        self.refused_keys = RefusedKeys(self.apikeys, publisher, ApiKeyRefusedBySubscriptions, SERVICE)
        self.service = SubscriptionsService(
            SubscriptionsStore(self.db), publisher,
            checkpoints, LinkSigner(settings.link_secret, base_url),
            settings.topics("herald.subscriptions"), self.activity, Claims(self.claims))
        self.projector = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.projection",
            topics=PROJECTION_TOPICS,
            handler=PurgingHandler(ProjectionGroup(self.projection, self.apikeys, ActivityErasures(self.db)), purged,
                                   self.purge),
            producer=self.producer, deduplicator=MongoDeduplicator(self.db, "projection"),
            checkpoints=checkpoints, max_records=PROJECTION_BATCH,
            # The memberships keep the ids applied to them; the API keys' projection ignores these events, and an
            # erasure's tombstone and delete change nothing when repeated.
            self_deduplicated=MEMBER_EVENTS)
        self.suppressor = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.suppression", topics=["herald.delivery"],
            handler=SuppressionHandler(self.service), producer=self.producer,
            deduplicator=MongoDeduplicator(self.db, "suppression"))
        # The GDPR export's activity (`activity.py`; erasures are the projection's): its own group, so a campaign's
        # thousands of MessageSent do not hold the suppressions back. No deduplicator: an entry's `_id` is the
        # event's, and a copy is ignored.
        self.activity_folder = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.{ACTIVITY_GROUP}", topics=list(ACTIVITY_EVENTS),
            only=ACTIVITY_EVENTS, handler=PurgingHandler(self.activity, purged, self.activity.purge),
            producer=self.producer, max_records=ACTIVITY_BATCH)
        self.app = api_app("Herald subscriptions", "Lists, subscribers, opt-in, unsubscribe, suppression and "
                           "GDPR requests. Errors are RFC 9457 problem documents (application/problem+json).",
                           larger_bodies=LARGER_BODIES)
        self.app.include_router(build_api(self.service, self.apikeys, self.refused_keys))
        self.app.include_router(build_pages(self.service, FormGuard(settings.link_secret, base_url,
                                                                    settings.form_limits())))
        add_health_routes(self.app, self.ready_checks())
        # HERALD_RUN_CONSUMERS=false: an API process beside the folding ones (README, "Processes").
        self.consumers = [self.projector, self.suppressor, self.activity_folder] if settings.run_consumers else []

    async def start(self) -> None:
        # A read model of an earlier format is refused, not answered from: it is rebuilt first (README, "Upgrading").
        await check_format(self.db)
        if self.consumers:  # the erasures from before their tombstones, before the activity consumer reads
            await mark_erasures(self.db)
            if learnt := await learn_deleted_accounts(self.settings, self.db):  # before the projection goes on
                log.info("accounts deleted before this version learnt from herald.billing", extra={"accounts": learnt})
            if listed := await list_live_lists(self.db):
                log.info("lists folded before live_lists was kept listed in it", extra={"lists": listed})
        await super().start()

    async def stop(self) -> None:
        await self.refused_keys.close()  # before the producer closes
        await super().stop()

    async def purge(self, account_id: str) -> None:
        """Retention: the account's lists, members, addresses, suppressions, imports and keys, its claims
        (`claims.py`), and its activity and erasure tombstones (which the activity consumer, reading AccountPurged
        too, also deletes: either may write them after the other purged)."""
        await self.projection.purge(account_id)
        await self.claims.purge(account_id, datetime.now(UTC))
        await self.apikeys.purge(account_id)
        await self.activity.purge(account_id)


def main() -> None:
    run_service(SERVICE, SubscriptionsSettings, Subscriptions)


if __name__ == "__main__":
    main()
