"""A suppressed address is not mailed again because another producer re-added it (PRODUCT.md "Every message": only
confirmed, non-suppressed subscribers; a suppressed address comes back only by the person's own double opt-in;
ARCHITECTURE.md: a CRM may publish subscriptions events). Subscriptions and delivery on the real stack: Bob
complains and is suppressed; a CRM then publishes SubscriberAdded + SubscriberConfirmed (single opt-in) for him,
(a) under his own subscriber id, (b) under a new id on another list. No campaign reaches him, until he confirms a
double opt-in himself (hosted form, then the link in the confirmation email)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from typing import Any

from pymongo import AsyncMongoClient

from herald_delivery import store as delivery_store
from herald_delivery.domain import message_id_for
from herald_delivery.store import AudienceProjection, DeliveryStore
from herald_shared.contract import Event
from herald_shared.contract.delivery import CampaignDeliveryFinished, ComplaintReceived
from herald_shared.contract.subscriptions import (
    ListCreated,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberSuppressed,
)
from herald_shared.readmodel import compose
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.helpers import form_token
from tests.samples import campaign_queued

from .conftest import SECRET, SubscriptionsBeside, World

BOB, ANN, CAROL = "bob@example.org", "ann@example.org", "carol@example.org"


def crm_add(list_id: str, subscriber_id: str, address: str) -> list[Event]:
    return [
        SubscriberAdded(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
            "list_id": list_id, "subscriber_id": subscriber_id, "email": address,
            "email_sha256": hashlib.sha256(address.encode()).hexdigest(), "opt_in": "single",
            "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "CRM sync"}}),
        SubscriberConfirmed(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
            "list_id": list_id, "subscriber_id": subscriber_id, "method": "single_opt_in"})]


def subjects_to(relay: Any, address: str) -> list[str]:
    return [str(email.message_from_bytes(m.data, policy=email.policy.default)["Subject"])
            for m in relay.received if m.recipient == address]


async def mailed_to(relay: Any, address: str) -> list[str]:
    return subjects_to(relay, address)


async def sent_to_the_end(world: World, relay: Any, campaign_id: str, list_id: str) -> dict[str, int]:
    """Queue a campaign and wait for delivery to say it is done with it; its counts."""
    await world.publish(campaign_queued("acme", campaign_id, list_id=list_id, subject=f"Campaign {campaign_id}"))
    events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished)
                                                 and e.payload.campaign_id == campaign_id for e in es),
                                  what=f"{campaign_id} finished")
    end = next(e for e in events if isinstance(e, CampaignDeliveryFinished) and e.payload.campaign_id == campaign_id)
    return {"recipients": end.payload.recipients, "sent": end.payload.sent, "skipped": end.payload.skipped}


async def test_a_suppressed_address_re_added_by_another_producer_is_not_mailed_until_the_person_opts_in(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside) -> None:
    api = subscriptions.api
    await start_delivery()
    for list_id in ("news", "other"):
        created = await api.post("/v1/lists", json={"list_id": list_id, "name": list_id.title(), "opt_in": "single"})
        assert created.status_code == 201, created.text
    ids = {}
    for address in (BOB, ANN):
        added = await api.post("/v1/lists/news/subscribers", json={"email": address, "consent": {"method": "form"}})
        assert added.status_code == 201, added.text
        ids[address] = added.json()["subscriber_id"]
    bob = ids[BOB]
    assert await sent_to_the_end(world, relay, "c1", "news") == {"recipients": 2, "sent": 2, "skipped": 0}

    # Bob complains about c1: subscriptions suppresses the address, and refuses to add it again.
    await world.publish(ComplaintReceived(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": message_id_for("acme", "c1", bob), "campaign_id": "c1", "subscriber_id": bob,
        "list_id": "news", "feedback_type": "abuse", "reporting_domain": "isp.example"}))
    await eventually(lambda: api.get(f"/v1/subscribers/{bob}"), lambda r: r.json()["status"] == "suppressed",
                     what="bob suppressed")
    refused = await api.post("/v1/lists/other/subscribers", json={"email": BOB, "consent": {"method": "form"}})
    assert refused.status_code == 409, refused.text

    # (a) The CRM re-adds Bob under his own id, confirmed by single opt-in: subscriptions keeps him suppressed,
    # and so does delivery (the expansion waits for its audience to fold everything published before it).
    await world.publish(*crm_add("news", bob, BOB))
    assert await sent_to_the_end(world, relay, "c2", "news") == {"recipients": 1, "sent": 1, "skipped": 0}
    assert "Campaign c2" in subjects_to(relay, ANN)

    # (b) The CRM adds Bob under a new id on a list of its own (with Carol, whom nobody suppressed).
    await world.publish(ListCreated(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
        "list_id": "crm", "name": "CRM", "opt_in": "single"}), *crm_add("crm", "crm-bob-2", BOB),
        *crm_add("crm", "crm-carol", CAROL))
    assert await sent_to_the_end(world, relay, "c3", "crm") == {"recipients": 1, "sent": 1, "skipped": 0}
    assert subjects_to(relay, CAROL) == ["Campaign c3"]
    assert subjects_to(relay, BOB) == ["Campaign c1"]  # nothing after the complaint

    # Bob's own double opt-in: the hosted form (a suppressed address may come back only so), then the link.
    async with subscriptions.pages() as pages:
        path = "/subscribe/acme/news"
        posted = await pages.post(path, data={**form_token(SECRET, path), "email": BOB, "consent": "yes"})
        assert posted.status_code == 200, posted.text
        await eventually(lambda: mailed_to(relay, BOB), lambda s: len(s) == 2, what="bob's confirmation email")
        confirmation, = [m for m in relay.received if m.recipient == BOB][1:]
        body = email.message_from_bytes(confirmation.data, policy=email.policy.default).get_body(("plain",))
        assert body is not None
        link, = re.findall(r"http://subs\.test(/confirm/\S+)", body.get_content())
        confirmed = await pages.post(link, data=form_token(SECRET, link))
        assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    await eventually(lambda: api.get(f"/v1/subscribers/{bob}"), lambda r: r.json()["status"] == "active",
                     what="bob active again")
    assert await sent_to_the_end(world, relay, "c4", "news") == {"recipients": 2, "sent": 2, "skipped": 0}
    assert subjects_to(relay, BOB)[-1] == "Campaign c4"


async def test_a_read_model_folded_before_addresses_kept_their_suppression_still_keeps_a_new_membership_out(
        settings: HeraldSettings, mongo: AsyncMongoClient[Any]) -> None:
    """An address folded by an earlier version has no suppression mark; one of its memberships still suppressed
    says it (real MongoDB/FerretDB, the audience projection alone)."""
    db = mongo[settings.database_name("delivery")]
    projection, store = AudienceProjection(db), DeliveryStore(db)
    await fold(projection, ListCreated(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "name": "News", "opt_in": "single"}), *crm_add("news", "s1", BOB),
        SubscriberSuppressed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "subscriber_id": "s1", "email_sha256": hashlib.sha256(BOB.encode()).hexdigest(),
            "reason": "complaint"}))
    address = compose("acme", hashlib.sha256(BOB.encode()).hexdigest())
    assert (await db[delivery_store.ADDRESSES].find_one({"_id": address}) or {}).get("suppressed") is True
    await db[delivery_store.ADDRESSES].update_one({"_id": address}, {"$unset": {"suppressed": ""}})
    await fold(projection, ListCreated(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
        "list_id": "crm", "name": "CRM", "opt_in": "single"}), *crm_add("crm", "crm-bob-2", BOB),
        *crm_add("crm", "crm-carol", CAROL))
    assert [m.subscriber_id async for m in store.list_members("acme", "crm")] == ["crm-carol"]
    assert (await store.members("acme", ["crm-bob-2"]))["crm-bob-2"].status == "suppressed"


async def fold(projection: AudienceProjection, *events: Event) -> None:
    for event in events:
        await projection.handle(event)
    await projection.flush()
