"""A service's background task that ends without being asked to takes the process down, saying why."""

from __future__ import annotations

import asyncio

from herald_shared.lifecycle import WatchedTasks


async def _fails() -> None:
    raise RuntimeError("the store refused")


async def _returns() -> None:
    return None


async def _waits(stop: asyncio.Event) -> None:
    await stop.wait()


async def test_a_task_that_fails_or_returns_on_its_own_marks_the_service_failed_and_stops_it() -> None:
    for work, reason in ((_fails, "projection stopped: RuntimeError('the store refused')"),
                         (_returns, "projection ended on its own")):
        service, stopped = WatchedTasks(), []
        service.on_failure = lambda stopped=stopped: stopped.append(True)  # type: ignore[misc]
        task = service.watched(asyncio.create_task(work(), name="projection"))
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
        assert service.failed == reason and stopped == [True]


async def test_tasks_ended_while_stopping_or_cancelled_are_not_failures() -> None:
    service, stopped = WatchedTasks(), []
    service.on_failure = lambda: stopped.append(True)
    cancelled = service.watched(asyncio.create_task(_waits(asyncio.Event()), name="clock"))
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    service.stopping = True
    ended = service.watched(asyncio.create_task(_returns(), name="projection"))
    await ended
    await asyncio.sleep(0)
    assert service.failed is None and stopped == []
