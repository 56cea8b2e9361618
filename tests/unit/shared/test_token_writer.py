"""TokenWriter writes what itsdangerous' URL-safe serializers read: the links already mailed and the ones
minted now are read by the same `loads`, and a token is bound to its secret and salt."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer

from herald_shared.links import TokenWriter

SECRET = "a-secret-of-at-least-16-chars"
claims = st.dictionaries(st.sampled_from(["a", "s", "c", "m", "i"]),
                         st.none() | st.integers(-10**6, 10**6) | st.text(max_size=60), max_size=5)


@given(claims)
def test_what_it_writes_the_serializers_read_and_untimed_tokens_are_theirs_exactly(claim: dict[str, object]) -> None:
    token = TokenWriter(SECRET, "herald.tracking.v1", timed=False).dumps(claim)
    serializer = URLSafeSerializer(SECRET, salt="herald.tracking.v1")
    assert serializer.loads(token) == claim
    theirs = serializer.dumps(claim)
    if not theirs.startswith("."):  # itsdangerous compressed nothing: the very same token
        assert token == theirs


@given(claims)
def test_timed_tokens_are_read_with_an_age_limit(claim: dict[str, object]) -> None:
    token = TokenWriter(SECRET, "herald.unsubscribe.v1", timed=True).dumps(claim)
    assert URLSafeTimedSerializer(SECRET, salt="herald.unsubscribe.v1").loads(token, max_age=60) == claim


def test_a_token_is_bound_to_its_secret_and_salt_and_to_every_character() -> None:
    token = TokenWriter(SECRET, "herald.tracking.v1", timed=False).dumps({"a": "acme", "m": "m1"})
    with pytest.raises(BadSignature):
        URLSafeSerializer(SECRET, salt="herald.confirm.v1").loads(token)
    with pytest.raises(BadSignature):
        URLSafeSerializer("another-secret-of-16-chars", salt="herald.tracking.v1").loads(token)
    payload, _, signature = token.rpartition(".")
    forged = payload.replace(payload[2], "A" if payload[2] != "A" else "B", 1) + "." + signature
    with pytest.raises(BadSignature):
        URLSafeSerializer(SECRET, salt="herald.tracking.v1").loads(forged)


@pytest.mark.parametrize("now", [1_790_000_000.25, 1_790_000_001.75, 2_000_000_000.0])
def test_timed_tokens_are_theirs_exactly_at_the_same_second(monkeypatch: pytest.MonkeyPatch, now: float) -> None:
    writer = TokenWriter(SECRET, "herald.unsubscribe.v1", timed=True)
    claim = {"a": "acme", "s": "s1", "c": "c1", "m": "m1"}
    monkeypatch.setattr("time.time", lambda: now)
    assert writer.dumps(claim) == URLSafeTimedSerializer(SECRET, salt="herald.unsubscribe.v1").dumps(claim)
    monkeypatch.setattr("time.time", lambda: now + 1)  # the writer's remembered second moves on
    assert writer.dumps(claim) == URLSafeTimedSerializer(SECRET, salt="herald.unsubscribe.v1").dumps(claim)
