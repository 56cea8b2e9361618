"""`lead`: an EventConsumer (and `read_from_start`) reads the lead topics to their end before the others, however
the fetches would interleave; `caught_up` is set once every partition assigned was read to the end it had when
assigned, and the handler is flushed once more then (what waited for it decides)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from herald_shared.kafka import EventConsumer, EventPublisher, read_from_start
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler
from tests.samples import sample

SENDS, BILLING = 600, 1800


class FlushLog(RecordingHandler):
    """Also how many events it had handled at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.at_flush: list[int] = []

    async def flush(self) -> None:
        await super().flush()
        self.at_flush.append(len(self.events))


async def publish_sends_then_billing(settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    """The sends first in time, then three times as many billing records, over many accounts (every partition)."""
    publisher = EventPublisher(producer, settings.topics)
    await publisher.publish_many([sample("MessageSent", f"a{n}") for n in range(SENDS)])
    await publisher.publish_many([sample("PaymentMethodSet", f"a{n}") for n in range(BILLING)])


async def test_the_lead_topic_is_read_to_its_end_before_the_others_and_caught_up_is_set_after_all(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    await publish_sends_then_billing(settings, producer)
    handler = FlushLog()
    consumer = EventConsumer(settings, name=settings.topic_prefix + "leading", handler=handler, producer=producer,
                             topics=["herald.delivery", "herald.billing"], lead=["herald.billing"], max_records=100)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.caught_up.wait(), 60)
        assert len(handler.events) == SENDS + BILLING  # caught up: every partition read to its end
        topics = [e.topic for e in handler.events]
        assert topics == ["herald.billing"] * BILLING + ["herald.delivery"] * SENDS
        # The last batch's flush, then one more once caught up (a handler that waited for it decides then).
        await eventually(lambda: _flushes(handler), lambda f: f[-2:] == [SENDS + BILLING] * 2, what="the flush")
    finally:
        consumer.request_stop()
        await asyncio.wait_for(task, 30)

    # Started again, caught up from the start: no pause, nothing read again, caught up at once.
    again = EventConsumer(settings, name=settings.topic_prefix + "leading", handler=RecordingHandler(),
                          producer=producer, topics=["herald.delivery", "herald.billing"], lead=["herald.billing"])
    task = asyncio.create_task(again.run())
    try:
        await asyncio.wait_for(again.caught_up.wait(), 30)
    finally:
        again.request_stop()
        await asyncio.wait_for(task, 30)


async def test_read_from_start_reads_the_lead_topic_first(settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    await publish_sends_then_billing(settings, producer)
    names = settings.topics
    order = [r.topic async for batch in read_from_start(settings, [names("herald.delivery"), names("herald.billing")],
                                                        lead=[names("herald.billing")], batch_size=100)
             for r in batch]
    assert order == [names("herald.billing")] * BILLING + [names("herald.delivery")] * SENDS


async def _flushes(handler: FlushLog) -> list[int]:
    return handler.at_flush
