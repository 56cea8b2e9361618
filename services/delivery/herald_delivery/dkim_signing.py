"""DKIM signing (RFC 6376, relaxed/relaxed) with OpenSSL through the `cryptography` package: rsa-sha256 and
ed25519-sha256 (RFC 8463), one signature per key, so a domain can be signed twice (Ed25519 and RSA: receivers
that do not know Ed25519 yet still find the RSA one). dkimpy stays as the independent verifier in the tests.

Canonicalization (RFC 6376 3.4.2 and 3.4.4, "relaxed"):
- a header: its name in lower case, unfolded, runs of spaces and tabs made one space, none at the end of the
  value or around the colon;
- the body: runs of spaces and tabs made one space, none at line ends, empty lines at the end removed, and a
  non-empty body ends with CRLF.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

CRLF = b"\r\n"
_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_CR_AS_SPACE = bytes.maketrans(b"\r", b" ")
PKCS1 = padding.PKCS1v15()
PREHASHED_SHA256 = utils.Prehashed(hashes.SHA256())


class DkimKeyInvalid(ValueError):
    """A key file that is not an RSA (2048 bits or more) or Ed25519 private key in PEM."""


@dataclass(frozen=True)
class DkimSigner:
    domain: str
    selector: str
    key: RSAPrivateKey | Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if isinstance(self.key, Ed25519PrivateKey) else "rsa-sha256"

    @property
    def costly(self) -> bool:
        """RSA: ~0.2 ms a signature (2048 bits), worth a thread of its own; Ed25519 takes ~0.02 ms, less than
        handing it to a thread and back."""
        return isinstance(self.key, RSAPrivateKey)

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes) -> DkimSigner:
        return cls._loaded(domain, selector, pem, serialization.load_pem_private_key, "PEM")

    @classmethod
    def from_der(cls, domain: str, selector: str, der: bytes) -> DkimSigner:
        """A key in PKCS #8 DER (a customer's key, `customer_dkim`)."""
        return cls._loaded(domain, selector, der, serialization.load_der_private_key, "DER")

    @classmethod
    def _loaded(cls, domain: str, selector: str, data: bytes, load: Callable[..., object], form: str) -> DkimSigner:
        try:
            key = load(data, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimKeyInvalid(f"{selector}._domainkey.{domain}: not a private key in {form} ({exc})") from None
        if isinstance(key, RSAPrivateKey):
            if key.key_size < 1024:
                raise DkimKeyInvalid(f"{selector}._domainkey.{domain}: RSA keys of {key.key_size} bits are refused "
                                     "by receivers (RFC 8301: at least 1024, 2048 recommended)")
            return cls(domain, selector, key)
        if isinstance(key, Ed25519PrivateKey):
            return cls(domain, selector, key)
        raise DkimKeyInvalid(f"{selector}._domainkey.{domain}: only RSA and Ed25519 keys sign DKIM")

    def signature_header(self, prepared: Prepared, now: int | None = None) -> bytes:
        """The DKIM-Signature header line (with its CRLF) to put on top of the message `prepared` from."""
        # Folded, lines of at most 78 characters (relaxed canonicalization reads a fold as a space): h= alone is some
        # 300 characters long.
        tags = (f"v=1; a={self.algorithm}; c=relaxed/relaxed;\r\n\td={self.domain}; s={self.selector}; "
                f"t={now if now is not None else int(time.time())};\r\n\th={prepared.folded_names};\r\n\t"
                f"bh={prepared.body_hash};\r\n\tb=").encode()
        # Relaxed canonicalization of these tags (single spaces, no space at the end): each fold becomes a space.
        signed = prepared.headers + b"dkim-signature:" + tags.replace(b"\r\n\t", b" ")
        if isinstance(self.key, Ed25519PrivateKey):
            signature = self.key.sign(hashlib.sha256(signed).digest())
        else:  # hashed here: cryptography's own SHA-256 set-up per call cost ~40 us of a ~330 us signature
            signature = self.key.sign(hashlib.sha256(signed).digest(), PKCS1, PREHASHED_SHA256)
        return b"DKIM-Signature: " + tags + _folded(base64.b64encode(signature)) + CRLF


@dataclass(frozen=True)
class Prepared:
    """What every signature of one message covers, worked out once for all of its signers."""

    headers: bytes  # the signed headers, canonical, in signing order
    names: str  # the h= tag: their names
    folded_names: str  # the same on lines of at most 78 characters, the h= tag as written
    body_hash: str  # the bh= tag: SHA-256 of the canonical body, in base64


def prepare(message: bytes, wanted: Sequence[bytes], *, body_relaxed: bool = False) -> Prepared:
    """The message's head parsed and its body hashed, once. `wanted`: lower-case header names to sign. Each is
    over-signed (RFC 6376 8.15): every instance the message has is signed, and h= names it once more, an
    instance it lacks, which hashes as nothing (5.4.2); a header of that name added on the way (a second
    Subject, a Reply-To the message had none of) is then that instance, and the signature fails.
    `body_relaxed`: see `canonical_body`."""
    head, body = _split(message)
    instances: dict[bytes, list[bytes]] = {}
    for name, value in _parse_headers(head):
        instances.setdefault(name.strip().lower(), []).append(value)
    names: list[bytes] = []
    picked: list[tuple[bytes, bytes]] = []
    for name in dict.fromkeys(wanted):  # a name given twice would be over-signed twice, hashing some twice
        values = instances.get(name)
        if values is None:
            names.append(name)
        elif len(values) == 1:
            picked.append((name, values[0]))
            names += (name, name)
        else:
            picked.extend((name, value) for value in reversed(values))  # from the bottom up, as verifiers pick
            names += [name] * (len(values) + 1)
    if b"\t" in head or b"  " in head or b" \r\n" in head or b"\n " in head:
        canonical = b"".join(canonical_header(name, value) for name, value in picked)
    else:  # no fold, tab, run of spaces or space ending a line (a head as the renderer writes it): ~5 us less
        canonical = b"".join([name + b":" + value.lstrip(b" ") + CRLF for name, value in picked])
    listed = b":".join(names).decode()
    return Prepared(canonical, listed, _folded_list(listed),
                    base64.b64encode(hashlib.sha256(canonical_body(body, body_relaxed)).digest()).decode())


@dataclass(frozen=True)
class Signatures:
    """The signatures one message is to get, prepared: `headers()` makes them. The costly part, RSA in OpenSSL,
    releases the GIL, so a caller can run it on another thread while its event loop goes on."""

    signers: tuple[DkimSigner, ...]
    prepared: Prepared

    def headers(self, now: int | None = None) -> bytes:
        """One DKIM-Signature header per signer, in the signers' order, to put on top of the message."""
        return b"".join(signer.signature_header(self.prepared, now) for signer in self.signers)


def signatures(message: bytes, signers: Sequence[DkimSigner], wanted: Sequence[bytes], *,
               body_relaxed: bool = False) -> Signatures:
    """What `sign` does before it signs: the message's head parsed and its body hashed."""
    return Signatures(tuple(signers), prepare(message, wanted, body_relaxed=body_relaxed))


def sign(message: bytes, signers: Sequence[DkimSigner], wanted: Sequence[bytes], now: int | None = None, *,
         body_relaxed: bool = False) -> bytes:
    """The message with one DKIM-Signature per signer on top, in the signers' order."""
    return signatures(message, signers, wanted, body_relaxed=body_relaxed).headers(now) + message


def canonical_header(name: bytes, value: bytes) -> bytes:
    if b"\r" in value or b"\t" in value or b"  " in value:  # folded, or whitespace to squeeze
        value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value))
    return name.strip().lower() + b":" + value.strip(b" \t") + CRLF


def canonical_body(body: bytes, relaxed: bool = False) -> bytes:
    """`relaxed`: the caller knows the body holds no tab, no two spaces in a row and no space before a line
    end (the renderer's quoted-printable parts), so only its end is looked at: the scans for them cost ~12 us
    for an 11 KB body, 5% of a message rendered and signed with RSA."""
    # bytes.replace and endswith run at C speed; a regex over a 10 KB body cost 0.6 ms, more than the signing.
    if not relaxed:
        if b"\t" in body:
            body = body.replace(b"\t", b" ")
        # With CR read as a space, a run of spaces and a space ending a line both show as "  ": one scan of
        # the body for both, as most bodies have neither.
        if b"  " in body.translate(_CR_AS_SPACE):
            while b"  " in body:
                body = body.replace(b"  ", b" ")
            if b" \r\n" in body:
                body = body.replace(b" \r\n", b"\r\n")
    if body.endswith(b" "):
        body = body[:-1]
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    if body == b"\r\n":
        return b""
    return body if not body or body.endswith(CRLF) else body + CRLF


def _split(message: bytes) -> tuple[bytes, bytes]:
    head, separator, body = message.partition(CRLF + CRLF)
    return (head + CRLF, body) if separator else (message, b"")


def _parse_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """(name, value with its folds) of each header, in order."""
    headers: list[tuple[bytes, bytes]] = []
    for line in head.split(CRLF):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + CRLF + line)
        else:
            name, _, value = line.partition(b":")
            headers.append((name, value))
    return headers


@functools.lru_cache(maxsize=64)  # the messages of a campaign have the same headers: one h= for them all
def _folded_list(names: str, width: int = 72) -> str:
    """h='s names with a fold after a colon wherever a line would pass `width` (FWS may follow any colon of h=;
    relaxed canonicalization reads the fold as a space, and signer and verifier both hash it so)."""
    lines = [""]
    for name in names.split(":"):
        if lines[-1] and len(lines[-1]) + len(name) + 1 > width:
            lines.append("")
        lines[-1] += name + ":"
    return "\r\n\t".join(lines).removesuffix(":")


def _folded(value: bytes, width: int = 72) -> bytes:
    """The b= value folded for the line length limits (folding whitespace in b= is ignored by verifiers)."""
    return (CRLF + b"\t").join(value[i:i + width] for i in range(0, len(value), width))
