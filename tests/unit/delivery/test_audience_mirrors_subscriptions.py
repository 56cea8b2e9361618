"""Delivery's audience fold and subscriptions' member fold give a membership the same status for the same events
(PRODUCT.md "Every message": a campaign goes only to confirmed, non-suppressed subscribers; a suppressed address
comes back only by the person's own double opt-in), and an address the account suppressed is not mailed under a
membership another producer adds later."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald_delivery.domain import evolve_audience_address, evolve_audience_member
from herald_shared.contract import Event
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)
from herald_subscriptions.domain import evolve_address as subscriptions_address
from herald_subscriptions.domain import evolve_member

BOB = "bob@example.org"
HASH = hashlib.sha256(BOB.encode()).hexdigest()


def added(subscriber_id: str = "s1", list_id: str = "news", producer: str = "crm") -> SubscriberAdded:
    return SubscriberAdded(account_id="acme", producer=producer, payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "email": BOB, "email_sha256": HASH, "opt_in": "single",
        "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "CRM sync"}})


def requested(subscriber_id: str = "s1", list_id: str = "news") -> ConfirmationRequested:
    return ConfirmationRequested(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "email": BOB, "list_name": "News",
        "company_name": "Acme", "confirm_url": "https://subs.example/confirm/t",
        "expires_at": "2026-11-08T00:00:00Z"})


def confirmed(method: str, subscriber_id: str = "s1", list_id: str = "news") -> SubscriberConfirmed:
    return SubscriberConfirmed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "method": method})


def unsubscribed() -> SubscriberUnsubscribed:
    return SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": "s1", "source": "one_click"})


def suppressed(subscriber_id: str = "s1") -> SubscriberSuppressed:
    return SubscriberSuppressed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "subscriber_id": subscriber_id, "email_sha256": HASH, "reason": "complaint"})


def erased() -> SubscriberErased:
    return SubscriberErased(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "subscriber_id": "s1", "list_id": "news", "email_sha256": HASH, "requested_by": "subscriber"})


EVENTS: dict[str, Callable[[], Event]] = {
    "added": added, "requested": requested, "single": lambda: confirmed("single_opt_in"),
    "double": lambda: confirmed("double_opt_in"), "unsubscribed": unsubscribed, "suppressed": suppressed,
    "erased": erased}


def statuses(names: list[str]) -> tuple[list[str | None], list[str | None]]:
    """The membership's status after each event: (delivery's, subscriptions')."""
    ours: dict[str, Any] | None = None
    theirs: dict[str, Any] | None = None
    seen: tuple[list[str | None], list[str | None]] = ([], [])
    for name in names:
        event: Event = EVENTS[name]()
        ours = evolve_audience_member(ours, event)
        theirs = evolve_member(theirs, event)
        seen[0].append(ours["status"] if ours else None)
        seen[1].append(theirs["status"] if theirs else None)
    return seen


@pytest.mark.parametrize(("events", "final"), [
    ("added single", "active"),
    ("added requested double", "active"),
    # s2 (a): a complaint suppresses bob; a CRM re-adds him under his id and confirms by single opt-in.
    ("added single suppressed added single", "suppressed"),
    ("added single suppressed added requested single", "suppressed"),  # a producer's single opt-in lifts nothing
    ("added single suppressed added requested double", "active"),  # the person's own double opt-in
    ("added single suppressed requested suppressed double", "suppressed"),  # a new suppression ends the wait
    ("added single suppressed single", "suppressed"),
    ("added single unsubscribed added", "pending"),  # coming back after unsubscribing starts again as pending
    ("added single unsubscribed added single", "pending"),  # a CRM re-adding an opt-out: not mailed
    ("added single unsubscribed added requested double", "active"),  # the person's own double opt-in
    ("added single unsubscribed single", "unsubscribed"),  # a confirmation that lost the race changes nothing
    ("added single unsubscribed suppressed added single", "suppressed"),  # the suppression reached the opt-out
    ("added suppressed unsubscribed", "suppressed"),  # suppressed stays suppressed
    ("added single suppressed erased added single", "pending"),  # the suppression outlives the erasure
    ("added single unsubscribed erased added single", "pending"),
    ("added single suppressed erased added requested double", "active"),
    ("added requested suppressed added single", "suppressed"),
    ("added single added", "active"),  # a re-add of an active member keeps it active
])
def test_delivery_folds_a_membership_to_the_status_subscriptions_folds_it_to(events: str, final: str) -> None:
    ours, theirs = statuses(events.split())
    assert ours == theirs
    assert ours[-1] == final


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(sorted(EVENTS)), max_size=10))
def test_any_sequence_of_one_membership_s_events_folds_to_the_same_status_in_both(names: list[str]) -> None:
    ours, theirs = statuses(["added", *names])  # a membership begins with its SubscriberAdded
    assert ours == theirs


def address_after(*events: SubscriberAdded | SubscriberSuppressed) -> dict[str, Any] | None:
    doc = None
    for event in events:
        doc = evolve_audience_address(doc, event)
    return doc


def test_the_address_remembers_that_the_account_suppressed_it_and_never_forgets() -> None:
    assert "suppressed" not in address_after(added("s1"), added("s2", "other"))  # type: ignore[operator]
    doc = address_after(added("s1"), suppressed("s1"), added("s2", "other"), added("s1"))
    assert doc == {"account_id": "acme", "members": ["s1", "s2"], "suppressed": True}
    # A suppression of an address none of whose memberships delivery holds (erased, or another producer's id).
    assert address_after(suppressed("gone")) == {"account_id": "acme", "members": [], "suppressed": True}


def crm_membership(*events: Event) -> dict[str, Any] | None:
    """A membership added after the account suppressed its address (s2 (b): a new id on another list)."""
    doc = None
    for event in events:
        doc = evolve_audience_member(doc, event, address_suppressed=True)
    return doc


def test_a_membership_added_under_a_new_id_for_a_suppressed_address_starts_suppressed() -> None:
    doc = crm_membership(added("crm-bob-2", "crm"), confirmed("single_opt_in", "crm-bob-2", "crm"))
    assert doc is not None and doc["status"] == "suppressed"


def test_only_the_person_s_double_opt_in_makes_that_membership_active() -> None:
    doc = crm_membership(added("crm-bob-2", "crm"), requested("crm-bob-2", "crm"),
                         confirmed("double_opt_in", "crm-bob-2", "crm"))
    assert doc is not None and doc["status"] == "active"
    # Once active by the person's opt-in, a re-add (a CRM updating the profile) keeps it active.
    readded = evolve_audience_member(doc, added("crm-bob-2", "crm"), address_suppressed=True)
    assert readded is not None and readded["status"] == "active"


def test_a_new_membership_of_a_suppressed_address_after_an_erasure_of_the_same_id_starts_suppressed() -> None:
    """Erasure forgets the person, not the suppression (subscriptions keeps its record of the address)."""
    doc = None
    for event in (added(), confirmed("single_opt_in"), suppressed(), erased()):
        doc = evolve_audience_member(doc, event)
    for event in (added(), confirmed("single_opt_in")):
        doc = evolve_audience_member(doc, event, address_suppressed=True)
    assert doc is not None and doc["status"] == "suppressed"


def statuses_of_a_suppressed_address(names: list[str]) -> tuple[list[str | None], list[str | None]]:
    """As `statuses`, for a membership added after the account suppressed its address (a CRM's new id)."""
    suppression = subscriptions_address(None, suppressed("s-old"))
    ours: dict[str, Any] | None = None
    theirs: dict[str, Any] | None = None
    seen: tuple[list[str | None], list[str | None]] = ([], [])
    for name in names:
        event: Event = EVENTS[name]()
        ours = evolve_audience_member(ours, event, address_suppressed=True)
        theirs = evolve_member(theirs, event, address=suppression if isinstance(event, SubscriberAdded) else None)
        seen[0].append(ours["status"] if ours else None)
        seen[1].append(theirs["status"] if theirs else None)
    return seen


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(sorted(EVENTS)), max_size=10))
def test_a_membership_of_a_suppressed_address_folds_to_the_same_status_in_both(names: list[str]) -> None:
    ours, theirs = statuses_of_a_suppressed_address(["added", *names])
    assert ours == theirs
    assert ours[0] == "suppressed"  # never sendable before the person's double opt-in


def test_subscriptions_keeps_the_account_s_suppression_on_the_address_and_a_new_membership_starts_suppressed() -> None:
    address = subscriptions_address(None, suppressed("s-old"))
    assert address is not None and address["suppressed_reason"] == "complaint" and address["members"] == []
    again = subscriptions_address(address, added("crm-bob", "crm"))
    assert again is not None and again["suppressed_at"] == address["suppressed_at"] and again["members"] == ["crm-bob"]
    crm = evolve_member(None, added("crm-bob", "crm"), address=again)
    assert crm is not None and (crm["status"], crm["suppressed_reason"]) == ("suppressed", "complaint")
    single = evolve_member(crm, confirmed("single_opt_in", "crm-bob", "crm"))
    assert single is not None and single["status"] == "suppressed"
    asked = evolve_member(crm, requested("crm-bob", "crm"))
    opted_in = evolve_member(asked, confirmed("double_opt_in", "crm-bob", "crm"))
    assert opted_in is not None and opted_in["status"] == "active"
