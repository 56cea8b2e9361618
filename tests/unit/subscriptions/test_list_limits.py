"""What one account may make the service hold through its lists: custom fields per list, lists per account."""

import pytest

from herald_shared.contract.subscriptions import CustomFieldDefinition
from herald_subscriptions import domain
from herald_subscriptions.domain import ListState


def fields(n: int) -> list[CustomFieldDefinition]:
    return [CustomFieldDefinition(name=f"f{i}") for i in range(n)]


def test_a_list_takes_100_custom_fields_and_refuses_the_101st_with_422_naming_the_limit() -> None:
    created = domain.create_list("acc", "l1", "News", "single", fields(100), None, live_lists=0)
    assert [e.type for e in created] == ["ListCreated"]
    with pytest.raises(domain.TooManyCustomFields, match="at most 100 custom fields; this one asks for 101") as refused:
        domain.create_list("acc", "l1", "News", "single", fields(101), None, live_lists=0)
    assert (refused.value.code, refused.value.http_status) == ("too_many_custom_fields", 422)


def test_the_1001st_live_list_of_an_account_is_refused_with_409_naming_the_limit() -> None:
    created = domain.create_list("acc", "l1000", "News", "single", [], None, live_lists=999)
    assert [e.type for e in created] == ["ListCreated"]
    with pytest.raises(domain.TooManyLists, match="at most 1,000 lists") as refused:
        domain.create_list("acc", "l1001", "News", "single", [], None, live_lists=1000)
    assert (refused.value.code, refused.value.http_status) == ("too_many_lists", 409)


def test_at_the_cap_the_same_request_again_still_answers_the_list_and_a_deleted_id_says_so() -> None:
    """The cap refuses a new list only: repeating a creation changes nothing and adds no list."""
    existing = ListState("acc", "news", "News", "single", {})
    assert domain.create_list("acc", "news", "News", "single", [], existing, live_lists=1000) == []
    with pytest.raises(domain.DeletedListId):
        domain.create_list("acc", "news", "News", "single", [], ListState("acc", "news", "News", "single", {},
                                                                          deleted=True), live_lists=1000)
