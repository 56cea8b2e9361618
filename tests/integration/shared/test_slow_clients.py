"""One client cannot take a service's HTTP server offline with unfinished requests (slowloris, review h11R2): a
request's head and body must arrive in time, and one client address holds at most its share of connections. A
real uvicorn server built by `make_server`, as every service's, over real sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import pytest
from fastapi import Request

from herald_shared.http import add_health_routes, api_app, make_server
from herald_shared.serving import ServerLimits
from herald_subscriptions.api import MAX_IMPORT_BYTES
from tests.conftest import eventually, free_port

UPLOAD = "/v1/lists/news/imports"  # the CSV import's path and limit (subscriptions' LARGER_BODIES)
HALF_A_HEAD = b"GET /healthz HTTP/1.1\r\nHost: svc\r\n"
ATTACKER, NEIGHBOUR, LEGITIMATE = "127.0.0.2", "127.0.0.4", "127.0.0.3"  # loopback addresses other than the
# default trusted proxy (127.0.0.1), whose connections carry many clients and are not capped per address


def _app() -> Any:
    app = api_app("slow clients", "t", larger_bodies={UPLOAD: MAX_IMPORT_BYTES})

    @app.post(UPLOAD)
    async def upload(request: Request) -> dict[str, int]:
        received = 0
        async for chunk in request.stream():  # read as the import reads it (spooled as it arrives)
            received += len(chunk)
        return {"received": received}

    return add_health_routes(app, {})


@asynccontextmanager
async def serving(**limits: Any) -> AsyncIterator[int]:
    port = free_port()
    server = make_server(_app(), "127.0.0.1", port, limits=ServerLimits(**limits))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await task


async def _answer_and_close(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """What the server wrote until it closed the connection, and after how long."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        answer = await reader.read()
    return answer, time.monotonic() - started


async def _half_open(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(HALF_A_HEAD)
    await writer.drain()
    return reader, writer


async def _closed_at_once(port: int, source: str) -> bool:
    """Whether a new connection from `source` is closed by the server before any request is answered."""
    reader, writer = await _half_open(port, source)
    try:
        async with asyncio.timeout(2):
            return await reader.read() == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        writer.close()


async def _healthz(port: int, source: str) -> int:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code


async def test_a_connection_that_sends_half_a_head_is_answered_408_and_closed_at_the_deadline() -> None:
    async with serving(head_timeout=1.0) as port:
        reader, writer = await _half_open(port, ATTACKER)
        answer, after = await _answer_and_close(reader, within=5)
        writer.close()
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)  # connects, never writes
        nothing, silent_after = await _answer_and_close(silent_reader, within=5)
        silent.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"application/problem+json" in answer
    assert b'"status": 408' in answer
    assert 0.9 <= after < 3.0, after
    assert nothing == b"" and 0.9 <= silent_after < 3.0, silent_after  # nothing to answer: closed


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer read off a kept-alive connection (head, then its Content-Length of body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


async def test_an_idle_kept_alive_connection_lasts_until_the_head_deadline_not_5_s() -> None:
    """Idle between requests, a connection is closed by HERALD_HTTP_HEAD_TIMEOUT_SECONDS (README), not by uvicorn's
    own 5 s, which equalled httpx's keep-alive expiry: a request sent as uvicorn closed it was lost."""
    request = b"GET /healthz HTTP/1.1\r\nHost: svc\r\n\r\n"
    async with serving(head_timeout=6.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200 ")
            with pytest.raises(TimeoutError):  # still open 5.5 s later: nothing read, no end of stream
                async with asyncio.timeout(5.5):
                    await reader.read(1)
            writer.write(request)
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200 ")
            nothing, after = await _answer_and_close(reader, within=10)
        finally:
            writer.close()
    assert nothing == b"" and 6.0 <= after < 8.5, after  # then closed at the deadline, with nothing to answer


async def test_a_trickled_body_is_cut_with_408_and_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """1 byte every 0.2 s of a declared 1,000: far below 1 KB/s once the body's 1 s have passed."""
    async with serving(body_timeout=1.0, body_min_rate=1024) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {UPLOAD} HTTP/1.1\r\nHost: svc\r\nContent-Length: 1000\r\n\r\n".encode())

        async def trickle() -> None:
            with suppress(ConnectionError):
                while True:
                    writer.write(b"a")
                    await writer.drain()
                    await asyncio.sleep(0.2)

        trickling = asyncio.create_task(trickle())
        with caplog.at_level(logging.INFO):
            answer, after = await _answer_and_close(reader, within=10)
        trickling.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.9 <= after < 4.0, after
    # (aiokafka's records aside: on a pytest-xdist worker, an earlier test's client may still log its topics gone)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("aiokafka")], \
        [r.getMessage() for r in caplog.records]


async def test_a_client_still_sending_after_its_408_is_not_reset_so_it_can_read_the_answer() -> None:
    """Lingering close (RFC 9112 9.6): once answered 408 the connection is shut for writing, and the bytes the
    client goes on sending are read and dropped for a while. Closed at once, the server's kernel answers them with
    a reset, and a client that has not read the 408 yet loses it (a CI run's ECONNRESET)."""
    async with serving(body_timeout=1.0) as port:
        loop = asyncio.get_running_loop()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setblocking(False)
            await loop.sock_sendall(sock, f"POST {UPLOAD} HTTP/1.1\r\nHost: svc\r\nContent-Length: 1000\r\n\r\n"
                                          f"{'a' * 10}".encode())
            answer = b""
            async with asyncio.timeout(10):  # the 408, whole: its head and the body its content-length names
                while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
                    chunk = await loop.sock_recv(sock, 4096)
                    assert chunk, answer
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            for _ in range(3):  # more of the body, as a client that has not read its answer yet sends it
                await loop.sock_sendall(sock, b"a" * 10)
                await asyncio.sleep(0.2)
            async with asyncio.timeout(10):
                assert await loop.sock_recv(sock, 4096) == b""  # the end of the answer, not a reset


def _length(answer: bytes) -> int:
    head = answer.partition(b"\r\n\r\n")[0].decode().lower()
    return int(head.split("content-length:")[1].split("\r\n")[0])


async def test_a_legitimate_client_is_answered_while_one_address_holds_its_maximum_of_half_open_connections(
        ) -> None:
    async with serving(head_timeout=30.0, max_connections=8, max_connections_per_client=5) as port:
        held = [await _half_open(port, ATTACKER) for _ in range(5)]
        assert await _closed_at_once(port, ATTACKER)  # its 6th
        assert await _healthz(port, LEGITIMATE) == 200
        # Every address but the trusted proxy's counts toward the overall cap, which bounds the descriptors held.
        held += [await _half_open(port, NEIGHBOUR) for _ in range(3)]
        assert await _closed_at_once(port, LEGITIMATE)
        for _, writer in held:
            writer.close()
        await eventually(lambda: _healthz_or_refused(port, LEGITIMATE), lambda status: status == 200, within=5,
                         what="an answer once the attackers left")


async def _healthz_or_refused(port: int, source: str) -> int:
    try:
        return await _healthz(port, source)
    except httpx.TransportError:
        return 0


async def test_a_large_upload_at_a_sane_rate_outlasts_the_body_deadline() -> None:
    """The CSV import's 256 MiB at 64 MiB/s: 4 s, four times the body's base deadline, all of it above the
    minimum rate, so it is read to the end."""
    size, rate, chunk = MAX_IMPORT_BYTES, 64 << 20, b"x" * (1 << 20)
    async with serving(body_timeout=1.0, body_min_rate=32 << 20) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST {UPLOAD} HTTP/1.1\r\nHost: svc\r\nContent-Length: {size}\r\n\r\n".encode())
        started = time.monotonic()
        for sent in range(0, size, len(chunk)):
            writer.write(chunk)
            await writer.drain()
            ahead = started + (sent + len(chunk)) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # the client's pace, not a wait for the server
        took = time.monotonic() - started
        async with asyncio.timeout(30):
            answer = await reader.readuntil(b"}")
        writer.close()
    assert took > 3.0, took
    assert answer.startswith(b"HTTP/1.1 200 ") and f'{{"received":{size}}}'.encode() in answer, answer[:300]
