"""The campaigns API and delivery together on the real stack: a campaign written, submitted and queued through
the API is sent by delivery to a real SMTP server (the development mailbox), its report counts what delivery
published (a mail scanner's opens and clicks apart), and a cancellation mid-send stops delivery."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy
from typing import Any

from herald_shared.contract.campaigns import CampaignCompleted
from herald_shared.contract.delivery import LinkClicked, MessageSent
from tests.conftest import eventually
from tests.integration.delivery.conftest import (  # noqa: F401 (fixtures)
    World,
    relay,
    start_delivery,
    tracking_paths,
    world,
)

from .conftest import Platform, draft

MEMBERS = 30


async def test_a_campaign_from_the_api_is_sent_reported_and_cancelled_mid_send(
        platform: Platform, start_delivery: Any, relay: Any, world: World) -> None:  # noqa: F811
    await world.open_account("acc-send")
    await world.add_list("acc-send", "news", [(f"s{i:02}", f"m{i:02}@example.org") for i in range(MEMBERS)])
    acme = await platform.tenant("acc-send", account="paid")
    await eventually(lambda: platform.service.service.store.list_info("acc-send", "news"), bool, what="list")
    running = await start_delivery(HERALD_ACCOUNT_RATE=5)  # 5 messages a second: time to cancel in the middle
    html = '<p>Hello {{ first_name | default("friend") }}!</p><p><a href="https://acme.example/sale">Sale</a></p>'
    created = await acme.http.post("/v1/campaigns", json={**draft(html_body=html, preheader="Our sale"),
                                                          "campaign_id": "c1"})
    assert created.status_code == 201, created.text
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()["status"] == "scheduled"
    await eventually(relay.mailed, lambda r: len(r) >= 3, within=60, what="delivery sending the campaign")
    message = message_from_bytes(relay.received[0].data, policy=policy.default)
    assert message["Subject"] == "Our November news"
    html_part = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Hello Ann!" in html_part and "Our sale" in html_part and "Unsubscribe" in html_part
    cancelled = await acme.http.post("/v1/campaigns/c1/cancellation", json={"reason": "wrong price"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    at_cancel = len(relay.recipients())

    async def cancelled_outcomes() -> list[Any]:
        found = await running.service.store.outcomes({"campaign_id": "c1"})
        return [o for o in found if o["outcome"] == "cancelled"]

    # Every message not sent when the cancellation arrived is recorded as cancelled, none dropped silently.
    await eventually(cancelled_outcomes, lambda found: len(found) + len(relay.recipients()) == MEMBERS,
                     within=60, what="the rest recorded as cancelled")
    await asyncio.sleep(1)  # at 5 a second, 5 more would have gone by now
    delivered = len(relay.recipients())
    assert delivered < MEMBERS and delivered <= at_cancel + 5, (at_cancel, delivered)
    sent_events = await world.wait_for(
        lambda es: len([e for e in es if isinstance(e, MessageSent)]) == delivered, "a MessageSent per message")
    assert {e.payload.campaign_id for e in sent_events if isinstance(e, MessageSent)} == {"c1"}
    report = await eventually(lambda: acme.http.get("/v1/campaigns/c1/report"),
                              lambda r: r.json()["sent"] == delivered and r.json()["recipients"] is not None,
                              within=30, what="report counts every send, and delivery's end")
    assert report.json()["status"] == "cancelled" and report.json()["delivered"] == delivered
    # R5 #2: the messages not sent were only in delivery's event.
    assert {k: report.json()[k] for k in ("recipients", "deferred", "skipped", "failed", "cancelled")} == {
        "recipients": MEMBERS, "deferred": 0, "skipped": 0, "failed": 0, "cancelled": MEMBERS - delivered}
    # A campaign delivery finishes is done, with its counts on CampaignCompleted.
    await acme.http.post("/v1/campaigns", json={**draft(subject="Second"), "campaign_id": "c2",
                                                "segment": {}})
    assert (await acme.http.post("/v1/campaigns/c2/submission", json={})).status_code == 200
    done = await eventually(lambda: acme.http.get("/v1/campaigns/c2/report"),
                            lambda r: r.json()["status"] == "done", within=60, what="the second campaign done")
    assert done.json()["sent"] == MEMBERS
    [completed] = [e for e in await platform.events() if isinstance(e, CampaignCompleted)]
    assert completed.model_dump()["payload"] == {"campaign_id": "c2", "recipients": MEMBERS, "sent": MEMBERS,
                                                 "bounced": 0, "failed": 0, "skipped": 0, "cancelled": 0}
    assert {k: done.json()[k] for k in ("recipients", "skipped", "failed", "cancelled")} == {
        "recipients": MEMBERS, "skipped": 0, "failed": 0, "cancelled": 0}
    assert (await acme.http.get("/v1/campaigns/c1")).json()["status"] == "cancelled"



async def test_a_mail_scanners_click_is_marked_and_the_report_counts_only_the_readers(
        platform: Platform, start_delivery: Any, relay: Any, world: World) -> None:  # noqa: F811
    """Issue 20: a scanner following the same message's link gets the same redirect, but its LinkClicked is
    marked `automated` and the report counts it apart, so it neither inflates clicks nor takes the reader's
    first click of the message."""
    await world.open_account("acc-scan")
    await world.add_list("acc-scan", "news", [("s1", "reader@example.org")])
    acme = await platform.tenant("acc-scan", account="paid")
    await eventually(lambda: platform.service.service.store.list_info("acc-scan", "news"), bool, what="list")
    running = await start_delivery()
    html = '<p>Hello!</p><p><a href="https://acme.example/sale">Sale</a></p>'
    created = await acme.http.post("/v1/campaigns", json={**draft(html_body=html), "campaign_id": "c1"})
    assert created.status_code == 201, created.text
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).status_code == 200
    await eventually(relay.mailed, lambda r: len(r) == 1, within=60, what="delivery sending the campaign")
    pixel, [click] = tracking_paths(relay.received[0].data)
    scanner = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Proofpoint URL Defense"}
    reader = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}
    # The scanner comes first, as it does: at delivery, before the reader.
    for headers in (scanner, reader):
        assert (await running.http.get(pixel, headers=headers)).status_code == 200
        redirect = await running.http.get(click, headers=headers)
        assert redirect.status_code == 302 and redirect.headers["location"] == "https://acme.example/sale"
    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, LinkClicked)]) == 2, "two clicks")
    clicks = [e.payload for e in events if isinstance(e, LinkClicked)]
    assert [(c.automated, c.automated_reason) for c in clicks] == [(True, "scanner:proofpoint"), (False, None)]
    assert clicks[0].message_id == clicks[1].message_id

    async def report() -> dict[str, Any]:
        return (await acme.http.get("/v1/campaigns/c1/report")).json()  # type: ignore[no-any-return]

    counted = await eventually(report, lambda r: r["clicks"]["automated"] == 1 and r["clicks"]["total"] == 1
                               and r["opens"]["automated"] == 1 and r["opens"]["total"] == 1,
                               what="the report counting both hits")
    # The reader's, placed as delivery placed it: a phone, at an address no GeoIP database places (loopback).
    assert counted["opens"] == {"unique": 1, "total": 1, "automated": 1, "by_country": {"unknown": 1},
                                "by_device": {"mobile": 1}}
    assert counted["clicks"] == {"unique": 1, "total": 1, "automated": 1, "by_country": {"unknown": 1},
                                 "by_device": {"mobile": 1},
                                 "per_link": [{"link_index": 0, "url": "https://acme.example/sale", "clicks": 1}]}
