"""What Herald asks of MongoDB, proven on the server the stack runs (FerretDB by default)."""

from __future__ import annotations

import pytest
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.errors import DuplicateKeyError

from herald_shared.mongo import Document
from herald_shared.settings import HeraldSettings


async def test_crud(settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    lists = mongo[settings.database_name("crud")]["lists"]
    await lists.insert_one({"_id": "l1", "account_id": "a", "name": "News"})
    assert (await lists.find_one({"_id": "l1"}))["name"] == "News"  # type: ignore[index]
    await lists.update_one({"_id": "l1"}, {"$set": {"name": "Weekly"}})
    assert (await lists.find_one({"_id": "l1"}))["name"] == "Weekly"  # type: ignore[index]
    assert (await lists.delete_one({"_id": "l1"})).deleted_count == 1
    assert await lists.find_one({"_id": "l1"}) is None


async def test_upsert_inserts_then_updates(settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    subs = mongo[settings.database_name("upsert")]["subscribers"]
    for status in ("pending", "active"):
        await subs.update_one({"_id": "s1"}, {"$set": {"status": status}, "$setOnInsert": {"first": status}},
                              upsert=True)
    assert await subs.find_one({"_id": "s1"}) == {"_id": "s1", "status": "active", "first": "pending"}


async def test_unique_index_refuses_a_second_document(settings: HeraldSettings,
                                                      mongo: AsyncMongoClient[Document]) -> None:
    subs = mongo[settings.database_name("unique")]["subscribers"]
    await subs.create_index([("account_id", 1), ("email", 1)], unique=True)
    await subs.insert_one({"account_id": "a", "email": "x@example.com"})
    await subs.insert_one({"account_id": "b", "email": "x@example.com"})
    with pytest.raises(DuplicateKeyError):
        await subs.insert_one({"account_id": "a", "email": "x@example.com"})


async def test_bulk_write_and_a_simple_aggregation(settings: HeraldSettings,
                                                   mongo: AsyncMongoClient[Document]) -> None:
    subs = mongo[settings.database_name("agg")]["subscribers"]
    ops = [UpdateOne({"_id": f"s{i}"}, {"$set": {"list_id": "l1", "status": "active" if i % 3 else "pending"}},
                     upsert=True) for i in range(30)]
    result = await subs.bulk_write(ops, ordered=False)
    assert result.upserted_count == 30
    cursor = await subs.aggregate([{"$match": {"list_id": "l1"}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}},
                                   {"$sort": {"_id": 1}}])
    assert [doc async for doc in cursor] == [{"_id": "active", "n": 20}, {"_id": "pending", "n": 10}]
