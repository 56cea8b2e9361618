"""herald_shared.readmodel.KeyedReader on the real store: concurrent reads by `_id` share queries, each caller
gets its own document, a read sees every write completed before it was asked for, and an error reaches every
caller of its round. And Checkpoints: a batch this process flushed wakes its waiters before it is stored."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import PyMongoError

from herald_shared.mongo import Checkpoints, Document
from herald_shared.readmodel import KeyedReader
from herald_shared.settings import HeraldSettings


class Finds(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += event.command_name == "find"

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_concurrent_reads_share_queries_and_each_caller_gets_its_own_document(settings: HeraldSettings) -> None:
    finds = Finds()
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_url, event_listeners=[finds])
    try:
        collection = client[settings.database_name("reader")]["docs"]
        await collection.insert_many([{"_id": f"d{n:03}", "n": n} for n in range(200)])
        reader = KeyedReader(collection)
        wanted = [f"d{n:03}" for n in range(0, 300, 3)] + ["d003", "d003"]  # 33 absent, one asked three times
        finds.count = 0
        found = await asyncio.gather(*(reader.get(i) for i in wanted))
        # The first read goes out alone (nothing was out), every later one joins the next round: at most two.
        assert 1 <= finds.count <= 2
        assert [d["n"] if d else None for d in found] == [n if n < 200 else None for n in range(0, 300, 3)] + [3, 3]
        copies = [d for d, i in zip(found, wanted, strict=True) if i == "d003"]
        copies[0]["n"] = -1  # a caller changing its document changes no one else's
        assert [d["n"] for d in copies] == [-1, 3, 3]
        assert await reader.get_many(["d001", "zzz", "d001"]) == {"d001": {"_id": "d001", "n": 1}}
    finally:
        await client.close()


async def test_a_read_sees_every_write_completed_before_it_was_asked(settings: HeraldSettings,
                                                                     mongo: AsyncMongoClient[Document]) -> None:
    collection = mongo[settings.database_name("reader")]["docs"]
    reader = KeyedReader(collection)
    for n in range(20):
        # A read is out while the write happens; the read asked for after the write must not join it.
        early = asyncio.ensure_future(reader.get(f"w{n}"))
        await asyncio.sleep(0)
        await collection.insert_one({"_id": f"w{n}", "n": n})
        assert await reader.get(f"w{n}") == {"_id": f"w{n}", "n": n}
        await early


async def test_an_error_reaches_every_caller_of_its_round_and_the_reader_recovers(settings: HeraldSettings) -> None:
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_url, serverSelectionTimeoutMS=300)
    collection = client[settings.database_name("reader")]["docs"]
    reader = KeyedReader(collection)
    await client.close()
    results = await asyncio.gather(*(reader.get(f"x{n}") for n in range(5)), return_exceptions=True)
    assert all(isinstance(r, PyMongoError | RuntimeError) for r in results), results
    client = AsyncMongoClient(settings.mongodb_url)
    try:
        reader = KeyedReader(client[settings.database_name("reader")]["docs"])
        assert await reader.get("x0") is None
    finally:
        await client.close()


async def test_a_flushed_batch_wakes_its_waiters_before_the_checkpoint_is_stored(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    db = mongo[settings.database_name("checkpoints")]
    checkpoints = Checkpoints(db, "projection")
    waiter = asyncio.ensure_future(checkpoints.wait_until_applied([("t", 0, 41)]))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    checkpoints.flushed({("t", 0): 41})  # the next offset 41: offset 41 itself is not applied yet
    await asyncio.sleep(0.1)
    assert not waiter.done()
    checkpoints.flushed({("t", 0): 42})
    await asyncio.wait_for(waiter, timeout=0.5)
    assert await db["checkpoints.projection"].find_one({"_id": "t:0"}) is None  # stored later, by `save`
    await checkpoints.save({("t", 0): 42})
    assert (await db["checkpoints.projection"].find_one({"_id": "t:0"}) or {}).get("next_offset") == 42
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await checkpoints.wait_until_applied([("t", 0, 42)])


async def test_callers_of_a_round_cut_short_are_cancelled_not_left_waiting(settings: HeraldSettings,
                                                                            mongo: AsyncMongoClient[Document]) -> None:
    reader = KeyedReader(mongo[settings.database_name("reader")]["docs"])
    waiting = asyncio.ensure_future(reader.get("a"))
    await asyncio.sleep(0)  # the caller has asked
    await asyncio.sleep(0)  # the round is out, waiting on the store
    assert reader._reading is not None
    reader._reading.cancel()  # what a shutdown does to it
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, timeout=2)
    assert await reader.get("a") is None  # a new round starts for the next caller


async def test_waiters_elsewhere_share_one_read_of_the_stored_checkpoint_and_wake_when_it_moves(
        settings: HeraldSettings) -> None:
    """An API-only process (its partitions folded by another process): its many waiters cost one read of the
    stored checkpoint per interval between them, and are woken once the other process stores it."""
    finds = Finds()
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_url, event_listeners=[finds])
    try:
        db = client[settings.database_name("checkpoints")]
        api, folder = Checkpoints(db, "projection"), Checkpoints(db, "projection")
        waiters = [asyncio.ensure_future(api.wait_until_applied([("t", 3, 41)])) for _ in range(20)]
        await asyncio.sleep(0.2)
        assert not any(w.done() for w in waiters)
        polls = finds.count
        assert 2 <= polls <= 0.2 / Checkpoints.POLL_INTERVAL + 5, polls  # ~20: one poller, not one per waiter
        await folder.save({("t", 3): 42})  # the other process's consumer stores it
        await asyncio.wait_for(asyncio.gather(*waiters), timeout=1)
        await asyncio.sleep(3 * Checkpoints.POLL_INTERVAL)
        assert not api._pollers  # nobody waits: nothing polls
        stopped = finds.count
        await asyncio.sleep(0.1)
        assert finds.count == stopped
    finally:
        await client.close()
