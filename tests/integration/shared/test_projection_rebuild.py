"""A projection rebuilt from offset 0 equals the live one (ARCHITECTURE.md: projections can be dropped and
rebuilt from the topics to exactly the same state). Uses the API-key projection every service keeps."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from herald_shared.apikeys import ApiKeyProjection, new_api_key
from herald_shared.contract.billing import ApiKeyIssued, ApiKeyRevoked
from herald_shared.kafka import EventConsumer, EventPublisher
from herald_shared.mongo import Document, MongoDeduplicator, rebuild
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.samples import sample


def issued(account: str, key_id: str, key_hash: str) -> ApiKeyIssued:
    return ApiKeyIssued(account_id=account, producer="billing",
                        payload={"key_id": key_id, "key_hash": key_hash, "issued_by": "owner"})  # type: ignore[arg-type]


def revoked(account: str, key_id: str) -> ApiKeyRevoked:
    return ApiKeyRevoked(account_id=account, producer="billing",
                         payload={"key_id": key_id, "revoked_by": "owner"})  # type: ignore[arg-type]


async def _dump(projection: ApiKeyProjection) -> list[dict[str, Any]]:
    return [doc async for doc in projection.db["api_keys"].find({}).sort("_id", 1)]


async def test_rebuilt_projection_equals_the_live_one_and_authenticates_the_same(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    keys = {f"acc-{i}": new_api_key() for i in range(6)}
    events = [issued(acc, key_id, key_hash) for acc, (key_id, _, key_hash) in keys.items()]
    events.append(revoked("acc-2", keys["acc-2"][0]))
    events.append(sample("PlanChanged", "acc-3"))            # ignored by this projection
    events.append(events[0])                                 # a duplicate delivery
    await EventPublisher(producer, settings.topics).publish_many(events)

    live_db = mongo[settings.database_name("live")]
    live = ApiKeyProjection(live_db)
    consumer = EventConsumer(settings, name=settings.topic_prefix + "apikeys", topics=["herald.billing"],
                             handler=live, producer=producer, deduplicator=MongoDeduplicator(live_db, "apikeys"))
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: _dump(live), lambda docs: len(docs) == 6 and any("revoked_at" in d for d in docs),
                         what="live projection caught up")
    finally:
        consumer.request_stop()
        await task

    rebuilt = ApiKeyProjection(mongo[settings.database_name("rebuilt")])
    applied = await rebuild(rebuilt, settings, ["herald.billing"])
    assert applied == len(events) - 1  # the duplicate is applied once
    assert await _dump(rebuilt) == await _dump(live)

    for projection in (live, rebuilt):
        assert await projection.authenticate(keys["acc-1"][1]) == "acc-1"
        assert await projection.authenticate(keys["acc-2"][1]) is None          # revoked
        assert await projection.authenticate(keys["acc-1"][1][:-2] + "xx") is None  # wrong secret
        assert await projection.authenticate("hk_unknown.secret") is None
        assert await projection.authenticate("garbage") is None

    # Retention purges an account: its keys go, and only its keys' verified secrets are forgotten; another
    # account's client is still recognised without scrypt (remembered_only runs none).
    assert await live.authenticate(keys["acc-3"][1]) == "acc-3"
    assert await live.authenticate(keys["acc-1"][1]) == "acc-1"  # verified, so remembered
    await live.purge("acc-1")
    assert await live.authenticate(keys["acc-1"][1]) is None
    assert not [r for r in live._verified if r[0] == keys["acc-1"][0]], "the purged account's secrets forgotten"
    assert await live.authenticate(keys["acc-3"][1], remembered_only=True) == "acc-3"
    assert [d["_id"] for d in await _dump(live)] == sorted(key_id for acc, (key_id, _, _) in keys.items()
                                                           if acc != "acc-1")


async def test_rebuild_twice_gives_the_same_state(settings: HeraldSettings, producer: AIOKafkaProducer,
                                                  mongo: AsyncMongoClient[Document]) -> None:
    key_id, _, key_hash = new_api_key()
    await EventPublisher(producer, settings.topics).publish_many([issued("a", key_id, key_hash), revoked("a", key_id)])
    projection = ApiKeyProjection(mongo[settings.database_name("twice")])
    await rebuild(projection, settings, ["herald.billing"])
    first = await _dump(projection)
    await rebuild(projection, settings, ["herald.billing"])
    assert await _dump(projection) == first
    assert first[0]["revoked_by"] == "owner"
