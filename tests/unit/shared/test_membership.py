"""One membership per address and list (`herald_shared.membership`): the rule every consumer of herald.subscriptions
folds a SubscriberAdded by, so one person is mailed and counted once whatever ids a producer chose."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from herald_shared.membership import duplicate_reason, holder

ANN = "a" * 64
BOB = "b" * 64


def doc(subscriber_id: str, list_id: str = "news", email_sha256: str | None = ANN,
        status: str = "active") -> dict[str, Any]:
    return {"subscriber_id": subscriber_id, "list_id": list_id, "email_sha256": email_sha256, "status": status}


def test_an_address_already_on_the_list_under_another_id_is_no_new_membership() -> None:
    assert holder([doc("crm-1")], list_id="news", email_sha256=ANN, subscriber_id="crm-2") == "crm-1"


def test_the_same_id_added_again_is_its_own_membership() -> None:
    assert holder([doc("crm-1")], list_id="news", email_sha256=ANN, subscriber_id="crm-1") is None


def test_what_holds_nothing_an_erased_membership_another_list_another_address() -> None:
    memberships = [doc("gone", status="erased", email_sha256=None), doc("other-list", list_id="offers"),
                   doc("moved", email_sha256=BOB), None]
    assert holder(memberships, list_id="news", email_sha256=ANN, subscriber_id="crm-2") is None


def test_any_status_not_erased_holds_the_list() -> None:
    for status in ("pending", "active", "unsubscribed", "suppressed"):
        assert holder([doc("crm-1", status=status)], list_id="news", email_sha256=ANN,
                      subscriber_id="crm-2") == "crm-1"


@given(st.permutations(["crm-3", "crm-1", "crm-2"]))
def test_several_holders_of_a_model_folded_before_the_rule_name_one_whatever_their_order(ids: list[str]) -> None:
    assert holder([doc(i) for i in ids], list_id="news", email_sha256=ANN, subscriber_id="api") == "crm-1"


def test_the_reason_names_the_membership_the_address_has() -> None:
    reason = duplicate_reason(subscriber_id="crm-2", list_id="news", account_id="acme", existing="crm-1")
    assert "'crm-2'" in reason and "already a member of that list as 'crm-1'" in reason
