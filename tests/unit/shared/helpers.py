"""Small helpers for the shared adapters' unit tests."""

from __future__ import annotations

from typing import Any, Protocol


class Refused(Exception):
    """What the store answers for a document it cannot keep, whatever the attempt."""


class Folding(Protocol):
    """A fold of events whose first item is their offset, and the `forget` of a batch it set aside."""

    async def fold(self, events: list[Any]) -> None: ...

    async def forget(self) -> None: ...


async def consume(handler: Folding, batch: list[Any], attempts: int = 3) -> list[int]:
    """What the consumer does with a batch (`kafka.EventConsumer`): flush (fold) up to `attempts` times; refused,
    forget it and fold each event alone, forgetting and dead-lettering those refused. The offsets dead-lettered."""
    if await flushed(handler, batch, attempts):
        return []
    await handler.forget()
    letters = []
    for event in batch:
        if not await flushed(handler, [event], attempts):
            await handler.forget()
            letters.append(event[0])
    return letters


async def flushed(handler: Folding, events: list[Any], attempts: int) -> bool:
    for _ in range(attempts):
        try:
            await handler.fold(events)
            return True
        except Refused:
            continue
    return False
