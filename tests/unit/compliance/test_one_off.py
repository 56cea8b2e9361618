"""One-off sending (PRODUCT.md, "Lists and subscribers"): a list deleted soon after a send, then a new list that
got mostly the same addresses after that send."""

from __future__ import annotations

import hashlib

from herald_compliance.domain import (
    SKETCH_SIZE,
    ListRecord,
    Policy,
    default_rules,
    deleted_soon_after_send,
    one_off_sending,
    shared_fraction,
)

POLICY = Policy(default_rules())
DAY = 86400


def digest(i: int) -> str:
    return hashlib.sha256(f"person{i}@example.com".encode()).hexdigest()


def members(ids: range, at: int = 0) -> ListRecord:
    record = ListRecord()
    for i in ids:
        record.add_member(digest(i), at)
    return record


def test_sketch_is_exact_below_its_size_and_adding_twice_changes_nothing() -> None:
    record = members(range(100))
    again = members(range(100))
    for i in range(100):
        again.add_member(digest(i), DAY)
    assert record.members() == again.members() == 100 and record.sketch == again.sketch
    assert again.added == [0] * 100  # an address added again keeps the time it was first added


def test_the_times_kept_are_bounded_as_the_sketch_is_and_survive_the_json_form() -> None:
    record = ListRecord()
    for i in range(2_000):
        record.add_member(digest(i), i)
    assert len(record.sketch) == len(record.added) == SKETCH_SIZE
    values = {int(digest(i)[:16], 16): i for i in range(2_000)}
    assert record.added == [values[v] for v in record.sketch]  # each entry's own time, in the sketch's order
    again = ListRecord.from_json(record.to_json())
    assert again.sketch == record.sketch and again.added == record.added


def test_sketch_estimates_large_lists_within_a_few_percent() -> None:
    record = members(range(20_000))
    assert len(record.sketch) == 256 and abs(record.members() - 20_000) / 20_000 < 0.2


def _old_list() -> ListRecord:
    old = members(range(1_000))
    old.created_at, old.deleted_at, old.members_at_deletion = 0, 11 * DAY, 1_000
    old.sent("blast", 10 * DAY)
    return old


def test_list_deleted_after_a_send_then_recreated_with_the_same_addresses_is_flagged() -> None:
    old = _old_list()
    assert deleted_soon_after_send(old, POLICY)
    new = members(range(50, 1_050), 12 * DAY)  # 95% of the old addresses
    new.created_at = 12 * DAY
    found = one_off_sending("acc-1", "new", new, {"old": [11 * DAY, 10 * DAY]}, lambda _: old, POLICY)
    assert [(f.deleted_list_id, f.new_list_id) for f in found] == [("old", "new")]
    assert 0.85 < found[0].shared <= 1.0
    new.flagged.append("old")  # once per pair
    assert one_off_sending("acc-1", "new", new, {"old": [11 * DAY, 10 * DAY]}, lambda _: old, POLICY) == []


def test_a_different_audience_or_a_list_kept_long_after_its_send_is_not_flagged() -> None:
    old = _old_list()
    different = members(range(500, 1_500), 12 * DAY)  # half the old addresses
    different.created_at = 12 * DAY
    assert one_off_sending("acc-1", "new", different, {"old": [11 * DAY, 10 * DAY]}, lambda _: old, POLICY) == []
    kept = _old_list()
    kept.deleted_at = 40 * DAY  # deleted a month after its last send: a list retired, not a one-off
    assert not deleted_soon_after_send(kept, POLICY)


CANDIDATES = {"old": [11 * DAY, 10 * DAY]}  # deleted on day 11, sent on day 10


def _flagged(new: ListRecord) -> bool:
    old = _old_list()
    return [f.deleted_list_id for f in one_off_sending("acc-1", "new", new, CANDIDATES, lambda _: old, POLICY)] == [
        "old"]


def test_a_list_created_empty_before_the_send_and_filled_after_it_is_flagged() -> None:
    """Creating a spare list beforehand does not hide a re-creation: when the list got the addresses decides."""
    spare = members(range(50, 1_050), 11 * DAY + 3600)  # filled an hour after the old list's deletion
    spare.created_at = 0  # created, empty, with the old list
    assert _flagged(spare)
    between = members(range(50, 1_050), 10 * DAY)  # filled from the second of the send on, before the deletion
    between.created_at = 0
    assert _flagged(between)


def test_a_list_that_held_the_addresses_before_the_send_is_a_second_list_not_a_re_creation() -> None:
    before = members(range(50, 1_050), 10 * DAY - 1)  # filled the second before the old list's send
    before.created_at = 0
    assert not _flagged(before)
    # Half held before the send, half added after it: only the half it got afterwards was re-created.
    half = members(range(0, 500), 5 * DAY)
    for i in range(500, 1_000):
        half.add_member(digest(i), 12 * DAY)
    half.created_at = 0
    assert not _flagged(half)
    # Adding them again after the send changes nothing: the list had them already.
    for i in range(50, 1_050):
        before.add_member(digest(i), 12 * DAY)
    assert not _flagged(before)


def test_a_list_filled_later_than_the_follow_up_time_after_the_deletion_is_not_flagged() -> None:
    late = members(range(50, 1_050), 11 * DAY + POLICY.one_off_followed_within_seconds + 1)
    late.created_at = 11 * DAY  # created right after the deletion, filled a month later
    assert not _flagged(late)
    in_time = members(range(50, 1_050), 11 * DAY + POLICY.one_off_followed_within_seconds)
    in_time.created_at = 11 * DAY
    assert _flagged(in_time)


def test_a_list_stored_before_the_times_were_kept_is_judged_by_its_creation_as_before() -> None:
    """Records from the earlier version have no times: their members count as added when the list was created
    (which they were, or later), the rule of that version; with no creation seen, as of any time."""
    stored = members(range(50, 1_050), 12 * DAY).to_json()
    del stored["a"]
    assert _flagged(ListRecord.from_json({**stored, "c": 12 * DAY}))
    assert not _flagged(ListRecord.from_json({**stored, "c": 5 * DAY}))
    assert _flagged(ListRecord.from_json({**stored, "c": None}))


def test_a_list_sent_many_campaigns_then_deleted_is_not_one_off_sending() -> None:
    """"Deleting a list after one send and re-creating it for the next" (PRODUCT.md); the number is configuration."""
    used = _old_list()
    used.sent("newsletter-2", 10 * DAY + 60)
    used.sent("newsletter-2", 10 * DAY + 120)  # the same campaign's later messages: still two campaigns
    assert used.campaigns == ["blast", "newsletter-2"]
    assert not deleted_soon_after_send(used, POLICY)
    assert deleted_soon_after_send(used, Policy(default_rules(), one_off_maximum_sends=2))
    never_sent = members(range(100))
    never_sent.deleted_at = DAY
    assert not deleted_soon_after_send(never_sent, POLICY)


def _share(old_ids: range, new_ids: range, others: int) -> float | None:
    old, new = members(old_ids), members(new_ids)
    for i in range(others):
        new.add_member(hashlib.sha256(f"other{i}@example.net".encode()).hexdigest(), 0)
    return shared_fraction(old, new)


def test_the_share_is_estimated_fairly_when_the_new_list_is_much_larger() -> None:
    """A new list holding the whole deleted list among many others still shows a share near 100%; one holding
    30% of it does not reach 80%."""
    for trial in range(20):
        old = range(trial * 10_000, trial * 10_000 + 1_000)
        whole = _share(old, old, 9_000)
        assert whole is not None and whole >= 0.95, (trial, whole)
        part = _share(old, range(old.start, old.start + 300), 9_000)
        assert part is not None and part < 0.6, (trial, part)


def test_no_share_is_claimed_when_the_sketches_cannot_tell() -> None:
    assert _share(range(50), range(50), 0) == 1.0  # small lists compare exactly
    assert _share(range(200), range(200), 100_000) is None  # 200 among 100,000: too few sampled to judge
    assert shared_fraction(ListRecord(), members(range(10))) is None
