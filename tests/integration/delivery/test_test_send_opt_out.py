"""A stranger who got a test message stops the account's next tests with its one-click unsubscribe: delivery
names the recipient (by hash) in the test's link, subscriptions' page records RecipientOptedOutOfTests, campaigns
refuses the next test to that address (422 `test_recipient_opted_out`) while another address still gets one. All
three services on the real stack, with a real SMTP relay (from a review: the link recorded nothing, tests 2 and 3
reached the same stranger)."""

from __future__ import annotations

import email
import email.policy
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from herald_campaigns.main import Campaigns
from herald_shared.contract.billing import PlanChanged
from herald_shared.contract.subscriptions import RecipientOptedOutOfTests, SubscriberUnsubscribed
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.helpers import form_token

from .conftest import SECRET, SubscriptionsBeside, World, campaigns_running

STRANGER, OWN = "stranger@example.net", "me@acme.example"
DRAFT = {"campaign_id": "c1", "name": "November", "list_id": "news", "subject": "November news",
         "from_name": "Acme News", "from_email": "news@acme.example",
         "html_body": "<html><body><h1>Hi {{ first_name }}</h1></body></html>"}


@dataclass
class CampaignsBeside:
    service: Campaigns
    api: httpx.AsyncClient


async def folded(campaigns: CampaignsBeside) -> None:
    """Until campaigns' read model holds the stranger's opt-out (asked of the store: a test sent to probe it
    would reach the stranger)."""
    hashed = hashlib.sha256(STRANGER.encode()).hexdigest()
    await eventually(lambda: campaigns.service.service.store.test_opt_outs("acme", {hashed}),
                     lambda found: found == {hashed}, what="the opt-out folded by campaigns")


@pytest.fixture
async def campaigns(settings: HeraldSettings, world: World,
                    subscriptions: SubscriptionsBeside) -> AsyncIterator[CampaignsBeside]:
    """Campaigns beside them, acme on a paid plan (tests to any address), acme.example shared (no DNS here), the
    API key subscriptions' fixture issued."""
    await world.publish(PlanChanged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "plan": "monthly", "tier_subscriber_limit": 1000, "effective_at": "2026-11-02T00:00:00Z"}))
    key = subscriptions.api.headers["Authorization"]
    async with campaigns_running(settings, key.removeprefix("Bearer ")) as service:
        store = service.service.store
        assert (await subscriptions.api.post("/v1/lists", json={"list_id": "news", "name": "News"})).status_code \
            in (200, 201)
        await eventually(lambda: store.list_info("acme", "news"), lambda info: info is not None, what="the list")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://campaigns",
                                     headers={"Authorization": key}) as api:
            created = await api.post("/v1/campaigns", json=DRAFT)
            assert created.status_code == 201, created.text
            yield CampaignsBeside(service, api)


def unsubscribe_path(relay: Any, recipient: str) -> str:
    [data] = [r.data for r in relay.received if r.recipient == recipient]
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage) and message["X-Herald-Test"] == "yes"
    return str(message["List-Unsubscribe"]).split(",")[0].strip(" <>").removeprefix("http://subs.test")


async def test_a_strangers_one_click_unsubscribe_stops_the_next_test_to_it_only(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside,
        campaigns: CampaignsBeside) -> None:
    await start_delivery()
    first = await campaigns.api.post("/v1/campaigns/c1/tests", json={"recipients": [STRANGER]})
    assert first.status_code == 202, first.text
    await eventually(relay.mailed, lambda r: STRANGER in r, what="the first test mailed")

    async with subscriptions.pages() as pages:
        path = unsubscribe_path(relay, STRANGER)
        shown = await pages.get(path)
        assert shown.status_code == 200 and "Stop test messages" in shown.text, shown.text
        one_click = await pages.post(path, data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200, one_click.text
        assert one_click.text == "You will get no more test messages from this sender."
        again = await pages.post(path, data={"List-Unsubscribe": "One-Click"})  # a provider retrying
        assert again.status_code == 200 and again.text == one_click.text

    # The page answered after publishing: the event is on the topic now.
    stopped = await world.events("herald.subscriptions")
    both = [e for e in stopped if isinstance(e, RecipientOptedOutOfTests)]
    assert len(both) == 2  # one per POST; campaigns keeps one opt-out
    opted = both[0]
    assert opted.account_id == "acme" and opted.payload.source == "one_click"
    assert opted.payload.email_sha256 == hashlib.sha256(STRANGER.encode()).hexdigest()
    assert opted.payload.campaign_id == "c1" and STRANGER not in opted.model_dump_json()
    assert not [e for e in stopped if isinstance(e, SubscriberUnsubscribed)]

    await folded(campaigns)
    refused = await campaigns.api.post("/v1/campaigns/c1/tests", json={"recipients": [OWN, STRANGER.upper()]})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/test_recipient_opted_out"), refused.text
    assert refused.json()["refused"] == [STRANGER]  # as the API reads it: in lower case
    sent = await campaigns.api.post("/v1/campaigns/c1/tests", json={"recipients": [OWN]})
    assert sent.status_code == 202, sent.text
    await eventually(relay.mailed, lambda r: OWN in r, what="the other address still tested")
    assert relay.recipients().count(STRANGER) == 1


async def test_the_test_pages_button_stops_tests_too_and_needs_the_pages_token(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside,
        campaigns: CampaignsBeside) -> None:
    await start_delivery()
    assert (await campaigns.api.post("/v1/campaigns/c1/tests", json={"recipients": [STRANGER]})).status_code == 202
    await eventually(relay.mailed, lambda r: STRANGER in r, what="the test mailed")
    async with subscriptions.pages() as pages:
        path = unsubscribe_path(relay, STRANGER)
        forged = await pages.post(path, data={"confirm": "yes"})
        assert forged.status_code == 403
        pressed = await pages.post(path, data={**form_token(SECRET, path), "confirm": "yes"})
        assert pressed.status_code == 200 and "You will get no more test messages from this sender." in pressed.text
    events = await world.events("herald.subscriptions")
    assert [e.payload.source for e in events if isinstance(e, RecipientOptedOutOfTests)] == ["unsubscribe_page"]
    await folded(campaigns)
    refused = await campaigns.api.post("/v1/campaigns/c1/tests", json={"recipients": [STRANGER]})
    assert refused.status_code == 422 and refused.json()["type"].endswith("/test_recipient_opted_out")
