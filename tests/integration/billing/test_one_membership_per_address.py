"""One person, one membership of a list (`herald_shared.membership`): an address a CRM adds to a list under 21 of
its own subscriber ids is one subscriber, as subscriptions stores it (it dead-letters the other 20), so it neither
ends a trial (PRODUCT.md: at most 20 subscribers) nor counts 21 toward a tier; billing's count and subscriptions'
lists agree, on the real stack, and again once billing's read model is folded from offset 0 (the upgrade's
`python -m herald_billing.rebuild`)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest

from herald_billing.main import Billing
from herald_billing.rebuild import rebuild_read_model
from herald_billing.store import FORMAT, MEMBERS, BillingStore
from herald_shared.contract import Event
from herald_shared.contract.subscriptions import SubscriberAdded, SubscriberErased, SubscriberUnsubscribed
from herald_shared.rebuilding import FORMATS, ReadModelOutdated
from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions

from .helpers import Customer, account, billing_settings, running_billing
from .test_orphan_members import all_folded, dead_letters, subscriptions_client

ANN = "ann@example.com"
ANN_SHA256 = hashlib.sha256(ANN.encode()).hexdigest()


def crm(account_id: str, subscriber_id: str, list_id: str = "news") -> dict[str, Any]:
    return {"account_id": account_id, "producer": "crm", "payload": {"list_id": list_id,
                                                                       "subscriber_id": subscriber_id}}


def crm_added(account_id: str, subscriber_id: str, list_id: str = "news") -> SubscriberAdded:
    event = crm(account_id, subscriber_id, list_id)
    event["payload"] |= {"email": ANN, "email_sha256": ANN_SHA256, "opt_in": "single", "consent": {
        "source": "import", "collected_at": "2026-10-01T10:00:00Z", "method": "crm sync"}}
    return SubscriberAdded.model_validate(event)


async def listed(http: httpx.AsyncClient, list_id: str) -> int:
    """The members subscriptions stores on the list, in any status."""
    response = await http.get(f"/v1/lists/{list_id}")
    assert response.status_code == 200, response.text
    return sum(response.json()["counts"].values())


async def test_an_address_under_21_crm_ids_is_one_subscriber_and_leaves_the_trial(
        settings: HeraldSettings, subscriptions: Subscriptions, mongo: Any) -> None:
    async with running_billing(settings) as platform:
        ada = await platform.sign_up("ada")
        http = await subscriptions_client(subscriptions, ada)
        for list_id in ("news", "offers"):
            created = await http.post("/v1/lists", json={"list_id": list_id, "name": list_id, "opt_in": "single"})
            assert created.status_code == 201, created.text
        await platform.publisher.publish_many([crm_added(ada.account_id, f"crm-{n}") for n in range(21)])
        await all_folded(settings)

        one = await account(ada)
        assert (one["plan"], one["usage"]["subscribers"], one["sending_blocked"]) == ("trial", 1, [])
        assert await listed(http, "news") == 1
        assert (await platform.service.store.usage(ada.account_id)).trial_peak_subscribers == 1
        letters = await dead_letters(settings, "herald.subscriptions")
        assert len(letters) == 20 and all("already a member of that list as 'crm-0'" in r for _, r in letters)

        # The same address on another list is another membership: stored subscribers count memberships.
        await platform.publisher.publish_many([crm_added(ada.account_id, "crm-offers", "offers"),
                                               crm_added(ada.account_id, "crm-offers-2", "offers")])
        # What a refused id does (its person unsubscribing through a link, the CRM erasing it) moves nothing.
        gone: list[Event] = [
            SubscriberUnsubscribed.model_validate(crm(ada.account_id, "crm-7") | {"payload": {
                "list_id": "news", "subscriber_id": "crm-7", "source": "api"}}),
            SubscriberErased.model_validate(crm(ada.account_id, "crm-8") | {"payload": {
                "subscriber_id": "crm-8", "list_id": "news", "email_sha256": ANN_SHA256, "requested_by": "account"}}),
        ]
        await platform.publisher.publish_many(gone)
        await all_folded(settings)
        two = await account(ada)
        assert (two["plan"], two["usage"]["subscribers"]) == ("trial", 2)
        assert await listed(http, "news") + await listed(http, "offers") == 2
        before = await platform.service.store.usage(ada.account_id)

    # The upgrade: a read model of the version before (no mark) is refused at start, folded again from offset 0,
    # and then counts the same.
    db = mongo[settings.database_name("billing")]
    await db[FORMATS].delete_one({"_id": "billing"})
    with pytest.raises(ReadModelOutdated, match=r"herald_billing\.rebuild"):
        await Billing(billing_settings(settings)).start()
    members = {d["_id"]: d async for d in db[MEMBERS].find({})}
    assert await rebuild_read_model(settings, db) > 0
    assert await db[FORMATS].find_one({"_id": "billing"}) == {"_id": "billing", "format": FORMAT}
    assert await BillingStore(db).usage(ada.account_id) == before
    assert {d["_id"]: d async for d in db[MEMBERS].find({})} == members
    async with running_billing(settings) as platform:
        again: Customer = await platform.log_in("ada", ada.account_id)
        assert (await account(again))["usage"]["subscribers"] == 2
