"""A rebuild loads only the members and addresses it may have written (`store.WrittenKeys`): never one it wrote
left out (that would fold over nothing and lose what is stored), and few it did not write (a load each)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herald_subscriptions.store import WrittenKeys

keys = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/"), max_size=40).map(lambda k: f"acme/{k}")


@given(st.lists(st.lists(keys, max_size=20), max_size=10), st.lists(keys, max_size=20))
def test_every_key_written_in_any_batch_is_loaded(batches: list[list[str]], asked: list[str]) -> None:
    written = WrittenKeys()
    for batch in batches:
        written.add(batch)
    every = {key for batch in batches for key in batch}
    assert written.maybe([*every, *asked]) >= every


def test_keys_never_written_are_rarely_loaded() -> None:
    written = WrittenKeys()
    written.add(f"acct{i % 7}/s{i:08x}" for i in range(200_000))
    assert written.maybe(f"acct{i % 7}/s{i:08x}" for i in range(200_000)) == {
        f"acct{i % 7}/s{i:08x}" for i in range(200_000)}
    others = written.maybe(f"acct{i % 7}/t{i:08x}" for i in range(200_000))
    assert len(others) < 20  # expected: ~0.004 of 200,000 (2**26 bits, 4 probes)


def test_nothing_written_loads_nothing() -> None:
    assert WrittenKeys().maybe(["acme/s1", "acme/abc", ""]) == set()
