"""Bootstrap of the campaigns service: settings, wiring, its projection consumer, the HTTP server, shutdown."""

from __future__ import annotations

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.commands import Recorder
from herald_shared.consuming import ConsumingService
from herald_shared.http import add_health_routes, api_app
from herald_shared.kafka import EventConsumer, EventPublisher
from herald_shared.lifecycle import run_service
from herald_shared.mongo import Checkpoints, MongoDeduplicator, ProjectionGroup
from herald_shared.settings import HeraldSettings

from .api import build_api
from .handlers import CampaignsService
from .store import CampaignsProjection, CampaignsStore, ReportsProjection

SERVICE = "campaigns"


class Campaigns(ConsumingService):
    """The wired service. `start()` runs the projection consumer in the background; `app` serves HTTP."""

    def __init__(self, settings: HeraldSettings) -> None:
        super().__init__(settings, SERVICE)
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
        self.app = api_app("Herald campaigns", "Campaign drafts of an account (create, edit, duplicate, delete) "
                           "and their reports. Errors are RFC 9457 problem documents (application/problem+json).")
        self.app.include_router(build_api(self.service, self.apikeys))
        add_health_routes(self.app, self.ready_checks())
        self.consumers = [self.projector]


def main() -> None:
    run_service(SERVICE, HeraldSettings, Campaigns)


if __name__ == "__main__":
    main()
