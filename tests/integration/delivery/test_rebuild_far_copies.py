"""The audience's rebuild folds a copy of an event (the same id, published again batches later: a dead letter
replayed, a producer re-sending by hand) once, as the live audience consumer does, without holding the run's ids in
memory (issue 11): a list's creation by the ids the rebuild stores for the consumer, a membership's add by the ids
the member keeps."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from herald_delivery.rebuild import fold_audience
from herald_delivery.store import LISTS, MEMBERS
from herald_shared.contract import Event
from herald_shared.kafka import EventPublisher
from herald_shared.mongo import Document
from herald_shared.settings import HeraldSettings
from tests.samples import sample

# More than two of the rebuild's batches (`kafka.read_from_start`: 1,000 records) between an event and its copy.
BETWEEN = 2500


def event(type_name: str, **payload: object) -> Event:
    return sample(type_name, "acme", payload={**sample(type_name).payload.model_dump(mode="json"), **payload})


async def test_copies_batches_behind_their_originals_are_folded_once(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document]) -> None:
    created = event("ListCreated", list_id="news", custom_fields=[])
    added = event("SubscriberAdded", list_id="news", subscriber_id="anna")
    history = [created, added, event("SubscriberUnsubscribed", list_id="news", subscriber_id="anna"),
               event("ListDeleted", list_id="news")]
    filler = [event("ListCreated", list_id=f"other{i}", custom_fields=[]) for i in range(BETWEEN)]
    copies = [created, added]  # folded again: the list no longer deleted, anna back as pending
    published = await EventPublisher(producer, settings.topics).publish_many([*history, *filler, *copies])
    original, copy = published[0], published[-2]
    assert (original.topic, original.partition) == (copy.topic, copy.partition)
    assert copy.offset - original.offset > BETWEEN

    db = mongo[settings.database_name("delivery")]
    # Left by the live consumer; the rebuild empties the store first, so it is no copy of anything folded here.
    await db["processed_events.audience"].insert_one({"_id": str(history[-1].event_id)})
    read = await fold_audience(settings, db)

    assert (await db[LISTS].find_one({"_id": "acme:news"}) or {})["deleted"] is True
    assert (await db[MEMBERS].find_one({"_id": "acme:anna"}) or {})["status"] == "unsubscribed"
    stored = {d["_id"] async for d in db["processed_events.audience"].find({}, {"_id": 1})}
    assert {str(created.event_id), str(history[-1].event_id)} <= stored
    assert str(added.event_id) not in stored
    # The creation's copy passed over; the add's handed to the fold, which finds it in the member.
    assert read == len(published) - 1
