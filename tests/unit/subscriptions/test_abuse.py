"""Subscription bombing and forged form posts (issue 20, SECURITY.md), as pure rules: the daily confirmation caps,
the form screen, the form token, the cross-site check, the proof of work and the pages' security headers."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta

import bson
import pytest
from bson.codec_options import CodecOptions

from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    ConsentEvidence,
    ListFormConfigured,
    SubscriberAdded,
)
from herald_subscriptions import domain
from herald_subscriptions.domain import ConfirmationsSent, ConfirmLink, ListState, MemberState, SubscribeRequest
from herald_subscriptions.forms import STYLE, FormTokens, ProofOfWork, Quota, cross_site, page_headers, solve
from herald_subscriptions.handlers import RecentConfirmations

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
DAY = timedelta(hours=24)
CONSENT = ConsentEvidence(source="form", collected_at=NOW, method="hosted form")
LINK = ConfirmLink("https://herald.example/confirm/token", NOW + timedelta(days=7))
DOUBLE = ListState("acc", "l1", "News", "double", {})
ANNA = domain.email_sha256("anna@example.com")


def form_request() -> SubscribeRequest:
    return SubscribeRequest(email="anna@example.com", consent=CONSENT, channel="form")


def decide(member: MemberState | None, sent: ConfirmationsSent) -> domain.Decision:
    return domain.subscribe(DOUBLE, member, False, form_request(), "Acme", lambda: LINK, sent, NOW)


def test_one_confirmation_per_address_and_list_a_day() -> None:
    pending = MemberState("s1", "l1", ANNA, "pending", True, confirmation_requested_at=NOW - timedelta(hours=1))
    again = decide(pending, ConfirmationsSent(pending.confirmation_requested_at, (NOW - timedelta(hours=1),)))
    assert (again.events, again.outcome, again.confirmation_withheld) == ([], "already_pending", True)

    next_day = NOW - DAY - timedelta(seconds=1)
    later = decide(MemberState("s1", "l1", ANNA, "pending", True, next_day), ConfirmationsSent(next_day, (next_day,)))
    assert [e.type for e in later.events] == ["ConfirmationRequested"] and not later.confirmation_withheld


def test_a_few_confirmations_per_address_across_an_accounts_lists_a_day() -> None:
    other_lists = tuple(NOW - timedelta(minutes=m) for m in (30, 20, 10))
    assert len(other_lists) == domain.CONFIRMATIONS_PER_ADDRESS_PER_DAY
    capped = decide(None, ConfirmationsSent(None, other_lists))
    # The membership is recorded (pending, as the person asked) but no email goes out.
    assert [e.type for e in capped.events] == ["SubscriberAdded"]
    assert (capped.outcome, capped.confirmation_withheld) == ("pending", True)

    one_expired = (NOW - DAY - timedelta(minutes=1), *other_lists[1:])
    sent = decide(None, ConfirmationsSent(None, one_expired))
    assert [e.type for e in sent.events] == ["SubscriberAdded", "ConfirmationRequested"]


def test_single_opt_in_reads_no_confirmation_history() -> None:
    single = ListState("acc", "l1", "News", "single", {})
    assert not domain.needs_confirmation_history(single, None, False)
    assert domain.needs_confirmation_history(single, None, True)  # suppressed: only a fresh double opt-in
    assert domain.needs_confirmation_history(single, MemberState("s1", "l1", ANNA, "unsubscribed"), False)
    assert domain.needs_confirmation_history(DOUBLE, None, False)


def test_the_address_document_keeps_the_last_confirmations_once_each() -> None:
    added = SubscriberAdded(producer="subscriptions", account_id="acc", payload={  # type: ignore[arg-type]
        "list_id": "l1", "subscriber_id": "s1", "email": "anna@example.com", "email_sha256": ANNA,
        "opt_in": "double", "consent": CONSENT})
    doc = domain.evolve_address(None, added)
    for minute in range(5):
        requested = ConfirmationRequested(producer="subscriptions", account_id="acc", payload={  # type: ignore[arg-type]
            "list_id": "l1", "subscriber_id": "s1", "email": "anna@example.com", "list_name": "News",
            "company_name": "Acme", "confirm_url": "https://h.example/confirm/t", "expires_at": NOW},
            occurred_at=NOW + timedelta(minutes=minute))
        assert domain.address_hash(requested) == ANNA
        doc = domain.evolve_address(doc, requested)
        assert domain.evolve_address(doc, requested) is doc  # a redelivery changes nothing
    assert doc is not None and doc["members"] == ["s1"]
    assert doc["confirmations"] == [NOW + timedelta(minutes=m) for m in (2, 3, 4)]
    assert domain.evolve_address(doc, added)["confirmations"] == doc["confirmations"]  # type: ignore[index]


def screen(**overrides: object) -> str:
    arguments: dict[str, object] = {"cross_site": False, "served_at": NOW - timedelta(seconds=10), "now": NOW,
                                    "honeypot": "", "min_fill": timedelta(seconds=3), "challenge_passed": None}
    return domain.screen_form(**{**arguments, **overrides})  # type: ignore[arg-type]


def test_the_form_screen() -> None:
    assert screen() == "accept"
    assert screen(cross_site=True) == "cross_site"
    assert screen(served_at=None) == "no_token"
    assert screen(served_at=NOW - domain.FORM_VALIDITY - timedelta(seconds=1)) == "no_token"
    assert screen(served_at=NOW + timedelta(minutes=5)) == "no_token"  # from the future: not ours
    assert screen(honeypot="https://spam.example") == "honeypot"
    assert screen(served_at=NOW - timedelta(seconds=2)) == "too_fast"
    assert screen(served_at=NOW - timedelta(seconds=2), min_fill=None) == "accept"  # only the subscribe form
    assert screen(challenge_passed=False) == "challenge"
    assert screen(challenge_passed=True) == "accept"
    # Forgery is answered first, whatever else the post holds.
    assert screen(cross_site=True, honeypot="x", served_at=None) == "cross_site"
    assert set(domain.SILENT_VERDICTS) == {"honeypot", "too_fast"}


def test_form_tokens_are_bound_to_their_path_and_time() -> None:
    tokens = FormTokens("a-secret-of-enough-length")
    token = tokens.issue("/subscribe/acc/l1", NOW)
    assert tokens.served_at("/subscribe/acc/l1", token) == NOW
    assert tokens.served_at("/subscribe/acc/l2", token) is None  # another form's
    assert FormTokens("another-secret-entirely").served_at("/subscribe/acc/l1", token) is None
    assert tokens.served_at("/subscribe/acc/l1", token[:-2] + "xx") is None
    assert tokens.served_at("/subscribe/acc/l1", "") is None
    assert tokens.served_at("/subscribe/acc/l1", "é.ü") is None


@pytest.mark.parametrize(("headers", "refused"), [
    ({}, False),  # no browser's cross-site post
    ({"sec-fetch-site": "same-origin"}, False),
    ({"sec-fetch-site": "none"}, False),  # typed or bookmarked
    ({"sec-fetch-site": "cross-site"}, True),
    ({"sec-fetch-site": "same-site"}, True),  # a sibling subdomain is another site's page too
    ({"origin": "https://lists.herald.example"}, False),
    ({"origin": "https://evil.example"}, True),
    ({"origin": "null"}, True),
    ({"sec-fetch-site": "cross-site", "origin": "https://lists.herald.example"}, True),
])
def test_cross_site_posts(headers: dict[str, str], refused: bool) -> None:
    assert cross_site(headers, {"https://lists.herald.example"}) is refused


def test_the_proof_of_work_is_checked_and_not_reusable() -> None:
    pow_ = ProofOfWork("a-secret-of-enough-length", bits=8)
    challenge = re.search(r'name="challenge" value="([^"]+)"', pow_.fields())
    assert challenge is not None
    nonce = solve(challenge[1], 8)
    assert pow_.passed(challenge[1], nonce)
    assert not pow_.passed(challenge[1], nonce)  # used
    forged = "made-up." + challenge[1].split(".")[-1]
    assert not pow_.passed(forged, solve(forged, 8))
    unsolved = re.search(r'name="challenge" value="([^"]+)"', pow_.fields())
    assert unsolved is not None
    wrong = next(str(n) for n in range(1000) if hashlib.sha256(f"{unsolved[1]}:{n}".encode()).digest()[0] != 0)
    assert not pow_.passed(unsolved[1], wrong)


def test_quota_counts_every_post_in_its_window() -> None:
    quota = Quota(3, timedelta(minutes=10))
    assert [quota.take("ip", NOW + timedelta(seconds=s)) for s in range(3)] == [0, 0, 0]
    wait = quota.take("ip", NOW + timedelta(seconds=3))
    assert wait == pytest.approx(597)
    assert quota.take("other", NOW) == 0
    assert quota.take("ip", NOW + timedelta(minutes=10, seconds=1)) == 0


def test_security_headers() -> None:
    plain = page_headers()
    policy = plain["Content-Security-Policy"]
    style_hash = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    assert f"style-src 'sha256-{style_hash}'" in policy
    assert "default-src 'none'" in policy and "script-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "form-action 'self'" in policy and plain["X-Frame-Options"] == "DENY"
    assert plain["Referrer-Policy"] == "no-referrer"
    framed = page_headers(("https://www.example.com", "https://*.example.org"), script=True)
    assert "frame-ancestors https://www.example.com https://*.example.org" in framed["Content-Security-Policy"]
    assert "script-src 'self'" in framed["Content-Security-Policy"] and "X-Frame-Options" not in framed


def test_configuring_the_form() -> None:
    events = domain.configure_form(DOUBLE, ["https://WWW.example.com/", "https://www.example.com"], "proof_of_work")
    assert [type(e) for e in events] == [ListFormConfigured]
    payload = events[0].payload
    assert (payload.frame_ancestors, payload.challenge) == (["https://www.example.com"], "proof_of_work")
    configured = ListState("acc", "l1", "News", "double", {}, frame_ancestors=("https://www.example.com",),
                           form_challenge="proof_of_work")
    assert domain.configure_form(configured, ["https://www.example.com"], "proof_of_work") == []
    with pytest.raises(domain.ListNotFound):
        domain.configure_form(None, [], "none")


def test_a_redelivered_confirmation_is_recognised_after_the_store_kept_milliseconds() -> None:
    """MongoDB keeps milliseconds: the copy of an event folded again after its document was written and read
    back (a crash between writes, a redelivery) must not count twice."""
    added = SubscriberAdded(producer="subscriptions", account_id="acc", payload={  # type: ignore[arg-type]
        "list_id": "l1", "subscriber_id": "s1", "email": "anna@example.com", "email_sha256": ANNA,
        "opt_in": "double", "consent": CONSENT})
    requested = ConfirmationRequested(producer="subscriptions", account_id="acc", payload={  # type: ignore[arg-type]
        "list_id": "l1", "subscriber_id": "s1", "email": "anna@example.com", "list_name": "News",
        "company_name": "Acme", "confirm_url": "https://h.example/confirm/t", "expires_at": NOW},
        occurred_at=NOW + timedelta(microseconds=712_345))
    folded = domain.evolve_address(domain.evolve_address(None, added), requested)
    stored = bson.decode(bson.encode(folded), codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))
    assert domain.evolve_address(stored, requested) is stored
    assert stored["confirmations"] == [NOW + timedelta(microseconds=712_000)]


def test_this_process_remembers_the_confirmations_it_decided_until_the_read_model_has_them() -> None:
    recent = RecentConfirmations(max_addresses=2)
    recent.add("acc", ANNA, NOW - timedelta(hours=1))
    stored = (NOW - timedelta(hours=1), NOW - timedelta(hours=2))
    assert recent.merged("acc", ANNA, stored, NOW) == (NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    # What this process decided and the read model holds are one confirmation, though the store kept milliseconds.
    decided = NOW + timedelta(microseconds=712_345)
    recent.add("acc", ANNA, decided)
    assert recent.merged("acc", ANNA, (NOW + timedelta(microseconds=712_000),), decided) == (
        NOW - timedelta(hours=1), NOW + timedelta(microseconds=712_000))
    assert recent.merged("acc", ANNA, (), NOW + DAY + timedelta(seconds=1)) == ()  # a day later: gone
    assert recent.merged("other", ANNA, (), NOW) == ()
    recent.add("b", ANNA, NOW)
    recent.add("c", ANNA, NOW)  # bounded: the least recently used address is forgotten
    assert recent.merged("acc", ANNA, (), NOW) == ()
