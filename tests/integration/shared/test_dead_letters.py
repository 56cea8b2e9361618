"""Bad input never stops a stream: it lands in the dead-letter topic with its reason, and the consumer
keeps consuming the good events after it. An operator can list and replay dead letters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from herald_shared.contract import serialize_event
from herald_shared.kafka import (
    DLQ_ORIGIN,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_TOPIC,
    REPLAYED_FROM,
    EventPublisher,
    read_from_start,
)
from herald_shared.mongo import Document, MongoDeduplicator
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually, subprocess_env
from tests.integration.shared.helpers import RecordingHandler, running_consumer
from tests.samples import sample


async def _dead_letters(settings: HeraldSettings, base: str) -> list[dict[str, str]]:
    entries = []
    async for records in read_from_start(settings, [settings.topics.dead_letter(base)]):
        for record in records:
            headers = {k: bytes(v).decode() for k, v in record.headers}
            entries.append({**headers, "value": record.value.decode(errors="replace")})
    return entries


async def test_malformed_and_unknown_messages_are_dead_lettered_and_the_good_ones_after_are_consumed(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    topic = settings.topics("herald.delivery")
    good_before, good_after = sample("MessageSent"), sample("MessageBounced")
    wrong_key = sample("ComplaintReceived")
    await EventPublisher(producer, settings.topics).publish(good_before)
    bad = [
        (b"{this is not json", b"acc-1"),
        (json.dumps({"type": "MessageExploded", "account_id": "acc-1"}).encode(), b"acc-1"),
        (serialize_event(sample("AccountApproved")), b"acc-1"),   # a billing event on the delivery topic
        (serialize_event(wrong_key), b"acc-other"),               # keyed by another account
    ]
    for value, key in bad:
        await producer.send_and_wait(topic, value=value, key=key, partition=0)
    await EventPublisher(producer, settings.topics).publish(good_after)

    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.delivery"]):
        await eventually(lambda: _types(handler), lambda t: t == ["MessageSent", "MessageBounced"],
                         what="good events around the bad ones")
        entries = await eventually(lambda: _dead_letters(settings, "herald.delivery"), lambda e: len(e) == 4,
                                   what="four dead letters")

    reasons = [e[DLQ_REASON] for e in entries]
    labels = {"consumer": settings.topic_prefix + "test-consumer", "topic": topic, "category": "invalid"}
    assert REGISTRY.get_sample_value("herald_events_dead_lettered_total", labels) == 4
    consumed = {"consumer": settings.topic_prefix + "test-consumer", "topic": topic, "type": "MessageSent"}
    assert REGISTRY.get_sample_value("herald_events_consumed_total", consumed) == 1
    assert reasons[0].startswith("not JSON")
    assert reasons[1] == "unknown event type 'MessageExploded'"
    assert reasons[2] == f"AccountApproved belongs on {settings.topics('herald.billing')}, not {topic}"
    assert "is not the event's account_id 'acc-1'" in reasons[3]
    assert entries[0]["value"] == "{this is not json"
    assert all(e[DLQ_SOURCE_TOPIC] == topic and e[DLQ_SOURCE_OFFSET].isdigit() for e in entries)


async def _types(handler: RecordingHandler) -> list[str]:
    return [e.type for e in handler.events]


async def test_a_handler_that_keeps_failing_dead_letters_the_event_and_moves_on(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    publisher = EventPublisher(producer, settings.topics)
    await publisher.publish_many([sample("PaymentFailed"), sample("PaymentSucceeded"), sample("PlanChanged")])
    handler = RecordingHandler(reject_types=["PaymentSucceeded"], fail_types=["PaymentFailed"])
    async with running_consumer(settings, producer, handler, ["herald.billing"]):
        await eventually(lambda: _types(handler), lambda t: t == ["PlanChanged"], what="PlanChanged handled")
        entries = await eventually(lambda: _dead_letters(settings, "herald.billing"), lambda e: len(e) == 2,
                                   what="two dead letters")
    reasons = sorted(e[DLQ_REASON] for e in entries)
    assert reasons[0] == "handler failed after 3 attempts: RuntimeError: store unavailable"
    assert reasons[1] == "rejected: PaymentSucceeded is not handled here"


def _herald(settings: HeraldSettings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herald_shared.cli", *args], env=subprocess_env(settings),
                          capture_output=True, text=True, input=stdin, timeout=60, check=False)


async def test_operator_lists_a_dead_letter_fixes_it_and_replays_it(
        settings: HeraldSettings, producer: AIOKafkaProducer, tmp_path: Path) -> None:
    broken = json.loads(serialize_event(sample("MessageSent")))
    del broken["payload"]["recipient_domain"]
    await producer.send_and_wait(settings.topics("herald.delivery"), value=json.dumps(broken).encode(), key=b"acc-1")
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.delivery"]):
        await eventually(lambda: _dead_letters(settings, "herald.delivery"), lambda e: len(e) == 1,
                         what="the broken event dead-lettered")
        listing = await asyncio.to_thread(_herald, settings, "dlq", "list", "herald.delivery")
        assert listing.returncode == 0, listing.stderr
        assert "reason: invalid MessageSent: payload.recipient_domain: Field required" in listing.stdout
        entry = listing.stdout.split()[0]

        unchanged = await asyncio.to_thread(_herald, settings, "dlq", "replay", "herald.delivery", entry)
        assert unchanged.returncode == 1
        assert "still invalid, not replayed" in unchanged.stderr

        broken["payload"]["recipient_domain"] = "example.com"
        fixed = tmp_path / "fixed.json"
        fixed.write_text(json.dumps(broken))
        replay = await asyncio.to_thread(_herald, settings, "dlq", "replay", "herald.delivery", entry,
                                         "--value-file", str(fixed))
        assert replay.returncode == 0, replay.stderr
        events = await eventually(lambda: _types(handler), lambda t: t == ["MessageSent"], what="replayed event")
    assert events == ["MessageSent"]
    assert str(handler.events[0].event_id) == broken["event_id"]


async def test_an_entry_that_came_from_no_topic_is_replayed_to_the_topic_of_its_dead_letter_topic(
        settings: HeraldSettings, producer: AIOKafkaProducer, tmp_path: Path) -> None:
    """What delivery's inbound SMTP server dead-letters (a mail received, read from no topic) names its origin;
    corrected, it is replayed to herald.delivery. So is an entry written before the origin header was (its
    source `inbound-smtp`, no topic), even with --force (it went to a topic named `inbound-smtp`)."""
    await EventPublisher(producer, settings.topics).dead_letter(
        "herald.delivery", b"From: x\n\nnot a report\n", "no signed return path", origin="inbound-smtp",
        consumer="delivery.inbound", key=b"inbound")
    await producer.send_and_wait(settings.topics.dead_letter("herald.delivery"), value=b"an old mail", key=b"inbound",
                                 headers=[(DLQ_REASON, b"unreadable"), (DLQ_SOURCE_TOPIC, b"inbound-smtp")])
    entries = await _dead_letters(settings, "herald.delivery")
    assert entries[0][DLQ_ORIGIN] == "inbound-smtp" and DLQ_SOURCE_TOPIC not in entries[0]
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.delivery"]):
        listing = await asyncio.to_thread(_herald, settings, "dlq", "list", "herald.delivery")
        assert listing.returncode == 0, listing.stderr
        lines = [line for line in listing.stdout.splitlines() if " from " in line and not line.startswith(" ")]
        assert [line.split(" ", 1)[1] for line in lines] == [
            "from inbound-smtp reason: no signed return path", "from inbound-smtp reason: unreadable"]

        fixed = tmp_path / "bounce.json"
        fixed.write_bytes(serialize_event(sample("MessageBounced")))
        replay = await asyncio.to_thread(_herald, settings, "dlq", "replay", "herald.delivery", lines[0].split()[0],
                                         "--value-file", str(fixed))
        assert replay.returncode == 0, replay.stderr
        assert f"-> {settings.topics('herald.delivery')}[" in replay.stdout
        forced = await asyncio.to_thread(_herald, settings, "dlq", "replay", "herald.delivery", lines[1].split()[0],
                                         "--force")
        assert forced.returncode == 0, forced.stderr
        assert f"-> {settings.topics('herald.delivery')}[" in forced.stdout
        await eventually(lambda: _types(handler), lambda t: t == ["MessageBounced"], what="the replayed bounce")
        again = await eventually(lambda: _dead_letters(settings, "herald.delivery"), lambda e: len(e) == 3,
                                 what="the forced old mail dead-lettered again, by the consumer")
    assert again[2][DLQ_SOURCE_TOPIC] == settings.topics("herald.delivery")


async def test_an_infrastructure_error_is_waited_out_not_dead_lettered(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    await EventPublisher(producer, settings.topics).publish_many([sample("CreditsPurchased"), sample("CreditsExpired")])
    handler = RecordingHandler(database_outages=3)
    async with running_consumer(settings, producer, handler, ["herald.billing"]):
        await eventually(lambda: _types(handler), lambda t: t == ["CreditsPurchased", "CreditsExpired"],
                         what="both handled after the outage")
    assert await _dead_letters(settings, "herald.billing") == []


def _crm_added(event_id: str, email: str) -> dict[str, Any]:
    """A SubscriberAdded as a CRM publishes it (another producer than the topic's owner), under `event_id`."""
    added = json.loads(serialize_event(sample("SubscriberAdded")))
    added.update(event_id=event_id, producer="crm")
    added["payload"].update(email=email, subscriber_id=f"crm-{email.partition('@')[0]}",
                            email_sha256=hashlib.sha256(email.encode()).hexdigest())
    return added


async def _send(producer: AIOKafkaProducer, settings: HeraldSettings, value: dict[str, Any] | bytes,
                headers: list[tuple[str, bytes]] | None = None) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    await producer.send_and_wait(settings.topics("herald.subscriptions"), value=raw, key=b"acc-1", headers=headers)


async def _emails(handler: RecordingHandler) -> list[str | None]:
    return [getattr(e.payload, "email", None) for e in handler.events]


async def test_an_event_id_reused_for_another_event_is_dead_lettered_and_its_copies_are_skipped(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    """PRODUCT.md: bad input gets a dead-letter entry with the reason, never a silent drop; a copy is no input."""
    reused = str(uuid.uuid4())
    first = _crm_added(reused, "first@example.com")
    # The same event as its producer may write it again after a crash: serialised anew (its id without hyphens, as
    # the contract reads it too, its times with another offset), stamped anew (time, correlation).
    copy = {key: first[key] for key in reversed(first)} | {"occurred_at": "2026-11-03T10:00:00+00:00",
                                                           "event_id": reused.replace("-", ""),
                                                           "correlation_id": str(uuid.uuid4())}
    collected = datetime.fromisoformat(first["payload"]["consent"]["collected_at"])
    copy["payload"] = {**first["payload"], "consent": {
        **first["payload"]["consent"], "collected_at": collected.astimezone(timezone(timedelta(hours=2))).isoformat()}}
    other = _crm_added(reused, "second@example.com")
    # `herald dlq replay` of a fixed value, for a consumer that refused the original: a copy to this one.
    replayed = _crm_added(reused, "fixed@example.com")
    # The topic's owner gives an id to a decision, which may be taken again with fresher figures: a copy.
    decided = sample("SubscriberConfirmed", producer="subscriptions")
    decided_again = json.loads(serialize_event(decided))
    decided_again["payload"]["ip"] = "203.0.113.10"
    for value in (first, json.dumps(copy, indent=1).encode(), other, serialize_event(decided), decided_again):
        await _send(producer, settings, value)
    await _send(producer, settings, replayed, [(REPLAYED_FROM, b"herald.subscriptions.dlq:0:0")])
    await EventPublisher(producer, settings.topics).publish(sample("SubscriberUnsubscribed"))

    handler = RecordingHandler()
    dedupe = MongoDeduplicator(mongo[settings.database_name("tests")], "reused-ids")
    async with running_consumer(settings, producer, handler, ["herald.subscriptions"], deduplicator=dedupe):
        await eventually(lambda: _types(handler), lambda t: "SubscriberUnsubscribed" in t, what="the marker")
    entries = await _dead_letters(settings, "herald.subscriptions")

    assert await _types(handler) == ["SubscriberAdded", "SubscriberConfirmed", "SubscriberUnsubscribed"]
    assert (await _emails(handler))[0] == "first@example.com"
    assert [e[DLQ_REASON] for e in entries] == [
        f"event_id {reused} reused with a different body (an event under this id was handled before)"]
    assert json.loads(entries[0]["value"]) == other
    duplicates = {"consumer": settings.topic_prefix + "test-consumer", "topic": settings.topics("herald.subscriptions")}
    assert REGISTRY.get_sample_value("herald_events_duplicate_total", duplicates) == 3


async def test_after_a_restart_the_remembered_id_tells_a_redelivery_from_another_event(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    reused, remembered_before = str(uuid.uuid4()), str(uuid.uuid4())
    first = _crm_added(reused, "first@example.com")
    await _send(producer, settings, first)
    dedupe = MongoDeduplicator(mongo[settings.database_name("tests")], "restarted")
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.subscriptions"], deduplicator=dedupe):
        await eventually(lambda: _types(handler), lambda t: t == ["SubscriberAdded"], what="the first run")
    assert (await dedupe.seen_digests([reused]))[reused] is not None  # stopped: its batch's ids are remembered
    # An id remembered before digests were kept: whatever comes under it is a copy, as it was then.
    await dedupe.remember([remembered_before])

    for value in (first, _crm_added(reused, "second@example.com"), _crm_added(remembered_before, "x@example.com")):
        await _send(producer, settings, value)
    await EventPublisher(producer, settings.topics).publish(sample("SubscriberUnsubscribed"))
    again = RecordingHandler()
    async with running_consumer(settings, producer, again, ["herald.subscriptions"], deduplicator=dedupe):
        await eventually(lambda: _types(again), lambda t: "SubscriberUnsubscribed" in t, what="the marker")
    entries = await _dead_letters(settings, "herald.subscriptions")

    assert await _types(again) == ["SubscriberUnsubscribed"]
    assert [(e[DLQ_REASON], json.loads(e["value"])["payload"]["email"]) for e in entries] == [
        (f"event_id {reused} reused with a different body (an event under this id was handled before)",
         "second@example.com")]
