"""A staff request for an account another worker holds is forwarded there once (pure: the routes with a stand-in
processor and a stand-in worker client; the two-worker integration test does it over real HTTP)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from herald_compliance.api import ANSWERED_BY, FORWARDED, build_staff_api
from herald_compliance.domain import AccountState, Policy, default_rules
from herald_shared.apikeys import hash_secret
from herald_shared.http import api_app
from herald_shared.staff import StaffTokens

STAFF = {"Authorization": "Bearer staff-token-0123456789"}


class Holders:
    """Records what it was asked to send; answers `answer`, or raises it."""

    def __init__(self, answer: tuple[int, dict[str, str], bytes] | Exception) -> None:
        self.answer = answer
        self.sent: list[tuple[str, str, dict[str, str], bytes]] = []

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      ) -> tuple[int, dict[str, str], bytes]:
        self.sent.append((method, url, headers, body))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Elsewhere:
    """A worker that holds no account; `holder` holds them all (None: no holder known)."""

    policy = Policy(rules=default_rules())
    publisher: Any = None
    url = "http://worker-a:8085"

    def __init__(self, holders: Holders, holder: str | None = "http://worker-b:8085/") -> None:
        self.holders = holders
        self.holder = holder

    def held_here(self, account_id: str) -> bool:
        return False

    def account(self, account_id: str) -> AccountState | None:
        raise AssertionError("a worker that does not hold the account never reads it")

    def holder_url(self, account_id: str) -> str | None:
        return self.holder


def client(accounts: Elsewhere) -> httpx.AsyncClient:
    app = api_app("test", "test")
    app.include_router(build_staff_api(accounts, StaffTokens.from_setting(  # type: ignore[arg-type]
        f"rita={hash_secret('staff-token-0123456789')}")))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker-a")


async def test_the_holders_answer_comes_back_with_the_request_sent_once_with_its_credentials_and_body() -> None:
    holders = Holders((409, {"content-type": "application/problem+json", "set-cookie": "x=1"},
                       b'{"type": "https://herald.dev/problems/not_suspended"}'))
    async with client(Elsewhere(holders)) as http:
        answer = await http.post("/v1/accounts/acc-1/reinstatement?dry=1", headers={**STAFF, "X-Other": "no"},
                                 json={"reason": "cleaned"})
    assert (answer.status_code, answer.headers[ANSWERED_BY]) == (409, "http://worker-b:8085/")
    assert answer.headers["content-type"] == "application/problem+json" and "set-cookie" not in answer.headers
    assert answer.json() == {"type": "https://herald.dev/problems/not_suspended"}
    ((method, url, headers, body),) = holders.sent
    assert (method, url, body) == ("POST", "http://worker-b:8085/v1/accounts/acc-1/reinstatement?dry=1",
                                   b'{"reason":"cleaned"}')
    assert headers == {"authorization": STAFF["Authorization"], "content-type": "application/json",
                       "user-agent": headers["user-agent"], FORWARDED: "http://worker-a:8085"}


@pytest.mark.parametrize("why", ["forwarded already", "no holder known"])
async def test_a_request_forwarded_already_or_with_no_holder_known_is_421(why: str) -> None:
    holders = Holders((200, {}, b"{}"))
    accounts = Elsewhere(holders, holder=None if why == "no holder known" else "http://worker-b:8085")
    extra = {FORWARDED: "http://worker-b:8085"} if why == "forwarded already" else {}
    async with client(accounts) as http:
        answer = await http.get("/v1/accounts/acc-1/rates", headers={**STAFF, **extra})
    assert answer.status_code == 421 and answer.json()["type"].endswith("/not_held_here")
    assert holders.sent == []


async def test_a_holder_that_does_not_answer_is_503_and_a_stranger_is_never_forwarded() -> None:
    holders = Holders(ConnectionError("refused"))
    async with client(Elsewhere(holders)) as http:
        down = await http.get("/v1/accounts/acc-1/rates", headers=STAFF)
        assert down.status_code == 503 and down.json()["type"].endswith("/holder_unreachable")
        holders.sent.clear()
        stranger = await http.get("/v1/accounts/acc-1/rates", headers={"Authorization": "Bearer guess"})
    assert stranger.status_code == 401 and holders.sent == []
