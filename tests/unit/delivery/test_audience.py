"""Delivery's own view of a list's members, folded from herald.subscriptions (PRODUCT.md "Every message":
only confirmed, non-suppressed members receive campaigns; a suppression covers the address account-wide)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from herald_delivery.domain import evolve_audience_address, evolve_audience_member
from herald_shared.contract.subscriptions import (
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)

HASH = hashlib.sha256(b"ann@example.com").hexdigest()
T_ERASED = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def added(subscriber_id: str = "s1", list_id: str = "news") -> SubscriberAdded:
    return SubscriberAdded(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "email": "ann@example.com", "email_sha256": HASH,
        "first_name": "Ann", "opt_in": "single",
        "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "form"}})


def member_after(*events: Any) -> dict[str, Any] | None:
    doc = None
    for event in events:
        doc = evolve_audience_member(doc, event)
    return doc


def confirmed() -> SubscriberConfirmed:
    return SubscriberConfirmed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": "s1", "method": "single_opt_in"})


def suppressed() -> SubscriberSuppressed:
    return SubscriberSuppressed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "subscriber_id": "s1", "email_sha256": HASH, "reason": "hard_bounce"})


def test_a_member_is_active_only_once_confirmed() -> None:
    assert member_after(added())["status"] == "pending"  # type: ignore[index]
    doc = member_after(added(), confirmed())
    assert doc is not None and doc["status"] == "active" and doc["email"] == "ann@example.com"
    assert doc["first_name"] == "Ann" and doc["list_id"] == "news"


def test_events_about_a_member_never_seen_create_nothing() -> None:
    assert member_after(confirmed()) is None
    assert member_after(suppressed()) is None


def test_unsubscribe_and_suppression_stop_sending() -> None:
    unsubscribed = SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": "s1", "source": "one_click"})
    assert member_after(added(), confirmed(), unsubscribed)["status"] == "unsubscribed"  # type: ignore[index]
    assert member_after(added(), confirmed(), suppressed())["status"] == "suppressed"  # type: ignore[index]


def test_a_confirmation_after_a_suppression_or_an_unsubscribe_makes_no_one_active() -> None:
    """As subscriptions' fold has it: a confirmation that lost a race with a suppression (or an unsubscribe)
    stays without effect, so delivery never mails an address subscriptions holds suppressed. Someone who
    unsubscribed and is added again is pending until their own double opt-in; a re-add keeps a suppression
    (test_audience_mirrors_subscriptions)."""
    unsubscribed = SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": "s1", "source": "one_click"})
    assert member_after(added(), suppressed(), confirmed())["status"] == "suppressed"  # type: ignore[index]
    assert member_after(added(), unsubscribed, confirmed())["status"] == "unsubscribed"  # type: ignore[index]
    # Added again by another producer with a single opt-in: pending, not mailed (only their double opt-in counts).
    assert member_after(added(), unsubscribed, added(), confirmed())["status"] == "pending"  # type: ignore[index]
    assert member_after(added(), suppressed(), added(), confirmed())["status"] == "suppressed"  # type: ignore[index]


def test_a_suppression_reaches_every_membership_but_an_erased_one() -> None:
    """As in subscriptions: an unsubscribed membership becomes suppressed too, so a re-add of it stays suppressed."""
    active = member_after(added(), confirmed())
    assert evolve_audience_member(active, suppressed())["status"] == "suppressed"  # type: ignore[index]
    unsubscribed = {**active, "status": "unsubscribed"}  # type: ignore[dict-item]
    assert evolve_audience_member(unsubscribed, suppressed())["status"] == "suppressed"  # type: ignore[index]
    gone = {**active, "status": "erased", "email": None}  # type: ignore[dict-item]
    assert evolve_audience_member(gone, suppressed()) is gone


def erased(subscriber_id: str = "s1") -> SubscriberErased:
    return SubscriberErased(account_id="acme", producer="subscriptions", occurred_at=T_ERASED,
                            payload={"subscriber_id": subscriber_id, "email_sha256": HASH,  # type: ignore[arg-type]
                                     "requested_by": "subscriber"})


def test_erasure_is_final_and_keeps_nothing_personal() -> None:
    """Not even the address's hash: anyone who knows the address makes it, and it led to the person's messages."""
    doc = member_after(added(), confirmed(), erased(), confirmed())
    assert doc == {"account_id": "acme", "subscriber_id": "s1", "list_id": "news", "email": None,
                   "status": "erased", "erased_at": T_ERASED}


def test_an_erased_membership_leaves_its_address_which_keeps_only_its_opt_out_and_when() -> None:
    """PRODUCT.md "Subject rights": nothing keyed by the address's hash names the erased membership any more; a
    suppression of the address and the person's opt-out (a test send is refused) outlive the erasure."""
    unsubscribed = SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": "s1", "source": "one_click"})
    member = member_after(added(), confirmed(), unsubscribed, erased())
    address = evolve_audience_address(evolve_audience_address(None, added("s1")), added("s2", "offers"))
    address = evolve_audience_address(address, erased(), member)
    assert address == {"account_id": "acme", "members": ["s2"], "opted_out": True, "erased_at": T_ERASED}
    address = evolve_audience_address(address, suppressed())
    assert address == {"account_id": "acme", "members": ["s2"], "suppressed": True, "opted_out": True,
                       "erased_at": T_ERASED}
    assert evolve_audience_address(address, added("s1")) == {**address, "members": ["s2", "s1"]}


def test_an_id_added_again_after_its_erasure_remembers_when_so_the_old_messages_stay_out_of_its_look_ups() -> None:
    doc = member_after(added(), confirmed(), erased(), added(), confirmed())
    assert doc is not None and doc["status"] == "active" and doc["erased_at"] == T_ERASED


def test_an_address_remembers_each_of_its_memberships_once() -> None:
    doc = evolve_audience_address(None, added("s1"))
    doc = evolve_audience_address(doc, added("s2", "offers"))
    doc = evolve_audience_address(doc, added("s1"))
    assert doc == {"account_id": "acme", "members": ["s1", "s2"]}
