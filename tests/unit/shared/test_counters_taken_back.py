"""`readmodel.Counters` when the store refuses the documents a flush counted (written first, for crashes): the
consumer retries the flush, forgets the batch and folds its events again one at a time (`kafka.EventConsumer`),
dead-lettering the event refused; the counts end as the documents stored say, and a replay of the dead letter
(the same event at a new offset) counts it once. Pure: the store is a dict behind `load` and `write_changes`."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from herald_shared import readmodel
from herald_shared.readmodel import UNCOUNTED, Counters
from tests.unit.shared.helpers import Refused, consume

Document = dict[str, Any]
KEY = "acc/l1"


class Store:
    """Counter documents by `_id`, as `load` reads and `write_changes` writes them; `lose_answers` writes that
    reach the store and then fail (the answer lost on the way back)."""

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.lose_answers = 0

    async def load(self, collection: Any, ids: Iterable[str], fields: Document | None = None) -> dict[str, Document]:
        return {i: copy.deepcopy(self.docs[i]) for i in set(ids) if i in self.docs}

    async def write_changes(self, collection: Any, before: Mapping[str, Document],
                            after: Mapping[str, Document | None]) -> None:
        for key, doc in after.items():
            if doc is None:
                self.docs.pop(key, None)
            else:
                self.docs[key] = copy.deepcopy(doc)
        if self.lose_answers:
            self.lose_answers -= 1
            raise ConnectionError("the answer was lost")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Store:
    made = Store()
    monkeypatch.setattr(readmodel, "load", made.load)
    monkeypatch.setattr(readmodel, "write_changes", made.write_changes)
    return made


class Members:
    """A fold like subscriptions': a member added once (a member stored already is skipped, as a document
    that holds its event is), counted in its list ahead of the member documents, which the store writes but
    for the refused ones (an unordered insert), and then refuses the write."""

    def __init__(self, counters: Counters, refused: set[str]) -> None:
        self.counters = counters
        self.refused = refused
        self.stored: set[str] = set()

    async def fold(self, events: list[tuple[int, str]]) -> None:
        try:
            await self.counters.prepare([KEY])
            new = [(offset, member) for offset, member in events if member not in self.stored]
            for offset, _ in new:
                self.counters.add_at(KEY, offset, {"pending": 1})
            await self.counters.write()
            self.stored |= {member for _, member in new if member not in self.refused}
            if any(member in self.refused for _, member in new):
                raise Refused("cannot store it")
        except Exception:
            self.counters.discard()
            raise
        self.counters.settle()

    async def forget(self) -> None:
        self.counters.discard()
        await self.counters.take_back()


def counted(store: Store) -> tuple[int, int, list[int]]:
    doc = store.docs[KEY]
    return doc["counts"]["pending"], doc["through"], doc.get(UNCOUNTED, [])


BATCH = [(10, "s1"), (11, "s2"), (12, "s3")]


@pytest.mark.parametrize("attempts", [2, 3])
async def test_the_counts_hold_the_members_stored_after_a_batch_whose_member_the_store_refuses(
        store: Store, attempts: int) -> None:
    """Without taking back, the refused member stayed counted for good (3 for 2 members stored). The first
    attempt stores the other members; the last one counts only what is still missing."""
    members = Members(Counters(None), refused={"s2"})  # type: ignore[arg-type]
    assert await consume(members, BATCH, attempts) == [11]
    assert members.stored == {"s1", "s3"}
    assert counted(store)[0] == 2


async def test_a_replayed_dead_letter_is_counted_once(store: Store) -> None:
    """The fixed event comes back on the topic at a new offset: counted once, not on top of a count it kept."""
    members = Members(Counters(None), refused={"s2"})  # type: ignore[arg-type]
    await consume(members, BATCH)
    members.refused = set()
    assert await consume(members, [(40, "s2")]) == []
    assert counted(store) == (3, 40, [11])


@pytest.mark.parametrize("attempts", [1, 3])
async def test_a_batch_whose_documents_the_store_refuses_whole_is_counted_as_it_is_stored_again(
        store: Store, attempts: int) -> None:
    """Nothing of it stored (the store refuses the whole write): its events are taken back and each counted
    again when folded alone, the refused one not."""
    members = Members(Counters(None), refused={"s2"})  # type: ignore[arg-type]

    async def fold_all_or_nothing(events: list[tuple[int, str]]) -> None:
        counters = members.counters
        try:
            await counters.prepare([KEY])
            new = [(offset, member) for offset, member in events if member not in members.stored]
            for offset, _ in new:
                counters.add_at(KEY, offset, {"pending": 1})
            await counters.write()
            if any(member in members.refused for _, member in new):
                raise Refused("cannot store it")
            members.stored |= {member for _, member in new}
        except Exception:
            counters.discard()
            raise
        counters.settle()

    members.fold = fold_all_or_nothing  # type: ignore[method-assign]
    assert await consume(members, BATCH, attempts) == [11]
    assert counted(store) == (2, 12, [11])


async def test_taking_back_again_after_a_lost_answer_subtracts_once(store: Store) -> None:
    """The consumer asks `forget` again after an infrastructure error; the write that reached the store noted
    the offsets it took back."""
    counters = Counters(None)  # type: ignore[arg-type]
    members = Members(counters, refused={"s1", "s2", "s3"})
    for _ in range(2):
        with pytest.raises(Refused):
            await members.fold(BATCH)
    assert counted(store) == (3, 12, [])
    store.lose_answers = 1
    with pytest.raises(ConnectionError):
        await members.forget()
    await members.forget()
    assert counted(store) == (0, 12, [10, 11, 12])


async def test_a_crash_after_the_take_back_replays_the_batch_exactly(store: Store) -> None:
    """The batch is read again (its offsets not committed): the events taken back count when stored, once."""
    members = Members(Counters(None), refused={"s2"})  # type: ignore[arg-type]
    with pytest.raises(Refused):
        await members.fold(BATCH)
    with pytest.raises(Refused):
        await members.fold(BATCH)
    await members.forget()
    assert counted(store) == (2, 12, [11]), "s1 and s3 were stored by the first attempt: they stay counted"

    restarted = Members(Counters(None), refused={"s2"})  # type: ignore[arg-type]
    restarted.stored = set(members.stored)
    assert await consume(restarted, BATCH) == [11]
    assert counted(store) == (2, 12, [11])


async def test_a_fold_that_settled_is_not_taken_back(store: Store) -> None:
    """In a group of projections, one whose flush passed is asked to forget with the others: what it counted is
    stored with its documents and stays."""
    counters = Counters(None)  # type: ignore[arg-type]
    await Members(counters, refused=set()).fold(BATCH)
    counters.discard()  # forgetting: nothing of a fold under way
    await counters.take_back()
    assert counted(store) == (3, 12, [])


async def test_a_failed_attempt_that_counted_nothing_keeps_what_the_one_before_left_counted(store: Store) -> None:
    """A flush that fails before the fold counts (a refusal of something written before it) leaves the store's
    counters as the attempt before wrote them: that one's counting is still what to take back."""
    counters = Counters(None)  # type: ignore[arg-type]
    members = Members(counters, refused={"s2"})
    with pytest.raises(Refused):
        await members.fold([(11, "s2")])
    counters.discard()  # the next attempt fails before it prepares anything
    await counters.take_back()
    assert counted(store) == (0, 11, [11])
