"""The account removes one member from its list (`domain.remove_member`): that membership erased, nothing else;
what the person decided (an unsubscribe, a suppression) stands after it."""

from __future__ import annotations

import pytest

from herald_shared.contract.subscriptions import SubscriberErased
from herald_subscriptions import domain
from herald_subscriptions.domain import ListState, MemberState

ANNA = domain.email_sha256("anna@example.com")
NEWS = ListState("acc", "news", "News", "single", {})


def member(status: str, list_id: str = "news", subscriber_id: str = "s1") -> MemberState:
    return MemberState(subscriber_id, list_id, ANNA, status)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["pending", "active", "unsubscribed", "suppressed"])
def test_removal_erases_that_one_membership_at_the_accounts_request(status: str) -> None:
    [event] = domain.remove_member("acc", NEWS, member(status))
    assert isinstance(event, SubscriberErased) and event.account_id == "acc"
    assert event.payload.model_dump() == {"subscriber_id": "s1", "list_id": "news", "email_sha256": ANNA,
                                          "requested_by": "account"}


def test_a_member_already_erased_is_removed_already_nothing_recorded() -> None:
    assert domain.remove_member("acc", NEWS, member("erased")) == []


def test_a_member_of_another_list_or_none_is_not_found() -> None:
    with pytest.raises(domain.SubscriberNotFound):
        domain.remove_member("acc", NEWS, member("active", list_id="promo"))
    with pytest.raises(domain.SubscriberNotFound):
        domain.remove_member("acc", NEWS, None)


def test_a_list_not_there_or_deleted_is_not_found() -> None:
    with pytest.raises(domain.ListNotFound):
        domain.remove_member("acc", None, member("active"))
    with pytest.raises(domain.ListNotFound):
        domain.remove_member("acc", ListState("acc", "news", "News", "single", {}, deleted=True), member("active"))


@pytest.mark.parametrize(("status", "refused"), [("unsubscribed", domain.PreviouslyUnsubscribed),
                                                 ("suppressed", domain.AddressSuppressed)])
def test_a_removed_member_who_opted_out_is_not_added_back_by_the_account(status: str, refused: type) -> None:
    """The removal folded (`evolve_member`) keeps the opt-out (`opted_out`): the customer's add is refused as
    before the removal."""
    doc = {"subscriber_id": "s1", "account_id": "acc", "list_id": "news", "email": "anna@example.com",
           "email_sha256": ANNA, "status": status}
    [removal] = domain.remove_member("acc", NEWS, member(status))
    removed = domain.evolve_member(doc, removal)
    assert removed is not None and "email" not in removed
    after = MemberState("s1", "news", ANNA, "erased", opted_out=removed["opted_out"])
    request = domain.SubscribeRequest(email="anna@example.com", consent=domain.consent_evidence(
        source="api", collected_at=removal.occurred_at, method="checkout checkbox"), channel="api")
    with pytest.raises(refused):
        domain.subscribe(NEWS, after, status == "suppressed", request, "Acme", lambda: pytest.fail("no link"))
