"""Secrets and signatures are compared in constant time (`hmac.compare_digest`), never with `==` or by a look-up
keyed by the secret: staff tokens here, signed links through itsdangerous (whose check this pins: an upgrade that
stopped using compare_digest fails here)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.security import HTTPAuthorizationCredentials

from herald_shared.apikeys import hash_secret
from herald_shared.http import Unauthorised
from herald_shared.links import LinkInvalid, LinkSigner
from herald_shared.staff import StaffTokens


def spy_on_compare_digest(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    calls: list[tuple[Any, Any]] = []
    real: Callable[[Any, Any], bool] = hmac.compare_digest

    def compare_digest(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    return calls


def bearer(token: str) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)


async def test_a_remembered_staff_token_is_compared_with_every_remembered_one_in_constant_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = StaffTokens({"rita": hash_secret("token-of-rita"), "sam": hash_secret("token-of-sam")})
    assert await tokens.member(bearer("token-of-rita")) == "rita"  # verified by scrypt, then remembered
    assert await tokens.member(bearer("token-of-sam")) == "sam"
    calls = spy_on_compare_digest(monkeypatch)
    assert await tokens.member(bearer("token-of-rita")) == "rita"
    assert len(calls) == 2  # both remembered fingerprints, though the first matched
    calls.clear()
    with pytest.raises(Unauthorised):
        await tokens.member(bearer("token-of-nobody"))
    assert len(calls) == 2 + 2  # the remembered ones, then each member's scrypt digest (verify_secret)


def test_signed_links_are_checked_with_compare_digest_and_a_forged_one_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    links = LinkSigner("a-link-secret-of-16+", "http://subs")
    url, _ = links.confirm_url("acme", "s1")
    token = url.rsplit("/", 1)[1]
    calls = spy_on_compare_digest(monkeypatch)
    assert links.read_confirm(token).subscriber_id == "s1"
    assert calls, "itsdangerous no longer checks signatures with hmac.compare_digest"
    signed, _, signature = token.rpartition(".")
    forged = f"{signed}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    with pytest.raises(LinkInvalid):
        links.read_confirm(forged)
