"""Customer DKIM keys (`customer_dkim`): a key pair made once per sending domain added, its private half sealed
(AES-256-GCM) so that only delivery's key opens it, and for that account, domain and selector only; the account's
mail From the domain (or a subdomain) signed d=<domain> with it once campaigns verified its record, verified by
dkimpy against the published public key; before that, and for any other account, signed as before; the
operator's key files keep precedence; a store lost learns the keys back from the events."""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from herald_delivery.customer_dkim import (
    CustomerDkim,
    CustomerSigners,
    EncryptionKeyInvalid,
    SealedKeyRefused,
    SealingKey,
    new_key_pair,
    restore,
)
from herald_delivery.dkim_signing import DkimSigner
from herald_delivery.domain import Member
from herald_delivery.main import Delivery, DeliverySettings
from herald_delivery.render import DkimKey, MessageTokens, Rendered, Renderer, RenderSettings, compile_campaign
from herald_shared.contract import Event, parse_event, serialize_event
from herald_shared.contract.campaigns import (
    CampaignContent,
    SendingDomainAdded,
    SendingDomainDkimVerified,
    SendingDomainRemoved,
)
from herald_shared.contract.delivery import DkimKeyCreated
from herald_shared.links import LinkSigner
from herald_shared.readmodel import compose

from .helpers import pem

SECRET = "s" * 32
SEALING = SealingKey(b"k" * 32)
MEMBER = Member("s1", "news", "anna@example.org", "active")
T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


class KeyStore:
    """`store.CustomerKeyStore` in memory."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}
        self.signing_docs: dict[str, dict[str, Any]] = {}

    async def key(self, account_id: str, domain: str, added_id: str) -> dict[str, Any] | None:
        return self.keys.get(compose(account_id, domain, added_id))

    async def add_key(self, doc: dict[str, Any]) -> dict[str, Any]:
        return self.keys.setdefault(compose(doc["account_id"], doc["domain"], doc["sending_domain_added_id"]), doc)

    async def keys_of(self, account_id: str, domain: str) -> list[dict[str, Any]]:
        return [d for d in self.keys.values() if (d["account_id"], d["domain"]) == (account_id, domain)]

    async def sign_with(self, account_id: str, domain: str, selector: str, public_key: str, at: datetime) -> None:
        self.signing_docs[compose(account_id, domain)] = {"account_id": account_id, "domain": domain,
                                                          "selector": selector, "public_key": public_key}

    async def stop_signing(self, account_id: str, domain: str) -> None:
        self.signing_docs.pop(compose(account_id, domain), None)

    async def signing(self) -> list[dict[str, Any]]:
        return list(self.signing_docs.values())


class Published(list[Event]):
    async def __call__(self, event: Event) -> None:
        self.append(parse_event(serialize_event(event)))  # as the topic carries it


def added(account_id: str = "acme", domain: str = "acme.example") -> SendingDomainAdded:
    return SendingDomainAdded(account_id=account_id, producer="campaigns", payload={  # type: ignore[arg-type]
        "domain": domain, "token": "abcdefghijklmnopqrstuvwxyz"})


def verified(key: DkimKeyCreated) -> SendingDomainDkimVerified:
    p = key.payload
    return SendingDomainDkimVerified(account_id=key.account_id, producer="campaigns", payload={  # type: ignore[arg-type]
        "domain": p.domain, "selector": p.selector, "public_key": p.public_key,
        "record": {"name": f"{p.selector}._domainkey.{p.domain}", "value": f"v=DKIM1; k=rsa; p={p.public_key}"}})


def renderer(signers: CustomerSigners, keys: dict[str, list[DkimKey]] | None = None,
             default: list[DkimKey] | None = None) -> Renderer:
    return Renderer(RenderSettings("https://t.herald.example", "bounces.herald.example"), MessageTokens(SECRET),
                    LinkSigner(SECRET, "https://lists.herald.example"), keys or {}, default or [],
                    customer_signers=signers)


def campaign(r: Renderer, account_id: str = "acme", from_email: str = "news@acme.example") -> Rendered:
    content = CampaignContent.model_validate({"subject": "Hi", "from_name": "Acme", "html_body": "<p>Hi</p>",
                                              "text_body": "Hi", "from_email": from_email})
    return r.campaign_message(compile_campaign(account_id, "c1", content, footer=True, settings=r.settings), MEMBER,
                              str(uuid.uuid4()))


def signed_by(data: bytes) -> list[tuple[str, str]]:
    """(d=, s=) of each DKIM-Signature of the message."""
    checker = dkim.DKIM(data)
    return [(tags[b"d"].decode(), tags[b"s"].decode()) for tags in
            (dkim.util.parse_tag_value(value) for name, value in checker.headers if name.lower() == b"dkim-signature")]


def dns_of(*keys: DkimKeyCreated) -> Any:
    """DNS as the customer published the records campaigns showed."""
    records = {f"{k.payload.selector}._domainkey.{k.payload.domain}".encode():
               f"v=DKIM1; k=rsa; p={k.payload.public_key}".encode() for k in keys}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.removesuffix(b"."))
    return lookup


# 1. Sealing


def test_a_sealed_private_key_opens_with_its_key_for_its_account_domain_and_selector_only() -> None:
    _, private = new_key_pair()
    sealed = SEALING.seal("acme", "acme.example", "herald1", private)
    assert SEALING.open("acme", "acme.example", "herald1", sealed) == private
    assert private not in base64.b64decode(sealed)
    with pytest.raises(SealedKeyRefused, match=SealingKey(b"x" * 32).key_id):
        SealingKey(b"x" * 32).open("acme", "acme.example", "herald1", sealed)  # another key
    for moved in (("other", "acme.example", "herald1"), ("acme", "evil.example", "herald1"),
                  ("acme", "acme.example", "herald2")):
        with pytest.raises(SealedKeyRefused):
            SEALING.open(*moved, sealed)
    tampered = bytearray(base64.b64decode(sealed))
    tampered[-1] ^= 1
    with pytest.raises(SealedKeyRefused):
        SEALING.open("acme", "acme.example", "herald1", base64.b64encode(bytes(tampered)).decode())
    assert SEALING.seal("acme", "acme.example", "herald1", private) != sealed  # a new nonce each time


def test_the_encryption_key_setting_is_32_bytes_in_base64_or_empty_and_never_shown() -> None:
    assert SealingKey.from_setting("") is None and SealingKey.from_setting("  ") is None
    key = SealingKey.from_setting(base64.b64encode(b"q" * 32).decode())
    assert key is not None and key.key == b"q" * 32 and len(key.key_id) == 16
    assert "qqqq" not in repr(key) and base64.b64encode(b"q" * 32).decode() not in repr(key)
    for bad, said in ((base64.b64encode(b"q" * 16).decode(), "16 bytes"), ("not base64!", "not base64")):
        with pytest.raises(EncryptionKeyInvalid, match=said):
            SealingKey.from_setting(bad)


# 2. A key per sending domain, made once


async def test_a_domain_added_gets_one_key_and_a_redelivery_publishes_the_same_event_again() -> None:
    store, published = KeyStore(), Published()
    handler = CustomerDkim(store, published, SEALING, CustomerSigners(), clock=lambda: T0)
    event = added()
    await handler.handle(event)
    await handler.handle(event)  # redelivered
    assert len(store.keys) == 1
    first, again = published
    assert isinstance(first, DkimKeyCreated) and first == again and first.model_dump() == again.model_dump()
    p = first.payload
    assert (first.account_id, p.domain, p.selector, p.algorithm) == ("acme", "acme.example", "herald1", "rsa-sha256")
    assert p.sending_domain_added_id == str(event.event_id) and first.causation_id == event.event_id
    assert p.encryption_key_id == SEALING.key_id
    # The private key travels sealed only: it opens with delivery's key into the key of the public half.
    private = SEALING.open("acme", "acme.example", "herald1", p.encrypted_private_key)
    key = DkimSigner.from_der("acme.example", "herald1", private).key
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode() == p.public_key
    # Added again after a removal: a new addition, a new key.
    await handler.handle(added())
    assert len(store.keys) == 2 and published[-1].payload.public_key != p.public_key  # type: ignore[attr-defined]


async def test_no_private_key_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    store, published = KeyStore(), Published()
    handler = CustomerDkim(store, published, SEALING, CustomerSigners())
    with caplog.at_level(logging.DEBUG):
        await handler.handle(added())
        await handler.handle(verified(published[0]))  # type: ignore[arg-type]
    sealed = published[0].payload.encrypted_private_key  # type: ignore[attr-defined]
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert sealed not in logged and sealed[:40] not in logged and "PRIVATE" not in logged


# 3. Signing with it


async def test_once_verified_the_accounts_mail_from_the_domain_is_signed_with_its_key_and_dkimpy_verifies_it() -> None:
    store, published, signers = KeyStore(), Published(), CustomerSigners()
    handler = CustomerDkim(store, published, SEALING, signers)
    platform_key = DkimKey("herald.example", "p1", pem(ed25519.Ed25519PrivateKey.generate()))
    r = renderer(signers, default=[platform_key])
    await handler.handle(added())
    [key] = published
    assert isinstance(key, DkimKeyCreated)
    # Before campaigns found the record in DNS: the platform's key, as before.
    assert signed_by(campaign(r).data) == [("herald.example", "p1")]
    await handler.handle(verified(key))
    for sender in ("news@acme.example", "news@mail.acme.example"):  # the domain, and a subdomain (aligned)
        message = campaign(r, from_email=sender).data
        assert signed_by(message) == [("acme.example", "herald1")]
        assert dkim.DKIM(message).verify(dnsfunc=dns_of(key))
    # Another account's mail From the same domain is never signed with this account's key.
    assert signed_by(campaign(r, account_id="other").data) == [("herald.example", "p1")]
    assert signed_by(campaign(r, from_email="news@evil-acme.example").data) == [("herald.example", "p1")]
    # Removed: signed as before.
    await handler.handle(SendingDomainRemoved(account_id="acme", producer="campaigns",  # type: ignore[arg-type]
                                              payload={"domain": "acme.example"}))
    assert signed_by(campaign(r).data) == [("herald.example", "p1")] and not store.signing_docs


async def test_a_verification_of_another_key_signs_with_none() -> None:
    """Delivery signs with the key whose public half campaigns found in DNS, never with another."""
    store, published, signers = KeyStore(), Published(), CustomerSigners()
    handler = CustomerDkim(store, published, SEALING, signers)
    await handler.handle(added())
    other_public, _ = new_key_pair()
    stale = verified(published[0])  # type: ignore[arg-type]
    await handler.handle(stale.model_copy(update={"payload": stale.payload.model_copy(
        update={"public_key": other_public})}))
    assert signers.signers("acme", "acme.example") is None
    assert signed_by(campaign(renderer(signers)).data) == []


async def test_the_operators_key_file_for_the_domain_keeps_precedence() -> None:
    store, published, signers = KeyStore(), Published(), CustomerSigners()
    handler = CustomerDkim(store, published, SEALING, signers)
    await handler.handle(added())
    await handler.handle(verified(published[0]))  # type: ignore[arg-type]
    operators = DkimKey("acme.example", "op1", pem(ed25519.Ed25519PrivateKey.generate()))
    assert signed_by(campaign(renderer(signers, {"acme.example": [operators]})).data) == [("acme.example", "op1")]


async def test_a_key_that_does_not_open_signs_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    store, published, signers = KeyStore(), Published(), CustomerSigners()
    await CustomerDkim(store, published, SEALING, signers).handle(added())
    rotated = CustomerDkim(store, published, SealingKey(b"r" * 32), signers)
    with caplog.at_level(logging.ERROR):
        await rotated.handle(verified(published[0]))  # type: ignore[arg-type]
    assert signers.signers("acme", "acme.example") is None
    assert "does not open" in caplog.text and SEALING.key_id not in caplog.text


# 4. A store lost learns the keys back


async def test_a_new_store_learns_the_keys_and_their_signing_from_the_events() -> None:
    store, published = KeyStore(), Published()
    live = CustomerDkim(store, published, SEALING, CustomerSigners())
    acme, other = added(), added("other", "other.example")
    for event in (acme, other):
        await live.handle(event)
    acme_key, other_key = published
    removed = SendingDomainRemoved(account_id="other", producer="campaigns",  # type: ignore[arg-type]
                                   payload={"domain": "other.example"})
    history = [acme_key, acme_key, other_key, verified(acme_key), verified(other_key), removed]  # type: ignore[arg-type]
    rebuilt, signers = KeyStore(), CustomerSigners()
    assert await restore(rebuilt, history) == len(history)
    await CustomerDkim(rebuilt, Published(), SEALING, signers).load()
    assert signers.domains() == [("acme", "acme.example")]
    message = campaign(renderer(signers)).data
    assert signed_by(message) == [("acme.example", "herald1")] and dkim.DKIM(message).verify(dnsfunc=dns_of(acme_key))


def test_a_bad_encryption_key_stops_the_start_and_a_good_one_is_never_shown_in_the_settings() -> None:
    good = base64.b64encode(b"g" * 32).decode()
    with pytest.raises(SystemExit, match="HERALD_DKIM_ENCRYPTION_KEY holds 3 bytes"):
        Delivery(DeliverySettings.model_validate({"HERALD_LINK_SECRET": SECRET, "HERALD_DKIM_ENCRYPTION_KEY": "YWJj"}))
    configured = DeliverySettings.model_validate({"HERALD_LINK_SECRET": SECRET, "HERALD_DKIM_ENCRYPTION_KEY": good})
    assert good not in repr(configured) and good not in str(configured.model_dump())
