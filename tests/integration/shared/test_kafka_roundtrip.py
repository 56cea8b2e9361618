"""Every event of the contract goes through the real broker and comes back equal, keyed by account."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.settings import HeraldSettings
from herald_shared.topics import EVENT_TOPICS
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler, running_consumer
from tests.samples import all_samples


async def test_every_event_type_round_trips_through_kafka(settings: HeraldSettings,
                                                          producer: AIOKafkaProducer) -> None:
    sent = all_samples("acc-a") + all_samples("acc-b")
    await EventPublisher(producer, settings.topics).publish_many(sent)
    handler = RecordingHandler()
    async with running_consumer(settings, producer, handler, [t.name for t in EVENT_TOPICS]):
        await eventually(lambda: _count(handler), lambda n: n >= len(sent), what="all events consumed")
        await eventually(lambda: _total_lag(settings), lambda lag: lag == (0.0, 30), what="consumer lag reported 0")
    by_id = {e.event_id: e for e in handler.events}
    assert len(handler.events) == len(sent)
    for event in sent:
        assert by_id[event.event_id] == event


async def _count(handler: RecordingHandler) -> int:
    return len(handler.events)


async def _total_lag(settings: HeraldSettings) -> tuple[float, int]:
    """Sum of the lag gauge over this consumer's partitions, and how many partitions report it."""
    samples = [s for metric in REGISTRY.collect() if metric.name == "herald_consumer_lag" for s in metric.samples
               if s.labels["consumer"] == settings.topic_prefix + "test-consumer"]
    return sum(s.value for s in samples), len(samples)


async def test_events_are_keyed_by_account_so_one_account_stays_in_one_partition(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    sent = all_samples("acc-order") + all_samples("acc-order")
    await EventPublisher(producer, settings.topics).publish_many(sent)
    seen = []
    async for records in read_from_start(settings, [settings.topics(t.name) for t in EVENT_TOPICS]):
        seen += records
    assert len(seen) == len(sent)
    partitions_by_topic: dict[str, set[int]] = {}
    for record in seen:
        assert record.key == b"acc-order"
        partitions_by_topic.setdefault(record.topic, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions_by_topic.values())
    # Within the partition the order is the publishing order.
    billing = [r for r in seen if r.topic == settings.topics("herald.billing")]
    assert [r.offset for r in billing] == sorted(r.offset for r in billing)
