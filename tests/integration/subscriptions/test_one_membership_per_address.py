"""One person, one membership of a list (`herald_shared.membership`): another producer (a CRM) adding an address to
a list it is already on, under another subscriber id (or the same address in another case), adds no member: the
add is dead-lettered naming the membership the address has, every later event of that id is about no member, the
list counts the person once, the API's subscribe and an import answer the existing membership, and an unsubscribe
through that id (a link of a message sent before the rule) reaches it; the rebuild
(`python -m herald_subscriptions.rebuild`'s fold) folds the same. Also: the same person added again keeps the
opt-in's proof; and a membership whose SubscriberAdded was published without its SubscriberConfirmed (a publish cut
off mid-batch) is completed by importing the file again."""

from __future__ import annotations

import hashlib
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.subscriptions import SubscriberAdded, SubscriberConfirmed, SubscriberUnsubscribed
from herald_shared.kafka import DLQ_REASON, read_from_start
from herald_subscriptions.domain import subscriber_id_for
from herald_subscriptions.rebuild import fold_read_model
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform, Tenant

ANN = "ann@example.org"


def crm_added(subscriber_id: str, address: str, list_id: str = "news", **payload: Any) -> SubscriberAdded:
    return SubscriberAdded(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "email": address,
        "email_sha256": hashlib.sha256(address.lower().encode()).hexdigest(), "opt_in": "single",
        "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "CRM sync"}, **payload})


def crm_confirmed(subscriber_id: str, list_id: str = "news") -> SubscriberConfirmed:
    return SubscriberConfirmed(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "method": "single_opt_in"})


async def member(tenant: Tenant, subscriber_id: str) -> tuple[int, dict[str, Any]]:
    found = await tenant.http.get(f"/v1/subscribers/{subscriber_id}")
    return found.status_code, found.json()


async def folded_up_to(platform: Platform, acme: Tenant, sentinel: str) -> None:
    """Everything published before the sentinel's add was folded (one account: one partition, in order)."""
    await platform.publisher.publish(crm_added(sentinel, f"{sentinel}@example.org", list_id="other"))
    await eventually(lambda: member(acme, sentinel), lambda m: m[0] == 200, what=sentinel)


async def dead_letter_reasons(platform: Platform) -> list[str]:
    settings = platform.settings
    reasons = []
    async for records in read_from_start(settings, [settings.topics.dead_letter("herald.subscriptions")]):
        reasons += [bytes(v).decode() for record in records for k, v in record.headers if k == DLQ_REASON]
    return reasons


async def counts(acme: Tenant, list_id: str = "news") -> dict[str, int]:
    return {k: n for k, n in (await acme.http.get(f"/v1/lists/{list_id}")).json()["counts"].items() if n}


async def dump(db: Any, names: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    return {name: [d async for d in db[name].find({}).sort("_id", 1)] for name in names}


async def test_an_address_added_under_other_ids_is_one_member_and_the_others_are_dead_lettered(
        platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    await acme.create_list("other")
    events: list[Event] = []
    for subscriber_id, address in (("crm-1", ANN), ("crm-2", ANN), ("crm-3", "Ann@Example.org")):
        events += [crm_added(subscriber_id, address), crm_confirmed(subscriber_id)]
    await platform.publisher.publish_many(events)
    await folded_up_to(platform, acme, "sentinel-1")

    assert await counts(acme) == {"active": 1}
    assert (await member(acme, "crm-1"))[1]["status"] == "active"
    assert [(await member(acme, i))[0] for i in ("crm-2", "crm-3")] == [404, 404]
    reasons = await eventually(lambda: dead_letter_reasons(platform), lambda r: len(r) >= 2, what="dead letters")
    assert sorted(r.split("'")[1] for r in reasons) == ["crm-2", "crm-3"]
    assert all("already a member of that list as 'crm-1'" in r for r in reasons), reasons

    # Later events of those ids are about no member; the person's membership stands.
    await platform.publisher.publish(SubscriberUnsubscribed(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": "crm-2", "source": "api"}))
    await folded_up_to(platform, acme, "sentinel-2")
    assert await counts(acme) == {"active": 1}

    # The API's subscribe answers the membership the address has, in any case; so does an import.
    for address in (ANN, "ANN@example.org"):
        again = await acme.subscribe(address)
        assert again.status_code == 200, again.text
        assert (again.json()["subscriber_id"], again.json()["outcome"]) == ("crm-1", "already_active")
    imported = await acme.http.post("/v1/lists/news/imports", headers={"Content-Type": "text/csv"},
                                    content=f"email,consent_method,consent_at\n{ANN},form,2026-11-01T10:00:00Z\n")
    assert imported.status_code == 202 and imported.json()["rejected_by_reason"] == {"already_subscribed": 1}
    assert await counts(acme) == {"active": 1}

    # A link of a message sent to a refused id before this rule (a read model folded before it, rebuilt since)
    # unsubscribes the person from the membership they have.
    unsubscribed = await acme.http.post("/v1/subscribers/crm-3/unsubscribe")
    assert unsubscribed.status_code == 200, unsubscribed.text
    assert (unsubscribed.json()["subscriber_id"], unsubscribed.json()["status"]) == ("crm-1", "unsubscribed")
    assert await counts(acme) == {"unsubscribed": 1}

    projection = platform.service.projection
    live = await dump(projection.db, projection.collections)
    rebuilt = platform.service.mongo[platform.settings.database_name("rebuilt")]
    try:
        await fold_read_model(platform.settings, rebuilt)
        assert await dump(rebuilt, projection.collections) == live
    finally:
        await platform.service.mongo.drop_database(rebuilt.name)


async def test_the_same_person_added_again_keeps_when_and_how_they_opted_in(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    await acme.create_list("other")
    await platform.publisher.publish_many([crm_added("crm-1", ANN, first_name="Ann"), crm_confirmed("crm-1")])
    await folded_up_to(platform, acme, "sentinel-1")
    before = (await member(acme, "crm-1"))[1]
    await platform.publisher.publish(crm_added("crm-1", ANN, first_name="Annie", consent={
        "source": "import", "collected_at": "2026-11-20T00:00:00Z", "method": "CRM re-sync"}))
    await folded_up_to(platform, acme, "sentinel-2")
    after = (await member(acme, "crm-1"))[1]
    assert (after["added_at"], after["consent"], after["status"]) == (before["added_at"], before["consent"], "active")
    assert after["first_name"] == "Annie"


async def test_an_import_cut_off_after_a_rows_add_is_completed_by_importing_the_file_again(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    await acme.create_list("other")
    rows = ["ann@example.org", "bob@example.org", "cid@example.org"]
    # What a publish cut off mid-batch left of the first import: the first row's SubscriberAdded, not its confirmation.
    half = crm_added(subscriber_id_for("acme", "news", rows[0]), rows[0])
    await platform.publisher.publish(half.model_copy(update={"producer": "subscriptions"}))
    await folded_up_to(platform, acme, "sentinel-1")
    assert await counts(acme) == {"pending": 1}

    csv = "email,consent_method,consent_at\n" + "".join(f"{r},checkout,2026-11-01T10:00:00Z\n" for r in rows)
    imported = await acme.http.post("/v1/lists/news/imports", headers={"Content-Type": "text/csv"}, content=csv)
    assert (imported.status_code, imported.json()["rows_imported"]) == (202, 3), imported.text
    await eventually(lambda: counts(acme), lambda c: c == {"active": 3}, what="every row active")
    again = await acme.http.post("/v1/lists/news/imports", headers={"Content-Type": "text/csv"}, content=csv)
    assert again.json()["rejected_by_reason"] == {"already_subscribed": 3}  # nothing left to complete
    confirmations = [e for e in await platform.events() if isinstance(e, SubscriberConfirmed)
                     and e.payload.subscriber_id == half.payload.subscriber_id]
    assert len(confirmations) == 1
