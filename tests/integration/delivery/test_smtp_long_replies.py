"""A relay's reply with a line over MAX_REPLY_LINE octets or over MAX_REPLY_LINES lines keeps its code (the rest
is read and set aside): a long 550 5.1.1 is the hard bounce it says, a long refusal of the content is not sent
again, and the session goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from herald_delivery.smtp import MAX_REPLY_LINE, MAX_REPLY_LINES, RelayConfig, RelayConnection

from .conftest import Script

MESSAGE = b"From: a@herald.example\r\nTo: r@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
async def lines(reader: asyncio.StreamReader, n: int) -> list[bytes]:
    return [(await reader.readuntil(b"\n")).rstrip(b"\r\n") for _ in range(n)]


LONG_LINE = b"550 5.1.1 <r@example.org>: user unknown " + b"y" * (3 * MAX_REPLY_LINE) + b"\r\n"
MANY_LINES = b"".join(b"554-5.7.1 line %d of the policy\r\n" % i for i in range(MAX_REPLY_LINES + 50)) + \
    b"554 5.7.1 message refused by policy\r\n"


@pytest.mark.parametrize(("rcpt_answer", "final", "expected"), [
    (LONG_LINE, None, (550, "rcpt", "5.1.1")),
    (b"250 ok\r\n", MANY_LINES, (554, "data", "5.7.1")),
    (b"250 ok\r\n", b"554-5.7.1 " + b"z" * (2 * MAX_REPLY_LINE) + b"\r\n" + MANY_LINES, (554, "data", "5.7.1")),
], ids=["long-line-at-rcpt", "many-lines-at-data", "both-at-data"])
async def test_a_long_refusal_keeps_its_code_and_the_session_goes_on(
        scripted: Callable[[Script], Awaitable[int]], rcpt_answer: bytes, final: bytes | None,
        expected: tuple[int, str, str]) -> None:
    received: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test\r\n")
        await lines(reader, 1)
        writer.write(b"250-relay.test\r\n250 PIPELINING\r\n")
        await lines(reader, 3)
        writer.write(b"250 ok\r\n" + rcpt_answer + (b"354 go\r\n" if final else b"503 5.5.1 no valid recipients\r\n"))
        if final is not None:
            await reader.readuntil(b"\r\n.\r\n")
            writer.write(final)
        assert await lines(reader, 1) == [b"RSET"]
        writer.write(b"250 reset\r\n")
        await lines(reader, 3)  # the next message, on the same session
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        received.append(await reader.readuntil(b"\r\n.\r\n"))
        writer.write(b"250 2.0.0 queued\r\n")
        await asyncio.sleep(10)

    connection = RelayConnection(RelayConfig(host="127.0.0.1", port=await scripted(relay), helo_name="herald.test",
                                             timeout=2.0, data_timeout=2.0))
    refused = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    after = await connection.send("b@herald.example", "s@example.org", MESSAGE)
    await connection.close()
    assert (refused.code, refused.stage, refused.enhanced_status) == expected, refused.text[:200]
    assert len(refused.diagnostic) <= 1000
    assert after.code == 250 and len(received) == 1
