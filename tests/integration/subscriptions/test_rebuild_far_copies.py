"""The rebuild folds a copy of an event (the same id, published again batches later: a dead letter replayed, a producer
re-sending by hand) once, as the live consumer does, without holding the run's ids in memory (issue 11): a list's
rename by the ids the rebuild stores for the consumer, a membership's add by the ids the membership keeps."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from herald_shared.contract import Event
from herald_shared.kafka import EventPublisher
from herald_shared.mongo import Document
from herald_shared.settings import HeraldSettings
from herald_subscriptions.rebuild import fold_read_model
from herald_subscriptions.store import LIST_COUNTS, LISTS, SUBSCRIBERS
from tests.samples import sample

# More than two of the rebuild's batches (`kafka.read_from_start`: 1,000 records) between an event and its copy.
BETWEEN = 2500


def event(type_name: str, **payload: object) -> Event:
    return sample(type_name, "acme", payload={**sample(type_name).payload.model_dump(mode="json"), **payload})


async def test_copies_batches_behind_their_originals_are_folded_once(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    first_name, second_name = event("ListRenamed", list_id="news", name="First"), \
        event("ListRenamed", list_id="news", name="Second")
    added = event("SubscriberAdded", list_id="news", subscriber_id="anna")
    history = [event("ListCreated", list_id="news", custom_fields=[]), first_name, second_name, added,
               event("SubscriberUnsubscribed", list_id="news", subscriber_id="anna")]
    filler = [event("ListRenamed", list_id="other", name=f"n{i}") for i in range(BETWEEN)]
    copies = [first_name, added]  # folded again: the list named "First", anna back as pending
    published = await EventPublisher(producer, settings.topics).publish_many([*history, *filler, *copies])
    original, copy = published[1], published[-2]
    assert (original.topic, original.partition) == (copy.topic, copy.partition)
    assert copy.offset - original.offset > BETWEEN

    db = mongo[settings.database_name("subscriptions")]
    # Left by the live consumer; the rebuild empties the store first, so it is no copy of anything folded here.
    await db["processed_events.projection"].insert_one({"_id": str(second_name.event_id)})
    read = await fold_read_model(settings, db)

    assert (await db[LISTS].find_one({"_id": "acme/news"}) or {})["name"] == "Second"
    anna = await db[SUBSCRIBERS].find_one({"_id": "acme/anna"}) or {}
    assert anna["status"] == "unsubscribed"
    counts = (await db[LIST_COUNTS].find_one({"_id": "acme/news"}) or {})["counts"]
    assert {status: n for status, n in counts.items() if n} == {"unsubscribed": 1}
    stored = {d["_id"] async for d in db["processed_events.projection"].find({}, {"_id": 1})}
    assert str(first_name.event_id) in stored and str(second_name.event_id) in stored
    assert str(added.event_id) not in stored
    # The rename's copy passed over; the add's handed to the fold, which finds it in the membership.
    assert read == len(published) - 1
