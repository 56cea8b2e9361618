"""DKIM on the real stack: the delivery service signs (OpenSSL) and every message the relay receives carries
signatures that dkimpy, the independent implementation, verifies; tampering breaks them. Dual signing (Ed25519
and RSA) for the account's domain; the platform's default key for mail from a domain without keys of its own
(confirmations)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.conftest import eventually
from tests.samples import campaign_queued, confirmation_request

from .conftest import World

MEMBERS = 24


def write_key(folder: Path, selector: str, domain: str, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """The private key as the service reads it; returns the DNS TXT record of its public half."""
    (folder / f"{selector}._domainkey.{domain}.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


def verifications(message: bytes, records: dict[bytes, bytes]) -> list[tuple[bytes, bool]]:
    """(d=, verified) for each DKIM-Signature of the message, top first."""
    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records[name.removesuffix(b".")]

    checker = dkim.DKIM(message)
    results = []
    for index, header in enumerate(h for h in checker.headers if h[0].lower() == b"dkim-signature"):
        domain = dkim.util.parse_tag_value(header[1])[b"d"]
        try:
            results.append((domain, bool(checker.verify(idx=index, dnsfunc=dns))))
        except dkim.ValidationError:
            results.append((domain, False))
    return results


def above(added: bytes) -> Callable[[bytes], bytes]:
    """The header put above the message's own (below its signatures)."""
    return lambda message: message.replace(b"\r\nFrom:", b"\r\n" + added + b"\r\nFrom:", 1)


async def test_every_message_sent_is_signed_and_verifies(start_delivery: Any, relay: Any, world: World,
                                                         tmp_path: Path) -> None:
    records = {b"ed1._domainkey.acme.example": write_key(tmp_path, "ed1", "acme.example",
                                                         ed25519.Ed25519PrivateKey.generate()),
               b"rsa1._domainkey.acme.example": write_key(tmp_path, "rsa1", "acme.example",
                                                          rsa.generate_private_key(65537, 2048)),
               b"p1._domainkey.herald.test": write_key(tmp_path, "p1", "herald.test",
                                                       rsa.generate_private_key(65537, 2048))}
    await start_delivery(HERALD_DKIM_KEYS_DIR=str(tmp_path), HERALD_DKIM_DEFAULT_DOMAIN="herald.test",
                         HERALD_SEND_CONCURRENCY=6,
                         HERALD_PLATFORM_FROM="no-reply@herald.test")
    await world.open_account("acme")
    members = [(f"s{i}", f"reader{i}@example.org") for i in range(MEMBERS)]
    await world.add_list("acme", "news", members)
    await world.publish(campaign_queued("acme", "c1", html_body="<p>Hi {{ first_name }}</p>"
                                                                "<a href='https://acme.example/'>shop</a>"))
    await world.publish(*confirmation_request("acme", "n1", "new@example.org"))
    await eventually(relay.mailed, lambda r: len(r) >= MEMBERS + 1, what="the campaign and the confirmation sent")

    received = {r.recipient: r.data for r in relay.received}
    assert sorted(received) == sorted([address for _, address in members] + ["new@example.org"])
    for address, _ in [(a, s) for s, a in members]:
        # Dual signing: Ed25519 on top, then RSA, both of the account's domain, both verifying.
        assert verifications(received[address], records) == [(b"acme.example", True), (b"acme.example", True)]
    # The confirmation is from the platform's address: signed with the default domain's key.
    assert verifications(received["new@example.org"], records) == [(b"herald.test", True)]
    assert b"a=ed25519-sha256" in received["reader0@example.org"].split(b"DKIM-Signature")[1]

    # Headers added above the signed ones (R4's replay): over-signing (RFC 6376 8.15) breaks both signatures.
    tamper: list[Callable[[bytes], bytes]] = [lambda m: m.replace(b"Hi ", b"Hey ", 1),
                                              lambda m: m.replace(b"To: reader0@", b"To: reader9@", 1),
                                              above(b"Subject: Pay now"), above(b"Reply-To: x@evil.example")]
    for change in tamper:
        tampered = change(received["reader0@example.org"])
        assert tampered != received["reader0@example.org"]
        assert verifications(tampered, records) == [(b"acme.example", False), (b"acme.example", False)]
    confirmation = received["new@example.org"]
    for added in (b"Reply-To: x@evil.example", b"Subject: Pay now", b"Content-Transfer-Encoding: base64"):
        tampered = above(added)(confirmation)
        assert verifications(tampered, records) == [(b"herald.test", False)]
