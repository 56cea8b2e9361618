"""Billing's rules, pure: sign-up, users and sessions, review, and the trial's boundaries (PRODUCT.md, "Plans and
billing": 30 days, 20 subscribers, 100 emails; "the trial ends at day 30 or as soon as the subscriber limit is
exceeded, even if subscribers are deleted afterwards")."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from herald_billing import domain
from herald_billing.domain import Account, Usage, User
from herald_billing.plans import CreditPack, Plans, Tier
from herald_shared.contract.billing import (
    AccountDeleted,
    AccountOpened,
    ApiKeyRevoked,
    PasswordChanged,
    PlanChanged,
    QuotaExhausted,
    SendingBlocked,
    TrialEnded,
    UserAdded,
    UserDisabled,
)
from herald_shared.contract.delivery import MessageBounced, MessageSent
from herald_shared.sent import email_sent

NOW = datetime(2026, 12, 3, 9, 0, 0, 123456, tzinfo=UTC)
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def opened(at: datetime = NOW) -> Account:
    events = domain.sign_up("a1", "Acme", "ada@acme.example", "ada", HASH, True, True, None, at)
    state = None
    for event in events:
        state = domain.evolve_account(state, event)
    assert state is not None
    return state


def test_sign_up_records_the_account_its_owner_and_the_trial() -> None:
    events = domain.sign_up("a1", "Acme", "ada@acme.example", "ada", HASH, True, True, None, NOW)
    assert [type(e) for e in events] == [AccountOpened, UserAdded, PlanChanged]
    assert events[0].payload.terms_accepted_at == NOW  # type: ignore[attr-defined]
    account = opened()
    assert (account.plan, account.review, account.users) == ("trial", "in_review", ("ada",))
    assert account.trial_ends_at == account.opened_at + timedelta(days=30)
    assert account.opened_at == NOW.replace(microsecond=123000)  # as MongoDB will hand it back


@pytest.mark.parametrize(("terms", "adult"), [(False, True), (True, False), (False, False)])
def test_sign_up_takes_the_terms_and_an_age_of_18(terms: bool, adult: bool) -> None:
    with pytest.raises(domain.TermsNotAccepted):
        domain.sign_up("a1", "Acme", "ada@acme.example", "ada", HASH, terms, adult, None, NOW)


def test_a_username_is_taken_once_across_herald() -> None:
    other = User("ada", "a2", "owner", HASH)
    with pytest.raises(domain.UsernameTaken):
        domain.sign_up("a1", "Acme", "ada@acme.example", "ada", HASH, True, True, other, NOW)
    # Folding: the first account to add a name keeps it.
    first = domain.evolve_user(None, UserAdded(account_id="a1", producer="billing", payload={  # type: ignore[arg-type]
        "username": "ada", "role": "owner", "password_hash": HASH, "added_by": "ada"}))
    second = domain.evolve_user(first, UserAdded(account_id="a2", producer="billing", payload={  # type: ignore[arg-type]
        "username": "ada", "role": "owner", "password_hash": HASH, "added_by": "ada"}))
    assert second == first and first is not None and first.account_id == "a1"


@pytest.mark.parametrize(("password", "ok"), [("x" * 11, False), ("x" * 12, False), ("xy" * 6, True),
                                              ("my-ada-password", False), ("MY-ADA-PASSWORD", False),
                                              ("z" * 257, False), ("correct horse", True)])
def test_passwords_are_long_and_not_the_username(password: str, ok: bool) -> None:
    if ok:
        domain.check_password(password, "ada")
    else:
        with pytest.raises(domain.WeakPassword):
            domain.check_password(password, "ada")


@pytest.mark.parametrize("name", ["ab", "-ada", "Ada Lovelace", "a" * 101, "ada/x"])
def test_invalid_usernames_are_refused(name: str) -> None:
    with pytest.raises(domain.InvalidUsername):
        domain.normalise_username(name)


def test_usernames_are_lower_case() -> None:
    assert domain.normalise_username("  Ada.L@Acme.example ") == "ada.l@acme.example"


def test_a_session_holds_until_logout_password_change_or_disabling() -> None:
    user = User("bob", "a1", "member", HASH)
    issued = NOW
    assert domain.session_valid(user, "a1", issued, ended=False)
    assert not domain.session_valid(user, "a1", issued, ended=True)
    assert not domain.session_valid(user, "a2", issued, ended=False)
    assert not domain.session_valid(None, "a1", issued, ended=False)
    changed = domain.evolve_user(user, PasswordChanged(account_id="a1", producer="billing", occurred_at=NOW, payload={  # type: ignore[arg-type]
        "username": "bob", "password_hash": HASH}))
    assert changed is not None
    assert not domain.session_valid(changed, "a1", NOW - timedelta(microseconds=1), ended=False)
    assert domain.session_valid(changed, "a1", NOW + timedelta(milliseconds=1), ended=False)
    # MongoDB keeps the change's time to the millisecond: a session issued in that millisecond before the change
    # (NOW has .123456) must not pass once the user is read back; the bound is rounded up, never down.
    assert changed.sessions_valid_from == domain.to_stored_precision(changed.sessions_valid_from)
    assert not domain.session_valid(changed, "a1", NOW.replace(microsecond=123_001), ended=False)
    disabled = domain.evolve_user(changed, UserDisabled(account_id="a1", producer="billing", payload={  # type: ignore[arg-type]
        "username": "bob", "disabled_by": "ada"}))
    assert disabled is not None and not domain.session_valid(disabled, "a1", NOW, ended=False)
    # Another account cannot change a user it does not own.
    assert domain.evolve_user(user, UserDisabled(account_id="a2", producer="billing", payload={  # type: ignore[arg-type]
        "username": "bob", "disabled_by": "eve"})) == user


def test_a_password_change_records_who_made_it_from_where_and_in_which_session() -> None:
    """PRODUCT.md: the audit log says who, when and from where; a password change is in it."""
    user = User("bob", "a1", "member", HASH)
    [changed] = domain.change_password(user, True, HASH, "198.51.100.77", "browser/1", "s123")
    assert isinstance(changed, PasswordChanged)
    assert (changed.payload.username, changed.payload.ip, changed.payload.user_agent, changed.payload.session_id) \
        == ("bob", "198.51.100.77", "browser/1", "s123")
    with pytest.raises(domain.WrongPassword):
        domain.change_password(user, False, HASH, "198.51.100.77", "browser/1", "s123")


@pytest.mark.parametrize(("body", "username"), [
    ({"username": "Ada ", "password": "x" * 257}, "ada"),  # longer than any password Herald takes
    ({"username": "ada", "password": ""}, "ada"),
    ({"username": "ada"}, "ada"),
    ({"username": "ada", "password": 12345678901234}, "ada"),
    ({"username": "", "password": "p"}, None),
    ({"username": "   ", "password": "p"}, None),
    ({"username": "a" * 101, "password": "p"}, None),  # no login takes it: nobody's
    ({"username": "ada\x00", "password": "p"}, None),
    ({"username": 7, "password": "p"}, None),
    ({"password": "p"}, None),
    (["ada", "p"], None),
    (None, None),  # no JSON at all
])
def test_a_login_request_that_is_not_valid_is_an_attempt_for_the_user_it_names(body: object,
                                                                                username: str | None) -> None:
    """PRODUCT.md: every login attempt is audited; one answered 422 is the named user's failed attempt."""
    assert domain.attempted_username(body) == username


def test_only_owners_manage_users_and_keys_and_nobody_disables_themselves() -> None:
    owner, member = User("ada", "a1", "owner", HASH), User("bob", "a1", "member", HASH)
    with pytest.raises(domain.OwnersOnly):
        domain.issue_key(member, opened(), "k1", "scrypt$" + "x" * 30, None)
    with pytest.raises(domain.OwnersOnly):
        domain.add_user(member, "cy", "member", HASH, None)
    with pytest.raises(domain.CannotDisable):
        domain.disable_user(owner, opened(), owner, [])
    with pytest.raises(domain.UserNotFound):
        domain.disable_user(owner, opened(), User("eve", "a2", "member", HASH), [])
    assert len(domain.disable_user(owner, opened(), member, [])) == 1
    assert domain.disable_user(owner, opened(), replace(member, disabled=True), []) == []
    with pytest.raises(domain.KeyNotFound):
        domain.revoke_key(owner, "a2", False, "k1", None)
    assert domain.revoke_key(owner, "a1", True, "k1", None) == []


def test_the_main_user_disables_any_other_user_and_their_keys_are_revoked() -> None:
    """An owner added as a sub-user can be removed: by the main user (who signed up); never the main user, by
    anyone. What a disabled user issued stops working: their active keys are revoked with them."""
    account = opened()  # main user: ada
    ada, bob, cy = User("ada", "a1", "owner", HASH), User("bob", "a1", "owner", HASH), User("cy", "a1", "member", HASH)
    disabled, revoked = domain.disable_user(ada, account, bob, ["k-bob"])
    assert isinstance(disabled, UserDisabled) and disabled.payload.username == "bob"
    assert isinstance(revoked, ApiKeyRevoked) and (revoked.payload.key_id, revoked.payload.revoked_by) == (
        "k-bob", "ada")
    with pytest.raises(domain.CannotDisable):  # another owner cannot remove the main user
        domain.disable_user(bob, account, ada, [])
    with pytest.raises(domain.MainUserOnly):  # nor a peer owner
        domain.disable_user(bob, account, replace(bob, username="dan"), [])
    assert [type(e) for e in domain.disable_user(bob, account, cy, [])] == [UserDisabled]  # members, yes
    with pytest.raises(domain.OwnersOnly):
        domain.disable_user(cy, account, bob, [])


def test_only_the_main_user_closes_the_account() -> None:
    account = opened()
    with pytest.raises(domain.MainUserOnly) as refused:
        domain.delete_account(User("bob", "a1", "owner", HASH), account, ["k1"], NOW)
    assert refused.value.http_status == 403
    deleted = domain.delete_account(User("ada", "a1", "owner", HASH), account, ["k1"], NOW)
    assert [type(e) for e in deleted] == [AccountDeleted, ApiKeyRevoked, SendingBlocked]


def test_a_rejected_account_is_sold_nothing() -> None:
    """PRODUCT.md, "Review": a rejected account stays held; selling it a plan or credits would charge for nothing
    it may use, every month."""
    (rejected_event,) = domain.reject(opened(), "rita", ["fake company"], NOW)
    rejected = domain.evolve_all(replace(opened(), payment_method="simulated:sim-card-ok"), [rejected_event])
    config = Plans(tiers=(Tier(500, 900, 1900),), packs=(CreditPack(1000, 1000, 365),), vat_percent=Decimal(21))
    with pytest.raises(domain.RejectedAccount) as refused:
        domain.buy_monthly(rejected, Usage(), config, 500, "standard", "2026-000001", NOW)
    assert (refused.value.http_status, refused.value.code) == (409, "account_rejected")
    with pytest.raises(domain.RejectedAccount):
        domain.buy_credits(rejected, config, 1000, "2026-000001", NOW)
    approved = domain.evolve_all(rejected, domain.approve(rejected, "rita", "reconsidered"))
    assert domain.buy_monthly(approved, Usage(), config, 500, "standard", "2026-000001", NOW) is not None


def test_review_approves_once_and_rejects_only_what_waits() -> None:
    account = opened()
    assert len(domain.approve(account, "rita", None)) == 1
    assert domain.approve(replace(account, review="approved"), "rita", None) == []
    with pytest.raises(domain.AlreadyReviewed):
        domain.reject(replace(account, review="rejected"), "rita", ["again"], NOW)
    with pytest.raises(domain.AccountNotFound):
        domain.approve(None, "rita", None)


def test_20_subscribers_keep_the_trial_and_the_21st_ends_it() -> None:
    account = opened()
    assert domain.enforce(account, Usage(subscribers=20), NOW) == []
    ended, blocked = domain.enforce(account, Usage(subscribers=21, trial_emails=7), NOW)
    assert isinstance(ended, TrialEnded) and isinstance(blocked, SendingBlocked)
    assert (ended.payload.reason, ended.payload.subscribers, ended.payload.emails_sent) == (
        "subscriber_limit_exceeded", 21, 7)
    assert blocked.payload.reason == "trial_ended"


def test_more_than_20_subscribers_at_any_moment_end_the_trial_though_fewer_are_stored_now() -> None:
    """PRODUCT.md: the trial ends "as soon as the subscriber limit is exceeded, even if subscribers are deleted
    afterwards": 25 stored, then deleted before the guard looked (one batch), still end it."""
    account = opened()
    assert domain.enforce(account, Usage(subscribers=3, trial_peak_subscribers=20), NOW) == []
    ended, blocked = domain.enforce(account, Usage(subscribers=0, trial_peak_subscribers=25), NOW)
    assert isinstance(ended, TrialEnded) and isinstance(blocked, SendingBlocked)
    assert (ended.payload.reason, ended.payload.subscribers) == ("subscriber_limit_exceeded", 25)


def test_the_trial_ends_at_day_30_not_a_moment_before() -> None:
    account = opened()
    assert domain.enforce(account, Usage(), account.opened_at + timedelta(days=30, microseconds=-1)) == []
    ended, _ = domain.enforce(account, Usage(), account.opened_at + timedelta(days=30))
    assert isinstance(ended, TrialEnded) and ended.payload.reason == "expired"


def test_the_trial_stays_ended_when_subscribers_are_deleted_afterwards() -> None:
    account = opened()
    for event in domain.enforce(account, Usage(subscribers=21), NOW):
        account = domain.evolve_account(account, event)  # type: ignore[assignment]
    assert account.plan == "trial_ended" and account.blocked == ("trial_ended",)
    assert domain.enforce(account, Usage(subscribers=0), NOW) == []
    again = PlanChanged(account_id="a1", producer="billing", payload={"plan": "trial", "effective_at": NOW})  # type: ignore[arg-type]
    assert domain.evolve_account(account, again) == account  # a trial never starts again


def test_99_emails_keep_sending_open_and_the_100th_exhausts_the_trial() -> None:
    account = opened()
    assert domain.enforce(account, Usage(trial_emails=99), NOW) == []
    exhausted, blocked = domain.enforce(account, Usage(trial_emails=100), NOW)
    assert isinstance(exhausted, QuotaExhausted) and isinstance(blocked, SendingBlocked)
    assert (exhausted.payload.quota, exhausted.payload.limit, exhausted.payload.used) == ("trial_emails", 100, 100)
    assert blocked.payload.reason == "trial_quota_reached"
    folded = domain.evolve_account(account, exhausted)
    assert folded is not None and domain.enforce(folded, Usage(trial_emails=101), NOW) == []


def test_a_decision_taken_twice_is_the_same_event() -> None:
    account = opened()
    first = domain.enforce(account, Usage(subscribers=25), NOW)
    second = domain.enforce(account, Usage(subscribers=30), NOW + timedelta(seconds=5))
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert domain.enforce(account, Usage(trial_emails=100), NOW)[0].event_id != first[0].event_id


def outcome(kind: str = "campaign", source: str | None = None) -> MessageSent | MessageBounced:
    ref = {"message_id": "m1", "kind": kind, "campaign_id": "c1", "subscriber_id": "s1" if kind == "campaign" else None}
    if source is None:
        return MessageSent(account_id="a1", producer="delivery", payload={  # type: ignore[arg-type]
            **ref, "recipient_domain": "example.com", "smtp_code": 250})
    return MessageBounced(account_id="a1", producer="delivery", payload={  # type: ignore[arg-type]
        **ref, "bounce_class": "block", "smtp_code": 550, "diagnostic": "550 5.7.1 refused", "source": source})


def test_an_email_the_receiving_server_refused_counts_as_sent_and_nothing_counts_twice() -> None:
    """PRODUCT.md: "every email sent consumes a credit, even if the receiving server blocks it": a 5xx to RCPT TO
    or DATA (MessageBounced smtp_reply, no MessageSent) counts; a later report on a message sent (dsn) was
    counted by its MessageSent; one given up after retrying was never sent."""
    for plan in ("trial", "monthly", "pay_as_you_go"):
        assert domain.counts_as_sent(outcome(), plan)
        assert domain.counts_as_sent(outcome(source="smtp_reply"), plan)
        assert not domain.counts_as_sent(outcome(source="dsn"), plan)
        assert not domain.counts_as_sent(outcome(source="retry_expired"), plan)
        assert not domain.counts_as_sent(outcome(source="local"), plan)  # never handed to the relay: never sent
        assert not domain.counts_as_sent(outcome("confirmation", "smtp_reply"), plan)
        assert not domain.counts_as_sent(outcome("account_notice"), plan)


def test_test_sends_count_toward_the_trials_100_emails_and_no_paid_plans_quota() -> None:
    """PRODUCT.md: the trial allows "at most 20 subscribers and 100 emails"; a test send is an email (campaigns
    lets an account send tests unreviewed). A paid plan's cap and credits count campaign emails only."""
    for test in (outcome("test"), outcome("test", "smtp_reply")):
        assert email_sent(test) and domain.counts_as_sent(test, "trial")
        assert not domain.counts_as_sent(test, "monthly") and not domain.counts_as_sent(test, "pay_as_you_go")
    assert not domain.counts_as_sent(outcome("test", "dsn"), "trial")  # its MessageSent counted it
