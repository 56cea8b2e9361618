"""An API key refused by subscriptions or campaigns is a failed attempt in the account's audit log (PRODUCT.md:
"Every login and login attempt is written to an audit log (who, when, from where, success or not)"): billing folds
each service's event of it into an entry, and its API shows the entry as declared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient, UpdateOne

from herald_billing.api import AuditEntryOut, audit_out
from herald_billing.store import AUDIT, BillingProjection
from herald_shared.contract import Event
from herald_shared.contract.campaigns import ApiKeyRefusedByCampaigns
from herald_shared.contract.subscriptions import ApiKeyRefusedBySubscriptions
from herald_shared.mongo import Document
from herald_shared.readmodel import compose, time_key

AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
REFUSED = {"key_id": "0123456789abcdef", "reason": "revoked_key", "ip": "198.51.100.23", "user_agent": "crm-sync/3",
           "path": "/v1/lists"}


@pytest.fixture
async def projection() -> AsyncIterator[BillingProjection]:
    # The fold is pure: a client that never connects is enough.
    client: AsyncMongoClient[Document] = AsyncMongoClient("mongodb://127.0.0.1:9", connect=False)
    yield BillingProjection(client["billing"])
    await client.close()


@pytest.mark.parametrize(("event_type", "service"), [(ApiKeyRefusedBySubscriptions, "subscriptions"),
                                                     (ApiKeyRefusedByCampaigns, "campaigns")])
async def test_a_refused_api_key_is_a_failed_attempt_in_the_accounts_audit_log(
        projection: BillingProjection, event_type: type[Event], service: str) -> None:
    event = event_type.model_validate({"account_id": "acme", "producer": service, "occurred_at": AT,
                                       "payload": REFUSED})
    entry = {"account_id": "acme", "at": AT, "kind": "api_key", "result": "failure", "reason": "revoked_key",
             "key_id": "0123456789abcdef", "ip": "198.51.100.23", "user_agent": "crm-sync/3", "path": "/v1/lists",
             "service": service}
    assert projection.apply(event) == [(AUDIT, UpdateOne(
        {"_id": compose("acme", time_key(AT), str(event.event_id))}, {"$setOnInsert": entry}, upsert=True))]
    shown = audit_out({"_id": "acme/...", **entry})
    assert AuditEntryOut.model_validate(shown).model_dump(exclude_none=True) == {
        "at": AT, "kind": "api_key", "result": "failure", "reason": "revoked_key", "key_id": "0123456789abcdef",
        "ip": "198.51.100.23", "user_agent": "crm-sync/3", "path": "/v1/lists", "service": service}
