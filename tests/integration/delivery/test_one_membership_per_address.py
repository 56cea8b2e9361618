"""One person, one membership of a list (`herald_shared.membership`; PRODUCT.md: a redelivery never sends an email
twice, the brief's "a CRM adding the same subscriber twice"): a CRM adds one address to a list under two ids, and a
third time in another case, each confirmed. Subscriptions and delivery on the real stack: one campaign reaches the
person once; subscriptions counts one active member, dead-letters the other adds naming the first id, and its API
subscribe answers that id; the audience's rebuild (`python -m herald_delivery.rebuild`'s fold) folds the same."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from pymongo import AsyncMongoClient

from herald_delivery import store
from herald_delivery.rebuild import fold_audience
from herald_shared.contract import Event
from herald_shared.contract.delivery import CampaignDeliveryFinished
from herald_shared.contract.subscriptions import SubscriberAdded, SubscriberConfirmed
from herald_shared.kafka import DLQ_REASON, read_from_start
from herald_shared.readmodel import Document
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import SubscriptionsBeside, World

ANN, BOB = "ann@example.org", "bob@example.org"
AUDIENCE = (store.MEMBERS, store.ACTIVE_MEMBERS, store.ADDRESSES, store.LISTS)


def crm_add(subscriber_id: str, address: str) -> list[Event]:
    return [
        SubscriberAdded(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": subscriber_id, "email": address,
            "email_sha256": hashlib.sha256(address.lower().encode()).hexdigest(), "opt_in": "single",
            "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "CRM sync"}}),
        SubscriberConfirmed(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": subscriber_id, "method": "single_opt_in"})]


async def dead_letter_reasons(settings: HeraldSettings) -> list[str]:
    reasons = []
    async for records in read_from_start(settings, [settings.topics.dead_letter("herald.subscriptions")]):
        reasons += [bytes(v).decode() for record in records for k, v in record.headers if k == DLQ_REASON]
    return reasons


async def dump(db: Any) -> dict[str, list[Document]]:
    return {name: [d async for d in db[name].find({}).sort("_id", 1)] for name in AUDIENCE}


async def test_one_address_under_three_ids_is_mailed_once_counted_once_and_answered_by_its_first_id(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World,
        subscriptions: SubscriptionsBeside, mongo: AsyncMongoClient[Document]) -> None:
    api = subscriptions.api
    running = await start_delivery()
    created = await api.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "single"})
    assert created.status_code == 201, created.text
    await world.publish(*crm_add("crm-1", ANN), *crm_add("crm-2", ANN), *crm_add("crm-3", "Ann@Example.org"),
                        *crm_add("crm-bob", BOB))

    await world.publish(campaign_queued("acme", "c1", list_id="news"))
    events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es), what="c1 done")
    [end] = [e for e in events if isinstance(e, CampaignDeliveryFinished)]
    assert (end.payload.recipients, end.payload.sent) == (2, 2)
    assert Counter(r.lower() for r in relay.recipients()) == {ANN: 1, BOB: 1}

    await eventually(lambda: api.get("/v1/lists/news"), lambda r: r.json()["counts"]["active"] == 2, what="counts")
    assert (await api.get("/v1/lists/news")).json()["counts"] == {
        "pending": 0, "active": 2, "unsubscribed": 0, "suppressed": 0}
    reasons = await eventually(lambda: dead_letter_reasons(settings), lambda r: len(r) >= 2, what="dead letters")
    assert sorted(r.split("'")[1] for r in reasons) == ["crm-2", "crm-3"]
    assert all("already a member of that list as 'crm-1'" in r for r in reasons), reasons
    again = await api.post("/v1/lists/news/subscribers", json={"email": ANN, "consent": {"method": "form"}})
    assert (again.status_code, again.json()["subscriber_id"], again.json()["outcome"]) == (
        200, "crm-1", "already_active")

    live = await dump(running.service.db)
    assert [d["_id"] for d in live[store.ACTIVE_MEMBERS]] == ["acme/news/crm-1", "acme/news/crm-bob"]
    rebuilt = mongo[settings.database_name("delivery-rebuilt")]
    try:
        await fold_audience(settings, rebuilt)
        assert await dump(rebuilt) == live
    finally:
        await mongo.drop_database(rebuilt.name)
