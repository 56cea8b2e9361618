"""The relay: Herald's own SMTP client (RFC 5321), one persistent session per sender worker, with STARTTLS,
implicit TLS and AUTH (PLAIN or LOGIN) when configured, and PIPELINING (RFC 2920) when the relay offers it.

STARTTLS (RFC 3207) is used whenever the relay offers it, and required when configured. The certificate is
checked as when TLS is required: one that does not verify fails the connection (the message is deferred),
never a fall back to the clear. A relay that refuses STARTTLS (454) is used in the clear unless TLS is
required or credentials are configured: AUTH is never sent over an unencrypted session.

With PIPELINING, a message costs two round trips instead of four: MAIL FROM, RCPT TO and DATA go out in one
write and their three replies are read together, then the content and its end. A refused command is reported
with its own reply and stage; the replies after it (503 "no valid recipients" and the like) are read and set
aside, and the session is reset for the next message.

A transaction's result is always an SmtpReply: the relay's code and text, or code None when the connection
failed or the relay broke the protocol (the message is then deferred and the connection opened again for the
next one). A session sends at most `max_messages_per_connection` messages, then quits and reconnects, as
relays limit a session's messages.

The content is sent as rendered (CRLF line endings, the renderer's lines are short): a leading dot is doubled
(transparency, RFC 5321 4.5.2) with one bytes.replace; bare LF or CR, which the renderer never produces, are
made CRLF first.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import Literal

from . import metrics
from .domain import SmtpReply, ascii_address, without_addresses

log = logging.getLogger(__name__)

CRLF = b"\r\n"
# The longest reply line kept (RFC 5321 allows 512 octets; relays write longer texts now and then), and the
# lines of a reply kept: the rest of a longer one is read and set aside, its code kept (a refusal stays one).
MAX_REPLY_LINE = 8192
MAX_REPLY_LINES = 100
# What is read and set aside before a reply is taken for a broken connection rather than a long text.
MAX_REPLY_BYTES = 1_000_000
Stage = Literal["connect", "mail", "rcpt", "data"]
LINE_ENDING = re.compile(rb"\r\n|\r|\n")
STAGES: tuple[Stage, Stage, Stage] = ("mail", "rcpt", "data")
EXPECTED = ({250}, {250, 251}, {354})  # the replies that let a transaction go on, per command


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int = 25
    starttls: bool = False  # STARTTLS required (refuse a relay without it); False: used whenever offered
    implicit_tls: bool = False  # TLS from the first byte (port 465)
    verify_tls: bool = True
    username: str | None = None
    password: str | None = None
    timeout: float = 60.0  # each command's reply
    # The reply to the end of DATA: RFC 5321 4.5.3.2.6 asks for 10 minutes, because giving up sooner is the one
    # way a relay that accepted the message gets it a second time.
    data_timeout: float = 600.0
    helo_name: str | None = None
    max_messages_per_connection: int = 1000  # reconnect now and then, as relays limit a session's messages


@functools.cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """One TLS context per setting for every connection (loading the system's CA certificates takes tens of
    milliseconds; a context per connection cost that at each reconnect). Only built when TLS is used."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@functools.cache
def _local_name() -> str:
    """The EHLO name when none is configured: this host's name, looked up once (`getfqdn` may ask DNS, and it
    blocks the event loop while it does)."""
    return socket.getfqdn()


class RelayUnusable(Exception):
    """The connection cannot carry the transaction: refused connect, TLS or AUTH, a dropped connection, a
    timeout or a reply that breaks the protocol. The message is deferred; the session is closed."""


@dataclass
class _Reply:
    code: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def ok(self, *codes: int) -> bool:
        return self.code in codes


_CONTROLS = {code: " " for code in (*range(0x20), 0x7f) if code != 0x09}


class _Session:
    """One SMTP session: read replies, write commands. Every read is bounded by the configured timeout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.extensions: dict[str, str] = {}

    async def reply(self, timed: bool = True, within: float | None = None) -> _Reply:
        """The next reply; within the timeout (or `within` seconds), unless the caller bounds a group of replies
        itself."""
        lines: list[str] = []
        first = b""
        skipped = 0
        async with asyncio.timeout((within or self.timeout) if timed else None):
            while True:
                try:
                    raw = await self.reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    raise RelayUnusable("the relay closed the connection") from None
                except asyncio.LimitOverrunError as exc:
                    raw, set_aside = await self._long_line(exc.consumed)
                    skipped += set_aside
                line = raw.rstrip(b"\r\n")
                code, sep = line[:3], line[3:4]
                # RFC 5321 4.2: 2yz to 5yz (no 1yz reply exists in SMTP), one code for all lines of a reply
                if len(line) < 3 or not code.isdigit() or sep not in (b" ", b"-", b"") or code[:1] not in b"2345":
                    raise RelayUnusable(f"the relay sent a malformed reply: {line[:200]!r}")
                if lines and code != first:
                    raise RelayUnusable(f"the relay's reply changed its code from {first.decode()} to "
                                        f"{code.decode()} mid-reply")
                first = code
                if len(lines) < MAX_REPLY_LINES:
                    # Control characters (a NUL above all: the ledger's store cannot keep one) become spaces.
                    lines.append(line[4:].decode("utf-8", "replace").translate(_CONTROLS))
                else:
                    skipped += len(raw)
                if skipped > MAX_REPLY_BYTES:
                    raise RelayUnusable(f"the relay sent a reply of more than {MAX_REPLY_BYTES} octets")
                if sep != b"-":
                    return _Reply(int(code), lines)

    async def _long_line(self, buffered: int) -> tuple[bytes, int]:
        """A reply line longer than MAX_REPLY_LINE: its first MAX_REPLY_LINE octets, and how many more were read
        to its end and set aside (at most MAX_REPLY_BYTES)."""
        kept = await self.reader.readexactly(buffered)
        set_aside = 0
        while True:
            try:
                rest = await self.reader.readuntil(b"\n")
                return kept[:MAX_REPLY_LINE] + b"\r\n", set_aside + len(rest) + len(kept) - MAX_REPLY_LINE
            except asyncio.LimitOverrunError as exc:
                set_aside += len(await self.reader.readexactly(exc.consumed))
            except asyncio.IncompleteReadError:
                raise RelayUnusable("the relay closed the connection") from None
            if set_aside > MAX_REPLY_BYTES:
                raise RelayUnusable(f"the relay sent a reply line of more than {MAX_REPLY_BYTES} octets")

    def buffered(self) -> bool:
        """Whether the relay sent anything not read yet. asyncio's StreamReader keeps what it received in
        `_buffer` and has no public way to ask; tests/integration/delivery/test_smtp_client.py holds it to it."""
        return bool(self.reader._buffer)  # type: ignore[attr-defined]

    async def command(self, line: bytes) -> _Reply:
        self.writer.write(line + CRLF)
        await self.drain()
        return await self.reply()

    async def drain(self) -> None:
        transport = self.writer.transport
        if transport.get_write_buffer_size() == 0 and not transport.is_closing():
            return  # all of it went to the socket at once (the usual case): nothing to wait for
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()

    async def hello(self, name: str) -> None:
        """EHLO (HELO when the relay refuses it); learns the extensions offered."""
        self.extensions = {}
        reply = await self.command(b"EHLO " + name.encode("ascii"))
        if not reply.ok(250):
            reply = await self.command(b"HELO " + name.encode("ascii"))
            if not reply.ok(250):
                raise RelayUnusable(f"HELO refused: {reply.code} {reply.text}")
            return
        for line in reply.lines[1:]:
            keyword, _, params = line.partition(" ")
            self.extensions[keyword.upper()] = params

    def offers(self, extension: str) -> bool:
        return extension in self.extensions

    def encrypted(self) -> bool:
        """Whether the session runs over TLS (implicit, or after STARTTLS)."""
        return self.writer.get_extra_info("ssl_object") is not None

    async def close(self, quit_politely: bool) -> None:
        try:
            if quit_politely and not self.writer.is_closing():
                self.writer.write(b"QUIT" + CRLF)
                async with asyncio.timeout(min(self.timeout, 5.0)):
                    await self.writer.drain()
                    await self.reply()
        except (RelayUnusable, OSError, TimeoutError):
            pass
        self.writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass


class RelayConnection:
    """One persistent SMTP session, opened lazily and reopened after any failure."""

    def __init__(self, config: RelayConfig) -> None:
        self._config = config
        self._session: _Session | None = None
        self._sent_on_connection = 0
        self._awaiting_data_reply = False  # the whole message went out; the relay's verdict on it has not come
        self._replies_read = 0  # of the transaction under way

    async def _connect(self) -> _Session:
        c = self._config
        async with asyncio.timeout(c.timeout):
            reader, writer = await asyncio.open_connection(
                c.host, c.port, ssl=tls_context(c.verify_tls) if c.implicit_tls else None, limit=MAX_REPLY_LINE,
                server_hostname=c.host if c.implicit_tls else None)
        session = _Session(reader, writer, c.timeout)
        try:
            await self._introduce(session)
        except BaseException:
            await session.close(quit_politely=False)
            raise
        metrics.POOL_CONNECTIONS.labels("open").inc()
        self._sent_on_connection = 0
        return session

    async def _introduce(self, session: _Session) -> None:
        c = self._config
        greeting = await session.reply()
        if not greeting.ok(220):
            raise RelayUnusable(f"the relay refused the session: {greeting.code} {greeting.text}")
        name = c.helo_name or _local_name()
        await session.hello(name)
        if not session.encrypted():
            await self._starttls(session, name)
        if c.username is not None:
            if not session.encrypted():
                # The password would cross the network readable by anyone on the way: the relay is unusable.
                raise RelayUnusable("credentials are configured but the session is not encrypted (the relay "
                                    "offers no STARTTLS, or refused it): AUTH is never sent in the clear")
            await self._authenticate(session, c.username, c.password or "")

    async def _starttls(self, session: _Session, name: str) -> None:
        """Upgrade to TLS when the relay offers it (opportunistic) or the configuration requires it. A refused
        STARTTLS leaves the session as it was (RFC 3207 4): it goes on in the clear unless TLS is required
        (credentials are refused later). A certificate that does not verify ends the connection, as it does when
        TLS is required: the relay, or someone in the middle, is not who it should be."""
        c = self._config
        if not session.offers("STARTTLS"):
            if c.starttls:
                raise RelayUnusable("STARTTLS is required but the relay does not offer it")
            return
        reply = await session.command(b"STARTTLS")
        if reply.code < 400 and reply.code != 220:  # neither the go-ahead nor a refusal: where are we?
            raise RelayUnusable(f"the relay answered STARTTLS with {reply.code} {reply.text[:100]}, expected 220")
        if not reply.ok(220):
            if c.starttls:
                raise RelayUnusable(f"STARTTLS refused: {reply.code} {reply.text}")
            log.warning("relay %s:%s offers STARTTLS but refused it (%s %s): this session is not encrypted",
                        c.host, c.port, reply.code, reply.text[:100])
            return
        if session.buffered():  # sent in the clear after the 220, to pass for what comes over TLS
            raise RelayUnusable("the relay sent more after its 220 to STARTTLS (a response injection)")
        try:
            async with asyncio.timeout(c.timeout):
                await session.writer.start_tls(tls_context(c.verify_tls), server_hostname=c.host)
        except ssl.SSLCertVerificationError as exc:
            raise RelayUnusable(f"the relay's TLS certificate does not verify ({exc.verify_message}); a relay "
                                "with a self-signed certificate needs its CA in the bundle SSL_CERT_FILE names, "
                                "or certificate checks turned off") from None
        await session.hello(name)  # the extensions offered before TLS are forgotten (RFC 3207 4.2)

    @staticmethod
    async def _authenticate(session: _Session, username: str, password: str) -> None:
        mechanisms = session.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode())
            reply = await session.command(b"AUTH PLAIN " + token)
        elif "LOGIN" in mechanisms:
            reply = await session.command(b"AUTH LOGIN")
            for secret in (username, password):
                if not reply.ok(334):
                    break
                reply = await session.command(base64.b64encode(secret.encode()))
        else:
            raise RelayUnusable(f"the relay offers no AUTH mechanism Herald speaks (PLAIN, LOGIN): {mechanisms}")
        if not reply.ok(235):
            raise RelayUnusable(f"AUTH refused: {reply.code} {reply.text}")

    async def send(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        started = time.perf_counter()
        try:
            reply = await self._send_reconnecting_once(mail_from, recipient, data)
        except (RelayUnusable, OSError, TimeoutError, ssl.SSLError, UnicodeEncodeError) as exc:
            # Refused TLS or AUTH is our relay's configuration, never the recipient's fault: the message is
            # deferred (and retried), not bounced.
            where = f"relay {self._config.host}:{self._config.port}"
            failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self._awaiting_data_reply:
                # The relay may have accepted the message and not said so in time (RFC 1047). It is sent
                # again, as after a crash in the same window: a possible second copy, counted, never a loss.
                metrics.UNANSWERED.inc()
                reply = SmtpReply(None, f"{where} did not answer the end of DATA ({failure}); the outcome is "
                                        "unknown and the message is sent again", stage="data")
            else:
                what = "connection to" if self._session is not None else "connecting to"
                reply = SmtpReply(None, f"{what} {where} failed: {failure}", stage="connect")
            await self.close()
        metrics.SMTP_SECONDS.observe(time.perf_counter() - started)
        if "@" in reply.text:  # a relay's reply often quotes the recipient: kept out of the ledger and events
            reply = replace(reply, text=without_addresses(reply.text, recipient))
        return reply

    async def _send_reconnecting_once(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        """A pooled session the relay has closed since its last message (Postfix's 421 after smtpd_timeout, a
        NAT or load balancer dropping it silently, a relay's limit of messages a session) fails this message's
        first command. Nothing of it reached the relay then, so it goes at once on a new session rather than
        waiting for a retry; once a reply of this transaction was read, or after DATA, never (exactly once)."""
        reused = self._session is not None
        self._awaiting_data_reply = False
        self._replies_read = 0
        try:
            reply = await self._send(mail_from, recipient, data)
        except (RelayUnusable, OSError, TimeoutError, ssl.SSLError) as exc:
            if not reused or self._replies_read or self._awaiting_data_reply:
                raise
            stale = f"{type(exc).__name__}: {exc}"
        else:
            # A 421 to MAIL FROM, the first reply: the relay is closing the session, the message untouched.
            if not (reused and reply.code == 421 and self._replies_read == 1):
                return reply
            stale = f"421 {reply.text[:100]}"
        log.info("relay %s:%s closed a pooled session (%s): the message goes on a new one", self._config.host,
                 self._config.port, stale)
        metrics.STALE_SESSIONS.inc()
        await self.close()
        self._awaiting_data_reply = False
        self._replies_read = 0
        return await self._send(mail_from, recipient, data)

    async def _send(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        if refusal := _unsendable(mail_from, "mail") or _unsendable(recipient, "rcpt"):
            return refusal
        recipient = ascii_address(recipient)  # an international domain needs no SMTPUTF8: its A-labels
        if self._session is None:
            self._session = await self._connect()
        session = self._session
        utf8 = not (mail_from.isascii() and recipient.isascii())
        if utf8 and not session.offers("SMTPUTF8"):
            return SmtpReply(553, "5.6.7 address cannot be sent without SMTPUTF8 (the relay does not offer it)",
                             stage="rcpt" if not recipient.isascii() else "mail", local=True)
        options = b""
        if utf8:
            options += b" SMTPUTF8"
        if not data.isascii() and session.offers("8BITMIME"):
            options += b" BODY=8BITMIME"
        if session.buffered():  # a reply nobody asked for: every reply after it would be read for the wrong one
            raise RelayUnusable("the relay sent a reply Herald did not ask for")
        commands = [b"MAIL FROM:<" + mail_from.encode() + b">" + options,
                    b"RCPT TO:<" + recipient.encode() + b">", b"DATA"]
        pipelined = session.offers("PIPELINING")
        if pipelined:
            session.writer.write(CRLF.join(commands) + CRLF)
            await session.drain()
        refused: tuple[_Reply, Stage] | None = None
        # A pipelined group's three replies share one timeout (one timer instead of three).
        async with asyncio.timeout(session.timeout if pipelined else None):
            for line, stage, expected in zip(commands, STAGES, EXPECTED, strict=True):
                reply = await (session.reply(timed=False) if pipelined else session.command(line))
                self._replies_read += 1
                if reply.code == 421:  # the relay is closing the session: nothing more is read from it
                    break
                if reply.code not in expected and reply.code < 400:
                    # Neither what the stage needs nor a refusal (250 to DATA, 252 to RCPT TO): the relay and
                    # Herald no longer agree where the transaction is. Nothing is known to be sent: deferred.
                    raise RelayUnusable(f"the relay answered {stage} with {reply.code} {reply.text[:100]}, "
                                        f"expected {' or '.join(map(str, expected))}")
                if refused is None and reply.code not in expected:
                    refused = (reply, stage)
                    if not pipelined:
                        break
        if reply.code == 421:
            await self.close()
            first, where = refused or (reply, stage)
            return SmtpReply(first.code, first.text, stage=where)
        if refused is not None:
            if pipelined and reply.code == 354:  # DATA opened although a command before it failed (RFC 2920)
                await session.command(b".")
            await self._after_refusal(refused[0])
            return SmtpReply(refused[0].code, refused[0].text, stage=refused[1])
        session.writer.write(_transparent(data) + b"." + CRLF)
        await session.drain()
        self._awaiting_data_reply = True  # all of it is out: from here the relay may have it
        final = await session.reply(within=self._config.data_timeout)
        if final.code < 400 and final.code != 250:  # neither accepted nor refused: as if it had not answered
            raise RelayUnusable(f"the relay answered the end of DATA with {final.code} {final.text[:100]}")
        self._awaiting_data_reply = False
        if not final.ok(250):
            await self._after_refusal(final)
            return SmtpReply(final.code, final.text, stage="data")
        self._sent_on_connection += 1
        if self._sent_on_connection >= self._config.max_messages_per_connection:
            await self.close(quit_politely=True)
        return SmtpReply(final.code, final.text, stage="data")

    async def _after_refusal(self, reply: _Reply) -> None:
        """A refused transaction: the session is reset and reused, or closed after a 421 (the relay is
        closing it) or when RSET fails."""
        session = self._session
        if session is None:
            return
        if reply.code == 421:
            await self.close()
            return
        try:
            if not (await session.command(b"RSET")).ok(250):
                await self.close()
        except (RelayUnusable, OSError, TimeoutError, ssl.SSLError):
            await self.close()

    async def close(self, quit_politely: bool = False) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        metrics.POOL_CONNECTIONS.labels("open").dec()
        await session.close(quit_politely)


def _unsendable(address: str, stage: Stage) -> SmtpReply | None:
    """An address that cannot go into a command line as it is (never the case for a validated one)."""
    if not address or any(c in address for c in "\r\n<> ") or len(address) > 320:
        return SmtpReply(553, f"5.1.3 address {address[:100]!r} cannot be written in an SMTP command", stage=stage,
                         local=True)
    return None


def _transparent(data: bytes) -> bytes:
    """The content as DATA carries it: CRLF line endings, a final CRLF, every line's leading dot doubled."""
    line_ends = data.count(CRLF)
    if data.count(b"\n") != line_ends or data.count(b"\r") != line_ends:
        data = LINE_ENDING.sub(CRLF, data)
    if not data.endswith(CRLF):
        data += CRLF
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")
