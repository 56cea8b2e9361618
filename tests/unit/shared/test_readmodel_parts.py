"""How big loads and inserts are split into concurrent requests (`readmodel.in_parts`, `_gather_parts`)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald_shared import readmodel
from herald_shared.readmodel import PART_MIN, PARTS, in_parts


@given(st.integers(0, 10_000), st.integers(1, 2_000))
def test_parts_cover_every_item_once_in_order_within_the_limits(count: int, most: int) -> None:
    items = list(range(count))
    parts = in_parts(items, most)
    assert [i for part in parts for i in part] == items
    assert all(0 < len(part) <= most for part in parts)
    # No part smaller than it needs to be (but the last), and no more than PARTS when they can hold it all.
    assert all(len(part) >= min(most, PART_MIN) for part in parts[:-1])
    if count <= PARTS * most:
        assert len(parts) <= PARTS

async def test_a_failed_part_is_raised_only_once_no_part_is_still_running() -> None:
    finished: list[int] = []

    async def part(n: int) -> int:
        if n == 0:
            raise ConnectionError("part 0 failed")
        await asyncio.sleep(0.01 * n)
        finished.append(n)
        return n

    work = [lambda n=n: part(n) for n in range(PARTS)]  # type: ignore[misc]
    with pytest.raises(ConnectionError):
        await readmodel._gather_parts(work)
    assert sorted(finished) == list(range(1, PARTS))
    assert await readmodel._gather_parts(work[1:]) == list(range(1, PARTS))


def test_a_listing_key_is_the_same_from_an_events_time_and_from_the_stored_date() -> None:
    """MongoDB keeps a date to the millisecond: the key of a listing worked out from the event's time when it is
    written and from the stored document when it is removed must be the same key (campaigns' schedule kept keys
    of the microsecond that nothing removed, and stopped queueing once 100 of them were due)."""
    from datetime import UTC, datetime, timedelta, timezone

    from herald_shared.readmodel import stored_time_key, time_key

    at = datetime(2026, 12, 7, 2, 34, 39, 605012, tzinfo=UTC)
    stored = at.replace(microsecond=605000)
    assert stored_time_key(at) == stored_time_key(stored) == time_key(stored) == "20261207T023439605000Z"
    assert stored_time_key(at.astimezone(timezone(timedelta(hours=2)))) == stored_time_key(at)
    assert stored_time_key(stored) < stored_time_key(stored + timedelta(milliseconds=1))
