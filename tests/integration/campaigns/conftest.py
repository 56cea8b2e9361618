"""The campaigns service running in-process against the real stack, with accounts' API keys and lists published
the way billing and subscriptions publish them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from herald_campaigns.main import Campaigns, CampaignsSettings
from herald_shared.apikeys import hash_secret, new_api_key
from herald_shared.contract import Event, parse_event
from herald_shared.contract.billing import AccountApproved, AccountOpened, ApiKeyIssued, PlanChanged
from herald_shared.contract.subscriptions import ListCreated, ListDeleted
from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

STAFF_TOKEN = "staff-token-of-rita-0123456789"
STAFF_HASH = hash_secret(STAFF_TOKEN)
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}


def campaigns_settings(settings: HeraldSettings, **overrides: Any) -> CampaignsSettings:
    return CampaignsSettings(**{**settings.model_dump(), "HERALD_STAFF_TOKENS": f"rita={STAFF_HASH}",
                                "HERALD_CAMPAIGNS_SCHEDULE_INTERVAL_SECONDS": 0.2, **overrides})


def draft(list_id: str = "news", **changes: Any) -> dict[str, Any]:
    return {"name": "November", "list_id": list_id, "subject": "Our November news", "from_name": "Acme",
            "from_email": "news@acme.example", "html_body": "<h1>Hello {{ first_name }}</h1><p>News.</p>",
            **changes}


@dataclass
class Tenant:
    account_id: str
    key: str
    http: httpx.AsyncClient


@dataclass
class Platform:
    service: Campaigns
    publisher: EventPublisher

    async def tenant(self, account_id: str, *lists: str, account: str = "unknown") -> Tenant:
        """An account with an API key and these lists (each with a `city` text field). `account`: what billing
        said of it: unknown (nothing), trial (opened, approved, no plan), paid (approved, monthly plan) or
        unapproved (monthly plan, not approved yet)."""
        key_id, key, key_hash = new_api_key()
        await self.publisher.publish_many([
            *billing_history(account_id, account),
            ApiKeyIssued(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
                "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}),
            *(ListCreated(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
                "list_id": list_id, "name": list_id, "opt_in": "single",
                "custom_fields": [{"name": "city", "kind": "text"}]}) for list_id in lists)])
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app), base_url="http://campaigns",
                                 headers={"Authorization": f"Bearer {key}"})
        if account != "unknown":
            await eventually(lambda: self.service.service.store.account(account_id),
                             lambda info: info is not None and info.approved == (account != "unapproved"),
                             what="account projected")
        await eventually(lambda: self.service.apikeys.authenticate(key), lambda acc: acc == account_id,
                         what="API key projected")
        for list_id in lists:
            await eventually(lambda lid=list_id: self.service.service.store.list_info(account_id, lid),  # type: ignore[misc]
                             lambda info: info is not None, what=f"list {list_id} projected")
        return Tenant(account_id, key, http)

    async def delete_list(self, account_id: str, list_id: str) -> None:
        await self.publisher.publish(ListDeleted(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": list_id, "members_at_deletion": 0}))
        await eventually(lambda: self.service.service.store.list_info(account_id, list_id),
                         lambda info: info is not None and info.deleted, what="list deletion projected")


    def staff(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app), base_url="http://campaigns",
                                 headers=STAFF)

    async def events(self, topic: str = "herald.campaigns") -> list[Event]:
        settings = self.service.settings
        found: list[Event] = []
        async for records in read_from_start(settings, [settings.topics(topic)]):
            found += [parse_event(r.value) for r in records]
        return found


def billing_history(account_id: str, account: str) -> list[Event]:
    opened = AccountOpened(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
        "company_name": f"{account_id} Ltd", "registered_email": f"owner@{account_id}.example",
        "main_username": "owner", "terms_accepted_at": "2026-11-01T00:00:00Z"})
    approved = AccountApproved(account_id=account_id, producer="billing", payload={"reviewer": "staff"})  # type: ignore[arg-type]
    monthly = PlanChanged(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
        "plan": "monthly", "tier_subscriber_limit": 1000, "effective_at": "2026-11-02T00:00:00Z"})
    return {"unknown": [], "trial": [opened, approved], "paid": [opened, approved, monthly],
            "unapproved": [opened, monthly]}[account]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings of the service a test module changes (by defining this fixture), by field name."""
    return {}


@pytest.fixture
async def platform(settings: HeraldSettings, settings_overrides: dict[str, Any]) -> AsyncIterator[Platform]:
    service = Campaigns(campaigns_settings(settings, **settings_overrides))
    await service.start()
    try:
        yield Platform(service, EventPublisher(service.producer, settings.topics))
    finally:
        await service.stop()
