"""What a consumer's handler makes while it handles an event belongs to that event's flow (ARCHITECTURE.md: the
envelope's `correlation_id` is shared by all events of one flow), on the real broker."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from herald_shared.contract import Event
from herald_shared.kafka import EventPublisher
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import RecordingHandler, running_consumer
from tests.samples import sample


class MakingHandler(RecordingHandler):
    """Makes one event for each it handles, as a service's handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[Event] = []

    async def handle(self, event: Event) -> None:
        await super().handle(event)
        self.made.append(sample("SubscriberSuppressed"))


async def test_an_event_made_while_handling_one_carries_its_correlation_or_its_id(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    flow = uuid.uuid4()
    in_a_flow, first_of_its_flow = sample("MessageBounced", correlation_id=flow), sample("MessageBounced")
    assert first_of_its_flow.correlation_id is None
    await EventPublisher(producer, settings.topics).publish_many([in_a_flow, first_of_its_flow])
    handler = MakingHandler()
    async with running_consumer(settings, producer, handler, ["herald.delivery"], name="correlation"):
        await eventually(lambda: _count(handler), lambda n: n == 2, what="both handled")
    assert [e.correlation_id for e in handler.made] == [flow, first_of_its_flow.event_id]
    assert sample("SubscriberSuppressed").correlation_id is None  # nothing of a flow outlives its handling


async def _count(handler: MakingHandler) -> int:
    return len(handler.made)
