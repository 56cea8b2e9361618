"""The review's forgery on the shared stack (a broker without ACLs, as locally): an ApiKeyIssued for another
account on herald.billing in the name of producer "crm". The keys every service authenticates with
(`ApiKeyProjection`, as subscriptions and campaigns consume it) refuse it to the dead-letter topic with the reason,
and its key opens nothing; billing's own key, published after it on the same partition, does."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from herald_shared.apikeys import ApiKeyProjection, new_api_key
from herald_shared.contract.billing import ApiKeyIssued
from herald_shared.kafka import DLQ_CONSUMER, DLQ_REASON, EventConsumer, EventPublisher, read_from_start
from herald_shared.mongo import Document
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually


async def dead_letter_reasons(settings: HeraldSettings, base: str) -> list[tuple[str, str]]:
    found = []
    async for records in read_from_start(settings, [settings.topics.dead_letter(base)]):
        for record in records:
            headers = {k: bytes(v).decode() for k, v in record.headers}
            found.append((headers[DLQ_CONSUMER], headers[DLQ_REASON]))
    return found


async def test_a_key_issued_in_a_third_partys_name_opens_nothing_and_is_dead_lettered(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    """PRODUCT.md: one account can never read or change another account's data."""
    publisher = EventPublisher(producer, settings.topics)
    forged_id, forged_key, forged_hash = new_api_key()
    await publisher.publish(ApiKeyIssued(account_id="acc-b", producer="crm", payload={  # type: ignore[arg-type]
        "key_id": forged_id, "key_hash": forged_hash, "issued_by": "crm-sync"}))
    key_id, billings_key, billings_hash = new_api_key()
    await publisher.publish(ApiKeyIssued(account_id="acc-b", producer="billing", payload={  # type: ignore[arg-type]
        "key_id": key_id, "key_hash": billings_hash, "issued_by": "owner"}))

    keys = ApiKeyProjection(mongo[settings.database_name("kafka_auth")])
    name = f"{settings.topic_prefix}keys"
    consumer = EventConsumer(settings, name=name, topics=["herald.billing"], handler=keys, producer=producer,
                             retry_delay=0.01)
    running = asyncio.create_task(consumer.run())
    try:
        # billing's key comes after the forged one in acc-b's partition: once it opens, the forged one was read
        await eventually(lambda: keys.authenticate(billings_key), lambda account: account == "acc-b",
                         what="billing's key projected")
    finally:
        consumer.request_stop()
        await asyncio.wait_for(running, timeout=30)
    assert await keys.authenticate(forged_key) is None
    assert await keys.holder(forged_id) is None
    letters = await dead_letter_reasons(settings, "herald.billing")
    assert letters == [(name, "rejected: ApiKeyIssued from producer 'crm': only 'billing' issues and revokes API "
                              f"keys (key {forged_id!r} of account 'acc-b' not projected)")]
