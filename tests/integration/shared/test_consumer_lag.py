"""herald_consumer_lag while a consumer is stuck in a batch (its handler waiting out a database that does not come
back): the loop polls nothing, yet the lag it exports follows the partition's end as events keep arriving, so
HeraldConsumerLagGrowing sees a stuck consumer fall behind; the batch it is stuck in counts as behind (lag 1 for
one event, not 0), and herald_consumer_position stays where the batch starts, so HeraldConsumerStuck sees it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from herald_shared.kafka import EventConsumer, EventPublisher
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler
from tests.samples import sample


async def test_a_stuck_consumer_reports_its_lag_growing(settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    publisher = EventPublisher(producer, settings.topics)
    first = await publisher.publish(sample("CreditsPurchased", "acc-stuck"))
    handler = RecordingHandler(database_outages=10**9)  # the database never comes back
    name = settings.topic_prefix + "stuck"
    stuck = EventConsumer(settings, name=name, topics=["herald.billing"], handler=handler, producer=producer,
                          retry_delay=0.01, lag_interval=0.2)
    labels = {"consumer": name, "topic": first.topic, "partition": str(first.partition)}

    async def lag() -> float | None:
        return REGISTRY.get_sample_value("herald_consumer_lag", labels)

    def position() -> float | None:
        return REGISTRY.get_sample_value("herald_consumer_position", labels)

    async def outages_left() -> int:
        return handler._outages

    task = asyncio.create_task(stuck.run())
    try:
        await eventually(outages_left, lambda left: left < 10**9 - 2, what="the handler waiting out the outage")
        await eventually(lag, lambda value: value == 1, what="the lag reported while stuck")
        assert position() == first.offset
        await publisher.publish_many([sample("CreditsPurchased", "acc-stuck") for _ in range(25)])
        await eventually(lag, lambda value: value == 26, what="the lag following the partition's end")
        await publisher.publish_many([sample("CreditsPurchased", "acc-stuck") for _ in range(15)])
        await eventually(lag, lambda value: value == 41, what="the lag growing")
        assert position() == first.offset  # not moving
        assert handler.events == []  # stuck all along: nothing was handled
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
