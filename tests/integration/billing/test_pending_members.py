"""Pending double opt-in members are not stored subscribers for the plan (PRODUCT.md: "With double opt-in the
address stays inactive until the person confirms"): the subscriptions service and billing together on the real
stack. Anyone may post addresses to a list's public form; until their owners confirm, they neither end a trial nor
block a paid tier. Confirmed, they count as any subscriber."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions
from tests.conftest import eventually
from tests.integration.helpers import form_token

from .helpers import Customer, Platform, account, running_billing

LINK_SECRET = "test-link-secret-0123"  # the `subscriptions` fixture's (conftest.py)
TWO_SUBSCRIBERS = """vat_percent = 21
[[tiers]]
subscribers = 2
monthly_cents = 900
pro_monthly_cents = 1900
"""


def subscriptions_api(subscriptions: Subscriptions, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=subscriptions.app), base_url="http://subs",
                             headers={"Authorization": f"Bearer {key}"})


def stranger(subscriptions: Subscriptions, n: int) -> httpx.AsyncClient:
    """A browser of someone else's (three addresses: the form's per-address limit is no defence)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=subscriptions.app, client=(f"198.51.100.{n % 3}", 5000)),
                             base_url="http://subs")


async def double_opt_in_list(subscriptions: Subscriptions, customer: Customer) -> httpx.AsyncClient:
    key = (await customer.http.post("/v1/account/api-keys", json={})).json()["key"]
    await eventually(lambda: subscriptions.apikeys.authenticate(key), lambda a: a is not None,
                     what="the key billing issued, known to subscriptions")
    api = subscriptions_api(subscriptions, key)
    created = await api.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "double"})
    assert created.status_code == 201, created.text
    return api


async def members(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    listed = await api.get("/v1/lists/news/subscribers", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    return {m["email"]: m for m in listed.json()["items"]}


async def confirm(subscriptions: Subscriptions, account_id: str, subscriber_id: str) -> None:
    """The person opens the link of their confirmation email and confirms."""
    path = "/confirm/" + subscriptions.service.links.confirm_url(account_id, subscriber_id)[0].rsplit("/", 1)[1]
    page = await stranger(subscriptions, 0).post(path, data=form_token(LINK_SECRET, path))
    assert page.status_code == 200 and "Subscription confirmed" in page.text, page.text


async def stored(platform: Platform, customer: Customer, subscribers: int) -> dict[str, Any]:
    """The account once billing counts `subscribers` stored (and its peak on the trial, what ends it)."""
    found = await eventually(lambda: account(customer), lambda a: a["usage"]["subscribers"] == subscribers,
                             what=f"{subscribers} subscribers counted")
    usage = await platform.service.store.usage(customer.account_id)
    return {**found, "trial_peak_subscribers": usage.trial_peak_subscribers}


async def test_strangers_form_posts_leave_the_trial_until_21_people_confirm(
        platform: Platform, subscriptions: Subscriptions) -> None:
    """The review's reproduction: 21 (here 22) form posts from 3 addresses ended a trial for good. Pending, they
    count for nothing, and erasing one takes nothing back; the 21st confirmed ends the trial."""
    ada = await platform.sign_up("ada")
    api = await double_opt_in_list(subscriptions, ada)
    path = f"/subscribe/{ada.account_id}/news"
    for n in range(22):
        posted = await stranger(subscriptions, n).post(path, data={
            **form_token(LINK_SECRET, path), "email": f"victim{n}@example.net", "consent": "yes", "website": ""})
        assert posted.status_code == 200, posted.text
    pending = await members(api)
    assert len(pending) == 22 and {m["status"] for m in pending.values()} == {"pending"}
    erased = await api.post("/v1/gdpr/erase", json={"email": "victim21@example.net"})
    assert erased.status_code == 200 and erased.json()["erased_memberships"] == 1, erased.text

    # Folded in order with everything before it: the first confirmation counted means the 22 posts and the
    # erasure were folded, and counted nothing.
    await confirm(subscriptions, ada.account_id, pending["victim0@example.net"]["subscriber_id"])
    one = await stored(platform, ada, 1)
    assert (one["plan"], one["sending_blocked"], one["trial_peak_subscribers"]) == ("trial", [], 1)

    for n in range(1, 21):
        await confirm(subscriptions, ada.account_id, pending[f"victim{n}@example.net"]["subscriber_id"])
    ended = await eventually(lambda: account(ada), lambda a: a["plan"] == "trial_ended", what="the trial ended")
    assert ended["trial"]["ended_reason"] == "subscriber_limit_exceeded"
    assert ended["sending_blocked"] == ["trial_ended"] and ended["usage"]["subscribers"] == 21


@pytest.fixture
def two_subscriber_tier() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "plans.toml"
        path.write_text(TWO_SUBSCRIBERS)
        yield path


async def test_a_paid_tier_is_blocked_by_confirmed_members_not_pending_ones(
        settings: HeraldSettings, subscriptions: Subscriptions, two_subscriber_tier: Path) -> None:
    """A 2-subscriber tier: 3 addresses added with double opt-in (the API, and a stranger's form post) block
    nothing; once all 3 confirmed, the tier is exceeded (`subscriber_limit_exceeded`)."""
    async with running_billing(settings, HERALD_BILLING_PLANS_FILE=str(two_subscriber_tier)) as platform:
        ada = await platform.sign_up("ada")
        approved = await platform.staff().post(f"/v1/staff/accounts/{ada.account_id}/approval", json={})
        assert approved.status_code == 200, approved.text
        await ada.http.put("/v1/account/payment-method", json={"provider": "simulated", "reference": "sim-card-ok"})
        bought = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
        assert bought.status_code == 200, bought.text
        await eventually(lambda: account(ada), lambda a: a["plan"] == "monthly" and a["sending_blocked"] == [],
                         what="the monthly plan, sending open")
        api = await double_opt_in_list(subscriptions, ada)
        for n in range(2):
            added = await api.post("/v1/lists/news/subscribers", json={
                "email": f"person{n}@example.net", "consent": {"method": "checkout checkbox"}})
            assert added.status_code == 201 and added.json()["outcome"] == "pending", added.text
        path = f"/subscribe/{ada.account_id}/news"
        posted = await stranger(subscriptions, 0).post(path, data={
            **form_token(LINK_SECRET, path), "email": "person2@example.net", "consent": "yes", "website": ""})
        assert posted.status_code == 200, posted.text
        pending = await members(api)
        assert len(pending) == 3 and {m["status"] for m in pending.values()} == {"pending"}

        await confirm(subscriptions, ada.account_id, pending["person0@example.net"]["subscriber_id"])
        one = await stored(platform, ada, 1)
        assert (one["plan"], one["sending_blocked"]) == ("monthly", [])
        for n in (1, 2):
            await confirm(subscriptions, ada.account_id, pending[f"person{n}@example.net"]["subscriber_id"])
        blocked = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] != [],
                                   what="the tier's block")
        assert blocked["sending_blocked"] == ["subscriber_limit_exceeded"] and blocked["usage"]["subscribers"] == 3
