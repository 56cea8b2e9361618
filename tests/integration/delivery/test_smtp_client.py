"""Herald's SMTP client (herald_delivery.smtp) over TCP: against the aiosmtpd relay of the delivery tests, with
and without PIPELINING, and against a scripted relay that answers byte by byte what a test tells it (greetings
refused, multi-line and malformed replies, a relay that never answers, one that closes mid-transaction)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from herald_delivery.smtp import RelayConfig, RelayConnection, _transparent

from .conftest import RelayHandler, Script

MESSAGE = (b"From: a@herald.example\r\nTo: r@example.org\r\nSubject: dots\r\n\r\n"
           b".leading dot\r\nmiddle\r\n..two dots\r\n.\r\nend\r\n")


def config(port: int, **overrides: Any) -> RelayConfig:
    return RelayConfig(**{"host": "127.0.0.1", "port": port, "helo_name": "herald.test", "timeout": 2.0, **overrides})


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
async def test_messages_arrive_unchanged_and_refusals_keep_the_session(relay: RelayHandler, pipelining: bool) -> None:
    relay.behaviour.pipelining = pipelining
    relay.behaviour.script = {"unknown@example.org": [("rcpt", "550 5.1.1 <unknown@example.org>: user unknown")],
                              "full@example.org": [("data", "452 4.2.2 Mailbox full")]}
    connection = RelayConnection(config(relay.port))  # type: ignore[attr-defined]
    try:
        sent = await connection.send("bounce+1@herald.example", "r@example.org", MESSAGE)
        unknown = await connection.send("bounce+2@herald.example", "unknown@example.org", MESSAGE)
        full = await connection.send("bounce+3@herald.example", "full@example.org", MESSAGE)
        again = await connection.send("bounce+4@herald.example", "r2@example.org", MESSAGE)
    finally:
        await connection.close(quit_politely=True)
    assert (sent.code, sent.stage) == (250, "data") and sent.text.startswith("2.0.0")
    assert (unknown.code, unknown.stage, unknown.enhanced_status) == (550, "rcpt", "5.1.1")
    assert (full.code, full.stage, full.text) == (452, "data", "4.2.2 Mailbox full")
    assert again.code == 250
    # Transparency undone by the relay: the content arrives exactly as rendered, leading dots included.
    assert [(r.mail_from, r.recipient, r.data) for r in relay.received] == [
        ("bounce+1@herald.example", "r@example.org", MESSAGE), ("bounce+4@herald.example", "r2@example.org", MESSAGE)]


async def test_a_dropped_connection_is_a_failure_and_the_next_message_reconnects(relay: RelayHandler) -> None:
    relay.behaviour.script = {"flaky@example.org": [("data", "drop")]}
    connection = RelayConnection(config(relay.port))  # type: ignore[attr-defined]
    try:
        dropped = await connection.send("b@herald.example", "flaky@example.org", MESSAGE)
        after = await connection.send("b@herald.example", "flaky@example.org", MESSAGE)
    finally:
        await connection.close()
    # aiosmtpd writes its 421 before closing, or the close arrives first: either way not accepted.
    assert dropped.code in (None, 421) and dropped.stage in ("connect", "data")
    assert after.code == 250 and relay.recipients() == ["flaky@example.org"]


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A relay's greeting and its answer to EHLO, offering PIPELINING."""
    writer.write(b"220 relay.test\r\n")
    await lines(reader, 1)
    writer.write(b"250-relay.test\r\n250 PIPELINING\r\n")


async def lines(reader: asyncio.StreamReader, n: int) -> list[bytes]:
    return [(await reader.readuntil(b"\n")).rstrip(b"\r\n") for _ in range(n)]


async def read_data(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n.\r\n")


async def test_pipelined_commands_arrive_before_any_reply_and_multiline_replies_are_joined(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    seen: list[list[bytes]] = []
    data: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220-relay.test ESMTP\r\n220 welcome\r\n")
        await lines(reader, 1)
        writer.write(b"250-relay.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        # No reply is written until all three commands are here: a client that waited would time out.
        seen.append(await asyncio.wait_for(lines(reader, 3), 1.0))
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n")
        data.append(await read_data(reader))
        writer.write(b"250-2.0.0 queued as 1\r\n250 2.0.0 and a second line\r\n")
        await lines(reader, 1)  # QUIT
        writer.write(b"221 bye\r\n")

    connection = RelayConnection(config(await scripted(relay)))
    reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    await connection.close(quit_politely=True)
    assert seen == [[b"MAIL FROM:<b@herald.example>", b"RCPT TO:<r@example.org>", b"DATA"]]
    assert (reply.code, reply.text) == (250, "2.0.0 queued as 1\n2.0.0 and a second line")
    assert data == [_transparent(MESSAGE) + b".\r\n"]


async def test_a_refused_mail_from_is_the_senders_and_the_session_is_reset(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    after: list[list[bytes]] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer)
        await lines(reader, 3)
        writer.write(b"550 5.7.1 sender rejected\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n")
        after.append(await lines(reader, 1))
        writer.write(b"250 reset\r\n")
        await asyncio.sleep(10)

    connection = RelayConnection(config(await scripted(relay)))
    reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    await connection.close()
    assert (reply.code, reply.stage, reply.text) == (550, "mail", "5.7.1 sender rejected")
    assert after == [[b"RSET"]]


@pytest.mark.parametrize(("greeting", "ehlo", "expected"), [
    (b"554 5.3.2 not accepting\r\n", b"", "refused the session: 554"),
    (b"hello there\r\n", b"", "malformed reply"),
    (b"220 " + b"x" * 1_100_000 + b"\r\n", b"", "more than 1000000 octets"),  # a long one is cut (its code kept)
    (b"220 relay\r\n", b"250-relay\r\n" * 100_000 + b"250 end\r\n", "more than 1000000 octets"),
    (b"220 relay\r\n", None, "closed the connection"),
    (b"", b"", "TimeoutError"),
], ids=["greeting-refused", "garbage", "overlong-line", "endless-reply", "closed", "silent"])
async def test_a_relay_that_breaks_the_protocol_defers_the_message(
        scripted: Callable[[Script], Awaitable[int]], greeting: bytes, ehlo: bytes | None, expected: str) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await lines(reader, 1)
        if ehlo is None:
            return  # closes
        writer.write(ehlo)
        await asyncio.sleep(10)

    # 0.5 s for the silent relay to time out; the others' megabyte of reply is read within a generous 10 s
    connection = RelayConnection(config(await scripted(relay), timeout=0.5 if expected == "TimeoutError" else 10))
    reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    assert reply.code is None and reply.stage == "connect" and expected in reply.text, reply.text


async def test_421_mid_pipeline_closes_and_the_next_message_reconnects_and_helo_is_the_fallback(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    connections = 0

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.write(b"220 relay.test\r\n")
        if connections == 1:
            await lines(reader, 1)
            writer.write(b"250-relay.test\r\n250 PIPELINING\r\n")
            await lines(reader, 3)
            writer.write(b"250 ok\r\n421 4.3.2 shutting down\r\n")
            return
        assert await lines(reader, 1) == [b"EHLO herald.test"]
        writer.write(b"502 5.5.1 EHLO not implemented\r\n")
        assert await lines(reader, 1) == [b"HELO herald.test"]
        writer.write(b"250 relay.test\r\n")
        for command in (b"MAIL FROM:<b@herald.example>", b"RCPT TO:<r@example.org>", b"DATA"):
            assert await lines(reader, 1) == [command]  # no PIPELINING offered: one at a time
            writer.write(b"354 go\r\n" if command == b"DATA" else b"250 ok\r\n")
        await read_data(reader)
        writer.write(b"250 2.0.0 ok\r\n")
        await asyncio.sleep(10)

    connection = RelayConnection(config(await scripted(relay)))
    closing = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    sent = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    await connection.close()
    assert (closing.code, closing.stage) == (421, "rcpt")
    assert sent.code == 250 and connections == 2


async def test_a_session_sends_its_limit_then_quits_and_reconnects(relay: RelayHandler) -> None:
    connection = RelayConnection(config(relay.port, max_messages_per_connection=2))  # type: ignore[attr-defined]
    peers = []
    try:
        for i in range(5):
            assert (await connection.send("b@herald.example", f"r{i}@example.org", MESSAGE)).code == 250
            session = connection._session
            peers.append(None if session is None else session.writer.get_extra_info("sockname"))
    finally:
        await connection.close()
    # After the 2nd and the 4th message the session quit; the 3rd and the 5th opened new ones.
    assert peers[1] is None and peers[3] is None
    assert len({peers[0], peers[2], peers[4]}) == 3


async def test_addresses_that_cannot_be_written_are_refused_before_any_command(relay: RelayHandler) -> None:
    connection = RelayConnection(config(relay.port))  # type: ignore[attr-defined]
    try:
        injected = await connection.send("b@herald.example", "r@example.org>\r\nRCPT TO:<x@evil.example", MESSAGE)
        utf8 = await connection.send("b@herald.example", "rené@example.org", MESSAGE)  # aiosmtpd offers SMTPUTF8
    finally:
        await connection.close()
    assert (injected.code, injected.stage) == (553, "rcpt")
    assert utf8.code == 250 and relay.recipients() == ["rené@example.org"]


async def test_a_non_ascii_address_is_refused_when_the_relay_lacks_smtputf8(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    after_ehlo: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer)
        after_ehlo.append(await reader.read())  # everything the client writes until it closes

    connection = RelayConnection(config(await scripted(relay)))
    reply = await connection.send("b@herald.example", "rené@example.org", MESSAGE)
    await connection.close()
    for _ in range(100):
        if after_ehlo:
            break
        await asyncio.sleep(0.01)
    assert (reply.code, reply.stage, reply.enhanced_status) == (553, "rcpt", "5.6.7")
    assert after_ehlo == [b""]  # no MAIL FROM was written before the client closed


def test_transparency_doubles_leading_dots_and_mends_line_endings() -> None:
    assert _transparent(b".a\r\nb\r\n.c") == b"..a\r\nb\r\n..c\r\n"
    assert _transparent(b"a\nb\r.c\r\n") == b"a\r\nb\r\n..c\r\n"
    assert _transparent(b"") == b"\r\n"


@pytest.mark.parametrize(("answers", "final", "expected"), [
    # a reply that lets the transaction go on where it cannot: nothing is known to be sent
    (b"250 ok\r\n252 2.1.5 cannot verify\r\n354 go\r\n", None, "answered rcpt with 252"),
    (b"250 ok\r\n250 ok\r\n250 ok\r\n", None, "answered data with 250"),
    # no 1yz reply exists in SMTP, and a reply keeps one code over all its lines
    (b"250 ok\r\n150 what\r\n354 go\r\n", None, "malformed reply"),
    (b"250 ok\r\n250 ok\r\n354 go\r\n", b"550-5.1.1 unknown user\r\n250 ok\r\n", "changed its code from 550 to 250"),
    # neither accepted nor refused at the end of DATA: in doubt, as if unanswered (sent again)
    (b"250 ok\r\n250 ok\r\n354 go\r\n", b"220 hm\r\n", "did not answer the end of DATA"),
], ids=["252-to-rcpt", "250-to-data", "1yz", "mixed-codes", "2yz-to-dot"])
async def test_a_reply_that_does_not_fit_its_stage_defers_and_is_never_read_as_sent(
        scripted: Callable[[Script], Awaitable[int]], answers: bytes, final: bytes | None, expected: str) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer)
        await lines(reader, 3)
        writer.write(answers)
        if final is not None:
            await read_data(reader)
            writer.write(final)
        await asyncio.sleep(10)

    connection = RelayConnection(config(await scripted(relay), timeout=1.0, data_timeout=1.0))
    reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    await connection.close()
    assert reply.code is None and expected in reply.text, reply.text


async def test_a_reply_nobody_asked_for_ends_the_session_before_the_next_message(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    """A relay that answers the end of DATA twice: the second 250 would be read as the next message's MAIL
    reply, and every reply after it for the one before (the next message recorded as sent, never received).
    The session is ended before the next message's first command, which goes on a new one."""
    sessions: list[int] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sessions.append(len(sessions))
        await greet(reader, writer)
        await lines(reader, 3)
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await read_data(reader)
        writer.write(b"250 queued\r\n250 queued again\r\n")
        await asyncio.sleep(10)

    connection = RelayConnection(config(await scripted(relay), timeout=1.0))
    first = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    await asyncio.sleep(0.2)  # the extra line arrives
    second = await connection.send("b@herald.example", "s@example.org", MESSAGE)
    await connection.close()
    assert first.code == 250 and second.code == 250 and sessions == [0, 1], second.text


async def test_a_nul_in_a_reply_is_kept_out_of_its_text(scripted: Callable[[Script], Awaitable[int]]) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer)
        await lines(reader, 3)
        writer.write(b"250 ok\r\n550 5.1.1 no such\x00user\r\n503 need RCPT\r\n")
        await lines(reader, 1)  # RSET
        writer.write(b"250 reset\r\n")
        await asyncio.sleep(10)

    connection = RelayConnection(config(await scripted(relay), timeout=1.0))
    reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    await connection.close()
    assert (reply.code, reply.stage, reply.text) == (550, "rcpt", "5.1.1 no such user")


async def test_anything_sent_in_the_clear_after_the_starttls_220_ends_the_session(
        scripted: Callable[[Script], Awaitable[int]]) -> None:
    """A STARTTLS response injection (a relay, or someone in the middle, writing after its 220 so that it is read
    as the first reply over TLS): refused before the handshake, as Postfix does."""
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test\r\n")
        await lines(reader, 1)
        writer.write(b"250-relay.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        await lines(reader, 1)
        writer.write(b"220 go ahead\r\n250 injected\r\n")
        await asyncio.sleep(10)

    connection = RelayConnection(config(await scripted(relay), timeout=1.0, starttls=True, verify_tls=False))
    reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    assert reply.code is None and reply.stage == "connect" and "response injection" in reply.text, reply.text
