"""Sign-up, sessions, users, API keys and the audit log through the billing API on the real stack (PRODUCT.md,
"Accounts, users, access")."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.apikeys import ApiKeyProjection
from herald_shared.contract.billing import (
    AccountOpened,
    ApiKeyRevoked,
    LoginFailed,
    LoginSucceeded,
    PlanChanged,
    UserAdded,
)
from tests.conftest import eventually

from .helpers import PASSWORD, Customer, Platform


async def audit(customer: Customer) -> list[dict[str, Any]]:
    """The account's log of logins (failed attempts are recorded without waiting for the fold)."""
    items = (await customer.http.get("/v1/account/audit-log")).json()["items"]
    return [e for e in items if e["kind"] == "login"]


async def test_sign_up_opens_a_trial_account_waiting_for_review(platform: Platform) -> None:
    acme = await platform.sign_up("ada@acme.example")
    account = (await acme.http.get("/v1/account")).json()
    assert account["account_id"] == acme.account_id
    assert (account["review"], account["plan"], account["sending_blocked"]) == ("in_review", "trial", [])
    assert account["trial"]["subscriber_limit"] == 20 and account["trial"]["email_limit"] == 100
    opened = datetime.fromisoformat(account["opened_at"])
    assert datetime.fromisoformat(account["trial"]["ends_at"]) - opened == timedelta(days=30)
    events = [e for e in await platform.events() if e.account_id == acme.account_id]
    assert [type(e) for e in events[:3]] == [AccountOpened, UserAdded, PlanChanged]
    added = events[1]
    assert isinstance(added, UserAdded) and added.payload.role == "owner"
    assert PASSWORD not in added.model_dump_json() and added.payload.password_hash.startswith("$argon2id$")


async def test_sign_up_needs_the_terms_and_an_adult_and_a_free_username(platform: Platform) -> None:
    body = {"company_name": "Acme", "email": "ada@acme.example", "username": "ada", "password": PASSWORD}
    refused = await platform.http.post("/v1/accounts", json={**body, "accept_terms": True, "age_18": False})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/terms_not_accepted")
    assert [e["location"] for e in refused.json()["errors"]] == ["body.age_18"]
    weak = await platform.http.post("/v1/accounts", json={**body, "password": "ada" * 4, "accept_terms": True,
                                                          "age_18": True})
    assert weak.status_code == 422
    await platform.sign_up("ada")
    taken = await platform.http.post("/v1/accounts", json={**body, "accept_terms": True, "age_18": True})
    assert taken.status_code == 409 and taken.json()["type"].endswith("/username_taken")


async def test_every_login_and_failed_attempt_is_in_the_audit_log(platform: Platform) -> None:
    acme = await platform.sign_up("ada")
    wrong = await platform.http.post("/v1/sessions", json={"username": "ada", "password": "not the password"},
                                     headers={"User-Agent": "curious/2.0"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    unknown = await platform.http.post("/v1/sessions", json={"username": "nobody", "password": PASSWORD})
    assert unknown.status_code == 401 and unknown.json()["detail"] == wrong.json()["detail"]
    log = await eventually(lambda: audit(acme), lambda items: len(items) == 2, what="the failure in the log")
    logins = [(e["result"], e["reason"], e["username"], e["ip"], e["user_agent"]) for e in log if e["kind"] == "login"]
    assert logins == [("success", None, "ada", "203.0.113.7", "pytest-browser/1.0"),
                      ("failure", "wrong_password", "ada", "203.0.113.7", "curious/2.0")]
    events = [e for e in await platform.events() if isinstance(e, (LoginSucceeded, LoginFailed))]
    assert [type(e) for e in events] == [LoginSucceeded, LoginFailed]


async def test_repeated_failures_are_throttled_per_user_and_per_address(platform: Platform) -> None:
    now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    reads = itertools.count()
    # A millisecond further at each read: attempts dated by billing's clock, all at one frozen instant, would
    # have no order in the audit log.
    platform.set_clock(lambda: now + timedelta(milliseconds=next(reads)))
    acme = await platform.sign_up("ada")
    for _ in range(5):
        assert (await platform.http.post("/v1/sessions", json={"username": "ada", "password": "guess-guess-guess"}
                                         )).status_code == 401
    locked = await platform.http.post("/v1/sessions", json={"username": "ada", "password": PASSWORD})
    assert locked.status_code == 429 and locked.json()["type"].endswith("/too_many_attempts")
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
    # The right password from elsewhere is refused too while the user is locked: the lock is the user's.
    elsewhere = platform.client(address=("198.51.100.9", 5000))
    assert (await elsewhere.post("/v1/sessions", json={"username": "ada", "password": PASSWORD})).status_code == 429
    log = await eventually(lambda: audit(acme), lambda items: len(items) == 8, what="every attempt in the log")
    assert [e["reason"] for e in log] == [None] + ["wrong_password"] * 5 + ["locked", "locked"]
    now += timedelta(minutes=15)
    assert (await platform.http.post("/v1/sessions", json={"username": "ada", "password": PASSWORD})).status_code == 201
    # One address guessing many users is stopped by the address throttle.
    bot = platform.client(address=("192.0.2.66", 1234))
    statuses = [(await bot.post("/v1/sessions", json={"username": f"user{i}", "password": "x"})).status_code
                for i in range(31)]
    assert statuses[:30] == [401] * 30 and statuses[30] == 429


async def test_a_wrong_current_password_is_a_failed_attempt_logged_and_throttled(platform: Platform) -> None:
    """Holding a session does not let anyone guess the password unchecked: a password change with a wrong
    current password is a LoginFailed in the audit log, with the session it came from, and counts toward the
    user's login throttle, which then refuses the change (and logins) unchecked with 429."""
    now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    reads = itertools.count()
    # A millisecond further at each read: attempts dated by billing's clock, all at one frozen instant, would
    # have no order in the audit log.
    platform.set_clock(lambda: now + timedelta(milliseconds=next(reads)))
    acme = await platform.sign_up("ada")
    change = {"current_password": "guess-guess-guess", "new_password": "a new long password"}
    for _ in range(5):
        assert (await acme.http.put("/v1/account/password", json=change)).status_code == 403
    locked = await acme.http.put("/v1/account/password", json={**change, "current_password": PASSWORD})
    assert locked.status_code == 429 and locked.json()["type"].endswith("/too_many_attempts")
    assert 0 < int(locked.headers["Retry-After"]) <= 15 * 60
    assert (await platform.http.post("/v1/sessions", json={"username": "ada", "password": PASSWORD})).status_code == 429
    log = await eventually(lambda: audit(acme), lambda items: len(items) == 8, what="every attempt in the log")
    session_id = log[0]["session_id"]
    assert session_id and [(e["result"], e["reason"], e["session_id"]) for e in log] == [
        ("success", None, session_id), *[("failure", "wrong_password", session_id)] * 5,
        ("failure", "locked", session_id), ("failure", "locked", None)]
    assert (await acme.http.get("/v1/account")).status_code == 200  # nothing was changed
    now += timedelta(minutes=15)
    assert (await acme.http.put("/v1/account/password", json={**change, "current_password": PASSWORD})
            ).status_code == 204


async def test_sessions_end_on_logout_password_change_and_disabling(platform: Platform) -> None:
    ada = await platform.sign_up("ada")
    second = await platform.log_in("ada", ada.account_id)
    assert (await ada.http.delete("/v1/sessions/current")).status_code == 204
    assert (await ada.http.get("/v1/account")).status_code == 401
    assert (await second.http.get("/v1/account")).status_code == 200
    wrong = await second.http.put("/v1/account/password", json={"current_password": "nope",
                                                                "new_password": "a new long password"})
    assert wrong.status_code == 403
    changed = await second.http.put("/v1/account/password", json={"current_password": PASSWORD,
                                                                  "new_password": "a new long password"})
    assert changed.status_code == 204
    assert (await second.http.get("/v1/account")).status_code == 401
    fresh = await platform.log_in("ada", ada.account_id, "a new long password")
    assert (await fresh.http.get("/v1/account")).status_code == 200
    added = await fresh.http.post("/v1/account/users", json={"username": "bob", "password": "long secret of b"})
    assert added.status_code == 201 and added.json() == {"username": "bob", "role": "member", "disabled": False}
    bob = await platform.log_in("bob", ada.account_id, "long secret of b")
    assert (await bob.http.get("/v1/account")).json()["account_id"] == ada.account_id
    # Members may not manage users or keys, nor read the audit log.
    assert (await bob.http.post("/v1/account/api-keys", json={})).status_code == 403
    assert (await bob.http.post("/v1/account/users/ada/disabling")).status_code == 403
    assert (await bob.http.get("/v1/account/audit-log")).status_code == 403
    disabled = await fresh.http.post("/v1/account/users/bob/disabling")
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert (await bob.http.get("/v1/account")).status_code == 401
    refused = await platform.http.post("/v1/sessions", json={"username": "bob", "password": "long secret of b"})
    assert refused.status_code == 401
    users = (await fresh.http.get("/v1/account/users")).json()["items"]
    assert [(u["username"], u["role"], u["disabled"]) for u in users] == [("ada", "owner", False),
                                                                          ("bob", "member", True)]


async def test_an_expired_session_is_refused(platform: Platform) -> None:
    now = datetime.now(UTC)
    platform.set_clock(lambda: now)
    ada = await platform.sign_up("ada")
    assert (await ada.http.get("/v1/account")).status_code == 200
    now += timedelta(minutes=60)
    expired = await ada.http.get("/v1/account")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    forged = await platform.client({"Authorization": f"Bearer {ada.token[:-2]}xx"}).get("/v1/account")
    assert forged.status_code == 401


async def test_one_account_never_reaches_another(platform: Platform) -> None:
    ada = await platform.sign_up("ada")
    eve = await platform.sign_up("eve", company="Evil Ltd")
    issued = (await ada.http.post("/v1/account/api-keys", json={"label": "crm"})).json()
    assert (await eve.http.post(f"/v1/account/api-keys/{issued['key_id']}/revocation", json={})).status_code == 404
    assert (await eve.http.post("/v1/account/users/ada/disabling")).status_code == 404
    assert (await eve.http.get("/v1/account/api-keys")).json()["items"] == []
    assert [u["username"] for u in (await eve.http.get("/v1/account/users")).json()["items"]] == ["eve"]
    eves_log = (await eve.http.get("/v1/account/audit-log")).json()["items"]
    assert eves_log and all(e["username"] == "eve" for e in eves_log)
    assert [k["key_id"] for k in (await ada.http.get("/v1/account/api-keys")).json()["items"]] == [issued["key_id"]]


async def test_the_main_user_disables_an_owner_whose_sessions_and_keys_stop_working(platform: Platform) -> None:
    """PRODUCT.md: an account has a main user and sub-users. A sub-user made an owner can be removed by the main
    user (it could not be by anyone); it cannot remove the main user, nor close the account (403): only the main
    user may. Disabled, its sessions end and the API keys it issued are revoked (it has seen their secrets)."""
    ada = await platform.sign_up("ada")
    added = await ada.http.post("/v1/account/users", json={"username": "bob", "password": "long secret of b",
                                                           "role": "owner"})
    assert added.status_code == 201 and added.json()["role"] == "owner"
    assert (await ada.http.post("/v1/account/users", json={"username": "cyd", "password": "long secret of c"})
            ).status_code == 201
    bob = await platform.log_in("bob", ada.account_id, "long secret of b")
    bobs_key = (await bob.http.post("/v1/account/api-keys", json={"label": "bob's"})).json()
    adas_key = (await ada.http.post("/v1/account/api-keys", json={"label": "ada's"})).json()
    keys = ApiKeyProjection(platform.service.db)
    assert await keys.authenticate(bobs_key["key"]) is not None

    main = await bob.http.post("/v1/account/users/ada/disabling")
    assert main.status_code == 409 and main.json()["type"].endswith("/cannot_disable"), main.text
    closing = await bob.http.delete("/v1/account")
    assert closing.status_code == 403 and closing.json()["type"].endswith("/main_user_only"), closing.text
    assert (await bob.http.post("/v1/account/users/cyd/disabling")).status_code == 200  # members, yes
    assert (await ada.http.post("/v1/account/users/ada/disabling")).status_code == 409  # not themselves

    disabled = await ada.http.post("/v1/account/users/bob/disabling")
    assert disabled.status_code == 200 and disabled.json() == {"username": "bob", "role": "owner", "disabled": True}
    assert (await bob.http.get("/v1/account")).status_code == 401
    assert (await platform.http.post("/v1/sessions", json={"username": "bob", "password": "long secret of b"})
            ).status_code == 401
    listed = {k["key_id"]: k["revoked_at"] for k in (await ada.http.get("/v1/account/api-keys")).json()["items"]}
    assert listed[bobs_key["key_id"]] is not None and listed[adas_key["key_id"]] is None
    assert await keys.authenticate(bobs_key["key"]) is None and await keys.authenticate(adas_key["key"]) is not None
    revoked = [e.payload for e in await platform.events() if isinstance(e, ApiKeyRevoked)]
    assert [(p.key_id, p.revoked_by) for p in revoked] == [(bobs_key["key_id"], "ada")]
    assert (await ada.http.get("/v1/account")).status_code == 200  # the account goes on
    assert (await ada.http.delete("/v1/account")).status_code == 204  # the main user closes it
    paths = (await platform.http.get("/openapi.json")).json()["paths"]
    assert "main_user_only" in paths["/v1/account"]["delete"]["responses"]["403"]["description"]
