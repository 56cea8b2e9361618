"""API keys: minting and slow hashing (for billing, which issues them) and the projection every service
keeps of ApiKeyIssued / ApiKeyRevoked to authenticate requests without asking another service."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from .contract import Event
from .contract.billing import ApiKeyIssued, ApiKeyRevoked
from .kafka import Reject
from .mongo import Document, Projection, UpdateOne, WriteOp
from .readmodel import KeyedReader
from .throttle import CredentialAttempts

KEY_PREFIX = "hk_"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
# Keys verified by scrypt are remembered (SHA-256 of the secret, per key id and stored hash) so a client's
# every request does not pay tens of milliseconds of CPU; bounded, least recently used first out.
VERIFIED_KEYS_REMEMBERED = 10_000
# The one producer whose ApiKeyIssued / ApiKeyRevoked are folded: billing, which mints keys (herald_billing's
# PRODUCER). Other services publish events too, and so may third parties (a CRM, an inbound relay): a key issued in
# anyone else's name would open another account's data. The envelope's `producer` is only what the writer put
# there, though: on a broker without ACLs whoever can write herald.billing can write "billing" as well. This check
# holds together with the brokers' ACLs (deploy/k8s/overlays/prod: only billing's KafkaUser writes herald.billing),
# not without them.
KEY_ISSUER = "billing"


def key_event_refusal(event: Event) -> str | None:
    """Why a key event may not be folded (from a producer other than `KEY_ISSUER`); None when it may, and for
    any other event."""
    if isinstance(event, ApiKeyIssued | ApiKeyRevoked) and event.producer != KEY_ISSUER:
        return (f"{event.type} from producer {event.producer!r}: only {KEY_ISSUER!r} issues and revokes API keys "
                f"(key {event.payload.key_id!r} of account {event.account_id!r} not projected)")
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """scrypt hash encoded as 'scrypt$n$r$p$salt$hash' (what ApiKeyIssued carries)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _unmatchable_hash() -> str:
    """A hash of the usual cost that no secret matches (its digest is not scrypt's output for any input we
    could be sent: random bytes), verified against for unknown key ids."""
    salt, digest = secrets.token_bytes(16), secrets.token_bytes(32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_secret(secret: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        raw_salt = base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4))
        expected = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
        actual = hashlib.scrypt(secret.encode(), salt=raw_salt, n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


_NO_SUCH_KEY = _unmatchable_hash()


def new_api_key() -> tuple[str, str, str]:
    """(key_id, full key shown once to the customer, hash to publish)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}.{secret}", hash_secret(secret)


def split_api_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(KEY_PREFIX) or "." not in key:
        return None
    key_id, _, secret = key[len(KEY_PREFIX):].partition(".")
    return (key_id, secret) if key_id and secret else None


def key_id_of(key: str) -> str | None:
    """The key id a presented key names (`hk_<key id>.`), whether or not such a key exists."""
    parts = split_api_key(key)
    return parts[0] if parts is not None else None


@dataclass(frozen=True)
class KeyHolder:
    """The account a key id belongs to, and whether its key is revoked (what a refusal's audit needs)."""

    account_id: str
    revoked: bool


class ApiKeyProjection(Projection):
    """api_keys: one document per key; a key is active while it has no `revoked_at`. It also holds what this
    process knows of requests' keys: the secrets it verified, and the failed attempts (`attempts`: the throttle
    `herald_shared.http.api_key_account` applies; strict by default, HeraldSettings.api_key_attempts from the
    service's settings)."""

    collections = ("api_keys",)

    def __init__(self, db: AsyncDatabase[Document], attempts: CredentialAttempts | None = None) -> None:
        super().__init__(db)
        self.attempts = attempts if attempts is not None else CredentialAttempts.api_keys()
        self._verified: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._keys = KeyedReader(db["api_keys"])  # requests' look-ups share queries

    async def handle(self, event: Event) -> None:
        """Refuses a key event of another producer than billing (`key_event_refusal`): the consumer dead-letters
        it with the reason (never dropped unsaid: a forgery attempt is something to see)."""
        refusal = key_event_refusal(event)
        if refusal is not None:
            raise Reject(refusal)
        await super().handle(event)

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        if key_event_refusal(event) is not None:  # what folds without `handle` (a rebuild) never takes it either
            return []
        if isinstance(event, ApiKeyIssued):
            issued = event.payload
            # Failures on a key id before its key was projected here were its owner's, using it a moment too soon
            # (ids are random: nobody else knew it); they must not keep the new key throttled.
            self.attempts.forget(issued.key_id)
            # $set of issue fields never touches revoked_at: re-applying an old issue cannot un-revoke.
            return [("api_keys", UpdateOne({"_id": issued.key_id}, {"$set": {
                "account_id": event.account_id, "key_hash": issued.key_hash, "label": issued.label,
                "issued_by": issued.issued_by, "issued_at": event.occurred_at}}, upsert=True))]
        if isinstance(event, ApiKeyRevoked):
            revoked = event.payload
            return [("api_keys", UpdateOne({"_id": revoked.key_id}, {"$set": {
                "account_id": event.account_id, "revoked_at": event.occurred_at, "revoked_by": revoked.revoked_by}},
                upsert=True))]
        return []

    async def purge(self, account_id: str) -> None:
        """Forget every key of a purged account (one scan of a small collection: a document per key), and the
        secrets this process verified for them; other accounts' clients keep theirs (no scrypt again)."""
        keys = {str(doc["_id"]) async for doc in self.db["api_keys"].find({"account_id": account_id}, {"_id": 1})}
        await self.db["api_keys"].delete_many({"account_id": account_id})
        for remembered in [r for r in self._verified if r[0] in keys]:
            del self._verified[remembered]

    async def holder(self, key_id: str) -> KeyHolder | None:
        """The account whose key has this id, and whether it is revoked; None for an id no key has here."""
        doc = await self._keys.get(key_id)
        if not doc or "account_id" not in doc:
            return None
        # A revocation projected before its issue (no hash yet) is a revoked key too: no secret opens it.
        return KeyHolder(str(doc["account_id"]), bool(doc.get("revoked_at")) or "key_hash" not in doc)

    async def authenticate(self, key: str, *, remembered_only: bool = False) -> str | None:
        """The account a presented key belongs to, or None (unknown, revoked, malformed or wrong secret).
        `remembered_only`: accept only a secret this process already verified against the key's current hash,
        and run no scrypt at all (what a throttled key id gets: its owner's clients keep working, guesses cost
        nothing)."""
        parts = split_api_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        doc = await self._keys.get(key_id)
        if not doc or doc.get("revoked_at") or "key_hash" not in doc:
            if remembered_only:
                return None
            # As slow as a wrong secret for a real key: the time of the answer tells no key id from another.
            await asyncio.to_thread(verify_secret, secret, _NO_SUCH_KEY)
            return None
        # The stored document is read on every request, so a revocation takes effect at once; only the
        # slow hash is skipped for a secret this process already verified against the same stored hash.
        remembered = (key_id, str(doc["key_hash"]))
        fingerprint = hashlib.sha256(secret.encode()).digest()
        known = self._verified.get(remembered)
        if known is not None and hmac.compare_digest(known, fingerprint):
            self._verified.move_to_end(remembered)
            return str(doc["account_id"])
        if remembered_only:
            return None
        # scrypt takes tens of milliseconds of CPU by design: off the event loop.
        if not await asyncio.to_thread(verify_secret, secret, doc["key_hash"]):
            return None
        self._verified[remembered] = fingerprint
        if len(self._verified) > VERIFIED_KEYS_REMEMBERED:
            self._verified.popitem(last=False)
        return str(doc["account_id"])
