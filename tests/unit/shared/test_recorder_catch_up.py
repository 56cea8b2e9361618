"""A decision that gave up waiting for its projection (503 projection_lagging) is not decided over: the next
decision on the same aggregate waits until it is applied (a review, R7: a campaign unscheduled while the read model
lagged was queued by the scheduler from its stale `scheduled` state, and delivery sent it)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka.structs import RecordMetadata

from herald_shared import commands
from herald_shared.commands import Recorder

TOPIC = "herald.campaigns"


class Publisher:
    def __init__(self) -> None:
        self.offset = 0

    async def publish_many(self, events: Sequence[Any]) -> list[RecordMetadata]:
        self.offset += 1
        return [RecordMetadata(TOPIC, 0, None, self.offset, 0, 0, 0)]  # type: ignore[arg-type]


class Checkpoints:
    """The projection's progress: applied up to `applied`, moved by the test."""

    def __init__(self) -> None:
        self.applied = 0
        self.moved = asyncio.Event()

    async def wait_until_applied(self, positions: Sequence[tuple[str, int, int]]) -> None:
        while any(offset > self.applied for _, _, offset in positions):
            self.moved.clear()
            await self.moved.wait()

    def apply(self, offset: int) -> None:
        self.applied = offset
        self.moved.set()


async def test_the_next_decision_on_an_aggregate_waits_for_one_its_projection_had_not_applied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "READ_YOUR_WRITES_TIMEOUT", 0.05)
    checkpoints = Checkpoints()
    recorder = Recorder(Publisher(), checkpoints, TOPIC)  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        async with recorder.serialised("acme:c1"):
            await recorder.commit([object()])  # type: ignore[list-item]  # unscheduled, not applied in time
    # The scheduler on the same campaign, the read model still behind: it may not decide (held back, retried).
    with pytest.raises(TimeoutError):
        async with recorder.serialised("acme:c1"):
            pytest.fail("decided on a state that misses the earlier decision")
    # Another campaign is not held up by it.
    async with recorder.serialised("acme:c2"):
        pass
    # Once applied, the next decision goes on, on the state holding it.
    decided = []

    async def scheduler() -> None:
        async with recorder.serialised("acme:c1"):
            decided.append(checkpoints.applied)

    monkeypatch.setattr(commands, "READ_YOUR_WRITES_TIMEOUT", 5.0)
    waiting = asyncio.create_task(scheduler())
    await asyncio.sleep(0.01)
    assert decided == []
    checkpoints.apply(1)
    await asyncio.wait_for(waiting, 5)
    assert decided == [1]
    async with recorder.serialised("acme:c1"):  # and not again
        pass


class SilentBroker(Publisher):
    """A broker that acknowledges nothing until `back` is set: the producer holds the records meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.back = asyncio.Event()
        self.handed = 0  # decisions whose records the producer was given

    async def publish_many(self, events: Sequence[Any]) -> list[RecordMetadata]:
        self.handed += 1
        await self.back.wait()
        return await super().publish_many(events)


async def test_a_decision_the_broker_did_not_acknowledge_is_not_taken_again_until_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A review (h11 R1): while Kafka was away, the scheduler decided a due campaign again every round, and each
    round's CampaignQueued waited in the producer: 8 copies of one campaign on a topic kept forever."""
    from aiokafka.errors import KafkaTimeoutError

    monkeypatch.setattr(commands, "PUBLISH_TIMEOUT", 0.05)
    broker, checkpoints = SilentBroker(), Checkpoints()
    published: list[object] = []
    recorder = Recorder(broker, checkpoints, TOPIC, on_published=published.append)  # type: ignore[arg-type]
    queued = object()
    with pytest.raises(KafkaTimeoutError):
        async with recorder.serialised("acme:c1"):
            await recorder.commit([queued])  # type: ignore[list-item]
    for _ in range(3):  # the scheduler's next rounds, the broker still away
        with pytest.raises(KafkaTimeoutError):
            async with recorder.serialised("acme:c1"):
                pytest.fail("decided again while the first decision's events wait in the producer")
    async with recorder.serialised("acme:c2"):  # another campaign is not held up by it
        pass
    assert broker.handed == 1 and published == []

    monkeypatch.setattr(commands, "PUBLISH_TIMEOUT", 5.0)
    broker.back.set()
    decided = []

    async def scheduler() -> None:
        async with recorder.serialised("acme:c1"):  # decides on the state holding the first decision
            decided.append(checkpoints.applied)

    waiting = asyncio.create_task(scheduler())
    await asyncio.sleep(0.01)
    assert decided == [] and published == [queued]  # acknowledged, not yet applied
    checkpoints.apply(1)
    await asyncio.wait_for(waiting, 5)
    assert decided == [1] and broker.handed == 1
