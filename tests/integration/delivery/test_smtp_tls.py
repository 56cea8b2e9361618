"""Opportunistic STARTTLS and AUTH never in the clear (herald_delivery.smtp), against a real local relay: aiosmtpd
with STARTTLS and a self-signed certificate (the relay of tests/integration/delivery/test_relay_tls_auth.py), and a
scripted relay for a refused STARTTLS. No stack: the relay is a thread and a socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from herald_delivery.smtp import RelayConfig, RelayConnection, tls_context
from tests.conftest import free_port

from .conftest import TlsAuthRelay, authenticate

MESSAGE = b"From: a@herald.example\r\nTo: r@example.org\r\nSubject: tls\r\n\r\nthe newsletter\r\n"


class RecordingRelay(TlsAuthRelay):
    """Also keeps, per EHLO, whether it came over TLS; and every AUTH attempt (the credentials it carried)."""

    def __init__(self) -> None:
        super().__init__()
        self.hellos: list[bool] = []
        self.auth_attempts: list[Any] = []

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        self.hellos.append(session.ssl is not None)
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        self.auth_attempts.append(auth_data)
        return authenticate(server, session, envelope, mechanism, auth_data)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    folder = tmp_path_factory.mktemp("relay-cert")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def start_relay(certificate: tuple[Path, Path]) -> Iterator[Callable[..., RecordingRelay]]:
    """Starts an aiosmtpd relay, with STARTTLS offered (`tls=True`) or not, and AUTH; gives its handler."""
    controllers: list[Controller] = []

    def start(*, tls: bool, auth_require_tls: bool = True) -> RecordingRelay:
        context = None
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*certificate)
        handler = RecordingRelay()
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=context,
                                require_starttls=tls, authenticator=handler.authenticate,
                                auth_require_tls=auth_require_tls)
        controller.start()
        controllers.append(controller)
        handler.port = controller.port  # type: ignore[attr-defined]
        return handler

    yield start
    for controller in controllers:
        controller.stop()


def config(relay: Any, **overrides: Any) -> RelayConfig:
    """Herald's defaults (HERALD_SMTP_STARTTLS=false, certificates checked), on the test relay."""
    return RelayConfig(**{"host": "127.0.0.1", "port": relay.port, "helo_name": "herald.test", "timeout": 5.0,
                          **overrides})


async def send(connection: RelayConnection, n: int = 1) -> list[tuple[int | None, str]]:
    replies = [await connection.send("b@herald.example", f"r{i}@example.org", MESSAGE) for i in range(n)]
    return [(reply.code, reply.text) for reply in replies]


async def test_starttls_is_used_when_offered_though_not_required(start_relay: Callable[..., RecordingRelay]) -> None:
    relay = start_relay(tls=True)
    connection = RelayConnection(config(relay, verify_tls=False))
    replies = await send(connection, 2)
    session = connection._session
    assert session is not None and session.encrypted() and session.offers("PIPELINING")
    await connection.close()
    assert [code for code, _ in replies] == [250, 250], replies
    assert relay.sessions == [(True, None), (True, None)]
    # One connection for both messages; EHLO again after the upgrade (RFC 3207 4.2).
    assert relay.hellos == [False, True]


async def test_credentials_go_over_the_upgraded_session_only(start_relay: Callable[..., RecordingRelay]) -> None:
    relay = start_relay(tls=True)  # offers AUTH only over TLS, as it should
    connection = RelayConnection(config(relay, verify_tls=False, username="herald", password="s3cret"))
    replies = await send(connection)
    await connection.close()
    assert replies[0][0] == 250, replies
    assert relay.sessions == [(True, "herald")]


async def test_credentials_are_never_sent_to_a_relay_without_tls(start_relay: Callable[..., RecordingRelay]) -> None:
    relay = start_relay(tls=False, auth_require_tls=False)  # would take the password in the clear
    connection = RelayConnection(config(relay, username="herald", password="s3cret"))
    reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    await connection.close()
    assert reply.code is None and reply.stage == "connect", reply  # deferred: our relay, not the recipient
    assert "AUTH is never sent in the clear" in reply.text, reply.text
    assert relay.auth_attempts == [] and relay.recipients() == []


async def test_without_tls_or_credentials_mail_still_goes_in_the_clear(
        start_relay: Callable[..., RecordingRelay]) -> None:
    relay = start_relay(tls=False)
    connection = RelayConnection(config(relay))
    replies = await send(connection)
    await connection.close()
    assert replies[0][0] == 250 and relay.sessions == [(False, None)]


async def test_required_starttls_still_refuses_a_relay_without_it(start_relay: Callable[..., RecordingRelay]) -> None:
    relay = start_relay(tls=False)
    connection = RelayConnection(config(relay, starttls=True))
    reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    assert reply.code is None and "STARTTLS is required but the relay does not offer it" in reply.text, reply
    assert relay.recipients() == []


async def test_a_certificate_that_does_not_verify_fails_opportunistic_tls_as_required_tls(
        start_relay: Callable[..., RecordingRelay]) -> None:
    relay = start_relay(tls=True, auth_require_tls=False)
    for required in (False, True):
        connection = RelayConnection(config(relay, starttls=required))  # certificates checked: the default
        reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
        assert reply.code is None and reply.stage == "connect", reply
        assert "TLS certificate does not verify" in reply.text, reply.text
        assert connection._session is None  # closed, never continued in the clear
    assert relay.recipients() == [] and relay.hellos == [False, False]


async def test_a_relays_own_ca_in_ssl_cert_file_verifies(start_relay: Callable[..., RecordingRelay],
                                                          certificate: tuple[Path, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What a local relay with a self-signed certificate configures to keep certificates checked."""
    relay = start_relay(tls=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    tls_context.cache_clear()  # the contexts are built once per process, with the environment of then
    try:
        connection = RelayConnection(config(relay, username="herald", password="s3cret"))
        replies = await send(connection)
        await connection.close()
    finally:
        monkeypatch.undo()
        tls_context.cache_clear()
    assert replies[0][0] == 250, replies
    assert relay.sessions == [(True, "herald")]


@pytest.fixture
async def refusing_relay() -> AsyncIterator[tuple[int, list[bytes]]]:
    """Offers STARTTLS and AUTH, refuses STARTTLS with 454 (Postfix without its certificate does), accepts the
    rest; gives its port and every line it received (all of them in the clear)."""
    received: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test\r\n")
        while line := await reader.readline():
            received.append(line.rstrip(b"\r\n"))
            command = line.split(b" ")[0].strip().upper()
            if command == b"EHLO":
                writer.write(b"250-relay.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n")
            elif command == b"STARTTLS":
                writer.write(b"454 4.7.0 TLS not available due to local problem\r\n")
            elif command == b"AUTH":
                writer.write(b"235 2.7.0 ok\r\n")
            elif command == b"DATA":
                writer.write(b"354 go ahead\r\n")
                received.append(await reader.readuntil(b"\r\n.\r\n"))
                writer.write(b"250 2.0.0 queued\r\n")
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1]), received
    server.close()


async def test_a_refused_starttls_goes_on_in_the_clear_only_without_credentials(
        refusing_relay: tuple[int, list[bytes]]) -> None:
    port, received = refusing_relay
    relay = RelayConfig("127.0.0.1", port, helo_name="herald.test", timeout=5.0)
    connection = RelayConnection(relay)
    sent = await connection.send("b@herald.example", "r@example.org", MESSAGE)
    await connection.close()
    assert sent.code == 250, sent

    received.clear()
    for required, credentials in ((False, True), (True, False)):
        connection = RelayConnection(RelayConfig("127.0.0.1", port, helo_name="herald.test", timeout=5.0,
                                                 starttls=required, username="herald" if credentials else None,
                                                 password="s3cret" if credentials else None))
        reply = await connection.send("b@herald.example", "r@example.org", MESSAGE)
        await connection.close()
        assert reply.code is None and reply.stage == "connect", reply
        assert ("AUTH is never sent in the clear" if credentials else "STARTTLS refused: 454") in reply.text
    assert [line for line in received if line.startswith((b"AUTH", b"MAIL"))] == []
