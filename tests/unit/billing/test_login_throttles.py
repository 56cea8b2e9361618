"""The login throttles count the password checks under way beside the failures (billing README, "Audit log and
throttling": after 5 failures for a username, or 30 from one address, within 15 minutes, attempts are refused
unchecked), so attempts made at once see each other."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from herald_billing.handlers import LoginThrottles, TooManyAttempts
from herald_shared.throttle import Throttle

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
WAIT = 5.0  # seconds: a deadline for what happens at once here


def throttles() -> LoginThrottles:
    return LoginThrottles(Throttle(5, timedelta(minutes=15)), Throttle(30, timedelta(minutes=15)))


async def test_a_sixth_attempt_waits_for_the_five_under_way_and_is_refused_when_they_fail() -> None:
    logins = throttles()
    checks = [await logins.take("ada", f"198.51.100.{i}", NOW) for i in range(5)]
    sixth = asyncio.create_task(logins.take("ada", "198.51.100.6", NOW))
    await asyncio.sleep(0)
    assert not sixth.done()
    for check in checks[:4]:
        check.failed()
    await asyncio.sleep(0)
    assert not sixth.done()  # one place still held by a check whose outcome is not known
    checks[4].failed()
    with pytest.raises(TooManyAttempts) as refused:
        await asyncio.wait_for(sixth, WAIT)
    assert refused.value.retry_after == 900
    assert len(logins) == 0


async def test_an_attempt_waiting_for_checks_under_way_gets_the_place_of_a_right_password() -> None:
    logins = throttles()
    checks = [await logins.take("ada", None, NOW) for _ in range(5)]
    sixth = asyncio.create_task(logins.take("ada", None, NOW))
    checks[0].succeeded()
    with await asyncio.wait_for(sixth, WAIT) as attempt:
        attempt.failed()
    for check in checks[1:]:
        check.failed()
    with pytest.raises(TooManyAttempts):
        await logins.take("ada", None, NOW)


async def test_an_attempt_left_unsettled_counts_nothing() -> None:
    logins = throttles()
    with pytest.raises(RuntimeError):
        with await logins.take("ada", "198.51.100.1", NOW):
            raise RuntimeError("the store failed")
    assert len(logins) == 0
    assert logins.per_user.room("ada", NOW) == 5 and logins.per_address.room("198.51.100.1", NOW) == 30


async def test_thirty_checks_under_way_from_one_address_hold_every_other_username_back() -> None:
    logins = throttles()
    checks = [await logins.take(f"user{i}", "203.0.113.99", NOW) for i in range(30)]
    other = asyncio.create_task(logins.take("someone.else", "203.0.113.99", NOW))
    elsewhere = await logins.take("someone.else", "192.0.2.1", NOW)  # another address is not held back
    await asyncio.sleep(0)
    assert not other.done()
    for check in checks:
        check.failed()
    with pytest.raises(TooManyAttempts):
        await asyncio.wait_for(other, WAIT)
    elsewhere.succeeded()
    assert len(logins) == 0
