"""Stand-ins for the sender's ports in delivery's unit tests (pure logic only: the integration tests talk to a real
relay, broker and store), and a sender built on them for account "acme"."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from herald_delivery.completion import CampaignCompletion
from herald_delivery.domain import AccountState, RetryPolicy, SmtpReply
from herald_delivery.handlers import GateBook
from herald_delivery.queue import JobQueue
from herald_delivery.render import DkimKey, MessageTokens, Renderer, RenderSettings
from herald_delivery.sender import Sender, SenderConfig
from herald_delivery.smtp import RelayConfig
from herald_shared.contract import Event
from herald_shared.links import LinkSigner

SECRET = "unit-test-secret-0123456789"
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CONTENT = {"subject": "News for {{ first_name | default('you') }}", "from_name": "Acme",
           "from_email": "news@acme.example", "text_body": "About you: {{ bio }}",
           "html_body": "<body><p>{{ bio }}</p><a href='https://acme.example/'>shop</a></body>"}


class Relay:
    """Accepts every message, keeping (recipient, data) of each; `on_first` runs while the first message is in its
    SMTP transaction."""

    def __init__(self, on_first: Callable[[], Awaitable[None]] | None = None) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.on_first = on_first

    @property
    def recipients(self) -> list[str]:
        return [recipient for recipient, _ in self.sent]

    async def send(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        self.sent.append((recipient, data))
        if len(self.sent) == 1 and self.on_first is not None:
            await self.on_first()
        return SmtpReply(250, "2.0.0 OK")


class Publisher:
    """Keeps what it is given to publish, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.events.append(event)


class Store:
    """The sender's store, in memory: acme's campaign c1 and test send t1, and the outcomes recorded."""

    def __init__(self) -> None:
        self.recorded: list[dict[str, Any]] = []
        self.campaigns = {"acme:c1": {"content": CONTENT}}
        self.tests = {"acme:t1": {"content": CONTENT, "sample": {"first_name": "Sample", "bio": "sample bio"}}}

    async def record(self, outcome: dict[str, Any]) -> None:
        self.recorded.append(outcome)

    async def campaign(self, account_id: str, campaign_id: str) -> Any:
        return self.campaigns.get(f"{account_id}:{campaign_id}")

    async def test_send(self, account_id: str, test_id: str) -> Any:
        return self.tests.get(f"{account_id}:{test_id}")


class Announcements:
    """Where CampaignCompletion keeps the campaigns' ends (in memory)."""

    def __init__(self) -> None:
        self.finished: dict[str, dict[str, Any]] = {}

    async def mark_expanded(self, account_id: str, campaign_id: str, jobs: int, token: str) -> None:
        return None

    async def record_finished(self, doc: dict[str, Any]) -> dict[str, Any]:
        return self.finished.setdefault(doc["_id"], doc)

    async def mark_finished_published(self, key: str) -> None:
        self.finished[key]["published"] = True

    async def announcement(self, key: str) -> bool | None:
        return None if key not in self.finished else bool(self.finished[key].get("published"))

    async def close_campaign(self, key: str) -> None:
        return None


def sender(account: AccountState, completion: bool = False) -> tuple[Sender, Store, Publisher]:
    gates = GateBook()
    gates.accounts["acme"] = account
    store, publisher = Store(), Publisher()
    renderer = Renderer(RenderSettings("https://t.example", "bounces.example"), MessageTokens(SECRET),
                        LinkSigner(SECRET, "https://lists.example"), {})
    jobs = JobQueue(gates.changed)
    ends = CampaignCompletion(Announcements(), jobs, publisher) if completion else None  # type: ignore[arg-type]
    return Sender(store, gates, jobs, renderer, RelayConfig("127.0.0.1"),  # type: ignore[arg-type]
                  publisher, RetryPolicy(), SenderConfig(), completion=ends), store, publisher  # type: ignore[arg-type]


def campaign_job(message_id: str, subscriber_id: str) -> dict[str, Any]:
    return {"_id": message_id, "account_id": "acme", "kind": "campaign", "campaign_id": "c1",
            "subscriber_id": subscriber_id, "list_id": "news", "attempts": 0, "next_attempt_at": T0}


def job_of_test_send(message_id: str, recipient: str) -> dict[str, Any]:
    return {"_id": message_id, "account_id": "acme", "kind": "test", "campaign_id": "c1", "test_id": "t1",
            "recipient": recipient, "attempts": 0, "next_attempt_at": T0}


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def acme_dkim_keys() -> tuple[dict[str, DkimKey], Callable[..., bytes]]:
    """An RSA and an Ed25519 key of acme.example (by selector), and the DNS lookup that answers for both."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    records = {
        "rsa1": b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)),
        "ed1": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))}

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records[name.decode().split("._domainkey.")[0]]

    return {"rsa1": DkimKey("acme.example", "rsa1", pem(rsa_key)),
            "ed1": DkimKey("acme.example", "ed1", pem(ed_key))}, lookup


def dkim_verified(message: bytes, lookup: Callable[..., bytes]) -> list[bool]:
    """Each DKIM-Signature's result by dkimpy, the independent verifier, top first."""
    count = sum(line.lower().startswith(b"dkim-signature:") for line in message.split(b"\r\n\r\n")[0].split(b"\r\n"))
    results = []
    for index in range(count):
        try:
            results.append(bool(dkim.DKIM(message).verify(idx=index, dnsfunc=lookup)))
        except dkim.ValidationError:  # a body hash that does not match is raised, not answered False
            results.append(False)
    return results
