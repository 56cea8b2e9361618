"""Screening at submission through the API on the real stack (PRODUCT.md, "Every message"): ordinary designs (a
hero scrim, Beefree's stock CSS) are scheduled with nothing to say, while small variations of hiding the footer
(a zoom, an overlay inside an element left open) answer 422 content_refused, for a test send too, and never reach
herald.campaigns."""

from __future__ import annotations

from herald_shared.contract.campaigns import CampaignSubmitted, CampaignTestRequested
from tests.conftest import eventually

from .conftest import Platform, draft

HERO = ("<style>.hero{position:relative}.hero .scrim{position:absolute;inset:0;background:rgba(0,0,0,.35)}</style>"
        "<div class='hero'><img src='https://cdn.acme.example/hero.jpg' width='600' alt='Autumn'>"
        "<div class='scrim'></div><h1 style='position:absolute;bottom:20px;left:20px;color:#fff'>Autumn sale</h1>"
        "</div><div style='position:relative'><img src='https://cdn.acme.example/card.jpg' style='position:absolute;"
        "top:0;left:0;width:100%;height:100%;object-fit:cover'></div><p>Hello {{ first_name }}</p>")
BEEFREE = ("<!DOCTYPE html><html><head><style>* { box-sizing:border-box; } body { margin:0; padding:0; }"
           ".desktop_hide, .desktop_hide table { mso-hide:all; display:none; max-height:0px; overflow:hidden; }"
           ".image_block img+div { display:none; }</style></head><body><table class='nl-container' width='100%'>"
           "<tr><td><table class='image_block block-1' width='100%'><tr><td class='pad'><div align='center'>"
           "<img src='https://cdn.acme.example/hero.png' width='600' alt='Rye'></div></td></tr></table>"
           "<p>Rye season is here.</p></td></tr></table></body></html>")
REFUSED = {
    "zoomed": ("<p>News</p><div style='zoom:0.1'><p>Hello</p>", "zoom:0.1"),
    "covered": ("<div style='position:relative'><p>News</p><div style='position:absolute;inset:0;"
                "background:#ffffff'></div>", "position:absolute over the whole page"),
}


async def test_ordinary_designs_are_scheduled_and_variations_of_hiding_refused(platform: Platform) -> None:
    acme = await platform.tenant("acc-designs", "news", account="paid")
    bodies = {"hero": HERO, "beefree": BEEFREE, **{campaign_id: html for campaign_id, (html, _) in REFUSED.items()}}
    for campaign_id, html_body in bodies.items():
        created = await acme.http.post("/v1/campaigns", json={**draft(html_body=html_body), "campaign_id": campaign_id})
        assert created.status_code == 201, created.text
    for campaign_id in ("hero", "beefree"):
        body = (await acme.http.post(f"/v1/campaigns/{campaign_id}/submission", json={})).json()
        assert (body["status"], body["screening"]) == ("scheduled", []), (campaign_id, body)
    for campaign_id, (_, what) in REFUSED.items():
        for route in ("submission", "tests"):
            answer = await acme.http.post(f"/v1/campaigns/{campaign_id}/{route}",
                                          json={"recipients": ["me@acme.example"]} if route == "tests" else {})
            assert answer.status_code == 422 and answer.json()["type"].endswith("/content_refused"), answer.text
            assert what in answer.text, answer.text
        assert (await acme.http.get(f"/v1/campaigns/{campaign_id}")).json()["status"] == "draft"
    events = await eventually(platform.events, lambda evs: {
        e.payload.campaign_id for e in evs if isinstance(e, CampaignSubmitted) and e.account_id == "acc-designs"}
        == {"hero", "beefree"}, what="CampaignSubmitted of both designs")
    assert not [e for e in events if isinstance(e, CampaignSubmitted) and e.account_id == "acc-designs"
                and e.payload.review_required]
    assert not [e for e in events if isinstance(e, CampaignTestRequested) and e.account_id == "acc-designs"]
