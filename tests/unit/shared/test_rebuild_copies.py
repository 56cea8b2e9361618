"""A rebuild passes over a copy of an event it folded, however far behind it comes (`mongo.RunCopies`), as the live
consumer does: remembered types by the store, self-deduplicated ones left to their documents; and it holds no id per
event in memory (issue 11: a million-member rebuild kept a set of two million ids)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.subscriptions import SubscriberAdded
from herald_shared.mongo import RunCopies
from tests.samples import sample


class MemoryStore:
    """The deduplicator's store (MongoDB in a rebuild), counting the ids it is asked about."""

    def __init__(self) -> None:
        self.ids: set[str] = {"left-by-an-earlier-run"}
        self.asked: list[str] = []

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        self.asked.extend(event_ids)
        return {i for i in event_ids if i in self.ids}

    async def remember(self, event_ids: Sequence[str]) -> None:
        self.ids.update(event_ids)

    async def drop(self) -> None:
        self.ids.clear()


async def fold(copies: RunCopies, batch: list[Event]) -> list[Event]:
    """What `mongo.rebuild` does with a batch: its first events handed on, then remembered."""
    firsts = await copies.firsts(batch)
    await copies.remember(firsts)
    return firsts


RENAMED = sample("ListRenamed", "acme")


def renamed(account_id: str) -> Event:
    """A ListRenamed of its own id (copied: validating thousands of samples would be most of the test's time)."""
    return RENAMED.model_copy(update={"event_id": uuid.uuid4(), "account_id": account_id})


async def test_a_copy_batches_behind_its_original_is_passed_over_and_a_self_deduplicated_one_left_to_its_document(
        ) -> None:
    store = MemoryStore()
    copies = RunCopies(store, (SubscriberAdded,))
    await copies.start()
    assert store.ids == set()  # the run's ids alone: what an earlier run left is no copy of this one's
    original, added = renamed("acme"), sample("SubscriberAdded", "acme")
    assert await fold(copies, [original, added]) == [original, added]
    for batch in range(3):
        filler = [renamed(f"filler-{batch}-{i}") for i in range(1000)]
        assert await fold(copies, filler) == filler

    last = renamed("acme")
    assert await fold(copies, [original, added, last, last, added]) == [added, last]
    assert str(added.event_id) not in store.ids  # its document keeps it (`readmodel.applied`)


async def test_the_store_is_asked_only_about_ids_the_run_may_have_remembered() -> None:
    store = MemoryStore()
    copies = RunCopies(store)
    await copies.start()
    events = [renamed(f"a{i}") for i in range(5000)]
    for start in range(0, len(events), 1000):
        await fold(copies, events[start:start + 1000])
    assert store.asked == []
    assert await fold(copies, [events[10], renamed("new")]) != []
    assert str(events[10].event_id) in store.asked


def held_bytes(value: Any, seen: set[int] | None = None) -> int:
    """The memory an object holds, its containers and attributes followed (classes, types and events not)."""
    seen = seen if seen is not None else set()
    if id(value) in seen or isinstance(value, type):
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(held_bytes(k, seen) + held_bytes(v, seen) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        size += sum(held_bytes(item, seen) for item in value)
    elif hasattr(value, "__dict__"):
        size += held_bytes(vars(value), seen)
    return size


async def test_what_the_rebuild_holds_does_not_grow_with_the_events() -> None:
    store = MemoryStore()
    copies = RunCopies(store, (SubscriberAdded,))
    await copies.start()

    def held() -> int:
        return held_bytes({k: v for k, v in vars(copies).items() if k != "store"})

    await fold(copies, [renamed("acme")])
    first = held()
    for batch in range(20):
        await fold(copies, [renamed(f"b{batch}-{i}") for i in range(1000)])
    assert len(store.ids) == 20_001  # the ids are the store's (MongoDB's), not the process's
    assert held() == first
    assert first < (1 << 20) + 10_000  # the filter's fixed 1 MiB, and next to nothing else
