"""The schedule and the staff review queue list a campaign while it is scheduled or in review, and not after: on the
real stack (MongoDB keeps a date to the millisecond, so a key worked out from an event's time must be the one worked
out again from the stored campaign), and listings an earlier version left behind are mended, never followed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from herald_campaigns.store import COMPLETING, REVIEW, SCHEDULE
from herald_shared.contract.delivery import CampaignDeliveryFinished
from herald_shared.readmodel import stored_time_key
from tests.conftest import eventually

from .conftest import Platform, draft


async def listed(platform: Platform, collection: str, account_id: str) -> list[str]:
    db = platform.service.service.store.db
    return [d["_id"] async for d in db[collection].find({}, {"_id": 1}) if f"/{account_id}/" in f"/{d['_id']}"]


async def status(platform: Platform, account_id: str, campaign_id: str) -> str | None:
    state = await platform.service.service.store.campaign_state(account_id, campaign_id)
    return state.status if state is not None else None


async def test_a_campaign_sent_now_or_approved_leaves_no_listing_behind(platform: Platform) -> None:
    paid = await platform.tenant("acc-now", "news", account="paid")
    for campaign_id in ("c1", "c2", "c3"):
        assert (await paid.http.post("/v1/campaigns", json={**draft(), "campaign_id": campaign_id})).status_code == 201
        submitted = await paid.http.post(f"/v1/campaigns/{campaign_id}/submission", json={})
        assert submitted.json()["status"] == "scheduled", submitted.text
    for campaign_id in ("c1", "c2", "c3"):
        await eventually(lambda c=campaign_id: status(platform, "acc-now", c), lambda s: s == "queued",  # type: ignore[misc]
                         within=30, what=f"{campaign_id} queued")
    assert await listed(platform, SCHEDULE, "acc-now") == []

    trial = await platform.tenant("acc-rev", "news", account="trial")
    await trial.http.post("/v1/campaigns", json={**draft(), "campaign_id": "t1"})
    assert (await trial.http.post("/v1/campaigns/t1/submission", json={})).json()["status"] == "in_review"
    assert len(await listed(platform, REVIEW, "acc-rev")) == 1
    async with platform.staff() as staff:
        approved = await staff.post("/v1/staff/campaigns/acc-rev/t1/approval", json={"note": "fine"})
        assert approved.json()["status"] == "scheduled", approved.text
        await eventually(lambda: status(platform, "acc-rev", "t1"), lambda s: s == "queued", within=30,
                         what="approved campaign queued")
        assert await listed(platform, REVIEW, "acc-rev") == []
        assert await listed(platform, SCHEDULE, "acc-rev") == []
        queue = (await staff.get("/v1/staff/review-queue?limit=200")).json()["items"]
        assert [i for i in queue if i["account_id"] == "acc-rev"] == []


async def test_listings_an_earlier_version_left_are_mended_and_never_hold_the_schedule_up(platform: Platform) -> None:
    """Keys of the microsecond (as written before 2026-12-07) of campaigns long queued: more than the 100 the
    scheduler reads at a time, all due before any other. A campaign sent now still goes; the stale keys go; a
    scheduled campaign listed only under such a key stays listed, under its own key."""
    store = platform.service.service.store
    db = store.db
    acme = await platform.tenant("acc-old", "news", account="paid")
    await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "gone"})
    await acme.http.post("/v1/campaigns/gone/submission", json={})
    await eventually(lambda: status(platform, "acc-old", "gone"), lambda s: s == "queued", within=30,
                     what="first campaign queued")
    long_ago = datetime(2026, 1, 1, tzinfo=UTC)
    stale = [f"{(long_ago + timedelta(seconds=i)).strftime('%Y%m%dT%H%M%S')}{i:06d}Z/acc-old/gone"
             for i in range(1, 151)]
    await db[SCHEDULE].insert_many([{"_id": key} for key in stale])
    await db[REVIEW].insert_one({"_id": stale[0]})

    # A scheduled campaign whose only listing is a key of the microsecond: the mending lists it under its own.
    later = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "later"})
    body = (await acme.http.post("/v1/campaigns/later/submission",
                                 json={"send_at": later.replace(tzinfo=None).isoformat(), "time_zone": "UTC"})).json()
    assert body["status"] == "scheduled", body
    [own] = [k for k in await listed(platform, SCHEDULE, "acc-old") if k.endswith("/later")]
    await db[SCHEDULE].delete_one({"_id": own})
    old_style = own.replace("000Z/", "123Z/")
    await db[SCHEDULE].insert_one({"_id": old_style})

    # The scheduler may meet some of the due ones first; the review key and the one of a campaign not due yet are
    # the mending's alone.
    assert await store.mend_listings() >= 2
    assert await listed(platform, SCHEDULE, "acc-old") == [own]
    assert await listed(platform, REVIEW, "acc-old") == []

    # A key of this version's format for a campaign still a draft is one a fold wrote an instant before the
    # document shows it scheduled (its command's commit timed out, the lock released): the scheduler leaves it.
    await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "becoming"})
    becoming = f"{stored_time_key(datetime.now(UTC))}/acc-old/becoming"
    await db[SCHEDULE].insert_one({"_id": becoming})
    await store.relist(becoming)
    assert becoming in await listed(platform, SCHEDULE, "acc-old")
    await db[SCHEDULE].delete_one({"_id": becoming})

    # What the scheduler meets between two starts is mended as it goes.
    await db[SCHEDULE].insert_many([{"_id": key} for key in stale])
    await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "now"})
    assert (await acme.http.post("/v1/campaigns/now/submission", json={})).json()["status"] == "scheduled"
    await eventually(lambda: status(platform, "acc-old", "now"), lambda s: s == "queued", within=60,
                     what="a campaign sent now queued past 150 stale keys")
    await eventually(lambda: listed(platform, SCHEDULE, "acc-old"), lambda keys: keys == [own], within=30,
                     what="the stale keys gone, the scheduled campaign still listed")


async def test_keys_to_complete_whose_campaign_is_gone_never_hold_completion_up(platform: Platform) -> None:
    """Completion reads 100 keys at a time too: keys of campaigns that are not there (a failed fold's, a purge
    interrupted) all sorting first go as it meets them, and the campaign after them is completed."""
    db = platform.service.service.store.db
    acme = await platform.tenant("acc-z", "news", account="paid")
    await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()["status"] == "scheduled"
    await eventually(lambda: status(platform, "acc-z", "c1"), lambda s: s == "queued", within=30, what="queued")
    await db[COMPLETING].insert_many([{"_id": f"acc-a/old{i:03d}"} for i in range(150)])
    await platform.publisher.publish(CampaignDeliveryFinished(account_id="acc-z", producer="delivery", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "recipients": 0, "sent": 0, "bounced": 0, "skipped": 0, "failed": 0, "cancelled": 0}))
    await eventually(lambda: status(platform, "acc-z", "c1"), lambda s: s == "done", within=60,
                     what="the campaign completed past 150 stale keys")
    assert await listed(platform, COMPLETING, "acc-a") == []
    # and what is left at a start goes before the consumers run
    await db[COMPLETING].insert_many([{"_id": f"acc-a/old{i:03d}"} for i in range(3)])
    assert await platform.service.service.store.mend_listings() == 3
