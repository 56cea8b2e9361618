"""Bootstrap of the billing service: settings, wiring, its consumer (herald.billing for accounts, users and
keys; herald.subscriptions and herald.delivery for usage), the trial clock, the HTTP server, shutdown."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.commands import Recorder
from herald_shared.consuming import ConsumingService
from herald_shared.contract import Event
from herald_shared.http import add_health_routes, api_app
from herald_shared.kafka import EventConsumer, EventPublisher
from herald_shared.lifecycle import run_service
from herald_shared.mongo import Checkpoints, MongoDeduplicator
from herald_shared.password_reset import ResetKey
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_shared.settings import HeraldSettings
from herald_shared.staff import StaffTokens

from .api import build_api, build_staff_api
from .domain import INVOICE_RETENTION_YEARS
from .handlers import BillingService, Passwords, PlanClock, UsageGuard
from .payments import PaymentProvider, SimulatedProvider
from .plans import DEFAULT_TIME_ZONE, BillingCalendar, load_plans
from .platform_audit import AuditBounds, PlatformAudit
from .reset_page import build_reset_page
from .store import (
    CAMPAIGN_AUDIT_EVENTS,
    COMPLIANCE_AUDIT_EVENTS,
    DELIVERY_AUDIT_EVENTS,
    DELIVERY_EVENTS,
    READ_MODEL,
    SUBSCRIPTION_AUDIT_EVENTS,
    SUBSCRIPTION_EVENTS,
    BillingProjection,
    BillingStore,
    learn_created_lists,
)
from .vat import SELLER_COUNTRY, Party, VatNumberInvalid, check_vat_number

SERVICE = "billing"
log = logging.getLogger("herald.billing")
# What the projection consumer reads (and `herald_billing.rebuild` folds again): of the other services' topics, only
# what billing counts or shows in the audit log; herald.billing first, each account's history before its usage: a
# send counts under its plan.
PROJECTION_TOPICS = ("herald.billing", "herald.subscriptions", "herald.delivery", "herald.campaigns",
                     "herald.compliance")
PROJECTION_ONLY: dict[str, list[type[Event]]] = {
    "herald.subscriptions": [*SUBSCRIPTION_EVENTS, *SUBSCRIPTION_AUDIT_EVENTS],
    "herald.delivery": [*DELIVERY_EVENTS, *DELIVERY_AUDIT_EVENTS],
    "herald.campaigns": list(CAMPAIGN_AUDIT_EVENTS), "herald.compliance": list(COMPLIANCE_AUDIT_EVENTS)}
PROJECTION_LEAD = ("herald.billing",)


class BillingSettings(HeraldSettings):
    staff_tokens: str = Field(default="", alias="HERALD_STAFF_TOKENS",
                              description="Staff who review accounts: 'name=scrypt-hash,...' (hashes from "
                                          "herald_shared.apikeys.hash_secret).")
    session_secret: str = Field(default="", alias="HERALD_SESSION_SECRET",
                                description="Signs session tokens; every replica needs the same one. Empty: a "
                                            "random one per process (sessions end when it restarts).")
    session_minutes: int = Field(default=60, ge=1, le=24 * 60, alias="HERALD_SESSION_MINUTES",
                                 description="How long a session token holds.")
    clock_interval: float = Field(default=30.0, gt=0, le=3600, alias="HERALD_BILLING_CLOCK_INTERVAL_SECONDS",
                                  description="How often trials that reached day 30 are ended and monthly plans "
                                              "whose paid period is over are renewed.")
    plans_file: Path | None = Field(default=None, alias="HERALD_BILLING_PLANS_FILE",
                                    description="The tiers, prices, VAT and credit packs (TOML); default: the "
                                                "file shipped with billing (herald_billing/plans.toml).")
    time_zone: str = Field(default=DEFAULT_TIME_ZONE, alias="HERALD_BILLING_TIME_ZONE",
                           description="The platform's time zone (an IANA name): billing days, billing dates, "
                                       "calendar months and business days are taken on its wall clock; times are "
                                       "kept in UTC.")

    password_reset_key: ResetKey = Field(default="", alias="HERALD_PASSWORD_RESET_KEY",
                                    description="Signs password-reset links (HMAC-SHA256); delivery, which mails "
                                                "them, needs the same. Empty: resets are refused (503).")

    seller_name: str = Field(default="", max_length=200, alias="HERALD_BILLING_SELLER_NAME",
                             description="The platform's company, as every invoice names it: its legal name.")
    seller_address: str = Field(default="", max_length=200, alias="HERALD_BILLING_SELLER_ADDRESS",
                                description="Its registered address, on one line (the country is Latvia).")
    seller_vat_number: str = Field(default="", max_length=40, alias="HERALD_BILLING_SELLER_VAT_NUMBER",
                                   description="Its Latvian VAT number: LV and 11 digits.")

    invoice_retention_years: int = Field(
        default=INVOICE_RETENTION_YEARS, ge=1, le=30, alias="HERALD_BILLING_INVOICE_RETENTION_YEARS",
        description="How many calendar years after the year of its issue a purged account's invoice is kept "
                    "(Latvia's accounting law: 5; check your jurisdiction's).")
    platform_audit_days: int = Field(default=90, ge=1, le=3650, alias="HERALD_BILLING_PLATFORM_AUDIT_DAYS",
                                     description="How long the platform audit log keeps an entry.")
    platform_audit_attempts_per_hour: int = Field(
        default=100, ge=0, le=100_000, alias="HERALD_BILLING_PLATFORM_AUDIT_ATTEMPTS_PER_HOUR",
        description="Login attempts for unknown usernames written one by one per hour, platform-wide (10 at "
                    "most from one address); the rest are only counted in their hour.")

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        BillingCalendar.named(name)  # a start with a zone the zone database does not have fails here
        return name

    @model_validator(mode="after")
    def _whole_seller(self) -> Self:
        """All three of the seller's settings or none (a start fails here, saying which are missing or wrong)."""
        given = {"HERALD_BILLING_SELLER_NAME": self.seller_name.strip(),
                 "HERALD_BILLING_SELLER_ADDRESS": self.seller_address.strip(),
                 "HERALD_BILLING_SELLER_VAT_NUMBER": self.seller_vat_number.strip()}
        missing = [name for name, value in given.items() if not value]
        if missing and len(missing) < len(given):
            raise ValueError(f"the seller invoices name takes all of HERALD_BILLING_SELLER_NAME, _ADDRESS and "
                             f"_VAT_NUMBER; missing: {', '.join(missing)}")
        if not missing:
            try:
                check_vat_number(SELLER_COUNTRY, self.seller_vat_number)
            except VatNumberInvalid as exc:
                raise ValueError(f"HERALD_BILLING_SELLER_VAT_NUMBER: {exc}") from None
        return self

    def seller(self) -> Party | None:
        """The platform's company as invoices name it; None when not configured."""
        if not self.seller_name.strip():
            return None
        return Party(self.seller_name.strip(), (self.seller_address.strip(),), SELLER_COUNTRY,
                     check_vat_number(SELLER_COUNTRY, self.seller_vat_number))

    def calendar(self) -> BillingCalendar:
        return BillingCalendar.named(self.time_zone)


class Billing(ConsumingService):
    """The wired service. `start()` runs the consumer and the trial clock in the background; `app` serves
    HTTP."""

    def __init__(self, settings: BillingSettings, passwords: Passwords | None = None,
                 payments: PaymentProvider | None = None) -> None:
        super().__init__(settings, SERVICE)
        secret = settings.session_secret
        if not secret:
            log.warning("HERALD_SESSION_SECRET is not set: sessions end when this process stops")
            secret = secrets.token_urlsafe(32)
        checkpoints = Checkpoints(self.db, "projection")
        recorder = Recorder(EventPublisher(self.producer, settings.topics), checkpoints,
                            settings.topics("herald.billing"))
        self.store = BillingStore(self.db)
        calendar = settings.calendar()
        seller = settings.seller()
        if seller is None:
            log.warning("HERALD_BILLING_SELLER_NAME, _ADDRESS and _VAT_NUMBER are not set: invoices name no seller "
                        "and are no VAT invoices")
        plans = replace(load_plans(settings.plans_file), seller=seller)
        self.service = BillingService(self.store, recorder, passwords or Passwords(), secret,
                                      timedelta(minutes=settings.session_minutes), plans,
                                      payments or SimulatedProvider(), calendar=calendar,
                                      password_reset_key=settings.password_reset_key or None,
                                      platform_audit=PlatformAudit(self.db, AuditBounds(
                                          settings.platform_audit_attempts_per_hour,
                                          timedelta(days=settings.platform_audit_days))))
        if not settings.password_reset_key:
            log.warning("HERALD_PASSWORD_RESET_KEY is not set: password resets are refused (503)")
        self.clock = PlanClock(self.service, settings.clock_interval)
        self.projection = BillingProjection(self.db, calendar, settings.invoice_retention_years)
        self.guard = UsageGuard(self.projection, self.service, ApiKeyProjection(self.db))
        self.projector = EventConsumer(
            settings, name=f"{settings.topic_prefix}{SERVICE}.projection", topics=list(PROJECTION_TOPICS),
            only=PROJECTION_ONLY,
            handler=PurgingHandler(self.guard, PurgedAccounts(self.db), self.projection.purge), producer=self.producer,
            deduplicator=MongoDeduplicator(self.db, "projection"), checkpoints=checkpoints,
            lead=list(PROJECTION_LEAD))
        self.guard.caught_up = self.clock.ready = self.projector.caught_up
        self.app = api_app("Herald billing", "Accounts and access: sign-up, sessions, the account's users, API keys "
                           "and audit log; the plan and its usage; and the staff review of new accounts. Errors are "
                           "RFC 9457 problem documents (application/problem+json).")
        self.app.include_router(build_api(self.service))
        staff_tokens = StaffTokens.from_setting(settings.staff_tokens, settings.address_attempts())
        self.app.include_router(build_staff_api(self.service, staff_tokens))
        self.app.include_router(build_reset_page(self.service))
        add_health_routes(self.app, self.ready_checks())
        self.consumers = [self.projector]
        self._ticking: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # A read model of an earlier format is refused, not answered nor folded into: it is folded again first
        # (`python -m herald_billing.rebuild`, README, "Upgrading").
        await READ_MODEL.check(self.db)
        # Before the consumer: it counts members only on lists known to be created (store.learn_created_lists).
        if marked := await learn_created_lists(self.settings, self.db):
            log.info("lists created before this version learnt from herald.subscriptions", extra={"lists": marked})
        await super().start()
        self._ticking = self.watched(asyncio.create_task(self.clock.run(), name="trial-clock"))

    def request_stop(self) -> None:
        super().request_stop()
        self.clock.request_stop()

    async def stop(self) -> None:
        self.request_stop()
        if self._ticking is not None:
            await asyncio.gather(self._ticking, return_exceptions=True)
        await self.service.reset_requests_settled()
        await super().stop()


def main() -> None:
    run_service(SERVICE, BillingSettings, Billing)


if __name__ == "__main__":
    main()
