"""`packed_facts.PackedFacts`: the facts index's memory (pure logic, no faust, no Kafka)."""

from __future__ import annotations

import json
import random

from herald_compliance import packed_facts
from herald_compliance.packed_facts import RECORD, PackedFacts, changelog_key, digest, parse_key


def marker(i: int, epoch: int | None = 0) -> list[object]:
    m: list[object] = [f"herald.delivery:{i % 6}", 1000 + i, 1_764_900_000 + i]
    return m if epoch is None else [*m, epoch]


def test_a_fact_put_is_found_by_its_digest_with_its_marker_and_partition() -> None:
    facts = PackedFacts()
    fact = digest("acc-1", "s:m1")
    assert facts.get(fact) is None
    facts.put(fact, "acc-1", 3, ["herald.delivery:3", 7, 1_764_900_000, 2])
    assert facts.get(fact) == ["herald.delivery:3", 7, 1_764_900_000, 2]
    assert facts.get(digest("acc-2", "s:m1")) is None  # another account's fact of the same key
    assert list(facts.facts()) == [(fact, "acc-1", 3, ["herald.delivery:3", 7, 1_764_900_000, 2])]
    facts.put(fact, "acc-1", 3, ["herald.subscriptions:3", 8, 1_764_900_001, 0])  # written again: replaced
    assert facts.get(fact) == ["herald.subscriptions:3", 8, 1_764_900_001, 0]
    assert len(facts) == 1


def test_a_marker_without_an_epoch_comes_back_without_one() -> None:
    facts = PackedFacts()
    facts.put(digest("a", "s:1"), "a", 0, marker(1, epoch=None))
    assert facts.get(digest("a", "s:1")) == marker(1, epoch=None)


def test_many_facts_survive_deletes_in_any_order() -> None:
    facts = PackedFacts()
    keys = [(f"acc-{i % 97}", f"s:m{i}") for i in range(30_000)]
    for i, (account, key) in enumerate(keys):
        facts.put(digest(account, key), account, i % 6, marker(i, epoch=i % 3))
    assert len(facts) == 30_000
    doomed = set(random.Random(7).sample(range(30_000), 12_000))
    for i in doomed:
        assert facts.delete(digest(*keys[i])) is None
    assert len(facts) == 18_000
    for i, (account, key) in enumerate(keys):
        assert facts.get(digest(account, key)) == (None if i in doomed else marker(i, epoch=i % 3))
    listed = {(d, a, p, tuple(m)) for d, a, p, m in facts.facts()}
    assert listed == {(digest(*keys[i]), keys[i][0], i % 6, tuple(marker(i, epoch=i % 3)))
                      for i in range(30_000) if i not in doomed}


def test_a_digest_found_across_two_records_is_not_taken_for_a_fact() -> None:
    """The look-up searches a bucket's bytes: a match that does not start a record is passed over."""
    facts = PackedFacts()
    wanted = digest("acc", "s:wanted")
    # a fact of the same bucket whose offset and time bytes spell the wanted digest
    offset = int.from_bytes(wanted[:8], "little", signed=True)
    at = int.from_bytes(wanted[8:] + b"\0\0\0\0", "little", signed=True)
    neighbour = wanted[:2] + b"\x01" * 10
    facts.put(neighbour, "acc", 1, ["herald.delivery:1", offset, at, 0])
    assert wanted in bytes(facts._buckets[wanted[0] << 8 | wanted[1]] or b"")
    assert facts.get(wanted) is None
    facts.put(wanted, "acc", 1, marker(5))
    assert facts.get(wanted) == marker(5)
    assert facts.get(neighbour) == ["herald.delivery:1", offset, at, 0]
    facts.delete(wanted)
    assert facts.get(wanted) is None and facts.get(neighbour) is not None


def test_what_does_not_fit_a_record_is_kept_whole() -> None:
    facts = PackedFacts()
    odd = {"garbled": True}
    big = ["herald.delivery:1", 1 << 64, 1_764_900_000, 0]
    far_epoch = ["herald.delivery:1", 1, 1_764_900_000, 70_000]
    for i, value in enumerate([odd, big, far_epoch, ["x", 1.5, 2, 0], "text"]):
        facts.put(digest("a", f"k{i}"), "a", 2, value)
    assert [facts.get(digest("a", f"k{i}")) for i in range(5)] == [odd, big, far_epoch, ["x", 1.5, 2, 0], "text"]
    assert len(facts) == 5 == len(facts.odd)
    facts.put(digest("a", "k0"), "a", 2, marker(1))  # replaced by one that fits: out of `odd`
    assert facts.get(digest("a", "k0")) == marker(1) and len(facts) == 5 and len(facts.odd) == 4
    facts.delete(digest("a", "k1"))
    assert facts.get(digest("a", "k1")) is None and len(facts) == 4


def test_changelog_keys_in_either_format_name_the_same_fact() -> None:
    fact = digest("acc-1", "s:m1")
    assert parse_key(changelog_key("acc-1", fact)) == ("acc-1", fact, False)
    assert parse_key("acc-1|s:m1") == ("acc-1", digest("acc-1", "s:m1"), True)
    assert parse_key("no-separator") is None
    assert parse_key("acc|#" + "zz" * 12) == ("acc", digest("acc", "#" + "zz" * 12), True)  # not hex: a fact key


def test_changelog_records_in_the_earlier_format_are_found_and_their_key_kept_for_the_tombstone() -> None:
    facts = PackedFacts()
    assert facts.apply(4, "acc-4|s:m1", json.dumps(marker(1)).encode())
    assert facts.apply(4, changelog_key("acc-4", digest("acc-4", "s:m2")), json.dumps(marker(2)).encode())
    assert facts.apply(4, changelog_key("acc-4", digest("acc-4", "s:m3")), marker(3))  # decoded by faust already
    assert not facts.apply(4, "not a fact key", b"[]")
    assert [facts.get(digest("acc-4", f"s:m{i}")) for i in (1, 2, 3)] == [marker(1), marker(2), marker(3)]
    assert facts.legacy == {digest("acc-4", "s:m1"): "acc-4|s:m1"}
    assert facts.delete(digest("acc-4", "s:m1")) == "acc-4|s:m1"  # its old record must go too
    assert facts.delete(digest("acc-4", "s:m2")) is None
    assert facts.apply(4, changelog_key("acc-4", digest("acc-4", "s:m3")), None)  # a tombstone
    assert len(facts) == 0 and facts.legacy == {}
    assert facts.apply(4, "acc-4|s:m9", b"{not json")  # kept as read, not lost
    assert facts.get(digest("acc-4", "s:m9")) == b"{not json"


def test_removing_by_account_or_partition_reports_what_went() -> None:
    facts = PackedFacts()
    for i in range(60):
        facts.put(digest(f"acc-{i % 3}", f"s:{i}"), f"acc-{i % 3}", i % 6, marker(i))
    facts.apply(5, "acc-0|s:old", marker(99))
    gone = facts.remove_where(lambda account, _: account != "acc-0")
    assert len(gone) == 21 and {g[0] for g in gone} == {"acc-0"}
    assert [g[3] for g in gone if g[3] is not None] == ["acc-0|s:old"]
    assert len(facts) == 40
    assert facts.drop_partitions([1, 2]) == sum(1 for i in range(60) if i % 3 and i % 6 in (1, 2))
    assert {p for _, _, p, _ in facts.facts()} == {4, 5}


def test_a_fact_takes_about_forty_bytes() -> None:
    """Issue 17: <= 150 MB per million facts for the whole process. The index itself, at 200,000 facts of real
    ids (the bench measures the process)."""
    facts = PackedFacts()

    def add(facts_from: int, facts_to: int) -> None:
        for i in range(facts_from, facts_to):
            account = f"acct_{i % 5000:032x}"
            facts.put(digest(account, f"s:msg_{i:032x}"), account, i % 6,
                      [f"herald.delivery:{i % 6}", 10_000_000 + i, 1_764_900_000 + i, 0])

    add(0, 100_000)
    half = facts.nbytes()
    add(100_000, 200_000)
    assert RECORD.size == 38
    # each fact more: its record and the bucket's spare room; the buckets themselves (4 MiB) and the account
    # table are paid once
    assert (facts.nbytes() - half) / 100_000 < 45, (facts.nbytes() - half) / 100_000
    assert facts.nbytes() / 200_000 < 65, facts.nbytes() / 200_000
    facts.clear()
    assert len(facts) == 0 and facts.nbytes() < 1 << 20
    assert packed_facts.BUCKET_BITS == 16


def test_a_fact_forgotten_then_remembered_again_survives_the_old_keys_tombstone() -> None:
    """An earlier-format fact forgotten (tombstones under both keys), then claimed again under its new key: in
    whatever order a recovery reads the old key's tombstone and the new record, the fact is held."""
    fact, old = digest("acc", "s:m1"), "acc|s:m1"
    for order in (["old", "new"], ["new", "old"]):
        facts = PackedFacts()
        facts.apply(1, old, json.dumps(marker(1)).encode())
        facts.apply(1, changelog_key("acc", fact), None)
        for step in order:
            if step == "old":
                facts.apply(1, old, None)
            else:
                facts.apply(1, changelog_key("acc", fact), json.dumps(marker(2)).encode())
        assert facts.get(fact) == marker(2), order
    facts = PackedFacts()
    facts.apply(1, old, json.dumps(marker(1)).encode())
    facts.apply(1, old, None)  # its own tombstone: gone
    assert facts.get(fact) is None and facts.legacy == {}


def test_the_facts_come_in_parts_of_buckets_the_odd_ones_with_the_last() -> None:
    facts = PackedFacts()
    for i in range(5_000):
        facts.put(digest("a", f"s:{i}"), "a", 0, marker(i))
    facts.put(digest("a", "odd"), "a", 0, {"garbled": 1})
    parts = [list(facts.facts(start, start + 4096)) for start in range(0, packed_facts.BUCKETS, 4096)]
    assert sorted(f for part in parts for f, _, _, _ in part) == sorted(f for f, _, _, _ in facts.facts())
    assert all(len(part) < 1_000 for part in parts)
    assert [m for _, _, _, m in parts[-1]][-1] == {"garbled": 1}
    assert not any(m == {"garbled": 1} for part in parts[:-1] for _, _, _, m in part)
