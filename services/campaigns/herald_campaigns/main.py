"""Bootstrap of the campaigns service: settings, wiring, its two consumers (the campaigns read model's, the
reports'), the scheduler, the HTTP server, shutdown."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from pydantic import Field, field_validator
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.commands import Recorder
from herald_shared.consuming import ConsumingService
from herald_shared.contract.campaigns import ApiKeyRefusedByCampaigns
from herald_shared.contract.delivery import DkimKeyCreated
from herald_shared.http import RefusedKeys, add_health_routes, api_app
from herald_shared.kafka import EventConsumer, EventPublisher
from herald_shared.lifecycle import run_service
from herald_shared.mongo import Checkpoints, Document, MongoDeduplicator, ProjectionGroup
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.settings import HeraldSettings
from herald_shared.staff import StaffTokens

from . import domain
from .api import LARGER_BODIES, build_api, build_staff_api, too_large, too_many_links
from .handlers import CampaignsService, Scheduler, screening_pool
from .rebuild import CONSUMER, SERVICE, deduplicator, refold_reports, report_events, reports_current
from .resolver import DnsResolver, parse_nameservers
from .store import DELIVERY_EVENTS, CampaignsProjection, CampaignsStore, ReportsProjection

log = logging.getLogger("herald.campaigns")

REPORTS = CONSUMER  # the report read model's consumer: its group, checkpoints and remembered event ids
# Every send, bounce, open and click is counted: large batches spread a batch's round trips over many events
# (nobody waits for a report to include their own write, as they do for a draft).
REPORTS_BATCH = 5000
REPORTS_SLICE = 250  # parsed, looked up and handled at a time (EventConsumer: `slice_records`)


class CampaignsSettings(HeraldSettings):
    staff_tokens: str = Field(default="", alias="HERALD_STAFF_TOKENS",
                              description="Staff who may review campaigns: 'name=scrypt-hash,...' "
                                          "(hashes from herald_shared.apikeys.hash_secret).")
    test_sends_per_day: int = Field(default=50, ge=1, alias="HERALD_CAMPAIGNS_TEST_SENDS_PER_DAY",
                                    description="Test messages an account may send in 24 hours (tests are not "
                                                "reviewed; counted in MongoDB, across restarts and replicas); "
                                                "more is refused 429.")
    schedule_interval: float = Field(default=0.5, gt=0, le=60, alias="HERALD_CAMPAIGNS_SCHEDULE_INTERVAL_SECONDS",
                                     description="How often the scheduler looks for campaigns whose time came.")
    shared_sending_domains: str = Field(
        default="", alias="HERALD_CAMPAIGNS_SHARED_SENDING_DOMAINS",
        description="The operator's own sending domains (comma-separated), usable From by every account without "
                    "verification, with their subdomains.")
    dns_nameservers: str = Field(
        default="", alias="HERALD_DNS_NAMESERVERS",
        description="Name servers asked for sending domains' verification records: host[:port], comma-separated "
                    "(IP addresses; [v6]:port); the system's (/etc/resolv.conf) when empty.")
    dns_timeout: float = Field(default=5.0, gt=0, le=60, alias="HERALD_DNS_TIMEOUT_SECONDS",
                               description="How long a verification waits for DNS before answering 503.")

    @field_validator("shared_sending_domains")
    @classmethod
    def _domains(cls, value: str) -> str:
        domain.shared_domains(value)
        return value

    @field_validator("dns_nameservers")
    @classmethod
    def _nameservers(cls, value: str) -> str:
        parse_nameservers(value)
        return value


class Campaigns(ConsumingService):
    """The wired service. `start()` runs the two consumers and the scheduler in the background; `app` serves
    HTTP."""

    def __init__(self, settings: CampaignsSettings) -> None:
        super().__init__(settings, SERVICE)
        self.apikeys = ApiKeyProjection(self.db, settings.api_key_attempts())
        checkpoints = Checkpoints(self.db, "projection")
        publisher = EventPublisher(self.producer, settings.topics)
        recorder = Recorder(publisher, checkpoints, settings.topics("herald.campaigns"))
        # A refused key of an account goes to its audit log (billing's), as this service's event.
        self.refused_keys = RefusedKeys(self.apikeys, publisher, ApiKeyRefusedByCampaigns, SERVICE)
        self.screening = screening_pool()
        self.service = CampaignsService(
            CampaignsStore(self.db), recorder, settings.test_sends_per_day,
            dns=DnsResolver(parse_nameservers(settings.dns_nameservers), settings.dns_timeout),
            screening=self.screening, shared_sending_domains=domain.shared_domains(settings.shared_sending_domains))
        self.scheduler = Scheduler(self.service, settings, settings.schedule_interval)
        # Drafts, lists, accounts, a campaign's DeliveryHeld, API keys: small batches, as an API call waits
        # for its own event here (read-your-writes).
        # One set of tombstones for both consumers: a purge either of them handles is seen by the other at once.
        self.purged = PurgedAccounts(self.db)
        self.projection = CampaignsProjection(self.db)
        self.projector = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.projection",
            topics=["herald.campaigns", "herald.subscriptions", "herald.delivery", "herald.billing",
                    "herald.compliance"],
            only={"herald.delivery": [*DELIVERY_EVENTS, DkimKeyCreated]},
            handler=PurgingHandler(ProjectionGroup(self.projection, self.apikeys), self.purged, self.purge),
            producer=self.producer, deduplicator=MongoDeduplicator(self.db, "projection"), checkpoints=checkpoints)
        self.reports = reports_consumer(settings, self.db, self.producer, purged=self.purged)
        self.app = api_app("Herald campaigns", "Campaigns of an account: drafts, previews and test sends, "
                           "submission (screening, staff review, schedule), cancellation and reports; and the "
                           "staff review API. Errors are RFC 9457 problem documents (application/problem+json).",
                           larger_bodies=LARGER_BODIES)
        self.app.include_router(build_api(self.service, self.apikeys, self.refused_keys))
        self.app.add_exception_handler(domain.CampaignTooLarge, too_large)
        self.app.add_exception_handler(domain.TooManyLinks, too_many_links)
        staff_tokens = StaffTokens.from_setting(settings.staff_tokens, settings.address_attempts())
        self.app.include_router(build_staff_api(self.service, staff_tokens))
        add_health_routes(self.app, {**self.ready_checks(), "scheduler": self._scheduler_ready,
                                     "reports": self._reports_ready})
        # The report consumer starts once the reports are of this version's format (`_reporting`), not with the
        # rest: drafts, review and the scheduler do not wait for a refold.
        self.consumers = [self.projector]
        self.service.reports_recounting = True
        self._scheduling: asyncio.Task[None] | None = None
        self._reporting: asyncio.Task[None] | None = None

    async def purge(self, account_id: str) -> None:
        """Retention: the account's campaigns, lists, account, audit log and keys (its reports: the reports
        consumer, which reads AccountPurged too)."""
        await self.projection.purge(account_id)
        await self.apikeys.purge(account_id)

    async def _scheduler_ready(self) -> bool:
        return self.scheduler.caught_up

    async def _reports_ready(self) -> bool:
        # A refold is no reason to take the pod out of service: everything but the reports is served meanwhile.
        return self.service.reports_recounting or self.reports.started

    async def start(self) -> None:
        # Before the consumers start no fold is writing a campaign, so listings an earlier version left go now
        # (`store.mend_listings`). Best effort: the scheduler mends a due one anyway, and the review queue does
        # not show one; a store not answering yet does not hold the start up for longer than its timeout.
        try:
            stale = await self.service.store.mend_listings()
        except PyMongoError:
            log.warning("stale listings not looked for: the store did not answer", exc_info=True)
        else:
            if stale:
                log.warning("stale schedule and review listings removed", extra={"listings": stale})
        current = await reports_current(self.db)
        await super().start()
        self._scheduling = self.watched(asyncio.create_task(self.scheduler.run(), name="scheduler"))
        self._reporting = self.watched(asyncio.create_task(self._reports(current), name=REPORTS))

    async def _reports(self, current: bool) -> None:
        """The report consumer, after a refold of reports counted by an earlier format's rules (`rebuild`). One
        process (one replica, Recreate) folds them; the refold waits while another consumes in the reports' group."""
        if not current:
            log.warning("campaign reports of an earlier format: recounted from offset 0 before they are served")
            await refold_reports(self.settings, self.db)
        self.service.reports_recounting = False
        await self.reports.run()

    def request_stop(self) -> None:
        super().request_stop()
        self.scheduler.request_stop()
        self.reports.request_stop()
        if self._reporting is not None and self.service.reports_recounting:
            self._reporting.cancel()  # a refold cut short is done again from the start at the next start

    async def stop(self) -> None:
        self.request_stop()
        await asyncio.gather(*(t for t in (self._scheduling, self._reporting) if t is not None),
                             return_exceptions=True)
        await self.refused_keys.close()  # before the producer closes
        await super().stop()
        self.screening.shutdown(wait=False, cancel_futures=True)


def reports_consumer(settings: HeraldSettings, db: AsyncDatabase[Document], producer: AIOKafkaProducer,
                     checkpoints: Checkpoints | None = None, purged: PurgedAccounts | None = None) -> EventConsumer:
    """The report read model's own consumer (bench/campaign_reports.py runs this one): only the events a report
    counts, and billing's AccountPurged (retention), in large batches, deduplicated by a window of recent event
    ids (`WindowDeduplicator`; a replay of the same offsets is exact by `Counters` anyway). Where the reports were
    folded by the projection consumer before, this group starts from offset 0 once: the counters skip, by
    offset, what was counted then, so the catch-up costs the reading only."""
    reports = ReportsProjection(db)
    only = report_events()
    topics = list(only)
    return EventConsumer(
        settings, name=f"{settings.topic_prefix}{SERVICE}.{REPORTS}", topics=topics, only=only,
        handler=PurgingHandler(reports, purged if purged is not None else PurgedAccounts(db), reports.purge),
        producer=producer, deduplicator=deduplicator(db),
        checkpoints=checkpoints if checkpoints is not None else Checkpoints(db, REPORTS), max_records=REPORTS_BATCH,
        slice_records=REPORTS_SLICE)


def main() -> None:
    run_service(SERVICE, CampaignsSettings, Campaigns)


if __name__ == "__main__":
    main()
