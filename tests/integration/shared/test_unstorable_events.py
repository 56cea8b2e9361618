"""Bad input never stops a stream (ARCHITECTURE.md, principle 6), not even an event the contract takes and the
store cannot keep: a flush the store keeps refusing has the batch's events handled again one at a time, and the
one it refuses is dead-lettered with why; the valid events around it are folded, once each. An outage of the
store is still waited out, never dead-lettered. On the real stack."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import AutoReconnect

from herald_shared.contract import Event
from herald_shared.contract.envelope import INT64_MAX
from herald_shared.contract.subscriptions import ImportCompleted
from herald_shared.kafka import (
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    EventConsumer,
    EventPublisher,
    EventsRefused,
    Reject,
    read_from_start,
)
from herald_shared.mongo import Document, MongoDeduplicator
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.shared.helpers import replay_fixed
from tests.samples import sample

ACCOUNT = "acc-sums"


class ImportTotals:
    """Rows imported per account, summed as ImportCompleted events fold. Like the services' projections, it
    changes its state in memory before the flush: `handle` reads the account's total from the store the first
    time a batch names it and adds to it there, `flush` writes the totals, and a flush that fails keeps them for
    its next try. A total beyond 64 bits is what the store cannot keep (PyMongo refuses it)."""

    def __init__(self, collection: AsyncCollection[Document], outages: int = 0) -> None:
        self.collection = collection
        self.handled = 0
        self._totals: dict[str, Document] = {}
        self._outages = outages  # flushes that meet the database away

    async def handle(self, event: Event) -> None:
        if not isinstance(event, ImportCompleted):
            return
        self.handled += 1
        total = self._totals.get(event.account_id)
        if total is None:
            total = await self.collection.find_one({"_id": event.account_id}) or {
                "_id": event.account_id, "rows": 0, "imports": []}
        self._totals[event.account_id] = {**total, "rows": total["rows"] + event.payload.rows_total,
                                          "imports": [*total["imports"], event.payload.import_id]}

    async def flush(self) -> None:
        if self._outages > 0 and self._totals:
            self._outages -= 1
            raise AutoReconnect("connection refused (the database restarts)")
        for total in self._totals.values():
            await self.collection.replace_one({"_id": total["_id"]}, total, upsert=True)
        self._totals.clear()

    async def forget(self) -> None:
        self._totals.clear()


def imported(import_id: str, rows: int) -> ImportCompleted:
    event = sample("ImportCompleted", ACCOUNT)
    assert isinstance(event, ImportCompleted)
    return event.model_copy(update={"payload": event.payload.model_copy(update={"import_id": import_id,
                                                                                "rows_total": rows})})


async def dead_letters(settings: HeraldSettings) -> list[dict[str, str]]:
    """Each entry's headers, and where it is (`entry`, as `herald dlq replay` takes it)."""
    entries = []
    async for records in read_from_start(settings, [settings.topics.dead_letter("herald.subscriptions")]):
        for record in records:
            headers = {k: bytes(v).decode() for k, v in record.headers}
            entries.append({**headers, "entry": f"{record.partition}:{record.offset}"})
    return entries


async def totals(collection: AsyncCollection[Document]) -> Document | None:
    return await collection.find_one({"_id": ACCOUNT})


def consumer_of(settings: HeraldSettings, producer: AIOKafkaProducer, projection: ImportTotals,
                mongo: AsyncMongoClient[Document]) -> EventConsumer:
    return EventConsumer(settings, name=settings.topic_prefix + "import-totals", topics=["herald.subscriptions"],
                         handler=projection, producer=producer, retry_delay=0.01,
                         deduplicator=MongoDeduplicator(mongo[settings.database_name("tests")], "import-totals"))


async def test_an_event_the_store_refuses_is_dead_lettered_and_the_batch_around_it_folded_once(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document],
        tmp_path: Path) -> None:
    collection = mongo[settings.database_name("tests")]["import_totals"]
    first, overflowing, third = imported("i1", 5), imported("i2", INT64_MAX), imported("i3", 7)
    positions = await EventPublisher(producer, settings.topics).publish_many([first, overflowing, third])
    projection = ImportTotals(collection)
    consumer = consumer_of(settings, producer, projection, mongo)
    task = asyncio.create_task(consumer.run())
    try:
        letters = await eventually(lambda: dead_letters(settings), lambda e: len(e) == 1, what="one dead letter")
        done = await eventually(lambda: totals(collection), lambda t: t is not None and len(t["imports"]) == 2,
                                what="the two storable imports folded")
        # Read in one batch, its flush refused; then each event again, alone.
        assert projection.handled == 6
        assert (done["rows"], done["imports"]) == (12, ["i1", "i3"]), "applied once each, in order"
        assert letters[0][DLQ_SOURCE_OFFSET] == str(positions[1].offset)
        assert letters[0][DLQ_REASON] == ("not stored after 3 attempts: OverflowError: "
                                          "MongoDB can only handle up to 8-byte ints")

        # Fixed and replayed (the same event id): folded, since a dead-lettered event is not remembered handled.
        await replay_fixed(settings, "herald.subscriptions", letters[0]["entry"], overflowing,
                           lambda fixed: fixed["payload"].update(rows_total=1), tmp_path)
        done = await eventually(lambda: totals(collection), lambda t: t is not None and len(t["imports"]) == 3,
                                what="the replayed import folded")
        assert (done["rows"], done["imports"]) == (13, ["i1", "i3", "i2"])
    finally:
        consumer.request_stop()
        await asyncio.wait_for(task, timeout=30)


async def test_a_flush_that_meets_the_database_away_waits_and_dead_letters_nothing(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    collection = mongo[settings.database_name("tests")]["import_totals"]
    await EventPublisher(producer, settings.topics).publish_many([imported("i1", 5), imported("i2", 7)])
    projection = ImportTotals(collection, outages=5)  # more than the attempts a refusal gets
    consumer = consumer_of(settings, producer, projection, mongo)
    task = asyncio.create_task(consumer.run())
    try:
        done = await eventually(lambda: totals(collection), lambda t: t is not None and len(t["imports"]) == 2,
                                what="both imports folded after the outage")
    finally:
        consumer.request_stop()
        await asyncio.wait_for(task, timeout=30)
    assert (done["rows"], projection.handled) == (12, 2), "handled once, never set aside"
    assert await dead_letters(settings) == []



class RuledTotals(ImportTotals):
    """Totals whose fold refuses an import named `i2` by a rule of its own, found only at the flush of a batch (as
    subscriptions finds an address's second membership of a list): alone, `handle` rejects it."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        super().__init__(collection)
        self.refused_flushes = 0
        self._batch: list[str] = []

    async def handle(self, event: Event) -> None:
        if isinstance(event, ImportCompleted) and event.payload.import_id == "i2" and not self._batch:
            raise Reject("i2 is refused by the rule")
        if isinstance(event, ImportCompleted):
            self._batch.append(event.payload.import_id)
        await super().handle(event)

    async def flush(self) -> None:
        if "i2" in self._batch:
            self.refused_flushes += 1
            raise EventsRefused("i2 is refused by the rule")
        await super().flush()
        self._batch.clear()

    async def forget(self) -> None:
        await super().forget()
        self._batch.clear()


async def test_a_batch_a_rule_refuses_at_its_flush_is_set_aside_at_once_and_the_refused_event_dead_lettered(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document],
        caplog: Any) -> None:
    """Not retried as if the store were refusing it (three flushes, each logged at ERROR with a traceback):
    handed over again one at a time at once, so that the handler refuses the one its rule refuses."""
    collection = mongo[settings.database_name("tests")]["ruled_totals"]
    await EventPublisher(producer, settings.topics).publish_many([imported("i1", 5), imported("i2", 1),
                                                                  imported("i3", 7)])
    projection = RuledTotals(collection)
    consumer = consumer_of(settings, producer, projection, mongo)
    task = asyncio.create_task(consumer.run())
    try:
        letters = await eventually(lambda: dead_letters(settings), lambda e: len(e) == 1, what="one dead letter")
        done = await eventually(lambda: totals(collection), lambda t: t is not None and len(t["imports"]) == 2,
                                what="the other two folded")
        assert (done["rows"], done["imports"]) == (12, ["i1", "i3"])
        assert letters[0][DLQ_REASON] == "rejected: i2 is refused by the rule"
        assert projection.refused_flushes == 1  # the batch's, not retried
        assert not [r for r in caplog.records if "flush failed" in r.getMessage()]
    finally:
        consumer.request_stop()
        await asyncio.wait_for(task, timeout=30)
