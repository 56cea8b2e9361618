"""Customer DKIM keys: delivery makes an RSA key pair for each sending domain an account adds (SendingDomainAdded),
keeps its private half sealed under a key only delivery holds (HERALD_DKIM_ENCRYPTION_KEY) and publishes both
halves as DkimKeyCreated (the private one sealed); once campaigns found the key's record in the domain's DNS
(SendingDomainDkimVerified), the account's mail From the domain or a subdomain is signed `d=<domain>`, which DMARC
aligns with the From. No private key, sealed or not, is ever logged."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from herald_shared.contract import Event
from herald_shared.contract.campaigns import SendingDomainAdded, SendingDomainDkimVerified, SendingDomainRemoved
from herald_shared.contract.delivery import DkimKeyCreated, DkimKeyCreatedPayload
from herald_shared.mongo import Document

from .dkim_signing import DkimSigner
from .domain import HERALD_DELIVERY_NAMESPACE

log = logging.getLogger(__name__)

SELECTOR = "herald1"
RSA_BITS = 2048
NONCE_BYTES = 12
# What delivery's control consumer hands to `CustomerDkim.handle`.
CUSTOMER_DKIM_EVENTS = (SendingDomainAdded, SendingDomainDkimVerified, SendingDomainRemoved)


class EncryptionKeyInvalid(ValueError):
    """HERALD_DKIM_ENCRYPTION_KEY is not 32 bytes in base64: refused at start."""


class SealedKeyRefused(ValueError):
    """A sealed private key that does not open with this key: sealed under another one, or moved to another
    account, domain or selector (the associated data differ), or altered."""


@dataclass(frozen=True)
class SealingKey:
    """The AES-256-GCM key that seals customers' private DKIM keys (never shown: not in repr)."""

    key: bytes = field(repr=False)

    @classmethod
    def from_setting(cls, text: str) -> SealingKey | None:
        """None when the setting is empty (the feature is off); EncryptionKeyInvalid for anything but 32 bytes in
        base64 (`openssl rand -base64 32`)."""
        if not text.strip():
            return None
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionKeyInvalid("HERALD_DKIM_ENCRYPTION_KEY is not base64 (make one with "
                                       "`openssl rand -base64 32`)") from None
        if len(key) != 32:
            raise EncryptionKeyInvalid(f"HERALD_DKIM_ENCRYPTION_KEY holds {len(key)} bytes, not 32 (AES-256): make "
                                       "one with `openssl rand -base64 32`")
        return cls(key)

    @property
    def key_id(self) -> str:
        """Names the key (events, logs) without giving it away: the first 8 bytes of its SHA-256, in hex."""
        return hashlib.sha256(self.key).hexdigest()[:16]

    def seal(self, account_id: str, domain: str, selector: str, private_der: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, private_der, _associated(account_id, domain, selector))
        return base64.b64encode(nonce + sealed).decode()

    def open(self, account_id: str, domain: str, selector: str, sealed: str) -> bytes:
        try:
            raw = base64.b64decode(sealed, validate=True)
            return AESGCM(self.key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                            _associated(account_id, domain, selector))
        except (InvalidTag, binascii.Error, ValueError):
            raise SealedKeyRefused(f"the DKIM key of {selector}._domainkey.{domain} (account {account_id}) does "
                                   f"not open with the key {self.key_id}") from None


def _associated(account_id: str, domain: str, selector: str) -> bytes:
    return f"{account_id} {domain} {selector}".encode()


def new_key_pair() -> tuple[str, bytes]:
    """An RSA key of RSA_BITS: its public half as DKIM's p= tag wants it (base64 of the DER SubjectPublicKeyInfo)
    and its private half in PKCS #8 DER. ~50-200 ms: run it off the event loop."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    private = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return base64.b64encode(public).decode(), private


def signer_of(doc: Document, sealing: SealingKey) -> DkimSigner:
    """The signer of a stored key (`key_document`); SealedKeyRefused when it does not open, DkimKeyInvalid when
    what opens is no RSA key."""
    private = sealing.open(doc["account_id"], doc["domain"], doc["selector"], doc["encrypted_private_key"])
    return DkimSigner.from_der(doc["domain"], doc["selector"], private)


def key_document(account_id: str, added: SendingDomainAdded, sealing: SealingKey, public_key: str,
                 private_der: bytes, now: datetime) -> Document:
    domain = added.payload.domain
    return {"account_id": account_id, "domain": domain, "selector": SELECTOR, "algorithm": "rsa-sha256",
            "public_key": public_key, "encrypted_private_key": sealing.seal(account_id, domain, SELECTOR, private_der),
            "encryption_key_id": sealing.key_id, "sending_domain_added_id": str(added.event_id), "created_at": now}


def key_created(doc: Document, added: SendingDomainAdded) -> DkimKeyCreated:
    """The event of a stored key: its id derived from the addition's and its time the key's, so publishing it
    again (a redelivered SendingDomainAdded) repeats the same event, which consumers pass over."""
    return DkimKeyCreated(
        event_id=uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"dkim-key:{added.event_id}:{doc['selector']}"),
        occurred_at=doc["created_at"], producer="delivery", **added.caused(),
        payload=DkimKeyCreatedPayload(
            domain=doc["domain"], selector=doc["selector"], algorithm=doc["algorithm"], public_key=doc["public_key"],
            encrypted_private_key=doc["encrypted_private_key"], encryption_key_id=doc["encryption_key_id"],
            sending_domain_added_id=doc["sending_domain_added_id"]))


class CustomerSigners:
    """In memory, what the renderer asks per message: per account, its domains (A-labels) signed with a key of
    its own, and their signers. A domain's subdomains sign with its key, as with the operator's keys."""

    def __init__(self) -> None:
        self._by_account: dict[str, dict[str, list[DkimSigner]]] = {}

    def signers(self, account_id: str, sender_domain: str) -> Sequence[DkimSigner] | None:
        """`sender_domain` in A-labels, lower case (as the renderer writes the From): the domain or its nearest
        parent the account has a key of, never one of fewer than two labels (`domain.signing_domain`'s rule,
        without its IDNA conversion, which each message would pay again)."""
        domains = self._by_account.get(account_id)
        if not domains:
            return None
        labels = sender_domain.split(".")
        for start in range(max(len(labels) - 1, 1)):
            found = domains.get(".".join(labels[start:]))
            if found is not None:
                return found
        return None

    def put(self, account_id: str, signer: DkimSigner) -> None:
        self._by_account.setdefault(account_id, {})[signer.domain] = [signer]

    def drop(self, account_id: str, domain: str) -> None:
        domains = self._by_account.get(account_id, {})
        domains.pop(domain, None)
        if not domains:
            self._by_account.pop(account_id, None)

    def forget_account(self, account_id: str) -> None:
        self._by_account.pop(account_id, None)

    def domains(self) -> list[tuple[str, str]]:
        return sorted((account, domain) for account, domains in self._by_account.items() for domain in domains)


class KeyStore(Protocol):
    """`store.CustomerKeyStore`."""

    async def key(self, account_id: str, domain: str, added_id: str) -> Document | None: ...
    async def add_key(self, doc: Document) -> Document: ...
    async def keys_of(self, account_id: str, domain: str) -> list[Document]: ...
    async def sign_with(self, account_id: str, domain: str, selector: str, public_key: str,
                        at: datetime) -> None: ...
    async def stop_signing(self, account_id: str, domain: str) -> None: ...
    async def signing(self) -> list[Document]: ...


class CustomerDkim:
    """The control consumer's part for customer keys: a key for each sending domain added (stored first, the first
    stored wins, then published), signing with it once its record was verified, no more once the domain is
    removed. Each step is written at once (nothing staged), and repeating one changes nothing."""

    def __init__(self, store: KeyStore, publish: Callable[[Event], Awaitable[object]], sealing: SealingKey,
                 signers: CustomerSigners, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.publish, self.sealing, self.signers, self.clock = store, publish, sealing, signers, clock

    async def load(self) -> None:
        """At start: the signer of every domain signed with a customer key."""
        for doc in await self.store.signing():
            await self._sign_with(doc["account_id"], doc["domain"], doc["selector"], doc["public_key"])
        log.info("DKIM: %d sending domains of customers signed with their own keys", len(self.signers.domains()))

    async def handle(self, event: Event) -> None:
        match event:
            case SendingDomainAdded():
                await self._create(event)
            case SendingDomainDkimVerified(payload=p):
                await self.store.sign_with(event.account_id, p.domain, p.selector, p.public_key, event.occurred_at)
                await self._sign_with(event.account_id, p.domain, p.selector, p.public_key)
            case SendingDomainRemoved(payload=p):
                await self.store.stop_signing(event.account_id, p.domain)
                self.signers.drop(event.account_id, p.domain)

    async def _create(self, added: SendingDomainAdded) -> None:
        doc = await self.store.key(added.account_id, added.payload.domain, str(added.event_id))
        if doc is None:
            public_key, private_der = await asyncio.to_thread(new_key_pair)
            doc = await self.store.add_key(key_document(added.account_id, added, self.sealing, public_key,
                                                        private_der, self.clock()))
            log.info("DKIM key made for a sending domain", extra={
                "account_id": added.account_id, "domain": added.payload.domain, "selector": doc["selector"],
                "encryption_key_id": doc["encryption_key_id"]})
        await self.publish(key_created(doc, added))

    async def _sign_with(self, account_id: str, domain: str, selector: str, public_key: str) -> None:
        """The key of the account's domain whose public half was verified signs its mail from now on. A key that
        does not open (HERALD_DKIM_ENCRYPTION_KEY changed) is an ERROR naming the domain, and its mail goes out as
        before the key existed."""
        found = [d for d in await self.store.keys_of(account_id, domain)
                 if d["selector"] == selector and d["public_key"] == public_key]
        if not found:
            log.error("DKIM: the key verified for a sending domain is not in the store: signed as before",
                      extra={"account_id": account_id, "domain": domain, "selector": selector})
            return
        try:
            signer = signer_of(found[0], self.sealing)
        except (SealedKeyRefused, ValueError) as exc:
            log.error("DKIM: %s: mail from it is signed as before", exc,
                      extra={"account_id": account_id, "domain": domain})
            return
        self.signers.put(account_id, signer)


async def restore(store: KeyStore, events: Iterable[Event]) -> int:
    """What a lost store learns again from the topics (`main.Delivery`, once per database): each DkimKeyCreated's key
    (the first of an addition wins, as live), and the signing the campaigns' events say, in their order. Returns
    how many events it folded."""
    folded = 0
    for event in events:
        match event:
            case DkimKeyCreated(payload=p):
                await store.add_key({
                    "account_id": event.account_id, "domain": p.domain, "selector": p.selector,
                    "algorithm": p.algorithm, "public_key": p.public_key,
                    "encrypted_private_key": p.encrypted_private_key, "encryption_key_id": p.encryption_key_id,
                    "sending_domain_added_id": p.sending_domain_added_id, "created_at": event.occurred_at})
            case SendingDomainDkimVerified(payload=p):
                await store.sign_with(event.account_id, p.domain, p.selector, p.public_key, event.occurred_at)
            case SendingDomainRemoved(payload=p):
                await store.stop_signing(event.account_id, p.domain)
            case _:
                continue
        folded += 1
    return folded
