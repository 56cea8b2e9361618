"""What one API key can make the service hold through lists: at most 100 custom fields a list, 1,000 lists not
deleted an account, and `GET /v1/lists` a page at a time (a security review: 40 lists of 11,000 fields made one
listing answer 34 MB in 26 s and the process grow by 280 MB)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from herald_shared.contract.subscriptions import ListCreated, ListDeleted
from herald_shared.rebuilding import FORMATS
from herald_subscriptions import domain
from herald_subscriptions.store import (
    LIVE_LISTS,
    LIVE_LISTS_MARK,
    SubscriptionsProjection,
    SubscriptionsStore,
    list_live_lists,
)
from tests.integration.subscriptions.conftest import Platform, Tenant


async def created_by_events(platform: Platform, account_id: str, list_ids: list[str]) -> None:
    """Lists recorded as the API records them, without a request each (a thousand take seconds this way)."""
    events = [ListCreated(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": list_id, "name": list_id, "opt_in": "single"}) for list_id in list_ids]
    await platform.service.service.wait_until_applied(await platform.publisher.publish_many(events))


async def walk(tenant: Tenant, **params: Any) -> list[str]:
    """Every list id `GET /v1/lists` gives, following `next_cursor` to the end."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        response = await tenant.http.get("/v1/lists", params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= params.get("limit", 100)
        seen += [item["list_id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


async def test_a_list_of_101_custom_fields_is_refused_with_422_naming_the_limit(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    many = [{"name": f"f{i}", "kind": "text"} for i in range(domain.MAX_CUSTOM_FIELDS + 1)]
    refused = await acme.http.post("/v1/lists", json={"list_id": "big", "name": "Big", "custom_fields": many})
    assert refused.status_code == 422, refused.text
    assert [e["location"] for e in refused.json()["errors"]] == ["body.custom_fields"]
    assert "at most 100" in refused.json()["errors"][0]["message"]
    assert (await acme.http.get("/v1/lists/big")).status_code == 404
    made = await acme.create_list("big", custom_fields=many[:100])
    assert len(made["custom_fields"]) == 100


async def test_the_1001st_list_is_refused_and_a_deleted_one_makes_room(platform: Platform) -> None:
    acme, other = await platform.tenant("acme"), await platform.tenant("other")
    await created_by_events(platform, "acme", [f"l{i:04d}" for i in range(domain.MAX_LIVE_LISTS - 1)])
    await acme.create_list("last")  # the 1,000th
    refused = await acme.http.post("/v1/lists", json={"list_id": "one_more", "name": "One more"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/too_many_lists") and "at most 1,000 lists" in refused.json()["detail"]
    assert (await acme.http.get("/v1/lists/one_more")).status_code == 404
    assert (await acme.http.post("/v1/lists", json={"list_id": "last", "name": "Last", "opt_in": "single"})
            ).status_code == 201  # the same request again answers the list
    await other.create_list("news")  # another account's lists are its own

    assert (await acme.http.delete("/v1/lists/l0007")).status_code == 204
    await created_by_events(platform, "acme", ["l0007"])  # another producer's creation of the deleted id again
    await acme.create_list("one_more")
    assert (await acme.http.post("/v1/lists", json={"list_id": "two_more", "name": "Two"})).status_code == 409

    listed = await walk(acme, limit=domain.MAX_LIVE_LISTS // 2)
    assert len(listed) == len(set(listed)) == domain.MAX_LIVE_LISTS
    assert "l0007" not in listed and {"last", "one_more"} <= set(listed)


async def test_pages_of_the_lists_walk_every_live_list_exactly_once(platform: Platform) -> None:
    acme, other = await platform.tenant("acme"), await platform.tenant("other")
    ids = [f"l{i:02d}" for i in range(23)]
    await created_by_events(platform, "acme", ids)
    await created_by_events(platform, "other", ["l05", "zz"])
    deleted = {"l00", "l03", "l04", "l05", "l06", "l07", "l08", "l09", "l10", "l22"}  # runs longer than a page
    for list_id in sorted(deleted):
        assert (await acme.http.delete(f"/v1/lists/{list_id}")).status_code == 204
    live = [i for i in ids if i not in deleted]
    for limit in (1, 2, 3, 5, 13, 100):
        assert await walk(acme, limit=limit) == live, limit
    first = (await acme.http.get("/v1/lists", params={"limit": 2})).json()
    assert [i["list_id"] for i in first["items"]] == live[:2] and first["next_cursor"] == live[1]
    whole = (await acme.http.get("/v1/lists")).json()
    assert [i["list_id"] for i in whole["items"]] == live and whole["next_cursor"] is None
    assert await walk(other) == ["l05", "zz"]
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": "a/b"}):
        assert (await acme.http.get("/v1/lists", params=bad)).status_code == 422, bad


async def test_lists_folded_before_live_lists_was_kept_count_after_the_upgrade(platform: Platform) -> None:
    """The upgrade: a read model of the version before has no `live_lists`; at the next start the lists not
    deleted are listed once, so the cap counts them (without it the 1,001st list would pass here)."""
    acme = await platform.tenant("acme")
    await created_by_events(platform, "acme", [f"l{i:04d}" for i in range(domain.MAX_LIVE_LISTS - 1)])
    assert (await acme.http.delete("/v1/lists/l0007")).status_code == 204
    await acme.create_list("news")
    db = platform.service.projection.db
    await db[LIVE_LISTS].delete_many({})  # as the version before left it
    await db[FORMATS].delete_one({"_id": LIVE_LISTS_MARK})
    assert (await acme.http.post("/v1/lists", json={"list_id": "early", "name": "Early"})).status_code == 201
    await db[LIVE_LISTS].delete_one({"_id": "acme/early"})  # and that one too

    assert await list_live_lists(db) == domain.MAX_LIVE_LISTS  # l0000..l0998 less l0007, news, early
    refused = await acme.http.post("/v1/lists", json={"list_id": "late", "name": "Late"})
    assert refused.status_code == 409 and refused.json()["type"].endswith("/too_many_lists"), refused.text
    assert await db[LIVE_LISTS].find_one({"_id": "acme/l0007"}) is None
    assert await list_live_lists(db) is None  # once: the mark is there


async def test_a_list_deleted_by_another_process_while_the_lists_are_listed_does_not_count(
        platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes starting at once: one folds a ListDeleted after the other's `list_live_lists` read the lists
    and before it wrote them; the deleted list must not come back into `live_lists`."""
    db = platform.service.mongo[platform.settings.database_name("race")]
    try:
        folder = SubscriptionsProjection(db)
        for i in range(3):
            await folder.handle(ListCreated(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
                "list_id": f"l{i}", "name": f"l{i}", "opt_in": "single"}))
        await folder.flush()
        await db[LIVE_LISTS].delete_many({})  # as the version before left it
        write = AsyncCollection.bulk_write
        folded: list[bool] = []

        async def the_other_process_folds_first(self: Any, ops: Any, *args: Any, **kwargs: Any) -> Any:
            if self.name == LIVE_LISTS and not folded:
                folded.append(True)
                other = SubscriptionsProjection(db)
                await other.handle(ListDeleted(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
                    "list_id": "l0", "members_at_deletion": 0}))
                await other.flush()
            return await write(self, ops, *args, **kwargs)

        monkeypatch.setattr(AsyncCollection, "bulk_write", the_other_process_folds_first)
        assert await list_live_lists(db) == 2
        assert folded and sorted([doc["_id"] async for doc in db[LIVE_LISTS].find({})]) == ["acme/l1", "acme/l2"]
        assert await SubscriptionsStore(db).live_lists("acme", most=domain.MAX_LIVE_LISTS) == 2
    finally:
        await platform.service.mongo.drop_database(db.name)
