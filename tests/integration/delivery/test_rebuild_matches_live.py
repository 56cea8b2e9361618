"""The audience's rebuild (`python -m herald_delivery.rebuild`, README "Upgrading") folds what the live audience
consumer folded, document for document, and stores the event ids the consumer would; an audience of the fold
before 2026-12-06 (unmarked) is refused at start, and accepted once it is folded again, which also puts right the
membership that fold had made active for a suppressed address re-added by another producer."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from herald_delivery import store
from herald_delivery.main import Delivery
from herald_delivery.rebuild import STOP, consumer_groups, fold_audience
from herald_delivery.store import AUDIENCE, AudienceProjection
from herald_shared.contract import Event
from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    ListCreated,
    ListDeleted,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberErased,
    SubscriberSuppressed,
    SubscriberUnsubscribed,
)
from herald_shared.mongo import Document
from herald_shared.readmodel import compose
from herald_shared.rebuilding import FORMATS, ReadModelOutdated, run_rebuild
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .conftest import World, delivery_settings

AUDIENCE_COLLECTIONS = AudienceProjection.collections
BOB = "bob@example.org"


def sha(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()


def added(account: str, list_id: str, subscriber_id: str, address: str, producer: str = "subscriptions",
          opt_in: str = "single") -> SubscriberAdded:
    return SubscriberAdded(account_id=account, producer=producer, payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "email": address, "email_sha256": sha(address),
        "opt_in": opt_in, "first_name": "Ann", "custom_fields": {"city": "Riga"},
        "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "test"}})


def confirmed(account: str, list_id: str, subscriber_id: str, producer: str = "subscriptions",
              method: str = "single_opt_in") -> SubscriberConfirmed:
    return SubscriberConfirmed(account_id=account, producer=producer, payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "method": method})


def listed(account: str, list_id: str) -> ListCreated:
    return ListCreated(account_id=account, producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": list_id, "name": list_id.title(), "opt_in": "single"})


def suppressed(account: str, subscriber_id: str, address: str) -> SubscriberSuppressed:
    return SubscriberSuppressed(account_id=account, producer="subscriptions", payload={  # type: ignore[arg-type]
        "subscriber_id": subscriber_id, "email_sha256": sha(address), "reason": "complaint"})


def history() -> list[Event]:
    """acme: Bob suppressed, then re-added by a CRM under his id and under a new one on the CRM's list; Carl
    unsubscribed and added again; Dan erased; Eve asked to confirm a double opt-in and confirming it; a list
    deleted. globex: a list and a member (purged later)."""
    return [
        listed("acme", "news"), listed("acme", "old"),
        added("acme", "news", "ann", "ann@example.org"), confirmed("acme", "news", "ann"),
        added("acme", "news", "bob", BOB), confirmed("acme", "news", "bob"),
        added("acme", "news", "carl", "carl@example.org"), confirmed("acme", "news", "carl"),
        added("acme", "news", "dan", "dan@example.org"), confirmed("acme", "news", "dan"),
        added("acme", "old", "ann-old", "ann@example.org"), confirmed("acme", "old", "ann-old"),
        suppressed("acme", "bob", BOB),
        SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": "carl", "source": "api"}),
        added("acme", "news", "carl", "carl@example.org"),
        SubscriberErased(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "subscriber_id": "dan", "list_id": "news", "email_sha256": sha("dan@example.org"),
            "requested_by": "subscriber"}),
        ListDeleted(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "old", "members_at_deletion": 1}),
        added("acme", "news", "bob", BOB, producer="crm"), confirmed("acme", "news", "bob", producer="crm"),
        listed("acme", "crm"),
        added("acme", "crm", "crm-bob", BOB, producer="crm"), confirmed("acme", "crm", "crm-bob", producer="crm"),
        added("acme", "news", "eve", "eve@example.org", opt_in="double"),
        ConfirmationRequested(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": "eve", "email": "eve@example.org", "list_name": "News",
            "company_name": "Acme", "confirm_url": "http://subs.test/confirm/t", "expires_at":
                "2026-12-13T00:00:00Z"}),
        confirmed("acme", "news", "eve", method="double_opt_in"),
        listed("globex", "news"), added("globex", "news", "gus", "gus@example.org"),
        confirmed("globex", "news", "gus")]


async def dump(db: Any, names: tuple[str, ...] = AUDIENCE_COLLECTIONS) -> dict[str, list[Document]]:
    return {name: [d async for d in db[name].find({}).sort("_id", 1)] for name in names}


async def remembered(db: Any) -> set[str]:
    return {d["_id"] async for d in db["processed_events.audience"].find({}, {"_id": 1})}


async def folded_live(settings: HeraldSettings, world: World, service: Delivery) -> None:
    """The history, globex's purge, then a late event of globex (dropped by the tombstone), folded by the service."""
    await world.open_account("acme")
    await world.open_account("globex")
    await world.publish(*history())
    await service.audience_caught_up()
    await world.publish(AccountPurged(account_id="globex", producer="billing", payload={  # type: ignore[arg-type]
        "reason": "deleted", "since": "2026-09-01T00:00:00Z"}))
    db = service.db
    await eventually(lambda: db[store.MEMBERS].find_one({"_id": "globex:gus"}), lambda doc: doc is None,
                     what="globex purged from the audience")
    await world.publish(added("globex", "news", "late", "late@example.org"), added("acme", "news", "fay",
                                                                                 "fay@example.org"))
    await service.audience_caught_up()


async def test_the_rebuild_folds_the_audience_the_live_consumer_folded(
        settings: HeraldSettings, world: World, start_delivery: Any, mongo: AsyncMongoClient[Document]) -> None:
    service = (await start_delivery()).service
    await folded_live(settings, world, service)
    live = await dump(service.db)
    statuses = {d["_id"]: d["status"] for d in live[store.MEMBERS]}
    assert statuses == {"acme:ann": "active", "acme:ann-old": "active", "acme:bob": "suppressed",
                        "acme:carl": "pending", "acme:dan": "erased", "acme:crm-bob": "suppressed",
                        "acme:eve": "active", "acme:fay": "pending"}
    assert [d["_id"] for d in live[store.ACTIVE_MEMBERS]] == ["acme/news/ann", "acme/news/eve", "acme/old/ann-old"]
    assert (await service.db[FORMATS].find_one({"_id": "audience"}) or {}).get("format") == store.AUDIENCE_FORMAT

    rebuilt = mongo[settings.database_name("delivery-rebuilt")]
    try:
        await fold_audience(settings, rebuilt)
        assert await dump(rebuilt) == live
        # The ids the consumer stores (not the members' events, which the members keep; of herald.billing only
        # AccountPurged), so that it passes over what it reads again after the rebuild.
        assert await remembered(rebuilt) == await remembered(service.db)
        # Only the audience: nothing of the ledger, the gates or the campaigns is written.
        assert set(await rebuilt.list_collection_names()) <= {*AUDIENCE_COLLECTIONS, "processed_events.audience",
                                                              "purged_accounts"}
    finally:
        await mongo.drop_database(rebuilt.name)


async def test_an_audience_of_the_earlier_fold_is_refused_at_start_and_accepted_once_rebuilt(
        settings: HeraldSettings, world: World, relay: Any, mongo: AsyncMongoClient[Document]) -> None:
    first = Delivery(delivery_settings(settings, relay.port))
    await first.start()
    try:
        await folded_live(settings, world, first)
    finally:
        await first.stop()
    db = mongo[settings.database_name("delivery")]
    folded = await dump(db)
    # What the version before 2026-12-06 left: no mark, the CRM's re-added Bob made active, listed for campaigns,
    # and his address without its suppression.
    await db[FORMATS].delete_one({"_id": "audience"})
    await db[store.MEMBERS].update_one({"_id": "acme:crm-bob"}, {"$set": {"status": "active"}})
    await db[store.ACTIVE_MEMBERS].insert_one({"_id": "acme/crm/crm-bob"})
    await db[store.ADDRESSES].update_one({"_id": compose("acme", sha(BOB))}, {"$unset": {"suppressed": ""}})

    refused = Delivery(delivery_settings(settings, relay.port))
    try:
        with pytest.raises(ReadModelOutdated, match=r"python -m herald_delivery\.rebuild"):
            await refused.start()
    finally:
        await refused.mongo.close()
        refused.places.close()

    # The command's run, in this process (`python -m herald_delivery.rebuild` itself: test_rebuild_refuses_live_group)
    assert await run_rebuild(settings, AUDIENCE, consumer_groups(settings), STOP, fold_audience) == 0
    assert await dump(db) == folded  # Bob suppressed again, on every list
    assert (await db[FORMATS].find_one({"_id": "audience"}) or {}).get("format") == store.AUDIENCE_FORMAT

    again = Delivery(delivery_settings(settings, relay.port))
    await again.start()
    try:
        await eventually(again._running, bool, what="delivery running on the rebuilt audience")
        # The consumer resumes from its committed offsets: it folds what comes, and what it reads again is no change.
        await world.publish(added("acme", "crm", "crm-gil", "gil@example.org", producer="crm"),
                            confirmed("acme", "crm", "crm-gil", producer="crm"))
        await again.audience_caught_up()
        after = await dump(db)
        assert [d["_id"] for d in after[store.ACTIVE_MEMBERS]] == [
            "acme/crm/crm-gil", "acme/news/ann", "acme/news/eve", "acme/old/ann-old"]
        gil = {"acme:crm-gil", "acme/crm/crm-gil", compose("acme", sha("gil@example.org"))}
        assert {name: [d for d in docs if d["_id"] not in gil] for name, docs in after.items()} == folded
    finally:
        await again.stop()


async def test_a_fresh_audience_is_marked_when_first_folded_and_a_rebuild_marks_it_only_at_its_end(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document]) -> None:
    """A new deployment (or a projection folding outside the service, as tests do) starts from nothing: the first
    fold into an empty audience marks it, so a process started on it later is not refused."""
    db = mongo[settings.database_name("delivery")]
    await AUDIENCE.check(db)  # empty: marked at start
    assert await db[FORMATS].find_one({"_id": "audience"}) == {"_id": "audience", "format": store.AUDIENCE_FORMAT}
    await db[FORMATS].delete_one({"_id": "audience"})

    events = [listed("acme", "news"), added("acme", "news", "ann", "ann@example.org")]
    rebuilding = AudienceProjection(db, rebuilding=True)
    for event in events:
        await rebuilding.handle(event)
    await rebuilding.flush()
    assert await db[FORMATS].find_one({"_id": "audience"}) is None
    with pytest.raises(ReadModelOutdated):
        await AUDIENCE.check(db)

    other = mongo[settings.database_name("delivery-other")]
    live = AudienceProjection(other)
    for event in events:
        await live.handle(event)
    await live.flush()
    await AUDIENCE.check(other)
    assert await other[FORMATS].find_one({"_id": "audience"}) == {"_id": "audience", "format": store.AUDIENCE_FORMAT}
    await mongo.drop_database(other.name)
