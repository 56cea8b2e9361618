"""Subscription bombing (issue 20, SECURITY.md) on the real stack: bots posting the hosted subscribe form end
with a bounded number of confirmation emails in the mailbox (a real SMTP server that delivery mails over TCP).

Invariants: one client address gets at most HERALD_FORM_POSTS_PER_IP posts through per window, so a burst of
1,000 posts mails at most that many confirmations; one email address gets at most
CONFIRMATIONS_PER_ADDRESS_PER_DAY confirmation emails a day across an account's 50 lists, whoever posts it and
through whichever door (form or API); honeypot and too-fast posts mail nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from prometheus_client import REGISTRY

from herald_shared.contract.subscriptions import ConfirmationRequested, SubscriberAdded
from herald_subscriptions.domain import CONFIRMATIONS_PER_ADDRESS_PER_DAY
from herald_subscriptions.forms import Limits
from tests.conftest import eventually
from tests.integration.helpers import form_token

from .conftest import SECRET, SubscriptionsBeside, World

BURST = 1000


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("herald_subscriptions_refused_total", {"reason": reason}) or 0.0


async def marker_mailed(relay: Any, subscriptions: SubscriptionsBeside, list_id: str, address: str) -> None:
    """Subscribe one more address through the API and wait for its email: delivery mails one account's
    confirmations in order, so every confirmation asked for before it has been mailed by then (or never is)."""
    response = await subscriptions.api.post(f"/v1/lists/{list_id}/subscribers",
                                            json={"email": address, "consent": {"method": "test marker"}})
    assert response.status_code == 201, response.text
    await eventually(relay.mailed, lambda r: address in r, what=f"the marker's confirmation to {address}")


async def test_a_burst_of_form_posts_from_one_address_mails_a_bounded_number_of_confirmations(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside) -> None:
    await start_delivery()
    created = await subscriptions.api.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "double"})
    assert created.status_code == 201, created.text
    path = "/subscribe/acme/news"
    before = {reason: refused(reason) for reason in ("ip_rate", "honeypot", "too_fast", "no_token")}

    async with subscriptions.pages("198.51.100.66") as bot:
        # A bot that fetched the form once and posts it 1,000 times with a victim's address each time.
        token = form_token(SECRET, path)
        answers = [await bot.post(path, data={**token, "email": f"victim{i}@example.org", "consent": "yes"})
                   for i in range(BURST)]
    limit = Limits().posts_per_ip
    statuses = [a.status_code for a in answers]
    assert statuses[:limit] == [200] * limit and statuses[limit:] == [429] * (BURST - limit)
    assert int(answers[-1].headers["Retry-After"]) > 0 and "Too many attempts" in answers[-1].text
    assert refused("ip_rate") - before["ip_rate"] == BURST - limit

    async with subscriptions.pages("198.51.100.67") as other:
        # Bots that fill the hidden field, post sooner than a person could, or post without the form's token.
        honeypot = await other.post(path, data={**token, "email": "trap@example.org", "consent": "yes",
                                                "website": "https://spam.example"})
        hasty = await other.post(path, data={**form_token(SECRET, path, timedelta(seconds=1)),
                                             "email": "hasty@example.org", "consent": "yes"})
        tokenless = await other.post(path, data={"email": "forged@example.org", "consent": "yes"})
    assert (honeypot.status_code, hasty.status_code, tokenless.status_code) == (200, 200, 403)
    assert "Check your inbox" in honeypot.text and "Check your inbox" in hasty.text
    assert [refused(r) - before[r] for r in ("honeypot", "too_fast", "no_token")] == [1, 1, 1]

    await marker_mailed(relay, subscriptions, "news", "marker@example.org")
    mailed = relay.recipients()
    assert sorted(mailed) == sorted([f"victim{i}@example.org" for i in range(limit)] + ["marker@example.org"])
    added = [e for e in await world.events("herald.subscriptions") if isinstance(e, SubscriberAdded)]
    assert len(added) == limit + 1  # nothing recorded for the refused, the honeypot and the hasty posts


async def test_one_address_on_fifty_lists_gets_a_few_confirmations_a_day(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside) -> None:
    await start_delivery()
    lists = [f"list{i:02d}" for i in range(50)]
    for list_id in [*lists, "marker"]:
        created = await subscriptions.api.post("/v1/lists", json={"list_id": list_id, "name": list_id,
                                                                   "opt_in": "double"})
        assert created.status_code == 201, created.text

    # Bots on 25 client addresses enter the victim's address into 25 lists' forms; the account's own API client
    # adds it to 13 more and imports it into the last 12 (a compromised key, or a careless integration): the same
    # caps hold for every door.
    async def post(i: int, list_id: str) -> int:
        path = f"/subscribe/acme/{list_id}"
        async with subscriptions.pages(f"198.51.100.{i + 1}") as bot:
            answer = await bot.post(path, data={**form_token(SECRET, path), "email": "victim@example.org",
                                                "consent": "yes"})
        return answer.status_code

    posted = await asyncio.gather(*(post(i, list_id) for i, list_id in enumerate(lists[:25])))
    limit = Limits().posts_per_address
    assert sorted(posted) == [200] * limit + [429] * (25 - limit)
    for list_id in lists[25:38]:
        response = await subscriptions.api.post(f"/v1/lists/{list_id}/subscribers", json={
            "email": "victim@example.org", "consent": {"method": "signup form"}})
        assert response.status_code == 201 and response.json()["status"] == "pending", response.text
    for list_id in lists[38:]:
        imported = await subscriptions.api.post(
            f"/v1/lists/{list_id}/imports", headers={"Content-Type": "text/csv"},
            content=b"email,consent_method,consent_at\nvictim@example.org,paper form,2026-11-01T10:00:00Z\n")
        assert imported.status_code == 202 and imported.json()["rows_imported"] == 1, imported.text

    await marker_mailed(relay, subscriptions, "marker", "marker@example.org")
    assert relay.recipients().count("victim@example.org") == CONFIRMATIONS_PER_ADDRESS_PER_DAY
    events = await world.events("herald.subscriptions")
    assert sum(isinstance(e, ConfirmationRequested) and str(e.payload.email) == "victim@example.org"
               for e in events) == CONFIRMATIONS_PER_ADDRESS_PER_DAY
    # Every membership is recorded, pending: the person can still confirm the lists they were mailed about.
    assert sum(isinstance(e, SubscriberAdded) and str(e.payload.email) == "victim@example.org"
               for e in events) == limit + 25
    assert refused("confirmation_cap") >= limit + 25 - CONFIRMATIONS_PER_ADDRESS_PER_DAY
