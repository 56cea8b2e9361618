"""The GDPR export of a person's activity, all of it (PRODUCT.md, "Subject rights: export ... of one subscriber's
data"): a deferral, with the receiving server's reply, is the person's activity too; and the activity comes a page
at a time, newest first, following `next_cursor` gives every entry once, the oldest included."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from herald_shared.contract.envelope import Identifier
from herald_shared.readmodel import time_key
from herald_subscriptions import domain
from herald_subscriptions.activity import (
    ACTIVITY,
    ACTIVITY_EVENTS,
    Activity,
    activity_key,
    cursor_after,
    entries_after,
    order_key,
)
from herald_subscriptions.api import ActivityCursor, activity_out
from tests.samples import T0, sample

DEFERRED = {"account_id": "acc-1", "subscriber_id": "s1", "at": T0, "kind": "campaign", "message_id": "msg-c1-s1",
            "campaign_id": "c1", "list_id": "l1", "type": "deferred", "smtp_code": 451, "enhanced_status_code": "4.7.1",
            "diagnostic": "try later", "attempt": 2}


def test_a_deferral_is_kept_with_the_receiving_servers_reply() -> None:
    """A deferral's reply ("452 4.2.2 Mailbox of pia is over quota") is what a server said about the person."""
    assert domain.activity_entry(sample("MessageDeferred")) == DEFERRED
    shown = activity_out({**DEFERRED, "_id": "acc-1/s1/t/e1"})
    assert (shown["type"], shown["smtp_code"], shown["diagnostic"], shown["campaign_id"]) == (
        "deferred", 451, "try later", "c1")


def test_the_activity_consumer_reads_every_event_type_the_activity_folds() -> None:
    """The consumer passes over unparsed what its `only` does not name: a type folded but not read is never kept."""
    assert set(domain.ACTIVITY_TYPES) <= set(ACTIVITY_EVENTS["herald.delivery"])


CURSOR: TypeAdapter[str] = TypeAdapter(ActivityCursor)
CRM_IDS = ["crm-42", "CRM:7.a_b", "x", "9" * 128, "a.b.c", "-", ".", "Z" + ":" * 127]


@pytest.mark.parametrize("subscriber_id", [*CRM_IDS, domain.subscriber_id_for("acc1", "vip", "anna@example.com")])
def test_every_next_cursor_is_a_cursor_the_next_page_takes(subscriber_id: str) -> None:
    TypeAdapter(Identifier).validate_python(subscriber_id)  # the contract allows it
    entry_id = activity_key("acc1", subscriber_id, T0, str(uuid.uuid4()))
    cursor = CURSOR.validate_python(cursor_after(entry_id))
    bounds = entries_after("acc1", subscriber_id, cursor)
    assert bounds["$lt"] == entry_id and bounds["$gte"] == f"acc1/{subscriber_id}/"


@pytest.mark.parametrize("cursor", [
    "x", "", "20261102T093000000000Z", "20261102T093000000000Z.not-a-uuid.s1",
    f"2026-11-02T09:30:00Z.{uuid.UUID(int=1)}.s1", f"20261102T093000000000Z.{uuid.UUID(int=1)}.s/1",
    f"20261102T093000000000Z.{uuid.UUID(int=1)}.", f"20261102T093000000000Z.{uuid.UUID(int=1)}." + "a" * 129,
    "20261102T093000000000Z.ABCDEF00-0000-4000-8000-000000000001.s1",
    "\u0662\u0660\u0662\u0666" + f"1102T093000000000Z.{uuid.UUID(int=1)}.s1"])  # Arabic-Indic digits
def test_a_cursor_that_is_none_is_refused(cursor: str) -> None:
    with pytest.raises(ValidationError):
        CURSOR.validate_python(cursor)
    with pytest.raises(ValueError):
        entries_after("acc1", "s1", cursor)


class StoredRange:
    """A find on the activity as the store answers it: the `_id` range, sorted by `_id`, limited, read lazily."""

    def __init__(self, docs: list[dict[str, Any]], bounds: dict[str, str]) -> None:
        self._docs = [d for d in docs if bounds["$gte"] <= d["_id"] < bounds["$lt"]]
        self.fetched = 0

    def sort(self, key: str, direction: int) -> StoredRange:
        assert key == "_id"
        self._docs.sort(key=lambda d: d["_id"], reverse=direction < 0)
        return self

    def limit(self, most: int) -> StoredRange:
        self._docs = self._docs[:most]
        return self

    def batch_size(self, size: int) -> StoredRange:
        return self

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.fetched == len(self._docs):
            raise StopAsyncIteration
        self.fetched += 1
        return self._docs[self.fetched - 1]

    async def close(self) -> None:
        pass


class ActivityCollection:
    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []
        self.reads: list[StoredRange] = []

    def find(self, query: dict[str, Any]) -> StoredRange:
        assert set(query) == {"_id"} and set(query["_id"]) == {"$gte", "$lt"}  # a range of `_id`, nothing else
        self.reads.append(StoredRange(self.docs, query["_id"]))
        return self.reads[-1]


class Database(dict[str, ActivityCollection]):
    pass


def stored(collection: ActivityCollection, entries: list[tuple[str, int, int]]) -> None:
    for subscriber_id, second, event in entries:
        at = T0 + timedelta(seconds=second)
        collection.docs.append({"_id": activity_key("acc", subscriber_id, at, str(uuid.UUID(int=event))),
                                "subscriber_id": subscriber_id, "at": at})


async def every_page(activity: Activity, subscriber_ids: list[str], limit: int) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        page = await activity.page("acc", subscriber_ids, cursor, limit=limit)
        assert len(page.entries) <= limit
        pages.append(page.entries)
        if page.next_cursor is None:
            return pages
        assert CURSOR.validate_python(page.next_cursor) == page.next_cursor
        cursor = page.next_cursor


# Ids that sort differently alone and followed by '/' ('-' and '.' sort before it, 'b' after): the same time in
# two memberships must still come once, in one order.
SUBSCRIBERS = ["a", "a-", "a.b", "ab", "b"]


@settings(max_examples=150, deadline=None)
@given(entries=st.lists(st.tuples(st.sampled_from(SUBSCRIBERS), st.integers(0, 3), st.integers(0, 5)),
                        unique_by=lambda e: (e[0], e[2]), max_size=30),
       limit=st.integers(1, 7))
async def test_following_the_cursors_gives_every_entry_once_newest_first(
        entries: list[tuple[str, int, int]], limit: int) -> None:
    collection = ActivityCollection()
    stored(collection, entries)
    pages = await every_page(Activity(Database({ACTIVITY: collection})), SUBSCRIBERS, limit)  # type: ignore[arg-type]
    given_ids = [d["_id"] for page in pages for d in page]
    assert given_ids == sorted((d["_id"] for d in collection.docs), key=order_key, reverse=True)
    assert all(len(page) == limit for page in pages[:-1])
    times = [d["at"] for page in pages for d in page]
    assert times == sorted(times, reverse=True)


async def test_a_page_reads_each_membership_only_as_far_as_the_merge_needs() -> None:
    """A person on many lists: a page holds its own entries, not `limit` of each membership's."""
    collection = ActivityCollection()
    stored(collection, [(s, second, second) for s in SUBSCRIBERS for second in range(100)])
    page = await Activity(Database({ACTIVITY: collection})).page("acc", SUBSCRIBERS, limit=10)  # type: ignore[arg-type]
    assert [time_key(d["at"]) for d in page.entries] == [time_key(T0 + timedelta(seconds=99))] * 5 + [
        time_key(T0 + timedelta(seconds=98))] * 5
    assert sum(read.fetched for read in collection.reads) <= 10 + 1 + len(SUBSCRIBERS)
    assert page.next_cursor is not None and re.match(r"^\d{8}T", page.next_cursor)
