"""A password reset link tried with a token that is not its own is an attempt to get into the account (PRODUCT.md:
"Every login and login attempt is written to an audit log (who, when, from where, success or not)"): LoginFailed
(`wrong_reset_token`) for the request's user, counted toward the address's throttle and not the user's (billing
README, "A forgotten password"). The handler with stand-ins for the store, the recorder and the platform's log; on
the real stack: tests/integration/billing/test_password_reset.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from herald_billing import domain
from herald_billing.domain import Account, User
from herald_billing.handlers import BillingService, Client, TooManyAttempts
from herald_shared.contract import Event
from herald_shared.contract.billing import LoginFailed, PasswordChanged
from herald_shared.password_reset import reset_token

from .helpers import PLANS

NOW = datetime(2026, 12, 7, 18, 0, 15, tzinfo=UTC)
KEY = "a-reset-key-of-the-test-0123456789"
BOB = User("bob", "a1", "member", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$Ym9iaGFzaGJvYmhhc2g")
ACME = Account("a1", "Acme", "ada@acme.example", "ada", NOW - timedelta(days=3))
FROM = Client("198.51.100.9", "guessing-browser/1.0")
WRONG = "A" * 43


class Store:
    def __init__(self) -> None:
        self.db = None
        reset, _ = domain.request_password_reset(BOB, ACME, "pr1", NOW)
        assert reset is not None
        self.resets = {"pr1": reset}
        self.users = {"bob": BOB}
        self.accounts = {"a1": ACME}

    async def password_reset(self, request_id: str) -> domain.PasswordReset | None:
        return self.resets.get(request_id)

    async def wrong_reset_token(self, request_id: str) -> None:
        reset = self.resets[request_id]
        self.resets[request_id] = replace(reset, wrong_tokens=reset.wrong_tokens + 1)

    async def use_password_reset(self, request_id: str) -> bool:
        reset = self.resets[request_id]
        self.resets[request_id] = replace(reset, used=True)
        return not reset.used

    async def user(self, username: str) -> User | None:
        return self.users.get(username)

    async def account(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)


class Recorder:
    def __init__(self) -> None:
        self.published: list[Event] = []
        self.committed: list[Event] = []

    async def publish_only(self, events: list[Event]) -> list[Any]:
        self.published += events
        return []

    async def commit(self, events: list[Event]) -> None:
        self.committed += events

    @asynccontextmanager
    async def serialised(self, key: str) -> AsyncIterator[None]:
        yield


class PlatformAudit:
    def __init__(self) -> None:
        self.attempts: list[tuple[str | None, str | None, str | None, str]] = []

    async def login_attempt(self, at: datetime, username: str | None, ip: str | None, user_agent: str | None,
                            reason: str) -> bool:
        self.attempts.append((username, ip, user_agent, reason))
        return True


class Passwords:
    async def hash(self, password: str) -> str:
        return "$argon2id$hash-of-" + password


def service() -> tuple[BillingService, Store, Recorder, PlatformAudit]:
    store, recorder, audit = Store(), Recorder(), PlatformAudit()
    billing = BillingService(store, recorder, Passwords(), "a-session-secret-0123456789",  # type: ignore[arg-type]
                             timedelta(hours=1), PLANS, None,  # type: ignore[arg-type]
                             clock=lambda: NOW, password_reset_key=KEY, platform_audit=audit)  # type: ignore[arg-type]
    return billing, store, recorder, audit


def right_token(store: Store) -> str:
    reset = store.resets["pr1"]
    return reset_token(KEY, reset.request_id, reset.username, reset.expires_at)


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("herald_billing_logins_total", {"result": reason}) or 0.0


async def test_a_wrong_token_is_a_failed_login_of_the_requests_user_with_where_it_came_from() -> None:
    billing, store, recorder, audit = service()
    counted = failures("wrong_reset_token")
    with pytest.raises(domain.PasswordResetNotFound):
        await billing.complete_password_reset("pr1", WRONG, "a brand new passphrase", FROM)
    failed, = recorder.published
    assert isinstance(failed, LoginFailed) and failed.account_id == "a1" and failed.occurred_at == NOW
    assert failed.payload.model_dump() == {
        "username": "bob", "actor": "user", "method": "password", "ip": "198.51.100.9",
        "user_agent": "guessing-browser/1.0", "session_id": None, "reason": "wrong_reset_token"}
    assert store.resets["pr1"].wrong_tokens == 1 and audit.attempts == []
    assert failures("wrong_reset_token") == counted + 1


async def test_each_wrong_token_is_audited_until_the_link_is_burnt_and_the_right_one_then_is_refused() -> None:
    billing, store, recorder, _ = service()
    for _ in range(domain.PASSWORD_RESET_TRIES):
        with pytest.raises(domain.PasswordResetNotFound):
            await billing.complete_password_reset("pr1", WRONG, "a brand new passphrase", FROM)
    with pytest.raises(domain.PasswordResetUsed):
        await billing.complete_password_reset("pr1", right_token(store), "a brand new passphrase", FROM)
    assert [e.payload.reason for e in recorder.published if isinstance(e, LoginFailed)] == [
        "wrong_reset_token"] * domain.PASSWORD_RESET_TRIES
    assert recorder.committed == []


async def test_the_right_token_after_a_wrong_one_still_sets_the_password() -> None:
    billing, store, recorder, _ = service()
    with pytest.raises(domain.PasswordResetNotFound):
        await billing.complete_password_reset("pr1", WRONG, "a brand new passphrase", FROM)
    await billing.complete_password_reset("pr1", right_token(store), "a brand new passphrase", FROM)
    changed, = recorder.committed
    assert isinstance(changed, PasswordChanged) and changed.payload.reset_request_id == "pr1"
    assert [type(e).__name__ for e in recorder.published] == ["LoginFailed"]  # the right one is no failure


async def test_wrong_tokens_count_toward_the_address_not_the_user() -> None:
    """A reset link's token is no password: the user's own logins are not locked by someone who has the link's id
    (which only the registered mailbox got), and a user locked out by wrong passwords can still reset."""
    billing, store, _, _ = service()
    for _ in range(4):
        with pytest.raises(domain.PasswordResetNotFound):
            await billing.complete_password_reset("pr1", WRONG, "a brand new passphrase", FROM)
    assert billing.user_throttle.room("bob", NOW) == 5
    assert billing.address_throttle.room(FROM.ip, NOW) == 30 - 4
    # bob locked out by 5 wrong passwords (counted where wrong passwords count) still sets a new one by the link
    for _ in range(5):
        billing.user_throttle.count("bob", NOW)
    await billing.complete_password_reset("pr1", right_token(store), "a brand new passphrase", FROM)


async def test_a_request_id_no_request_has_is_in_the_platforms_log() -> None:
    billing, _, recorder, audit = service()
    with pytest.raises(domain.PasswordResetNotFound):
        await billing.complete_password_reset("pr-nobody-made-this", WRONG, "a brand new passphrase", FROM)
    assert recorder.published == []
    assert audit.attempts == [(None, "198.51.100.9", "guessing-browser/1.0", "wrong_reset_token")]


async def test_one_the_address_throttle_refuses_unchecked_is_locked_in_the_accounts_log() -> None:
    billing, store, recorder, _ = service()
    for _ in range(30):
        billing.address_throttle.count(FROM.ip, NOW)
    counted = failures("locked")
    with pytest.raises(TooManyAttempts):
        await billing.complete_password_reset("pr1", right_token(store), "a brand new passphrase", FROM)
    assert [(e.account_id, e.payload.username, e.payload.reason)  # type: ignore[attr-defined]
            for e in recorder.published] == [("a1", "bob", "locked")]
    assert store.resets["pr1"].wrong_tokens == 0 and failures("locked") == counted + 1
