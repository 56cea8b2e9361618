"""The delivery service against the real stack and a real SMTP relay the test starts (aiosmtpd on a TCP
port, in its own thread). Other services' events are published as those services would publish them."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from herald_campaigns.main import Campaigns, CampaignsSettings
from herald_delivery.main import Delivery, DeliverySettings
from herald_shared.apikeys import new_api_key
from herald_shared.contract import Event, parse_event
from herald_shared.contract.billing import AccountApproved, AccountOpened, ApiKeyIssued, PlanChanged
from herald_shared.contract.delivery import DeliveryHeld
from herald_shared.contract.subscriptions import (
    ListCreated,
    SubscriberAdded,
    SubscriberConfirmed,
)
from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions, SubscriptionsSettings
from tests.conftest import eventually, free_port

SECRET = "test-link-secret-0123456789"
BOUNCE_DOMAIN = "bounces.herald.test"


@dataclass
class Received:
    mail_from: str
    recipient: str
    data: bytes
    started_at: float  # when MAIL FROM arrived (time.time())
    accepted_at: float  # when 250 was answered to the end of DATA


@dataclass
class RelayBehaviour:
    """Scripted answers per recipient, consumed in order: ("rcpt"|"data", "451 4.7.1 ..." or "drop"), or
    ("data", "late:SECONDS"): the message is queued, as a real relay would, but its 250 comes SECONDS later, even
    when the client has given up waiting by then."""

    script: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering the end of DATA
    frozen: threading.Event = field(default_factory=threading.Event)  # while set, DATA is never answered
    # Called (in the relay's thread) when a message arrives, before it is answered; for kill tests.
    on_data: Callable[[int], None] | None = None
    # Offered in the EHLO reply, as Postfix and most relays do: the sender then writes MAIL FROM, RCPT TO and
    # DATA at once (RFC 2920), and the scripted refusals below reach it as pipelined replies.
    pipelining: bool = True
    smtputf8: bool = True  # aiosmtpd offers SMTPUTF8; False takes it out of the EHLO reply


class RelayHandler:
    def __init__(self, behaviour: RelayBehaviour) -> None:
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.attempts: list[tuple[str, str]] = []  # (recipient, what happened)
        self._lock = threading.Lock()

    def _next(self, recipient: str, stage: str) -> str | None:
        with self._lock:
            steps = self.behaviour.script.get(recipient)
            if steps and steps[0][0] == stage:
                return steps.pop(0)[1]
        return None

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.behaviour.pipelining:
            responses.insert(-1, "250-PIPELINING")
        if not self.behaviour.smtputf8:
            responses = [r for r in responses if r != "250-SMTPUTF8"]
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        envelope.mail_from = address
        session.herald_started = time.time()
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        answer = self._next(address, "rcpt")
        if answer is not None:
            self.attempts.append((address, answer))
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipient = envelope.rcpt_tos[0]
        answer = self._next(recipient, "data")
        if answer == "drop":
            self.attempts.append((recipient, "drop"))
            server.transport.close()
            return "421 4.4.2 connection dropped by the test"
        if answer is not None and answer.startswith("late:"):
            self._queue(envelope, session, recipient)
            await asyncio.sleep(float(answer.removeprefix("late:")))
            return "250 2.0.0 OK queued, late"
        if answer is not None:
            self.attempts.append((recipient, answer))
            return answer
        if self.behaviour.on_data is not None:
            self.behaviour.on_data(len(self.received))
        if self.behaviour.delay:
            await asyncio.sleep(self.behaviour.delay)
        while self.behaviour.frozen.is_set():
            if server.transport is None or server.transport.is_closing():
                return "421 4.4.2 gone"  # the client died while we held the reply: not accepted
            await asyncio.sleep(0.01)
        if server.transport is None or server.transport.is_closing():
            return "421 4.4.2 gone"
        self._queue(envelope, session, recipient)
        return "250 2.0.0 OK queued"

    def _queue(self, envelope: Any, session: Any, recipient: str) -> None:
        with self._lock:
            self.received.append(Received(envelope.mail_from, recipient, envelope.original_content or
                                          envelope.content, getattr(session, "herald_started", time.time()),
                                          time.time()))
        self.attempts.append((recipient, "250"))

    def recipients(self) -> list[str]:
        with self._lock:
            return [r.recipient for r in self.received]

    async def mailed(self) -> list[str]:
        """recipients(), as a probe for `eventually`."""
        return self.recipients()


@pytest.fixture
def relay() -> Any:
    behaviour = RelayBehaviour()
    handler = RelayHandler(behaviour)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port  # type: ignore[attr-defined]
    yield handler
    behaviour.frozen.clear()
    controller.stop()


@dataclass
class World:
    """Publishes what the other services would, and reads what delivery published."""

    settings: HeraldSettings
    publisher: EventPublisher

    async def publish(self, *events: Event) -> None:
        await self.publisher.publish_many(list(events))

    async def open_account(self, account_id: str, *, approved: bool = True, edition: str = "standard") -> None:
        events: list[Event] = [AccountOpened(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
            "company_name": f"{account_id} Ltd", "registered_email": f"owner@{account_id}.example",
            "main_username": "owner", "terms_accepted_at": "2026-11-01T00:00:00Z"})]
        if edition == "pro":
            events.append(PlanChanged(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
                "plan": "monthly", "edition": "pro", "tier_subscriber_limit": 1000, "effective_at":
                    "2026-11-01T00:00:00Z"}))
        if approved:
            events.append(AccountApproved(account_id=account_id, producer="billing",
                                          payload={"reviewer": "staff"}))  # type: ignore[arg-type]
        await self.publish(*events)

    async def add_list(self, account_id: str, list_id: str, members: list[tuple[str, str]],
                       confirmed: bool = True, **fields: Any) -> None:
        """members: (subscriber_id, email); all confirmed (active) unless told otherwise."""
        events: list[Event] = [ListCreated(account_id=account_id, producer="subscriptions",  # type: ignore[arg-type]
                                           payload={"list_id": list_id, "name": list_id, "opt_in": "single"})]
        for subscriber_id, address in members:
            events.append(SubscriberAdded(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
                "list_id": list_id, "subscriber_id": subscriber_id, "email": address, "first_name": "Ann",
                "email_sha256": hashlib.sha256(address.encode()).hexdigest(),
                "opt_in": "single", "custom_fields": fields,
                "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "test"}}))
            if confirmed:
                events.append(SubscriberConfirmed(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
                    "list_id": list_id, "subscriber_id": subscriber_id, "method": "single_opt_in"}))
        await self.publish(*events)

    async def events(self, topic: str = "herald.delivery") -> list[Event]:
        found: list[Event] = []
        async for records in read_from_start(self.settings, [self.settings.topics(topic)]):
            found += [parse_event(r.value) for r in records]
        return found

    async def wait_for(self, predicate: Callable[[list[Event]], bool], what: str,
                       within: float = 60.0) -> list[Event]:
        return await eventually(self.events, predicate, within=within, what=what)


def delivery_settings(settings: HeraldSettings, relay_port: int, **overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {
        **settings.model_dump(), "HERALD_LINK_SECRET": SECRET, "HERALD_PUBLIC_URL": "http://track.test",
        "HERALD_SUBSCRIPTIONS_URL": "http://subs.test", "HERALD_SMTP_HOST": "127.0.0.1",
        "HERALD_SMTP_PORT": relay_port, "HERALD_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
        "HERALD_INBOUND_SMTP_PORT": free_port(), "HERALD_SEND_CONCURRENCY": 4,
        "HERALD_RETRY_FIRST_DELAY_SECONDS": 0.3, "HERALD_RETRY_MAX_DELAY_SECONDS": 1.0,
        "HERALD_SEND_POLL_SECONDS": 0.2, "HERALD_HELD_REPORT_SECONDS": 0.3}
    values.update(overrides)
    return DeliverySettings(**values)


@dataclass
class Running:
    service: Delivery
    world: World
    http: httpx.AsyncClient


@pytest.fixture
async def world(settings: HeraldSettings, producer: Any) -> World:
    return World(settings, EventPublisher(producer, settings.topics))


@pytest.fixture
async def start_delivery(settings: HeraldSettings, world: World, relay: Any) -> AsyncIterator[
        Callable[..., Any]]:
    started: list[Delivery] = []

    async def start(**overrides: Any) -> Running:
        service = Delivery(delivery_settings(settings, relay.port, **overrides))
        await service.start()
        started.append(service)
        await eventually(service._running, bool, what="delivery consumers and sender running")
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app, client=("198.51.100.9", 5000)),
                                 base_url="http://track.test")
        return Running(service, world, http)

    yield start
    for service in started:
        await service.stop()


def dsn(recipient: str, action: str, status: str, diagnostic: str, original_headers: str = "") -> str:
    return delivery_report(recipient, f"Final-Recipient: rfc822; someone@example.org\r\nAction: {action}\r\n"
                                      f"Status: {status}\r\nDiagnostic-Code: smtp; {diagnostic}\r\n",
                           original_headers=original_headers)


def delivery_report(recipient: str, *per_recipient: str, original_headers: str = "") -> str:
    """An RFC 3464 report with these per-recipient field blocks, as it arrives at the inbound server."""
    fields = "\r\n".join(per_recipient)
    return (f"From: MAILER-DAEMON@mx.example.org\r\nTo: {recipient}\r\nSubject: Undelivered Mail\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
            "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.org\r\nArrival-Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\n"
            f"{fields}\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{original_headers}\r\n--B--\r\n")


async def mail_inbound(running: Running, recipient: str, body: str,
                       sender: str = "MAILER-DAEMON@mx.example.org") -> None:
    """Mail a report to the inbound server over SMTP; it answers 250 once the report is recorded."""
    await aiosmtplib.send(body.encode(), sender=sender, recipients=[recipient], hostname="127.0.0.1",
                          port=running.service.settings.inbound_port)


def tracking_paths(message: bytes) -> tuple[str, list[str]]:
    """The open pixel's path and the click paths (in link order) of one sent message."""
    html_part = email.message_from_bytes(message, policy=email.policy.default).get_body(("html",))
    assert html_part is not None
    parts = html_part.get_content().split("http://track.test")[1:]
    pixel = next(part.split('"')[0] for part in parts if part.startswith("/t/o/"))
    return pixel, [part.split("'")[0].split('"')[0] for part in parts if part.startswith("/t/c/")]


@dataclass
class SubscriptionsBeside:
    """The subscriptions service running next to delivery (they talk only through Kafka), with an API key of
    the account `acme`."""

    service: Subscriptions
    api: httpx.AsyncClient

    def pages(self, client_ip: str = "203.0.113.7") -> httpx.AsyncClient:
        """The hosted pages, as seen from one client address."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.service.app, client=(client_ip, 4711)),
                                 base_url="http://subs.test")


@pytest.fixture
async def subscriptions(settings: HeraldSettings, world: World) -> AsyncIterator[SubscriptionsBeside]:
    service = Subscriptions(SubscriptionsSettings(**settings.model_dump(), HERALD_LINK_SECRET=SECRET,
                                                  HERALD_PUBLIC_URL="http://subs.test"))
    await service.start()
    try:
        key_id, key, key_hash = new_api_key()
        await world.open_account("acme")
        await world.publish(ApiKeyIssued(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
            "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}))
        await eventually(lambda: service.apikeys.authenticate(key), lambda a: a == "acme", what="API key")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://subs.test",
                                     headers={"Authorization": f"Bearer {key}"}) as api:
            yield SubscriptionsBeside(service, api)
    finally:
        await service.stop()


@asynccontextmanager
async def campaigns_running(settings: HeraldSettings, key: str) -> AsyncIterator[Campaigns]:
    """The campaigns service beside delivery, acme.example a shared sending domain (no DNS here), once it holds acme
    on a paid plan (tests to any address, no trial review) and acme's API key `key`."""
    service = Campaigns(CampaignsSettings(**{**settings.model_dump(),
                                             "HERALD_CAMPAIGNS_SHARED_SENDING_DOMAINS": "acme.example"}))
    await service.start()
    try:
        store = service.service.store
        await eventually(lambda: store.account("acme"), lambda a: a is not None and a.plan == "monthly",
                         what="acme on a paid plan")
        await eventually(lambda: service.apikeys.authenticate(key), lambda a: a == "acme", what="the key in campaigns")
        yield service
    finally:
        await service.stop()


def held(events: list[Any], gate: str) -> list[DeliveryHeld]:
    return [e for e in events if isinstance(e, DeliveryHeld) and e.payload.gate == gate]


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


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[int]]]:
    """A relay on a free port that runs the test's coroutine for each connection; gives its port."""
    servers: list[asyncio.Server] = []
    sessions: list[asyncio.Task[None]] = []

    async def start(script: Script) -> int:
        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sessions.append(asyncio.current_task())  # type: ignore[arg-type]
            try:
                await script(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(session, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
    for task in sessions:
        task.cancel()
    await asyncio.gather(*sessions, return_exceptions=True)
