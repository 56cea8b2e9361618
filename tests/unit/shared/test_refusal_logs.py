"""A refused API key or staff token leaves a line in the service's log (PRODUCT.md: "Every login and login attempt
is written to an audit log (who, when, from where, success or not)"): the key id it names, never its secret or the
token, the client's address and why."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials

from herald_shared.apikeys import hash_secret
from herald_shared.http import TooManyAttempts, Unauthorised, api_app, api_key_account, problems
from herald_shared.staff import StaffTokens
from herald_shared.throttle import CredentialAttempts, Throttle

GOOD_KEY = "hk_0123456789abcdef.the-right-secret"


class OneKey:
    """Account acme's one API key."""

    def __init__(self) -> None:
        self.attempts = CredentialAttempts.api_keys(2, timedelta(minutes=5), 100, timedelta(minutes=15))

    async def authenticate(self, key: str, *, remembered_only: bool = False) -> str | None:
        return "acme" if key == GOOD_KEY and not remembered_only else None


def keyed_client() -> httpx.AsyncClient:
    app = api_app("Test", "A test app.")
    account = api_key_account(OneKey(), clock=lambda: datetime(2026, 12, 3, 9, 0, tzinfo=UTC))

    @app.get("/things", responses=problems(401, 429))
    async def things(account_id: str = Depends(account)) -> dict[str, str]:
        return {"account_id": account_id}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.23", 4711)),
                             base_url="http://test", headers={"User-Agent": "crm-sync/3"})


def lines(caplog: pytest.LogCaptureFixture, message: str, *fields: str) -> list[tuple[object, ...]]:
    """The level and `fields` (the `extra=` of the structured log) of each record with this message."""
    return [(r.levelno, *(getattr(r, f) for f in fields)) for r in caplog.records if r.getMessage() == message]


async def test_a_refused_api_key_is_a_warning_with_its_key_id_address_and_reason_never_its_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herald_shared.http")
    async with keyed_client() as client:
        assert (await client.get("/things", headers={"Authorization": f"Bearer {GOOD_KEY}"})).status_code == 200
        assert (await client.get("/things")).status_code == 401  # no key: no attempt, no line
        assert (await client.get("/things", headers={"X-API-Key": "hk_0123456789abcdef.a-guessed-secret"})
                ).status_code == 401
        assert (await client.get("/things", headers={"X-API-Key": "not-a-key-at-all"})).status_code == 401
        assert (await client.get("/things", headers={"X-API-Key": "hk_0123456789abcdef.another-guess"})
                ).status_code == 429
    assert lines(caplog, "API key refused", "key_id", "ip", "user_agent", "reason", "path") == [
        (logging.WARNING, "0123456789abcdef", "198.51.100.23", "crm-sync/3", "bad_key", "/things"),
        (logging.WARNING, None, "198.51.100.23", "crm-sync/3", "bad_key", "/things"),
        (logging.WARNING, "0123456789abcdef", "198.51.100.23", "crm-sync/3", "throttled_ip", "/things")]
    everything = " ".join(str(vars(r)) for r in caplog.records)
    assert "guess" not in everything and "the-right-secret" not in everything


async def test_a_refused_staff_token_is_a_warning_with_the_address_and_reason_never_the_token(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herald_shared.staff")
    tokens = StaffTokens({"rita": hash_secret("token-of-rita")}, Throttle(1, timedelta(minutes=15)))
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)

    def bearer(token: str) -> HTTPAuthorizationCredentials:
        return HTTPAuthorizationCredentials(scheme="Bearer", credentials=token)

    assert await tokens.member(bearer("token-of-rita"), "192.0.2.99", now) == "rita"
    with pytest.raises(Unauthorised):
        await tokens.member(None, "192.0.2.99", now)  # no token: no attempt, no line
    with pytest.raises(Unauthorised):
        await tokens.member(bearer("a-guessed-token"), "192.0.2.99", now)
    with pytest.raises(TooManyAttempts):
        await tokens.member(bearer("another-guessed-token"), "192.0.2.99", now)
    assert lines(caplog, "staff token refused", "ip", "reason") == [
        (logging.WARNING, "192.0.2.99", "wrong_token"), (logging.WARNING, "192.0.2.99", "throttled_ip")]
    everything = " ".join(str(vars(r)) for r in caplog.records)
    assert "guessed" not in everything and "token-of-rita" not in everything
