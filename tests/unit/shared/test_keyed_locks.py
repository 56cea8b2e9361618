"""KeyedLocks: one holder at a time per key; different keys never wait on each other, however many are held;
a key's lock is forgotten once nobody holds or waits for it (also when a waiter is cancelled)."""

from __future__ import annotations

import asyncio

from herald_shared.commands import KeyedLocks


async def test_one_holder_at_a_time_per_key_in_arrival_order() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def hold(name: str, started: asyncio.Event | None = None) -> None:
        async with locks.hold("subscriber:1"):
            order.append(f"{name} in")
            if started is not None:
                started.set()
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    first_in = asyncio.Event()
    first = asyncio.create_task(hold("first", first_in))
    await first_in.wait()
    await asyncio.gather(first, hold("second"))
    assert order == ["first in", "first out", "second in", "second out"]
    assert len(locks) == 0


async def test_many_different_keys_are_held_at_once() -> None:
    """1,000 requests for different keys all hold their lock together: none waits for an unrelated one (with
    locks shared by 256 stripes of keys, most of them would)."""
    locks = KeyedLocks()
    holding = 0
    all_in = asyncio.Event()
    release = asyncio.Event()

    async def hold(key: str) -> None:
        nonlocal holding
        async with locks.hold(key):
            holding += 1
            if holding == 1000:
                all_in.set()
            await release.wait()

    tasks = [asyncio.create_task(hold(f"subscriber:{n}")) for n in range(1000)]
    await asyncio.wait_for(all_in.wait(), 5)
    assert len(locks) == 1000
    release.set()
    await asyncio.gather(*tasks)
    assert len(locks) == 0, "nothing kept once released"


async def test_a_waiter_cancelled_is_forgotten_and_the_holder_keeps_the_lock() -> None:
    locks = KeyedLocks()
    held, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with locks.hold("k"):
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("k"):
            raise AssertionError("never gets the lock: cancelled while waiting")

    first = asyncio.create_task(holder())
    await held.wait()
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert len(locks) == 1, "the holder's lock is still there"
    release.set()
    await first
    assert len(locks) == 0
    async with locks.hold("k"):  # free again
        assert len(locks) == 1
