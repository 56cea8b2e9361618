"""`readmodel.SecondaryIndex` when the store refuses the documents a fold listed (the listing is written first, for
crashes): the consumer retries the flush, forgets the batch and folds its events again one at a time
(`kafka.EventConsumer`), dead-lettering each event refused; the listing ends as the documents stored say. Pure: the
store is dicts behind the collection methods `load`, `insert_new` and `delete_many` call."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymongo.errors import BulkWriteError

from herald_shared.readmodel import DUPLICATE_KEY, SecondaryIndex, States, relisted
from tests.unit.shared.helpers import Refused, consume

Document = dict[str, Any]
STATUSES = ("pending", "active", "unsubscribed", "erased")


def listing_key(doc: Document) -> str | None:
    """As subscriptions lists a membership: by status, an erased one nowhere."""
    return None if doc["status"] == "erased" else f"l1/{doc['status']}/{doc['_id']}"


class Collection:
    """Documents by `_id`, as `load`, `insert_new` and `delete_many` find them; `away` fails every read."""

    def __init__(self, docs: dict[str, Document] | None = None) -> None:
        self.docs = docs or {}
        self.away = False

    def find(self, query: Document, fields: Document | None = None) -> Found:
        if self.away:
            raise ConnectionError("the store is away")
        return Found([copy.deepcopy(self.docs[i]) for i in query["_id"]["$in"] if i in self.docs])

    async def insert_many(self, docs: list[Document], ordered: bool = True) -> None:
        existed = [n for n, doc in enumerate(docs) if doc["_id"] in self.docs]
        self.docs.update((doc["_id"], copy.deepcopy(doc)) for doc in docs if doc["_id"] not in self.docs)
        if existed:
            raise BulkWriteError({"writeErrors": [{"index": n, "code": DUPLICATE_KEY} for n in existed]})

    async def delete_many(self, query: Document) -> None:
        for doc_id in query["_id"]["$in"]:
            self.docs.pop(doc_id, None)


class Found:
    def __init__(self, docs: list[Document]) -> None:
        self.docs = docs

    async def to_list(self) -> list[Document]:
        return self.docs


Event = tuple[int, str, str]  # offset, member, the status it gives


class Members:
    """A fold like subscriptions': each event sets a member's status (a member that holds the event already is
    skipped), listed ahead of the member documents, which the store then writes: all but the refused ones (an
    unordered write), or none of them when `whole`, and refuses the write."""

    def __init__(self, members: Collection, listing: Collection, refused: set[int], whole: bool = False) -> None:
        self.members, self.listing, self.refused, self.whole = members, listing, refused, whole
        self.index = SecondaryIndex(listing, listing_key, documents=members)  # type: ignore[arg-type]

    async def fold(self, events: list[Event]) -> None:
        try:
            docs = {m: copy.deepcopy(d) for m, d in self.members.docs.items()}
            before = dict(docs)
            states = States(docs)
            for offset, member, status in events:
                old = docs.get(member)
                if (old is None and status != "pending") or (old is not None and offset in old["applied"]):
                    continue  # (a member is added pending; a confirmation of no member changes nothing)
                states.set(member, {"_id": member, "status": status,
                                    "applied": [*(old or {}).get("applied", []), offset]})
            changed = {m: d for m, d in docs.items() if d is not before.get(m)}
            await self.index.write(before, changed, states.passed)
            refused = {m for m, d in changed.items() if self.refused & set(d["applied"])}
            if not (refused and self.whole):
                self.members.docs.update((m, d) for m, d in changed.items() if m not in refused)
            if refused:
                raise Refused(f"cannot store {sorted(refused)}")
        except Exception:
            self.index.discard()
            raise
        self.index.settle()

    async def forget(self) -> None:
        self.index.discard()
        await self.index.take_back()


def listed_as_stored(members: Members) -> tuple[list[str], list[str]]:
    keys = sorted(k for d in members.members.docs.values() if (k := listing_key(d)) is not None)
    return sorted(members.listing.docs), keys


def stored_listing(docs: dict[str, Document]) -> tuple[Collection, Collection]:
    return Collection(copy.deepcopy(docs)), Collection({k: {"_id": k} for d in docs.values()
                                                        if (k := listing_key(d)) is not None})


def member(member_id: str, status: str, *applied: int) -> Document:
    return {"_id": member_id, "status": status, "applied": list(applied)}


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("attempts", [1, 3])
async def test_a_member_the_store_refuses_is_listed_nowhere_and_the_ones_around_it_once(
        attempts: int, whole: bool) -> None:
    """Without taking back, s2 stayed listed twice: as active (the batch's fold) and as pending (its own)."""
    members = Members(*stored_listing({}), refused={11}, whole=whole)
    batch = [(10, "s1", "pending"), (11, "s2", "pending"), (12, "s2", "active"), (13, "s3", "pending"),
             (14, "s1", "active")]
    assert await consume(members, batch, attempts) == [11]
    assert sorted(members.members.docs) == ["s1", "s3"]
    assert sorted(members.listing.docs) == ["l1/active/s1", "l1/pending/s3"]


@pytest.mark.parametrize("whole", [False, True])
async def test_a_refused_change_of_a_stored_member_leaves_it_listed_where_the_store_holds_it(whole: bool) -> None:
    """Without taking back, s1 was listed nowhere (its key removed, the new one's document refused), and as
    pending too; s2's change keeps its key."""
    stored = {"s1": member("s1", "unsubscribed", 1), "s2": member("s2", "active", 2)}
    members = Members(*stored_listing(stored), refused={20, 21}, whole=whole)
    batch = [(20, "s1", "pending"), (21, "s2", "active"), (22, "s3", "pending"), (23, "s3", "active")]
    assert await consume(members, batch) == [20, 21]
    assert {m: members.members.docs[m] for m in stored} == stored
    assert sorted(members.listing.docs) == ["l1/active/s2", "l1/active/s3", "l1/unsubscribed/s1"]


async def test_a_fold_that_settled_is_not_taken_back() -> None:
    """In a group of projections, one whose flush passed is asked to forget with the others: its keys stand."""
    members = Members(*stored_listing({}), refused=set())
    await members.fold([(10, "s1", "pending")])
    await members.forget()
    assert sorted(members.listing.docs) == ["l1/pending/s1"]


async def test_taking_back_again_after_a_failure_lists_as_stored() -> None:
    """The consumer asks `forget` again after an infrastructure error: what to take back is kept until then."""
    members = Members(*stored_listing({"s1": member("s1", "active", 1)}), refused={10})
    with pytest.raises(Refused):
        await members.fold([(10, "s1", "unsubscribed")])
    members.members.away = True
    with pytest.raises(ConnectionError):
        await members.forget()
    members.members.away = False
    await members.forget()
    assert sorted(members.listing.docs) == ["l1/active/s1"]


async def test_an_index_not_told_its_documents_remembers_nothing() -> None:
    listing = Collection()
    index = SecondaryIndex(listing, listing_key)  # type: ignore[arg-type]
    await index.write({}, {"s1": member("s1", "active")})
    index.discard()
    await index.take_back()
    assert sorted(listing.docs) == ["l1/active/s1"]


def test_relisted_keeps_each_documents_own_key_and_removes_the_rest() -> None:
    listing = {"s1": {"l1/active/s1", "l1/unsubscribed/s1"}, "s2": {"l1/pending/s2"},
               "s3": {"l1/pending/s3", "l1/active/s3"}, "s4": {"l1/active/s4"}}
    stored = {"s1": member("s1", "unsubscribed"), "s3": member("s3", "active"), "s4": member("s4", "erased")}
    removed, kept = relisted(listing, stored, listing_key)
    assert removed == {"l1/active/s1", "l1/pending/s2", "l1/pending/s3", "l1/active/s4"}
    assert kept == {"l1/unsubscribed/s1", "l1/active/s3"}


events = st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(STATUSES)), min_size=1,
                  max_size=8)


@given(stored=st.dictionaries(st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(STATUSES)), batch=events,
       refused=st.sets(st.integers(0, 7)), attempts=st.integers(1, 3), whole=st.booleans())
def test_the_listing_holds_the_documents_stored_whatever_the_store_refuses(
        stored: dict[str, str], batch: list[tuple[str, str]], refused: set[int], attempts: int,
        whole: bool) -> None:
    docs = {m: member(m, status, 100 + n) for n, (m, status) in enumerate(sorted(stored.items()))}
    members = Members(*stored_listing(docs), refused=refused, whole=whole)
    asyncio.run(consume(members, [(n, m, status) for n, (m, status) in enumerate(batch)], attempts))
    listing, keys = listed_as_stored(members)
    assert listing == keys
