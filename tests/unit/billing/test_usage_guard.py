"""The plan guard decides nothing while its consumer catches up, then every account the catch-up touched, once;
the plan clock's first round waits for the same (pure: stand-ins for the projection and the service; the fold
from offset 0 on the real stack is in tests/integration/billing/test_plans.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from herald_billing.handlers import PlanClock, UsageGuard


class Projection:
    def __init__(self) -> None:
        self.touched: set[str] = set()

    async def handle(self, event: Any) -> None:
        self.touched.add(event)

    async def flush(self) -> None:
        pass

    def take_touched(self) -> set[str]:
        touched, self.touched = self.touched, set()
        return touched


class Service:
    def __init__(self) -> None:
        self.decided: list[list[str]] = []

    async def enforce(self, account_ids: list[str], failed: set[str] | None = None) -> int:
        self.decided.append(account_ids)
        return 0

    def clock(self) -> Any:
        return None


async def test_nothing_is_decided_until_caught_up_then_every_account_touched_once() -> None:
    projection, service, caught_up = Projection(), Service(), asyncio.Event()
    guard = UsageGuard(projection, service)  # type: ignore[arg-type]
    guard.caught_up = caught_up
    for batch in (["a1", "a2"], ["a2", "a3"]):
        for account in batch:
            await guard.handle(account)  # type: ignore[arg-type]
        await guard.flush()
    assert service.decided == []
    caught_up.set()
    await guard.flush()  # the consumer's flush once caught up
    assert service.decided == [["a1", "a2", "a3"]]
    await guard.handle("a4")  # type: ignore[arg-type]
    await guard.flush()
    assert service.decided == [["a1", "a2", "a3"], ["a4"]]


async def test_the_plan_clocks_first_round_waits_for_the_fold_to_catch_up() -> None:
    service, ready = Service(), asyncio.Event()
    clock = PlanClock(service, interval=3600, ready=ready)  # type: ignore[arg-type]
    rounds: list[int] = []

    async def tick() -> int:
        rounds.append(1)
        return 0

    clock.tick = tick  # type: ignore[method-assign]
    running = asyncio.create_task(clock.run())
    await asyncio.sleep(0.05)
    assert rounds == []
    ready.set()
    await asyncio.wait_for(clock.ran.wait(), 5)
    assert rounds == [1]
    clock.request_stop()
    await asyncio.wait_for(running, 5)

    stopped = PlanClock(service, interval=3600, ready=asyncio.Event())  # type: ignore[arg-type]
    stopped.tick = tick  # type: ignore[method-assign]
    stopped.request_stop()
    await asyncio.wait_for(stopped.run(), 5)  # stopped before it caught up: no round at all
    assert rounds == [1]


class Failing(Service):
    def __init__(self, error: Exception, times: int) -> None:
        super().__init__()
        self.error, self.times = error, times

    async def enforce(self, account_ids: list[str], failed: set[str] | None = None) -> int:
        if self.times:
            self.times -= 1
            raise self.error
        return await super().enforce(account_ids)


async def test_an_account_whose_rule_raises_holds_back_no_other_and_is_tried_again_at_the_next_flush(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule that raises for one account (a defect) is logged; the other accounts are decided and published, the
    flush passes (failing it would dead-letter stored events one by one), and that account is tried again."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from herald_billing import domain
    from herald_billing.handlers import BillingService

    def enforce(account: Any, usage: Any, now: Any, calendar: Any) -> list[Any]:
        if account.account_id == "bad":
            raise ValueError("a rule raised")
        return [SimpleNamespace(type="QuotaExceeded", account_id=account.account_id)]

    monkeypatch.setattr(domain, "enforce", enforce)
    monkeypatch.setattr(domain, "evolve_all", lambda account, events: account)
    monkeypatch.setattr(domain, "allowance_changed", lambda *args: None)
    published: list[Any] = []

    async def touched_usage(ids: list[str]) -> dict[str, Any]:
        return {a: (SimpleNamespace(account_id=a), None) for a in ids}

    async def publish_only(events: list[Any]) -> None:
        published.extend(events)

    service: Any = SimpleNamespace(clock=lambda: datetime.now(UTC), store=SimpleNamespace(touched_usage=touched_usage),
                                   recorder=SimpleNamespace(publish_only=publish_only), calendar=None,
                                   _enforcing=asyncio.Lock(), _allowances={})
    service.enforce = lambda ids, failed=None: BillingService.enforce(service, ids, failed)
    guard = UsageGuard(Projection(), service)  # type: ignore[arg-type]
    for account_id in ("bad", "a1"):
        await guard.handle(account_id)  # type: ignore[arg-type]
    await guard.flush()  # passes
    assert [e.account_id for e in published] == ["a1"]
    await guard.handle("a2")  # type: ignore[arg-type]
    await guard.flush()
    assert [e.account_id for e in published] == ["a1", "a2"]  # "bad" tried again, alone failing
    with pytest.raises(ValueError):  # without `failed` (the plan clock's rounds), a defect is raised as before
        await BillingService.enforce(service, ["bad"])


async def test_a_decision_that_meets_the_infrastructure_away_fails_the_flush_to_be_waited_out() -> None:
    projection, service = Projection(), Failing(AutoReconnect("connection refused"), times=1)
    guard = UsageGuard(projection, service)  # type: ignore[arg-type]
    await guard.handle("a1")  # type: ignore[arg-type]
    with pytest.raises(AutoReconnect):
        await guard.flush()
    await guard.flush()  # the consumer's retry
    assert service.decided == [["a1"]]


class Forgetful(Projection):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten = 0

    async def forget(self) -> None:
        self.touched.clear()
        self.forgotten += 1


async def test_forgetting_forgets_what_the_projection_and_the_others_staged() -> None:
    projection, other, service = Forgetful(), Forgetful(), Service()
    guard = UsageGuard(projection, service, other)  # type: ignore[arg-type]
    await guard.handle("a1")  # type: ignore[arg-type]
    await guard.forget()
    assert (projection.forgotten, other.forgotten) == (1, 1)
    await guard.flush()
    assert service.decided == []
