"""The subscriptions service running in-process against the real stack, with two accounts' API keys
published on herald.billing the way billing publishes them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from herald_shared.apikeys import new_api_key
from herald_shared.contract import Event
from herald_shared.contract.billing import AccountOpened, ApiKeyIssued
from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions, SubscriptionsSettings
from tests.conftest import eventually
from tests.integration.helpers import form_token

SECRET = "test-link-secret-0123456789"


@dataclass
class Tenant:
    account_id: str
    key: str
    http: httpx.AsyncClient

    async def create_list(self, list_id: str = "news", opt_in: str = "single", **extra: Any) -> dict[str, Any]:
        body = {"list_id": list_id, "name": list_id.title(), "opt_in": opt_in, **extra}
        response = await self.http.post("/v1/lists", json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def subscribe(self, email: str, list_id: str = "news", **extra: Any) -> httpx.Response:
        body = {"email": email, "consent": {"method": "signup form on acme.example"}, **extra}
        return await self.http.post(f"/v1/lists/{list_id}/subscribers", json=body)


@dataclass
class Platform:
    settings: HeraldSettings
    service: Subscriptions
    publisher: EventPublisher
    pages: httpx.AsyncClient

    async def submit(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """Post a hosted page's form as a person would: with the token its page served a minute ago."""
        return await self.pages.post(path, data={**form_token(SECRET, path), **(data or {})}, **kwargs)

    async def events(self, topic: str = "herald.subscriptions") -> list[Event]:
        from herald_shared.contract import parse_event

        found: list[Event] = []
        async for records in read_from_start(self.settings, [self.settings.topics(topic)]):
            found += [parse_event(r.value) for r in records]
        return sorted(found, key=lambda e: e.occurred_at)

    async def tenant(self, account_id: str) -> Tenant:
        key_id, key, key_hash = new_api_key()
        await self.publisher.publish_many([
            AccountOpened(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
                "company_name": f"{account_id} Ltd", "registered_email": f"owner@{account_id}.example",
                "main_username": "owner", "terms_accepted_at": "2026-11-01T00:00:00Z"}),
            ApiKeyIssued(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
                "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"})])
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app), base_url="http://subs",
                                 headers={"Authorization": f"Bearer {key}"})
        await eventually(lambda: self.service.apikeys.authenticate(key), lambda acc: acc == account_id,
                         what="API key projected")
        return Tenant(account_id, key, http)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Settings of the service a test module changes (by defining this fixture), by field name."""
    return {}


@pytest.fixture
async def platform(settings: HeraldSettings, settings_overrides: dict[str, Any]) -> AsyncIterator[Platform]:
    config = SubscriptionsSettings(**{**settings.model_dump(), "HERALD_LINK_SECRET": SECRET,
                                      "HERALD_PUBLIC_URL": "http://subs", **settings_overrides})
    service = Subscriptions(config)
    await service.start()
    pages = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app, client=("203.0.113.7", 4711)),
                              base_url="http://subs")
    try:
        yield Platform(config, service, EventPublisher(service.producer, config.topics), pages)
    finally:
        await pages.aclose()
        await service.stop()
