"""After an erasure no staff look-up leads to the person's messages (PRODUCT.md "Subject rights: export and erasure
of one subscriber's data on request"), on the real stack with a real relay: by the address's hash or by the
subscriber id the look-up answers that the membership was erased, and when, with no message, confirmation, attempt
or reply; the ledger keeps its counts; the audience folded again by the rebuild does not tie them back; and the id
added again later shows none of the erased person's messages."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from herald_delivery import store
from herald_delivery.api import MessagesOut
from herald_delivery.main import Delivery
from herald_delivery.rebuild import STOP, consumer_groups, fold_audience
from herald_delivery.store import AUDIENCE, AudienceProjection, DeliveryStore
from herald_shared.apikeys import hash_secret
from herald_shared.contract.delivery import CampaignDeliveryFinished
from herald_shared.contract.subscriptions import (
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberUnsubscribed,
)
from herald_shared.mongo import Document
from herald_shared.readmodel import compose
from herald_shared.rebuilding import run_rebuild
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.helpers import documents_holding
from tests.samples import campaign_queued, confirmation_request

from .conftest import World, delivery_settings

STAFF_TOKEN = "staff-token-of-rita-0123456789"
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}
ANN, BOB = "ann@example.org", "bob@example.org"
ANN_HASH = hashlib.sha256(ANN.encode()).hexdigest()
PATH = "/v1/staff/accounts/acme/messages"


@asynccontextmanager
async def delivery(settings: HeraldSettings, relay: Any) -> AsyncIterator[tuple[Delivery, httpx.AsyncClient]]:
    service = Delivery(delivery_settings(settings, relay.port, HERALD_STAFF_TOKENS=f"rita={hash_secret(STAFF_TOKEN)}"))
    await service.start()
    try:
        await eventually(service._running, bool, what="delivery consumers and sender running")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app),
                                     base_url="http://track.test") as http:
            yield service, http
    finally:
        await service.stop()


async def look_up(http: httpx.AsyncClient, **person: str) -> dict[str, Any]:
    answer = await http.get(PATH, params=person, headers=STAFF)
    assert answer.status_code == 200, answer.text
    return MessagesOut.model_validate(answer.json()).model_dump(mode="json")


async def ledger_counts(db: Any) -> dict[str, Any]:
    """What the ledger keeps for exactly-once, the send allowance and the campaign's report."""
    return {"jobs": await db[store.JOBS].count_documents({"account_id": "acme"}),
            "outcomes": sorted([(d["_id"], d["outcome"])
                                async for d in db[store.OUTCOMES].find({"account_id": "acme"})]),
            "sent_counts": await db[store.SENT_COUNTS].find_one({"_id": "acme"}),
            "finished": await db[store.FINISHED_CAMPAIGNS].find_one({"_id": "acme:c1"}, {"published": 0})}


async def assert_erased_and_untied(http: httpx.AsyncClient, db: Any) -> None:
    by_address = await look_up(http, email_sha256=ANN_HASH)
    assert by_address["memberships"] == [] and by_address["looked_up"]["erased_at"] is not None
    assert (by_address["messages"], by_address["confirmations"]) == ([], [])
    for subscriber_id, list_id in (("s-ann", "news"), ("s-ann-offers", "offers")):
        by_id = await look_up(http, subscriber_id=subscriber_id)
        membership, = by_id["memberships"]
        assert (membership["subscriber_id"], membership["list_id"], membership["status"]) == (
            subscriber_id, list_id, "erased")
        # The address says when its last membership was erased.
        assert membership["erased_at"] is not None and membership["erased_at"] <= by_address["looked_up"]["erased_at"]
        assert (by_id["messages"], by_id["confirmations"], by_id["next_cursor"]) == ([], [], None)
    # The hash is left only as the key of the address's own document, which names no membership.
    assert await documents_holding(db, ANN_HASH) == [f"{store.ADDRESSES}: " + repr(
        await db[store.ADDRESSES].find_one({"_id": compose("acme", ANN_HASH)}))]
    address = await db[store.ADDRESSES].find_one({"_id": compose("acme", ANN_HASH)})
    assert address["members"] == []
    assert await documents_holding(db, ANN) == []


async def test_an_erased_person_is_looked_up_as_erased_with_no_messages_also_after_the_audience_is_rebuilt(
        settings: HeraldSettings, world: World, relay: Any) -> None:
    await world.open_account("acme")
    async with delivery(settings, relay) as (service, http):
        await world.add_list("acme", "news", [("s-ann", ANN), ("s-bob", BOB)])
        await world.publish(*confirmation_request("acme", "s-ann-offers", ANN, list_id="offers"))
        await eventually(relay.mailed, lambda r: r.count(ANN) == 1, what="ann's confirmation email")
        await world.publish(campaign_queued("acme", "c1"))
        await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es), "c1 finished")
        assert sorted(await relay.mailed()) == [ANN, ANN, BOB]
        before = await look_up(http, email_sha256=ANN_HASH)
        assert [(m["campaign_id"], m["state"]) for m in before["messages"]] == [("c1", "sent")]
        assert before["messages"][0]["attempts"][0]["smtp_code"] == 250
        assert [c["state"] for c in before["confirmations"]] == ["sent"]
        counts = await ledger_counts(service.db)
        assert counts["jobs"] == 3 and [o for _, o in counts["outcomes"]] == ["sent"] * 3
        assert counts["sent_counts"] is not None and counts["finished"] is not None

        await world.publish(*(SubscriberErased(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "subscriber_id": s, "list_id": list_id, "email_sha256": ANN_HASH, "requested_by": "subscriber"})
            for s, list_id in (("s-ann", "news"), ("s-ann-offers", "offers"))))
        await service.audience_caught_up()
        # The confirmations consumer takes the address out of the confirmation's job on its own.
        await eventually(lambda: documents_holding(service.db, ANN), lambda left: left == [],
                         what="ann's address gone from the ledger")
        await assert_erased_and_untied(http, service.db)
        bob = await look_up(http, subscriber_id="s-bob")
        assert [(m["campaign_id"], m["state"]) for m in bob["messages"]] == [("c1", "sent")]
        assert await ledger_counts(service.db) == counts

    # `python -m herald_delivery.rebuild`, as test_rebuild_matches_live runs it, with the process stopped.
    assert await run_rebuild(settings, AUDIENCE, consumer_groups(settings), STOP, fold_audience) == 0

    async with delivery(settings, relay) as (service, http):
        await assert_erased_and_untied(http, service.db)
        assert await ledger_counts(service.db) == counts
        # A CRM adds the id again (whoever it is now): the erased person's messages, made of that id, stay out.
        await world.publish(
            SubscriberAdded(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
                "list_id": "news", "subscriber_id": "s-ann", "email": "new@example.org",
                "email_sha256": hashlib.sha256(b"new@example.org").hexdigest(), "opt_in": "single",
                "consent": {"source": "api", "collected_at": "2026-12-07T00:00:00Z", "method": "test"}}),
            SubscriberConfirmed(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
                "list_id": "news", "subscriber_id": "s-ann", "method": "single_opt_in"}))
        await service.audience_caught_up()
        again = await look_up(http, subscriber_id="s-ann")
        assert [m["status"] for m in again["memberships"]] == ["active"]
        assert again["memberships"][0]["erased_at"] is not None
        assert (again["messages"], again["confirmations"]) == ([], [])


async def test_an_opt_out_outlives_the_erasure_on_the_address_alone_and_refuses_a_test_send(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    """The erased membership leaves its address's document; that the person had unsubscribed stays there (a test
    send to the address is still refused), naming no membership."""
    db = mongo[settings.database_name("delivery-erased-opt-out")]
    try:
        audience = AudienceProjection(db)
        for event in (
                SubscriberAdded(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
                    "list_id": "news", "subscriber_id": "s-ann", "email": ANN, "email_sha256": ANN_HASH,
                    "opt_in": "single", "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z",
                                                    "method": "test"}}),
                SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
                    "list_id": "news", "subscriber_id": "s-ann", "source": "one_click"}),
                SubscriberErased(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
                    "subscriber_id": "s-ann", "list_id": "news", "email_sha256": ANN_HASH,
                    "requested_by": "subscriber"})):
            await audience.handle(event)
        await audience.flush()
        address = await db[store.ADDRESSES].find_one({"_id": compose("acme", ANN_HASH)})
        assert address is not None and address["members"] == [] and address["opted_out"] is True
        assert "email_sha256" not in (await db[store.MEMBERS].find_one({"_id": "acme:s-ann"}) or {"email_sha256": 1})
        assert await DeliveryStore(db).refused_test_recipients("acme", [ANN]) == {ANN: "address_unsubscribed"}
    finally:
        await mongo.drop_database(db.name)
