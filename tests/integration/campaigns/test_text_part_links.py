"""The derived text part keeps its links, on the real stack: a campaign written through the API with links only in
its HTML is previewed, test-sent and sent by delivery to a real SMTP server; every part shows each link's address,
a real send's text part carries the same tracking links as its HTML part, and a click from the text part is
counted for that link, which the report names by its URL."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from herald_shared.contract.delivery import LinkClicked
from tests.conftest import eventually
from tests.integration.delivery.conftest import (  # noqa: F401 (fixtures)
    World,
    relay,
    start_delivery,
    tracking_paths,
    world,
)

from .conftest import Platform, draft

HTML = ('<p>Hello {{ first_name | default("friend") }}!</p>'
        '<p><a href="https://acme.example/sale">Sale</a> or <a href="https://acme.example/blog">our blog</a></p>'
        '<p><a href="{{ unsubscribe_url }}">Leave the list</a></p>')


def parts(data: bytes) -> tuple[EmailMessage, str, str]:
    message = message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return message, text.get_content(), html.get_content()


async def test_a_click_in_the_text_part_counts_for_the_same_link_as_in_the_html_part(
        platform: Platform, start_delivery: Any, relay: Any, world: World) -> None:  # noqa: F811
    await world.open_account("acc-text")
    await world.add_list("acc-text", "news", [("s1", "reader@example.org")])
    acme = await platform.tenant("acc-text", account="paid")
    await eventually(lambda: platform.service.service.store.list_info("acc-text", "news"), bool, what="list")
    running = await start_delivery()
    created = await acme.http.post("/v1/campaigns", json={**draft(html_body=HTML), "campaign_id": "c1",
                                                          "segment": {}})
    assert created.status_code == 201, created.text
    derived = created.json()["content"]["text_body"]
    assert "Sale <https://acme.example/sale> or our blog <https://acme.example/blog>" in derived
    assert "Leave the list <{{ unsubscribe_url }}>" in derived

    # The preview and a test send show the text part a real send gets, its links as written.
    preview = (await acme.http.post("/v1/campaigns/c1/preview", json={"values": {"first_name": "Anna"}})).json()
    assert "Sale <https://acme.example/sale> or our blog <https://acme.example/blog>" in preview["text_body"]
    tested = await acme.http.post("/v1/campaigns/c1/tests", json={"recipients": ["me@acme.example"],
                                                                  "values": {"first_name": "Anna"}})
    assert tested.status_code == 202, tested.text
    await eventually(relay.mailed, lambda r: "me@acme.example" in r, within=60, what="the test send")
    test_message, test_text, _ = parts(relay.received[0].data)
    assert test_message["X-Herald-Test"] == "yes"
    shown = preview["text_body"].split("Leave the list")[0]
    assert test_text.replace("\r\n", "\n").startswith(shown) and "/t/c/" not in test_text

    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).status_code == 200
    await eventually(relay.mailed, lambda r: "reader@example.org" in r, within=60, what="the campaign sent")
    [sent] = [r for r in relay.received if r.recipient == "reader@example.org"]
    message, text, _ = parts(sent.data)
    _, html_clicks = tracking_paths(sent.data)
    text_clicks = [part.split(">")[0] for part in text.split("<http://track.test")[1:]]
    assert len(html_clicks) == 2 and text_clicks == html_clicks  # the same tracked link, the same index
    assert "Sale <http://track.test/t/c/" in text and "https://acme.example/" not in text
    # The unsubscribe link of the content and of the footer are this message's, as in List-Unsubscribe.
    unsubscribe = str(message["List-Unsubscribe"]).split(",")[0].strip(" <>")
    assert f"Leave the list <{unsubscribe}>" in text and f"Unsubscribe with one click: {unsubscribe}" in text
    assert "Email marketing by Herald" in text

    reader = {"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"}
    redirect = await running.http.get(text_clicks[1], headers=reader)
    assert redirect.status_code == 302 and redirect.headers["location"] == "https://acme.example/blog"
    events = await world.wait_for(lambda es: any(isinstance(e, LinkClicked) for e in es), "the click")
    [click] = [e.payload for e in events if isinstance(e, LinkClicked)]
    assert (click.link_index, str(click.url), click.campaign_id) == (1, "https://acme.example/blog", "c1")
    counted = await eventually(lambda: acme.http.get("/v1/campaigns/c1/report"),
                               lambda r: r.json()["clicks"]["total"] == 1, what="the report counting the click")
    assert counted.json()["clicks"]["per_link"] == [
        {"link_index": 1, "url": "https://acme.example/blog", "clicks": 1}]
