"""DKIM signed with OpenSSL (`herald_delivery.dkim_signing`), verified by dkimpy, the independent implementation:
rsa-sha256, ed25519-sha256 (RFC 8463) and both at once; tampering breaks every signature."""

from __future__ import annotations

import base64
import email
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from herald_delivery.dkim_signing import (
    DkimKeyInvalid,
    DkimSigner,
    _parse_headers,
    canonical_body,
    canonical_header,
    prepare,
    sign,
)
from herald_delivery.main import load_dkim_keys
from herald_delivery.render import DkimKey

MESSAGE = (b"From: Acme <news@acme.example>\r\nTo: anna@example.org\r\nSubject:  Our   November\r\n\tnews \r\n"
           b"Date: Thu, 03 Dec 2026 09:00:00 +0000\r\nMessage-ID: <m1@acme.example>\r\n"
           b"List-Unsubscribe: <https://lists.example/u/x>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
           b"\r\nHello  Anna, \r\n\r\nNews.\r\n\r\n\r\n")
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe", b"list-unsubscribe-post"]


def pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[DkimSigner, bytes]]:
    """selector -> (signer, its DNS TXT record)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_public = rsa_key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    ed_public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"rsa1": (DkimSigner.from_pem("acme.example", "rsa1", pem(rsa_key)),
                     b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public)),
            "ed1": (DkimSigner.from_pem("acme.example", "ed1", pem(ed_key)),
                    b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_public))}


def dns(keys: dict[str, tuple[DkimSigner, bytes]]) -> Callable[..., bytes]:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        selector = name.decode().split("._domainkey.")[0]
        return keys[selector][1]
    return lookup


def verified(message: bytes, keys: dict[str, tuple[DkimSigner, bytes]], signatures: int) -> list[bool]:
    results = []
    for i in range(signatures):
        try:
            results.append(bool(dkim.DKIM(message).verify(idx=i, dnsfunc=dns(keys))))
        except dkim.ValidationError:  # a body hash that does not match is raised, not answered False
            results.append(False)
    return results


@pytest.mark.parametrize("selector", ["rsa1", "ed1"])
def test_a_signature_verifies_with_dkimpy_and_tampering_breaks_it(keys: dict[str, tuple[DkimSigner, bytes]],
                                                                  selector: str) -> None:
    signer = keys[selector][0]
    signed = sign(MESSAGE, [signer], SIGNED)
    assert verified(signed, keys, 1) == [True]
    header = email.message_from_bytes(signed)["DKIM-Signature"]
    assert f"a={signer.algorithm}" in header and "c=relaxed/relaxed" in header
    for tampered in (signed.replace(b"November", b"December"), signed.replace(b"News.", b"Newz."),
                     signed.replace(b"One-Click", b"Two-Click")):
        assert verified(tampered, keys, 1) == [False]
    # Relaxed: whitespace a relay may change does not break it.
    assert verified(signed.replace(b"Hello  Anna", b"Hello Anna").replace(b"\r\n\r\n\r\n", b"\r\n"), keys, 1) == [
        True]


def test_dual_signing_gives_two_signatures_each_verifying(keys: dict[str, tuple[DkimSigner, bytes]]) -> None:
    signed = sign(MESSAGE, [keys["ed1"][0], keys["rsa1"][0]], SIGNED)
    assert verified(signed, keys, 2) == [True, True]
    assert "a=ed25519-sha256;" in email.message_from_bytes(signed)["DKIM-Signature"]  # the first signer's on top
    assert verified(signed.replace(b"anna@", b"eve@"), keys, 2) == [False, False]


def test_every_instance_is_signed_and_each_name_once_more_than_it_occurs(
        keys: dict[str, tuple[DkimSigner, bytes]]) -> None:
    """RFC 6376 8.15, over-signing: h= names each wanted header once more than the message has it (absent ones
    once, 5.4.2: an absent instance hashes as nothing), so no header of those names can be added."""
    message = b"To: first@example.org\r\n" + MESSAGE
    signed = sign(message, [keys["rsa1"][0]], [*SIGNED, b"reply-to", b"x-absent"])
    header = email.message_from_bytes(signed)["DKIM-Signature"]
    assert ("h=from:from:to:to:to:subject:subject:date:date:message-id:message-id:list-unsubscribe:list-unsubscribe:"
            "list-unsubscribe-post:list-unsubscribe-post:reply-to:x-absent;") in "".join(header.split())
    assert verified(signed, keys, 1) == [True]
    assert verified(signed.replace(b"To: anna@", b"To: eve@"), keys, 1) == [False]
    assert verified(signed.replace(b"To: first@", b"To: other@"), keys, 1) == [False]  # every instance signed
    assert all(len(line) <= 78 for line in signed.split(b"\r\n\r\n")[0].split(b"\r\n")[:4])  # folded


def test_a_name_wanted_twice_is_signed_as_if_once(keys: dict[str, tuple[DkimSigner, bytes]]) -> None:
    signed = sign(MESSAGE, [keys["ed1"][0]], [*SIGNED, b"subject", b"from"])
    assert signed == sign(MESSAGE, [keys["ed1"][0]], SIGNED, now=int(signed.split(b"t=")[1].split(b";")[0]))
    assert verified(signed, keys, 1) == [True]


@pytest.mark.parametrize("added", [b"From: Acme Billing <billing@acme.example>\r\n",
                                   b"Subject: Your invoice is overdue\r\n", b"To: everyone@acme.example\r\n",
                                   b"Date: Mon, 01 Jan 2035 00:00:00 +0000\r\n",
                                   b"Reply-To: attacker@evil.example\r\n", b"Cc: x@evil.example\r\n"])
@pytest.mark.parametrize("at", ["top", "bottom"])
def test_a_header_added_to_a_signed_message_breaks_it(keys: dict[str, tuple[DkimSigner, bytes]], added: bytes,
                                                       at: str) -> None:
    """Whether added above the signed instance or below it (where a verifier picks first)."""
    signed = sign(MESSAGE, [keys["rsa1"][0], keys["ed1"][0]], [*SIGNED, b"reply-to", b"cc"])
    assert verified(signed, keys, 2) == [True, True]
    head, _, body = signed.partition(b"\r\n\r\n")
    if at == "top":
        tampered = signed.replace(b"From: Acme", added + b"From: Acme", 1)
    else:
        tampered = head + b"\r\n" + added.removesuffix(b"\r\n") + b"\r\n\r\n" + body
    assert verified(tampered, keys, 2) == [False, False]


@pytest.mark.parametrize(("body", "canonical"), [
    (b"a  b\r\n", b"a b\r\n"), (b"a \r\nb\r\n", b"a\r\nb\r\n"), (b"a\t\tb \t\r\n", b"a b\r\n"),
    (b"a\r\rb\r\n", b"a\r\rb\r\n"), (b"a \rb", b"a \rb\r\n"), (b"clean line\r\n", b"clean line\r\n"),
    (b"end  ", b"end\r\n"), (b"x \r\n\r\n \r\n", b"x\r\n")])
def test_body_canonicalization_cases(body: bytes, canonical: bytes) -> None:
    """The one-scan test for whitespace to squeeze must not skip any (nor change a lone CR)."""
    assert canonical_body(body) == canonical


def test_canonicalization_follows_the_rfc_example() -> None:
    """RFC 6376 3.4.5."""
    assert canonical_header(b"A", b" X") + canonical_header(b"B ", b" Y\t\r\n\tZ  ") == b"a:X\r\nb:Y Z\r\n"
    assert canonical_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"
    assert canonical_body(b"") == b"" and canonical_body(b"\r\n\r\n") == b""
    assert canonical_body(b"no line end") == b"no line end\r\n"


def test_keys_load_per_domain_and_a_bad_key_is_refused_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "ed1._domainkey.acme.example.pem").write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))
    (tmp_path / "rsa1._domainkey.acme.example.pem").write_bytes(
        pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    loaded = load_dkim_keys(tmp_path)
    assert [k.selector for k in loaded["acme.example"]] == ["ed1", "rsa1"]
    with pytest.raises(DkimKeyInvalid, match=r"rsa9\._domainkey\.acme\.example"):
        DkimSigner.from_pem("acme.example", "rsa9", b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    weak = subprocess.run(["openssl", "genrsa", "768"], check=True, capture_output=True).stdout
    with pytest.raises(DkimKeyInvalid, match="768 bits"):
        DkimSigner.from_pem("acme.example", "old", weak)
    assert isinstance(DkimKey("acme.example", "s", b""), DkimKey)


HEADER_VALUE = st.lists(st.sampled_from(["a", "Z", ":", "<x@y>", " ", "  ", "\t", "\r\n ", "\r\n\t", ";"]),
                        max_size=12).map("".join)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["From", "to", "Subject", "X-Other", "Subject "]), HEADER_VALUE),
                min_size=1, max_size=8))
def test_the_head_is_canonicalized_alike_with_and_without_the_plain_head_shortcut(
        headers: list[tuple[str, str]]) -> None:
    """`prepare` canonicalizes a head with no fold, tab, run of spaces or space ending a line by a shortcut:
    whatever the head, its signed headers are what `canonical_header` makes of each (RFC 6376 3.4.2)."""
    head = "".join(f"{name}:{value}\r\n" for name, value in headers).encode()
    wanted = [b"from", b"to", b"subject", b"subject", b"x-absent"]
    prepared = prepare(head + b"\r\nbody\r\n", wanted)
    picked = as_verifiers_pick(_parse_headers(head), prepared.names.encode().split(b":"))
    assert prepared.headers == b"".join(canonical_header(name, value) for name, value in picked)
    for name in (b"from", b"to", b"subject", b"x-absent"):  # over-signed: one more than there are
        present = sum(header.strip().lower() == name for header, _ in _parse_headers(head))
        assert prepared.names.encode().split(b":").count(name) == present + 1


def as_verifiers_pick(headers: list[tuple[bytes, bytes]], names: list[bytes]) -> list[tuple[bytes, bytes]]:
    """RFC 6376 5.4.2: for a name listed n times in h=, the last n instances from the bottom up; one listed
    more often than it occurs hashes nothing for the rest."""
    instances: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for header in headers:
        instances.setdefault(header[0].strip().lower(), []).append(header)
    taken: dict[bytes, int] = {}
    picked = []
    for name in names:
        found, index = instances.get(name, []), taken.get(name, 0)
        if index < len(found):
            picked.append(found[len(found) - 1 - index])
        taken[name] = index + 1
    return picked
