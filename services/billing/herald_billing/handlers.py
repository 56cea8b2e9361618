"""One function per request: load state, let the domain decide, publish, and wait until the projection holds
the result. Passwords (argon2id) and sessions (signed, short-lived tokens) are checked here; the usage guard
and the trial clock are the two callers that act without a request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeSerializer

from herald_shared.apikeys import new_api_key
from herald_shared.commands import Recorder
from herald_shared.contract import Event
from herald_shared.contract.billing import (
    InvoiceIssued,
    LoginAttempt,
    LoginFailed,
    LoginFailedPayload,
    LoginSucceeded,
    SendAllowanceChanged,
    StaffAccessed,
    StaffAccessedPayload,
)
from herald_shared.http import Unauthorised
from herald_shared.lifecycle import every
from herald_shared.mongo import Document
from herald_shared.password_reset import token_matches
from herald_shared.rules import RuleRefused
from herald_shared.throttle import Throttle

from . import domain, metrics
from .domain import Account, Role, Usage, User
from .payments import PaymentProvider
from .plans import BillingCalendar, Edition, Plans
from .platform_audit import PlatformAudit
from .store import BillingProjection, BillingStore

log = logging.getLogger("herald.billing")
T = TypeVar("T")
SESSION_PREFIX = "hs_"
SESSION_SALT = "herald.session.v1"
FailureReason = Literal["unknown_user", "wrong_password", "locked", "disabled_user", "account_deleted", "malformed",
                        "wrong_reset_token"]
StaffWhat = Literal["review_queue", "account", "audit_log", "approve", "reject", "cancel", "withdraw_cancellation"]


class TooManyAttempts(Exception):
    """Login refused unchecked: too many failed attempts for this user or this address (429)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry in {retry_after:.0f} s")
        self.retry_after = retry_after


class LoginThrottles:
    """The failed-login throttles per username and per address (PRODUCT.md), with the password checks under way
    counted beside the failures: a check waits tens of milliseconds on argon2, and attempts that arrived meanwhile
    were each let through against the failures counted before them (30 guesses at once: 30 checked against a limit
    of 5, review R2 of 2026-12-07). So an attempt takes a place in each throttle before its check and gives it back
    after, counted as a failure or not. One that finds the places held by failures is refused unchecked; one that
    finds them held by checks under way waits until one of those ends (their outcome decides it), so at most the
    limit's number of checks are ever under way for a key and no right password is refused for others' checks. In
    the process's memory: billing runs one replica (README, "One replica")."""

    def __init__(self, per_user: Throttle, per_address: Throttle) -> None:
        self.per_user, self.per_address = per_user, per_address
        # Only keys with a check under way are here: bounded by the requests in flight.
        self._checking: dict[tuple[str, str], int] = {}
        self._check_ended: dict[tuple[str, str], asyncio.Event] = {}

    def __len__(self) -> int:
        """Keys with a check under way now."""
        return len(self._checking)

    async def take(self, username: str | None, address: str | None, now: datetime) -> ThrottledAttempt:
        """The attempt's places, or TooManyAttempts (nothing taken)."""
        places: list[tuple[Throttle, tuple[str, str]]] = []
        for throttle, kind, key in ((self.per_user, "user", username), (self.per_address, "address", address)):
            if key:
                places.append((throttle, (kind, key)))
        while True:
            wait, full = 0.0, None
            for throttle, place in places:
                if (failures_wait := throttle.retry_after(place[1], now)) > 0:
                    wait = max(wait, failures_wait)
                elif throttle.room(place[1], now) <= self._checking.get(place, 0):
                    full = place
            if wait > 0:
                raise TooManyAttempts(wait)
            if full is None:
                break
            await self._check_ended[full].wait()
        # Taken with no await since the places were counted: no other attempt comes in between.
        for _, place in places:
            if place not in self._checking:
                self._checking[place], self._check_ended[place] = 0, asyncio.Event()
            self._checking[place] += 1
        return ThrottledAttempt(self, places, username, now)

    def give_back(self, place: tuple[str, str]) -> None:
        self._checking[place] -= 1
        self._check_ended[place].set()  # wakes who waits on it; later waiters wait on the next one
        if self._checking[place]:
            self._check_ended[place] = asyncio.Event()
        else:
            del self._checking[place], self._check_ended[place]


class ThrottledAttempt:
    """One attempt's places in the login throttles (`LoginThrottles.take`), given back when it is settled: as a
    failure (counted in each), a success (the user's failures forgotten) or, leaving its `with` block unsettled,
    nothing counted."""

    def __init__(self, throttles: LoginThrottles, places: list[tuple[Throttle, tuple[str, str]]],
                 username: str | None, at: datetime) -> None:
        self._throttles, self._places, self._username, self._at = throttles, places, username, at

    def __enter__(self) -> ThrottledAttempt:
        return self

    def __exit__(self, *_: object) -> None:
        self._settle()

    def failed(self) -> None:
        for throttle, (_, key) in self._places:
            throttle.failed(key, self._at)
        self._settle()

    def succeeded(self) -> None:
        if self._places and self._username:
            self._throttles.per_user.succeeded(self._username)
        self._settle()

    def _settle(self) -> None:
        places, self._places = self._places, []
        for _, place in places:
            self._throttles.give_back(place)


@dataclass(frozen=True)
class Session:
    token: str
    session_id: str
    user: User
    expires_at: datetime


@dataclass(frozen=True)
class Client:
    """Where a request came from, for the audit log."""

    ip: str | None
    user_agent: str | None


class Passwords:
    """argon2id (argon2-cffi's defaults: RFC 9106's second recommended setting); hashing and checking run off
    the event loop. An unknown user costs the same check as a known one, so timing does not tell them apart."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def matches(self, password: str, encoded: str | None) -> bool:
        return await asyncio.to_thread(self._check, password, encoded)

    def _check(self, password: str, encoded: str | None) -> bool:
        try:
            self._hasher.verify(encoded or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return False
        return encoded is not None


class BillingService:
    def __init__(self, store: BillingStore, recorder: Recorder, passwords: Passwords, session_secret: str,
                 session_validity: timedelta, plans: Plans, payments: PaymentProvider,
                 clock: Callable[[], datetime] = domain.utcnow,
                 user_throttle: Throttle | None = None, address_throttle: Throttle | None = None,
                 calendar: BillingCalendar = domain.PLATFORM_CALENDAR, password_reset_key: str | None = None,
                 platform_audit: PlatformAudit | None = None) -> None:
        self.store = store
        # What names no account: attempts for users nobody is, staff looks at kept invoices and at this log.
        self.platform_audit = platform_audit or PlatformAudit(store.db)
        self.plans = plans
        self.calendar = calendar
        self.payments = payments
        # Invoice numbers are sequential per year without gaps: one invoice is decided, paid and recorded at a
        # time in this process (billing runs one replica; see its README).
        self._invoicing = asyncio.Lock()
        self._enforcing = asyncio.Lock()
        # The last SendAllowanceChanged published per account by this process: the projection folds it a batch
        # later, and the next one must follow its sequence meanwhile (one replica: README, "One replica").
        self._allowances: dict[str, domain.SendAllowance] = {}
        # The last number issued per year by this process: the read model may not have folded it yet (a commit
        # that timed out), and a number must never be given twice.
        self._last_numbers: dict[int, int] = {}
        self.recorder = recorder
        self.passwords = passwords
        self.clock = clock
        self._sessions = URLSafeSerializer(session_secret, salt=SESSION_SALT)
        self._validity = session_validity
        # PRODUCT.md: failed logins are throttled per user and per address.
        self.user_throttle = user_throttle or Throttle(limit=5, window=timedelta(minutes=15))
        self.address_throttle = address_throttle or Throttle(limit=30, window=timedelta(minutes=15))
        self.logins = LoginThrottles(self.user_throttle, self.address_throttle)
        # Reset requests are counted whether the user exists or not (each one may mail the account): a few an hour
        # per username, and as many per address as failed logins.
        self.password_reset_key = password_reset_key
        self.reset_user_throttle = Throttle(limit=3, window=timedelta(hours=1))
        self.reset_address_throttle = Throttle(limit=30, window=timedelta(minutes=15))
        self._reset_requests: set[asyncio.Task[None]] = set()

    # Sign-up and sessions

    async def sign_up(self, company_name: str, registered_email: str, username: str, password: str,
                      accept_terms: bool, age_18: bool) -> Account:
        name = domain.normalise_username(username)
        domain.check_password(password, name)
        password_hash = await self.passwords.hash(password)
        account_id = domain.new_account_id()
        async with self.recorder.serialised(f"user:{name}"):
            events = domain.sign_up(account_id, company_name, registered_email, name, password_hash, accept_terms,
                                    age_18, await self.store.user(name), self.clock())
            await self.recorder.commit(events)
        metrics.SIGN_UPS.inc()
        log.info("account opened", extra={"account_id": account_id})
        return await self._account(account_id)

    async def log_in(self, username: str, password: str, client: Client) -> Session:
        now = self.clock()
        name = username.strip().lower()
        try:
            attempt = await self.logins.take(name, client.ip, now)
        except TooManyAttempts:
            await self._failed(await self.store.user(name), name, client, "locked", typed=username)
            raise
        with attempt:
            # The user is read and checked, and the session's time taken, under the user's lock, which a password
            # change (or reset, or disabling) holds until it is folded: a login that checked the password the change
            # replaced has a session issued before the change, which the change ends; one after it reads the new
            # password. Unknown users take it too, so a known one is not told by the time.
            async with self.recorder.serialised(f"user:{name}"):
                user = await self.store.user(name)
                matches = await self.passwords.matches(password, user.password_hash if user is not None else None)
                account = await self.store.account(user.account_id) if user is not None else None
                issued_at = self.clock()
            reason: Literal["unknown_user", "wrong_password", "disabled_user", "account_deleted"] | None = (
                "unknown_user" if user is None or account is None else "wrong_password" if not matches else
                "disabled_user" if user.disabled else "account_deleted" if account.deleted_at is not None else None)
            if reason is not None or user is None:
                attempt.failed()
            else:
                attempt.succeeded()
        if reason is not None or user is None:
            await self._failed(user, name, client, reason or "unknown_user", typed=username)
            raise Unauthorised("the username or the password is not right")
        session_id = "s" + secrets.token_hex(12)
        # Issued and expiry times to the microsecond, by the service's clock: a session opened right after a
        # password change is after it.
        expires_at = issued_at + self._validity
        token = SESSION_PREFIX + self._sessions.dumps({"a": user.account_id, "u": user.username, "s": session_id,
                                                       "t": issued_at.timestamp(), "e": expires_at.timestamp()})
        await self.recorder.commit([LoginSucceeded(account_id=user.account_id, producer=domain.PRODUCER,
                                                   occurred_at=issued_at,
                                                   payload=self._attempt(user.username, client, session_id))])
        metrics.LOGINS.labels("success").inc()
        return Session(token, session_id, user, expires_at)

    async def malformed_login(self, username: str | None, client: Client, typed: str | None = None) -> None:
        """A login request that is not valid (answered 422: a password longer than any Herald takes, empty, missing,
        not a string) is a failed attempt all the same (PRODUCT.md: every login attempt is audited): LoginFailed
        (`malformed`) in the log of the user it names (`domain.attempted_username`), or the platform's, and
        counted by the user's and the address's throttles as a wrong password is. While they refuse, it is not
        counted again, as a well-formed attempt is not: the answer stays the 422. `typed`: the username as the
        body gave it, for the platform's audit log when it names nobody."""
        now = self.clock()
        with contextlib.suppress(TooManyAttempts):  # while the throttles refuse, not counted again
            with await self.logins.take(username, client.ip, now) as attempt:
                # As slow as a checked password, as a well-formed attempt is: the time of the 422 tells no known
                # username from an unknown one.
                await self.passwords.matches("", None)
                attempt.failed()
        await self._failed(await self.store.user(username) if username else None, username or "", client,
                           "malformed", typed=typed)

    async def _failed(self, user: User | None, name: str, client: Client, reason: FailureReason,
                      session_id: str | None = None, typed: str | None = None) -> None:
        metrics.LOGINS.labels(reason).inc()
        if user is None or reason == "unknown_user":
            # No account to write it to: the platform's audit log keeps it, within its bounds (platform_audit).
            log.warning("login for an unknown user", extra={"username": name[:100] or None, "ip": client.ip,
                                                            "user_agent": self._user_agent(client),
                                                            "reason": reason})
            await self.platform_audit.login_attempt(self.clock(), typed if typed is not None else name, client.ip,
                                                    client.user_agent, reason)
            return
        await self._audit_failure(user.account_id, user.username, client, reason, session_id)

    async def _audit_failure(self, account_id: str, username: str, client: Client, reason: FailureReason,
                             session_id: str | None = None) -> None:
        # Published, not waited for: an attempt on a known user costs what one on an unknown user does, give or
        # take the publish (no fold to wait for), so timing does not tell them apart.
        await self.recorder.publish_only([LoginFailed(account_id=account_id, producer=domain.PRODUCER,
                                                      occurred_at=self.clock(), payload=LoginFailedPayload(
                                                          **self._attempt(username, client, session_id).model_dump(),
                                                          reason=reason))])

    @classmethod
    def _attempt(cls, username: str, client: Client, session_id: str | None = None) -> LoginAttempt:
        return LoginAttempt(username=username, method="password", ip=client.ip, user_agent=cls._user_agent(client),
                            session_id=session_id)

    @staticmethod
    def _user_agent(client: Client) -> str | None:
        return (client.user_agent or "")[:1000] or None

    async def session(self, token: str | None) -> Session:
        """The session of a bearer token, or Unauthorised."""
        if not token or not token.startswith(SESSION_PREFIX):
            raise Unauthorised("a session token is required (Authorization: Bearer hs_...; POST /v1/sessions)")
        try:
            claims = self._sessions.loads(token[len(SESSION_PREFIX):])
            account_id, username, session_id = str(claims["a"]), str(claims["u"]), str(claims["s"])
            issued_at = datetime.fromtimestamp(float(claims["t"]), UTC)
            expires_at = datetime.fromtimestamp(float(claims["e"]), UTC)
        except (BadSignature, KeyError, TypeError, ValueError, OverflowError):
            raise Unauthorised("a session token is required (Authorization: Bearer hs_...; POST /v1/sessions)") \
                from None
        if self.clock() >= expires_at:
            raise Unauthorised("the session has expired; log in again")
        user = await self.store.user(username)
        ended = await self.store.session_ended(account_id, session_id)
        if not domain.session_valid(user, account_id, issued_at, ended) or user is None:
            raise Unauthorised("the session has ended; log in again")
        account = await self.store.account(account_id)
        if account is None or account.deleted_at is not None:
            raise Unauthorised("the account was deleted")
        return Session(token, session_id, user, expires_at)

    async def log_out(self, session: Session) -> None:
        await self.recorder.commit(domain.log_out(session.user, session.session_id))

    async def change_password(self, session: Session, current: str, new: str, client: Client) -> None:
        """The current password is a password given, as at a login: a wrong one is in the audit log (LoginFailed
        with the session it was given in) and counts toward the same throttles, so a session's holder cannot
        guess the password unchecked; once they are reached, the change is refused unchecked (TooManyAttempts)."""
        user = session.user
        domain.check_password(new, user.username, "body.new_password")
        now = self.clock()
        try:
            attempt = await self.logins.take(user.username, client.ip, now)
        except TooManyAttempts:
            await self._failed(user, user.username, client, "locked", session.session_id)
            raise
        with attempt:
            matches = await self.passwords.matches(current, user.password_hash)
            if not matches:
                attempt.failed()
        if not matches:
            await self._failed(user, user.username, client, "wrong_password", session.session_id)
        new_hash = await self.passwords.hash(new)
        async with self.recorder.serialised(f"user:{user.username}"):
            # Checked against the password the session was read with: another change folded meanwhile (two at
            # once, both with the right password) replaced it, and ended this session; the later one is refused.
            stored = await self.store.user(user.username)
            if stored is None or stored.password_hash != user.password_hash:
                matches = False
            await self.recorder.commit(domain.change_password(user, matches, new_hash, client.ip,
                                                              self._user_agent(client), session.session_id))

    # A forgotten password

    async def request_password_reset(self, username: str, client: Client) -> None:
        """Asked without credentials: the answer is the same whether the user exists or not, and is given before
        the user is even looked up (the lookup, the record and the event run after it, `_reset_requested`), so
        neither its body nor its time tells a user that exists from one that does not."""
        if self.password_reset_key is None:
            raise domain.PasswordResetNotConfigured("password resets are not configured on this platform "
                                                    "(HERALD_PASSWORD_RESET_KEY); ask your account's owner or support")
        now = self.clock()
        name = username.strip().lower()
        wait = max(self.reset_user_throttle.retry_after(name, now),
                   self.reset_address_throttle.retry_after(client.ip, now) if client.ip else 0.0)
        if wait > 0:
            raise TooManyAttempts(wait)
        self.reset_user_throttle.count(name, now)
        if client.ip:
            self.reset_address_throttle.count(client.ip, now)
        task = asyncio.create_task(self._reset_requested(name, client, now), name="password-reset-request")
        self._reset_requests.add(task)
        task.add_done_callback(self._reset_requests.discard)

    async def _reset_requested(self, name: str, client: Client, now: datetime) -> None:
        try:
            user = await self.store.user(name)
            account = await self.store.account(user.account_id) if user is not None else None
            reset, events = domain.request_password_reset(user, account, domain.new_password_reset_id(), now,
                                                          client.ip, self._user_agent(client))
            if reset is None:
                log.warning("password reset not sent" if user is not None else "password reset for an unknown user",
                            extra={"username": name[:100], "ip": client.ip, "user_agent": self._user_agent(client),
                                   "reason": "unknown_user" if user is None else "disabled_user_or_closed_account"})
                return
            # Kept before it is announced: the link delivery mails for it always finds it.
            await self.store.add_password_reset(reset)
            await self.recorder.publish_only(events)
            log.info("password reset requested", extra={"account_id": reset.account_id,
                                                        "request_id": reset.request_id})
        except Exception:
            log.exception("a password reset request was not recorded", extra={"username": name[:100]})

    async def reset_requests_settled(self) -> None:
        """Wait until the reset requests answered so far are recorded (at the service's stop; in tests)."""
        while self._reset_requests:
            await asyncio.gather(*self._reset_requests, return_exceptions=True)

    async def reset_request(self, request_id: str, token: str, client: Client) -> domain.PasswordReset:
        """The request a link names, when the link's token is its own and it may still set a password. A wrong
        token is an attempt to get into the account (PRODUCT.md: every login attempt is audited): counted on the
        request (a few burn it) and toward the address's login throttle, not the user's (README, "A forgotten
        password"), and LoginFailed (`wrong_reset_token`) in the log of the account the request is of; one the
        address's throttle refuses unchecked is LoginFailed (`locked`) there, as a login is. A request id no
        request has names no account: the platform's audit log keeps the attempt."""
        key = self.password_reset_key
        if key is None:
            raise domain.PasswordResetNotConfigured("password resets are not configured on this platform")
        now = self.clock()
        try:
            attempt = await self.logins.take(None, client.ip, now)
        except TooManyAttempts:
            await self._failed_reset(await self.store.password_reset(request_id), client, "locked")
            raise
        with attempt:
            reset = await self.store.password_reset(request_id)
            matches = reset is not None and token_matches(key, reset.request_id, reset.username,
                                                          reset.expires_at, token)
            if not matches:
                attempt.failed()
        if not matches:
            if reset is not None:
                await self.store.wrong_reset_token(request_id)
            await self._failed_reset(reset, client, "wrong_reset_token")
        user = await self.store.user(reset.username) if reset is not None else None
        account = await self.store.account(reset.account_id) if reset is not None else None
        return domain.check_password_reset(reset, matches, user, account, now)

    async def _failed_reset(self, reset: domain.PasswordReset | None, client: Client,
                            reason: Literal["wrong_reset_token", "locked"]) -> None:
        """A reset link's attempt that failed, in the log of the account the request is of (with the username of
        the request's user, as the request knows it: whether it still exists or not), or the platform's for a
        request nobody made (or one of an account purged since: its log is gone)."""
        metrics.LOGINS.labels(reason).inc()
        if reset is not None and await self.store.account(reset.account_id) is not None:
            await self._audit_failure(reset.account_id, reset.username, client, reason)
            return
        log.warning("password reset tried for no request", extra={
            "request_id": None if reset is None else reset.request_id, "ip": client.ip,
            "user_agent": self._user_agent(client), "reason": reason})
        await self.platform_audit.login_attempt(self.clock(), None if reset is None else reset.username, client.ip,
                                                client.user_agent, reason)

    async def complete_password_reset(self, request_id: str, token: str, new_password: str, client: Client) -> None:
        """A new password by a reset link: as a password change, every session of the user ends; the link is
        used up, even should the change then fail to be recorded (ask again), rather than work twice."""
        reset = await self.reset_request(request_id, token, client)
        domain.check_password(new_password, reset.username, "body.new_password")
        new_hash = await self.passwords.hash(new_password)
        async with self.recorder.serialised(f"user:{reset.username}"):
            user = await self.store.user(reset.username)
            account = await self.store.account(reset.account_id)
            current = domain.check_password_reset(await self.store.password_reset(request_id), True, user, account,
                                                  self.clock())
            if user is None or not await self.store.use_password_reset(request_id):
                raise domain.PasswordResetUsed("this password reset link was used already; ask for a new one")
            await self.recorder.commit(domain.complete_password_reset(current, user, new_hash, client.ip,
                                                                      self._user_agent(client)))
        log.info("password reset", extra={"account_id": reset.account_id, "request_id": request_id})

    # Users and keys of the account

    async def add_user(self, session: Session, username: str, password: str, role: Role) -> User:
        name = domain.normalise_username(username)
        domain.check_password(password, name)
        password_hash = await self.passwords.hash(password)
        async with self.recorder.serialised(f"user:{name}"):
            await self.recorder.commit(domain.add_user(session.user, name, role, password_hash,
                                                       await self.store.user(name)))
        return await self._user(name)

    async def disable_user(self, session: Session, username: str) -> User:
        """Disable a user and revoke the keys they issued, under the account's lock: a key they are issuing at the
        same time is issued before (and revoked) or refused after."""
        name = username.strip().lower()
        account_id = session.user.account_id
        async with self.recorder.serialised(f"account:{account_id}"), self.recorder.serialised(f"user:{name}"):
            account = await self._account(account_id)
            await self.recorder.commit(domain.disable_user(session.user, account, await self.store.user(name),
                                                           await self.store.active_keys(account_id, name)))
        return await self._user(name)

    async def users(self, session: Session) -> list[User]:
        return await self.store.users(await self._account(session.user.account_id))

    async def issue_key(self, session: Session, label: str | None) -> tuple[str, Document]:
        """The key (shown once) and what is listed of it."""
        key_id, key, key_hash = new_api_key()
        async with self.recorder.serialised(f"account:{session.user.account_id}"):  # not beside a deletion
            account = await self._account(session.user.account_id)
            issuer = await self.store.user(session.user.username)
            if issuer is None or issuer.disabled:  # disabled since the session was checked
                raise Unauthorised("the session has ended; log in again")
            await self.recorder.commit(domain.issue_key(session.user, account, key_id, key_hash, label))
        doc = await self.store.key(session.user.account_id, key_id)
        assert doc is not None  # the commit waited for it
        return key, doc

    async def revoke_key(self, session: Session, key_id: str, reason: str | None) -> Document:
        account_id = session.user.account_id
        async with self.recorder.serialised(f"key:{key_id}"):
            doc = await self.store.key(account_id, key_id)
            await self.recorder.commit(domain.revoke_key(session.user, doc["account_id"] if doc else None,
                                                         bool(doc and doc.get("revoked_at")), key_id, reason))
        revoked = await self.store.key(account_id, key_id)
        assert revoked is not None
        return revoked

    async def audit(self, session: Session, after: str | None, limit: int) -> list[Document]:
        domain.require_owner(session.user)
        return await self.store.audit(session.user.account_id, after, limit)

    async def overview(self, account_id: str) -> tuple[Account, Usage]:
        return await self._account(account_id), await self.store.usage(account_id)

    # Staff (separate credentials; every look at an account is written to its audit log)

    async def review_queue(self, staff: str, after: str | None, limit: int) -> tuple[list[Account], str | None]:
        accounts, cursor = await self.store.review_queue(after, limit)
        await self._staff_access(staff, [a.account_id for a in accounts], "review_queue")
        return accounts, cursor

    async def staff_account(self, staff: str, account_id: str) -> tuple[Account, Usage]:
        found = await self.overview(account_id)
        await self._staff_access(staff, [account_id], "account")
        return found

    async def staff_audit(self, staff: str, account_id: str, after: str | None, limit: int) -> list[Document]:
        await self._account(account_id)
        await self._staff_access(staff, [account_id], "audit_log")
        return await self.store.audit(account_id, after, limit)

    async def approve(self, staff: str, account_id: str, note: str | None) -> Account:
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self.store.account(account_id)
            await self._staff_decides(staff, account_id, "approve", lambda: domain.approve(account, staff, note))
        return await self._account(account_id)

    async def reject(self, staff: str, account_id: str, reasons: list[str]) -> Account:
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self.store.account(account_id)
            await self._staff_decides(staff, account_id, "reject",
                                      lambda: domain.reject(account, staff, reasons, self.clock()))
        return await self._account(account_id)

    async def _staff_decides(self, staff: str, account_id: str, what: StaffWhat,
                             decide: Callable[[], list[Event]]) -> None:
        """A staff action on an account, logged as staff access with its outcome; a refusal is logged too (its
        answer shows the account's state: "already rejected", "the plan already ends at ..."), unless there is
        no such account to have looked at."""
        try:
            events = decide()
        except domain.AccountNotFound:
            raise
        except RuleRefused:
            await self._staff_access(staff, [account_id], what)
            raise
        await self.recorder.commit([*events, self._accessed(staff, account_id, what)])

    def _accessed(self, staff: str, account_id: str, what: StaffWhat) -> Event:
        return StaffAccessed(account_id=account_id, producer=domain.PRODUCER,
                             payload=StaffAccessedPayload(staff=staff, what=what))

    async def _staff_access(self, staff: str, account_ids: Sequence[str], what: StaffWhat) -> None:
        """Recorded before the answer leaves: no look goes unlogged."""
        await self.recorder.commit([self._accessed(staff, a, what) for a in account_ids])

    # Plans, payments, invoices

    async def set_payment_method(self, session: Session, provider: str, reference: str) -> None:
        if provider != self.payments.name:
            raise domain.PaymentMethodInvalid(f"payments go through the {self.payments.name!r} provider",
                                              [("body.provider", "not this platform's provider")])
        self.payments.check(reference)
        await self.recorder.commit(domain.set_payment_method(session.user, provider, reference))

    async def buy_monthly(self, session: Session, subscribers: int, edition: Edition) -> Account:
        """Choose or raise a monthly tier: the invoice is recorded, then charged; the plan changes once paid."""
        domain.require_owner(session.user)
        account_id = session.user.account_id
        async with self.recorder.serialised(f"account:{account_id}"), self._invoicing:
            account = await self._end_if_due(await self._settle_pending(await self._account(account_id)))
            usage = await self.store.usage(account_id)
            now = self.clock()
            number = await self._next_invoice_number(now)
            invoice = domain.buy_monthly(account, usage, self.plans, subscribers, edition, number, now,
                                         self.calendar)
            if invoice is None:
                return account
            await self._purchase(invoice)
        return await self._account(account_id)

    async def buy_credits(self, session: Session, credits: int) -> Account:
        """A pack of credits: the invoice is recorded, then charged; the credits are the account's once paid."""
        domain.require_owner(session.user)
        account_id = session.user.account_id
        async with self.recorder.serialised(f"account:{account_id}"), self._invoicing:
            account = await self._end_if_due(await self._settle_pending(await self._account(account_id)))
            now = self.clock()
            number = await self._next_invoice_number(now)
            await self._purchase(domain.buy_credits(account, self.plans, credits, number, now, self.calendar))
        return await self._account(account_id)

    async def _next_invoice_number(self, now: datetime) -> str:
        """The next number of the year the invoice is dated in: the platform's calendar year, as its date."""
        year = self.calendar.day(now).year
        last = max(await self.store.last_invoice_number(year), self._last_numbers.get(year, 0))
        return domain.invoice_number(year, last)

    async def _record_invoice(self, number: str, events: list[Event]) -> None:
        """Publish events that issue invoice `number`, remember the number as given, then wait for the fold."""
        published = await self.recorder.publish_only(events)
        year, last = number.split("-")
        self._last_numbers[int(year)] = max(int(last), self._last_numbers.get(int(year), 0))
        await self.recorder.wait_until_applied(published)

    async def _purchase(self, invoice: InvoiceIssued) -> None:
        """Record the purchase's invoice, then charge it and record what it bought (or void it when declined).
        Stopped between (a crash, Kafka or the provider away), the purchase stays open: the account's next
        purchase or payment, or the plan clock, settles it, asking the provider for the same invoice, which a
        provider takes once (`PaymentProvider.charge`)."""
        issued = invoice.payload
        await self._record_invoice(issued.invoice_id, [invoice])
        account = await self._account(invoice.account_id)
        pending = next(i for i in domain.pending_purchases(account) if i.invoice_id == issued.invoice_id)
        declined = await self._settle(account, pending)
        if declined is not None:
            raise domain.PaymentDeclined(f"the payment of {issued.amount_cents / 100:.2f} EUR was declined: "
                                         f"{declined}; invoice {issued.invoice_id} is void and nothing changed")

    async def _settle(self, account: Account, invoice: domain.OpenInvoice) -> str | None:
        """Charge a recorded purchase and record the outcome; the reason when declined. A deleted account's
        purchase is not charged any more: the provider is asked what it did with it (`_close_purchase`)."""
        if account.deleted_at is not None:
            await self._close_purchase(account, invoice)
            return None
        declined = await self._charge(account, invoice.invoice_id, invoice.amount_cents)
        metrics.PAYMENTS.labels("paid" if declined is None else "declined").inc()
        now = self.clock()
        settled = domain.settle_purchase(account, invoice.invoice_id, declined, now)
        after = domain.evolve_all(account, settled)
        await self.recorder.commit([*settled, *domain.enforce(after, await self.store.usage(account.account_id), now,
                                                              self.calendar)])
        return declined

    async def _close_purchase(self, account: Account, invoice: domain.OpenInvoice) -> None:
        """A purchase left open when its account was deleted: what the provider took is recorded paid (and
        what it bought), a declined charge voided as ever, and a purchase the provider never charged is voided
        (`account_deleted`) instead of being charged now for an account that is gone."""
        found = await self._ask_provider(account, invoice.invoice_id,
                                         lambda: self.payments.find_charge(invoice.invoice_id))
        now = self.clock()
        if found is None:
            await self.recorder.commit(domain.abandon_purchase(account, invoice.invoice_id, now))
        else:
            await self.recorder.commit(domain.settle_purchase(account, invoice.invoice_id, found.declined, now))

    async def _settle_pending(self, account: Account) -> Account:
        """Settle the account's purchases that a crash or an outage left recorded and not settled."""
        pending = domain.pending_purchases(account)
        for invoice in pending:
            await self._settle(account, invoice)
            account = await self._account(account.account_id)
        return account

    async def settle_purchases(self, account_id: str) -> None:
        """The plan clock: an account's purchases left unsettled (under the account's lock, so never one that a
        request is settling)."""
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self.store.account(account_id)
            if account is not None:
                await self._settle_pending(account)

    async def pay_invoice(self, session: Session, invoice_id: str) -> Document:
        """Pay an open invoice now with the current payment method (402 when declined: the failure is recorded; 409
        for a void invoice, which is never paid)."""
        domain.require_owner(session.user)
        account_id = session.user.account_id
        async with self.recorder.serialised(f"account:{account_id}"):
            declined = await self._pay_open(await self._account(account_id), invoice_id)
        if declined is not None:
            raise domain.PaymentDeclined(f"the payment was declined: {declined}")
        doc = await self.store.invoice(account_id, invoice_id)
        assert doc is not None
        return doc

    async def _pay_open(self, account: Account, invoice_id: str) -> str | None:
        invoice = next((i for i in account.open_invoices if i.invoice_id == invoice_id), None)
        if invoice is None:
            doc = await self.store.invoice(account.account_id, invoice_id)
            if doc is None:
                raise domain.InvoiceNotFound("no such invoice in this account")
            if doc.get("status") == "void":
                raise domain.InvoiceVoid(f"invoice {invoice_id} is void ({doc.get('void_reason')}): it is never "
                                         "paid")
            return None  # paid already
        if invoice.purchase is not None:
            return await self._settle(account, invoice)
        declined = await self._charge(account, invoice_id, invoice.amount_cents)
        metrics.PAYMENTS.labels("declined" if declined else "paid").inc()
        await self.recorder.commit(domain.payment_outcome(account, invoice_id, invoice.amount_cents, declined,
                                                          invoice.attempts + 1, self.clock()))
        return declined

    async def _charge(self, account: Account, invoice_id: str, amount_cents: int) -> str | None:
        if amount_cents == 0:
            return None
        if account.payment_method is None:
            return "no payment method"
        _, _, reference = account.payment_method.partition(":")
        return await self._ask_provider(account, invoice_id, lambda: self.payments.charge(
            reference, account.account_id, invoice_id, amount_cents))

    async def _ask_provider(self, account: Account, invoice_id: str, ask: Callable[[], Awaitable[T]]) -> T:
        """The provider's answer about an invoice; ProviderUnavailable (503) when it gives none."""
        try:
            return await ask()
        except Exception as exc:
            metrics.PAYMENTS.labels("unknown").inc()
            log.warning("the payment provider gave no answer", exc_info=True,
                        extra={"account_id": account.account_id, "invoice_id": invoice_id})
            raise domain.ProviderUnavailable(f"the payment provider did not answer about invoice {invoice_id}; "
                                             "it stays open and is settled once the provider answers (on a retry, "
                                             "or by the plan clock)") from exc

    async def delete_account(self, session: Session) -> None:
        """The owner closes the account (its data is purged 3 months later)."""
        account_id = session.user.account_id
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self._account(account_id)
            await self.recorder.commit(domain.delete_account(session.user, account,
                                                             await self.store.active_keys(account_id), self.clock()))
            # A purchase an outage left open is closed now (never charged any more); if the provider does not
            # answer (logged), the plan clock asks again.
            with contextlib.suppress(domain.ProviderUnavailable):
                await self._settle_pending(await self._account(account_id))

    async def purge_due(self) -> int:
        """AccountPurged for every account whose retention ran out (each once: a fixed id); and what is kept past
        an account, once its own period ran out, deleted: kept invoices, the platform audit log's old entries."""
        now = self.clock()
        if dropped := await self.store.drop_kept_invoices(now):
            log.info("kept invoices deleted at the end of their legal period", extra={"invoices": dropped})
        if expired := await self.platform_audit.expire(now):
            log.info("platform audit entries deleted at the end of their retention", extra={"entries": expired})
        purged = 0
        for account_id in await self.store.purges_due(now):
            account = await self.store.account(account_id)
            if account is None:
                continue
            events = domain.purge(account, now, self.calendar)
            await self.recorder.publish_only(events)
            purged += len(events)
            for event in events:
                log.info("account purge decided", extra={"account_id": account_id,
                                                         "reason": event.payload.reason})  # type: ignore[attr-defined]
        return purged

    async def kept_invoice(self, staff: str, invoice_id: str) -> Document:
        """An invoice kept past its account's purge, looked at by staff: each look in the platform's audit log
        (the account's is gone), found or not."""
        await self.platform_audit.staff_access(self.clock(), staff, "kept_invoice", invoice_id=invoice_id)
        doc = await self.store.kept_invoice(invoice_id)
        if doc is None:
            raise domain.InvoiceNotFound("no invoice of a purged account is kept under this number (never issued, "
                                         "still its account's, or its legal period is over)")
        return doc

    async def platform_audit_log(self, staff: str, after: str | None, since: datetime | None,
                                 limit: int) -> list[Document]:
        await self.platform_audit.staff_access(self.clock(), staff, "platform_audit_log")
        return await self.platform_audit.entries(after, since, limit)

    async def platform_audit_hours(self, staff: str, after: str | None, since: datetime | None,
                                   limit: int) -> list[Document]:
        await self.platform_audit.staff_access(self.clock(), staff, "platform_audit_hours")
        return await self.platform_audit.hours(after, since, limit)

    async def invoice(self, session: Session, invoice_id: str) -> Document:
        doc = await self.store.invoice(session.user.account_id, invoice_id)
        if doc is None:
            raise domain.InvoiceNotFound("no such invoice in this account")
        return doc

    async def cancel(self, session: Session) -> Account:
        domain.require_owner(session.user)
        account_id = session.user.account_id
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self._account(account_id)
            now = self.clock()
            await self.recorder.commit(domain.cancel(account, "self_service", now, session.user.username, now=now,
                                                     calendar=self.calendar))
        return await self._account(account_id)

    async def withdraw_cancellation(self, session: Session) -> Account:
        """An owner keeps the plan they cancelled, before the cancellation takes effect."""
        domain.require_owner(session.user)
        account_id = session.user.account_id
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self._end_if_due(await self._account(account_id))
            now = self.clock()
            await self.recorder.commit(domain.withdraw_cancellation(account, "self_service", now,
                                                                    session.user.username, now=now))
        return await self._account(account_id)

    async def staff_withdraw_cancellation(self, staff: str, account_id: str, received_at: datetime) -> Account:
        """The customer's word, by email or letter, that they keep the plan, recorded by staff."""
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self._end_if_due(await self._account(account_id))
            await self._staff_decides(staff, account_id, "withdraw_cancellation", lambda: domain.withdraw_cancellation(
                account, "request", received_at, staff, now=self.clock()))
        return await self._account(account_id)

    async def _end_if_due(self, account: Account) -> Account:
        """A plan whose agreement ended (its cancellation's time came) and that the clock has not ended yet is
        ended now, as the clock would (the same fixed ids): a request in between answers from what is, not from a
        plan that ended moments ago."""
        # A deleted account's plan is left as the clock leaves it (never renewed, never ended).
        ended = [] if account.deleted_at is not None else domain.end_of_agreement(account, self.clock())
        if not ended:
            return account
        await self.recorder.commit(ended)
        return await self._account(account.account_id)

    async def set_billing_details(self, session: Session, legal_name: str, address: Sequence[str], country: str,
                                  vat_number: str | None) -> Account:
        """Owners set who the invoices are made out to (from the next invoice on)."""
        domain.require_owner(session.user)
        details = domain.billing_details(legal_name, address, country, vat_number)
        account_id = session.user.account_id
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self._account(account_id)
            await self.recorder.commit(domain.change_billing_details(session.user, account, details))
        return await self._account(account_id)

    async def staff_cancel(self, staff: str, account_id: str, received_at: datetime) -> Account:
        """A cancellation that reached staff (by email, by letter) on `received_at`."""
        async with self.recorder.serialised(f"account:{account_id}"):
            account = await self._account(account_id)
            paid = await self.store.paid_periods(account_id)
            await self._staff_decides(staff, account_id, "cancel", lambda: domain.cancel(
                account, "request", received_at, staff, now=self.clock(), paid=paid, calendar=self.calendar))
        return await self._account(account_id)

    async def renew(self, account_id: str) -> None:
        """At the end of a paid period: end a plan that ends then (cancelled, or a rejected account's), or invoice the
        next period and charge it (a failed payment is retried once a day), then let the plan speak (a new period
        lifts the monthly quota)."""
        now = self.clock()
        async with self.recorder.serialised(f"account:{account_id}"), self._invoicing:
            account = await self.store.account(account_id)
            if account is None or account.deleted_at is not None:
                return  # a deleted account is not charged again
            if domain.purge_is_due(account, now, self.calendar):
                return  # nor one purged now (the clock decided it first; its AccountPurged may not be folded yet)
            ended = domain.end_of_agreement(account, now)
            if ended:
                await self.recorder.commit(ended)
            else:
                number = await self._next_invoice_number(now)
                invoice = domain.renewal(account, self.plans, number, now, self.calendar)
                if invoice is not None:
                    await self._record_invoice(number, [invoice])
                    account = await self._account(account_id)
                for open_invoice in account.open_invoices:
                    last = open_invoice.last_attempt_at
                    if last is None or now - last >= domain.PAYMENT_RETRY_INTERVAL:
                        await self._pay_open(account, open_invoice.invoice_id)
                        account = await self._account(account_id)
        await self.enforce([account_id])

    # The plan, without a request

    async def enforce(self, account_ids: Sequence[str], failed: set[str] | None = None) -> int:
        """Publish what each account's plan calls for (fixed event ids: a repeat is the same event), and what it
        may still send when that changed (SendAllowanceChanged, after the decisions, reckoned on the account as
        they leave it). With `failed`, an account whose rule raises (a defect, not the infrastructure) is logged
        and added to it, and the others are decided all the same: one account's failure holds back no other's
        decision. One call at a time (the usage guard, the clock, a renewal), so two allowances reckoned from
        different counts never share a sequence."""
        async with self._enforcing:
            decided: list[Event] = []
            allowances: list[Event] = []
            now = self.clock()
            for account, usage in (await self.store.touched_usage(account_ids)).values():
                try:
                    events = domain.enforce(account, usage, now, self.calendar)
                    after = domain.evolve_all(account, events)
                    allowance = domain.allowance_changed(after, usage, now, self.calendar,
                                                         self._allowances.get(account.account_id))
                except Exception:
                    if failed is None:
                        raise
                    log.exception("deciding what an account's plan calls for failed; decided again later",
                                  extra={"account_id": account.account_id})
                    failed.add(account.account_id)
                    continue
                decided += events
                if allowance is not None:
                    allowances.append(allowance)
            if decided or allowances:
                await self.recorder.publish_only([*decided, *allowances])
                for event in decided:
                    metrics.ENFORCED.labels(event.type).inc()
                    log.info("plan enforced", extra={"account_id": event.account_id, "event": event.type})
                for event in allowances:
                    assert isinstance(event, SendAllowanceChanged)
                    self._allowances[event.account_id] = domain.told_allowance(event)
            return len(decided)

    async def _account(self, account_id: str) -> Account:
        account = await self.store.account(account_id)
        if account is None:
            raise domain.AccountNotFound("no such account")
        return account

    async def _user(self, username: str) -> User:
        user = await self.store.user(username)
        if user is None:
            raise domain.UserNotFound("no such user")
        return user


class UsageGuard:
    """The consumer's handler: folds the projection, then lets the plan speak for every account whose state or
    usage the batch changed, before the batch's offsets are committed (a crash in between decides again, with
    the same event ids). Not while the consumer catches up (`caught_up`, the consumer's): a fold from offset 0
    passes through states that never were (an account's sends not counted yet) and would decide from them;
    the accounts it touched are decided once it has caught up, from what they are.

    A batch the store refuses is forgotten (`forget`) and handled again event by event (`kafka.EventConsumer`),
    so a flush fails only for the infrastructure or what the batch writes. An account whose rule raises (a defect)
    is logged, the other accounts are decided, and it is tried again at every flush of this process; not after a
    restart (its next change or the plan clock decides it then): failing the flush would have dead-lettered
    stored events one by one, or held every account's decisions behind one."""

    def __init__(self, projection: BillingProjection, service: BillingService, *others: object) -> None:
        self.projection = projection
        self.service = service
        self.others = others
        self.caught_up: asyncio.Event | None = None  # None: always caught up
        self._undecided: set[str] = set()  # folded, not yet decided on: kept until a decision is published

    async def handle(self, event: Event) -> None:
        await self.projection.handle(event)
        for other in self.others:
            await other.handle(event)  # type: ignore[attr-defined]

    async def flush(self) -> None:
        await self.projection.flush()
        self._undecided |= self.projection.take_touched()
        for other in self.others:
            await other.flush()  # type: ignore[attr-defined]
        if self._undecided and (self.caught_up is None or self.caught_up.is_set()):
            # The infrastructure's failure fails the flush: the consumer retries it, and these accounts are
            # decided then. An account whose rule raises stays for the next flush (see the class).
            failed: set[str] = set()
            await self.service.enforce(sorted(self._undecided), failed)
            self._undecided = failed

    async def forget(self) -> None:
        """What the batch staged (the accounts already folded and stored stay to be decided)."""
        await self.projection.forget()
        for other in self.others:
            await other.forget()  # type: ignore[attr-defined]


class PlanClock:
    """Every `interval` seconds: settles purchases left open (a crash, an outage), ends trials at day 30, renews
    (or ends) monthly plans whose paid period is over, expires credits and purges accounts whose retention ran
    out, each found as an `_id` range up to now."""

    def __init__(self, service: BillingService, interval: float, ready: asyncio.Event | None = None) -> None:
        self.service = service
        self.interval = interval
        self.ready = ready  # the projection caught up: no round decides from a half-folded state before
        self.ran = asyncio.Event()  # set after the first round (done or failed)
        self._stopping = asyncio.Event()

    def request_stop(self) -> None:
        self._stopping.set()

    async def tick(self) -> int:
        """The number of events the trials called for (renewals record theirs as they go)."""
        now = self.service.clock()
        for account_id in await self.service.store.purchases_due(now):
            with contextlib.suppress(domain.ProviderUnavailable):  # logged by the charge; the next round asks again
                await self.service.settle_purchases(account_id)
        # Purges first: an account whose purge is due is not charged for a period it will not have (`renew`).
        await self.service.purge_due()
        for account_id in await self.service.store.renewals_due(now):
            with contextlib.suppress(domain.ProviderUnavailable):  # the same
                await self.service.renew(account_id)
        due = await self.service.store.trials_ending(now) + await self.service.store.credits_expiring(now)
        return await self.service.enforce(due) if due else 0

    async def run(self) -> None:
        if self.ready is not None:  # the first round once the projection caught up (or never, if stopped first)
            ready, stopping = asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for waiting in (ready, stopping):
                waiting.cancel()
        await every(self.interval, self._stopping, self._round, "plan clock round")

    async def _round(self) -> None:
        try:
            await self.tick()
        finally:
            self.ran.set()
