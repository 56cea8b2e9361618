"""The staff routes record their event within the shared deadline (`herald_shared.commands.PUBLISH_TIMEOUT`):
with the broker away the producer never gives up, and both routes held the request unanswered for the whole
outage (a review: no answer in 120 s). Now 503 `dependency_unavailable` with Retry-After once the deadline passes,
and nothing of the account shown (pure: the routes with a stand-in processor and a publisher that never hears
back; `tests/integration/compliance/test_stuck_worker.py` stops a real broker)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from herald_compliance import api
from herald_compliance.api import build_staff_api
from herald_compliance.domain import AccountState, Policy, default_rules
from herald_shared.apikeys import hash_secret
from herald_shared.contract import Event
from herald_shared.http import api_app
from herald_shared.staff import StaffTokens

STAFF = {"Authorization": "Bearer staff-token-0123456789"}
DEADLINE = 0.3


class Unanswered:
    """A publisher whose broker never acknowledges (aiokafka's idempotent producer retrying while it is away)."""

    def __init__(self) -> None:
        self.handed: list[Event] = []

    async def publish(self, event: Event) -> None:
        self.handed.append(event)
        await asyncio.Event().wait()


class Holding:
    """A worker holding the account, suspended or not."""

    policy = Policy(rules=default_rules())
    url = "http://worker-a:8085"
    holders: Any = None

    def __init__(self, suspended: bool) -> None:
        self.publisher = Unanswered()
        self.state = AccountState(suspension={"event_id": "s-1"} if suspended else None)

    def held_here(self, account_id: str) -> bool:
        return True

    def account(self, account_id: str) -> AccountState | None:
        return self.state

    def holder_url(self, account_id: str) -> str | None:
        return None


@pytest.fixture(autouse=True)
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "PUBLISH_TIMEOUT", DEADLINE)


@pytest.mark.parametrize(("method", "path", "suspended", "recorded"), [
    ("GET", "rates", False, "StaffViewedRates"),
    ("POST", "reinstatement", False, "StaffViewedRates"),  # a refusal (409) shows the state: a look
    ("POST", "reinstatement", True, "AccountReinstated"),
])
async def test_a_staff_route_whose_event_the_broker_does_not_acknowledge_answers_503_at_the_deadline(
        method: str, path: str, suspended: bool, recorded: str) -> None:
    accounts = Holding(suspended)
    app = api_app("test", "test")
    app.include_router(build_staff_api(accounts, StaffTokens.from_setting(  # type: ignore[arg-type]
        f"rita={hash_secret('staff-token-0123456789')}")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker-a") as http:
        started = time.monotonic()
        answer = await asyncio.wait_for(http.request(method, f"/v1/accounts/acc-1/{path}", headers=STAFF,
                                                     json={"reason": "cleaned"} if method == "POST" else None),
                                        timeout=DEADLINE + 5)
        took = time.monotonic() - started
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("/dependency_unavailable") and answer.headers["Retry-After"] == "1"
    assert DEADLINE <= took < DEADLINE + 2
    assert [e.type for e in accounts.publisher.handed] == [recorded]  # handed over once, not retried here
