"""Campaign drafts through the API on the real stack: create, read, list, edit, duplicate, delete; targets
checked against the account's lists; one account never sees or changes another's."""

from __future__ import annotations

from herald_shared.contract import parse_event
from herald_shared.contract.campaigns import CampaignCreated, CampaignDeleted, CampaignEdited
from herald_shared.kafka import read_from_start
from tests.conftest import eventually

from .conftest import Platform, draft


async def test_a_draft_is_created_edited_duplicated_listed_and_deleted(platform: Platform) -> None:
    acme = await platform.tenant("acme", "news")
    created = await acme.http.post("/v1/campaigns", json={**draft(segment={"city": "Riga"}), "campaign_id": "c1"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["campaign_id"], body["status"], body["segment"]) == ("c1", "draft", {"city": "Riga"})
    assert "Hello" in body["content"]["text_body"] and "<h1>" not in body["content"]["text_body"]

    edited = await acme.http.put("/v1/campaigns/c1", json=draft(subject="Fresh news", text_body="Plain news"))
    assert edited.status_code == 200, edited.text
    assert (edited.json()["content"]["subject"], edited.json()["content"]["text_body"]) == ("Fresh news",
                                                                                             "Plain news")
    copy = await acme.http.post("/v1/campaigns/c1/duplicate")
    assert copy.status_code == 201 and copy.json()["name"] == "November (copy)"
    assert copy.json()["content"] == edited.json()["content"]

    page = (await acme.http.get("/v1/campaigns", params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"] is not None
    rest = (await acme.http.get("/v1/campaigns", params={"cursor": page["next_cursor"]})).json()
    assert {c["campaign_id"] for c in page["items"] + rest["items"]} == {"c1", copy.json()["campaign_id"]}

    assert (await acme.http.delete("/v1/campaigns/c1")).status_code == 204
    assert (await acme.http.get("/v1/campaigns/c1")).status_code == 404
    assert (await acme.http.put("/v1/campaigns/c1", json=draft())).status_code == 404
    listed = (await acme.http.get("/v1/campaigns")).json()["items"]
    assert [c["campaign_id"] for c in listed] == [copy.json()["campaign_id"]]

    events = [parse_event(r.value) async for batch in read_from_start(
        platform.service.settings, [platform.service.settings.topics("herald.campaigns")]) for r in batch]
    campaign_events = [type(e) for e in events if not type(e).__name__.startswith("SendingDomain")]
    assert campaign_events == [CampaignCreated, CampaignEdited, CampaignCreated, CampaignDeleted]


async def test_the_target_must_be_a_live_list_of_the_account_with_the_segments_fields(platform: Platform) -> None:
    acme = await platform.tenant("acme", "news", "old")
    await platform.delete_list("acme", "old")
    cases = [
        (draft(list_id="nope"), 409, "unknown_list"),
        (draft(list_id="old"), 409, "unknown_list"),
        (draft(segment={"shoe": "42"}), 409, "unknown_field"),
        (draft(from_email="news@acme.test"), 422, "invalid_request"),
        ({**draft(), "html_body": ""}, 422, "invalid_request"),
        ({**draft(), "surprise": 1}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        response = await acme.http.post("/v1/campaigns", json=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith(f"/{code}")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    taken = await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})
    assert taken.status_code == 409 and taken.json()["type"].endswith("/campaign_exists")


async def test_one_account_never_sees_or_changes_anothers_campaigns(platform: Platform) -> None:
    acme = await platform.tenant("acme", "news")
    rival = await platform.tenant("rival", "news")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    # The rival's own list of the same name is not acme's: its campaign with the same id is its own.
    assert (await rival.http.get("/v1/campaigns")).json()["items"] == []
    for response in (await rival.http.get("/v1/campaigns/c1"), await rival.http.put("/v1/campaigns/c1", json=draft()),
                     await rival.http.post("/v1/campaigns/c1/duplicate"),
                     await rival.http.delete("/v1/campaigns/c1")):
        assert response.status_code == 404, response.text
    assert (await acme.http.get("/v1/campaigns/c1")).json()["name"] == "November"
    anonymous = await acme.http.get("/v1/campaigns", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"


async def test_a_problem_in_the_derived_text_part_is_reported_on_the_html_the_author_wrote(
        platform: Platform) -> None:
    acme = await platform.tenant("acme", "news")
    html_body = '<div style="display:none">{% set greeting = "Hi" %}</div><p>{{ greeting }} {{ first_name }}</p>'
    refused = await acme.http.post("/v1/campaigns", json=draft(html_body=html_body))
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["location"] == "body.html_body" and "the text part Herald derives from it" in error["message"]
    written = await acme.http.post("/v1/campaigns", json=draft(html_body=html_body, text_body="Hi {{ first_name }}"))
    assert written.status_code == 201, written.text


async def test_a_from_at_a_mailbox_providers_domain_is_refused_with_where_and_why(platform: Platform) -> None:
    """Mail From gmail.com sent by another platform fails DMARC at receivers: refused when saved, and a draft
    saved before the rule (its event holds such a From) is refused when tested or submitted."""
    acme = await platform.tenant("acme", "news", account="paid")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    for response in (await acme.http.post("/v1/campaigns", json=draft(from_email="news@gmail.com")),
                     await acme.http.put("/v1/campaigns/c1", json=draft(from_email="Shop@Yahoo.com"))):
        assert response.status_code == 422, response.text
        assert response.json()["type"].endswith("/sender_refused")
        (error,) = response.json()["errors"]
        assert error["location"] == "body.from_email" and "mailbox provider" in error["message"]
    await platform.publisher.publish(CampaignCreated(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "old", "name": "Old", "list_id": "news", "content": {
            "subject": "News", "from_name": "Acme", "from_email": "news@gmail.com", "text_body": "News."}}))
    await eventually(lambda: platform.service.service.store.campaign_state("acme", "old"),
                     lambda state: state is not None, what="the old draft projected")
    for response in (await acme.http.post("/v1/campaigns/old/tests", json={"recipients": ["me@acme.example"]}),
                     await acme.http.post("/v1/campaigns/old/submission", json={})):
        assert response.status_code == 422 and response.json()["type"].endswith("/sender_refused"), response.text
    events = [e for e in await platform.events() if not type(e).__name__.startswith("SendingDomain")]
    assert [type(e).__name__ for e in events] == ["CampaignCreated", "CampaignCreated"]  # c1 and old: nothing more
