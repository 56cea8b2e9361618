"""A campaign's way back to its author on the real stack: unscheduled from review or the schedule into a draft
(out of the staff queue at once), edited and submitted (and reviewed) again; a queued one only cancelled; a list
deleted after the submission sends it back at its time (`list_deleted`), never queued; send times a year ahead or
with both an offset and a zone refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.contract.campaigns import CampaignQueued, CampaignReturned, CampaignUnscheduled
from tests.conftest import eventually

from .conftest import Platform, draft


def of(events: list[Any], cls: type, account_id: str, campaign_id: str) -> list[Any]:
    return [e for e in events if isinstance(e, cls) and e.account_id == account_id
            and e.payload.campaign_id == campaign_id]


async def in_queue(staff: Any, account_id: str) -> list[str]:
    items = (await staff.get("/v1/staff/review-queue?limit=200")).json()["items"]
    return [i["campaign_id"] for i in items if i["account_id"] == account_id]


async def test_a_campaign_in_review_or_scheduled_is_unscheduled_edited_and_reviewed_again(platform: Platform) -> None:
    """R5 #4: only cancellation (for good) or a duplicate under a new id got a scheduled campaign back."""
    acme = await platform.tenant("acc-unsched", "news", account="trial")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    later = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    body = (await acme.http.post("/v1/campaigns/c1/submission", json={"send_at": later.isoformat()})).json()
    assert (body["status"], body["review_reasons"]) == ("in_review", ["trial"])
    async with platform.staff() as staff:
        assert await in_queue(staff, "acc-unsched") == ["c1"]
        unscheduled = await acme.http.post("/v1/campaigns/c1/unscheduling", json={"reason": "wrong date"})
        assert unscheduled.status_code == 200, unscheduled.text
        assert (unscheduled.json()["status"], unscheduled.json()["send_at"]) == ("draft", None)
        assert await in_queue(staff, "acc-unsched") == []  # staff's queue drops it at once
        refused = await staff.post("/v1/staff/campaigns/acc-unsched/c1/approval", json={})
        assert refused.status_code == 409  # what left review cannot be approved
        # The same request again answers the draft; then it is edited and submitted: to staff again (trial).
        assert (await acme.http.post("/v1/campaigns/c1/unscheduling", json={})).json()["status"] == "draft"
        edited = await acme.http.put("/v1/campaigns/c1", json=draft(subject="The right date"))
        assert edited.status_code == 200, edited.text
        sooner = later - timedelta(days=1)
        again = (await acme.http.post("/v1/campaigns/c1/submission", json={"send_at": sooner.isoformat()})).json()
        assert (again["status"], datetime.fromisoformat(again["send_at"])) == ("in_review", sooner)
        assert await in_queue(staff, "acc-unsched") == ["c1"]
        approved = await staff.post("/v1/staff/campaigns/acc-unsched/c1/approval", json={})
        assert approved.json()["status"] == "scheduled"
        # Approved and scheduled: unscheduled the same way, and the approval does not carry over.
        back = await acme.http.post("/v1/campaigns/c1/unscheduling", json={})
        assert back.json()["status"] == "draft"
        resubmitted = (await acme.http.post("/v1/campaigns/c1/submission", json={"send_at": sooner.isoformat()}))
        assert resubmitted.json()["status"] == "in_review"
    events = await platform.events()
    unschedulings = of(events, CampaignUnscheduled, "acc-unsched", "c1")
    assert [(e.payload.unscheduled_by, e.payload.reason) for e in unschedulings] == [("api", "wrong date"),
                                                                                      ("api", None)]
    assert of(events, CampaignQueued, "acc-unsched", "c1") == []
    rival = await platform.tenant("acc-unsched-rival", "news", sending_domains=())
    assert (await rival.http.post("/v1/campaigns/c1/unscheduling", json={})).status_code == 404


async def test_a_queued_campaign_is_not_unscheduled_only_cancelled(platform: Platform) -> None:
    acme = await platform.tenant("acc-unsched-q", "news", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()["status"] == "scheduled"
    await eventually(lambda: acme.http.get("/v1/campaigns/c1"), lambda r: r.json()["status"] == "queued",
                     within=30, what="queued")
    refused = await acme.http.post("/v1/campaigns/c1/unscheduling", json={})
    assert refused.status_code == 409 and "cancel it instead" in refused.json()["detail"]
    assert (await acme.http.post("/v1/campaigns/c1/cancellation", json={})).json()["status"] == "cancelled"
    assert (await acme.http.post("/v1/campaigns/c1/unscheduling", json={})).status_code == 409


async def test_a_campaign_whose_list_is_deleted_after_its_submission_goes_back_to_draft_at_its_time(
        platform: Platform) -> None:
    """R5 #3: it was queued to nobody and ended `done`, 0 sent, with no word to its author."""
    acme = await platform.tenant("acc-list-gone", "news", "other", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    at = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
    submitted = await acme.http.post("/v1/campaigns/c1/submission", json={"send_at": at.isoformat()})
    assert submitted.json()["status"] == "scheduled"
    await platform.delete_list("acc-list-gone", "news")
    doc = await eventually(lambda: acme.http.get("/v1/campaigns/c1"), lambda r: r.json()["status"] == "draft",
                           within=30, what="returned to draft at its time")
    returned = doc.json()["returned"]
    assert returned["reason"] == "list_deleted" and "'news' was deleted" in returned["detail"]
    assert datetime.fromisoformat(returned["at"]) >= at
    events = await platform.events()
    assert [e.payload.reason for e in of(events, CampaignReturned, "acc-list-gone", "c1")] == ["list_deleted"]
    assert of(events, CampaignQueued, "acc-list-gone", "c1") == []
    # Pointed at a live list, it is submitted again and goes.
    assert (await acme.http.put("/v1/campaigns/c1", json=draft(list_id="other"))).status_code == 200
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()["status"] == "scheduled"
    await eventually(lambda: acme.http.get("/v1/campaigns/c1"), lambda r: r.json()["status"] == "queued",
                     within=30, what="queued to the live list")


async def test_send_times_a_year_ahead_or_with_both_an_offset_and_a_zone_are_refused(platform: Platform) -> None:
    """R5 #7: the year 2999 was scheduled, and a zone given with an offset silently dropped."""
    acme = await platform.tenant("acc-bounds", "news", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    far = await acme.http.post("/v1/campaigns/c1/submission", json={"send_at": "2999-01-01T09:00:00",
                                                                     "time_zone": "Europe/Riga"})
    assert far.status_code == 422 and far.json()["type"].endswith("invalid_schedule")
    assert "365 days" in far.json()["detail"]
    assert [e["location"] for e in far.json()["errors"]] == ["body.send_at"]
    both = await acme.http.post("/v1/campaigns/c1/submission", json={"send_at": "2027-01-05T09:00:00+03:00",
                                                                      "time_zone": "Europe/Riga"})
    assert both.status_code == 422, both.text
    assert [e["location"] for e in both.json()["errors"]] == ["body.send_at", "body.time_zone"]
    assert (await acme.http.get("/v1/campaigns/c1")).json()["status"] == "draft"
    fine = await acme.http.post("/v1/campaigns/c1/submission", json={"send_at": "2027-01-05T09:00:00+03:00"})
    assert fine.status_code == 200 and fine.json()["send_at"] == "2027-01-05T06:00:00+00:00"
