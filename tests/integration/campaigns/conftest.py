"""The campaigns service running in-process against the real stack, with accounts' API keys and lists published
the way billing and subscriptions publish them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from herald_campaigns.main import Campaigns
from herald_shared.apikeys import new_api_key
from herald_shared.contract.billing import ApiKeyIssued
from herald_shared.contract.subscriptions import ListCreated, ListDeleted
from herald_shared.kafka import EventPublisher
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually


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

    async def tenant(self, account_id: str, *lists: str) -> Tenant:
        """An account with an API key and these lists (each with a `city` text field)."""
        key_id, key, key_hash = new_api_key()
        await self.publisher.publish_many([
            ApiKeyIssued(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
                "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}),
            *(ListCreated(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
                "list_id": list_id, "name": list_id, "opt_in": "single",
                "custom_fields": [{"name": "city", "kind": "text"}]}) for list_id in lists)])
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app), base_url="http://campaigns",
                                 headers={"Authorization": f"Bearer {key}"})
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


@pytest.fixture
async def platform(settings: HeraldSettings) -> AsyncIterator[Platform]:
    service = Campaigns(settings)
    await service.start()
    try:
        yield Platform(service, EventPublisher(service.producer, settings.topics))
    finally:
        await service.stop()
