"""The rebuild (`herald_subscriptions.rebuild`) folds the read model the live consumer folded, however its batches
are cut, while it loads only the memberships and addresses it wrote itself and stores the ids of none of the member
events (the memberships keep those, as the live consumer leaves them)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable
from typing import Any

import pytest

from herald_shared import readmodel
from herald_shared.contract import Event
from herald_shared.contract.delivery import MessageBounced
from herald_shared.kafka import Reject, read_from_start, validate_record
from herald_shared.readmodel import Document
from herald_subscriptions import store
from herald_subscriptions.domain import subscriber_id_for
from herald_subscriptions.main import PROJECTION_TOPICS
from herald_subscriptions.rebuild import fold_read_model
from herald_subscriptions.store import MEMBER_EVENTS, SubscriptionsProjection
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform
from tests.samples import sample


async def _dump(db: Any, names: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    return {name: [d async for d in db[name].find({}).sort("_id", 1)] for name in names}


async def _history(platform: Platform) -> Platform:
    """Two accounts; memberships added, confirmed by double opt-in, unsubscribed, added again, suppressed by a
    hard bounce across an address's lists, erased; another producer's members of a list never created and of a
    deleted one (dead-lettered live, left out by the rebuild); folded live until the last of it shows."""
    acme = await platform.tenant("acme")
    await acme.create_list("news", custom_fields=[{"name": "city", "kind": "text"}])
    await acme.create_list("offers", opt_in="double")
    anna = (await acme.subscribe("anna@example.com", custom_fields={"city": "Riga"})).json()["subscriber_id"]
    await acme.subscribe("anna@example.com", list_id="offers")
    await acme.subscribe("ben@example.com")
    carl = (await acme.subscribe("carl@example.com")).json()["subscriber_id"]
    await acme.http.post(f"/v1/subscribers/{carl}/unsubscribe")
    await acme.subscribe("carl@example.com", list_id="offers")
    await acme.http.post("/v1/gdpr/erase", json={"email": "ben@example.com"})
    await acme.create_list("old")
    assert (await acme.http.delete("/v1/lists/old")).status_code == 204
    await platform.publisher.publish_many([_crm_added("acme", "typo", "dora@example.com"),
                                           _crm_added("acme", "old", "dora@example.com")])
    globex = await platform.tenant("globex")
    await globex.create_list("news")
    await globex.subscribe("anna@example.com")
    await platform.publisher.publish(MessageBounced(account_id="acme", producer="delivery", payload={
        "message_id": "m1", "campaign_id": "c1", "subscriber_id": anna, "bounce_class": "hard",
        "diagnostic": "user unknown", "source": "dsn"}))

    async def both_suppressed() -> bool:
        members = (await acme.http.get("/v1/lists/offers/subscribers")).json()["items"]
        return any(m["email"] == "anna@example.com" and m["status"] == "suppressed" for m in members)

    await eventually(both_suppressed, bool, what="anna suppressed on both of acme's lists")
    return platform


def _crm_added(account_id: str, list_id: str, email: str) -> Event:
    added = sample("SubscriberAdded", account_id)
    return added.model_copy(update={"producer": "crm", "payload": added.payload.model_copy(update={  # type: ignore[attr-defined]
        "list_id": list_id, "email": email, "email_sha256": hashlib.sha256(email.encode()).hexdigest(),
        "subscriber_id": subscriber_id_for(account_id, list_id, email)})})


async def _events(platform: Platform) -> list[Event]:
    names = platform.settings.topics
    found: list[Event] = []
    async for records in read_from_start(platform.settings, [names(t) for t in PROJECTION_TOPICS]):
        found += [validate_record(r, names) for r in records]
    return found


async def test_the_rebuild_folds_what_the_live_consumer_folded(platform: Platform) -> None:
    await _history(platform)
    projection = platform.service.projection
    live = await _dump(projection.db, projection.collections)
    assert not [d for d in live["subscribers"] if d.get("email") == "dora@example.com"]  # refused, both
    assert [{k: n for k, n in d["counts"].items() if n} for d in live["list_counts"]] == [
        {"suppressed": 1, "unsubscribed": 1},  # acme/news: anna suppressed, ben erased, carl unsubscribed
        {"pending": 1, "suppressed": 1},  # acme/offers: carl added again (double opt-in)
        {"active": 1}]  # globex/news

    name = platform.settings.database_name("rebuilt")
    rebuilt = platform.service.mongo[name]
    try:
        await fold_read_model(platform.settings, rebuilt)
        assert await _dump(rebuilt, projection.collections) == live
        events = await _events(platform)
        remembered = {d["_id"] async for d in rebuilt["processed_events.projection"].find({}, {"_id": 1})}
        assert remembered == {str(e.event_id) for e in events if not isinstance(e, MEMBER_EVENTS)}
    finally:
        await platform.service.mongo.drop_database(name)


@pytest.mark.parametrize("batch", [1, 2, 5])
async def test_a_rebuild_in_any_batches_loads_only_what_it_wrote(platform: Platform, batch: int,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A membership or address the rebuild never wrote cannot be stored (it folds into dropped collections):
    not loaded. One it wrote is, in the next batch that names it."""
    await _history(platform)
    projection = platform.service.projection
    live = await _dump(projection.db, projection.collections)

    name = platform.settings.database_name("batches")
    rebuilt = SubscriptionsProjection(platform.service.mongo[name], rebuilding=True)
    await rebuilt.drop()
    await rebuilt.ensure_indexes()
    asked: list[set[str]] = []
    written: set[str] = set()

    async def load(collection: Any, ids: Iterable[str], fields: Document | None = None) -> dict[str, Document]:
        wanted = set(ids)
        if collection.name in (store.SUBSCRIBERS, store.ADDRESSES):
            asked.append(wanted)
        return await readmodel.load(collection, wanted, fields)

    monkeypatch.setattr(store, "load", load)
    events = await _events(platform)
    try:
        for start in range(0, len(events), batch):
            for event in events[start:start + batch]:
                with contextlib.suppress(Reject):  # as `rebuild` leaves out what the projection refuses
                    await rebuilt.handle(event)
            await rebuilt.flush()
            assert all(ids <= written for ids in asked), "loaded what this rebuild never wrote"
            asked.clear()
            written |= {d["_id"] for collection in (store.SUBSCRIBERS, store.ADDRESSES)
                        async for d in rebuilt.db[collection].find({}, {"_id": 1})}
        assert await _dump(rebuilt.db, projection.collections) == live
    finally:
        await platform.service.mongo.drop_database(name)
