"""Delivery's audience (real MongoDB/FerretDB): a copy of an old membership event folded again, long after the
original, changes nothing; above all it never brings back to a campaign's audience a person who unsubscribed,
or whose address was suppressed, though the audience consumer stores no id for these events."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from herald_delivery import store as delivery_store
from herald_delivery.store import AudienceProjection, DeliveryStore
from herald_shared.contract import Event
from herald_shared.contract.subscriptions import (
    ListCreated,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)
from herald_shared.settings import HeraldSettings


def added(subscriber_id: str, list_id: str, address: str) -> SubscriberAdded:
    return SubscriberAdded(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "email": address, "opt_in": "single",
        "email_sha256": hashlib.sha256(address.encode()).hexdigest(),
        "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "test"}})


def confirmed(subscriber_id: str, list_id: str) -> SubscriberConfirmed:
    return SubscriberConfirmed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "method": "single_opt_in"})


async def fold(projection: AudienceProjection, *events: Event) -> None:
    for event in events:
        await projection.handle(event)
    await projection.flush()


async def audience(store: DeliveryStore, list_id: str) -> list[str]:
    return [m.subscriber_id async for m in store.list_members("acme", list_id)]


async def test_old_membership_events_folded_again_bring_nobody_back(
        settings: HeraldSettings, mongo: AsyncMongoClient[Any]) -> None:
    db = mongo[settings.database_name("delivery")]
    projection, store = AudienceProjection(db), DeliveryStore(db)
    history: list[Event] = [
        ListCreated(account_id="acme", producer="subscriptions",  # type: ignore[arg-type]
                    payload={"list_id": "news", "name": "News", "opt_in": "single"}),
        ListCreated(account_id="acme", producer="subscriptions",  # type: ignore[arg-type]
                    payload={"list_id": "offers", "name": "Offers", "opt_in": "single"}),
        added("s1", "news", "ann@example.org"), confirmed("s1", "news"),
        added("s2", "offers", "ann@example.org"), confirmed("s2", "offers"),
        added("s3", "news", "ben@example.org"), confirmed("s3", "news")]
    await fold(projection, *history)
    assert sorted(await audience(store, "news")) == ["s1", "s3"] and await audience(store, "offers") == ["s2"]

    later: list[Event] = [
        SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": "s3", "source": "one_click"}),
        # ann's address bounced: every membership of it is suppressed, the named one and the other list's.
        SubscriberSuppressed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "subscriber_id": "s1", "email_sha256": hashlib.sha256(b"ann@example.org").hexdigest(),
            "reason": "hard_bounce"})]
    await fold(projection, *later)
    assert await audience(store, "news") == [] and await audience(store, "offers") == []
    members = {d["_id"]: d async for d in db["members"].find({})}

    # The whole history again, in two batches and in one: a fresh fold would make all three active again.
    await fold(projection, *history[2:5])
    assert await audience(store, "news") == [] and await audience(store, "offers") == []
    await fold(projection, *history, *later)
    assert await audience(store, "news") == [] and await audience(store, "offers") == []
    assert {d["_id"]: d async for d in db["members"].find({})} == members


async def test_a_longer_batch_folded_after_a_crash_leaves_no_one_listed_who_left(
        settings: HeraldSettings, mongo: AsyncMongoClient[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch died after writing the listing (s1 listed active) and before the members; the batch folded again
    after the restart is longer (s1 added, confirmed and unsubscribed at once). The expansion reads the listing
    alone: s1 must not be in it."""
    db = mongo[settings.database_name("delivery")]
    created = ListCreated(account_id="acme", producer="subscriptions",  # type: ignore[arg-type]
                          payload={"list_id": "news", "name": "News", "opt_in": "single"})
    history: list[Event] = [created, added("s1", "news", "ann@example.org"), confirmed("s1", "news"),
                            added("s2", "news", "ben@example.org"), confirmed("s2", "news")]
    left = SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": "s1", "source": "one_click"})
    real_write = delivery_store.write_changes

    async def dies_before_the_members(collection: Any, before: Any, after: Any) -> None:
        if collection.name == delivery_store.MEMBERS:
            raise ConnectionError("the process died here")
        await real_write(collection, before, after)

    monkeypatch.setattr(delivery_store, "write_changes", dies_before_the_members)
    with pytest.raises(ConnectionError):
        await fold(AudienceProjection(db), *history)
    monkeypatch.setattr(delivery_store, "write_changes", real_write)
    await fold(AudienceProjection(db), *history, left)
    store = DeliveryStore(db)
    assert [ids async for ids in store.active_member_ids("acme", "news")] == [["s2"]]
    assert await audience(store, "news") == ["s2"]
