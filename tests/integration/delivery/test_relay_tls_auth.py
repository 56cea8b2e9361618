"""The relay connection with STARTTLS and AUTH, against an aiosmtpd relay that requires both."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from herald_shared.contract.delivery import MessageSent
from tests.conftest import eventually, free_port
from tests.samples import campaign_queued

from .conftest import RelayBehaviour, RelayHandler, World


class TlsAuthRelay(RelayHandler):
    def __init__(self) -> None:
        super().__init__(RelayBehaviour())
        self.sessions: list[tuple[bool, str | None]] = []  # (TLS on, authenticated user) per accepted message

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.sessions.append((session.ssl is not None, login))
        return await super().handle_DATA(server, session, envelope)


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"herald", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture
def tls_relay(tmp_path: Path) -> Any:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days",
                    "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = TlsAuthRelay()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, authenticator=authenticate, auth_require_tls=True)
    controller.start()
    handler.port = controller.port  # type: ignore[attr-defined]
    yield handler
    controller.stop()


async def test_delivery_sends_over_starttls_with_auth(start_delivery: Any, tls_relay: Any, world: World) -> None:
    await start_delivery(HERALD_SMTP_PORT=tls_relay.port, HERALD_SMTP_STARTTLS=True, HERALD_SMTP_VERIFY_TLS=False,
                         HERALD_SMTP_USERNAME="herald", HERALD_SMTP_PASSWORD="s3cret")
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "a@example.org"), ("s2", "b@example.org")])
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(tls_relay.mailed, lambda r: len(r) == 2, what="both sent over TLS with AUTH")
    assert tls_relay.sessions == [(True, "herald"), (True, "herald")]
    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) == 2, "sent")
    assert all(e.payload.smtp_code == 250 for e in events if isinstance(e, MessageSent))


async def test_wrong_credentials_defer_instead_of_losing_the_message(start_delivery: Any, tls_relay: Any,
                                                                    world: World) -> None:
    from herald_shared.contract.delivery import MessageDeferred

    await start_delivery(HERALD_SMTP_PORT=tls_relay.port, HERALD_SMTP_STARTTLS=True, HERALD_SMTP_VERIFY_TLS=False,
                         HERALD_SMTP_USERNAME="herald", HERALD_SMTP_PASSWORD="wrong")
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "a@example.org")])
    await world.publish(campaign_queued("acme", "c1"))
    events = await world.wait_for(lambda es: any(isinstance(e, MessageDeferred) for e in es), "deferred")
    deferred = next(e for e in events if isinstance(e, MessageDeferred)).payload
    assert deferred.smtp_code is None  # our configuration, not the recipient: deferred, never bounced
    assert "AUTH refused: 535 5.7.8" in deferred.diagnostic
    assert tls_relay.recipients() == []
