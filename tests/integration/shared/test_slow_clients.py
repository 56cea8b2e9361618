"""One client cannot take a service's HTTP server offline with unfinished requests (slowloris, review h11R2) or
answers it does not read: a request's head and body must arrive in time, an answer must be read, and one client
address holds at most its share of connections; each connection refused or cut is counted on /metrics. A real
uvicorn server built by `make_server`, as every service's, over real sockets."""

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
from fastapi import Request, Response
from prometheus_client.parser import text_string_to_metric_families

from herald_shared.http import add_health_routes, api_app, make_server
from herald_shared.metrics import HTTP_CONNECTIONS, HTTP_CONNECTIONS_CUT, HTTP_CONNECTIONS_REFUSED
from herald_shared.serving import ServerLimits
from herald_subscriptions.api import MAX_IMPORT_BYTES
from tests.conftest import eventually, free_port

UPLOAD = "/v1/lists/news/imports"  # the CSV import's path and limit (subscriptions' LARGER_BODIES)
LARGE = "/v1/large"  # ?mib=: an answer larger than what the sockets' buffers take (a few MiB on loopback)
HALF_A_HEAD = b"GET /healthz HTTP/1.1\r\nHost: svc\r\n"
ATTACKER, NEIGHBOUR, LEGITIMATE = "127.0.0.2", "127.0.0.4", "127.0.0.3"  # loopback addresses other than the
# default trusted proxy (127.0.0.1), whose connections carry many clients and are not capped per address
SRE = "127.0.0.5"  # reads /metrics, from an address of its own


def _app() -> Any:
    app = api_app("slow clients", "t", larger_bodies={UPLOAD: MAX_IMPORT_BYTES})

    @app.post(UPLOAD)
    async def upload(request: Request) -> dict[str, int]:
        received = 0
        async for chunk in request.stream():  # read as the import reads it (spooled as it arrives)
            received += len(chunk)
        return {"received": received}

    @app.get(LARGE)
    async def large(mib: int) -> Response:
        return Response(b"x" * (mib << 20), media_type="application/octet-stream")

    return add_health_routes(app, {})


REFUSED = ("too_many_from_client", "too_many_connections", "out_of_descriptors")
CUT = ("head_timeout", "body_timeout", "send_timeout")


async def _served_metrics(port: int) -> dict[str, float]:
    """The server's connection metrics as its /metrics serves them: `refused <reason>`, `cut <reason>` and
    `open`."""
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=SRE), timeout=5) as http:
        exposition = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    counted = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "herald_http_connections":
                counted["open"] = sample.value
            elif sample.name in ("herald_http_connections_refused_total", "herald_http_connections_cut_total"):
                counted[f"{sample.name.split('_')[3]} {sample.labels['reason']}"] = sample.value
    return counted


async def _counted() -> dict[str, float]:
    """The same metrics read from their collectors in this process (the server runs in it), not from the whole
    registry: late in a test run the registry holds every earlier test's series (consumers named after each test's
    topic prefix), and collecting it all blocked the loop for seconds a probe, the server's ticks with it (the send
    deadline was met after the 5 s the test waits)."""
    def sample(metric: Any, name: str, **labels: str) -> float:
        return next((s.value for family in metric.collect() for s in family.samples
                     if s.name == name and s.labels == labels), 0.0)
    return {"open": sample(HTTP_CONNECTIONS, "herald_http_connections"),
            **{f"refused {r}": sample(HTTP_CONNECTIONS_REFUSED, "herald_http_connections_refused_total", reason=r)
               for r in REFUSED},
            **{f"cut {c}": sample(HTTP_CONNECTIONS_CUT, "herald_http_connections_cut_total", reason=c) for c in CUT}}


async def _rise(before: dict[str, float]) -> dict[str, float]:
    """What rose of the server's connection counters since `before` (the gauge aside)."""
    after = await _counted()
    return {name: after[name] - before[name] for name in before if name != "open" and after[name] != before[name]}


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
        served = await _served_metrics(port)  # every reason there from the start, at 0 or more
        assert set(served) == {"open", *(f"refused {r}" for r in REFUSED), *(f"cut {c}" for c in CUT)}, served
        before = await _counted()
        reader, writer = await _half_open(port, ATTACKER)
        answer, after = await _answer_and_close(reader, within=5)
        writer.close()
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)  # connects, never writes
        nothing, silent_after = await _answer_and_close(silent_reader, within=5)
        silent.close()
        rose = await _rise(before)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"application/problem+json" in answer
    assert b'"status": 408' in answer
    assert 0.9 <= after < 3.0, after
    assert nothing == b"" and 0.9 <= silent_after < 3.0, silent_after  # nothing to answer: closed
    assert rose == {"cut head_timeout": 2}, rose


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
        before = await _counted()
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
        rose = await _rise(before)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert rose == {"cut body_timeout": 1}, rose
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
        before = await _counted()
        held = [await _half_open(port, ATTACKER) for _ in range(5)]
        assert await _closed_at_once(port, ATTACKER)  # its 6th
        assert await _healthz(port, LEGITIMATE) == 200
        assert await _rise(before) == {"refused too_many_from_client": 1}
        await eventually(_counted, lambda now: now["open"] == before["open"] + 5, within=5,
                         what="the attacker's 5 connections open (the refused one not among them)")
        # Every address but the trusted proxy's counts toward the overall cap, which bounds the descriptors held.
        held += [await _half_open(port, NEIGHBOUR) for _ in range(3)]
        assert await _closed_at_once(port, LEGITIMATE)
        for _, writer in held:
            writer.close()
        await eventually(lambda: _healthz_or_refused(port, LEGITIMATE), lambda status: status == 200, within=5,
                         what="an answer once the attackers left")
        assert await _rise(before) == {"refused too_many_from_client": 1, "refused too_many_connections": 1}
        await eventually(_counted, lambda now: now["open"] == before["open"], within=5,
                         what="every connection closed counted out")


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


def _small_window(source: str, size: int) -> socket.socket:
    """A client socket whose receive buffer is small: what the server sends it beyond that waits in the server
    (the kernel's send buffer, then the process), as it would for a client that reads slowly over a slow
    network."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
async def test_an_answer_its_client_does_not_read_is_cut_at_the_send_deadline_and_counted(connection: str) -> None:
    """`close`: uvicorn closes the connection once the answer is written, and the transport would hold it until
    the client read it all, that is for ever (as it does at keep-alive's end, 5 s after an answer)."""
    loop = asyncio.get_running_loop()
    async with serving(send_timeout=1.0) as port:
        before = await _counted()
        sock = _small_window(ATTACKER, 4096)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, f"GET {LARGE}?mib=8 HTTP/1.1\r\nHost: svc\r\nConnection: {connection}\r\n"
                                      "\r\n".encode())
        asked = time.monotonic()
        await eventually(lambda: _rise(before), lambda rose: rose == {"cut send_timeout": 1}, within=5,
                         every=0.05, what="the unread answer cut")
        after = time.monotonic() - asked
        await eventually(_counted, lambda now: now["open"] == before["open"], within=5,
                         what="the connection counted out")
        received = 0
        with suppress(ConnectionResetError):
            async with asyncio.timeout(5):
                while chunk := await loop.sock_recv(sock, 1 << 16):
                    received += len(chunk)
        sock.close()
    assert 0.9 <= after < 2.5, after
    assert received < 8 << 20, received  # cut: the rest was never sent


async def test_a_client_reading_slowly_but_steadily_gets_the_whole_answer_past_the_send_deadline() -> None:
    """4 MiB read at about 1 MB/s (at most 64 KiB every 50 ms through a small window): many times the 0.5 s send
    deadline. The kernel's send buffer takes a few MiB of it and is writable again only once a third of that has
    gone (a MiB: a second at this pace), so the process holds the rest seconds without writing any; but the client
    takes some all along (the kernel's count of what it holds unacknowledged shrinks), so it is never cut."""
    loop = asyncio.get_running_loop()
    size = 4 << 20
    async with serving(send_timeout=0.5) as port:
        before = await _counted()
        sock = _small_window(LEGITIMATE, 32 << 10)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, f"GET {LARGE}?mib=4 HTTP/1.1\r\nHost: svc\r\n\r\n".encode())
        started, received = time.monotonic(), bytearray()
        async with asyncio.timeout(30):
            while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < size:
                chunk = await loop.sock_recv(sock, 64 << 10)
                assert chunk, f"closed after {len(received):,} bytes"
                received += chunk
                await asyncio.sleep(0.05)  # the client's pace, not a wait for the server
        took = time.monotonic() - started
        sock.close()
        rose = await _rise(before)
    assert received.startswith(b"HTTP/1.1 200 ") and took > 3.0, took
    assert rose == {}, rose
