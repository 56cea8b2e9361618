"""A refused API key is a failed attempt in its account's audit log, on the real stack (PRODUCT.md: "Every login and
login attempt is written to an audit log (who, when, from where, success or not)"): the service that refused it
publishes its own event, and billing folds it into the log its owner and staff read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from herald_campaigns.main import Campaigns, CampaignsSettings
from herald_shared.contract.campaigns import ApiKeyRefusedByCampaigns
from herald_shared.contract.subscriptions import ApiKeyRefusedBySubscriptions
from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions
from tests.conftest import eventually

from .helpers import Customer, Platform

UNKNOWN = "hk_ffffffffffffffff.a-guessed-secret"  # a key id no key has


@pytest.fixture
async def campaigns(settings: HeraldSettings) -> AsyncIterator[Campaigns]:
    """herald-campaigns beside billing, on the same stack."""
    service = Campaigns(CampaignsSettings(**settings.model_dump()))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def issued_key(customer: Customer) -> tuple[str, str]:
    issued = (await customer.http.post("/v1/account/api-keys", json={"label": "crm"})).json()
    return issued["key"], issued["key_id"]


def wrong_secret(key: str) -> str:
    return key[:-3] + ("xyz" if not key.endswith("xyz") else "abc")


async def refused_keys(reader: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    return [e for e in (await reader.get(path)).json()["items"] if e["kind"] == "api_key"]


def shown(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry["result"], entry["reason"], entry["key_id"], entry["ip"], entry["user_agent"], entry["path"],
            entry["service"])


async def test_a_revoked_key_and_a_wrong_secret_refused_by_subscriptions_are_in_the_accounts_audit_log(
        platform: Platform, subscriptions: Subscriptions) -> None:
    ada = await platform.sign_up("ada")
    key, key_id = await issued_key(ada)
    await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is not None, what="the key known")
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=subscriptions.app, client=("198.51.100.23", 999)),
                            base_url="http://subs", headers={"User-Agent": "crm-sync/3"})
    assert (await api.get("/v1/lists", headers={"X-API-Key": UNKNOWN})).status_code == 401
    assert (await api.get("/v1/lists", headers={"Authorization": f"Bearer {key}"})).status_code == 200
    assert (await api.get("/v1/lists", headers={"Authorization": f"Bearer {wrong_secret(key)}"})).status_code == 401
    await ada.http.post(f"/v1/account/api-keys/{key_id}/revocation", json={})
    await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is None, what="the key revoked")
    assert (await api.get("/v1/lists/news", headers={"X-API-Key": key})).status_code == 401

    owner_log = await eventually(lambda: refused_keys(ada.http, "/v1/account/audit-log"),
                                 lambda items: len(items) == 2, what="the refusals in the audit log")
    assert [shown(e) for e in owner_log] == [
        ("failure", "wrong_secret", key_id, "198.51.100.23", "crm-sync/3", "/v1/lists", "subscriptions"),
        ("failure", "revoked_key", key_id, "198.51.100.23", "crm-sync/3", "/v1/lists/news", "subscriptions")]
    staff_log = await refused_keys(platform.staff(), f"/v1/staff/accounts/{ada.account_id}/audit-log")
    assert [shown(e) for e in staff_log] == [shown(e) for e in owner_log]

    # The unknown key id belongs to no account: no event names it, and no audit log holds it.
    await subscriptions.refused_keys.drain()
    refusals = [e for e in await platform.events("herald.subscriptions") if isinstance(e, ApiKeyRefusedBySubscriptions)]
    assert [(e.account_id, e.payload.key_id) for e in refusals] == [(ada.account_id, key_id)] * 2
    assert await platform.service.store.db["audit"].count_documents({"key_id": {"$ne": key_id, "$exists": True}}) == 0
    secret = key.partition(".")[2]
    assert secret[:20] not in str(owner_log) and secret[:20] not in str([e.model_dump() for e in refusals])


async def test_a_wrong_secret_refused_by_campaigns_is_in_the_accounts_audit_log(
        platform: Platform, campaigns: Campaigns) -> None:
    ada = await platform.sign_up("ada")
    key, key_id = await issued_key(ada)
    await eventually(lambda: campaigns.apikeys.authenticate(key), lambda a: a is not None, what="the key known")
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=campaigns.app, client=("192.0.2.44", 999)),
                            base_url="http://campaigns", headers={"User-Agent": "newsletter-tool/7"})
    assert (await api.get("/v1/campaigns", headers={"X-API-Key": UNKNOWN})).status_code == 401
    assert (await api.get("/v1/campaigns", headers={"X-API-Key": wrong_secret(key)})).status_code == 401

    owner_log = await eventually(lambda: refused_keys(ada.http, "/v1/account/audit-log"),
                                 lambda items: len(items) == 1, what="the refusal in the audit log")
    assert [shown(e) for e in owner_log] == [
        ("failure", "wrong_secret", key_id, "192.0.2.44", "newsletter-tool/7", "/v1/campaigns", "campaigns")]
    await campaigns.refused_keys.drain()
    refusals = [e for e in await platform.events("herald.campaigns") if isinstance(e, ApiKeyRefusedByCampaigns)]
    assert [(e.account_id, e.payload.key_id, e.producer) for e in refusals] == [  # type: ignore[attr-defined]
        (ada.account_id, key_id, "campaigns")]
