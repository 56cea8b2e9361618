"""Bootstrap of the campaigns service: settings, wiring, its projection consumer, the HTTP server, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.commands import Recorder
from herald_shared.http import add_health_routes, api_app
from herald_shared.kafka import EventConsumer, EventPublisher, ensure_topics, make_producer
from herald_shared.lifecycle import run_service
from herald_shared.mongo import Checkpoints, MongoDeduplicator, ProjectionGroup, make_client
from herald_shared.settings import HeraldSettings

from .api import build_api
from .handlers import CampaignsService
from .store import CampaignsProjection, CampaignsStore, ReportsProjection

SERVICE = "campaigns"


class Campaigns:
    """The wired service. `start()` runs the projection consumer in the background; `app` serves HTTP."""

    def __init__(self, settings: HeraldSettings) -> None:
        self.settings = settings
        self.mongo = make_client(settings, SERVICE)
        self.db = self.mongo[settings.database_name(SERVICE)]
        self.producer = make_producer(settings, SERVICE)
        self.apikeys = ApiKeyProjection(self.db)
        checkpoints = Checkpoints(self.db, "projection")
        recorder = Recorder(EventPublisher(self.producer, settings.topics), checkpoints,
                            settings.topics("herald.campaigns"))
        self.service = CampaignsService(CampaignsStore(self.db), recorder)
        self.projector = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.projection",
            topics=["herald.campaigns", "herald.subscriptions", "herald.delivery", "herald.billing"],
            handler=ProjectionGroup(CampaignsProjection(self.db), ReportsProjection(self.db), self.apikeys),
            producer=self.producer,
            deduplicator=MongoDeduplicator(self.db, "projection"), checkpoints=checkpoints)
        self.app = api_app("Herald campaigns", "Campaign drafts of an account: create, edit, duplicate, delete. "
                           "Errors are RFC 9457 problem documents (application/problem+json).")
        self.app.include_router(build_api(self.service, self.apikeys))
        add_health_routes(self.app, {"mongodb": self._mongo_ready, "consumers": self._consumers_ready})
        self._tasks: list[asyncio.Task[None]] = []
        self.failed: str | None = None
        self.on_failure: Callable[[], None] | None = None

    async def _mongo_ready(self) -> bool:
        await self.db.command("ping")
        return True

    async def _consumers_ready(self) -> bool:
        return self.projector.started

    async def start(self) -> None:
        await ensure_topics(self.settings)
        await self.producer.start()
        self._tasks = [asyncio.create_task(self.projector.run(), name=self.projector.name)]

    def request_stop(self) -> None:
        self.projector.request_stop()

    async def stop(self) -> None:
        self.request_stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()
        await self.mongo.close()


def main() -> None:
    run_service(SERVICE, HeraldSettings, Campaigns)


if __name__ == "__main__":
    main()
