"""A forgotten password, on the real stack (PRODUCT.md: "Users can change their password at any time"): the
request answered alike for every username, kept and announced without its secret, audited; the link's token
checked, used once, burnt by wrong guesses; the page a mailed link opens. The mail itself:
tests/integration/delivery/test_password_reset_notice.py."""

from __future__ import annotations

from typing import Any

from herald_shared.contract.billing import LoginFailed, PasswordChanged, PasswordResetRequested
from herald_shared.password_reset import reset_token
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .helpers import PASSWORD, Platform, running_billing

KEY = "the-reset-key-of-these-tests-0123"
NEW_PASSWORD = "a brand new passphrase"


async def requested(platform: Platform, username: str) -> PasswordResetRequested:
    """Ask for a reset of `username`, and the event it made."""
    before = {e.event_id for e in await platform.events() if isinstance(e, PasswordResetRequested)}
    answer = await platform.http.post("/v1/password-resets", json={"username": username})
    assert answer.status_code == 202, answer.text
    await platform.service.service.reset_requests_settled()
    events = await eventually(platform.events, lambda es: any(
        isinstance(e, PasswordResetRequested) and e.event_id not in before for e in es), what="the reset request")
    event, = [e for e in events if isinstance(e, PasswordResetRequested) and e.event_id not in before]
    return event


def token_of(event: PasswordResetRequested) -> str:
    return reset_token(KEY, event.payload.request_id, event.payload.username, event.payload.expires_at)


async def complete(platform: Platform, request_id: str, token: str, password: str = NEW_PASSWORD) -> Any:
    return await platform.http.post(f"/v1/password-resets/{request_id}/completion",
                                    json={"token": token, "new_password": password})


async def test_an_unknown_user_gets_the_same_answer_and_nothing_is_announced(settings: HeraldSettings) -> None:
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as platform:
        await platform.sign_up("ada")
        unknown = await platform.http.post("/v1/password-resets", json={"username": "nobody-here"})
        known = await platform.http.post("/v1/password-resets", json={"username": "ada"})
        assert unknown.status_code == known.status_code == 202
        assert unknown.json() == known.json()
        await platform.service.service.reset_requests_settled()
        events = await eventually(platform.events, lambda es: any(isinstance(e, PasswordResetRequested) for e in es),
                                  what="ada's reset")
        assert [e.payload.username for e in events if isinstance(e, PasswordResetRequested)] == ["ada"]


async def test_the_event_carries_no_secret_and_the_request_is_audited(settings: HeraldSettings) -> None:
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as platform:
        ada = await platform.sign_up("ada")
        event = await requested(platform, "ada")
        raw = event.model_dump_json()
        assert token_of(event) not in raw and KEY not in raw
        stored = await platform.service.store.password_reset(event.payload.request_id)
        assert stored is not None and not stored.used and stored.username == "ada"
        assert stored.account_id == ada.account_id and stored.expires_at == event.payload.expires_at

        async def log() -> list[dict[str, Any]]:
            return (await ada.http.get("/v1/account/audit-log")).json()["items"]  # type: ignore[no-any-return]

        entries = await eventually(log, lambda es: any(e["kind"] == "password_reset_requested" for e in es),
                                   what="the audit entry")
        entry, = [e for e in entries if e["kind"] == "password_reset_requested"]
        assert (entry["username"], entry["ip"], entry["request_id"]) == ("ada", "203.0.113.7",
                                                                        event.payload.request_id)


async def test_a_link_sets_the_password_once_and_ends_the_sessions(settings: HeraldSettings) -> None:
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as platform:
        ada = await platform.sign_up("ada")
        event = await requested(platform, "ada")
        weak = await complete(platform, event.payload.request_id, token_of(event), "ada-ada-ada-ada")
        assert weak.status_code == 422 and weak.json()["type"].endswith("weak_password")
        done = await complete(platform, event.payload.request_id, token_of(event))
        assert done.status_code == 204, done.text
        assert (await ada.http.get("/v1/account")).status_code == 401  # the session ended
        old = await platform.http.post("/v1/sessions", json={"username": "ada", "password": PASSWORD})
        assert old.status_code == 401
        await platform.log_in("ada", ada.account_id, NEW_PASSWORD)
        again = await complete(platform, event.payload.request_id, token_of(event), "yet another passphrase")
        assert again.status_code == 410 and again.json()["type"].endswith("password_reset_used")
        changed = [e for e in await platform.events() if isinstance(e, PasswordChanged)]
        assert [e.payload.reset_request_id for e in changed] == [event.payload.request_id]
        owner = await platform.log_in("ada", ada.account_id, NEW_PASSWORD)
        kinds = [e["kind"] for e in (await owner.http.get("/v1/account/audit-log")).json()["items"]]
        assert "password_reset_completed" in kinds and "password_change" not in kinds


async def test_a_wrong_token_is_an_unknown_request_and_a_few_burn_it(settings: HeraldSettings) -> None:
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as platform:
        await platform.sign_up("ada")
        event = await requested(platform, "ada")
        unknown = await complete(platform, "pr-no-such-request", token_of(event))
        wrong = await complete(platform, event.payload.request_id, "A" * 43)
        assert unknown.status_code == wrong.status_code == 404
        assert unknown.json() == wrong.json()
        for _ in range(4):
            assert (await complete(platform, event.payload.request_id, "B" * 43)).status_code == 404
        burnt = await complete(platform, event.payload.request_id, token_of(event))
        assert burnt.status_code == 410 and burnt.json()["type"].endswith("password_reset_used")
        # each wrong token an attempt in ada's audit log; the unknown request's in the platform's
        events = await eventually(platform.events, lambda es: sum(isinstance(e, LoginFailed) for e in es) == 5,
                                  what="five failed attempts")
        assert [e.payload.reason for e in events if isinstance(e, LoginFailed)] == ["wrong_reset_token"] * 5


async def test_a_wrong_token_is_a_failed_attempt_in_the_accounts_audit_log(settings: HeraldSettings) -> None:
    """PRODUCT.md: "Every login and login attempt is written to an audit log (who, when, from where, success or
    not)": a reset link tried with a token not its own is LoginFailed (wrong_reset_token) of the request's user."""
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as platform:
        ada = await platform.sign_up("ada")
        event = await requested(platform, "ada")
        wrong = await platform.http.post(f"/v1/password-resets/{event.payload.request_id}/completion",
                                         json={"token": "A" * 43, "new_password": NEW_PASSWORD},
                                         headers={"User-Agent": "guessing-browser/1.0"})
        assert wrong.status_code == 404 and wrong.json()["type"].endswith("password_reset_not_found")
        events = await eventually(platform.events, lambda es: any(isinstance(e, LoginFailed) for e in es),
                                  what="the failed attempt on herald.billing")
        failed, = [e for e in events if isinstance(e, LoginFailed)]
        assert failed.account_id == ada.account_id
        assert (failed.payload.reason, failed.payload.username, failed.payload.ip, failed.payload.user_agent) == (
            "wrong_reset_token", "ada", "203.0.113.7", "guessing-browser/1.0")

        async def failures() -> list[dict[str, Any]]:
            items = (await ada.http.get("/v1/account/audit-log")).json()["items"]
            return [e for e in items if e["kind"] == "login" and e["result"] == "failure"]

        entry, = await eventually(failures, bool, what="the audit entry")
        assert (entry["reason"], entry["username"], entry["ip"], entry["user_agent"], entry["method"]) == (
            "wrong_reset_token", "ada", "203.0.113.7", "guessing-browser/1.0", "password")
        # one wrong token does not burn the link: the right one still sets the password
        done = await complete(platform, event.payload.request_id, token_of(event))
        assert done.status_code == 204, done.text
        await platform.log_in("ada", ada.account_id, NEW_PASSWORD)


async def test_a_password_changed_since_the_request_voids_the_link(settings: HeraldSettings) -> None:
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as platform:
        ada = await platform.sign_up("ada")
        event = await requested(platform, "ada")
        changed = await ada.http.put("/v1/account/password", json={"current_password": PASSWORD,
                                                                   "new_password": "changed while logged in"})
        assert changed.status_code == 204
        void = await complete(platform, event.payload.request_id, token_of(event))
        assert void.status_code == 410 and void.json()["type"].endswith("password_reset_void")


async def test_requests_are_throttled_per_username_whether_it_exists_or_not(settings: HeraldSettings) -> None:
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as platform:
        for name in ("ghost", "ada"):
            answers = [await platform.http.post("/v1/password-resets", json={"username": name}) for _ in range(4)]
            assert [a.status_code for a in answers] == [202, 202, 202, 429]
            assert int(answers[-1].headers["Retry-After"]) > 0


async def test_without_the_key_resets_are_refused(settings: HeraldSettings) -> None:
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY="") as platform:
        await platform.sign_up("ada")
        refused = await platform.http.post("/v1/password-resets", json={"username": "ada"})
        assert refused.status_code == 503 and refused.json()["type"].endswith("password_reset_not_configured")


async def test_the_page_of_the_link_sets_the_password_by_a_form(settings: HeraldSettings) -> None:
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as platform:
        ada = await platform.sign_up("ada")
        event = await requested(platform, "ada")
        request_id, token = event.payload.request_id, token_of(event)
        shown = await platform.http.get("/reset-password", params={"request": request_id, "token": token})
        assert shown.status_code == 200 and 'type="password"' in shown.text and "<script" not in shown.text
        assert shown.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in shown.headers["Content-Security-Policy"]
        form = {"request": request_id, "token": token, "new_password": NEW_PASSWORD}
        differ = await platform.http.post("/reset-password", data={**form, "new_password_again": "something else"})
        assert differ.status_code == 422 and "not the same" in differ.text
        done = await platform.http.post("/reset-password", data={**form, "new_password_again": NEW_PASSWORD})
        assert done.status_code == 200 and "Password changed" in done.text
        await platform.log_in("ada", ada.account_id, NEW_PASSWORD)
        used = await platform.http.post("/reset-password", data={**form, "new_password_again": NEW_PASSWORD})
        assert used.status_code == 410 and "used already" in used.text
