"""The daily confirmation-email caps and the customer's notices hold across the processes that decide subscribes:
a folding one and an API replica (`HERALD_RUN_CONSUMERS=false`, as `subscriptions-api` runs 2-10), each with
only its own locks, both reading what was folded before either recorded anything (README, "Processes")."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from herald_shared.contract.subscriptions import ConfirmationRequested
from herald_subscriptions.claims import CLAIMS, ClaimDocuments, day_of
from herald_subscriptions.main import Subscriptions
from tests.integration.helpers import form_token
from tests.integration.subscriptions.conftest import SECRET, Platform, Tenant

ADDS = 20


@pytest.fixture
async def api_replica(platform: Platform) -> AsyncIterator[Subscriptions]:
    replica = Subscriptions(platform.settings.model_copy(update={"run_consumers": False}))
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()


def client(app: Subscriptions, tenant: Tenant) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url="http://subs",
                             headers={"Authorization": f"Bearer {tenant.key}"}, timeout=60)


def pages_of(app: Subscriptions) -> httpx.AsyncClient:
    """The hosted pages of one process, as a person's browser reaches them."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app, client=("203.0.113.7", 4711)),
                             base_url="http://subs", timeout=60)


async def add_everywhere(clients: list[httpx.AsyncClient], list_id: str, email: str, times: int) -> list[int]:
    """`times` concurrent adds of one address, spread over the processes in turn."""
    body = {"email": email, "consent": {"method": "signup form on acme.example"}}
    answers = await asyncio.gather(*(clients[n % len(clients)].post(f"/v1/lists/{list_id}/subscribers", json=body)
                                     for n in range(times)))
    return [a.status_code for a in answers]


async def published(platform: Platform) -> Counter[tuple[str, str | None]]:
    """Each event type on the topic per list (every add answered after it published what it decided)."""
    return Counter((e.type, getattr(e.payload, "list_id", None)) for e in await platform.events())


async def test_concurrent_adds_of_one_address_through_two_processes_send_one_confirmation_email(
        platform: Platform, api_replica: Subscriptions) -> None:
    """At most one confirmation email per address per list a day (subscription bombing)."""
    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="double")
    async with client(platform.service, acme) as folding, client(api_replica, acme) as api:
        statuses = await add_everywhere([folding, api], "news", "target@example.com", ADDS)
    assert set(statuses) <= {200, 201}, statuses
    assert (await published(platform))[("ConfirmationRequested", "news")] == 1


async def test_an_address_added_to_six_lists_through_two_processes_gets_three_confirmation_emails(
        platform: Platform, api_replica: Subscriptions) -> None:
    """At most 3 confirmation emails per address a day across one account's lists (three addresses at once)."""
    acme = await platform.tenant("acme")
    lists = [f"list{n}" for n in range(6)]
    for list_id in lists:
        await acme.create_list(list_id, opt_in="double")
    targets = [f"target{n}@example.com" for n in range(3)]
    async with client(platform.service, acme) as folding, client(api_replica, acme) as api:
        answers = await asyncio.gather(*(
            (folding, api)[n % 2].post(f"/v1/lists/{list_id}/subscribers", json={
                "email": email, "consent": {"method": "signup form on acme.example"}})
            for email in targets for n, list_id in enumerate(lists)))
    assert [a.status_code for a in answers] == [201] * 18
    assert {a.json()["status"] for a in answers} == {"pending"}  # all added; only the emails are capped
    asked = Counter(str(e.payload.email) for e in await platform.events() if isinstance(e, ConfirmationRequested))
    assert asked == dict.fromkeys(targets, 3)


async def test_imports_to_six_lists_through_two_processes_send_an_address_three_confirmation_emails(
        platform: Platform, api_replica: Subscriptions) -> None:
    """The caps hold for CSV imports too, each list's file imported through either process at once."""
    acme = await platform.tenant("acme")
    lists = [f"list{n}" for n in range(6)]
    for list_id in lists:
        await acme.create_list(list_id, opt_in="double")
    at = "2026-10-01T10:00:00+00:00"

    def csv(list_id: str) -> bytes:
        return "\n".join(["email,consent_method,consent_at", f"target@example.com,webinar,{at}",
                          f"only-{list_id}@example.com,webinar,{at}"]).encode()

    async with client(platform.service, acme) as folding, client(api_replica, acme) as api:
        reports = await asyncio.gather(*((folding, api)[n % 2].post(
            f"/v1/lists/{list_id}/imports", content=csv(list_id), headers={"Content-Type": "text/csv"})
            for n, list_id in enumerate(lists)))
    assert [(r.status_code, r.json()["rows_imported"]) for r in reports] == [(202, 2)] * 6
    asked = Counter(str(e.payload.email) for e in await platform.events() if isinstance(e, ConfirmationRequested))
    assert asked == {"target@example.com": 3, **{f"only-{list_id}@example.com": 1 for list_id in lists}}


async def test_concurrent_adds_of_one_address_through_two_processes_notify_the_customer_once(
        platform: Platform, api_replica: Subscriptions) -> None:
    """PRODUCT.md: "The customer is notified of subscribes and unsubscribes when it asked to be": one subscribe,
    one notice."""
    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="single")
    notify = await acme.http.put("/v1/lists/news/notifications", json={"subscribes": True, "unsubscribes": True})
    assert notify.status_code == 200, notify.text
    async with client(platform.service, acme) as folding, client(api_replica, acme) as api:
        assert set(await add_everywhere([folding, api], "news", "ann@example.com", ADDS)) <= {200, 201}
        # The same membership subscribed again after an erasure is another subscribe: noticed again, once.
        erased = await folding.post("/v1/gdpr/erase", json={"email": "ann@example.com"})
        assert erased.status_code == 200, erased.text
        assert set(await add_everywhere([folding, api], "news", "ann@example.com", ADDS)) <= {200, 201}
        [member] = (await folding.get("/v1/lists/news/subscribers")).json()["items"]
    # One unsubscribe (one click, pressed on both processes at once): one notice too.
    link = urlsplit(platform.service.service.links.unsubscribe_url("acme", member["subscriber_id"], "c1")).path
    async with pages_of(platform.service) as here, pages_of(api_replica) as there:
        left = await asyncio.gather(*((here, there)[n % 2].post(link, data={"List-Unsubscribe": "One-Click"})
                                      for n in range(ADDS)))
    assert {r.status_code for r in left} == {200}
    notices = [e for e in await platform.events() if e.type == "MembershipNoticeRequested"]
    assert [e.payload.change for e in notices] == [  # type: ignore[attr-defined]
        "subscribed", "subscribed", "unsubscribed"]


async def test_a_confirm_button_pressed_on_two_processes_at_once_notifies_the_customer_once(
        platform: Platform, api_replica: Subscriptions) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news", opt_in="double")
    notify = await acme.http.put("/v1/lists/news/notifications", json={"subscribes": True, "unsubscribes": False})
    assert notify.status_code == 200, notify.text
    assert (await acme.subscribe("ann@example.com")).status_code == 201
    [asked] = [e for e in await platform.events() if isinstance(e, ConfirmationRequested)]
    path = urlsplit(str(asked.payload.confirm_url)).path
    async with pages_of(platform.service) as here, pages_of(api_replica) as there:
        pressed = await asyncio.gather(*((here, there)[n % 2].post(path, data=form_token(SECRET, path))
                                         for n in range(10)))
    assert {r.status_code for r in pressed} == {200}
    sent = await published(platform)
    assert sent[("MembershipNoticeRequested", "news")] == 1


async def test_claims_are_kept_for_today_and_yesterday_and_an_account_purge_deletes_its_own(
        platform: Platform) -> None:
    """Claims are not kept for ever: the first claim a process takes on a day deletes those before yesterday."""
    now = datetime.now(UTC)
    today, yesterday, before = (day_of(now - timedelta(days=back)) for back in range(3))
    collection = platform.service.db[CLAIMS]
    await collection.insert_many([{"_id": i} for i in (
        f"{before}/acme/old", f"{yesterday}/acme/yesterday", f"{today}/acme/today", f"{today}/globex/today")])
    documents = ClaimDocuments(platform.service.db)
    assert await documents.take([f"{today}/acme/today", f"{today}/acme/new"], now) == {f"{today}/acme/new"}
    assert [d["_id"] async for d in collection.find().sort("_id")] == [
        f"{yesterday}/acme/yesterday", f"{today}/acme/new", f"{today}/acme/today", f"{today}/globex/today"]
    await platform.service.purge("acme")  # billing's AccountPurged
    assert [d["_id"] async for d in collection.find()] == [f"{today}/globex/today"]
