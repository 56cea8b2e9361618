"""Failed attempts throttled per key in a sliding window, with bounded memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from herald_shared.throttle import Throttle

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
