"""The read model's fold (`evolve_member`, `evolve_address`): each transition, and redelivery changes nothing."""

from __future__ import annotations

from functools import reduce
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from herald_shared.contract import Event
from herald_subscriptions import domain
from herald_subscriptions.store import _member_state, listing_key, member_key
from tests.samples import sample

SID = "s1"


def ev(type_name: str, **payload: Any) -> Event:
    event = sample(type_name)
    return type(event).model_validate({**event.model_dump(), "payload": {**event.payload.model_dump(), **payload}})


ADDED = ev("SubscriberAdded", subscriber_id=SID)
REQUESTED = ev("ConfirmationRequested", subscriber_id=SID)
CONFIRMED = ev("SubscriberConfirmed", subscriber_id=SID)
UNSUBSCRIBED = ev("SubscriberUnsubscribed", subscriber_id=SID)
SUPPRESSED = ev("SubscriberSuppressed", subscriber_id=SID)
ERASED = ev("SubscriberErased", subscriber_id=SID)


def fold(events: list[Event]) -> dict[str, Any] | None:
    return reduce(domain.evolve_member, events, None)  # type: ignore[arg-type]


def status(events: list[Event]) -> str | None:
    doc = fold(events)
    return doc["status"] if doc else None


def test_transitions() -> None:
    assert status([ADDED]) == "pending"
    assert status([ADDED, CONFIRMED]) == "active"
    assert status([ADDED, CONFIRMED, UNSUBSCRIBED]) == "unsubscribed"
    assert status([ADDED, UNSUBSCRIBED]) == "unsubscribed"
    assert status([ADDED, CONFIRMED, SUPPRESSED]) == "suppressed"
    assert status([ADDED, CONFIRMED, UNSUBSCRIBED, ADDED]) == "pending"  # came back through double opt-in
    assert status([ADDED, CONFIRMED, SUPPRESSED, ADDED, CONFIRMED]) == "suppressed"  # needs the request first
    assert status([ADDED, CONFIRMED, SUPPRESSED, ADDED, REQUESTED, CONFIRMED]) == "active"
    assert status([ADDED, CONFIRMED, ERASED]) == "erased"
    assert status([ADDED, CONFIRMED, ERASED, ADDED]) == "pending"  # a fresh subscription after erasure


def test_illegal_transitions_change_nothing() -> None:
    assert fold([CONFIRMED]) is None and fold([UNSUBSCRIBED]) is None and fold([ERASED]) is None
    assert status([ADDED, CONFIRMED, UNSUBSCRIBED, CONFIRMED]) == "unsubscribed"
    assert status([ADDED, CONFIRMED, ERASED, SUPPRESSED]) == "erased"
    assert status([ADDED, CONFIRMED, ERASED, UNSUBSCRIBED]) == "erased"


def test_erasure_keeps_nothing_personal() -> None:
    doc = fold([ADDED, CONFIRMED, ERASED])
    assert doc is not None
    assert set(doc) == {"subscriber_id", "account_id", "list_id", "email_sha256", "status", "erased_at",
                        "erasure_requested_by"}


def test_erasure_keeps_that_the_person_had_opted_out_so_the_customer_cannot_re_add_them() -> None:
    for opt_out, status_kept in ((UNSUBSCRIBED, "unsubscribed"), (SUPPRESSED, "suppressed")):
        doc = fold([ADDED, CONFIRMED, opt_out, ERASED])
        assert doc is not None and (doc["status"], doc["opted_out"]) == ("erased", status_kept)
        assert set(doc) == {"subscriber_id", "account_id", "list_id", "email_sha256", "status", "erased_at",
                            "erasure_requested_by", "opted_out"}
        assert _member_state(doc).opted_out == status_kept
    fresh = fold([ADDED, CONFIRMED, UNSUBSCRIBED, ERASED, ADDED])  # re-added through the form, not confirmed yet
    assert fresh is not None and fresh["status"] == "pending" and fresh["opted_out"] == "unsubscribed"
    back = fold([ADDED, CONFIRMED, UNSUBSCRIBED, ERASED, ADDED, REQUESTED, CONFIRMED])  # the person confirmed
    assert back is not None and back["status"] == "active" and "opted_out" not in back


ERASED_AGAIN = ev("SubscriberErased", subscriber_id=SID, requested_by="account")
SINGLE_OPT_IN = ev("SubscriberConfirmed", subscriber_id=SID, method="single_opt_in", ip=None)


def test_an_opt_out_outlives_a_re_subscription_nobody_confirmed_and_its_erasure() -> None:
    """README: someone who unsubscribed is not re-added by the customer, erased or not. Anyone can post the
    hosted form with an address: the pending membership it makes keeps the opt-out, and so does its erasure."""
    for opt_out, kept in ((UNSUBSCRIBED, "unsubscribed"), (SUPPRESSED, "suppressed")):
        for history in ([ADDED, CONFIRMED, opt_out, ADDED, REQUESTED],  # re-added, pending, then erased
                        [ADDED, CONFIRMED, opt_out, ERASED, ADDED, REQUESTED]):  # erased, re-added, erased again
            doc = fold([*history, ERASED_AGAIN])
            assert doc is not None and (doc["status"], doc["opted_out"]) == ("erased", kept), history
            assert domain.standing(_member_state(doc)) == kept
    pending = fold([ADDED, CONFIRMED, UNSUBSCRIBED, ADDED])
    assert pending is not None and (pending["status"], pending["opted_out"]) == ("pending", "unsubscribed")


def test_only_the_persons_own_double_opt_in_clears_an_opt_out() -> None:
    cleared = fold([ADDED, CONFIRMED, UNSUBSCRIBED, ADDED, REQUESTED, CONFIRMED, ERASED_AGAIN])
    assert cleared is not None and "opted_out" not in cleared and domain.standing(_member_state(cleared)) is None
    # a producer's (a CRM's) single opt-in confirmation is the customer's word, not the person's
    kept = fold([ADDED, CONFIRMED, UNSUBSCRIBED, ADDED, SINGLE_OPT_IN, ERASED_AGAIN])
    assert kept is not None and kept["opted_out"] == "unsubscribed"


def test_an_event_of_another_account_never_changes_a_membership() -> None:
    """PRODUCT.md: one account can never change another account's data. Subscriber ids are unique per account
    only (a CRM may choose them), so another account's events naming the same id leave the member as it was."""
    member = fold([ADDED, CONFIRMED])
    assert member is not None and member["account_id"] == ADDED.account_id
    for event in ALL:
        rival = event.model_copy(update={"account_id": "rival"})
        assert domain.evolve_member(member, rival) == member


def test_two_accounts_same_subscriber_id_are_two_documents_listed_apart() -> None:
    assert member_key("acme", SID) != member_key("rival", SID)
    assert member_key("acme", SID).startswith("acme/")
    doc = fold([ADDED, CONFIRMED])
    assert doc is not None and doc["subscriber_id"] == SID
    assert listing_key(doc) == f"{doc['account_id']}/{doc['list_id']}/active/{SID}"
    assert _member_state(doc).subscriber_id == SID


def test_unsubscribe_records_source_and_campaign() -> None:
    doc = fold([ADDED, CONFIRMED, UNSUBSCRIBED])
    assert doc is not None and (doc["unsubscribe_source"], doc["unsubscribe_campaign_id"]) == ("one_click", "c1")


def test_address_lists_each_membership_once() -> None:
    other = ev("SubscriberAdded", subscriber_id="s2", list_id="l2")
    doc = reduce(domain.evolve_address, [ADDED, other, ADDED], None)  # type: ignore[arg-type]
    assert doc is not None and doc["members"] == [SID, "s2"]


ALL = [ADDED, REQUESTED, CONFIRMED, UNSUBSCRIBED, SUPPRESSED, ERASED, SINGLE_OPT_IN]


@given(st.lists(st.sampled_from(ALL), max_size=12), st.data())
def test_redelivering_any_event_right_after_itself_changes_nothing(events: list[Event], data: st.DataObject) -> None:
    repeated = [e for event in events for e in [event] * data.draw(st.integers(1, 3))]
    assert fold(repeated) == fold(events)

