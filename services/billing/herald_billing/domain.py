"""Billing's rules, pure: who an account is and who may act for it (sign-up, users, sessions, API keys, staff
review), and what its plan allows (the trial's 30 days, 20 subscribers and 100 emails), as the events each
decision records. PRODUCT.md: "Accounts, users, access", "Review", "Plans and billing".
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from herald_shared.contract import Event
from herald_shared.contract.billing import (
    AccountApproved,
    AccountApprovedPayload,
    AccountOpened,
    AccountOpenedPayload,
    AccountRejected,
    AccountRejectedPayload,
    ApiKeyIssued,
    ApiKeyIssuedPayload,
    ApiKeyRevoked,
    ApiKeyRevokedPayload,
    LoggedOut,
    LoggedOutPayload,
    PasswordChanged,
    PasswordChangedPayload,
    PlanChanged,
    PlanChangedPayload,
    QuotaExhausted,
    QuotaExhaustedPayload,
    SendingBlocked,
    SendingBlockedPayload,
    TrialEnded,
    TrialEndedPayload,
    UserAdded,
    UserAddedPayload,
    UserDisabled,
    UserDisabledPayload,
)
from herald_shared.rules import RuleRefused

PRODUCER = "billing"
# Fixed: a decision billing may take twice (a batch folded again, two replicas) has one event id.
HERALD_BILLING_NAMESPACE = uuid.UUID("5b0e3c9a-1f7d-4e62-8a4b-c3d2e1f0a9b8")

# PRODUCT.md, "Plans and billing": the trial.
TRIAL_DAYS = 30
TRIAL_SUBSCRIBERS = 20
TRIAL_EMAILS = 100

Role = Literal["owner", "member"]
ReviewStatus = Literal["in_review", "approved", "rejected"]
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{2,99}$")
PASSWORD_MIN = 12
PASSWORD_MAX = 256


# Errors: each a rule, answered as an RFC 9457 problem by herald_shared.http


class AccountNotFound(RuleRefused):
    code, http_status = "account_not_found", 404


class UserNotFound(RuleRefused):
    code, http_status = "user_not_found", 404


class KeyNotFound(RuleRefused):
    code, http_status = "api_key_not_found", 404


class UsernameTaken(RuleRefused):
    code, http_status = "username_taken", 409


class TermsNotAccepted(RuleRefused):
    code, http_status = "terms_not_accepted", 422


class WeakPassword(RuleRefused):
    code, http_status = "weak_password", 422


class InvalidUsername(RuleRefused):
    code, http_status = "invalid_username", 422


class OwnersOnly(RuleRefused):
    code, http_status = "owners_only", 403


class AlreadyReviewed(RuleRefused):
    code, http_status = "already_reviewed", 409


class WrongPassword(RuleRefused):
    code, http_status = "wrong_password", 403


class CannotDisable(RuleRefused):
    code, http_status = "cannot_disable", 409


@dataclass(frozen=True)
class User:
    username: str
    account_id: str
    role: Role
    password_hash: str
    disabled: bool = False
    # Sessions issued before this instant are over (a password change ends them).
    sessions_valid_from: datetime | None = None


@dataclass(frozen=True)
class Account:
    """An account as billing folds it from herald.billing."""

    account_id: str
    company_name: str
    registered_email: str
    main_username: str
    opened_at: datetime
    review: ReviewStatus = "in_review"
    plan: str = "trial"  # trial, trial_ended (no plan yet); monthly and pay_as_you_go to come
    trial_ended_reason: str | None = None
    blocked: tuple[str, ...] = ()
    exhausted: tuple[str, ...] = ()  # quotas announced as exhausted (QuotaExhausted), for this period
    users: tuple[str, ...] = ()

    @property
    def trial_ends_at(self) -> datetime:
        return self.opened_at + timedelta(days=TRIAL_DAYS)

    @property
    def on_trial(self) -> bool:
        return self.plan == "trial"


@dataclass(frozen=True)
class Usage:
    """What an account holds and has sent, counted from herald.subscriptions and herald.delivery."""

    subscribers: int = 0  # stored in its lists (every status; erased members and deleted lists do not count)
    trial_emails: int = 0  # campaign messages the relay accepted during the trial


def _event(cls: type[Event], account_id: str, payload: object, event_id: uuid.UUID | None = None,
           at: datetime | None = None) -> Event:
    fields: dict[str, object] = {"account_id": account_id, "producer": PRODUCER, "payload": payload}
    if event_id is not None:
        fields["event_id"] = event_id
    if at is not None:
        fields["occurred_at"] = at
    return cls(**fields)


def fixed_id(*parts: str) -> uuid.UUID:
    return uuid.uuid5(HERALD_BILLING_NAMESPACE, ":".join(parts))


def new_account_id() -> str:
    return "a" + secrets.token_hex(8)


def normalise_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise InvalidUsername("a username is 3 to 100 characters: letters, digits and . _ @ + - (lower case), "
                              "starting with a letter or digit", [("body.username", "not a valid username")])
    return name


def check_password(password: str, username: str, where: str = "body.password") -> None:
    """A password of 12 to 256 characters that does not contain the username, and is not one character repeated
    (NIST SP 800-63B: length and context words, no composition rules)."""
    if len(password) < PASSWORD_MIN or len(password) > PASSWORD_MAX:
        raise WeakPassword(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters",
                           [(where, f"{len(password)} characters")])
    if username in password.lower() or len(set(password)) < 2:
        raise WeakPassword("the password may not contain the username or be one character repeated",
                           [(where, "too easy to guess")])


# Sign-up, users, sessions, keys


def sign_up(account_id: str, company_name: str, registered_email: str, username: str, password_hash: str,
            accepted_terms: bool, age_18: bool, existing_user: User | None, now: datetime) -> list[Event]:
    """PRODUCT.md: the account, its main user, and the 30-day trial from accepting the terms."""
    if not accepted_terms or not age_18:
        missing = [(f"body.{name}", "must be true") for name, given in
                   (("accept_terms", accepted_terms), ("age_18", age_18)) if not given]
        raise TermsNotAccepted("signing up takes accepting the terms and attesting an age of 18 or more", missing)
    if existing_user is not None:
        raise UsernameTaken(f"the username {username!r} is taken")
    return [
        _event(AccountOpened, account_id, AccountOpenedPayload(
            company_name=company_name, registered_email=registered_email, main_username=username,
            terms_accepted_at=now), at=now),
        _event(UserAdded, account_id, UserAddedPayload(username=username, role="owner",
                                                        password_hash=password_hash, added_by=username), at=now),
        _event(PlanChanged, account_id, PlanChangedPayload(plan="trial", effective_at=now), at=now),
    ]


def add_user(actor: User, username: str, role: Role, password_hash: str, existing_user: User | None) -> list[Event]:
    require_owner(actor)
    if existing_user is not None:
        raise UsernameTaken(f"the username {username!r} is taken")
    return [_event(UserAdded, actor.account_id, UserAddedPayload(username=username, role=role,
                                                                 password_hash=password_hash,
                                                                 added_by=actor.username))]


def disable_user(actor: User, target: User | None) -> list[Event]:
    require_owner(actor)
    if target is None or target.account_id != actor.account_id:
        raise UserNotFound("no such user in this account")
    if target.username == actor.username:
        raise CannotDisable("a user cannot disable themselves")
    if target.role == "owner":
        raise CannotDisable("the account's owner cannot be disabled")
    if target.disabled:
        return []
    return [_event(UserDisabled, actor.account_id, UserDisabledPayload(username=target.username,
                                                                       disabled_by=actor.username))]


def change_password(user: User, current_matches: bool, new_hash: str) -> list[Event]:
    if not current_matches:
        raise WrongPassword("the current password is not right")
    return [_event(PasswordChanged, user.account_id, PasswordChangedPayload(username=user.username,
                                                                            password_hash=new_hash))]


def log_out(user: User, session_id: str) -> list[Event]:
    return [_event(LoggedOut, user.account_id, LoggedOutPayload(username=user.username, session_id=session_id))]


def session_valid(user: User | None, account_id: str, issued_at: datetime, ended: bool) -> bool:
    """A session holds while its user is active, has not changed their password since, and did not log out."""
    if user is None or user.disabled or user.account_id != account_id or ended:
        return False
    return user.sessions_valid_from is None or issued_at >= user.sessions_valid_from


def issue_key(actor: User, key_id: str, key_hash: str, label: str | None) -> list[Event]:
    require_owner(actor)
    return [_event(ApiKeyIssued, actor.account_id, ApiKeyIssuedPayload(key_id=key_id, key_hash=key_hash,
                                                                       label=label, issued_by=actor.username))]


def revoke_key(actor: User, key_account: str | None, revoked: bool, key_id: str, reason: str | None) -> list[Event]:
    require_owner(actor)
    if key_account != actor.account_id:
        raise KeyNotFound("no such API key in this account")
    if revoked:
        return []
    return [_event(ApiKeyRevoked, actor.account_id, ApiKeyRevokedPayload(key_id=key_id, revoked_by=actor.username,
                                                                         reason=reason))]


def require_owner(actor: User) -> None:
    if actor.role != "owner":
        raise OwnersOnly("only an owner of the account may do this")


# Staff review (PRODUCT.md, "Review")


def approve(account: Account | None, reviewer: str, note: str | None) -> list[Event]:
    current = _existing(account)
    if current.review == "approved":
        return []
    return [_event(AccountApproved, current.account_id, AccountApprovedPayload(reviewer=reviewer, note=note))]


def reject(account: Account | None, reviewer: str, reasons: list[str]) -> list[Event]:
    current = _existing(account)
    if current.review != "in_review":
        raise AlreadyReviewed(f"the account was already {current.review}")
    return [_event(AccountRejected, current.account_id, AccountRejectedPayload(reviewer=reviewer, reasons=reasons))]


def _existing(account: Account | None) -> Account:
    if account is None:
        raise AccountNotFound("no such account")
    return account


# The plan: what usage allows (PRODUCT.md, "Plans and billing")


def enforce(account: Account, usage: Usage, now: datetime) -> list[Event]:
    """The events an account's plan calls for, given what it holds and sent, each at most once (fixed ids: the
    same decision taken again, after a crash or by another replica, is the same event). The trial ends at day
    30 or as soon as more than 20 subscribers are stored, and stays ended; 100 campaign emails exhaust it."""
    if not account.on_trial:
        return []
    a = account.account_id
    if usage.subscribers > TRIAL_SUBSCRIBERS or now >= account.trial_ends_at:
        reason: Literal["expired", "subscriber_limit_exceeded"] = (
            "subscriber_limit_exceeded" if usage.subscribers > TRIAL_SUBSCRIBERS else "expired")
        detail = (f"{usage.subscribers} subscribers stored; the trial allows {TRIAL_SUBSCRIBERS}"
                  if reason == "subscriber_limit_exceeded" else f"the {TRIAL_DAYS}-day trial is over")
        return [
            _event(TrialEnded, a, TrialEndedPayload(reason=reason, subscribers=usage.subscribers,
                                                    emails_sent=usage.trial_emails),
                   fixed_id("trial-ended", a)),
            _event(SendingBlocked, a, SendingBlockedPayload(reason="trial_ended", detail=detail + "; choose a plan "
                                                            "to send again (lists stay manageable)"),
                   fixed_id("blocked", "trial_ended", a)),
        ]
    if usage.trial_emails >= TRIAL_EMAILS and "trial_emails" not in account.exhausted:
        return [
            _event(QuotaExhausted, a, QuotaExhaustedPayload(quota="trial_emails", limit=TRIAL_EMAILS,
                                                            used=usage.trial_emails, period_start=account.opened_at),
                   fixed_id("exhausted", "trial_emails", a)),
            _event(SendingBlocked, a, SendingBlockedPayload(
                reason="trial_quota_reached", detail=f"{usage.trial_emails} of the trial's {TRIAL_EMAILS} emails "
                "sent; choose a plan to send more"), fixed_id("blocked", "trial_quota_reached", a)),
        ]
    return []


# Folding herald.billing


def evolve_account(state: Account | None, event: Event) -> Account | None:
    if isinstance(event, AccountOpened):
        if state is not None:
            return state
        opened = event.payload
        return Account(account_id=event.account_id, company_name=opened.company_name,
                       registered_email=str(opened.registered_email), main_username=opened.main_username,
                       opened_at=to_stored_precision(opened.terms_accepted_at))
    if state is None:
        return None
    if isinstance(event, AccountApproved):
        return replace(state, review="approved")
    if isinstance(event, AccountRejected):
        return state if state.review == "approved" else replace(state, review="rejected")
    if isinstance(event, PlanChanged):
        if event.payload.plan == "trial" and state.plan != "trial":
            return state  # a trial never starts again
        return replace(state, plan=event.payload.plan)
    if isinstance(event, TrialEnded):
        return replace(state, plan="trial_ended" if state.plan == "trial" else state.plan,
                       trial_ended_reason=event.payload.reason)
    if isinstance(event, QuotaExhausted):
        return replace(state, exhausted=tuple(sorted({*state.exhausted, event.payload.quota})))
    if isinstance(event, SendingBlocked):
        return replace(state, blocked=tuple(sorted({*state.blocked, event.payload.reason})))
    if isinstance(event, UserAdded):
        return replace(state, users=tuple(sorted({*state.users, event.payload.username})))
    return state


def evolve_user(state: User | None, event: Event) -> User | None:
    if isinstance(event, UserAdded):
        # The first account to add a username keeps it (two replicas could both take one).
        if state is not None:
            return state
        added = event.payload
        return User(username=added.username, account_id=event.account_id, role=added.role,
                    password_hash=added.password_hash)
    if state is None or state.account_id != event.account_id:
        return state
    if isinstance(event, PasswordChanged):
        return replace(state, password_hash=event.payload.password_hash, sessions_valid_from=event.occurred_at)
    if isinstance(event, UserDisabled):
        return replace(state, disabled=True)
    return state


def to_stored_precision(at: datetime) -> datetime:
    """MongoDB keeps times to the millisecond: what is folded is what is read back."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def utcnow() -> datetime:
    return datetime.now(UTC)
