"""What stops test sends: an address that used a test's unsubscribe link gets no more tests from the account, and
an account sends at most its limit of test messages in any 24 hours, counted from the requests the store keeps
(README, "Test sends")."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from herald_campaigns import domain
from herald_shared.links import UNSUBSCRIBE_SALT, LinkSigner, TokenWriter

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SECRET = "a secret of sixteen characters"


def sha(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()


def test_an_address_that_opted_out_of_tests_refuses_the_whole_test_naming_it() -> None:
    domain.check_test_opt_outs(["me@acme.example", "stranger@example.net"], {sha("other@example.net")})
    with pytest.raises(domain.TestRecipientOptedOut) as raised:
        domain.check_test_opt_outs(["me@acme.example", "Stranger@Example.NET"], {sha("stranger@example.net")})
    assert raised.value.code == "test_recipient_opted_out" and raised.value.http_status == 422
    assert raised.value.refused == ["Stranger@Example.NET"]
    assert raised.value.errors == [("body.recipients",
                                    "Stranger@Example.NET: asked for no more test messages from this account")]


def test_a_recipient_is_hashed_as_the_contract_hashes_an_address() -> None:
    assert domain.recipient_sha256("Anna@Example.COM") == sha("anna@example.com")


def test_tests_fit_until_the_limit_and_then_wait_for_the_oldest_to_leave_the_day() -> None:
    earlier = [(NOW - timedelta(hours=20), 30), (NOW - timedelta(hours=2), 15)]
    domain.check_test_room(earlier, 5, 50, NOW)  # 45 + 5: exactly the limit
    with pytest.raises(domain.TestSendsExhausted) as raised:
        domain.check_test_room(earlier, 6, 50, NOW)
    assert raised.value.http_status == 429 and "5 left of 50" in raised.value.detail
    assert raised.value.retry_after == 4 * 3600  # the 30 of 20 hours ago leave in 4 hours
    with pytest.raises(domain.TestSendsExhausted) as raised:
        domain.check_test_room([*earlier, (NOW - timedelta(minutes=1), 5)], 1, 50, NOW)
    assert raised.value.retry_after == 4 * 3600


def test_tests_of_more_than_a_day_ago_count_nothing_and_a_clock_ahead_counts() -> None:
    domain.check_test_room([(NOW - timedelta(days=1), 50), (NOW - timedelta(days=3), 50)], 5, 50, NOW)
    with pytest.raises(domain.TestSendsExhausted) as raised:
        domain.check_test_room([(NOW + timedelta(seconds=2), 48)], 5, 50, NOW)  # another replica's clock
    assert raised.value.retry_after == 24 * 3600 + 2


def test_a_test_larger_than_the_limit_waits_a_day() -> None:
    with pytest.raises(domain.TestSendsExhausted) as raised:
        domain.check_test_room([], 5, 3, NOW)
    assert raised.value.retry_after == 24 * 3600


def test_a_test_link_names_its_recipient_by_hash_and_an_older_one_reads_without() -> None:
    links = LinkSigner(SECRET, "http://subs.test")
    hashed = domain.recipient_sha256("stranger@example.net")
    url = links.unsubscribe_url("acme", "test:t1", "c1", "m1", test=True, recipient_sha256=hashed)
    claim = links.read_unsubscribe(url.rsplit("/", 1)[1])
    assert claim.test and claim.recipient_sha256 == hashed and claim.subscriber_id == "test:t1"
    older = links.unsubscribe_url("acme", "test:t1", "c1", "m1", test=True)
    assert links.read_unsubscribe(older.rsplit("/", 1)[1]).recipient_sha256 is None
    # Only a test's claim names a recipient, and only as a hash.
    writer = TokenWriter(SECRET, UNSUBSCRIBE_SALT, timed=True)
    not_a_test = writer.dumps({"a": "acme", "s": "s1", "c": None, "m": None, "r": hashed})
    assert links.read_unsubscribe(not_a_test).recipient_sha256 is None
    not_a_hash = writer.dumps({"a": "acme", "s": "test:t1", "c": None, "m": None, "t": 1, "r": "x@example.net"})
    assert links.read_unsubscribe(not_a_hash).recipient_sha256 is None
