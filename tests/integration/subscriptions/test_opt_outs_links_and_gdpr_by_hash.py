"""On the real stack: an opt-out outlives a re-subscription nobody confirmed and its erasure (also after a rebuild
from offset 0); a confirmation link of a deleted list is dead; the GDPR export and erasure reach every address the
event contract allows, by its hash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from herald_shared.contract.subscriptions import ConfirmationRequested, SubscriberAdded, SubscriberConfirmed
from herald_shared.mongo import rebuild
from herald_subscriptions.store import SUBSCRIBERS, SubscriptionsProjection
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform, Tenant


async def _member(tenant: Tenant, subscriber_id: str) -> dict[str, Any]:
    return (await tenant.http.get(f"/v1/subscribers/{subscriber_id}")).json()  # type: ignore[no-any-return]


async def _confirm_link(platform: Platform, subscriber_id: str) -> str:
    requests = [e for e in await platform.events() if isinstance(e, ConfirmationRequested)
                and e.payload.subscriber_id == subscriber_id]
    return urlsplit(str(requests[-1].payload.confirm_url)).path


async def _re_added_refused(platform: Platform, acme: Tenant) -> None:
    again = await acme.subscribe("anna@example.com")
    assert again.status_code == 409 and again.json()["type"].endswith("/previously_unsubscribed"), again.text
    imported = (await acme.http.post("/v1/lists/news/imports", headers={"Content-Type": "text/csv"}, content=(
        b"email,consent_method,consent_at\nanna@example.com,crm,2026-10-01T10:00:00Z\n"))).json()
    assert (imported["rows_imported"], imported["rejected_by_reason"]) == (0, {"previously_unsubscribed": 1})


async def test_an_opt_out_outlives_a_form_re_add_nobody_confirmed_and_its_erasure(platform: Platform) -> None:
    """README: someone who unsubscribed is not re-added by the customer (API or import), erased or not. Anyone can
    post the hosted form with an address; only the person's own confirmation lets them back in."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
    await acme.http.post(f"/v1/subscribers/{anna}/unsubscribe")
    form = await platform.submit("/subscribe/acme/news", {"email": "anna@example.com", "consent": "yes"})
    assert "Check your inbox" in form.text
    assert (await _member(acme, anna))["status"] == "pending"
    assert (await acme.http.post("/v1/gdpr/erase", json={"email": "anna@example.com"})).json() == {
        "erased_memberships": 1}
    await _re_added_refused(platform, acme)

    # A rebuild from offset 0 folds the same opt-out.
    live = await platform.service.db[SUBSCRIBERS].find({}).sort("_id", 1).to_list()
    rebuilt = SubscriptionsProjection(platform.service.mongo[platform.settings.database_name("rebuilt")])
    await rebuild(rebuilt, platform.settings, ["herald.subscriptions", "herald.billing"])
    assert await rebuilt.db[SUBSCRIBERS].find({}).sort("_id", 1).to_list() == live
    assert [(d["status"], d.get("opted_out")) for d in live] == [("erased", "unsubscribed")]

    # The person comes back through the form and confirms: in again.
    form = await platform.submit("/subscribe/acme/news", {"email": "anna@example.com", "consent": "yes"})
    assert "Check your inbox" in form.text
    unconfirmed = await acme.subscribe("anna@example.com")  # pending: the customer's add changes nothing
    assert unconfirmed.json()["outcome"] == "already_pending" and unconfirmed.json()["status"] == "pending"
    confirmed = await platform.submit(await _confirm_link(platform, anna))
    assert "Subscription confirmed" in confirmed.text
    assert (await _member(acme, anna))["status"] == "active"
    assert (await acme.subscribe("anna@example.com")).json()["outcome"] == "already_active"


async def test_a_confirmation_link_of_a_deleted_list_is_no_longer_valid(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("offers", opt_in="double")
    bob = (await acme.subscribe("bob@example.com", list_id="offers")).json()["subscriber_id"]
    link = await eventually(lambda: _confirm_link(platform, bob), bool, what="bob's confirmation request")
    assert (await acme.http.delete("/v1/lists/offers")).status_code == 204

    pressed = await platform.submit(link)
    assert pressed.status_code == 410 and "This link is no longer valid" in pressed.text, pressed.text
    assert not [e for e in await platform.events() if isinstance(e, SubscriberConfirmed)]
    assert (await _member(acme, bob))["status"] == "pending"
    assert (await platform.service.service.store.status_counts("acme", "offers"))["active"] == 0


CONTRACT_ONLY_ADDRESSES = ["jörg@example.com", "anna@bücher.de", "x" * 65 + "@example.com"]


async def test_the_gdpr_export_and_erasure_reach_every_address_the_contract_allows_by_its_hash(
        platform: Platform) -> None:
    """A CRM's SubscriberAdded may carry an address the API's `email` does not take (not ASCII, a local part over
    64 characters); PRODUCT.md's export and erasure of one subscriber's data must reach it all the same."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    added = [SubscriberAdded(account_id="acme", producer="crm", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": f"crm-{i}", "email": address, "email_sha256": "0" * 64,
        "first_name": "Jörg", "opt_in": "single",
        "consent": {"source": "api", "collected_at": datetime.now(UTC).isoformat(), "method": "crm signup"}})
        for i, address in enumerate(CONTRACT_ONLY_ADDRESSES)]
    await platform.publisher.publish_many(added)
    for event in added:
        p = event.payload
        assert p.email_sha256 != "0" * 64  # the contract's hash of the address lower-cased
        held = await eventually(lambda h=p.email_sha256: acme.http.get(f"/v1/gdpr/export/{h}"),  # type: ignore[misc]
                                lambda r: r.status_code == 200 and len(r.json()["memberships"]) == 1,
                                what=f"{p.email[:20]} exported")
        assert (held.json()["email"], held.json()["memberships"][0]["first_name"]) == (p.email, "Jörg")
        assert (await acme.http.get("/v1/gdpr/export", params={"email": p.email})).status_code == 422

        erased = await acme.http.post("/v1/gdpr/erase", json={"email_sha256": p.email_sha256,
                                                              "requested_by": "account"})
        assert erased.json() == {"erased_memberships": 1}, erased.text
        after = (await acme.http.get(f"/v1/gdpr/export/{p.email_sha256}")).json()
        assert (after["email"], after["memberships"]) == (None, [])
        doc = await platform.service.service.store.member("acme", p.subscriber_id)
        assert doc is not None and doc["status"] == "erased" and "email" not in doc

    for body in ({"email": "anna@example.com", "email_sha256": "0" * 64}, {"email_sha256": "0" * 63},
                 {"email_sha256": "A" * 64}, {"requested_by": "account"}):
        assert (await acme.http.post("/v1/gdpr/erase", json=body)).status_code == 422, body
    assert (await acme.http.get(f"/v1/gdpr/export/{'0' * 63}")).status_code == 422
