"""The local store serves Herald's access paths from the primary key index, proven by PostgreSQL's own
counters under FerretDB (deploy/local/ferretdb/*.patch), not by timing; and large write commands answer.

The index counters are read from the PostgreSQL that `scripts/stack` runs under FerretDB. Against another
MongoDB (MONGODB_URL, a mongod on PATH) there is no such PostgreSQL and those tests are skipped; the
write-size test runs on any server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest
from pymongo import AsyncMongoClient, UpdateOne

from herald_shared.mongo import Document
from herald_shared.readmodel import load, prefix_range
from herald_shared.settings import HeraldSettings
from tests.conftest import ROOT

DOCS = 3_000
LOOKUPS = 200


def stack_sql(query: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL")}
    done = subprocess.run([ROOT / "scripts" / "stack", "psql", "-tAc", query], env=env, capture_output=True,
                          text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return done.stdout.strip()


@pytest.fixture
def postgres_under_ferretdb(settings: HeraldSettings) -> None:
    status = subprocess.run([ROOT / "scripts" / "stack", "status"], capture_output=True, text=True, check=False,
                            env={k: v for k, v in os.environ.items() if k != "MONGODB_URL"})
    if "postgres running" not in status.stdout or "mongodb  running" not in status.stdout:
        pytest.skip("MongoDB is not the stack's FerretDB on PostgreSQL: " + status.stdout)


def table_of(database: str, collection: str) -> str:
    return stack_sql(f"SELECT _jsonb->>'table' FROM \"{database}\"._ferretdb_database_metadata "
                     f"WHERE _jsonb->>'_id' = '{collection}'")


async def scans(database: str, table: str) -> tuple[int, int, int]:
    """(sequential scans, index scans, rows fetched by index scans) of one table, as PostgreSQL counts them."""
    row = await asyncio.to_thread(stack_sql, "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0), "
                                  "coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables "
                                  f"WHERE schemaname = '{database}' AND relname = '{table}'")
    seq, idx, fetched = row.split("|")
    return int(seq), int(idx), int(fetched)


# A PostgreSQL backend that goes idle publishes its counters at most every ten seconds
# (PGSTAT_IDLE_INTERVAL); FerretDB spreads its statements over pooled backends. Counters are settled once
# they stayed the same for longer than that.
QUIET = 11.0


async def settled(database: str, tables: list[str]) -> dict[str, tuple[int, int, int]]:
    found = {table: await scans(database, table) for table in tables}
    quiet_since = time.monotonic()
    deadline = quiet_since + 90
    while time.monotonic() - quiet_since < QUIET and time.monotonic() < deadline:
        await asyncio.sleep(1)
        again = {table: await scans(database, table) for table in tables}
        if again != found:
            found, quiet_since = again, time.monotonic()
    return found


async def filled(mongo: AsyncMongoClient[Document], settings: HeraldSettings, name: str) -> tuple[str, str]:
    database = settings.database_name("paths")
    collection = mongo[database][name]
    for start in range(0, DOCS, 1000):
        await collection.insert_many([{"_id": f"acc/list/{i:06d}", "status": "active", "n": i}
                                      for i in range(start, start + 1000)])
    return database, table_of(database, name)


async def test_lookups_updates_in_and_ranges_on_id_use_the_index(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document], postgres_under_ferretdb: None) -> None:
    """Each access path on its own table; every one must add index scans and not one sequential scan.
    (Creating a collection builds its `_id` index, which PostgreSQL counts as a sequential scan: the
    counters are read once that has settled.)"""
    database, by_id = await filled(mongo, settings, "by_id")
    _, in_id = await filled(mongo, settings, "in_id")
    _, range_id = await filled(mongo, settings, "range_id")
    neighbours = ["acc/list", "acc/list0", "acc/list-2/x", "acc/lis/x", "acc/list.b/x", "acc/list:c/x", "acc/list/"]
    await mongo[database]["range_id"].insert_many([{"_id": key, "n": -1} for key in neighbours])
    # As in a real read model, the range is a part of its table (other lists): there a page is read through
    # the index; over a whole small table the planner rightly prefers one sequential read.
    for other in range(1, 10):
        await mongo[database]["range_id"].insert_many([{"_id": f"acc/list{other}/{i:06d}", "n": i}
                                                       for i in range(DOCS)])
    for table in (by_id, in_id, range_id):
        # The statistics autovacuum would gather on a table this size: without them the planner guesses
        # a range holds a handful of rows and reads it whole with a bitmap scan.
        await asyncio.to_thread(stack_sql, f'ANALYZE "{database}"."{table}"')
    before = await settled(database, [by_id, in_id, range_id])

    collection = mongo[database]["by_id"]
    for i in range(0, DOCS, DOCS // LOOKUPS):
        doc = await collection.find_one({"_id": f"acc/list/{i:06d}"})
        assert doc is not None and doc["n"] == i
        await collection.update_one({"_id": f"acc/list/{i:06d}"}, {"$set": {"status": "unsubscribed"}})
    await collection.bulk_write([UpdateOne({"_id": f"acc/list/{i:06d}"}, {"$inc": {"n": 1}}) for i in range(100)])
    assert (await collection.find_one({"_id": "acc/list/000000"}))["status"] == "unsubscribed"  # type: ignore[index]

    wanted = [f"acc/list/{i:06d}" for i in range(7, DOCS, 29)] + ["acc/list/missing"]
    found = await load(mongo[database]["in_id"], wanted)
    assert sorted(found) == sorted(wanted[:-1])

    collection = mongo[database]["range_id"]
    cursor = collection.find({"_id": prefix_range("acc", "list")}).sort("_id", 1).limit(50)
    assert [doc["_id"] async for doc in cursor] == ["acc/list/"] + [f"acc/list/{i:06d}" for i in range(49)]
    after = {"$gt": "acc/list/002990", "$lt": prefix_range("acc", "list")["$lt"]}
    assert [d["_id"] async for d in collection.find({"_id": after}).sort("_id", 1)] == [
        f"acc/list/{i:06d}" for i in range(2991, DOCS)]

    now = await settled(database, [by_id, in_id, range_id])
    least_index_scans = {by_id: 2 * LOOKUPS + 100 + 1, in_id: 1, range_id: 2}
    for table, least in least_index_scans.items():
        (seq_before, idx_before, _), (seq_after, idx_after, _) = before[table], now[table]
        assert idx_after - idx_before >= least, (table, idx_before, idx_after)
        assert seq_after == seq_before, f"{table}: {seq_after - seq_before} sequential scans of {DOCS} documents"
    # The page of 50 and the 9 keys after 002990 are read as such (a sort on `_id` and the limit pushed down,
    # deploy/local/ferretdb's fourth patch), not the 3,000 documents of the range.
    fetched = now[range_id][2] - before[range_id][2]
    assert fetched < 200, f"{fetched} rows fetched for 59 keys"


async def test_write_commands_of_hundreds_of_operations_answer(settings: HeraldSettings,
                                                               mongo: AsyncMongoClient[Document]) -> None:
    """FerretDB 1.24 held a pooled connection per statement until a write command ended, so one of 50+
    (PostgreSQL) or 100+ (SQLite) operations never answered; deploy/local/ferretdb's second patch."""
    subs = mongo[settings.database_name("large")]["subscribers"]
    async with asyncio.timeout(60):
        await subs.bulk_write([UpdateOne({"_id": f"s{i}"}, {"$set": {"n": i}}, upsert=True) for i in range(500)])
        await subs.bulk_write([UpdateOne({"_id": f"s{i}"}, {"$set": {"n": -i}}) for i in range(1000)],
                              ordered=False)
        await subs.delete_many({"_id": {"$in": [f"s{i}" for i in range(0, 500, 2)]}})
    assert await subs.count_documents({"n": {"$lt": 0}}) == 250
