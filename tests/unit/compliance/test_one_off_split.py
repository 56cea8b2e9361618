"""One-off sending split across lists (PRODUCT.md: "deleting a list after one send and re-creating it for the next
('one-off sending') is a violation to detect and flag"): a deleted list re-created as two or three smaller lists
is judged against their union, not against each part alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from herald_compliance.domain import (
    REUSERS_KEPT,
    AccountState,
    ListRecord,
    shared_fraction,
    shared_with_any,
)
from herald_shared.contract import Event
from herald_shared.contract.compliance import AccountWarned
from tests.unit.compliance.helpers import (
    DAY,
    HOUR,
    T0,
    Account,
    address,
    blast,
    deleted,
    new_list,
)

EVERYONE = range(100)


def one_offs(warnings: list[AccountWarned]) -> list[dict[str, Any]]:
    return [dict(w.payload.evidence) for w in warnings if w.payload.metric == "one_off_sending"]


def sent_once_and_deleted() -> list[list[Event]]:
    return [new_list("jan", EVERYONE, T0), blast("jan", "c-jan", EVERYONE, T0 + HOUR), deleted("jan", T0 + 2 * HOUR)]


def test_a_deleted_list_re_created_as_two_halves_each_sent_once_is_flagged_naming_both() -> None:
    account = Account()
    warnings = account.run(*sent_once_and_deleted(),
                           new_list("feb-a", range(50), T0 + 3 * HOUR), blast("feb-a", "c-a", range(50), T0 + 4 * HOUR),
                           new_list("feb-b", range(50, 100), T0 + 5 * HOUR),
                           blast("feb-b", "c-b", range(50, 100), T0 + 6 * HOUR))
    [evidence] = one_offs(warnings)
    assert evidence["reason"] == "list_deleted" and evidence["deleted_list_id"] == "jan"
    assert evidence["new_list_ids"] == "feb-a,feb-b" and evidence["new_lists"] == 2
    assert evidence["new_list_id"] == "feb-b" and evidence["new_list_members"] == 100
    assert evidence["shared_fraction"] == 1.0 and warnings[0].payload.value == 1.0
    assert "jan" in account.lists["feb-a"].flagged and "jan" in account.lists["feb-b"].flagged
    assert account.state.reusing == {}  # told once: nothing left to remember of it
    # more members for either half later change nothing: the split is warned about once
    assert account.run(new_list("feb-a", range(200, 230), T0 + 7 * HOUR)) == []


def test_a_deleted_list_re_created_as_three_lists_is_flagged_once_the_third_completes_it() -> None:
    account = Account()
    assert account.run(*sent_once_and_deleted(), new_list("a", range(34), T0 + 3 * HOUR),
                       new_list("b", range(34, 67), T0 + 4 * HOUR)) == []  # 67% so far
    warnings = account.run(new_list("c", range(67, 100), T0 + 5 * HOUR))
    [evidence] = one_offs(warnings)
    assert evidence["new_list_ids"] == "a,b,c" and evidence["shared_fraction"] == 1.0


def test_the_parts_read_in_one_batch_are_flagged_alike() -> None:
    warnings = Account().run([event for step in (*sent_once_and_deleted(), new_list("a", range(40), T0 + 3 * HOUR),
                                                 new_list("b", range(40, 85), T0 + 3 * HOUR)) for event in step])
    [evidence] = one_offs(warnings)
    assert evidence["new_list_ids"] == "a,b" and evidence["shared_fraction"] == 0.85


def test_lists_that_together_hold_less_than_80_percent_or_got_them_before_the_send_are_not_flagged() -> None:
    account = Account()
    assert account.run(*sent_once_and_deleted(), new_list("a", range(40), T0 + 3 * HOUR),
                       new_list("b", range(40, 79), T0 + 4 * HOUR)) == []  # 79%
    held = Account()
    assert held.run(new_list("before", range(50), T0), *sent_once_and_deleted(),  # held before the send
                    new_list("after", range(50, 100), T0 + 3 * HOUR)) == []
    overlapping = Account()  # two copies of the same half are still half
    assert overlapping.run(*sent_once_and_deleted(), new_list("a", range(50), T0 + 3 * HOUR),
                           new_list("b", range(50), T0 + 4 * HOUR), new_list("c", range(20, 60), T0 + 5 * HOUR)) == []


def test_genuinely_different_lists_are_not_flagged() -> None:
    account = Account()
    assert account.run(*sent_once_and_deleted(), new_list("news", range(1_000, 1_100), T0 + 3 * HOUR),
                       new_list("shop", range(2_000, 2_200), T0 + 4 * HOUR),
                       new_list("few", list(range(10)) + list(range(3_000, 3_090)), T0 + 5 * HOUR)) == []
    assert set(account.state.reusing.get("jan", {})) <= {"few"}


def test_one_list_re_creating_it_whole_is_flagged_as_before_with_no_split_evidence() -> None:
    account = Account()
    [evidence] = one_offs(account.run(*sent_once_and_deleted(), new_list("feb", EVERYONE, T0 + 3 * HOUR)))
    assert evidence["new_list_id"] == "feb" and "new_list_ids" not in evidence and "new_lists" not in evidence


def test_a_list_sent_twice_before_its_deletion_split_in_two_is_not_flagged() -> None:
    account = Account()
    assert account.run(new_list("jan", EVERYONE, T0), blast("jan", "c1", EVERYONE, T0 + HOUR),
                       blast("jan", "c2", EVERYONE, T0 + 2 * HOUR), deleted("jan", T0 + 3 * HOUR),
                       new_list("a", range(50), T0 + 4 * HOUR), new_list("b", range(50, 100), T0 + 5 * HOUR)) == []


def test_what_is_remembered_is_bounded_survives_the_json_form_and_is_forgotten_with_the_deleted_list() -> None:
    account = Account()
    account.run(*sent_once_and_deleted())
    parts = [new_list(f"part{n:02}", range(3 * n, 3 * n + 3), T0 + 3 * HOUR) for n in range(REUSERS_KEPT + 4)]
    account.run(*parts)
    # 20 parts of 3% each: the 16 kept hold 48%, not flagged, and the record stays bounded
    assert len(account.state.reusing["jan"]) == REUSERS_KEPT
    assert AccountState.from_json(account.state.to_json()).reusing == account.state.reusing
    assert AccountState.from_json({k: v for k, v in account.state.to_json().items() if k != "ru"}).reusing == {}
    # a month past the deletion (the follow-up time, by the account's event time): the deleted list is forgotten
    account.run(new_list("later", [5_000], T0 + 40 * DAY), blast("later", "c-later", [5_000], T0 + 40 * DAY))
    assert account.state.reusing == {}


def _sketch(people: Iterable[int], at: int = 0) -> ListRecord:
    record = ListRecord()
    for i in people:
        record.add_member(address(i), at)
    return record


def test_the_union_of_large_lists_is_measured_on_a_common_sample() -> None:
    """Above 256 members the sample is the old list's members hashed below every sketch's largest value: a
    20,000-member list split in two halves of 10,000 is measured at ~100%, 45% + 30% at ~75%."""
    old = _sketch(range(20_000))
    halves = [_sketch(range(10_000)), _sketch(range(10_000, 20_000))]
    assert shared_with_any(old, halves) == 1.0
    parts = [_sketch(range(9_000)), _sketch(range(9_000, 15_000))]
    share = shared_with_any(old, parts)
    assert share is not None and 0.65 < share < 0.85
    assert shared_with_any(old, [halves[0]]) == shared_fraction(old, halves[0])
    assert shared_with_any(old, [_sketch(range(10_000)), _sketch(range(10**6, 10**6 + 2_000_000, 2))]) is None
