"""Draft → screen → review → schedule → CampaignQueued at its time, through the API on the real stack; staff
review with separate credentials, every staff look audit-logged; tenants never see each other's campaigns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from herald_shared.contract.campaigns import (
    CampaignApproved,
    CampaignQueued,
    CampaignRejected,
    CampaignSubmitted,
    CampaignTestRequested,
    StaffViewed,
)
from tests.conftest import eventually

from .conftest import Platform, draft


def of(events: list[Any], cls: type, campaign_id: str) -> list[Any]:
    return [e for e in events if isinstance(e, cls) and e.payload.campaign_id == campaign_id]


async def test_a_paid_approved_account_schedules_in_its_zone_and_the_campaign_is_queued_at_that_time(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-sched", "news", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    local = at.astimezone(ZoneInfo("Europe/Riga")).replace(tzinfo=None)
    request = uuid.uuid4()
    response = await acme.http.post("/v1/campaigns/c1/submission", headers={"X-Request-ID": str(request)},
                                    json={"send_at": local.isoformat(), "time_zone": "Europe/Riga"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["review_reasons"], body["screening"], body["time_zone"]) == (
        "scheduled", [], [], "Europe/Riga")
    due = datetime.fromisoformat(body["send_at"])
    assert due == at
    events = await eventually(platform.events, lambda evs: of(evs, CampaignQueued, "c1"), within=30,
                              what="CampaignQueued")
    [queued] = of(events, CampaignQueued, "c1")
    assert queued.occurred_at >= due and queued.payload.send_at == due
    # Queued by the scheduler seconds later, out of any request: in the submission's flow, caused by it.
    [submission] = of(events, CampaignSubmitted, "c1")
    assert (submission.correlation_id, queued.correlation_id, queued.causation_id) == (
        request, request, submission.event_id)
    assert queued.payload.content.subject == "Our November news" and queued.payload.review_required is False
    # The event is in Kafka a moment before the read model has folded it.
    await eventually(lambda: acme.http.get("/v1/campaigns/c1"), lambda r: r.json()["status"] == "queued",
                     what="queued in the read model")
    # Submitted twice, edited or deleted once submitted: refused.
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).status_code == 409
    assert (await acme.http.put("/v1/campaigns/c1", json=draft())).status_code == 409
    assert (await acme.http.delete("/v1/campaigns/c1")).status_code == 409


async def test_a_trial_campaign_waits_in_the_staff_queue_and_is_queued_once_approved(platform: Platform) -> None:
    acme = await platform.tenant("acc-trial", "news", account="trial")
    await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})
    body = (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()
    assert (body["status"], body["review_reasons"]) == ("in_review", ["trial"])
    async with platform.staff() as staff:
        # A customer key is not a staff credential, and no credential is none.
        assert (await acme.http.get("/v1/staff/review-queue")).status_code == 401
        queue = await eventually(lambda: staff.get("/v1/staff/review-queue?limit=200"),
                                 lambda r: any(i["account_id"] == "acc-trial" for i in r.json()["items"]),
                                 what="campaign in the review queue")
        [item] = [i for i in queue.json()["items"] if i["account_id"] == "acc-trial"]
        assert (item["campaign_id"], item["review_reasons"]) == ("c1", ["trial"])
        assert (await staff.get("/v1/staff/campaigns/acc-trial/c1")).status_code == 200
        approved = await staff.post("/v1/staff/campaigns/acc-trial/c1/approval", json={"note": "fine"})
        assert approved.status_code == 200 and approved.json()["status"] == "scheduled"
        assert (await staff.post("/v1/staff/campaigns/acc-trial/c1/approval", json={})).status_code == 409
    events = await eventually(platform.events, lambda evs: of(evs, CampaignQueued, "c1") and [
        e for e in of(evs, CampaignQueued, "c1") if e.account_id == "acc-trial"], within=30, what="queued")
    mine = [e for e in events if e.account_id == "acc-trial"]
    assert [type(e).__name__ for e in mine if not isinstance(e, StaffViewed)][-3:] == [
        "CampaignSubmitted", "CampaignApproved", "CampaignQueued"]
    [queued] = of(mine, CampaignQueued, "c1")
    assert queued.payload.review_required is True  # delivery also sees the approval before it
    # In the customer's flow (the submission's request), caused by staff's approval, which has its own flow.
    [submission], [approval] = of(mine, CampaignSubmitted, "c1"), of(mine, CampaignApproved, "c1")
    assert (queued.correlation_id, queued.causation_id) == (submission.correlation_id, approval.event_id)
    assert None not in (submission.correlation_id, approval.correlation_id)
    assert approval.correlation_id != submission.correlation_id
    # Every staff look is in the account's audit log: the queue listing, the campaign, the approval.
    looks = [(e.payload.staff, e.payload.action) for e in of(mine, StaffViewed, "c1")]
    assert ("rita", "review_queue") in looks and ("rita", "campaign") in looks and ("rita", "approve") in looks
    # The refused second approval answered with the campaign's state (409, scheduled): a look, recorded too.
    assert looks.count(("rita", "approve")) == 2
    log = await eventually(lambda: acme.http.get("/v1/staff-access"),
                           lambda r: len(r.json()["items"]) >= 3, what="audit log projected")
    assert {(i["staff"], i["action"]) for i in log.json()["items"]} >= {("rita", "review_queue"),
                                                                        ("rita", "approve")}


async def test_flagged_content_goes_to_review_with_its_evidence_and_a_rejection_reopens_the_draft(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-flag", "news", account="paid")
    html = '<p>Best odds at our online casino: <a href="https://bit.ly/xyz">claim free spins</a></p>'
    await acme.http.post("/v1/campaigns", json={**draft(html_body=html), "campaign_id": "c1"})
    body = (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()
    assert (body["status"], body["review_reasons"]) == ("in_review", ["flagged"])
    categories = {m["category"] for m in body["screening"]}
    assert "gambling" in categories and any(m["where"] == "link" for m in body["screening"])
    async with platform.staff() as staff:
        rejected = await staff.post("/v1/staff/campaigns/acc-flag/c1/rejection",
                                    json={"reasons": ["gambling is prohibited content"]})
        assert rejected.status_code == 200 and rejected.json()["rejection"] == ["gambling is prohibited content"]
    events = await platform.events()
    [submitted] = [e for e in of(events, CampaignSubmitted, "c1") if e.account_id == "acc-flag"]
    assert submitted.payload.screening and [e for e in of(events, CampaignRejected, "c1")
                                            if e.account_id == "acc-flag"]
    assert not [e for e in of(events, CampaignApproved, "c1") if e.account_id == "acc-flag"]
    edited = await acme.http.put("/v1/campaigns/c1", json=draft())
    assert edited.status_code == 200 and edited.json()["status"] == "draft"
    again = (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()
    assert (again["status"], again["screening"]) == ("scheduled", [])


async def test_refused_content_and_templates_answer_422_with_where_and_why(platform: Platform) -> None:
    acme = await platform.tenant("acc-refuse", "news", account="paid")
    hidden = ('<p>News</p><div style="display:none"><a href="{{ unsubscribe_url }}">unsubscribe</a></div>')
    await acme.http.post("/v1/campaigns", json={**draft(html_body=hidden), "campaign_id": "c1"})
    refused = await acme.http.post("/v1/campaigns/c1/submission", json={})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/content_refused")
    assert refused.json()["errors"][0]["location"] == "body.html_body"
    test = await acme.http.post("/v1/campaigns/c1/tests", json={"recipients": ["me@acme.example"]})
    assert test.status_code == 422 and test.json()["type"].endswith("/content_refused"), test.text  # a test too
    assert not [e for e in await platform.events() if isinstance(e, CampaignTestRequested)
                and e.account_id == "acc-refuse"]
    bad = await acme.http.post("/v1/campaigns", json=draft(html_body="<p>{{ shoe_size }}</p>\n<p>{% for %}</p>"))
    assert bad.status_code == 422 and bad.json()["type"].endswith("/invalid_template")
    escape = await acme.http.post("/v1/campaigns", json=draft(
        html_body="{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    assert escape.status_code == 422
    past = await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c2"})
    assert past.status_code == 201
    for schedule in ({"send_at": "2020-01-01T09:00:00", "time_zone": "Europe/Riga"},
                     {"send_at": "2027-03-28T03:30:00", "time_zone": "Europe/Riga"},
                     {"send_at": "2027-03-28T09:00:00", "time_zone": "Mars/Base"}):
        answer = await acme.http.post("/v1/campaigns/c2/submission", json=schedule)
        assert answer.status_code == 422 and answer.json()["type"].endswith("/invalid_schedule"), answer.text


async def test_preview_and_test_send(platform: Platform) -> None:
    acme = await platform.tenant("acc-preview", "news", account="paid")
    html = '<p>Hello {{ first_name | default("friend") }} from {{ city | default("Riga") }}</p>'
    await acme.http.post("/v1/campaigns", json={**draft(html_body=html, preheader="Hi {{ first_name }}"),
                                                "campaign_id": "c1"})
    sample = (await acme.http.post("/v1/campaigns/c1/preview", json={})).json()
    assert "Hello Anna" in sample["html_body"] and sample["preheader"] == "Hi Anna"
    chosen = (await acme.http.post("/v1/campaigns/c1/preview",
                                   json={"values": {"first_name": "<b>Jānis</b>", "city": ""}})).json()
    assert "Hello &lt;b&gt;Jānis&lt;/b&gt; from Riga" in chosen["html_body"]
    assert "Jānis" in chosen["text_body"]
    test = await acme.http.post("/v1/campaigns/c1/tests", json={"recipients": ["me@acme.example"],
                                                                "values": {"first_name": "Me"}})
    assert test.status_code == 202
    test_id = test.json()["test_id"]
    events = await eventually(platform.events, lambda evs: [e for e in evs if isinstance(e, CampaignTestRequested)
                                                            and e.payload.test_id == test_id], what="test event")
    [requested] = [e for e in events if isinstance(e, CampaignTestRequested) and e.payload.test_id == test_id]
    assert requested.payload.recipients == ["me@acme.example"] and requested.payload.sample == {"first_name": "Me"}
    too_many = await acme.http.post("/v1/campaigns/c1/tests",
                                    json={"recipients": [f"a{i}@acme.example" for i in range(6)]})
    assert too_many.status_code == 422
    # Tests are not reviewed: 50 test messages an account a day (one sent above), then 429, nothing published.
    for batch in range(9):
        sent = await acme.http.post("/v1/campaigns/c1/tests",
                                    json={"recipients": [f"b{batch}.{i}@acme.example" for i in range(5)]})
        assert sent.status_code == 202, (batch, sent.text)
    four_left = await acme.http.post("/v1/campaigns/c1/tests",
                                     json={"recipients": [f"c{i}@acme.example" for i in range(5)]})
    assert four_left.status_code == 429 and four_left.json()["type"].endswith("/test_sends_exhausted")
    assert (await acme.http.post("/v1/campaigns/c1/tests",
                                 json={"recipients": [f"d{i}@acme.example" for i in range(4)]})).status_code == 202
    tests = [e for e in await platform.events() if isinstance(e, CampaignTestRequested)]
    assert sum(len(e.payload.recipients) for e in tests) == 50


async def test_no_route_reaches_another_accounts_campaign(platform: Platform) -> None:
    acme = await platform.tenant("acc-iso-a", "news", account="paid")
    other = await platform.tenant("acc-iso-b", "news", account="paid")
    await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})
    for method, path, body in (("get", "/v1/campaigns/c1", None), ("get", "/v1/campaigns/c1/report", None),
                               ("put", "/v1/campaigns/c1", draft()), ("delete", "/v1/campaigns/c1", None),
                               ("post", "/v1/campaigns/c1/duplicate", None),
                               ("post", "/v1/campaigns/c1/preview", {}),
                               ("post", "/v1/campaigns/c1/tests", {"recipients": ["x@b.example"]}),
                               ("post", "/v1/campaigns/c1/submission", {}),
                               ("post", "/v1/campaigns/c1/cancellation", {})):
        answer = await other.http.request(method, path, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await other.http.get("/v1/campaigns")).json()["items"] == []
    assert (await acme.http.get("/v1/campaigns/c1")).json()["status"] == "draft"


def metric(text: str, name: str) -> float:
    """A sample's value in Prometheus text, 0 when absent (`name` with its labels, as exposed)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_states_verdicts_the_review_queue_and_schedule_lag(platform: Platform) -> None:
    acme = await platform.tenant("acc-metrics", "news", account="paid")
    before = (await acme.http.get("/metrics")).text
    html = "<p>Claim your free spins at the online casino tonight</p>"
    await acme.http.post("/v1/campaigns", json={**draft(html_body=html), "campaign_id": "c1"})
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()["status"] == "in_review"
    after = await eventually(lambda: acme.http.get("/metrics"), lambda r: metric(
        r.text, "herald_campaigns_review_queue_depth") >= 1 and metric(
        r.text, "herald_campaigns_review_queue_oldest_seconds") > 0, what="review queue gauges")
    verdict = 'herald_campaigns_screening_verdicts_total{verdict="gambling"}'
    assert metric(after.text, verdict) == metric(before, verdict) + 1
    assert metric(after.text, 'herald_campaigns_by_status{status="in_review"}') >= 1
    async with platform.staff() as staff:
        assert (await staff.post("/v1/staff/campaigns/acc-metrics/c1/approval", json={})).status_code == 200
    # The histogram is process-wide and earlier tests observe lags of their own (a campaign scheduled on a
    # fake clock days back), so this campaign's observation is found as a change since `before`.
    within_a_minute = 'herald_campaigns_schedule_lag_seconds_bucket{le="60.0"}'
    await eventually(lambda: acme.http.get("/metrics"), lambda r: metric(r.text, within_a_minute) > metric(
        before, within_a_minute) and metric(r.text, 'herald_campaigns_by_status{status="queued"}') >= 1,
        what="queued: the lag observed within a minute, the state counted")


async def test_what_template_code_writes_is_screened_at_submission(platform: Platform) -> None:
    """The source is screened, and so is what a member gets: content assembled by template code is flagged,
    a footer hidden for some subscribers only is refused, and a template that cannot render is refused at
    submission rather than skipped for every member at delivery."""
    acme = await platform.tenant("acc-code", "news", account="paid")
    bodies = {
        "c1": "<p>Cheap via{# #}gra, {{ 'online ca' ~ 'sino' }} bonus</p>",
        "c2": '<p>Hello {{ first_name }}</p><div style="display:none">{% if first_name == "zz" %}</div>{% endif %}',
        "c3": '{% set c = "div{display:none}" %}<style>{{ c }}</style><p>Hello</p>',
        "c4": "<p>{{ first_name < 1 }}</p>",
        "c5": "<p><a href='https://shop.example:84430/sale'>Sale</a></p>",  # a link no reader could follow
    }
    for campaign_id, html_body in bodies.items():
        created = await acme.http.post("/v1/campaigns", json={**draft(html_body=html_body, text_body="Hello"),
                                                               "campaign_id": campaign_id})
        assert created.status_code == 201, created.text
    flagged = (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()
    assert (flagged["status"], flagged["review_reasons"]) == ("in_review", ["flagged"]), flagged
    assert {"pharmacy", "gambling"} <= {m["category"] for m in flagged["screening"]}
    for campaign_id, problem in (("c2", "content_refused"), ("c3", "content_refused"), ("c4", "invalid_template"),
                                 ("c5", "invalid_link")):
        refused = await acme.http.post(f"/v1/campaigns/{campaign_id}/submission", json={})
        assert refused.status_code == 422 and refused.json()["type"].endswith(f"/{problem}"), refused.text
        assert (await acme.http.get(f"/v1/campaigns/{campaign_id}")).json()["status"] == "draft"


async def test_staffs_approval_note_reaches_the_customer(platform: Platform) -> None:
    """R3 #5: the note staff write with an approval (a condition of it) is the customer's to read."""
    acme = await platform.tenant("acc-note", "news", account="paid")
    html = "<p>Order your repeat prescription from our online pharmacy.</p>"
    await acme.http.post("/v1/campaigns", json={**draft(html_body=html), "campaign_id": "c1"})
    body = (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()
    assert (body["status"], body["review_reasons"], body["review_note"]) == ("in_review", ["flagged"], None)
    note = "licensed pharmacy, repeat prescriptions only; do not advertise POM"
    async with platform.staff() as staff:
        approved = await staff.post("/v1/staff/campaigns/acc-note/c1/approval", json={"note": note})
        assert approved.status_code == 200 and approved.json()["review_note"] == note
    seen = await acme.http.get("/v1/campaigns/c1")
    assert seen.json()["review_note"] == note
    listed = await acme.http.get("/v1/campaigns")
    assert [i["review_note"] for i in listed.json()["items"] if i["campaign_id"] == "c1"] == [note]


async def test_phrasings_past_the_old_lists_go_to_review(platform: Platform) -> None:
    """R3 #1: an approved paid account's campaign in words the lists did not hold was scheduled unreviewed."""
    acme = await platform.tenant("acc-phrase", "news", account="paid")
    html = "<p>Send us your children's names, birthdays and school photos to enter the draw.</p>"
    await acme.http.post("/v1/campaigns", json={**draft(html_body=html), "campaign_id": "c1"})
    body = (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()
    assert (body["status"], body["review_reasons"]) == ("in_review", ["flagged"])
    assert {m["category"] for m in body["screening"]} == {"children_data"}


async def test_a_link_a_member_value_would_send_elsewhere_and_too_many_links_are_refused_at_save_and_submit(
        platform: Platform) -> None:
    """R3 #2: `href="https://{{ city }}/"` let each member's value choose the link's destination, unscreened.
    And a campaign's tracked links are bounded (campaign_links.MAX_TRACKED_LINKS): delivery rewrites each one."""
    acme = await platform.tenant("acc-links", "news", account="paid")
    hosted = draft(html_body='<p>{{ city }}</p><a href="https://{{ city }}/">Shop</a>')
    refused = await acme.http.post("/v1/campaigns", json={**hosted, "campaign_id": "c1"})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/content_refused"), refused.text
    assert "https://{{ city }}/" in refused.json()["detail"]
    assert [e["location"] for e in refused.json()["errors"]] == ["body.html_body"]
    text = draft(html_body='<a href="https://acme.example/">Shop</a>', text_body="Shop <https://{{ city }}/>")
    assert (await acme.http.post("/v1/campaigns", json={**text, "campaign_id": "c1"})).status_code == 422
    pathed = draft(html_body='<a href="https://acme.example/{{ city }}?who={{ email }}">Yours</a>')
    assert (await acme.http.post("/v1/campaigns", json={**pathed, "campaign_id": "c1"})).status_code == 201
    assert (await acme.http.put("/v1/campaigns/c1", json=hosted)).status_code == 422

    many = "".join(f'<a href="https://acme.example/p/{i}">{i}</a>' for i in range(251))
    over = await acme.http.put("/v1/campaigns/c1", json=draft(html_body=many))
    assert over.status_code == 422, over.text
    assert (over.json()["type"].rsplit("/", 1)[1], over.json()["links"], over.json()["limit"]) == (
        "too_many_links", 251, 250)
    at_bound = "".join(f'<a href="https://acme.example/p/{i}">{i}</a>' for i in range(250))
    assert (await acme.http.put("/v1/campaigns/c1", json=draft(html_body=at_bound))).status_code == 200
    submitted = await acme.http.post("/v1/campaigns/c1/submission", json={})
    assert submitted.status_code == 200 and submitted.json()["status"] == "scheduled", submitted.text
