"""`mongo.FoldingProjection`: which events wait for the fold, what a failed fold leaves for the next flush, and
what `forget` drops (pure logic: nothing staged is ever written, so no database is asked)."""

from __future__ import annotations

from typing import Any

import pytest

from herald_shared.contract import Event
from herald_shared.contract.subscriptions import ListCreated, ListRenamed
from herald_shared.mongo import FoldingProjection, ProjectionGroup, UpdateOne, WriteOp


def listed(list_id: str) -> ListCreated:
    return ListCreated(account_id="acc", producer="subscriptions",
                       payload={"list_id": list_id, "name": list_id, "opt_in": "single"})


def renamed(list_id: str) -> ListRenamed:
    return ListRenamed(account_id="acc", producer="subscriptions",
                       payload={"list_id": list_id, "name": "new"})


class Folding(FoldingProjection):
    folded = (ListCreated,)

    def __init__(self, failures: int = 0) -> None:
        super().__init__(db=None)  # type: ignore[arg-type]  # nothing is staged, so nothing is written
        self.failures = failures
        self.folds: list[list[Event]] = []
        self.applied: list[Event] = []
        self.discarded = 0

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        self.applied.append(event)
        return []

    async def fold(self, events: list[Event]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the store is away")
        self.folds.append(list(events))

    def discard(self) -> None:
        self.discarded += 1


async def test_events_of_the_folded_types_are_folded_together_at_the_flush_and_every_event_is_applied() -> None:
    projection = Folding()
    events: list[Any] = [listed("a"), renamed("a"), listed("b")]
    for event in events:
        await projection.handle(event)
    assert projection.folds == []  # nothing before the flush
    await projection.flush()
    assert projection.folds == [[events[0], events[2]]]
    assert projection.applied == events
    await projection.flush()  # nothing new: fold is not asked with an empty batch
    assert projection.folds == [[events[0], events[2]]]


async def test_a_failed_fold_discards_its_state_and_keeps_its_events_ahead_of_newer_ones() -> None:
    projection = Folding(failures=1)
    first, second, later = listed("a"), listed("b"), listed("c")
    await projection.handle(first)
    await projection.handle(second)
    with pytest.raises(ConnectionError):
        await projection.flush()
    assert projection.discarded == 1
    await projection.handle(later)
    await projection.flush()
    assert projection.folds == [[first, second, later]]
    assert projection.discarded == 1


async def test_forgetting_drops_the_events_waiting_for_the_fold_and_what_a_failed_fold_left() -> None:
    """A batch the store refuses is handled again event by event (`kafka.EventConsumer`): what it staged must
    not be folded a second time."""
    projection = Folding(failures=1)
    first, second, again = listed("a"), listed("b"), listed("a")
    await projection.handle(first)
    await projection.handle(second)
    with pytest.raises(ConnectionError):
        await projection.flush()
    await projection.forget()
    assert projection.discarded == 2  # the failed fold's, then the forgetting's
    await projection.handle(again)
    await projection.flush()
    assert projection.folds == [[again]]


class Staging(Folding):
    """Stages a write for every event (never written: each test forgets before a flush)."""

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        return [("lists", UpdateOne({"_id": event.payload.list_id}, {"$set": {"n": 1}}))]  # type: ignore[attr-defined]


async def test_forgetting_drops_the_writes_staged_in_every_projection_of_a_group() -> None:
    one, other = Staging(), Staging()
    group = ProjectionGroup(one, other)
    await group.handle(renamed("a"))
    await group.handle(listed("b"))
    await group.forget()
    await group.flush()  # nothing staged is left to write (db=None would fail it), nothing to fold
    assert (one.folds, other.folds, one.discarded, other.discarded) == ([], [], 1, 1)


class Part:
    """Something a fold writes ahead of its documents (a listing, counts): what it is told, in order."""

    def __init__(self, name: str, told: list[str]) -> None:
        self.name, self.told = name, told

    def settle(self) -> None:
        self.told.append(f"{self.name} settle")

    def discard(self) -> None:
        self.told.append(f"{self.name} discard")

    async def take_back(self) -> None:
        self.told.append(f"{self.name} take_back")


class WritingAhead(FoldingProjection):
    folded = (ListCreated,)

    def __init__(self, failures: int, told: list[str]) -> None:
        super().__init__(db=None)  # type: ignore[arg-type]  # nothing is staged, so nothing is written
        self.failures = failures
        self.listing = self.ahead(Part("listing", told))
        self.counts = self.ahead(Part("counts", told))

    def apply(self, event: Event) -> list[tuple[str, WriteOp]]:
        return []

    async def fold(self, events: list[Event]) -> None:
        if self.failures:
            self.failures -= 1
            raise ValueError("the store refuses a document")


async def test_what_a_fold_writes_ahead_is_told_how_each_fold_ended_and_taken_back_when_the_batch_is_forgotten(
        ) -> None:
    told: list[str] = []
    projection = WritingAhead(failures=1, told=told)
    await projection.handle(listed("a"))
    with pytest.raises(ValueError):
        await projection.flush()
    await projection.forget()
    assert told == ["listing discard", "counts discard", "listing discard", "counts discard",
                    "listing take_back", "counts take_back"]
    told.clear()
    await projection.handle(listed("a"))
    await projection.flush()
    assert told == ["listing settle", "counts settle"]
