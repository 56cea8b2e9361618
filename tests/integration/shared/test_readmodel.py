"""herald_shared.readmodel on the real store: writes of a fold, listings as `_id` ranges, counters that stay
exact when a batch is applied again after a crash."""

from __future__ import annotations

from pymongo import AsyncMongoClient

from herald_shared.contract.envelope import RecordPosition
from herald_shared.contract.subscriptions import SubscriberConfirmed
from herald_shared.mongo import Document
from herald_shared.readmodel import (
    Counters,
    SecondaryIndex,
    States,
    compose,
    insert_new,
    load,
    prefix_range,
    write_changes,
)
from herald_shared.settings import HeraldSettings


def confirmed_at(offset: int | None) -> SubscriberConfirmed:
    event = SubscriberConfirmed(account_id="acc", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": f"s{offset}", "method": "single_opt_in"})
    if offset is not None:
        event.read_at(RecordPosition("herald.subscriptions", 0, offset))
    return event


async def test_write_changes_inserts_new_updates_changed_and_deletes(settings: HeraldSettings,
                                                                     mongo: AsyncMongoClient[Document]) -> None:
    collection = mongo[settings.database_name("fold")]["docs"]
    await collection.insert_many([{"_id": "a", "n": 1, "gone": True}, {"_id": "b", "n": 2}, {"_id": "c", "n": 3}])
    before = await load(collection, ["a", "b", "c", "d"])
    assert sorted(before) == ["a", "b", "c"]
    # "e" is new to the fold but was written before a crash: the fold's version wins.
    await collection.insert_one({"_id": "e", "n": 0})
    await write_changes(collection, before, {"a": {"_id": "a", "n": 10}, "c": None, "d": {"_id": "d", "n": 4},
                                             "e": {"_id": "e", "n": 5}})
    assert [d async for d in collection.find({}).sort("_id", 1)] == [
        {"_id": "a", "n": 10}, {"_id": "b", "n": 2}, {"_id": "d", "n": 4}, {"_id": "e", "n": 5}]
    assert await insert_new(collection, [{"_id": "a", "n": 0}, {"_id": "f", "n": 6}]) == {"a"}
    assert (await collection.find_one({"_id": "a"}))["n"] == 10  # type: ignore[index]


async def test_a_listing_is_exactly_its_prefix_and_pages_in_order(settings: HeraldSettings,
                                                                  mongo: AsyncMongoClient[Document]) -> None:
    collection = mongo[settings.database_name("listing")]["listing"]
    index = SecondaryIndex(collection, lambda doc: compose(doc["account"], doc["list"], doc["status"], doc["_id"])
                           if doc["status"] != "erased" else None)
    members = {f"s{i:03d}": {"_id": f"s{i:03d}", "account": "acc", "list": "news", "status": "active"}
               for i in range(25)}
    # Lists and accounts whose names continue or extend "acc/news" must never show up in its range.
    others = {key: {"_id": key, "account": account, "list": lst, "status": "active"}
              for key, account, lst in [("x1", "acc", "news-2"), ("x2", "acc", "news.b"), ("x3", "acc", "news:c"),
                                        ("x4", "acc", "new"), ("x5", "acc-2", "news"), ("x6", "ac", "cnews")]}
    await index.write({}, {**members, **others})
    keys: list[str] = []
    after = None
    while page := await index.keys("acc", "news", after=after, limit=10):
        keys += page
        after = page[-1]
    assert keys == [compose("acc", "news", "active", f"s{i:03d}") for i in range(25)]
    assert await index.keys("acc", "news", "unsubscribed") == []
    # A status change moves the key; erasure removes it; writing the same change again changes nothing.
    changed = {"s001": {**members["s001"], "status": "unsubscribed"}, "s002": {**members["s002"], "status": "erased"}}
    for _ in range(2):
        await index.write(members, changed)
    assert await index.keys("acc", "news", "unsubscribed") == [compose("acc", "news", "unsubscribed", "s001")]
    assert len(await index.keys("acc", "news", "active", limit=100)) == 23
    assert prefix_range("acc", "news") == {"$gte": "acc/news/", "$lt": "acc/news0"}


async def test_counters_count_each_event_once_when_a_batch_is_applied_again(settings: HeraldSettings,
                                                                            mongo: AsyncMongoClient[Document]) -> None:
    collection = mongo[settings.database_name("counters")]["counts"]
    counters = Counters(collection)
    batch = [confirmed_at(offset) for offset in range(10, 20)]

    async def fold(events: list[SubscriberConfirmed]) -> None:
        await counters.prepare(["acc/news"])
        for event in events:
            counters.add("acc/news", event, {"pending": -1, "active": 1})
        await counters.write()

    await fold(batch)
    await fold(batch)  # the same batch after a crash before its offsets were committed
    await fold([*batch[5:], confirmed_at(20)])  # a rebalance re-delivers a tail, then one new event
    assert await counters.read("acc/news") == {"pending": -11, "active": 11}
    await fold([confirmed_at(None)])  # an event made here, never read from Kafka, always counts
    assert await counters.read("acc/news") == {"pending": -12, "active": 12}
    assert await counters.read("acc/other") == {}


async def test_a_listing_written_by_a_shorter_fold_before_a_crash_is_mended_by_the_longer_one(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    """The fold that dies wrote the listing of the states its batch ended in; the one after the restart starts
    from the same documents with a longer batch and passes over those states (`States`): their keys go, and a
    document that ends where it started is listed there again."""
    collection = mongo[settings.database_name("mended")]["listing"]
    index = SecondaryIndex(collection, lambda doc: compose("acc", doc["status"], doc["_id"]))
    start = {"a": {"_id": "a", "status": "pending"}, "b": {"_id": "b", "status": "active"}}
    await index.write({}, start)
    # The dead fold: a confirmed (pending -> active), b paused (active -> paused); its documents never written.
    await index.write(start, {"a": {"_id": "a", "status": "active"}, "b": {"_id": "b", "status": "paused"}})
    # The fold after the restart: a also unsubscribed, b also resumed (back where it started, so unchanged).
    after: dict[str, Document | None] = dict(start)
    states = States(after)
    states.set("a", {"_id": "a", "status": "active"})
    states.set("a", {"_id": "a", "status": "unsubscribed"})
    states.set("b", {"_id": "b", "status": "paused"})
    states.set("b", {"_id": "b", "status": "active"})
    changed = {k: v for k, v in after.items() if v != start.get(k)}
    assert list(changed) == ["a"]
    await index.write(start, changed, states.passed)
    assert [d["_id"] async for d in collection.find({}).sort("_id", 1)] == ["acc/active/b", "acc/unsubscribed/a"]
    # Without what it passed over, the same write leaves both of the dead fold's keys.
    await index.write({}, {"a": {"_id": "a", "status": "active"}, "b": {"_id": "b", "status": "paused"}})
    await index.write(start, changed)
    assert "acc/active/a" in [d["_id"] async for d in collection.find({})]
