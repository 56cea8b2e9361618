"""Bounces and complaints mailed to the inbound SMTP server, and tracking hits, on the real stack."""

from __future__ import annotations

import asyncio
import email
import email.policy
from typing import Any

import aiosmtplib
import pytest
from prometheus_client import REGISTRY

from herald_delivery.inbound import MAX_INBOUND_ACCEPTED_BYTES
from herald_shared.contract.delivery import ComplaintReceived, LinkClicked, MessageBounced, MessageOpened, MessageSent
from herald_shared.kafka import DLQ_REASON, read_from_start
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import BOUNCE_DOMAIN, World, dsn, mail_inbound, tracking_paths

HTML = "<p>Hi</p><a href='https://acme.example/sale'>Sale</a> <a href=\"https://acme.example/blog\">Blog</a>"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")


async def sent_campaign(start_delivery: Any, relay: Any, world: World) -> tuple[Any, list[Any]]:
    running = await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "gone@example.org"), ("s2", "angry@example.org")])
    await world.publish(campaign_queued("acme", "c1", html_body=HTML))
    await eventually(relay.mailed, lambda r: len(r) == 2, what="campaign sent")
    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) == 2, "sent")
    return running, [e for e in events if isinstance(e, MessageSent)]


def arf(original: bytes) -> str:
    headers = original.split(b"\r\n\r\n", 1)[0].decode()
    return (f"From: fbl@isp.example\r\nTo: fbl@{BOUNCE_DOMAIN}\r\nSubject: FW: abuse report\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\r\n\r\n"
            "--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
            "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
            "Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\nReporting-MTA: dns; fbl.isp.example\r\n"
            "Arrival-Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\n"
            f"--F\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n\r\n--F--\r\n")


async def test_dsns_mailed_to_the_return_path_become_hard_and_soft_bounces(start_delivery: Any, relay: Any,
                                                                          world: World) -> None:
    running, sent = await sent_campaign(start_delivery, relay, world)
    by_recipient = {r.recipient: r for r in relay.received}
    return_path = by_recipient["gone@example.org"].mail_from
    await mail_inbound(running, return_path, dsn(return_path, "failed", "5.1.1",
                                                 "550 5.1.1 <gone@example.org>: user unknown"))
    await mail_inbound(running, return_path, dsn(return_path, "delayed", "4.4.7", "451 4.4.7 queue delay"))
    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageBounced)]) == 2, "bounces")
    hard, soft = sorted((e for e in events if isinstance(e, MessageBounced)), key=lambda e: e.payload.bounce_class)
    message_id = next(e.payload.message_id for e in sent if e.payload.subscriber_id == "s1")
    assert (hard.payload.bounce_class, hard.payload.source, hard.payload.smtp_code,
            hard.payload.enhanced_status_code, hard.payload.reporting_mta) == ("hard", "dsn", 550, "5.1.1",
                                                                              "mx.example.org")
    assert (hard.payload.message_id, hard.payload.subscriber_id, hard.payload.campaign_id) == (message_id, "s1", "c1")
    assert (soft.payload.bounce_class, soft.payload.enhanced_status_code) == ("soft", "4.4.7")


async def test_an_arf_report_becomes_a_complaint_tied_by_the_quoted_message(start_delivery: Any, relay: Any,
                                                                          world: World) -> None:
    running, _ = await sent_campaign(start_delivery, relay, world)
    original = next(r for r in relay.received if r.recipient == "angry@example.org").data
    await mail_inbound(running, f"fbl@{BOUNCE_DOMAIN}", arf(original), sender="fbl@isp.example")
    events = await world.wait_for(lambda es: any(isinstance(e, ComplaintReceived) for e in es), "complaint")
    complaint = next(e for e in events if isinstance(e, ComplaintReceived)).payload
    assert (complaint.subscriber_id, complaint.campaign_id, complaint.feedback_type,
            complaint.reporting_domain) == ("s2", "c1", "abuse", "fbl.isp.example")
    assert complaint.arrival_date is not None


async def test_mail_that_cannot_be_tied_to_a_message_is_dead_lettered_with_the_reason(
        start_delivery: Any, relay: Any, world: World) -> None:
    running = await start_delivery()
    await mail_inbound(running, f"postmaster@{BOUNCE_DOMAIN}",
                       "From: someone@example.org\r\nSubject: hello\r\n\r\nJust saying hi.\r\n")
    forged = f"b+00000000-0000-0000-0000-000000000000.aaaaaaaaaaaaaaaa@{BOUNCE_DOMAIN}"
    await mail_inbound(running, forged, dsn(forged, "failed", "5.1.1", "550 5.1.1 unknown"))
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await mail_inbound(running, "someone@elsewhere.example", "Subject: x\r\n\r\nx\r\n")

    async def dead_letters() -> list[Any]:
        found = []
        async for records in read_from_start(world.settings, [world.settings.topics("herald.delivery") + ".dlq"]):
            found += records
        return found

    records = await eventually(dead_letters, lambda rs: len(rs) == 2, what="two dead-letter entries")
    reasons = [dict(r.headers)[DLQ_REASON].decode() for r in records]
    assert all("names a message" in reason for reason in reasons), reasons
    assert b"Just saying hi." in records[0].value  # kept byte for byte


async def test_open_pixel_and_click_redirect_record_engagement_and_refuse_forgeries(
        start_delivery: Any, relay: Any, world: World) -> None:
    running, _ = await sent_campaign(start_delivery, relay, world)
    message = email.message_from_bytes(relay.received[0].data, policy=email.policy.default)
    html_part = message.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    pixel = html.split("http://track.test")[-1].split('"')[0]
    clicks = [part.split("'")[0].split('"')[0] for part in html.split("http://track.test")[1:] if
              part.startswith("/t/c/")]
    # A client's own X-Forwarded-For is ignored: only a trusted proxy's (HERALD_FORWARDED_ALLOW_IPS) counts.
    opened = await running.http.get(pixel, headers={"User-Agent": IPHONE, "X-Forwarded-For": "203.0.113.66"})
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    second = await running.http.get(clicks[1], headers={"User-Agent": IPHONE})
    assert second.status_code == 302 and second.headers["location"] == "https://acme.example/blog"
    forged = await running.http.get(clicks[0][:-3] + "abc")
    assert forged.status_code == 404 and "script-src 'none'" in forged.headers["content-security-policy"]
    events = await world.wait_for(lambda es: any(isinstance(e, LinkClicked) for e in es)
                                  and any(isinstance(e, MessageOpened) for e in es), "engagement")
    opened_event = next(e for e in events if isinstance(e, MessageOpened)).payload
    assert opened_event.client.device == "mobile" and opened_event.client.browser == "Mobile Safari"
    assert opened_event.client.ip == "198.51.100.9" and opened_event.campaign_id == "c1"
    click = next(e for e in events if isinstance(e, LinkClicked)).payload
    assert (str(click.url), click.link_index) == ("https://acme.example/blog", 1)
    assert len([e for e in events if isinstance(e, LinkClicked)]) == 1


async def test_a_mail_scanner_gets_the_same_pixel_and_redirect_and_its_hits_are_marked_automated(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Issue 20: prefetches by mail scanners are marked, so they neither inflate reports nor count as a reader."""
    running, _ = await sent_campaign(start_delivery, relay, world)
    pixel, clicks = tracking_paths(relay.received[0].data)
    scanner = {"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"}
    human_open = await running.http.get(pixel, headers={"User-Agent": IPHONE})
    for headers in (scanner, {"User-Agent": ""}):
        scanner_open = await running.http.get(pixel, headers=headers)
        assert (scanner_open.status_code, scanner_open.content, scanner_open.headers["content-type"]) == (
            human_open.status_code, human_open.content, human_open.headers["content-type"])
    # A link checker's HEAD is not answered, and records nothing (the GET after it proves nothing came before).
    assert (await running.http.head(clicks[0], headers=scanner)).status_code == 405
    scanner_click = await running.http.get(clicks[0], headers=scanner)
    human_click = await running.http.get(clicks[0], headers={"User-Agent": IPHONE})
    assert scanner_click.status_code == human_click.status_code == 302
    assert scanner_click.headers["location"] == human_click.headers["location"] == "https://acme.example/sale"

    def engagement(es: list[Any]) -> list[Any]:
        return [e for e in es if isinstance(e, MessageOpened | LinkClicked)]

    events = engagement(await world.wait_for(lambda es: len(engagement(es)) >= 5, "five hits recorded"))
    assert [(type(e).__name__, e.payload.automated, e.payload.automated_reason) for e in events] == [
        ("MessageOpened", False, None), ("MessageOpened", True, "scanner:barracuda"),
        ("MessageOpened", True, "no_user_agent"), ("LinkClicked", True, "scanner:barracuda"),
        ("LinkClicked", False, None)]
    assert len({e.payload.message_id for e in events}) == 1


async def test_the_click_redirect_goes_only_to_a_link_the_campaign_contains(
        start_delivery: Any, relay: Any, world: World) -> None:
    """A token names a link of the campaign by index, never a URL: even a validly signed token cannot make the
    redirect go anywhere else (no open redirect)."""
    running, sent = await sent_campaign(start_delivery, relay, world)
    message = sent[0].payload
    claim = {"a": "acme", "m": message.message_id, "c": "c1", "s": message.subscriber_id}
    sign = running.service.tokens.tracking_token
    for forged in ({**claim, "i": 2}, {**claim, "i": -1}, {**claim, "c": "c2", "i": 0}, {**claim, "a": "rival", "i": 0},
                   {**claim, "i": "https://evil.example/"}):
        refused = await running.http.get(f"/t/c/{sign(forged)}")
        assert refused.status_code == 404 and "location" not in refused.headers, forged
    for index, url in enumerate(("https://acme.example/sale", "https://acme.example/blog")):
        # A URL slipped into the claim is ignored: the redirect goes to the campaign's link of that index.
        found = await running.http.get(f"/t/c/{sign({**claim, 'i': index, 'u': 'https://evil.example/'})}")
        assert found.status_code == 302 and found.headers["location"] == url
    # Recorded in order: had a refused token been recorded, it would be read before these two.
    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, LinkClicked)]) >= 2, "clicks")
    assert sorted(str(e.payload.url) for e in events if isinstance(e, LinkClicked)) == [
        "https://acme.example/blog", "https://acme.example/sale"]


async def test_a_click_on_a_link_the_contract_cannot_hold_still_redirects_and_is_counted_not_recorded(
        start_delivery: Any, relay: Any, world: World) -> None:
    """A campaign link with a port typo (84430) matches the link pattern but is no valid URL for LinkClicked:
    the reader still gets the redirect (it was a 500), the hit is counted as invalid_url, nothing is published."""
    running = await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "reader@example.org")])
    await world.publish(campaign_queued("acme", "c1",
                                        html_body="<p><a href='https://shop.example:84430/sale'>Sale</a></p>"))
    await eventually(relay.mailed, lambda r: len(r) == 1, what="campaign sent")
    _, clicks = tracking_paths(relay.received[0].data)
    before = REGISTRY.get_sample_value("herald_delivery_tracking_total", {"kind": "click", "result": "invalid_url"})
    followed = await running.http.get(clicks[0])
    assert followed.status_code == 302 and followed.headers["location"] == "https://shop.example:84430/sale"
    after = REGISTRY.get_sample_value("herald_delivery_tracking_total", {"kind": "click", "result": "invalid_url"})
    assert (after or 0) == (before or 0) + 1
    assert not [e for e in await world.events() if isinstance(e, LinkClicked)]


async def test_the_inbound_server_bounds_sessions_recipients_size_and_idle_time(start_delivery: Any) -> None:
    """Over TCP to the running inbound server: a third session while two are open is told 421 and closed; an idle
    session is closed after the idle time, and its place is free again; an 11th recipient is refused 452; a message
    over the size limit 552."""
    running = await start_delivery(HERALD_INBOUND_MAX_SESSIONS=2, HERALD_INBOUND_IDLE_SECONDS=1.5)
    port = running.service.settings.inbound_port

    async def session() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return reader, writer, await asyncio.wait_for(reader.readline(), 5)

    first, second = await session(), await session()
    assert first[2].startswith(b"220") and second[2].startswith(b"220")
    reader, writer, greeting = await session()
    assert greeting.startswith(b"421 4.7.0")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at once
    writer.close()
    idle_since = asyncio.get_running_loop().time()
    for reader, writer, _ in (first, second):  # idle: closed by the server (aiosmtpd just closes) after 1.5 s
        assert await asyncio.wait_for(reader.read(), 10) == b"" and reader.at_eof()
        writer.close()
    assert asyncio.get_running_loop().time() - idle_since >= 1.0
    again = await eventually(session, lambda s: s[2].startswith(b"220"), within=5, what="a session accepted again")
    again[1].close()

    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("MAILER-DAEMON@mx.example.org")
        for n in range(10):
            assert (await client.rcpt(f"b+m{n}@{BOUNCE_DOMAIN}"))[0] == 250
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt(f"b+m10@{BOUNCE_DOMAIN}")
        assert refused.value.code == 452
    finally:
        await client.quit()

    # A message over MAX_INBOUND_ACCEPTED_BYTES is refused 552 (at MAIL FROM's SIZE, or at the end of DATA).
    too_big = b"Subject: report\r\n\r\n" + (b"x" * 998 + b"\r\n") * (MAX_INBOUND_ACCEPTED_BYTES // 1000 + 10)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused_size:
        await aiosmtplib.send(too_big, sender="MAILER-DAEMON@mx.example.org", recipients=[f"b+m1@{BOUNCE_DOMAIN}"],
                              hostname="127.0.0.1", port=port, timeout=10)
    assert refused_size.value.code == 552


async def test_an_edge_process_records_opens_clicks_and_bounces_of_what_another_process_sent(
        start_delivery: Any, relay: Any, world: World) -> None:
    """HERALD_RUN_CONSUMERS=false (README, "Processes"): a process with no consumer and no sender serves the
    tracking endpoints and the inbound SMTP server for the messages the sending process sent."""
    _, sent = await sent_campaign(start_delivery, relay, world)
    edge = await start_delivery(HERALD_RUN_CONSUMERS=False)
    assert edge.service._tasks == [] and not edge.service.sender.started
    assert not any(c.started for c in (edge.service.audience, edge.service.confirmations, edge.service.control))
    assert (await edge.http.get("/readyz")).status_code == 200
    gone = next(r for r in relay.received if r.recipient == "gone@example.org")
    pixel, clicks = tracking_paths(gone.data)
    opened = await edge.http.get(pixel, headers={"User-Agent": IPHONE})
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    clicked = await edge.http.get(clicks[0], headers={"User-Agent": IPHONE})
    assert clicked.status_code == 302 and clicked.headers["location"] == "https://acme.example/sale"
    await mail_inbound(edge, gone.mail_from, dsn(gone.mail_from, "failed", "5.1.1",
                                                 "550 5.1.1 <gone@example.org>: user unknown"))
    kinds = (MessageOpened, LinkClicked, MessageBounced)
    events = await world.wait_for(lambda es: all(any(isinstance(e, k) for e in es) for k in kinds),
                                  "the open, the click and the bounce")
    message_id = next(e.payload.message_id for e in sent if e.payload.subscriber_id == "s1")
    for kind in kinds:
        [event] = [e for e in events if isinstance(e, kind)]
        assert (event.payload.message_id, event.payload.subscriber_id) == (message_id, "s1"), kind
