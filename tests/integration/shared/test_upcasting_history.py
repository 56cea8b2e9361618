"""After an event type's version is bumped, its history on the topic is still read (README, "The event contract"):
a consumer and a rebuild from offset 0 on the real broker get the v1 records as v2 events through the
registered upcaster; without one, each such record is dead-lettered with the reason and the stream goes on."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from herald_shared.contract import UPCASTERS, Event
from herald_shared.contract.delivery import MessageSent
from herald_shared.kafka import DLQ_REASON, EventPublisher, read_from_start
from herald_shared.mongo import rebuild
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler, running_consumer
from tests.samples import sample


class Rebuilt(RecordingHandler):
    """A projection for `mongo.rebuild` that keeps what it folded."""

    async def drop(self) -> None:
        self.events.clear()

    async def ensure_indexes(self) -> None:
        return None


def bump_message_sent(monkeypatch: pytest.MonkeyPatch, *, with_upcaster: bool) -> None:
    """MessageSent at v2, whose `smtp_reply` says the version it was recorded at ("v1: ..." for the history)."""
    monkeypatch.setattr(MessageSent, "version", 2)
    steps = {("MessageSent", 1): lambda p: {**p, "smtp_reply": f"v1: {p.get('smtp_reply')}"}}
    monkeypatch.setattr(UPCASTERS, "_steps", steps if with_upcaster else {})


async def dead_letter_reasons(settings: HeraldSettings) -> list[str]:
    return [dict(r.headers)[DLQ_REASON].decode()
            async for batch in read_from_start(settings, [settings.topics.dead_letter("herald.delivery")])
            for r in batch]


async def test_the_history_of_a_bumped_event_is_folded_through_its_upcaster(
        settings: HeraldSettings, producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch) -> None:
    history: list[Event] = [sample("MessageSent", f"acc-{i}") for i in range(3)]
    await EventPublisher(producer, settings.topics).publish_many(history)  # written at v1
    bump_message_sent(monkeypatch, with_upcaster=True)

    live = RecordingHandler()
    async with running_consumer(settings, producer, live, ["herald.delivery"]):
        await eventually(lambda: _count(live), lambda n: n == 3, what="the v1 history consumed")
    rebuilt = Rebuilt()
    assert await rebuild(rebuilt, settings, ["herald.delivery"]) == 3
    for handler in (live, rebuilt):
        assert sorted(str(e.event_id) for e in handler.events) == sorted(str(e.event_id) for e in history)
        assert all(isinstance(e, MessageSent) and e.schema_version == 2 and e.payload.smtp_reply.startswith("v1: ")
                   for e in handler.events)
    assert await dead_letter_reasons(settings) == []


async def test_without_an_upcaster_each_old_record_is_dead_lettered_with_why_and_the_stream_goes_on(
        settings: HeraldSettings, producer: AIOKafkaProducer, monkeypatch: pytest.MonkeyPatch) -> None:
    await EventPublisher(producer, settings.topics).publish(sample("MessageSent", "acc-1"))  # written at v1
    bump_message_sent(monkeypatch, with_upcaster=False)
    after = sample("MessageBounced", "acc-1")
    await EventPublisher(producer, settings.topics).publish(after)

    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, ["herald.delivery"]):
        await eventually(lambda: _count(handler), lambda n: n == 1, what="the event after it consumed")
        reasons = await eventually(lambda: dead_letter_reasons(settings), lambda r: len(r) == 1,
                                   what="the v1 record dead-lettered")
    assert handler.events == [after]
    assert reasons == ["MessageSent schema_version 1 is older than this contract's (2) and no upcaster reads v1"]


async def _count(handler: RecordingHandler) -> Any:
    return len(handler.events)
