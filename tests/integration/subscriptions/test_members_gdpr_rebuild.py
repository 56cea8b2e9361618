"""Members queries (status, custom fields, cursor, counts), list lifecycle, GDPR export and erasure, and
the projection rebuilt from offset 0 equal to the live one, erasure included."""

from __future__ import annotations

from typing import Any

from herald_shared.contract.delivery import MessageBounced
from herald_shared.contract.subscriptions import SubscriberSuppressed
from herald_shared.mongo import rebuild
from herald_subscriptions.domain import email_sha256
from herald_subscriptions.store import SubscriptionsProjection
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform


async def test_members_filter_by_status_and_custom_fields_with_cursor_pagination(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list(custom_fields=[{"name": "city", "kind": "text"}, {"name": "age", "kind": "number"}])
    for i in range(7):
        city = "Riga" if i % 2 == 0 else "Tartu"
        response = await acme.subscribe(f"p{i}@example.com", custom_fields={"city": city, "age": 30 + i})
        assert response.status_code == 201
    p1 = (await acme.subscribe("p1@example.com")).json()["subscriber_id"]
    await acme.http.post(f"/v1/subscribers/{p1}/unsubscribe")

    riga: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"field.city": "Riga", "limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await acme.http.get("/v1/lists/news/subscribers", params=params)).json()
        riga += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(m["email"] for m in riga) == ["p0@example.com", "p2@example.com", "p4@example.com", "p6@example.com"]
    assert pages == 3 and len({m["subscriber_id"] for m in riga}) == 4
    assert body["counts"] == {"pending": 0, "active": 6, "unsubscribed": 1, "suppressed": 0}

    unsubscribed = (await acme.http.get("/v1/lists/news/subscribers", params={"status": "unsubscribed"})).json()
    assert [m["email"] for m in unsubscribed["items"]] == ["p1@example.com"]
    by_number = (await acme.http.get("/v1/lists/news/subscribers", params={"field.age": "33"})).json()
    assert [m["email"] for m in by_number["items"]] == ["p3@example.com"]
    for name, value, message in (("age", "old", "not a number value"), ("age", "nan", "not a number value"),
                                 ("shoe", "42", "not a custom field of the list"),
                                 ("", "1", "not a custom field of the list")):
        refused = await acme.http.get("/v1/lists/news/subscribers", params={f"field.{name}": value})
        assert refused.status_code == 422, refused.text  # a typo would only ever match nobody
        assert refused.json()["errors"] == [{"location": f"query.field.{name}", "message": message}]
    bad_cursor = await acme.http.get("/v1/lists/news/subscribers", params={"cursor": "%%%"})
    assert bad_cursor.status_code == 422


async def test_list_rename_and_delete_keep_members_recorded(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list()
    await acme.subscribe("anna@example.com")
    renamed = await acme.http.patch("/v1/lists/news", json={"name": "Weekly"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Weekly"
    assert (await acme.http.delete("/v1/lists/news")).status_code == 204
    assert (await acme.http.get("/v1/lists/news")).status_code == 404
    assert (await acme.http.delete("/v1/lists/news")).status_code == 404
    deleted = next(e for e in await platform.events() if e.type == "ListDeleted")
    assert deleted.payload.members_at_deletion == 1  # type: ignore[attr-defined]


async def test_a_deleted_lists_id_is_not_used_again(platform: Platform) -> None:
    """A list created again under the id would take in the deleted list's members, still recorded under it."""
    acme = await platform.tenant("acme")
    await acme.create_list()
    await acme.subscribe("anna@example.com")
    assert (await acme.http.delete("/v1/lists/news")).status_code == 204
    assert [d["list_id"] for d in (await acme.http.get("/v1/lists")).json()["items"]] == []
    for settings in ({"name": "News", "opt_in": "single"}, {"name": "Other news", "opt_in": "double"}):
        again = await acme.http.post("/v1/lists", json={"list_id": "news", **settings})
        assert again.status_code == 409, again.text
        problem = again.json()
        assert problem["type"].endswith("/list_id_of_deleted_list")
        assert "belonged to a list that was deleted" in problem["detail"] and "already exists" not in problem["detail"]
    assert (await acme.http.get("/v1/lists/news")).status_code == 404
    assert [e.type for e in await platform.events() if e.type.startswith("List")] == ["ListCreated", "ListDeleted"]
    assert (await acme.http.post("/v1/lists", json={"list_id": "news-2", "name": "News"})).status_code == 201


async def _dump(projection: SubscriptionsProjection) -> dict[str, list[dict[str, Any]]]:
    return {name: [d async for d in projection.db[name].find({}).sort("_id", 1)] for name in projection.collections}


async def test_erasure_leaves_no_personal_data_and_survives_a_rebuild(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news", custom_fields=[{"name": "city", "kind": "text"}])
    await acme.create_list("offers", opt_in="double")
    body = {"first_name": "Anna", "phone": "+37120000000", "custom_fields": {"city": "Riga"},
            "consent": {"method": "webinar signup", "ip": "203.0.113.5", "user_agent": "UA"}}
    await acme.http.post("/v1/lists/news/subscribers", json={"email": "anna@example.com", **body})
    await acme.subscribe("anna@example.com", list_id="offers")
    await acme.subscribe("ben@example.com")

    export = (await acme.http.get("/v1/gdpr/export", params={"email": "Anna@example.com"})).json()
    assert {m["list_id"] for m in export["memberships"]} == {"news", "offers"}
    news = next(m for m in export["memberships"] if m["list_id"] == "news")
    assert (news["first_name"], news["phone"], news["consent"]["ip"]) == ("Anna", "+37120000000", "203.0.113.5")

    erased = await acme.http.post("/v1/gdpr/erase", json={"email": "anna@example.com"})
    assert erased.json() == {"erased_memberships": 2}
    assert (await acme.http.post("/v1/gdpr/erase", json={"email": "anna@example.com"})).json() == {
        "erased_memberships": 0}
    assert (await acme.http.get("/v1/gdpr/export", params={"email": "anna@example.com"})).json()["memberships"] == []

    live = await _dump(platform.service.projection)
    assert not any(_holds_personal_data(doc) for doc in live["subscribers"] if doc["status"] == "erased")
    assert "anna" not in repr(live["subscribers"]).lower() and "203.0.113.5" not in repr(live)
    assert any(doc.get("email") == "ben@example.com" for doc in live["subscribers"])

    rebuilt = SubscriptionsProjection(platform.service.mongo[platform.settings.database_name("rebuilt")])
    await rebuild(rebuilt, platform.settings, ["herald.subscriptions", "herald.billing"])
    assert await _dump(rebuilt) == live


async def test_erasure_keeps_an_opt_out_and_a_later_bounce_still_suppresses(platform: Platform) -> None:
    """Erasing someone who unsubscribed does not let the customer add them again (API or import); the person
    may still come back through the form's double opt-in. A hard bounce for an erased member suppresses the
    address by its hash."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    await acme.create_list("offers")
    anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
    await acme.http.post(f"/v1/subscribers/{anna}/unsubscribe")
    assert (await acme.http.post("/v1/gdpr/erase", json={"email": "anna@example.com"})).json() == {
        "erased_memberships": 1}

    again = await acme.subscribe("anna@example.com")
    assert again.status_code == 409 and again.json()["type"].endswith("/previously_unsubscribed"), again.text
    imported = (await acme.http.post("/v1/lists/news/imports", headers={"Content-Type": "text/csv"}, content=(
        b"email,consent_method,consent_at\nanna@example.com,crm,2026-10-01T10:00:00Z\n"))).json()
    assert (imported["rows_imported"], imported["rejected_by_reason"]) == (0, {"previously_unsubscribed": 1})
    form = await platform.submit("/subscribe/acme/news", {"email": "anna@example.com", "consent": "yes"})
    assert "Check your inbox" in form.text
    assert (await acme.http.get(f"/v1/subscribers/{anna}")).json()["status"] == "pending"

    ben = (await acme.subscribe("ben@example.com")).json()["subscriber_id"]
    await acme.http.post("/v1/gdpr/erase", json={"email": "ben@example.com"})
    await platform.publisher.publish(MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m1", "campaign_id": "c1", "subscriber_id": ben, "bounce_class": "hard",
        "diagnostic": "user unknown", "source": "dsn"}))
    suppressed = await eventually(platform.events, lambda events: any(
        isinstance(e, SubscriberSuppressed) for e in events), what="the erased address suppressed")
    event = next(e for e in suppressed if isinstance(e, SubscriberSuppressed))
    assert (event.payload.subscriber_id, event.payload.email_sha256) == (ben, email_sha256("ben@example.com"))
    store = platform.service.service.store
    await eventually(lambda: store.suppressed("acme", [event.payload.email_sha256]), bool,
                     what="the suppression folded")
    refused = await acme.subscribe("ben@example.com", list_id="offers")
    assert refused.status_code == 409 and refused.json()["type"].endswith("/suppressed")
    assert (await acme.subscribe("ben@example.com")).json()["type"].endswith("/suppressed")


def _holds_personal_data(doc: dict[str, Any]) -> bool:
    return any(key in doc for key in ("email", "first_name", "last_name", "phone", "custom_fields", "consent"))


async def test_an_export_holds_the_proof_of_the_opt_in_and_the_suppression(platform: Platform) -> None:
    """PRODUCT.md "Data protection": export of one subscriber's data: the confirmation (method, when, the IP the
    link was confirmed from), how they left, and the account's suppression record of the address."""
    from urllib.parse import urlsplit

    from herald_shared.contract.subscriptions import ConfirmationRequested, SubscriberConfirmed

    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="double")
    carol = (await acme.subscribe("carol@example.com")).json()["subscriber_id"]
    request = await eventually(platform.events, lambda es: [e for e in es if isinstance(e, ConfirmationRequested)],
                               what="the confirmation request")
    link = urlsplit(str(next(e for e in request if isinstance(e, ConfirmationRequested)).payload.confirm_url)).path
    assert (await platform.submit(link)).status_code == 200
    confirmed = next(e for e in await platform.events() if isinstance(e, SubscriberConfirmed))
    assert confirmed.payload.ip
    await platform.publisher.publish(MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m1", "campaign_id": "c1", "subscriber_id": carol, "bounce_class": "hard",
        "diagnostic": "user unknown", "source": "dsn"}))
    store = platform.service.service.store
    await eventually(lambda: store.suppressed("acme", [email_sha256("carol@example.com")]), bool,
                     what="the suppression folded")
    export = (await acme.http.get("/v1/gdpr/export", params={"email": "carol@example.com"})).json()
    [membership] = export["memberships"]
    assert (membership["confirmation_method"], membership["confirmation_ip"]) == ("double_opt_in",
                                                                                  confirmed.payload.ip)
    assert membership["confirmed_at"] and membership["suppressed_at"]
    assert membership["status"] == "suppressed" and "suppressed_reason" not in membership  # no cause: see
    assert export["suppression"].keys() == {"suppressed_at"}  # test_unsubscribe_and_suppression, complaints
    assert (await acme.http.get("/v1/gdpr/export", params={"email": "nobody@example.com"})).json() == {
        "email": "nobody@example.com", "memberships": [], "suppression": None, "activity": [],
        "activity_truncated": False, "next_cursor": None}


async def test_a_bounce_or_complaint_of_a_message_to_the_customer_suppresses_no_subscriber(platform: Platform) -> None:
    """A notice to the customer about a member (or any message not to a subscriber's address) that bounces or is
    reported as spam says nothing of the member's address: no suppression, no unsubscribe."""
    from herald_shared.contract.delivery import ComplaintReceived

    acme = await platform.tenant("acme")
    await acme.create_list("news")
    dora = (await acme.subscribe("dora@example.com")).json()["subscriber_id"]
    eve = (await acme.subscribe("eve@example.com")).json()["subscriber_id"]
    about_dora = {"message_id": "n1", "subscriber_id": dora, "kind": "account_notice"}
    await platform.publisher.publish(MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        **about_dora, "bounce_class": "hard", "diagnostic": "user unknown", "source": "smtp_reply"}))
    await platform.publisher.publish(ComplaintReceived(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        **about_dora, "feedback_type": "abuse", "reporting_domain": "isp.example"}))
    await platform.publisher.publish(MessageBounced(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m2", "campaign_id": "c1", "subscriber_id": eve, "bounce_class": "hard",
        "diagnostic": "user unknown", "source": "dsn"}))  # after them in the partition: handled once they were
    events = await eventually(platform.events, lambda es: any(isinstance(e, SubscriberSuppressed) for e in es),
                              what="eve suppressed")
    assert [e.payload.subscriber_id for e in events if isinstance(e, SubscriberSuppressed)] == [eve]
    assert (await acme.http.get(f"/v1/subscribers/{dora}")).json()["status"] == "active"
