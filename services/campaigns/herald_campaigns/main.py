"""Bootstrap of the campaigns service: settings, wiring, its projection consumer, the scheduler, the HTTP server,
shutdown."""

from __future__ import annotations

import asyncio

from pydantic import Field

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.commands import Recorder
from herald_shared.consuming import ConsumingService
from herald_shared.http import add_health_routes, api_app
from herald_shared.kafka import EventConsumer, EventPublisher
from herald_shared.lifecycle import run_service
from herald_shared.mongo import Checkpoints, MongoDeduplicator, ProjectionGroup
from herald_shared.settings import HeraldSettings
from herald_shared.staff import StaffTokens

from .api import build_api, build_staff_api
from .handlers import CampaignsService, Scheduler
from .store import CampaignsProjection, CampaignsStore, ReportsProjection

SERVICE = "campaigns"


class CampaignsSettings(HeraldSettings):
    staff_tokens: str = Field(default="", alias="HERALD_STAFF_TOKENS",
                              description="Staff who may review campaigns: 'name=scrypt-hash,...' "
                                          "(hashes from herald_shared.apikeys.hash_secret).")
    schedule_interval: float = Field(default=0.5, gt=0, le=60, alias="HERALD_CAMPAIGNS_SCHEDULE_INTERVAL_SECONDS",
                                     description="How often the scheduler looks for campaigns whose time came.")


class Campaigns(ConsumingService):
    """The wired service. `start()` runs the projection consumer and the scheduler in the background; `app`
    serves HTTP."""

    def __init__(self, settings: CampaignsSettings) -> None:
        super().__init__(settings, SERVICE)
        self.apikeys = ApiKeyProjection(self.db)
        checkpoints = Checkpoints(self.db, "projection")
        recorder = Recorder(EventPublisher(self.producer, settings.topics), checkpoints,
                            settings.topics("herald.campaigns"))
        self.service = CampaignsService(CampaignsStore(self.db), recorder)
        self.scheduler = Scheduler(self.service, settings, settings.schedule_interval)
        self.projector = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.projection",
            topics=["herald.campaigns", "herald.subscriptions", "herald.delivery", "herald.billing",
                    "herald.compliance"],
            handler=ProjectionGroup(CampaignsProjection(self.db), ReportsProjection(self.db), self.apikeys),
            producer=self.producer,
            deduplicator=MongoDeduplicator(self.db, "projection"), checkpoints=checkpoints)
        self.app = api_app("Herald campaigns", "Campaigns of an account: drafts, previews and test sends, "
                           "submission (screening, staff review, schedule), cancellation and reports; and the "
                           "staff review API. Errors are RFC 9457 problem documents (application/problem+json).")
        self.app.include_router(build_api(self.service, self.apikeys))
        self.app.include_router(build_staff_api(self.service, StaffTokens.from_setting(settings.staff_tokens)))
        add_health_routes(self.app, {**self.ready_checks(), "scheduler": self._scheduler_ready})
        self.consumers = [self.projector]
        self._scheduling: asyncio.Task[None] | None = None

    async def _scheduler_ready(self) -> bool:
        return self.scheduler.caught_up

    async def start(self) -> None:
        await super().start()
        self._scheduling = asyncio.create_task(self.scheduler.run(), name="scheduler")

    def request_stop(self) -> None:
        self.scheduler.request_stop()
        super().request_stop()

    async def stop(self) -> None:
        self.scheduler.request_stop()
        if self._scheduling is not None:
            await asyncio.gather(self._scheduling, return_exceptions=True)
        await super().stop()


def main() -> None:
    run_service(SERVICE, CampaignsSettings, Campaigns)


if __name__ == "__main__":
    main()
