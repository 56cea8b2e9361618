"""The relay: persistent aiosmtplib connections (STARTTLS and AUTH when configured), one per sender worker.

A transaction's result is always an SmtpReply: the relay's code and text, or code None when the
connection failed (the message is then deferred and the connection opened again for the next one).
"""

from __future__ import annotations

import functools
import logging
import ssl
import time
from dataclasses import dataclass

import aiosmtplib

from . import metrics
from .domain import SmtpReply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayConfig:
    host: str
    port: int = 25
    starttls: bool = False  # upgrade with STARTTLS (required when True)
    implicit_tls: bool = False  # TLS from the first byte (port 465)
    verify_tls: bool = True
    username: str | None = None
    password: str | None = None
    timeout: float = 60.0
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


class RelayConnection:
    """One persistent SMTP session, opened lazily and reopened after any failure."""

    def __init__(self, config: RelayConfig) -> None:
        self._config = config
        self._client: aiosmtplib.SMTP | None = None
        self._sent_on_connection = 0

    async def _connect(self) -> aiosmtplib.SMTP:
        c = self._config
        client = aiosmtplib.SMTP(hostname=c.host, port=c.port, use_tls=c.implicit_tls, start_tls=c.starttls,
                                 tls_context=tls_context(c.verify_tls) if (c.starttls or c.implicit_tls) else None,
                                 timeout=c.timeout, local_hostname=c.helo_name,
                                 username=c.username, password=c.password)
        await client.connect()
        metrics.POOL_CONNECTIONS.labels("open").inc()
        self._sent_on_connection = 0
        return client

    async def send(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        started = time.perf_counter()
        if self._client is None or not self._client.is_connected:
            await self.close()
            try:
                self._client = await self._connect()
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                # Refused TLS or AUTH is our relay's configuration, never the recipient's fault: the message
                # is deferred (and retried), not bounced.
                metrics.SMTP_SECONDS.observe(time.perf_counter() - started)
                return SmtpReply(None, f"connecting to relay {self._config.host}:{self._config.port} failed: "
                                       f"{type(exc).__name__}: {exc}", stage="connect")
        try:
            client = self._client
            _refused, response = await client.sendmail(mail_from, [recipient], data)
            self._sent_on_connection += 1
            if self._sent_on_connection >= self._config.max_messages_per_connection:
                await self.close(quit_politely=True)
            reply = _parse_ok(response)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            reply = SmtpReply(refused.code, refused.message, stage="rcpt")
            await self._reset()
        except aiosmtplib.SMTPSenderRefused as exc:
            reply = SmtpReply(exc.code, exc.message, stage="mail")
            await self._reset()
        except aiosmtplib.SMTPResponseException as exc:
            # MAIL FROM or DATA refused (SMTPSenderRefused, SMTPDataError...): the relay's own reply.
            reply = SmtpReply(exc.code, exc.message)
            await self._reset()
        except UnicodeEncodeError as exc:
            # A non-ASCII address the relay cannot take without SMTPUTF8: permanent for this recipient.
            reply = SmtpReply(553, f"5.6.7 address cannot be sent without SMTPUTF8: {exc}", stage="rcpt")
            await self.close()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            reply = SmtpReply(None, f"connection to relay {self._config.host}:{self._config.port} failed: "
                                    f"{type(exc).__name__}: {exc}", stage="connect")
            await self.close()
        metrics.SMTP_SECONDS.observe(time.perf_counter() - started)
        return reply

    async def _reset(self) -> None:
        """After a refused transaction the session is reused; if RSET fails, the connection is dropped."""
        if self._client is None:
            return
        try:
            if self._client.is_connected:
                await self._client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            await self.close()

    async def close(self, quit_politely: bool = False) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        metrics.POOL_CONNECTIONS.labels("open").dec()
        try:
            if quit_politely and client.is_connected:
                await client.quit()
            else:
                client.close()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()


def _parse_ok(response: str) -> SmtpReply:
    """aiosmtplib gives the final reply's text; its code is 250 when sendmail returns normally."""
    code, _, text = response.partition(" ")
    if code.isdigit() and len(code) == 3:
        return SmtpReply(int(code), text)
    return SmtpReply(250, response)
