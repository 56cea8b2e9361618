"""`purging.PurgingHandler` and a batch the store refuses (`kafka.EventConsumer` hands its events over again one
at a time to a handler that can forget them): the wrapper can forget exactly when the handler it wraps can, and
a purge behind an event the store refuses waits for the flush instead of failing, which would dead-letter the
purge itself (pure: stand-ins for the handler and the tombstones)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, WriteError

from herald_shared.contract import Event
from herald_shared.purging import PurgingHandler
from tests.samples import sample


class Tombstones:
    def __init__(self) -> None:
        self.known: set[str] = set()

    async def load(self) -> set[str]:
        return self.known

    async def add(self, account_id: str, at: datetime) -> None:
        self.known.add(account_id)


class Inner:
    """Stages events; its flush fails while `refusing` (with `error`) and then writes them."""

    def __init__(self, error: Exception | None = None) -> None:
        self.staged: list[Event] = []
        self.written: list[Event] = []
        self.error = error
        self.forgotten = 0

    async def handle(self, event: Event) -> None:
        self.staged.append(event)

    async def flush(self) -> None:
        if self.error is not None and self.staged:
            raise self.error
        self.written += self.staged
        self.staged = []


class Forgetful(Inner):
    async def forget(self) -> None:
        self.staged = []
        self.forgotten += 1


def wrapped(inner: Inner) -> tuple[PurgingHandler, list[str]]:
    purges: list[str] = []

    async def purge(account_id: str) -> None:
        purges.append(account_id)

    return PurgingHandler(inner, Tombstones(), purge), purges  # type: ignore[arg-type]


async def test_it_forgets_only_when_the_handler_it_wraps_can() -> None:
    assert getattr(wrapped(Inner())[0], "forget", None) is None  # the consumer retries such a batch as before
    inner = Forgetful()
    forget: Any = getattr(wrapped(inner)[0], "forget", None)
    assert forget is not None
    await forget()
    assert inner.forgotten == 1


async def test_a_purge_behind_an_event_the_store_refuses_waits_for_the_flush_and_is_forgotten_with_the_batch() -> None:
    inner = Forgetful(WriteError("cannot store it", 2))
    handler, purges = wrapped(inner)
    refused, purged, after = sample("ListCreated", "acc-1"), sample("AccountPurged", "acc-1"), sample("ListCreated",
                                                                                                     "acc-1")
    await handler.handle(refused)
    await handler.handle(purged)  # not raised: raising would dead-letter the purge
    await handler.handle(after)
    assert (purges, inner.staged, handler.dropped) == ([], [refused], 1), "later events of the account dropped"
    with pytest.raises(WriteError):
        await handler.flush()
    assert purges == []

    # The consumer sets the batch aside: forgets it, and hands its events over again, each flushed alone.
    await handler.forget()  # type: ignore[misc]
    await handler.handle(refused)
    with pytest.raises(WriteError):
        await handler.flush()
    await handler.forget()  # type: ignore[misc]  # refused again: dead-lettered
    inner.error = None
    await handler.handle(purged)
    await handler.flush()
    assert purges == ["acc-1"]
    await handler.handle(after)
    assert inner.written == [] and handler.dropped == 2


async def test_a_waiting_purge_is_done_once_the_batchs_flush_passes() -> None:
    inner = Forgetful(WriteError("refused once", 2))
    handler, purges = wrapped(inner)
    await handler.handle(sample("ListCreated", "acc-1"))
    await handler.handle(sample("AccountPurged", "acc-1"))
    inner.error = None
    await handler.flush()
    assert (purges, len(inner.written)) == (["acc-1"], 1)
    await handler.flush()
    assert purges == ["acc-1"], "once"


async def test_the_infrastructure_away_still_fails_the_purge_to_be_waited_out() -> None:
    handler, purges = wrapped(Forgetful(AutoReconnect("connection refused")))
    await handler.handle(sample("ListCreated", "acc-1"))
    with pytest.raises(AutoReconnect):
        await handler.handle(sample("AccountPurged", "acc-1"))
    assert purges == []
