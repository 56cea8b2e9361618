"""A test send's unsubscribe link is marked in its signed claim, not by the subscriber id it names: a subscriber
whose id reads like a test's (`test:...` is a valid Identifier) keeps a link that unsubscribes them."""

from __future__ import annotations

from herald_shared.links import LinkSigner

LINKS = LinkSigner("a secret of sixteen characters", "http://subs.test")


def read(url: str) -> object:
    return LINKS.read_unsubscribe(url.rsplit("/", 1)[1])


def test_only_a_link_written_for_a_test_reads_as_a_tests() -> None:
    tests = read(LINKS.unsubscribe_url("acme", "test:t1", "c1", "m1", test=True))
    assert tests.test is True  # type: ignore[attr-defined]
    lookalike = read(LINKS.unsubscribe_url("acme", "test:t1", "c1", "m1"))
    assert lookalike.test is False and lookalike.subscriber_id == "test:t1"  # type: ignore[attr-defined]
    assert read(LINKS.unsubscribe_url("acme", "s1")).test is False  # type: ignore[attr-defined]
