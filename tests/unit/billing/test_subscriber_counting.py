"""Which list memberships count toward the trial's 20 subscribers and the tier's limit (PRODUCT.md: "With double
opt-in the address stays inactive until the person confirms"): from when each is active, then in any status until
erased; a pending one nobody confirmed never counts (anyone may post addresses to a list's public form)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from herald_billing import domain
from herald_shared.contract import Event
from herald_shared.contract.subscriptions import (
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberUnsubscribed,
)

AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
HASH = "0" * 64


def added(opt_in: str) -> SubscriberAdded:
    return SubscriberAdded.model_validate({"account_id": "a1", "producer": "subscriptions", "occurred_at": AT,
                                           "payload": {"list_id": "news", "subscriber_id": "s1",
                                                       "email": "person@example.net", "email_sha256": HASH,
                                                       "opt_in": opt_in, "consent": {
                                                           "source": "form", "method": "web form",
                                                           "collected_at": AT.isoformat()}}})


def confirmed(method: str = "double_opt_in") -> SubscriberConfirmed:
    return SubscriberConfirmed.model_validate({"account_id": "a1", "producer": "subscriptions", "occurred_at": AT,
                                               "payload": {"list_id": "news", "subscriber_id": "s1",
                                                           "method": method}})


def erased() -> SubscriberErased:
    return SubscriberErased.model_validate({"account_id": "a1", "producer": "subscriptions", "occurred_at": AT,
                                            "payload": {"subscriber_id": "s1", "list_id": "news",
                                                        "email_sha256": HASH, "requested_by": "account"}})


def unsubscribed() -> SubscriberUnsubscribed:
    return SubscriberUnsubscribed.model_validate({"account_id": "a1", "producer": "subscriptions",
                                                  "occurred_at": AT, "payload": {"list_id": "news",
                                                                                 "subscriber_id": "s1",
                                                                                 "source": "api"}})


def fold(events: list[Event], list_deleted: bool = False) -> tuple[bool | None, int]:
    counted: bool | None = None
    total = 0
    for event in events:
        counted, change = domain.member_counting(counted, event, list_deleted)
        total += change
    return counted, total


def test_a_single_opt_in_member_counts_when_added() -> None:
    assert domain.member_counting(None, added("single"), False) == (True, 1)
    assert fold([added("single"), confirmed("single_opt_in")]) == (True, 1)  # its confirmation follows: once


def test_a_pending_double_opt_in_member_does_not_count() -> None:
    assert domain.member_counting(None, added("double"), False) == (False, 0)


def test_a_pending_member_counts_once_its_person_confirms() -> None:
    assert fold([added("double"), confirmed()]) == (True, 1)
    assert fold([added("double"), confirmed(), confirmed()]) == (True, 1)  # a copy of the confirmation


def test_a_pending_member_erased_takes_nothing_back() -> None:
    assert fold([added("double"), erased()]) == (None, 0)


def test_a_counted_member_stays_counted_once_unsubscribed_and_until_erased() -> None:
    assert fold([added("double"), confirmed(), unsubscribed()]) == (True, 1)
    assert fold([added("double"), confirmed(), unsubscribed(), erased()]) == (None, 0)
    assert fold([added("single"), added("double")]) == (True, 1)  # added again after unsubscribing: stored once


def test_a_member_of_a_deleted_list_is_not_counted_nor_taken_back_again() -> None:
    """A deleted list's counted members are taken off with it (ListDeleted): a later confirmation or erasure of
    one changes nothing."""
    assert domain.member_counting(False, confirmed(), True) == (False, 0)
    assert domain.member_counting(True, erased(), True) == (None, 0)


def test_a_member_document_from_before_the_mark_counted() -> None:
    """The store reads a member document without `counted` as counted (every member was, then): its erasure
    takes it back, a confirmation does not count it twice."""
    assert domain.member_counting(True, confirmed(), False) == (True, 0)
    assert domain.member_counting(True, erased(), False) == (None, -1)


@given(st.lists(st.sampled_from(["single", "double", "confirm", "unsubscribe", "erase"]), max_size=12))
def test_the_count_is_one_exactly_while_a_confirmed_or_single_opt_in_membership_is_stored(steps: list[str]) -> None:
    events: list[Event] = [added(s) if s in ("single", "double") else confirmed() if s == "confirm" else
                           unsubscribed() if s == "unsubscribe" else erased() for s in steps]
    counted, total = fold(events)
    assert total == (1 if counted else 0)
