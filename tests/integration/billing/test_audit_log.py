"""The audit log on the real stack (PRODUCT.md: "Every login and login attempt is written to an audit log (who,
when, from where, success or not)"): login requests that are not valid, password changes, and the refused API keys
and staff tokens every service logs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from herald_subscriptions.main import Subscriptions
from tests.conftest import eventually

from .helpers import PASSWORD, Customer, Platform


async def logins(customer: Customer) -> list[dict[str, Any]]:
    items = (await customer.http.get("/v1/account/audit-log")).json()["items"]
    return [e for e in items if e["kind"] == "login"]


def lines(caplog: pytest.LogCaptureFixture, message: str, *fields: str) -> list[tuple[Any, ...]]:
    """The level and `fields` (the `extra=` of the structured log) of each record with this message."""
    return [(r.levelno, *(getattr(r, f) for f in fields)) for r in caplog.records if r.getMessage() == message]


async def test_a_login_request_that_is_not_valid_is_a_failed_attempt_audited_and_throttled(
        platform: Platform, caplog: pytest.LogCaptureFixture) -> None:
    """Answered 422 as documented, it is the named user's failed attempt (`malformed`) all the same: in their
    account's log with where it came from, and counted by the throttles like a wrong password."""
    caplog.set_level(logging.WARNING, logger="herald.billing")
    ada = await platform.sign_up("ada")
    attacker = platform.client(address=("198.51.100.66", 1))
    for body in ({"username": "Ada", "password": "x" * 257}, {"username": "ada", "password": ""},
                 {"username": "ada"}, {"username": "ada", "password": 12345678901234}):
        answer = await attacker.post("/v1/sessions", json=body, headers={"User-Agent": "attacker/1"})
        assert answer.status_code == 422 and answer.json()["type"].endswith("/invalid_request")
    log = await eventually(lambda: logins(ada), lambda items: len(items) == 5, what="the attempts in the log")
    assert [(e["result"], e["reason"], e["username"], e["method"], e["ip"], e["user_agent"]) for e in log[1:]] == \
        [("failure", "malformed", "ada", "password", "198.51.100.66", "attacker/1")] * 4
    # The fifth failure for ada: the user's throttle refuses even the right password, from anywhere.
    assert (await attacker.post("/v1/sessions", json={"username": "ada", "password": None})).status_code == 422
    assert (await platform.http.post("/v1/sessions", json={"username": "ada", "password": PASSWORD})
            ).status_code == 429
    # A body naming nobody belongs to no account: the service's log keeps it, and the address's throttle counts it.
    nobody = platform.client(address=("192.0.2.77", 2))
    for _ in range(15):
        assert (await nobody.post("/v1/sessions", json={"password": "x"})).status_code == 422
        assert (await nobody.post("/v1/sessions", content=b'{"username": "bob", "pass')).status_code == 422  # no JSON
    assert (await nobody.post("/v1/sessions", json={"username": "bob", "password": "x"})).status_code == 429
    unnamed = [line for line in lines(caplog, "login for an unknown user", "ip", "username", "reason")
               if line[1] == "192.0.2.77"]
    assert unnamed == [(logging.WARNING, "192.0.2.77", None, "malformed")] * 30 + [
        (logging.WARNING, "192.0.2.77", "bob", "locked")]
    assert "x" * 257 not in " ".join(str(vars(r)) for r in caplog.records)  # no password in the log


async def test_a_password_change_is_in_the_audit_log_with_who_when_and_where(platform: Platform) -> None:
    ada = await platform.sign_up("ada")
    [opened] = await logins(ada)
    changer = platform.client({"Authorization": f"Bearer {ada.token}", "User-Agent": "settings-page/2"},
                              address=("198.51.100.77", 1))
    before = datetime.now(UTC)
    changed = await changer.put("/v1/account/password", json={"current_password": PASSWORD,
                                                              "new_password": "an entirely new phrase"})
    assert changed.status_code == 204
    after = datetime.now(UTC)
    fresh = await platform.log_in("ada", ada.account_id, "an entirely new phrase")
    for reader in (fresh.http.get("/v1/account/audit-log"),
                   platform.staff().get(f"/v1/staff/accounts/{ada.account_id}/audit-log")):
        items = (await reader).json()["items"]
        [change] = [e for e in items if e["kind"] == "password_change"]
        assert (change["result"], change["username"], change["ip"], change["user_agent"], change["session_id"]) == \
            ("success", "ada", "198.51.100.77", "settings-page/2", opened["session_id"])
        assert before.replace(microsecond=0) <= datetime.fromisoformat(change["at"]) <= after
        assert [e["kind"] for e in items][:3] == ["login", "password_change", "login"]


async def test_a_refused_staff_token_is_logged_with_the_address_and_reason(
        platform: Platform, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="herald_shared.staff")
    ada = await platform.sign_up("ada")
    bad = platform.client({"Authorization": "Bearer not-a-staff-token"}, address=("192.0.2.99", 2))
    assert (await bad.get(f"/v1/staff/accounts/{ada.account_id}")).status_code == 401
    assert (await platform.staff().get(f"/v1/staff/accounts/{ada.account_id}")).status_code == 200
    assert lines(caplog, "staff token refused", "ip", "reason") == [(logging.WARNING, "192.0.2.99", "wrong_token")]
    assert "not-a-staff-token" not in " ".join(str(vars(r)) for r in caplog.records)


async def test_a_refused_api_key_is_logged_by_the_service_it_was_sent_to_with_key_id_address_and_reason(
        platform: Platform, subscriptions: Subscriptions, caplog: pytest.LogCaptureFixture) -> None:
    """A key billing issued, refused by the subscriptions service (a wrong secret, then revoked): a WARNING there
    with the key id, the client's address and the reason, never the secret."""
    caplog.set_level(logging.WARNING, logger="herald_shared.http")
    ada = await platform.sign_up("ada")
    issued = (await ada.http.post("/v1/account/api-keys", json={"label": "crm"})).json()
    key, key_id = issued["key"], issued["key_id"]
    await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is not None, what="the key known")
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=subscriptions.app, client=("198.51.100.23", 999)),
                            base_url="http://subs", headers={"User-Agent": "crm-sync/3"})
    assert (await api.get("/v1/lists", headers={"Authorization": f"Bearer {key}"})).status_code == 200
    wrong = key[:-3] + ("xyz" if not key.endswith("xyz") else "abc")
    assert (await api.get("/v1/lists", headers={"Authorization": f"Bearer {wrong}"})).status_code == 401
    await ada.http.post(f"/v1/account/api-keys/{key_id}/revocation", json={})
    await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is None, what="the key revoked")
    assert (await api.get("/v1/lists", headers={"X-API-Key": key})).status_code == 401
    assert lines(caplog, "API key refused", "key_id", "ip", "user_agent", "reason") == [
        (logging.WARNING, key_id, "198.51.100.23", "crm-sync/3", "bad_key")] * 2
    secret = key.partition(".")[2]
    assert secret[:20] not in " ".join(str(vars(r)) for r in caplog.records)
