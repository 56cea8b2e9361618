"""Herald's Kafka clients, built from settings, against a broker that authenticates and authorizes: a service
writes and reads its own topic under its own user, and a third party's user cannot write billing's topic, so the
review's forged ApiKeyIssued (producer "crm", on herald.billing) is refused by the broker itself."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from herald_shared.apikeys import new_api_key
from herald_shared.contract.billing import ApiKeyIssued
from herald_shared.kafka import EventPublisher, make_producer, read_from_start
from tests.integration.kafka_auth.helpers import SecuredKafka
from tests.samples import sample


def forged_key_issue(account_id: str) -> ApiKeyIssued:
    """What the review's script published: a working key for another account, in billing's name."""
    key_id, _, key_hash = new_api_key()
    return ApiKeyIssued(account_id=account_id, producer="crm", payload={  # type: ignore[arg-type]
        "key_id": key_id, "key_hash": key_hash, "issued_by": "crm-sync"})


async def test_billing_writes_and_reads_its_own_topic_as_its_own_user(authorized_kafka: SecuredKafka) -> None:
    settings = authorized_kafka.settings("billing")
    producer = make_producer(settings, "billing")
    await producer.start()
    try:
        key_id, _, key_hash = new_api_key()
        issued = ApiKeyIssued(account_id="acc-a", producer="billing", payload={  # type: ignore[arg-type]
            "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"})
        await EventPublisher(producer, settings.topics).publish(issued)
    finally:
        await producer.stop()
    read = [record.value async for batch in read_from_start(settings, ["herald.billing"]) for record in batch]
    assert any(value is not None and str(issued.event_id).encode() in value for value in read)


async def test_a_third_party_cannot_write_billings_topic(authorized_kafka: SecuredKafka) -> None:
    """PRODUCT.md: one account can never read or change another account's data; the CRM's user writes
    herald.subscriptions only."""
    settings = authorized_kafka.settings("crm")
    producer = make_producer(settings, "crm")
    await producer.start()
    try:
        publisher = EventPublisher(producer, settings.topics)
        # what the CRM may write, it writes: the refusal below is the ACL's, not a broken client
        await publisher.publish(sample("ListCreated", "acc-b", producer="crm"))
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(publisher.publish(forged_key_issue("acc-b")), timeout=30)
    finally:
        await producer.stop()


async def test_a_wrong_password_fails_at_start_saying_so(
        authorized_kafka: SecuredKafka, caplog: pytest.LogCaptureFixture) -> None:
    """The process stops at start (the client cannot bootstrap) and its log names the cause."""
    producer = make_producer(authorized_kafka.settings("billing", password="not-billings-password"), "billing")
    try:
        with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(producer.start(), timeout=30)
    finally:
        await producer.stop()
    said = [record.getMessage() for record in caplog.records]
    assert any("SaslAuthenticationFailed" in line and "invalid credentials" in line for line in said), said
