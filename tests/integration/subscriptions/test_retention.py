"""Retention (PRODUCT.md, "Data protection"): when billing purges an account, nothing of it stays in the
subscriptions read model (lists, members, addresses, suppressions, imports, keys), its later events are
dropped, and a rebuild from offset 0 brings nothing back."""

from __future__ import annotations

import uuid

from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.subscriptions import SubscriberAdded
from herald_shared.mongo import rebuild
from herald_shared.purging import PurgedAccounts, PurgingHandler
from herald_subscriptions.store import SubscriptionsProjection
from tests.conftest import eventually
from tests.integration.helpers import documents_holding
from tests.integration.subscriptions.conftest import Platform

T = "2026-10-01T10:00:00+00:00"
ACME = ("'acme'", "'acme/")  # the account's id, as a value and as a key prefix



async def test_a_purged_account_leaves_nothing_and_a_rebuild_brings_nothing_back(platform: Platform) -> None:
    acme, other = await platform.tenant("acme"), await platform.tenant("other")
    await acme.create_list("news", custom_fields=[{"name": "city", "kind": "text"}])
    await acme.create_list("offers", opt_in="double")
    await acme.http.post("/v1/lists/news/subscribers", json={
        "email": "anna@example.com", "first_name": "Anna", "custom_fields": {"city": "Riga"},
        "consent": {"method": "webinar signup", "ip": "203.0.113.5"}})
    await acme.subscribe("ben@example.com", list_id="offers")
    body = f"email,consent_method,consent_at\ncara@example.com,shop,{T}\ndan@example.com,shop,{T}\n"
    assert (await acme.http.post("/v1/lists/news/imports", content=body.encode(),
                                 headers={"Content-Type": "text/csv"})).status_code == 202
    assert (await acme.http.post("/v1/gdpr/erase", json={"email": "dan@example.com"})).status_code == 200
    await other.create_list("news")
    await other.subscribe("anna@example.com")
    db = platform.service.db
    assert await documents_holding(db, *ACME)

    await platform.publisher.publish(AccountPurged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "reason": "deleted", "since": "2026-08-01T00:00:00Z"}))
    await eventually(lambda: documents_holding(db, *ACME, "ben@example.com", "cara@example.com"),
                     lambda docs: docs == [], what="the account purged")
    assert await platform.service.apikeys.authenticate(acme.key) is None
    assert (await acme.http.get("/v1/lists")).status_code == 401
    # The other account keeps its own subscriber, the same person.
    assert (await other.http.get("/v1/gdpr/export", params={"email": "anna@example.com"})).json()["memberships"]

    # A late event of the purged account is dropped, not folded.
    added = next(e for e in await platform.events() if isinstance(e, SubscriberAdded) and e.account_id == "acme")
    await platform.publisher.publish(added.model_copy(update={"event_id": uuid.uuid4()}))
    await other.subscribe("eve@example.com")  # a later event folded: the late copy was handled before it
    await eventually(lambda: other.http.get("/v1/gdpr/export", params={"email": "eve@example.com"}),
                     lambda r: bool(r.json()["memberships"]), what="a later event folded")
    assert await documents_holding(db, *ACME, "'Anna'") == []

    rebuilt_db = platform.service.mongo[platform.settings.database_name("rebuilt")]
    purged = PurgedAccounts(rebuilt_db)
    projection = SubscriptionsProjection(rebuilt_db)
    await rebuild(PurgingHandler(projection, purged, projection.purge), platform.settings,
                  ["herald.subscriptions", "herald.billing"])
    assert await documents_holding(rebuilt_db, *ACME, "ben@example.com", "cara@example.com", "'Anna'") == []
    assert await documents_holding(rebuilt_db, "'other'")
