"""A sealable handler (its `handle` only stages) has each batch written in the background while the consumer
handles the next one: the next batch is handled before the write ends, writes run one at a time in batch order,
and a batch's offsets are committed only once its write is done."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from herald_shared.contract import Event, serialize_event
from herald_shared.kafka import EventConsumer, event_headers
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.samples import sample

WRITE_SECONDS = 1.0


class SlowSealable:
    """Stages events; each batch's write takes a second and records when it ran and the committed offset."""

    sealable = True

    def __init__(self, settings: HeraldSettings, group: str) -> None:
        self.settings, self.group = settings, group
        self.staged: list[Event] = []
        self.handled_at: dict[object, float] = {}
        self.writes: list[tuple[list[object], float, float]] = []  # (event ids, started, ended)
        self.committed_during: list[int | None] = []

    async def handle(self, event: Event) -> None:
        self.staged.append(event)
        self.handled_at[event.event_id] = time.monotonic()

    async def flush(self) -> None:
        raise AssertionError("a sealable handler is never flushed by the consumer")

    def seal(self) -> Callable[[], Awaitable[None]]:
        events, self.staged = self.staged, []

        async def write() -> None:
            started = time.monotonic()
            self.committed_during.append(await committed(self.settings, self.group))
            await asyncio.sleep(WRITE_SECONDS)
            self.writes.append(([e.event_id for e in events], started, time.monotonic()))
        return write


async def test_the_next_batch_is_handled_while_a_batch_is_written_and_commits_wait_for_writes(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    topic = settings.topics("herald.delivery")
    group = settings.topic_prefix + "sealed"
    handler = SlowSealable(settings, group)
    consumer = EventConsumer(settings, name=group, topics=["herald.delivery"], handler=handler, producer=producer,
                             retry_delay=0.01, max_records=1)
    events = [sample("MessageSent") for _ in range(3)]
    for event in events:
        await producer.send_and_wait(topic, value=serialize_event(event), key=b"acc-1", headers=event_headers(event),
                                     partition=0)
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: _written(handler), lambda n: n == 3, what="three batches written")
    finally:
        consumer.request_stop()
        await asyncio.wait_for(task, timeout=30)
    ids = [e.event_id for e in events]
    assert [w[0] for w in handler.writes] == [[i] for i in ids], "one batch (one record) a write, in order"
    for (_, _, ended), (_, next_started, _) in zip(handler.writes, handler.writes[1:], strict=False):
        assert next_started >= ended, "a write starts only once the one before is done"
    # The second event was handled while the first batch was being written.
    first_write_ended = handler.writes[0][2]
    assert handler.handled_at[ids[1]] < first_write_ended
    # While the batch at offset k was written, the batch before it was committed and it was not.
    assert handler.committed_during == [None, 1, 2]
    assert await committed(settings, group) == 3, "stopping waits for the last write and its commit"


async def _written(handler: SlowSealable) -> int:
    return len(handler.writes)


async def committed(settings: HeraldSettings, group: str) -> int | None:
    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group,
                              enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(TopicPartition(settings.topics("herald.delivery"), 0))
    finally:
        await reader.stop()
