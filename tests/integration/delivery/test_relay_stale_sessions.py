"""A pooled relay session the relay closed since its last message (Postfix's idle 421, a silent NAT drop, a
relay's limit of messages a session) no longer defers the next message: it goes at once on a new session. Once
a reply of the transaction was read, or the content was sent, it is never sent again in the same attempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from herald_delivery import metrics
from herald_delivery.smtp import RelayConfig, RelayConnection
from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageDeferred, MessageSent
from tests.conftest import free_port
from tests.samples import campaign_queued

from .conftest import RelayBehaviour, RelayHandler, World

MESSAGE = b"From: a@herald.example\r\nTo: r@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
Script = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def config(port: int) -> RelayConfig:
    return RelayConfig(host="127.0.0.1", port=port, helo_name="herald.test", timeout=2.0, data_timeout=2.0)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[tuple[int, list[asyncio.Event]]]]]:
    """A relay running the test's coroutine for each connection (numbered from 0); gives its port and, per
    connection, an event set once the relay has closed it."""
    servers: list[asyncio.Server] = []
    tasks: list[asyncio.Task[Any]] = []

    async def start(script: Script) -> tuple[int, list[asyncio.Event]]:
        closed: list[asyncio.Event] = []

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            number = len(closed)
            closed.append(asyncio.Event())
            try:
                await script(number, reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                closed[number].set()

        server = await asyncio.start_server(session, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1]), closed

    yield start
    for server in servers:
        server.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def line(reader: asyncio.StreamReader) -> bytes:
    return (await reader.readuntil(b"\n")).rstrip(b"\r\n")


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 relay.test\r\n")
    await line(reader)
    writer.write(b"250-relay.test\r\n250 PIPELINING\r\n")


async def accept_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list[bytes]) -> None:
    commands = [await line(reader) for _ in range(3)]
    writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n.\r\n")
    received.append(commands[1])
    writer.write(b"250 2.0.0 queued\r\n")
    await writer.drain()


async def within(event: asyncio.Event) -> None:
    async with asyncio.timeout(5):
        await event.wait()


@pytest.mark.parametrize("goodbye", [b"421 4.4.2 relay.test Error: timeout exceeded\r\n", b""],
                         ids=["idle-421", "silent-drop"])
async def test_a_session_the_relay_closed_while_idle_is_replaced_at_once(
        scripted: Callable[[Script], Awaitable[tuple[int, list[asyncio.Event]]]], goodbye: bytes) -> None:
    received: list[bytes] = []

    async def relay(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer)
        await accept_one(reader, writer, received)
        if number == 0:
            writer.write(goodbye)  # then closed, as Postfix does after smtpd_timeout
            return
        await line(reader)  # QUIT
        writer.write(b"221 bye\r\n")

    port, closed = await scripted(relay)
    connection = RelayConnection(config(port))
    stale_before = metrics.STALE_SESSIONS._value.get()
    first = await connection.send("b@herald.example", "r1@example.org", MESSAGE)
    await within(closed[0])
    second = await connection.send("b@herald.example", "r2@example.org", MESSAGE)
    await connection.close(quit_politely=True)
    assert (first.code, second.code) == (250, 250), second.text
    assert received == [b"RCPT TO:<r1@example.org>", b"RCPT TO:<r2@example.org>"] and len(closed) == 2
    assert metrics.STALE_SESSIONS._value.get() - stale_before == 1


@pytest.mark.parametrize("answer", [b"421 4.7.0 relay.test too many messages in this session\r\n", b""],
                         ids=["421-to-mail", "closed-at-mail"])
async def test_a_relay_ending_a_session_after_its_limit_of_messages_costs_no_deferral(
        scripted: Callable[[Script], Awaitable[tuple[int, list[asyncio.Event]]]], answer: bytes) -> None:
    received: list[bytes] = []

    async def relay(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer)
        await accept_one(reader, writer, received)
        if number > 0:
            await accept_one(reader, writer, received)
        await line(reader)  # the next MAIL FROM: this session has had its messages
        writer.write(answer)

    port, _ = await scripted(relay)
    connection = RelayConnection(config(port))
    replies = [await connection.send("b@herald.example", f"r{i}@example.org", MESSAGE) for i in range(3)]
    await connection.close()
    assert [r.code for r in replies] == [250, 250, 250], replies
    assert received == [f"RCPT TO:<r{i}@example.org>".encode() for i in range(3)]


@pytest.mark.parametrize("after", ["mail-answered", "content-sent"])
async def test_a_session_lost_once_the_transaction_began_is_not_retried_in_the_same_attempt(
        scripted: Callable[[Script], Awaitable[tuple[int, list[asyncio.Event]]]], after: str) -> None:
    """Exactly once: after a reply of this transaction, or its content, the relay may hold the message."""
    connections: list[int] = []

    async def relay(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(number)
        await greet(reader, writer)
        await accept_one(reader, writer, [])
        for _ in range(3):
            await line(reader)
        if after == "mail-answered":
            writer.write(b"250 ok\r\n")
            await writer.drain()
            return
        writer.write(b"250 ok\r\n250 ok\r\n354 go\r\n")
        await reader.readuntil(b"\r\n.\r\n")  # the content came; the relay dies before its verdict

    port, _ = await scripted(relay)
    connection = RelayConnection(config(port))
    first = await connection.send("b@herald.example", "r1@example.org", MESSAGE)
    lost = await connection.send("b@herald.example", "r2@example.org", MESSAGE)
    await connection.close()
    assert first.code == 250 and lost.code is None and connections == [0], lost.text
    if after == "content-sent":
        assert "did not answer the end of DATA" in lost.text


class ClosesAfterTwo(RelayHandler):
    """aiosmtpd relay that accepts two messages a session, then drops the session at the next MAIL FROM."""

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        session.herald_count = getattr(session, "herald_count", 0) + 1
        if session.herald_count > 2:
            server.transport.close()
            return "421 4.7.0 too many messages"
        return await super().handle_MAIL(server, session, envelope, address, options)


@pytest.fixture
def relay() -> Iterator[RelayHandler]:
    """This module's relay, for start_delivery: one that ends its sessions after two messages."""
    handler = ClosesAfterTwo(RelayBehaviour())
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port  # type: ignore[attr-defined]
    yield handler
    controller.stop()


async def test_a_campaign_through_a_relay_that_ends_sessions_is_sent_without_deferrals(
        start_delivery: Any, relay: RelayHandler, world: World) -> None:
    people = [f"r{i}@example.org" for i in range(7)]
    await start_delivery(HERALD_SEND_CONCURRENCY=1, HERALD_RETRY_FIRST_DELAY_SECONDS=300)
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", a) for i, a in enumerate(people)])
    await world.publish(campaign_queued("acme", "c1"))
    events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es),
                                  "the campaign finished")
    assert not [e for e in events if isinstance(e, MessageDeferred)]
    assert sorted(e.payload.attempt for e in events if isinstance(e, MessageSent)) == [1] * len(people)
    assert sorted(relay.recipients()) == people
