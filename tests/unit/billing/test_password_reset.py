"""A forgotten password, reset by a link mailed to the account's registered address (PRODUCT.md: "Users can change
their password at any time"): who may ask, and when a link may set a new password."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from herald_billing import domain
from herald_billing.domain import Account, User
from herald_shared.contract.billing import PasswordChanged, PasswordResetRequested
from herald_shared.password_reset import ResetLinks, reset_token, token_matches

NOW = datetime(2026, 12, 6, 21, 30, 15, 123456, tzinfo=UTC)
KEY = "a-reset-key-of-the-test-0123456789"
ADA = User("ada", "a1", "owner", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo")
BOB = User("bob", "a1", "member", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$Ym9iaGFzaGJvYmhhc2g")


def account(**changes: object) -> Account:
    return replace(Account("a1", "Acme", "ada@acme.example", "ada", NOW - timedelta(days=3)), **changes)  # type: ignore[arg-type]


def requested(user: User = BOB) -> domain.PasswordReset:
    reset, events = domain.request_password_reset(user, account(), "pr1", NOW, "203.0.113.7", "browser")
    assert reset is not None and len(events) == 1
    return reset


def test_a_request_for_an_enabled_user_is_kept_for_an_hour_and_announced_without_a_secret() -> None:
    reset, events = domain.request_password_reset(BOB, account(), "pr1", NOW, "203.0.113.7", "browser")
    assert reset is not None
    assert (reset.username, reset.account_id, reset.used, reset.wrong_tokens) == ("bob", "a1", False, 0)
    assert reset.expires_at == datetime(2026, 12, 6, 22, 30, 15, tzinfo=UTC)  # whole seconds: what the token signs
    announced, = events
    assert isinstance(announced, PasswordResetRequested)
    assert announced.payload.model_dump(mode="json") == {
        "request_id": "pr1", "username": "bob", "expires_at": "2026-12-06T22:30:15Z", "ip": "203.0.113.7",
        "user_agent": "browser"}
    token = reset_token(KEY, "pr1", "bob", reset.expires_at)
    assert token not in announced.model_dump_json()


@pytest.mark.parametrize("user, opened", [(None, account()), (replace(BOB, disabled=True), account()),
                                          (BOB, account(deleted_at=NOW - timedelta(days=1))), (BOB, None),
                                          (replace(BOB, account_id="a2"), account())])
def test_nothing_is_kept_or_announced_for_an_unknown_or_disabled_user_or_a_closed_account(
        user: User | None, opened: Account | None) -> None:
    assert domain.request_password_reset(user, opened, "pr1", NOW) == (None, [])


def test_the_right_token_within_the_hour_sets_the_password_and_says_it_was_a_reset() -> None:
    reset = requested()
    assert domain.check_password_reset(reset, True, BOB, account(), reset.expires_at - timedelta(microseconds=1))
    changed, = domain.complete_password_reset(reset, BOB, "$argon2id$new-hash-of-bob-0123456789", "198.51.100.1")
    assert isinstance(changed, PasswordChanged)
    assert (changed.payload.username, changed.payload.reset_request_id, changed.payload.session_id,
            changed.payload.ip) == ("bob", "pr1", None, "198.51.100.1")
    # Every session of the user ends with it, as with a change made while logged in.
    after = domain.evolve_user(BOB, changed)
    assert after is not None and not domain.session_valid(after, "a1", changed.occurred_at - timedelta(seconds=1),
                                                          False)


def test_a_wrong_token_and_an_unknown_request_get_the_same_refusal() -> None:
    with pytest.raises(domain.PasswordResetNotFound) as wrong:
        domain.check_password_reset(requested(), False, BOB, account(), NOW)
    with pytest.raises(domain.PasswordResetNotFound) as unknown:
        domain.check_password_reset(None, False, None, None, NOW)
    assert (wrong.value.code, wrong.value.http_status, wrong.value.detail) == (
        unknown.value.code, unknown.value.http_status, unknown.value.detail) == (
        "password_reset_not_found", 404, "no such password reset, or not its token")


def test_the_link_expires_after_one_hour() -> None:
    reset = requested()
    with pytest.raises(domain.PasswordResetExpired) as refused:
        domain.check_password_reset(reset, True, BOB, account(), reset.expires_at)
    assert refused.value.http_status == 410


def test_a_link_works_once() -> None:
    with pytest.raises(domain.PasswordResetUsed) as refused:
        domain.check_password_reset(replace(requested(), used=True), True, BOB, account(), NOW)
    assert refused.value.http_status == 410


def test_a_few_wrong_tokens_burn_the_request_even_for_the_right_one() -> None:
    reset = requested()
    domain.check_password_reset(replace(reset, wrong_tokens=domain.PASSWORD_RESET_TRIES - 1), True, BOB, account(),
                                NOW)
    with pytest.raises(domain.PasswordResetUsed):
        domain.check_password_reset(replace(reset, wrong_tokens=domain.PASSWORD_RESET_TRIES), True, BOB, account(),
                                    NOW)


def test_a_password_changed_since_the_request_voids_it() -> None:
    reset = requested()
    changed = replace(BOB, password_hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$b3RoZXJvdGhlcm90aGVy")
    with pytest.raises(domain.PasswordResetVoid, match="password was changed"):
        domain.check_password_reset(reset, True, changed, account(), NOW)


@pytest.mark.parametrize("user, opened", [(replace(BOB, disabled=True), account()), (None, account()),
                                          (BOB, account(deleted_at=NOW))])
def test_a_user_disabled_or_an_account_closed_since_the_request_voids_it(user: User | None,
                                                                         opened: Account) -> None:
    with pytest.raises(domain.PasswordResetVoid):
        domain.check_password_reset(requested(), True, user, opened, NOW)


def test_the_token_is_bound_to_the_request_the_user_the_expiry_and_the_key() -> None:
    expires = datetime(2026, 12, 6, 22, 30, 15, tzinfo=UTC)
    token = reset_token(KEY, "pr1", "bob", expires)
    assert token_matches(KEY, "pr1", "bob", expires.replace(microsecond=999000), token)  # MongoDB's read back
    assert not token_matches(KEY, "pr2", "bob", expires, token)
    assert not token_matches(KEY, "pr1", "ada", expires, token)
    assert not token_matches(KEY, "pr1", "bob", expires + timedelta(seconds=1), token)
    assert not token_matches(KEY + "x", "pr1", "bob", expires, token)
    assert not token_matches(KEY, "pr1", "bob", expires, token[:-1])
    assert not token_matches(KEY, "pr1", "bob", expires, "é" * 43)


def test_delivery_builds_no_link_without_the_key_and_both_services_read_it_alike() -> None:
    from herald_delivery.main import DeliverySettings

    def delivery(**values: str) -> DeliverySettings:
        return DeliverySettings(HERALD_LINK_SECRET="a secret of sixteen chars", **values)  # type: ignore[arg-type]

    assert delivery(HERALD_PASSWORD_RESET_KEY="").password_reset_key == ""
    with pytest.raises(ValueError, match="at least 16 characters"):
        delivery(HERALD_PASSWORD_RESET_KEY="short")
    links = ResetLinks(KEY, "https://billing.example")
    expires = datetime(2026, 12, 6, 22, 30, 15, tzinfo=UTC)
    assert links.link("pr1", "bob", expires) == (
        f"https://billing.example/reset-password?request=pr1&token={reset_token(KEY, 'pr1', 'bob', expires)}")
    assert ResetLinks(None, "https://billing.example").link("pr1", "bob", expires) is None
