"""Failed attempts throttled per key in a sliding window, with bounded memory; API keys' per address and key id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.security import HTTPAuthorizationCredentials

from herald_shared.apikeys import hash_secret
from herald_shared.http import TooManyAttempts, Unauthorised
from herald_shared.settings import HeraldSettings
from herald_shared.staff import StaffTokens
from herald_shared.throttle import PREFIX_REMEMBERED, CredentialAttempts, Refusal, Throttle

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_the_limit_th_failure_locks_the_key_until_the_oldest_leaves_the_window() -> None:
    throttle = Throttle(limit=3, window=timedelta(minutes=10))
    for minute in (0, 1, 2):
        assert throttle.retry_after("ada", T0 + timedelta(minutes=minute)) == 0
        throttle.failed("ada", T0 + timedelta(minutes=minute))
    assert throttle.retry_after("ada", T0 + timedelta(minutes=3)) == 7 * 60
    assert throttle.retry_after("bob", T0 + timedelta(minutes=3)) == 0  # keys are separate
    assert throttle.retry_after("ada", T0 + timedelta(minutes=10)) == 0  # the first failure left the window


def test_a_success_clears_the_key() -> None:
    throttle = Throttle(limit=2, window=timedelta(minutes=10))
    throttle.failed("ada", T0)
    throttle.succeeded("ada")
    throttle.failed("ada", T0)
    assert throttle.retry_after("ada", T0) == 0


def test_memory_is_bounded_least_recently_failed_first_out() -> None:
    throttle = Throttle(limit=1, window=timedelta(hours=1), max_keys=3)
    for n in range(5):
        throttle.failed(f"ip{n}", T0)
    assert len(throttle) == 3
    assert throttle.retry_after("ip0", T0) == 0 and throttle.retry_after("ip4", T0) > 0
    for _ in range(100):
        throttle.failed("ip4", T0)
    assert throttle.retry_after("ip4", T0) == 3600  # one key keeps no more than `limit` times


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Throttle(limit=0, window=timedelta(minutes=1))


def test_an_address_is_refused_before_its_key_id_and_retry_after_is_whole_seconds() -> None:
    attempts = CredentialAttempts.api_keys(per_address=2, address_window=timedelta(minutes=5), per_key=1,
                                           key_window=timedelta(minutes=15))
    attempts.failed("198.51.100.1", "k1", T0)
    assert attempts.refusal("198.51.100.1", "k1", T0) == Refusal("throttled_key", 900)
    assert attempts.refusal("198.51.100.2", "k2", T0) is None
    attempts.failed("198.51.100.1", "k2", T0)
    assert attempts.refusal("198.51.100.1", None, T0) == Refusal("throttled_ip", 300)
    assert attempts.refusal("198.51.100.1", "k1", T0) == Refusal("throttled_ip", 300)  # the address first
    later = T0 + timedelta(seconds=299, microseconds=1)
    assert attempts.refusal("198.51.100.1", None, later) == Refusal("throttled_ip", 1)  # rounded up, at least 1
    assert attempts.refusal(None, "k9", T0) is None  # no address: only the key id counts


def test_a_long_key_id_is_counted_under_its_first_characters() -> None:
    attempts = CredentialAttempts.api_keys(per_key=1)
    attempts.failed(None, "a" * PREFIX_REMEMBERED + "x" * 5000, T0)
    attempts.failed(None, "a" * PREFIX_REMEMBERED + "z" * 5000, T0)
    assert len(attempts.per_prefix) == 1  # one entry of PREFIX_REMEMBERED characters
    assert attempts.refusal(None, "a" * PREFIX_REMEMBERED + "y", T0) is not None


def test_api_key_limits_are_strict_by_default_and_set_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    strict = HeraldSettings().api_key_attempts()
    assert (strict.per_address.limit, strict.per_address.window) == (20, timedelta(minutes=5))
    assert (strict.per_prefix.limit, strict.per_prefix.window) == (5, timedelta(minutes=15))
    for name, value in {"HERALD_AUTH_FAILURES_PER_IP": "1000", "HERALD_AUTH_FAILURES_PER_IP_WINDOW_SECONDS": "60",
                        "HERALD_AUTH_FAILURES_PER_KEY": "100",
                        "HERALD_AUTH_FAILURES_PER_KEY_WINDOW_SECONDS": "30"}.items():
        monkeypatch.setenv(name, value)
    lifted = HeraldSettings().api_key_attempts()
    assert (lifted.per_address.limit, lifted.per_address.window) == (1000, timedelta(minutes=1))
    assert (lifted.per_prefix.limit, lifted.per_prefix.window) == (100, timedelta(seconds=30))


async def test_staff_tokens_are_throttled_per_client_address_but_a_verified_token_still_works() -> None:
    tokens = StaffTokens({"rita": hash_secret("token-of-rita")},
                         Throttle(3, timedelta(minutes=15)))
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    assert await tokens.member(HTTPAuthorizationCredentials(scheme="Bearer", credentials="token-of-rita"),
                               "198.51.100.1", now) == "rita"
    for _ in range(3):
        with pytest.raises(Unauthorised):
            await tokens.member(HTTPAuthorizationCredentials(scheme="Bearer", credentials="guess"), "198.51.100.1",
                                now)
    with pytest.raises(TooManyAttempts) as refused:
        await tokens.member(HTTPAuthorizationCredentials(scheme="Bearer", credentials="guess"), "198.51.100.1", now)
    assert refused.value.refusal.retry_after == 900
    # Rita's token, verified before, still works from the throttled address; a guess from another is checked.
    assert await tokens.member(HTTPAuthorizationCredentials(scheme="Bearer", credentials="token-of-rita"),
                               "198.51.100.1", now) == "rita"
    with pytest.raises(Unauthorised):
        await tokens.member(HTTPAuthorizationCredentials(scheme="Bearer", credentials="guess"), "198.51.100.2", now)
    with pytest.raises(Unauthorised):  # the window passed
        await tokens.member(HTTPAuthorizationCredentials(scheme="Bearer", credentials="guess"), "198.51.100.1",
                            now + timedelta(minutes=15, seconds=1))


def test_an_empty_throttle_is_still_a_throttle() -> None:
    given = Throttle(3, timedelta(minutes=1))
    assert len(given) == 0 and (given or Throttle(99, timedelta(hours=1))) is given


def test_a_throttle_counts_anything_and_says_how_much_room_is_left() -> None:
    throttle = Throttle(5, timedelta(days=1))
    assert throttle.room("acme", T0) == 5
    throttle.count("acme", T0, 3)
    assert throttle.room("acme", T0) == 2 and throttle.room("other", T0) == 5
    throttle.count("acme", T0 + timedelta(hours=1), 2)
    assert throttle.room("acme", T0 + timedelta(hours=2)) == 0
    assert throttle.room("acme", T0 + timedelta(days=1)) == 3  # the first three left the window
