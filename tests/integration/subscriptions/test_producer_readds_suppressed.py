"""A suppressed address stays suppressed when another producer (a CRM publishing subscriptions events) adds it
again under a new subscriber id on another list: only the person's own double opt-in brings it back (PRODUCT.md:
messages go only to confirmed, non-suppressed subscribers). Delivery folds the same rule
(tests/integration/delivery/test_suppressed_address_readded.py)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from herald_shared.contract.delivery import ComplaintReceived
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    SubscriberAdded,
    SubscriberConfirmed,
)
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform, Tenant

BOB = "bob@example.org"


def crm_added(subscriber_id: str, email: str, list_id: str = "crm") -> SubscriberAdded:
    return SubscriberAdded(account_id="acme", producer="crm-sync", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "email": email,
        "email_sha256": hashlib.sha256(email.encode()).hexdigest(), "opt_in": "single",
        "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "CRM sync"}})


def confirmed(subscriber_id: str, method: str, list_id: str = "crm") -> SubscriberConfirmed:
    return SubscriberConfirmed(account_id="acme", producer="crm-sync", payload={  # type: ignore[arg-type]
        "list_id": list_id, "subscriber_id": subscriber_id, "method": method})


async def member(tenant: Tenant, subscriber_id: str) -> dict[str, object]:
    return (await tenant.http.get(f"/v1/subscribers/{subscriber_id}")).json()  # type: ignore[no-any-return]


async def folded_up_to(platform: Platform, acme: Tenant, sentinel: str) -> None:
    """Everything published before `sentinel`'s SubscriberAdded was folded (one account: one partition, in order)."""
    await platform.publisher.publish(crm_added(sentinel, f"{sentinel}@example.org"))
    await eventually(lambda: member(acme, sentinel), lambda m: m.get("status") == "pending", what=sentinel)


async def test_a_new_membership_of_a_suppressed_address_stays_suppressed_until_the_person_opts_in(
        platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    await acme.create_list("crm")
    bob = (await acme.subscribe(BOB)).json()["subscriber_id"]
    await platform.publisher.publish(ComplaintReceived(account_id="acme", producer="delivery", payload={  # type: ignore[arg-type]
        "message_id": "m1", "campaign_id": "c1", "subscriber_id": bob, "list_id": "news", "feedback_type": "abuse",
        "reporting_domain": "mail.example.net"}))
    await eventually(lambda: member(acme, bob), lambda m: m["status"] == "suppressed", what="bob suppressed")

    # The CRM adds bob under its own id on another list, with a single opt-in; and his old id again.
    await platform.publisher.publish_many([crm_added("crm-bob", BOB), confirmed("crm-bob", "single_opt_in"),
                                           crm_added(bob, BOB, "news"), confirmed(bob, "single_opt_in", "news")])
    await folded_up_to(platform, acme, "sentinel-1")
    assert (await member(acme, "crm-bob"))["status"] == "suppressed"
    assert (await member(acme, bob))["status"] == "suppressed"
    counts = (await acme.http.get("/v1/lists/crm")).json()
    assert counts["counts"].get("active", 0) == 0 and counts["counts"].get("suppressed") == 1, counts

    # The person's own double opt-in (a confirmation request, then its confirmation) brings that membership back.
    later = datetime.now(UTC) + timedelta(days=7)
    await platform.publisher.publish_many([
        ConfirmationRequested(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "crm", "subscriber_id": "crm-bob", "email": BOB, "list_name": "Crm", "company_name": "acme",
            "confirm_url": "https://subs.example/confirm/t", "expires_at": later}),
        confirmed("crm-bob", "double_opt_in")])
    await eventually(lambda: member(acme, "crm-bob"), lambda m: m["status"] == "active", what="crm-bob opted in")
    assert (await member(acme, bob))["status"] == "suppressed"  # his other membership stays as it was
