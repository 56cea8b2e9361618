"""Screening reads what any member gets, not only the sample member: every branch of template code, the texts
the code holds, the sender's name, and letters drawn like others; through the API on the real stack, with the
evidence on CampaignSubmitted for staff (PRODUCT.md, "Content and industries"); and every link target, the text CSS
shows and a link's query string."""

from __future__ import annotations

from herald_shared.contract.campaigns import CampaignSubmitted
from tests.conftest import eventually

from .conftest import Platform, draft


async def test_content_only_some_members_get_and_the_sender_name_send_the_campaign_to_review(
        platform: Platform) -> None:
    acme = await platform.tenant("acc-branches", "news", account="paid")
    campaigns = {
        "c1": ({"html_body": '<p>{% if first_name != "Anna" %}{{ "online ca" ~ "sino bonus" }}{% endif %}</p>'},
               ("html_body", "gambling")),
        "c2": ({"subject": '{% if first_name != "Anna" %}{{ "cheap vi" ~ "agra" }}{% endif %} news'},
               ("subject", "pharmacy")),
        "c3": ({"from_name": "Online Casino Bonus"}, ("from_name", "gambling")),
        "c4": ({"text_body": "\u0101trais kred\u012bts".replace("\u0101", "a\u0304").replace("\u012b", "i\u0304")},
               ("text_body", "credit_debt_mortgage")),  # Latvian in decomposed form
        "c5": ({"subject": "Cheap \u1d20\u026a\u1d00\u0262\u0280\u1d00"}, ("subject", "pharmacy")),  # small capitals
        # a form's target, the text CSS shows, a phrase in a link's query string
        "c6": ({"html_body": '<form action="https://hop.clickbank.net/"><button>Order</button></form>'},
               ("link", "affiliate")),
        "c7": ({"html_body": '<style>.deal::after { content:"buy vi\\61 gra" }</style><p class="deal">Today</p>'},
               ("html_body", "pharmacy")),
        "c8": ({"html_body": '<p><a href="https://games.example/?q=online+casino">Play</a></p>',
                "text_body": "Play: https://games.example/"}, ("link", "gambling")),
    }
    for campaign_id, (changes, _) in campaigns.items():
        created = await acme.http.post("/v1/campaigns", json={**draft(**changes), "campaign_id": campaign_id})
        assert created.status_code == 201, created.text
    for campaign_id, (_, (where, category)) in campaigns.items():
        body = (await acme.http.post(f"/v1/campaigns/{campaign_id}/submission", json={})).json()
        assert (body["status"], body["review_reasons"]) == ("in_review", ["flagged"]), (campaign_id, body)
        assert (where, category) in {(m["where"], m["category"]) for m in body["screening"]}, (campaign_id, body)
    events = await eventually(platform.events, lambda evs: len(
        [e for e in evs if isinstance(e, CampaignSubmitted) and e.account_id == "acc-branches"]) == len(campaigns),
        what="CampaignSubmitted of every campaign")
    submitted = {e.payload.campaign_id: e for e in events
                 if isinstance(e, CampaignSubmitted) and e.account_id == "acc-branches"}
    for campaign_id, (_, (where, category)) in campaigns.items():
        payload = submitted[campaign_id].payload
        assert payload.review_required and (where, category) in {(m.where, m.category) for m in payload.screening}
    # An ordinary personalised campaign with conditions is not flagged.
    html = ("<h1>{% if first_name %}Hi {{ first_name }}{% else %}Hello there{% endif %}</h1>"
            '<p>{{ "Our Riga shop" if city == "Riga" else "Our shops" }} are open on Sunday.</p>')
    await acme.http.post("/v1/campaigns", json={**draft(html_body=html), "campaign_id": "clean"})
    clean = (await acme.http.post("/v1/campaigns/clean/submission", json={})).json()
    assert (clean["status"], clean["screening"]) == ("scheduled", []), clean
