"""`DELETE /v1/lists/{list_id}/subscribers/{subscriber_id}`: the account removes one member from one list (PRODUCT.md:
an account over its tier is restricted "until it upgrades or removes subscribers"). The membership is erased at the
account's request (SubscriberErased), the address's other memberships stay, and what the person decided stands: a
removed member who unsubscribed is refused when the account adds them again. On the real stack."""

from __future__ import annotations

import httpx

from herald_shared.contract.subscriptions import SubscriberErased
from herald_shared.kafka import EventPublisher
from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions, SubscriptionsSettings
from tests.integration.subscriptions.conftest import SECRET, Platform


async def test_removing_a_member_erases_that_membership_only(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    await acme.create_list("promo")
    anna = (await acme.subscribe("anna@example.com", "news")).json()["subscriber_id"]
    anna_promo = (await acme.subscribe("anna@example.com", "promo")).json()["subscriber_id"]
    ben = (await acme.subscribe("ben@example.com", "news")).json()["subscriber_id"]

    removed = await acme.http.delete(f"/v1/lists/news/subscribers/{anna}")
    assert (removed.status_code, removed.content) == (204, b"")
    # Answered once the read model holds it: no fixed wait.
    assert (await acme.http.get(f"/v1/subscribers/{anna}")).status_code == 404
    listed = (await acme.http.get("/v1/lists/news/subscribers")).json()
    assert [m["subscriber_id"] for m in listed["items"]] == [ben]
    assert listed["counts"] == {"pending": 0, "active": 1, "unsubscribed": 0, "suppressed": 0}
    assert (await acme.http.get(f"/v1/subscribers/{anna_promo}")).json()["status"] == "active"
    export = (await acme.http.get("/v1/gdpr/export", params={"email": "anna@example.com"})).json()
    assert [m["list_id"] for m in export["memberships"] if m.get("email")] == ["promo"]

    erasures = [e for e in await platform.events() if isinstance(e, SubscriberErased)]
    assert [e.payload.model_dump() for e in erasures] == [{
        "subscriber_id": anna, "list_id": "news", "email_sha256": erasures[0].payload.email_sha256,
        "requested_by": "account"}]

    # Idempotent: the member already removed answers 204 again and records nothing.
    again = await acme.http.delete(f"/v1/lists/news/subscribers/{anna}")
    assert again.status_code == 204
    assert len([e for e in await platform.events() if isinstance(e, SubscriberErased)]) == 1

    # Someone who was active may be added again, with new consent.
    readded = await acme.subscribe("anna@example.com", "news")
    assert (readded.status_code, readded.json()["outcome"]) == (201, "active"), readded.text


async def test_unknown_members_lists_and_other_accounts_are_not_found(platform: Platform) -> None:
    acme, other = await platform.tenant("acme"), await platform.tenant("other")
    await acme.create_list("news")
    await acme.create_list("promo")
    await other.create_list("news")
    anna = (await acme.subscribe("anna@example.com", "news")).json()["subscriber_id"]

    cases = {"/v1/lists/news/subscribers/nobody": "subscriber_not_found",
             f"/v1/lists/promo/subscribers/{anna}": "subscriber_not_found",  # on another list of the account
             f"/v1/lists/nolist/subscribers/{anna}": "list_not_found"}
    for path, code in cases.items():
        answer = await acme.http.delete(path)
        assert (answer.status_code, answer.json()["type"].rsplit("/", 1)[1]) == (404, code), (path, answer.text)
    foreign = await other.http.delete(f"/v1/lists/news/subscribers/{anna}")
    assert (foreign.status_code, foreign.json()["type"].rsplit("/", 1)[1]) == (404, "subscriber_not_found")
    assert (await acme.http.delete("/v1/lists/news/subscribers/bad%20id")).status_code == 422
    assert (await acme.http.get(f"/v1/subscribers/{anna}")).json()["status"] == "active"

    assert (await acme.http.delete("/v1/lists/news")).status_code == 204
    gone = await acme.http.delete(f"/v1/lists/news/subscribers/{anna}")
    assert (gone.status_code, gone.json()["type"].rsplit("/", 1)[1]) == (404, "list_not_found")
    assert not [e for e in await platform.events() if isinstance(e, SubscriberErased)]


async def test_a_removed_unsubscriber_is_not_added_back_by_the_account(platform: Platform) -> None:
    """PRODUCT.md: someone who unsubscribed is not re-added by the customer; removing them first changes
    nothing (the opt-out outlives the erasure: `domain.standing`). They can still come back by double opt-in."""
    acme = await platform.tenant("acme")
    await acme.create_list("news")
    carl = (await acme.subscribe("carl@example.com")).json()["subscriber_id"]
    assert (await acme.http.post(f"/v1/subscribers/{carl}/unsubscribe")).status_code == 200
    assert (await acme.http.delete(f"/v1/lists/news/subscribers/{carl}")).status_code == 204
    assert (await acme.http.get(f"/v1/subscribers/{carl}")).status_code == 404

    refused = await acme.subscribe("carl@example.com")
    assert (refused.status_code, refused.json()["type"].rsplit("/", 1)[1]) == (409, "previously_unsubscribed")
    assert (await acme.http.get("/v1/lists/news")).json()["counts"] == {
        "pending": 0, "active": 0, "unsubscribed": 0, "suppressed": 0}


async def test_a_removal_answered_503_while_nothing_folds_is_done_by_its_retry(settings: HeraldSettings) -> None:
    """The removal is recorded but the read model does not show it within the wait (no process folds: 503
    `projection_lagging`, from the shared handler); once folded, the client's retry answers 204 and records no
    second erasure."""
    config = SubscriptionsSettings(**settings.model_dump(), HERALD_LINK_SECRET=SECRET, HERALD_PUBLIC_URL="http://subs")
    running: list[Subscriptions] = []

    async def start(service: Subscriptions) -> Subscriptions:
        await service.start()
        running.append(service)
        return service

    folder = await start(Subscriptions(config))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=folder.app), base_url="http://subs") as pages:
            platform = Platform(config, folder, EventPublisher(folder.producer, config.topics), pages)
            acme = await platform.tenant("acme")
            await acme.create_list("news")
            anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]
            await folder.stop()
            running.remove(folder)
            api = await start(Subscriptions(config.model_copy(update={"run_consumers": False})))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://subs-api",
                                         headers={"Authorization": f"Bearer {acme.key}"}) as http:
                lagging = await http.delete(f"/v1/lists/news/subscribers/{anna}")
                assert (lagging.status_code, lagging.json()["type"].rsplit("/", 1)[1]) == (
                    503, "projection_lagging"), lagging.text
                await start(Subscriptions(config))
                retried = await http.delete(f"/v1/lists/news/subscribers/{anna}")
                assert retried.status_code == 204, retried.text
                assert (await http.get(f"/v1/subscribers/{anna}")).status_code == 404
            erasures = [e for e in await platform.events() if isinstance(e, SubscriberErased)]
            assert [e.payload.subscriber_id for e in erasures] == [anna]
    finally:
        for service in running:
            await service.stop()
