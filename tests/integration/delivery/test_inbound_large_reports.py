"""A bounce report larger than what the inbound server keeps (Exchange and Gmail return the whole original) is
taken up to MAX_INBOUND_ACCEPTED_BYTES and read by its head, where its status part is: recorded, or dead-lettered
with its head and its size; a larger mail is refused 552 and counted, never gone without a trace."""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib
import pytest

from herald_delivery import metrics
from herald_delivery.inbound import MAX_INBOUND_ACCEPTED_BYTES, MAX_INBOUND_BYTES
from herald_shared.contract.delivery import MessageBounced, MessageSent
from herald_shared.kafka import DLQ_REASON, read_from_start
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import BOUNCE_DOMAIN, World

PADDING = b"x" * 76 + b"\r\n"
DAEMON = "MAILER-DAEMON@mx.example.org"


def inbound(result: str) -> float:
    return metrics.INBOUND.labels(result)._value.get()


def report_returning_the_original(return_path: str, original: bytes, size: int) -> bytes:
    """An RFC 3464 report of a 5.1.1 with the whole original message attached, padded to `size` bytes."""
    head = (f"From: MAILER-DAEMON@mx.example.org\r\nTo: {return_path}\r\nSubject: Undeliverable: Spring sale\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
            "--B\r\nContent-Type: text/plain\r\n\r\nDelivery has failed to these recipients.\r\n"
            "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
            "Final-Recipient: rfc822; someone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 5.1.1 RESOLVER.ADR.RecipientNotFound; not found\r\n"
            "--B\r\nContent-Type: message/rfc822\r\n\r\n").encode() + original.rstrip(b"\r\n") + b"\r\n"
    padding = PADDING * ((size - len(head)) // len(PADDING) + 1)
    return head + padding + b"--B--\r\n"


async def test_a_report_over_the_kept_size_is_taken_and_recorded_by_its_head(
        start_delivery: Any, relay: Any, world: World) -> None:
    running = await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s0", "gone@example.org")])
    await world.publish(campaign_queued("acme", "c1"))
    await world.wait_for(lambda es: any(isinstance(e, MessageSent) for e in es), "sent")
    sent = relay.received[0]
    truncated_before = inbound("truncated")
    report = report_returning_the_original(sent.mail_from, sent.data, 1_100_000)
    assert len(report) > MAX_INBOUND_BYTES
    await aiosmtplib.send(report, sender=DAEMON, recipients=[sent.mail_from], hostname="127.0.0.1",
                          port=running.service.settings.inbound_port, timeout=30)  # 250, or it raises
    events = await world.wait_for(lambda es: any(isinstance(e, MessageBounced) for e in es), "the bounce")
    bounces = [e.payload for e in events if isinstance(e, MessageBounced)]
    assert [(b.bounce_class, b.source, b.subscriber_id) for b in bounces] == [("hard", "dsn", "s0")]
    assert inbound("truncated") - truncated_before == 1


async def test_an_untied_large_mail_is_dead_lettered_by_its_head_and_a_larger_one_refused_and_counted(
        start_delivery: Any, world: World) -> None:
    running = await start_delivery()
    port = running.service.settings.inbound_port
    large = b"From: someone@example.org\r\nSubject: hello\r\n\r\n" + PADDING * 15_000  # 1.17 MB
    await aiosmtplib.send(large, sender="someone@example.org", recipients=[f"b+nothing@{BOUNCE_DOMAIN}"],
                          hostname="127.0.0.1", port=port, timeout=30)

    async def dead_letters() -> list[Any]:
        topic = world.settings.topics("herald.delivery") + ".dlq"
        return [r async for batch in read_from_start(world.settings, [topic]) for r in batch]

    [letter] = await eventually(dead_letters, lambda d: len(d) == 1, what="the dead letter")
    assert len(letter.value) <= MAX_INBOUND_BYTES and letter.value.startswith(b"From: someone@example.org")
    assert f"of {len(large)} bytes are kept" in dict(letter.headers)[DLQ_REASON].decode()

    too_large_before = inbound("too_large")
    huge = b"Subject: report\r\n\r\n" + PADDING * (MAX_INBOUND_ACCEPTED_BYTES // len(PADDING) + 10)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await aiosmtplib.send(huge, sender=DAEMON, recipients=[f"b+m1@{BOUNCE_DOMAIN}"], hostname="127.0.0.1",
                              port=port, timeout=60)
    assert refused.value.code == 552  # at MAIL FROM: aiosmtplib announces SIZE, which the server offers
    assert inbound("too_large") - too_large_before == 1

    # A client that announces no SIZE is refused at the end of DATA, after the whole mail.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies: list[bytes] = []

    async def answered(write: bytes | None) -> None:
        if write is not None:
            writer.write(write)
        while (line := await asyncio.wait_for(reader.readline(), 60))[3:4] == b"-":
            pass
        replies.append(line[:3])

    try:
        await answered(None)
        for command in (b"EHLO big.example", b"MAIL FROM:<>", b"RCPT TO:<b+m1@" + BOUNCE_DOMAIN.encode() + b">",
                        b"DATA"):
            await answered(command + b"\r\n")
        await answered(huge + b".\r\n")
    finally:
        writer.close()
    assert replies == [b"220", b"250", b"250", b"250", b"354", b"552"]
    assert inbound("too_large") - too_large_before == 2
