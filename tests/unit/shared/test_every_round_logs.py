"""A periodic loop (`lifecycle.every`: campaigns' scheduler, billing's plan clock) whose rounds fail while Kafka or
MongoDB is away: one WARNING line without a traceback, then at most one per 30 s saying how many were left out,
and a line when it works again; any other failure keeps its traceback, every time (a review: ~40 lines every 15 s
with the broker away, ~75 every 10 s with MongoDB away, a traceback each)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from herald_shared.lifecycle import every
from herald_shared.logs import REPEAT_INTERVAL_SECONDS


class Clock:
    """time.time() as log records read it (`created`), moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "time", fake)
    return fake


async def run_rounds(rounds: list[Callable[[], None]]) -> str:
    """`every` over these rounds (each raises, or returns), stopped after the last; the loop's name, fresh for
    each test (the limit remembers a loop's lines across calls)."""
    what = f"scheduling round {uuid.uuid4().hex[:6]}"
    stopping = asyncio.Event()
    pending = iter(rounds)

    async def work() -> None:
        step = next(pending, None)
        if step is None:
            stopping.set()
            return
        step()

    await asyncio.wait_for(every(0, stopping, work, what), timeout=10)
    return what


def fails(exc: Exception, clock: Clock | None = None, at: float | None = None) -> Callable[[], None]:
    def step() -> None:
        if clock is not None and at is not None:
            clock.now = at
        raise exc
    return step


def works() -> None:
    pass


def of(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(what)]


@pytest.mark.parametrize("away", [KafkaTimeoutError("the broker acknowledged 1 events in no 15 s"),
                                  KafkaConnectionError("connect failed"),
                                  ServerSelectionTimeoutError("127.0.0.1:27017: connection refused"),
                                  OperationFailure("postgres is away", code=1)])
async def test_a_dependency_away_is_one_line_then_one_per_interval_counting_the_rest(
        away: Exception, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    start = clock.now
    rounds = [fails(away) for _ in range(5)]  # within the interval: one line
    rounds += [fails(away, clock, start + REPEAT_INTERVAL_SECONDS + 1)]  # the next one, counting the 4 left out
    rounds += [fails(away, clock, start + REPEAT_INTERVAL_SECONDS + 2), works, works]
    with caplog.at_level(logging.INFO, logger="herald_shared.lifecycle"):
        what = await run_rounds(rounds)
    lines = of(caplog, what)
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        ("WARNING", f"{what} failed, a dependency is away; retrying"),
        ("WARNING", f"{what} failed, a dependency is away; retrying"),
        ("INFO", f"{what} works again")]
    first, second, recovered = lines
    assert first.exc_info is None and second.exc_info is None  # no traceback
    assert first.error == f"{type(away).__name__}: {away}" and not hasattr(first, "suppressed")  # type: ignore[attr-defined]
    assert (second.suppressed, second.failed_rounds) == (4, 6)  # type: ignore[attr-defined]
    assert recovered.failed_rounds == 7  # type: ignore[attr-defined]


async def test_each_loop_is_limited_on_its_own(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="herald_shared.lifecycle"):
        one = await run_rounds([fails(KafkaTimeoutError()), fails(KafkaTimeoutError())])
        other = await run_rounds([fails(KafkaTimeoutError())])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{name} failed, a dependency is away; retrying" for name in (one, other)]


async def test_any_other_failure_keeps_its_traceback_every_round(clock: Clock,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    bug = KeyError("status")
    with caplog.at_level(logging.INFO, logger="herald_shared.lifecycle"):
        what = await run_rounds([fails(bug), fails(bug), fails(OperationFailure("bad $set", code=9)), works])
    lines = of(caplog, what)
    assert [(r.levelname, r.getMessage()) for r in lines] == [("ERROR", f"{what} failed; retrying")] * 3
    assert [r.exc_info[1] for r in lines if r.exc_info] == [bug, bug, lines[2].exc_info[1]]  # type: ignore[index]
    assert isinstance(lines[2].exc_info[1], OperationFailure)  # type: ignore[index]
