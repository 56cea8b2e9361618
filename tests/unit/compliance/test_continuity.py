"""The plan that keeps a partition's records contiguous when faust's stream skips or repeats some."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herald_compliance.continuity import Fetch, Take, reconcile


def test_contiguous_records_are_taken_as_they_are() -> None:
    assert reconcile(40, [40, 41, 42]) == ([Take(0), Take(1), Take(2)], 43)


def test_a_hole_is_fetched_before_the_record_after_it() -> None:
    # the rebalance case the kill test found: 0..39 processed, the queue cleared, 859 delivered next
    assert reconcile(40, [859, 860]) == ([Fetch(40, 859), Take(0), Take(1)], 861)


def test_holes_inside_a_batch_are_fetched_each() -> None:
    assert reconcile(0, [0, 3, 4, 9]) == ([Take(0), Fetch(1, 3), Take(1), Take(2), Fetch(5, 9), Take(3)], 10)


def test_records_already_processed_are_dropped() -> None:
    assert reconcile(100, [98, 99, 100, 101]) == ([Take(2), Take(3)], 102)
    assert reconcile(100, [50, 60]) == ([], 100)


def test_nothing_to_plan_keeps_the_expected_offset() -> None:
    assert reconcile(7, []) == ([], 7)


@given(st.integers(0, 50), st.lists(st.integers(0, 200), max_size=40))
def test_the_plan_covers_every_offset_from_the_expected_one_once_and_in_order(expected: int,
                                                                              offsets: list[int]) -> None:
    plan, after = reconcile(expected, offsets)
    covered: list[int] = []
    for step in plan:
        covered.extend(range(step.start, step.end) if isinstance(step, Fetch) else [offsets[step.index]])
    assert covered == list(range(expected, after))
    assert after == max([expected, *(o + 1 for o in offsets)])
