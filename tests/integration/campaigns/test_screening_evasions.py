"""Screening at submission through the API on the real stack (PRODUCT.md, "Content and industries"): a link to a
betting host under a neutral text, with the author's own text part, goes to staff review with the match, where
before it was scheduled (from a review); a clean campaign of the same account is still scheduled."""

from __future__ import annotations

from herald_shared.contract.campaigns import CampaignSubmitted
from tests.conftest import eventually

from .conftest import Platform, draft

LINKED = {
    "bet365": ('<p><a href="https://www.bet365.com/">Claim your welcome gift</a></p>',
               ("gambling", "https://www.bet365.com/", "link", "bet365.com")),
    "casino-host": ('<p><a href="https://online-casino.example/">Play tonight</a></p>',
                    ("gambling", "https://online-casino.example/", "link", "online casino*")),
}


async def test_a_neutral_link_to_a_betting_host_with_an_authored_text_part_goes_to_review(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-evasions", "news", account="paid")
    bodies = {campaign_id: html for campaign_id, (html, _) in LINKED.items()}
    bodies["clean"] = '<p><a href="https://shop.acme.example/">Claim your welcome gift</a></p>'
    for campaign_id, html_body in bodies.items():
        created = await acme.http.post("/v1/campaigns", json={
            **draft(html_body=html_body, subject="Your welcome gift", text_body="Claim your welcome gift today"),
            "campaign_id": campaign_id})
        assert created.status_code == 201, created.text
    for campaign_id, (_, match) in LINKED.items():
        body = (await acme.http.post(f"/v1/campaigns/{campaign_id}/submission", json={})).json()
        assert body["status"] == "in_review" and body["review_reasons"] == ["flagged"], body
        assert [(m["category"], m["matched"], m["where"], m["rule"]) for m in body["screening"]] == [match]
    clean = (await acme.http.post("/v1/campaigns/clean/submission", json={})).json()
    assert (clean["status"], clean["screening"]) == ("scheduled", []), clean
    queue = (await platform.staff().get("/v1/staff/review-queue?limit=50")).json()["items"]
    assert {item["campaign_id"] for item in queue if item["account_id"] == "acc-evasions"} == set(LINKED)
    events = await eventually(platform.events, lambda evs: {
        e.payload.campaign_id for e in evs if isinstance(e, CampaignSubmitted) and e.account_id == "acc-evasions"}
        == {*LINKED, "clean"}, what="CampaignSubmitted of all three")
    assert {e.payload.campaign_id for e in events if isinstance(e, CampaignSubmitted)
            and e.account_id == "acc-evasions" and e.payload.review_required} == set(LINKED)
