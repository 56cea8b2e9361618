"""Subscriber ids are unique per account only: the event contract lets another producer (a CRM) choose them, so
two accounts may use one id. PRODUCT.md: "One account can never read or change another account's data." Each
account's membership of that id is its own (memberships keyed by account and id), through every path: the fold,
the API, the listing and counts, the GDPR export, a suppression, the purge, and the rebuild an upgrade from the
format keyed by id alone runs."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from herald_shared.contract import Event
from herald_shared.contract.billing import AccountPurged
from herald_shared.contract.delivery import MessageBounced
from herald_shared.contract.subscriptions import SubscriberAdded, SubscriberConfirmed
from herald_subscriptions import store
from herald_subscriptions.rebuild import rebuild_read_model
from herald_subscriptions.store import ReadModelOutdated, SubscriptionsStore, check_format
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform, Tenant

BOB = "bob@rival.example"


def crm_member(account_id: str, subscriber_id: str, email: str) -> list[Event]:
    """What a CRM publishes for a single opt-in subscriber whose id it chose."""
    return [
        SubscriberAdded(account_id=account_id, producer="crm", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": subscriber_id, "email": email,
            "email_sha256": hashlib.sha256(email.encode()).hexdigest(), "opt_in": "single",
            "consent": {"source": "api", "method": "crm import", "collected_at": "2026-11-01T00:00:00Z"}}),
        SubscriberConfirmed(account_id=account_id, producer="crm", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": subscriber_id, "method": "single_opt_in"})]


async def member(tenant: Tenant, subscriber_id: str) -> dict[str, Any]:
    response = await tenant.http.get(f"/v1/subscribers/{subscriber_id}")
    return {"http": response.status_code, **(response.json() if response.status_code == 200 else {})}


async def listing(tenant: Tenant) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    body = (await tenant.http.get("/v1/lists/news/subscribers")).json()
    return [(m["subscriber_id"], m["email"], m["status"]) for m in body["items"]], body["counts"]


async def test_two_accounts_using_one_subscriber_id_keep_separate_members_and_purging_one_leaves_the_other(
        platform: Platform) -> None:
    acme, rival = await platform.tenant("acme"), await platform.tenant("rival")
    await acme.create_list("news")
    await rival.create_list("news")
    anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
    # rival's CRM adds its own subscriber with the id acme's anna has
    await platform.publisher.publish_many(crm_member("rival", anna, BOB))
    await eventually(lambda: member(rival, anna), lambda m: m.get("status") == "active", what="rival's member")

    assert (await member(acme, anna))["email"] == "anna@example.com"
    assert (await member(rival, anna))["email"] == BOB
    assert await listing(acme) == ([(anna, "anna@example.com", "active")],
                                   {"pending": 0, "active": 1, "unsubscribed": 0, "suppressed": 0})
    assert await listing(rival) == ([(anna, BOB, "active")],
                                    {"pending": 0, "active": 1, "unsubscribed": 0, "suppressed": 0})
    exported = (await acme.http.get("/v1/gdpr/export", params={"email": "anna@example.com"})).json()
    assert [m["subscriber_id"] for m in exported["memberships"]] == [anna]
    assert (await acme.http.get("/v1/gdpr/export", params={"email": BOB})).json()["memberships"] == []
    assert [m["email"] for m in (await rival.http.get("/v1/gdpr/export", params={"email": BOB})
                                 ).json()["memberships"]] == [BOB]

    # A hard bounce of rival's message to that id suppresses rival's member only.
    await platform.publisher.publish(MessageBounced(account_id="rival", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m1", "campaign_id": "c1", "subscriber_id": anna, "list_id": "news", "bounce_class": "hard",
        "smtp_code": 550, "enhanced_status_code": "5.1.1", "diagnostic": "user unknown", "source": "smtp_reply"}))
    await eventually(lambda: member(rival, anna), lambda m: m.get("status") == "suppressed", what="rival's bounce")
    assert (await member(acme, anna))["status"] == "active"
    # acme unsubscribes its anna: rival's member stays as it is
    assert (await acme.http.post(f"/v1/subscribers/{anna}/unsubscribe")).json()["status"] == "unsubscribed"
    assert (await member(rival, anna))["status"] == "suppressed"

    # The two memberships are two documents, each keyed by its account.
    keys = [d["_id"] async for d in platform.service.db[store.SUBSCRIBERS].find({}).sort("_id", 1)]
    assert keys == [f"acme/{anna}", f"rival/{anna}"]

    await platform.publisher.publish(AccountPurged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "reason": "deleted", "since": "2026-01-01T00:00:00Z"}))
    await eventually(lambda: platform.service.db[store.SUBSCRIBERS].find_one({"_id": f"acme/{anna}"}),
                     lambda doc: doc is None, what="acme purged")
    kept = await member(rival, anna)
    assert (kept["http"], kept["email"], kept["status"]) == (200, BOB, "suppressed")
    assert (await listing(rival))[1]["suppressed"] == 1


async def test_members_pages_run_across_members_whose_ids_a_crm_chose(platform: Platform) -> None:
    """Every `next_cursor` is taken back, whatever id the page ended at (the contract's `Identifier`)."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    ours = [(await acme.subscribe(f"p{i}@example.com")).json()["subscriber_id"] for i in range(3)]
    chosen = ["crm-42", "CRM:7.a_b", "a.b", "z" * 128]
    for i, subscriber_id in enumerate(chosen):
        await platform.publisher.publish_many(crm_member("acme", subscriber_id, f"crm{i}@example.org"))
    await eventually(lambda: listing(acme), lambda found: found[1]["active"] == 7, what="CRM members folded")

    seen, cursors, cursor = [], [], None
    while True:
        response = await acme.http.get("/v1/lists/news/subscribers",
                                       params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, (cursor, response.text)
        body = response.json()
        seen += [m["subscriber_id"] for m in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert sorted(seen) == sorted(ours + chosen) and len(seen) == 7
    assert {f"active.{subscriber_id}" for subscriber_id in chosen} <= set(cursors)  # each a page's end


async def test_an_upgrade_rebuilds_a_read_model_keyed_by_subscriber_id_alone(platform: Platform) -> None:
    """The read model of the earlier format (memberships by subscriber id alone, with one account's member
    folded over the other's) is refused at start and rebuilt from the topics, each account's member its own."""
    acme, rival = await platform.tenant("acme"), await platform.tenant("rival")
    await acme.create_list("news")
    await rival.create_list("news")
    anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
    await platform.publisher.publish_many(crm_member("rival", anna, BOB))
    await eventually(lambda: platform.service.db[store.SUBSCRIBERS].find_one({"_id": f"rival/{anna}"}),
                     lambda doc: doc is not None, what="rival's member folded")

    # The earlier format, as it was left after the collision: one document under the bare id, rival's.
    old = platform.service.mongo[platform.settings.database_name("subscriptions-earlier")]
    await old[store.SUBSCRIBERS].insert_one({"_id": anna, "account_id": "rival", "list_id": "news", "email": BOB,
                                             "email_sha256": hashlib.sha256(BOB.encode()).hexdigest(),
                                             "status": "active"})
    await old[store.ADDRESSES].insert_one({"_id": f"acme/{'0' * 64}", "account_id": "acme", "members": [anna]})
    with pytest.raises(ReadModelOutdated):
        await check_format(old)

    await rebuild_read_model(platform.settings, old)
    await check_format(old)  # marked: a process of this version starts on it
    assert [d["_id"] async for d in old[store.SUBSCRIBERS].find({}).sort("_id", 1)] == [
        f"acme/{anna}", f"rival/{anna}"]
    rebuilt = SubscriptionsStore(old)
    acme_member, rival_member = await rebuilt.member("acme", anna), await rebuilt.member("rival", anna)
    assert acme_member is not None and (acme_member["email"], acme_member["status"]) == ("anna@example.com", "active")
    assert rival_member is not None and rival_member["email"] == BOB


async def test_a_fresh_read_model_is_marked_with_the_current_format(platform: Platform) -> None:
    fresh = platform.service.mongo[platform.settings.database_name("subscriptions-fresh")]
    await check_format(fresh)
    assert await fresh[store.FORMATS].find_one({"_id": "subscriptions"}) == {"_id": "subscriptions",
                                                                              "format": store.FORMAT}


async def test_the_upgrade_rebuild_writes_the_activity_tombstone_of_a_person_erased_then_back(
        platform: Platform) -> None:
    """A person erased, then back on the list, is a membership no longer marked erased (the same subscriber id):
    the activity consumer, new with this format and reading herald.delivery from its start, must still not keep
    what their messages recorded before the erasure. The upgrade's rebuild writes every erasure's tombstone."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
    erased = await acme.http.post("/v1/gdpr/erase", json={"email": "anna@example.com", "requested_by": "subscriber"})
    assert erased.status_code == 200 and erased.json() == {"erased_memberships": 1}
    assert (await acme.subscribe("anna@example.com")).json()["subscriber_id"] == anna

    old = platform.service.mongo[platform.settings.database_name("subscriptions-rejoined")]
    await rebuild_read_model(platform.settings, old)
    member = await SubscriptionsStore(old).member("acme", anna)
    assert member is not None and member["status"] == "active" and "erased_at" not in member
    tombstone = await old["activity_erased"].find_one({"_id": f"acme/{anna}"})
    assert tombstone is not None and tombstone["erased_at"] is not None
