"""Sending domains' rules, pure: how a domain is written, which From a verified domain allows (relaxed alignment),
what a DNS answer proves, the fold of a domain's events, and a campaign whose domain went away before its time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald_campaigns import domain
from herald_campaigns.domain import DnsAnswer, Draft, ListInfo, Senders
from herald_campaigns.main import CampaignsSettings
from herald_campaigns.resolver import parse_nameservers
from herald_campaigns.screening import Screening
from herald_shared.contract.campaigns import (
    CampaignQueued,
    CampaignReturned,
    SendingDomainVerified,
)
from herald_shared.contract.envelope import Event

NEWS = ListInfo("news", {"city": "text"})
DRAFT = Draft(name="November", list_id="news", subject="News", from_name="Acme", from_email="news@acme.example",
              html_body="<p>Hello</p>")
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TOKEN = "k2n7q4x8r5t3w6y9z2b4c6d8f3"


@pytest.mark.parametrize(("text", "name"), [
    ("acme.example", "acme.example"),
    ("  Acme.EXAMPLE.  ", "acme.example"),  # case, spaces and the root's dot
    ("Bücher.de", "xn--bcher-kva.de"),  # IDNA A-labels
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("straße.de", "xn--strae-oqa.de"),  # IDNA 2008: ß is a letter of its own, not "ss"
    ("\uff41\uff43\uff4d\uff45\u3002example", "acme.example"),  # fullwidth letters, ideographic full stop (UTS 46)
    ("mail.news.acme.example", "mail.news.acme.example"),
])
def test_a_domain_is_kept_in_lower_case_a_labels_without_the_final_dot(text: str, name: str) -> None:
    assert domain.domain_name(text) == name


@pytest.mark.parametrize("text", ["", ".", "acme", "acme..example", "-acme.example", "bad_name.example",
                                  "acme.example..", "news@acme.example", "1.2.3.4", "[192.0.2.1]", "acme.test",
                                  "printer.local", "a b.example", "d" * 64 + ".example",
                                  "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 40 + ".example"])
def test_what_is_no_host_name_or_too_long_for_its_verification_name_is_refused(text: str) -> None:
    with pytest.raises(domain.InvalidDomain) as refused:
        domain.domain_name(text)
    assert refused.value.http_status == 422 and refused.value.errors and refused.value.errors[0][0] == "body.domain"


def test_the_longest_domain_leaves_room_for_its_verification_name() -> None:
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 37, "ex"])
    assert len(longest) == domain.LONGEST_DOMAIN == 232
    name = domain.verification_record(domain.domain_name(longest), TOKEN).name
    assert len(name) == 253
    with pytest.raises(domain.InvalidDomain, match="at most 232 characters"):
        domain.domain_name("e." + longest)


@pytest.mark.parametrize("provider", ["gmail.com", "GMail.com.", "inbox.lv", "yahoo.co.uk"])
def test_a_mailbox_providers_domain_cannot_be_added(provider: str) -> None:
    with pytest.raises(domain.SenderRefused):
        domain.add_sending_domain("acme", domain.domain_name(provider), None, TOKEN)


@pytest.mark.parametrize(("sender", "verified", "covered_by"), [
    ("news@acme.example", {"acme.example"}, "acme.example"),
    ("news@mail.acme.example", {"acme.example"}, "acme.example"),  # relaxed alignment: a subdomain
    ("news@a.b.acme.example", {"acme.example", "b.acme.example"}, "b.acme.example"),  # the nearest
    ("news@evil-acme.example", {"acme.example"}, None),  # not by the name's end alone
    ("news@acme.example.evil.example", {"acme.example"}, None),
    ("news@acme.example", {"mail.acme.example"}, None),  # a verified subdomain says nothing of its parent
    ("news@acme.example", {"example"}, None),  # never a top-level domain alone
    ("news@Bücher.DE", {"xn--bcher-kva.de"}, "xn--bcher-kva.de"),  # compared as A-labels
    ("news@acme.example", set(), None),
])
def test_a_from_may_use_a_verified_domain_or_a_subdomain_of_one_and_nothing_else(
        sender: str, verified: set[str], covered_by: str | None) -> None:
    """Relaxed DMARC alignment (RFC 7489 3.1.1): the From domain or a parent of it, by whole labels."""
    assert domain.covering_domain(domain.from_domain(sender), verified) == covered_by
    senders = Senders(verified=frozenset(verified))
    draft = Draft(**{**DRAFT.__dict__, "from_email": sender})
    if covered_by is not None:
        assert domain.create("acme", "c1", draft, NEWS, None, senders=senders)
        return
    with pytest.raises(domain.SenderUnverified) as refused:
        domain.create("acme", "c1", draft, NEWS, None, senders=senders)
    assert refused.value.http_status == 422 and refused.value.errors == [("body.from_email", refused.value.detail)]
    assert domain.from_domain(sender) in refused.value.detail and "POST /v1/sending-domains" in refused.value.detail


def test_the_candidates_read_for_a_from_are_its_domain_and_its_parents() -> None:
    assert domain.sender_candidates("a@mail.news.acme.example") == [
        "mail.news.acme.example", "news.acme.example", "acme.example"]
    assert domain.sender_candidates("a@bücher.de") == ["xn--bcher-kva.de"]


def test_a_shared_domain_is_any_accounts_and_a_pending_one_is_named_with_its_record() -> None:
    shared = Senders(shared=frozenset({"herald-mail.example"}))
    assert domain.unverified_sender("acme@news.herald-mail.example", shared) is None
    pending = Senders(pending={"acme.example": TOKEN})
    reason = domain.unverified_sender("news@mail.acme.example", pending)
    assert reason is not None and "not verified yet" in reason
    assert f"_herald-verification.acme.example with the value \"herald-verification={TOKEN}\"" in reason
    assert "/v1/sending-domains/acme.example/verification" in reason


def test_an_unverified_from_names_the_platforms_shared_domains_as_the_way_that_needs_no_dns() -> None:
    """A new user's first campaign From their own domain is refused; the answer names what works at once (a
    review: the README's first example failed 422 and nothing said example.com, which scripts/run shares, would do)."""
    reason = domain.unverified_sender("news@acme.example", Senders(shared=frozenset({"b.example", "a.example"})))
    assert reason is not None and reason.endswith("; or send From the platform's shared domains a.example, b.example")
    one = domain.unverified_sender("news@acme.example", Senders(shared=frozenset({"a.example"})))
    assert one is not None and one.endswith("shared domain a.example")
    none = domain.unverified_sender("news@acme.example", Senders())
    assert none is not None and "shared" not in none


def test_every_check_of_a_campaign_refuses_an_unverified_from_and_the_provider_rule_comes_first() -> None:
    verified = Senders(verified=frozenset({"acme.example"}))
    [created] = domain.create("acme", "c1", DRAFT, NEWS, None, senders=verified)
    doc = domain.evolve(None, created, NOW)
    assert doc is not None
    state = domain.state_of(doc)
    nobody = Senders()
    for check in (lambda: domain.edit(state, "c1", DRAFT, NEWS, senders=nobody),
                  lambda: domain.testable(state, "c1", NEWS, senders=nobody),
                  lambda: domain.submittable(state, "c1", NEWS, senders=nobody)):
        with pytest.raises(domain.SenderUnverified):
            check()
    gmail = Senders(verified=frozenset({"gmail.com"}))  # (it could never be added: still refused as a provider's)
    with pytest.raises(domain.SenderRefused):
        domain.create("acme", "c2", Draft(**{**DRAFT.__dict__, "from_email": "a@gmail.com"}), NEWS, None,
                      senders=gmail)


def added(token: str = TOKEN, at: datetime = NOW) -> Event:
    [event] = domain.add_sending_domain("acme", "acme.example", None, token)
    return event.model_copy(update={"occurred_at": at})


def fold(*events: Event, doc: dict[str, Any] | None = None) -> dict[str, Any] | None:
    for event in events:
        doc = domain.evolve_sending_domain(doc, event)
    return doc


def answer(*texts: str, outcome: str = "answered", detail: str = "") -> DnsAnswer:
    return DnsAnswer("_herald-verification.acme.example", outcome, texts, detail)  # type: ignore[arg-type]


def test_a_domain_is_verified_by_its_own_tokens_record_among_others() -> None:
    doc = fold(added())
    assert doc is not None and (doc["status"], doc["token"], doc["verified_at"]) == ("pending", TOKEN, None)
    assert domain.awaiting_verification(doc)
    [verified] = domain.verify_sending_domain(doc, "acme.example", answer(
        "v=spf1 include:_spf.acme.example -all", f"  HERALD-verification={TOKEN.upper()} "))
    assert isinstance(verified, SendingDomainVerified)
    assert verified.payload.record == domain.verification_record("acme.example", TOKEN)
    later = verified.model_copy(update={"occurred_at": NOW + timedelta(minutes=5)})
    doc = fold(later, doc=doc)
    assert doc is not None and (doc["status"], doc["verified_at"]) == ("verified", NOW + timedelta(minutes=5))
    assert not domain.awaiting_verification(doc)
    assert domain.verify_sending_domain(doc, "acme.example", None) == []  # verified already: nothing to ask


@pytest.mark.parametrize(("dns", "said"), [
    (answer(outcome="no_domain"), "does not exist in DNS (NXDOMAIN)"),
    (answer(outcome="no_record"), "has no TXT record"),
    (answer("herald-verification=someoneelses", "v=spf1 -all"),
     '"herald-verification=someoneelses", "v=spf1 -all", and none is'),
    (answer(outcome="server_failure", detail="SERVFAIL: the domain's own name servers failed"), "SERVFAIL"),
])
def test_a_verification_dns_does_not_prove_is_a_conflict_saying_what_was_found(dns: DnsAnswer, said: str) -> None:
    doc = fold(added())
    with pytest.raises(domain.VerificationFailed) as failed:
        domain.verify_sending_domain(doc, "acme.example", dns)
    assert failed.value.http_status == 409 and said in failed.value.detail
    assert failed.value.record.name == "_herald-verification.acme.example" and failed.value.found == dns.texts


def test_dns_out_of_reach_is_a_503_and_an_unknown_domain_a_404() -> None:
    with pytest.raises(domain.DnsUnavailable) as away:
        domain.verify_sending_domain(fold(added()), "acme.example",
                                     answer(outcome="unreachable", detail="no answer within 5 s"))
    assert away.value.http_status == 503 and "no answer within 5 s" in away.value.detail
    with pytest.raises(domain.SendingDomainNotFound):
        domain.verify_sending_domain(None, "acme.example", None)
    with pytest.raises(domain.SendingDomainNotFound):
        domain.remove_sending_domain(None, "acme.example")
    with pytest.raises(domain.SendingDomainExists):
        domain.add_sending_domain("acme", "acme.example", fold(added()), TOKEN)


def test_the_fold_ignores_a_verification_of_an_earlier_token_and_forgets_a_removed_domain() -> None:
    first = added()
    [verified_first] = domain.verify_sending_domain(fold(first), "acme.example",
                                                    answer(f"herald-verification={TOKEN}"))
    [removed] = domain.remove_sending_domain(fold(first), "acme.example")
    second = added("z" * 26, NOW + timedelta(days=1))
    doc = fold(first, removed, second, verified_first)  # the first token's record proves nothing of the second
    assert doc is not None and (doc["token"], doc["status"]) == ("z" * 26, "pending")
    assert fold(first, verified_first, removed) is None
    assert domain.senders_of([fold(first, verified_first), {**doc, "domain": "shop.example"}],  # type: ignore[list-item]
                             frozenset({"herald.example"})) == Senders(
        verified=frozenset({"acme.example"}), shared=frozenset({"herald.example"}),
        pending={"shop.example": "z" * 26})


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    """What the API decides for one domain over time: additions (each a new token), verifications (DNS holding
    the record) and removals, in any order the rules allow."""
    events: list[Event] = []
    doc: dict[str, Any] | None = None
    for step, command in enumerate(draw(st.lists(st.sampled_from(["add", "verify", "remove"]), max_size=12))):
        at = NOW + timedelta(minutes=step)
        try:
            if command == "add":
                decided = domain.add_sending_domain("acme", "acme.example", doc, f"{step:02d}" + "t" * 24)
            elif command == "verify":
                token = doc["token"] if doc is not None else TOKEN
                decided = domain.verify_sending_domain(doc, "acme.example", answer(f"herald-verification={token}"))
            else:
                decided = domain.remove_sending_domain(doc, "acme.example")
        except domain.CampaignError:
            continue
        for event in decided:
            event = event.model_copy(update={"occurred_at": at})
            events.append(event)
            doc = domain.evolve_sending_domain(doc, event)
    return events


@given(histories(), st.data())
def test_a_batch_folded_again_after_a_crash_changes_nothing(events: list[Event], data: st.DataObject) -> None:
    """At-least-once: the events after the last committed offset are folded again onto what was stored."""
    stored = fold(*events)
    committed = data.draw(st.integers(0, len(events)))
    assert fold(*events[committed:], doc=stored) == stored


def scheduled() -> dict[str, Any]:
    senders = Senders(verified=frozenset({"acme.example"}))
    [created] = domain.create("acme", "c1", DRAFT, NEWS, None, senders=senders)
    doc = domain.evolve(None, created, NOW)
    assert doc is not None
    paid = domain.AccountInfo("acme", opened=True, approved=True, plan="monthly")
    [submitted] = domain.submit(domain.state_of(doc), "c1", NEWS, paid, Screening((), ()),
                                NOW + timedelta(hours=1), None, NOW, "api", senders=senders)
    doc = domain.evolve(doc, submitted, NOW)
    assert doc is not None and doc["status"] == "scheduled"
    return doc


def test_a_campaign_whose_domain_was_removed_goes_back_to_its_author_at_its_time_not_to_delivery() -> None:
    doc = scheduled()
    state, due = domain.state_of(doc), NOW + timedelta(hours=1)
    [queued] = domain.queue(state, due, senders=Senders(verified=frozenset({"acme.example"})), lst=NEWS)
    assert isinstance(queued, CampaignQueued)
    assert domain.queue(state, due, senders=Senders(shared=frozenset({"acme.example"})), lst=NEWS) != []
    [returned] = domain.queue(state, due, senders=Senders(), lst=NEWS)
    assert isinstance(returned, CampaignReturned) and returned.payload.reason == "sender_unverified"
    assert "acme.example" in returned.payload.detail and "submit it again" in returned.payload.detail
    back = domain.evolve(doc, returned, due)
    assert back is not None and (back["status"], back["send_at"]) == ("draft", None)
    assert back["returned"] == {"reason": "sender_unverified", "detail": returned.payload.detail, "at": due}
    assert domain.queue(domain.state_of(back), due, senders=Senders(), lst=NEWS) == []  # a draft is not due
    assert domain.evolve(back, returned, due) is back  # only a scheduled campaign goes back


def test_settings_refuse_a_shared_domain_or_a_name_server_that_is_none() -> None:
    assert domain.shared_domains(" Bakery.example.com, herald-mail.example ,") == frozenset({
        "bakery.example.com", "herald-mail.example"})
    with pytest.raises(ValueError, match="not a domain"):
        CampaignsSettings(HERALD_CAMPAIGNS_SHARED_SENDING_DOMAINS="example.com,not_a domain")
    with pytest.raises(ValueError, match="IP address"):
        CampaignsSettings(HERALD_DNS_NAMESERVERS="dns.example")
    assert parse_nameservers("192.0.2.53, 192.0.2.54:5353,[2001:db8::53]:53, 2001:db8::54,") == [
        ("192.0.2.53", 53), ("192.0.2.54", 5353), ("2001:db8::53", 53), ("2001:db8::54", 53)]
    for wrong in ("192.0.2.53:99999", "[2001:db8::53", "192.0.2.53:dns"):
        with pytest.raises(ValueError):
            parse_nameservers(wrong)
