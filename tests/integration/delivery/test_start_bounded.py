"""A start of delivery reads the open campaigns, not every campaign ever queued (README, "The end of a campaign"):
on the real stack, after campaigns ended, with one in flight at a restart, and on a database written before the
open listing existed."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from herald_delivery.store import SENDER_STATE, DeliveryStore
from herald_shared.contract import Event
from herald_shared.contract.delivery import CampaignDeliveryFinished
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import Running, World

AUDIENCE = 40
# Where the store lists the open campaigns, and its mark in `sender_state` that they are listed (a stored format:
# named here as written, so that a version without them fails these tests on what it does, not on an import).
OPEN_CAMPAIGNS, CAMPAIGNS_LISTED = "open_campaigns", "campaigns_listed"


def ends(events: list[Event], campaign_id: str) -> list[CampaignDeliveryFinished]:
    return [e for e in events if isinstance(e, CampaignDeliveryFinished) and e.payload.campaign_id == campaign_id]


def counts(end: CampaignDeliveryFinished) -> dict[str, int]:
    return end.payload.model_dump(exclude={"campaign_id"})


def delivery_db(mongo: Any, settings: HeraldSettings) -> Any:
    """The service's database through the test's own client (a stopped service has closed its own)."""
    return mongo[settings.database_name("delivery")]


async def listed(db: Any) -> set[str]:
    return {str(doc["_id"]) async for doc in db[OPEN_CAMPAIGNS].find({})}


async def what_a_start_reads(db: Any) -> dict[str, Any]:
    """What each start-up read of a new process's store returns (the service's own calls, in their order)."""
    store = DeliveryStore(db)
    states, pending = await store.campaigns_at_start()
    fold = await store.load_pending()
    return {"states": sorted(states), "pending": [doc["_id"] for doc in pending],
            "expansions": sorted(await store.expansions()),
            "announcements": sorted(doc["_id"] for doc in await store.finished_campaigns()),
            "ledger": sorted(fold.finished), "unfinished": len(fold.pending)}


async def a_campaign_ended(world: World, db: Any, campaign_id: str) -> CampaignDeliveryFinished:
    await world.publish(campaign_queued("acme", campaign_id))
    events = await world.wait_for(lambda es: bool(ends(es, campaign_id)), f"the end of {campaign_id}")
    end, = ends(events, campaign_id)
    await eventually(lambda: listed(db), lambda keys: f"acme:{campaign_id}" not in keys,
                     what=f"{campaign_id} closed once its end is published")
    return end


async def a_campaign_stopped_midway(world: World, relay: Any, running: Running, campaign_id: str) -> None:
    """Queued and partly sent when the process stops (gracefully: the messages handed out are finished)."""
    already = len(relay.recipients())
    await world.publish(campaign_queued("acme", campaign_id))
    await eventually(relay.mailed, lambda r: len(r) >= already + 8, what=f"the first messages of {campaign_id}")
    await running.service.stop()


def mailed_once_each(relay: Any, campaigns: int, refused: str | None = None) -> bool:
    """Every recipient got each campaign once (`refused` one fewer: the relay refused it one)."""
    mailed = Counter(r for r in relay.recipients() if r != "owner@acme.example")
    expected = Counter({f"r{i}@example.org": campaigns for i in range(AUDIENCE)})
    if refused is not None:
        expected[refused] -= 1
    return mailed == expected


async def test_a_restart_after_campaigns_ended_reads_none_of_them(
        start_delivery: Any, relay: Any, world: World, mongo: Any, settings: HeraldSettings) -> None:
    db = delivery_db(mongo, settings)
    first = await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(AUDIENCE)])
    for campaign_id in ("c1", "c2", "c3"):
        await a_campaign_ended(world, db, campaign_id)
    # Nothing of an announced campaign stays in memory either.
    assert first.service.completion._finished == set()
    assert first.service.gates.campaigns == {}
    assert first.service.store._buckets == set()
    await first.service.stop()

    assert await what_a_start_reads(db) == {"states": [], "pending": [], "expansions": [], "announcements": [],
                                               "ledger": [], "unfinished": 0}
    second = await start_delivery()
    assert second.service.gates.campaigns == {}
    # A CampaignQueued of an ended campaign published again: read by key, expanded to nothing new, not announced
    # again, and closed again.
    await world.publish(campaign_queued("acme", "c1").model_copy(update={"event_id": uuid.uuid4()}))
    await second.service.gates_caught_up()
    await second.service.control_handler.expansions.idle()
    await eventually(lambda: listed(db), lambda keys: keys == set(), what="c1 closed again")
    events = await world.events()
    assert [len(ends(events, c)) for c in ("c1", "c2", "c3")] == [1, 1, 1]
    assert mailed_once_each(relay, 3)


async def test_a_campaign_in_flight_at_a_restart_ends_once_with_exact_counts(
        start_delivery: Any, relay: Any, world: World, mongo: Any, settings: HeraldSettings) -> None:
    db = delivery_db(mongo, settings)
    first = await start_delivery(HERALD_ACCOUNT_RATE=10)
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(AUDIENCE)])
    before = await a_campaign_ended(world, db, "c0")
    relay.behaviour.script["r7@example.org"] = [("rcpt", "554 5.7.1 rejected by policy")]  # of c1
    await a_campaign_stopped_midway(world, relay, first, "c1")
    assert ends(await world.events(), "c1") == []
    assert await listed(db) == {"acme:c1"}
    reads = await what_a_start_reads(db)
    assert (reads["states"], reads["ledger"], reads["announcements"]) == (["acme:c1"], ["acme:c1"], [])
    assert 0 < reads["unfinished"] < AUDIENCE

    second = await start_delivery(HERALD_ACCOUNT_RATE=10)
    assert set(second.service.gates.campaigns) == {"acme:c1"}
    events = await world.wait_for(lambda es: bool(ends(es, "c1")), "the end of c1 after the restart")
    end, = ends(events, "c1")
    assert counts(end) == {"recipients": AUDIENCE, "sent": AUDIENCE - 1, "bounced": 1, "skipped": 0, "failed": 0,
                           "cancelled": 0}
    assert ends(events, "c0") == [before]
    await eventually(lambda: listed(db), lambda keys: keys == set(), what="c1 closed")
    assert mailed_once_each(relay, 2, refused="r7@example.org")


async def test_a_database_written_before_the_listing_is_listed_once_at_the_first_start(
        start_delivery: Any, relay: Any, world: World, mongo: Any, settings: HeraldSettings) -> None:
    """The upgrade: the first start lists the open campaigns from every campaign (as the version before read
    them at every start), less those whose end is published; later starts read the listing only."""
    db = delivery_db(mongo, settings)
    first = await start_delivery(HERALD_ACCOUNT_RATE=10)
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(AUDIENCE)])
    before = await a_campaign_ended(world, db, "c0")
    await a_campaign_stopped_midway(world, relay, first, "c1")
    await db[OPEN_CAMPAIGNS].drop()  # as the version before left it
    await db[SENDER_STATE].delete_one({"_id": CAMPAIGNS_LISTED})

    second = await start_delivery(HERALD_ACCOUNT_RATE=10)
    assert set(second.service.gates.campaigns) == {"acme:c1"}
    assert await db[SENDER_STATE].find_one({"_id": CAMPAIGNS_LISTED}) is not None
    events = await world.wait_for(lambda es: bool(ends(es, "c1")), "the end of c1 after the upgrade")
    end, = ends(events, "c1")
    assert counts(end) == {"recipients": AUDIENCE, "sent": AUDIENCE, "bounced": 0, "skipped": 0, "failed": 0,
                           "cancelled": 0}
    assert ends(events, "c0") == [before]
    await eventually(lambda: listed(db), lambda keys: keys == set(), what="c1 closed")
    assert mailed_once_each(relay, 2)
    await second.service.stop()
    assert (await what_a_start_reads(db))["states"] == []
