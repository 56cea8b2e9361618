"""Who a test send may go to: anyone for an approved account on a paid plan; while staff review the account (not
approved yet, or on trial) only its registered address and addresses at a sending domain it verified itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from herald_campaigns import domain
from herald_campaigns.domain import AccountInfo, Senders
from herald_campaigns.screening import Match
from herald_shared.contract.billing import AccountApproved, AccountOpened, PlanChanged
from herald_shared.contract.envelope import Event

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
PAID = AccountInfo("acme", opened=True, approved=True, plan="monthly", registered_email="owner@acme-corp.example")
UNAPPROVED = AccountInfo("acme", opened=True, plan="monthly", registered_email="Owner@Acme-Corp.example")
TRIAL = AccountInfo("acme", opened=True, approved=True, plan="trial", registered_email="owner@acme-corp.example")
# An account campaigns folded before it kept the registered address: only its verified domains count.
FOLDED_BEFORE = AccountInfo("acme", opened=True, plan="trial")
ACME = Senders(verified=frozenset({"acme.example"}), shared=frozenset({"example.com"}),
               pending={"pending.example": "token"})


def refused(account: AccountInfo | None, *recipients: str, senders: Senders = ACME) -> list[str]:
    return domain.refused_test_recipients(account, list(recipients), senders)


def test_an_approved_account_on_a_paid_plan_tests_to_anyone() -> None:
    assert refused(PAID, "stranger@elsewhere.example", "someone@gmail.com") == []
    domain.check_test_recipients(PAID, ["stranger@elsewhere.example"], ACME)


@pytest.mark.parametrize("account", [UNAPPROVED, TRIAL, None], ids=["unapproved", "trial", "unknown"])
def test_an_account_under_review_tests_only_to_its_own_addresses(account: AccountInfo | None) -> None:
    """PRODUCT.md, "Review": until staff have reviewed the account, and during the trial, nothing unreviewed
    reaches strangers; tests are not reviewed."""
    own = ["me@acme.example", "colleague@acme.example"]
    if account is not None:
        own.append("owner@acme-corp.example")
    assert refused(account, *own) == []
    assert refused(account, *own, "stranger@elsewhere.example") == ["stranger@elsewhere.example"]


def test_the_registered_address_and_verified_domains_compare_in_lower_case() -> None:
    assert refused(UNAPPROVED, "OWNER@acme-corp.EXAMPLE", "Me@ACME.Example") == []
    assert refused(UNAPPROVED, "other@acme-corp.example") == ["other@acme-corp.example"]  # only that address


def test_an_international_domain_is_compared_as_its_a_labels() -> None:
    senders = Senders(verified=frozenset({"xn--bcher-kva.example"}))
    account = AccountInfo("acme", opened=True, plan="trial", registered_email="anna@Bücher.example")
    assert refused(account, "me@bücher.example", "anna@xn--bcher-kva.example", senders=senders) == []


def test_a_subdomain_of_a_verified_domain_is_the_accounts_own_but_not_a_look_alike_nor_a_parent() -> None:
    assert refused(TRIAL, "me@mail.acme.example", "me@deep.mail.acme.example") == []
    assert refused(TRIAL, "me@evil-acme.example", "me@acmeexample") == ["me@evil-acme.example", "me@acmeexample"]
    verified_subdomain = Senders(verified=frozenset({"news.acme.example"}))
    assert refused(TRIAL, "me@acme.example", senders=verified_subdomain) == ["me@acme.example"]


def test_the_platforms_shared_sending_domain_is_no_accounts_own() -> None:
    """Every account may send From the operator's shared domains; none owns their mailboxes."""
    assert refused(TRIAL, "anyone@example.com", "anyone@news.example.com") == ["anyone@example.com",
                                                                                "anyone@news.example.com"]


def test_a_pending_domain_is_not_the_accounts_own_yet() -> None:
    assert refused(UNAPPROVED, "me@pending.example") == ["me@pending.example"]


def test_an_account_without_a_registered_address_tests_only_to_its_verified_domains() -> None:
    assert refused(FOLDED_BEFORE, "me@acme.example") == []
    assert refused(FOLDED_BEFORE, "owner@acme-corp.example") == ["owner@acme-corp.example"]
    with pytest.raises(domain.TestRecipientNotAllowed, match="holds none for this account"):
        domain.check_test_recipients(FOLDED_BEFORE, ["owner@acme-corp.example"], ACME)


def test_the_refusal_names_the_refused_addresses_and_what_is_allowed_and_why() -> None:
    with pytest.raises(domain.TestRecipientNotAllowed) as raised:
        domain.check_test_recipients(UNAPPROVED, ["me@acme.example", "a@elsewhere.example", "b@pending.example"],
                                     ACME)
    refusal = raised.value
    assert (refusal.code, refusal.http_status) == ("test_recipient_not_allowed", 422)
    assert refusal.refused == ["a@elsewhere.example", "b@pending.example"]
    assert [where for where, _ in refusal.errors or ()] == ["body.recipients", "body.recipients"]
    for text in ("a@elsewhere.example, b@pending.example", "Owner@Acme-Corp.example", "verified",
                 "staff have not approved the account yet", "pending.example: added, not verified yet",
                 "shared sending domains are no account's own"):
        assert text in refusal.detail, text
    with pytest.raises(domain.TestRecipientNotAllowed, match="on trial"):
        domain.check_test_recipients(TRIAL, ["a@elsewhere.example"], ACME)


def test_the_domains_read_for_a_test_are_each_recipients_domain_and_parents() -> None:
    assert domain.test_recipient_domains(["a@mail.acme.example", "b@acme.example", "c@other.example"]) == [
        "acme.example", "mail.acme.example", "other.example"]


def billing(cls: type[Event], **payload: Any) -> Event:
    return cls(account_id="acme", producer="billing", payload=payload)  # type: ignore[call-arg]


def test_the_account_fold_keeps_the_registered_address_and_its_rule_follows_approval_and_plan() -> None:
    opened = billing(AccountOpened, company_name="Acme", registered_email="owner@acme-corp.example",
                     main_username="anna", terms_accepted_at=NOW)
    doc = domain.evolve_account(None, opened)
    info = domain.account_info(doc)
    assert info is not None and info.registered_email == "owner@acme-corp.example"
    assert refused(info, "owner@acme-corp.example") == [] and refused(info, "x@elsewhere.example")
    doc = domain.evolve_account(doc, billing(AccountApproved, reviewer="rita"))
    assert refused(domain.account_info(doc), "x@elsewhere.example")  # approved, still on trial
    doc = domain.evolve_account(doc, billing(PlanChanged, plan="monthly", tier_subscriber_limit=1000,
                                             effective_at=NOW))
    info = domain.account_info(doc)
    assert info is not None and info.registered_email == "owner@acme-corp.example"
    assert refused(info, "x@elsewhere.example") == []
    older = {k: v for k, v in (doc or {}).items() if k != "registered_email"}  # folded before it was kept
    assert domain.account_info(older) is not None and domain.account_info(older).registered_email is None  # type: ignore[union-attr]


GAMBLING = (Match(category="gambling", matched="online casino bonus", where="html_body", rule="online casino*"),)


def test_content_screening_flags_is_tested_only_to_the_accounts_own_addresses_whatever_the_account() -> None:
    """A flagged submission goes to staff first (PRODUCT.md, "Content and industries"): as a test it must not reach
    strangers unreviewed, even from an approved account on a paid plan (R3 #3: 50 a day did)."""
    assert refused(PAID, "stranger@victims.example") == []  # clean content: anyone
    assert domain.refused_test_recipients(PAID, ["stranger@victims.example", "me@acme.example",
                                                 "owner@acme-corp.example"], ACME, GAMBLING) == [
        "stranger@victims.example"]
    with pytest.raises(domain.TestRecipientNotAllowed) as refusal:
        domain.check_test_recipients(PAID, ["stranger@victims.example"], ACME, GAMBLING)
    assert refusal.value.refused == ["stranger@victims.example"]
    assert "screening flagged its content" in refusal.value.detail
    assert "gambling: 'online casino bonus' in html_body" in refusal.value.detail
    domain.check_test_recipients(PAID, ["me@acme.example", "OWNER@acme-corp.example"], ACME, GAMBLING)


def test_an_account_under_review_testing_flagged_content_is_told_both_reasons() -> None:
    with pytest.raises(domain.TestRecipientNotAllowed) as refusal:
        domain.check_test_recipients(TRIAL, ["stranger@victims.example"], ACME, GAMBLING)
    assert "on trial" in refusal.value.detail and "screening flagged" in refusal.value.detail
    assert domain.test_review_reasons(TRIAL, GAMBLING) == ["trial", "flagged"]
    assert domain.test_review_reasons(PAID) == []
