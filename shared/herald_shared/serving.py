"""The uvicorn server every service runs, and what it bounds per connection: the time a request's head and body
may take to arrive, the time an answer may wait for its client to read it, the connections one client address and
all of them may hold, and the log lines a process out of file descriptors writes; each connection refused or cut
is counted (`herald_http_connections_refused_total`, `herald_http_connections_cut_total`). The one module that
relies on uvicorn's internals (`UVICORN_SEAM`)."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import ipaddress
import json
import logging
import math
import resource
import socket
import struct
import termios
from collections import Counter
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import uvicorn
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from .logs import REPEAT_INTERVAL_SECONDS, RepeatLimit
from .metrics import HTTP_CONNECTIONS, HTTP_CONNECTIONS_CUT, HTTP_CONNECTIONS_REFUSED

log = logging.getLogger(__name__)
# A flood makes these lines by the thousand (one per refused or cut connection): the first of each kind, then one
# per interval carrying `suppressed`.
log.addFilter(RepeatLimit((__name__,), REPEAT_INTERVAL_SECONDS))

# Descriptors a process keeps beside its HTTP connections: Kafka and MongoDB clients, spooled imports, logs.
RESERVED_DESCRIPTORS = 256
# How often a connection's clock is read, at most (a deadline is met to within this).
MAX_TICK_SECONDS = 1.0
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# After a 408 the connection is shut for writing, and what the client goes on sending is read and dropped for up
# to this long before the socket is closed ("lingering close", RFC 9112 9.6). Closing at once with its bytes
# unread, or with more on the way, makes the kernel reset the connection, and a client that had not yet read the
# 408 loses it (seen in CI: ECONNRESET instead of the answer).
LINGER_SECONDS = 2.0
# The ioctl that says how many bytes a TCP socket's send queue holds, not yet sent or not yet acknowledged (Linux's
# SIOCOUTQ); None where there is none.
SEND_QUEUE_IOCTL: int | None = getattr(termios, "TIOCOUTQ", None)


class ServerLimits(BaseSettings):
    """What one client may hold of a service's HTTP server (README, configuration; SECURITY.md)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, populate_by_name=True)

    head_timeout: float = Field(
        default=10.0, gt=0, alias="HERALD_HTTP_HEAD_TIMEOUT_SECONDS",
        description="A request's head (request line and headers) must have arrived this long after the connection "
                    "was made or its previous response was sent; else 408 (when part of it came) and closed.")
    body_timeout: float = Field(
        default=30.0, gt=0, alias="HERALD_HTTP_BODY_TIMEOUT_SECONDS",
        description="A request body may pause at most this long, and takes at most this long plus one second per "
                    "HERALD_HTTP_BODY_MIN_BYTES_PER_SECOND bytes received; else 408 and closed. Time the service "
                    "itself holds the body back (it reads slower than the client sends) does not count.")
    body_min_rate: int = Field(
        default=16 << 10, gt=0, alias="HERALD_HTTP_BODY_MIN_BYTES_PER_SECOND",
        description="The slowest average rate a request body may arrive at, past HERALD_HTTP_BODY_TIMEOUT_SECONDS.")
    max_connections: int = Field(
        default=1000, ge=1, alias="HERALD_HTTP_MAX_CONNECTIONS",
        description="Connections the process holds at once; one more is closed as it is accepted. Lowered to what "
                    "the process' open-file limit leaves (RESERVED_DESCRIPTORS kept for the rest).")
    max_connections_per_client: int = Field(
        default=50, ge=1, alias="HERALD_HTTP_MAX_CONNECTIONS_PER_CLIENT",
        description="Connections one client address holds at once; one more is closed as it is accepted. A "
                    "trusted proxy's (HERALD_FORWARDED_ALLOW_IPS) carry many clients: only the overall cap "
                    "holds them, and the proxy must bound each client itself (SECURITY.md).")
    send_timeout: float = Field(
        default=30.0, gt=0, alias="HERALD_HTTP_SEND_TIMEOUT_SECONDS",
        description="An answer the client does not read (what the socket's send buffer cannot take waits in the "
                    "process) is cut when none of it has been taken this long, as nginx's send_timeout: the "
                    "connection is closed. While it waits, the next request's head deadline does not run.")

    @classmethod
    def from_environment(cls) -> ServerLimits:
        """The limits the environment sets; a clear exit naming the variables when they are invalid."""
        try:
            return cls()
        except ValidationError as exc:
            wrong = ", ".join(str(error["loc"][0]) for error in exc.errors())
            raise SystemExit(f"invalid HTTP server limits: {wrong}") from None


def connections_allowed(wanted: int, open_files: int) -> int:
    """The connections a process whose open-file limit is `open_files` can hold, at most `wanted`: what the
    limit leaves beside RESERVED_DESCRIPTORS, and never fewer than a few (a tiny limit still serves probes)."""
    return max(8, min(wanted, open_files - RESERVED_DESCRIPTORS))


def raise_open_files_limit(wanted: int) -> int:
    """Raises the process' soft open-file limit towards `wanted` (up to the hard limit, as Go's runtime does);
    answers the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return wanted if soft == resource.RLIM_INFINITY else soft


Phase = Literal["head", "body", "app"]
Overdue = Literal["head", "body", "send"]


@dataclass
class RequestClock:
    """Pure: how long the request being read on one connection has taken, counted only while the server reads
    (time it holds the body back, its reader being slower, is not the client's), and whether that is too long.
    `head`: the request line and headers are awaited; `body`: the body; `app`: the service answers (no limit)."""

    head_timeout: float
    body_timeout: float
    body_min_rate: int
    phase: Phase = "head"
    received: int = 0  # bytes in this phase
    waited: float = 0.0  # seconds the server waited for them in this phase
    since_bytes: float = 0.0  # seconds waited since bytes last came
    _at: float | None = None  # the last reading of the clock

    @classmethod
    def of(cls, limits: ServerLimits, now: float) -> RequestClock:
        return cls(limits.head_timeout, limits.body_timeout, limits.body_min_rate, _at=now)

    def enter(self, phase: Phase, now: float) -> None:
        self.phase, self.received, self.waited, self.since_bytes, self._at = phase, 0, 0.0, 0.0, now

    def got(self, size: int, now: float, *, reading: bool = True) -> None:
        self.tick(now, reading=reading)
        self.received += size
        self.since_bytes = 0.0

    def tick(self, now: float, *, reading: bool) -> Literal["head", "body"] | None:
        """Reads the clock: the time since its last reading counts when the server was `reading` (not holding
        the connection back). Answers which deadline has passed, if one has."""
        if reading and self._at is not None:
            elapsed = max(0.0, now - self._at)
            self.waited += elapsed
            self.since_bytes += elapsed
        self._at = now
        if self.phase == "head" and self.waited >= self.head_timeout:
            return "head"
        if self.phase == "body" and (self.since_bytes >= self.body_timeout or
                                     self.waited >= self.body_timeout + self.received / self.body_min_rate):
            return "body"
        return None


@dataclass
class SendClock:
    """Pure: how long the answer being written on one connection has waited for its client to read any of it.
    `unsent` is what the process holds of it (the transport's buffer: only once the socket's send buffer is full)
    plus what the kernel holds unacknowledged; the clock runs from when some was first seen held, or last seen to
    shrink, and stops when the process holds none."""

    timeout: float
    unsent: int = 0
    since: float | None = None  # when the client was last seen taking some, while some is held

    def tick(self, unsent: int, now: float) -> bool:
        """Reads the clock, given what is held now: whether the client has taken nothing for `timeout`."""
        if unsent == 0:
            self.since = None
        elif self.since is None or unsent < self.unsent:
            self.since = now
        self.unsent = unsent
        return self.since is not None and now - self.since >= self.timeout

    def taken(self, now: float) -> None:
        """The client took some (the transport's buffer fell below its low-water mark), whatever was written
        since."""
        if self.since is not None:
            self.since = now


def send_queue_bytes(sock: Any) -> int:
    """What the kernel holds of what was written to `sock` and its client has not acknowledged (0 where it cannot
    tell): it shrinks as the client reads, long before the socket has room enough to be written again."""
    if sock is None or SEND_QUEUE_IOCTL is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), SEND_QUEUE_IOCTL, b"\0" * 4))[0])
    except (OSError, ValueError):  # not a socket's, or closed (its descriptor -1)
        return 0


class TrustedProxies:
    """The addresses of HERALD_FORWARDED_ALLOW_IPS (addresses, networks, `*`), as `make_server` is given them."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        for item in items:
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.names.add(item)

    def __contains__(self, host: str) -> bool:
        if self.everyone or host in self.names:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class ConnectionCaps:
    """The connections a server holds, by client address: admits one under the caps, refuses the rest."""

    def __init__(self, limits: ServerLimits, trusted: TrustedProxies, max_connections: int) -> None:
        self.per_client, self.overall, self.trusted = limits.max_connections_per_client, max_connections, trusted
        self.total = 0
        self.by_client: Counter[str] = Counter()

    def admit(self, host: str | None) -> Literal["too_many_connections", "too_many_from_client"] | None:
        """None, and the connection counted; or why it is refused."""
        if self.total >= self.overall:
            return "too_many_connections"
        client = host if host is not None and host not in self.trusted else None  # None: no cap of its own
        if client is not None and self.by_client[client] >= self.per_client:
            return "too_many_from_client"
        self.total += 1
        if client is not None:
            self.by_client[client] += 1
        return None

    def release(self, host: str | None) -> None:
        self.total -= 1
        if host is not None and host in self.by_client:
            self.by_client[host] -= 1
            if self.by_client[host] <= 0:
                del self.by_client[host]


def timeout_response(detail: str) -> bytes:
    """A 408 problem document, written on the connection before it is closed."""
    body = json.dumps({"type": "https://herald.dev/problems/request_timeout", "title": "request timeout",
                       "status": 408, "detail": detail}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


# What this module reads of uvicorn's HTTP protocol (httptools' or h11's, whichever `AutoHTTPProtocol` is) beyond
# its constructor: its current request/response cycle, the cycle's state, and its flow control. An upgrade that
# renames one fails tests/unit/shared/test_serving_uvicorn_seam.py.
UVICORN_SEAM = {"protocol": ("cycle", "flow"), "cycle": ("more_body", "response_started", "response_complete"),
                "flow": ("read_paused",)}


SLOW_REQUEST = {"head": "request head not received in time: connection closed",
                "body": "request body arriving too slowly: connection closed",
                "send": "answer not read by its client in time: connection closed"}


class GuardedConnection(asyncio.Protocol):
    """One connection: uvicorn's own HTTP protocol does the HTTP; this one stands in front of it, refusing a
    connection over the caps as it is made and closing one whose request takes too long to arrive or whose
    answer its client does not read."""

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, caps: ConnectionCaps,
                 limits: ServerLimits) -> None:
        self.loop = _loop or asyncio.get_running_loop()
        self.http: Any = AutoHTTPProtocol(config=config, server_state=server_state,  # type: ignore[call-arg]
                                          app_state=app_state, _loop=self.loop)
        self.caps, self.clock = caps, RequestClock.of(limits, self.loop.time())
        self.sending = SendClock(limits.send_timeout)
        self.tick_seconds = min(MAX_TICK_SECONDS, limits.head_timeout / 4, limits.body_timeout / 4,
                                limits.send_timeout / 4)
        self.transport: asyncio.Transport | None = None
        self.socket: Any = None
        self.host: str | None = None
        self.admitted = False
        self.cycle: Any = None  # the request being read or answered, uvicorn's
        self.timer: asyncio.TimerHandle | None = None
        self.lingering: asyncio.TimerHandle | None = None  # the close of a connection answered 408

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.socket = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        self.host = peer[0] if isinstance(peer, tuple) and peer else None
        refusal = self.caps.admit(self.host)
        if refusal is not None:
            log.warning(f"connection refused: {refusal}", extra={"client": self.host})  # a kind per reason
            HTTP_CONNECTIONS_REFUSED.labels(refusal).inc()
            self.transport.abort()  # nothing read, nothing to say: its descriptor is freed at once
            return
        self.admitted = True
        HTTP_CONNECTIONS.inc()
        self.http.connection_made(transport)
        self.timer = self.loop.call_later(self.tick_seconds, self._tick)

    def data_received(self, data: bytes) -> None:
        if self.lingering is not None:
            return  # the rest of a request already answered 408
        self._follow()  # an answer sent since the last tick: these bytes start the next head
        self.clock.got(len(data), self.loop.time())
        self.http.data_received(data)
        self._follow()

    def eof_received(self) -> bool | None:
        if self.lingering is not None:
            return None  # the client read the 408 and left: the transport closes
        return cast(bool | None, self.http.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.caps.release(self.host)
        HTTP_CONNECTIONS.dec()
        for timer in (self.timer, self.lingering):
            if timer is not None:
                timer.cancel()
        self.http.connection_lost(exc)

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.sending.taken(self.loop.time())
        self.http.resume_writing()

    def _follow(self) -> None:
        """Moves the clock to what uvicorn's protocol is doing now: reading a new request's body, its service
        answering, or awaiting the next head once the answer is sent."""
        now, cycle = self.loop.time(), self.http.cycle
        if cycle is None:
            return
        if cycle is not self.cycle:
            self.cycle = cycle
            self.clock.enter("body" if cycle.more_body else "app", now)
        if cycle.response_complete:
            if self.clock.phase != "head":
                self.clock.enter("head", now)
        elif self.clock.phase == "body" and not cycle.more_body:
            self.clock.enter("app", now)

    def _tick(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        now, unsent = self.loop.time(), self.transport.get_write_buffer_size()
        if unsent:  # the socket's buffer is full: how much of it the client has taken shows in the kernel's count
            unsent += send_queue_bytes(self.socket)
        overdue: Overdue | None = "send" if self.sending.tick(unsent, now) else None
        if overdue is None and self.transport.is_closing():
            if not unsent:
                return
            # Closed by uvicorn (keep-alive's end, `connection: close`) with an answer still held: the transport
            # holds the connection until its client reads it, so only the send deadline is left to end it.
        elif overdue is None:
            self._follow()
            # The next head's time runs once the answer is sent (a client that does not read it sends nothing).
            overdue = self.clock.tick(now, reading=not self.http.flow.read_paused and not unsent)
        if overdue is None:
            self.timer = self.loop.call_later(self.tick_seconds, self._tick)
            return
        self._close_overdue(overdue)

    def _close_overdue(self, overdue: Overdue) -> None:
        assert self.transport is not None
        HTTP_CONNECTIONS_CUT.labels(f"{overdue}_timeout").inc()
        log.warning(SLOW_REQUEST[overdue], extra={"client": self.host})
        if overdue == "send":
            self.transport.abort()  # half an answer is on its way: nothing more can be said
            return
        cycle = self.cycle
        if overdue == "head":
            # 408 when part of a new head came; not to an idle connection, nor after an answer whose request body
            # was still arriving (those bytes were no new request's).
            answer = self.clock.received > 0 and (cycle is None or not cycle.more_body)
            detail = f"the request's head did not arrive within {self.clock.head_timeout:g} s"
        else:
            answer = not cycle.response_started
            detail = (f"the request body arrived too slowly (a pause of {self.clock.body_timeout:g} s, or less "
                      f"than {self.clock.body_min_rate:,} bytes a second past {self.clock.body_timeout:g} s)")
        if answer:
            self.transport.write(timeout_response(detail))
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # the client does not read either
        elif answer and self.transport.can_write_eof():
            self.transport.write_eof()
            self.transport.resume_reading()  # uvicorn may have paused it: the unread bytes are what resets
            self.lingering = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


class QuietDisconnects:
    """ASGI: a request whose client left while its body was read (or that was cut for arriving too slowly) ends
    there, logged at INFO, instead of uvicorn's ERROR traceback of the route's `ClientDisconnect`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            log.info("client disconnected before its request body was read", extra={"path": scope.get("path")})


def out_of_descriptors(context: dict[str, Any]) -> bool:
    """Whether an event loop's error is accept() failing for want of descriptors or memory (EMFILE and kin)."""
    exc = context.get("exception")
    return (isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES
            and "accept" in str(context.get("message", "")))


ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def accept_errors_logged_once(previous: ExceptionHandler | None) -> ExceptionHandler:
    """An event loop's exception handler: accept() out of descriptors is one ERROR line per interval (asyncio
    reports it for every pending connection, thousands a second under a flood, each with a traceback); anything
    else goes to `previous` (the loop's default handler if none)."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if out_of_descriptors(context):
            HTTP_CONNECTIONS_REFUSED.labels("out_of_descriptors").inc()
            log.error("cannot accept connections: out of file descriptors",
                      extra={"error": str(context.get("exception"))})
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle


class HeraldServer(uvicorn.Server):
    """uvicorn's server without its signal handling (main.py owns SIGTERM/SIGINT, see lifecycle.py), and with
    accept()'s "Too many open files" logged once per interval (`accept_errors_logged_once`)."""

    previous_handler: ExceptionHandler | None = None

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(accept_errors_logged_once(self.previous_handler))
        try:
            await super().startup(sockets)
        except BaseException:
            loop.set_exception_handler(self.previous_handler)
            raise

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            asyncio.get_running_loop().set_exception_handler(self.previous_handler)


def keep_alive_seconds(limits: ServerLimits) -> int:
    """uvicorn's idle timeout: past the head deadline, so that deadline is what closes an idle connection."""
    return math.ceil(limits.head_timeout) + 1


def serve_guarded(app: Any, host: str, port: int, forwarded_allow_ips: str,
                  limits: ServerLimits | None = None) -> uvicorn.Server:
    """`herald_shared.http.make_server`'s server: uvicorn with Herald's per-connection limits (`ServerLimits`,
    from the environment unless given)."""
    limits = limits or ServerLimits.from_environment()
    open_files = raise_open_files_limit(limits.max_connections + RESERVED_DESCRIPTORS)
    max_connections = connections_allowed(limits.max_connections, open_files)
    if max_connections < limits.max_connections:
        log.warning("HERALD_HTTP_MAX_CONNECTIONS lowered to what the open-file limit leaves",
                    extra={"configured": limits.max_connections, "allowed": max_connections,
                           "open_files": open_files})
    caps = ConnectionCaps(limits, TrustedProxies(forwarded_allow_ips), max_connections)
    # uvicorn calls `http` as it would its own protocol class (config, server_state, app_state, _loop).
    protocol = functools.partial(GuardedConnection, caps=caps, limits=limits)
    # An idle kept-alive connection is closed by the head deadline (HERALD_HTTP_HEAD_TIMEOUT_SECONDS, as documented),
    # not by uvicorn's own 5 s: that equalled httpx's keep-alive expiry, and a request sent on a connection in the
    # moment uvicorn closed it was lost (ReadError, "Server disconnected"; the demo hit it under load).
    config = uvicorn.Config(QuietDisconnects(app), host=host, port=port, log_config=None, access_log=False,
                            lifespan="off", proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips,
                            http=cast(type[asyncio.Protocol], protocol),
                            timeout_keep_alive=keep_alive_seconds(limits))
    return HeraldServer(config)
