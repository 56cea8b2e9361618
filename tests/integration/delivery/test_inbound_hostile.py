"""Hostile and odd mail to the inbound SMTP server, over TCP: every mail gets a final answer (250 once it is
recorded or dead-lettered with its reason; never a 451 that the same mail would get again), a report tied to one
of our messages is recorded whatever its oddities, one mail cannot hold the event loop, and a session that only
keeps itself open is closed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from herald_shared.contract.delivery import ComplaintReceived, MessageBounced
from herald_shared.kafka import DLQ_REASON, read_from_start
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import BOUNCE_DOMAIN, World, dsn

DOMAIN = BOUNCE_DOMAIN.encode()


async def smtp(port: int, mail_from: bytes, recipients: list[bytes], body: bytes) -> list[bytes]:
    """One raw SMTP transaction; every reply line read (the last is DATA's, or where it stopped)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies: list[bytes] = []

    async def reply() -> bytes:
        while True:
            line = await asyncio.wait_for(reader.readline(), 30)
            replies.append(line.rstrip())
            if not line or line[3:4] != b"-":
                return line

    try:
        await reply()
        for command in (b"EHLO hostile.example", b"MAIL FROM:<" + mail_from + b">",
                        *(b"RCPT TO:<" + r + b">" for r in recipients), b"DATA"):
            writer.write(command + b"\r\n")
            await reply()
        writer.write(body + b"\r\n.\r\n")
        await reply()
        writer.write(b"QUIT\r\n")
        await reply()
    finally:
        writer.close()
    return replies


def data_reply(replies: list[bytes]) -> bytes:
    return next(r for r in reversed(replies) if not r.startswith(b"221"))


async def dead_letters(world: World) -> list[Any]:
    return [r async for batch in read_from_start(world.settings, [world.settings.topics("herald.delivery") + ".dlq"])
            for r in batch]


async def test_odd_reports_tied_to_our_messages_are_recorded(start_delivery: Any, relay: Any, world: World) -> None:
    running = await start_delivery()
    port = running.service.settings.inbound_port
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"u{i}@example.org") for i in range(5)])
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(relay.mailed, lambda r: len(r) == 5, what="campaign sent")
    path = {r.recipient: r.mail_from.encode() for r in relay.received}

    no_mta = dsn(path["u0@example.org"].decode(), "failed", "5.1.1", "550 5.1.1 unknown").encode()
    no_mta = no_mta.replace(b"Reporting-MTA: dns; mx.example.org", b"Reporting-MTA: dns;")
    unknown_charset = (b"From: MAILER-DAEMON@mx.example.org\r\nSubject: failure notice\r\nMIME-Version: 1.0\r\n"
                       b"Content-Type: text/plain; charset=unknown-8bit\r\n\r\n"
                       b"<u1@example.org>:\r\n550 5.1.1 user unknown\xff\r\n")
    depth = 3000
    nested = b"Subject: nested\r\nMIME-Version: 1.0\r\n" + b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
    nested += b"Content-Type: text/plain\r\n\r\n550 5.1.1 user unknown\r\n" + b"".join(
        b"--b%d--\r\n" % i for i in reversed(range(depth)))
    arf = (b"From: fbl@isp.example\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
           b"--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n%s\r\n--F--\r\n")
    far_date = arf % b"Arrival-Date: Fri, 31 Dec 9999 23:59:59 -1200\r\nReporting-MTA: dns; fbl.isp.example\r\n"
    for mail_from, recipient, body in ((b"", "u0", no_mta), (b"", "u1", unknown_charset), (b"", "u2", nested),
                                       (b"fbl@isp.example", "u3", far_date),
                                       (b"fbl@isp\xff.example", "u4", arf % b"")):
        replies = await smtp(port, mail_from, [path[f"{recipient}@example.org"]], body)
        assert data_reply(replies).startswith(b"250"), (recipient, replies)

    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageBounced | ComplaintReceived)])
                                  == 5, "five reports recorded")
    by_subscriber = {e.payload.subscriber_id: e for e in events if isinstance(e, MessageBounced | ComplaintReceived)}
    assert isinstance(by_subscriber["s0"], MessageBounced) and by_subscriber["s0"].payload.reporting_mta is None
    assert by_subscriber["s0"].payload.bounce_class == "hard"
    assert isinstance(by_subscriber["s1"], MessageBounced) and by_subscriber["s1"].payload.bounce_class == "hard"
    assert isinstance(by_subscriber["s2"], MessageBounced)  # nested too deep to read: recorded, undetermined
    assert by_subscriber["s2"].payload.bounce_class == "undetermined"
    far, unnamed = by_subscriber["s3"], by_subscriber["s4"]
    assert isinstance(far, ComplaintReceived) and far.payload.arrival_date is None
    assert far.payload.reporting_domain == "fbl.isp.example"
    assert isinstance(unnamed, ComplaintReceived) and unnamed.payload.reporting_domain == "unknown"
    assert await dead_letters(world) == []


async def test_mail_that_cannot_be_read_is_answered_and_dead_lettered_and_cannot_hold_the_loop(
        start_delivery: Any, world: World) -> None:
    running = await start_delivery()
    port = running.service.settings.inbound_port
    postmaster = b"postmaster@" + DOMAIN

    # HTML of 400 KB of "<" took ~40 s of the event loop (a quadratic tag pattern); another session's greeting
    # waited as long. Now both are prompt.
    html = b"Subject: x\r\nContent-Type: text/html\r\n\r\n" + (b"<" * 998 + b"\r\n") * 400
    hostile = asyncio.create_task(smtp(port, b"x@sender.example", [postmaster], html))
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    greeting = await asyncio.wait_for(reader.readline(), 30)
    greeted_after = time.monotonic() - started
    writer.close()
    assert greeting.startswith(b"220") and data_reply(await hostile).startswith(b"250")
    assert greeted_after < 10, f"another session waited {greeted_after:.1f} s for its greeting"

    # A recipient with a byte that is not UTF-8 (SMTPUTF8 passes it on), and a header of ~790 KB that
    # becomes the reason: both were answered 451 forever, the dead-letter entry failing to encode or to fit.
    odd_recipient = await smtp(port, b"x@sender.example", [b"b+\xff.aaaaaaaaaaaaaaaa@" + DOMAIN],
                               b"Subject: x\r\n\r\nx")
    charset = b"".join(b' charset*%d="%s";\r\n' % (i, b"a" * 900) for i in range(880))
    huge = await smtp(port, b"x@sender.example", [postmaster],
                      b"Subject: x\r\nContent-Type: text/plain;\r\n" + charset + b" format=flowed\r\n\r\nhello")
    assert data_reply(odd_recipient).startswith(b"250") and data_reply(huge).startswith(b"250"), (odd_recipient, huge)
    letters = await eventually(lambda: dead_letters(world), lambda d: len(d) == 3, what="three dead letters")
    reasons = [dict(letter.headers)[DLQ_REASON].decode() for letter in letters]
    assert all(0 < len(reason) <= 2000 for reason in reasons), [len(r) for r in reasons]


async def test_a_session_that_only_keeps_itself_open_is_closed(start_delivery: Any) -> None:
    running = await start_delivery()
    reader, writer = await asyncio.open_connection("127.0.0.1", running.service.settings.inbound_port)
    try:
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220")
        answers = []
        for _ in range(21):
            writer.write(b"NOOP\r\n")
            answers.append(await asyncio.wait_for(reader.readline(), 5))
        assert answers[:20] == [answers[0]] * 20 and answers[0].startswith(b"250")
        assert answers[20].startswith(b"421")
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


async def test_a_slow_peer_is_not_cut_off_in_the_middle_of_its_data(start_delivery: Any, world: World) -> None:
    """The idle time is per read: DATA arriving a line every half second, for longer than the idle time, is
    read to its end and answered."""
    running = await start_delivery(HERALD_INBOUND_IDLE_SECONDS=1.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.service.settings.inbound_port)
    try:
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220")
        for command in (b"HELO slow.example", b"MAIL FROM:<x@sender.example>", b"RCPT TO:<postmaster@" + DOMAIN + b">",
                        b"DATA"):
            writer.write(command + b"\r\n")
            assert (await asyncio.wait_for(reader.readline(), 5))[:1] in (b"2", b"3")
        for line in (b"Subject: slow", b"", b"one", b"two", b"three", b"four", b"five", b"six"):
            writer.write(line + b"\r\n")
            await asyncio.sleep(0.5)  # 4 s in all, the idle time 1.5 s
        writer.write(b".\r\n")
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"250")
    finally:
        writer.close()
    assert len(await dead_letters(world)) == 1  # not tied to a message: kept with the reason
