"""A member the account removed from its list (`DELETE /v1/lists/{list_id}/subscribers/{subscriber_id}`) is not
mailed by the next campaign: subscriptions records the membership's erasure, delivery's audience drops it.
Subscriptions and delivery on the real stack (they meet only through Kafka), a real SMTP relay."""

from __future__ import annotations

from collections import Counter
from typing import Any

from herald_delivery import store
from herald_shared.contract.delivery import CampaignDeliveryFinished
from tests.samples import campaign_queued

from .conftest import SubscriptionsBeside, World

ANN, BOB, CAT = "ann@example.org", "bob@example.org", "cat@example.org"


async def test_a_removed_member_is_not_mailed_by_the_next_campaign(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside) -> None:
    api = subscriptions.api
    running = await start_delivery()
    created = await api.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "single"})
    assert created.status_code == 201, created.text
    ids = {}
    for address in (ANN, BOB, CAT):
        added = await api.post("/v1/lists/news/subscribers", json={"email": address, "consent": {"method": "form"}})
        assert added.status_code == 201, added.text
        ids[address] = added.json()["subscriber_id"]

    removed = await api.delete(f"/v1/lists/news/subscribers/{ids[ANN]}")
    assert removed.status_code == 204, removed.text

    await world.publish(campaign_queued("acme", "c1", list_id="news"))
    events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es), what="c1 done")
    [end] = [e for e in events if isinstance(e, CampaignDeliveryFinished)]
    assert (end.payload.recipients, end.payload.sent) == (2, 2)
    assert Counter(r.lower() for r in relay.recipients()) == {BOB: 1, CAT: 1}

    # The audience holds nothing of the removed member.
    active = [d["_id"] async for d in running.service.db[store.ACTIVE_MEMBERS].find({}).sort("_id", 1)]
    assert active == sorted(f"acme/news/{ids[a]}" for a in (BOB, CAT))
    member = await running.service.db[store.MEMBERS].find_one({"_id": f"acme/{ids[ANN]}"})
    assert member is None or "email" not in member, member
