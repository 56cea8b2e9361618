"""One campaign's flow on the real stack (README, "Every answer names its request"): every event delivery makes
about a campaign's message carries the `correlation_id` of the CampaignQueued that made its job and names that
event as its cause, and the suspension its bounces bring carries the breaching bounce's, so one id follows a
campaign from its submission's request to its messages and to what they caused. Real Kafka, FerretDB and SMTP relay."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from herald_compliance.main import Compliance
from herald_shared.apikeys import new_api_key
from herald_shared.contract.billing import ApiKeyIssued, PlanChanged
from herald_shared.contract.campaigns import CampaignQueued, CampaignSubmitted
from herald_shared.contract.compliance import AccountSuspended
from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageBounced, MessageSent
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.compliance.conftest import compliance_settings
from tests.samples import PAYLOADS, campaign_queued, sample

from .conftest import World, campaigns_running, held

AUDIENCE = [(f"s{i}", f"r{i}@example.org") for i in range(5)]
DRAFT = {"campaign_id": "c1", "name": "November", "list_id": "news", "subject": "November news",
         "from_name": "Acme News", "from_email": "news@acme.example",
         "html_body": "<html><body><h1>Hi {{ first_name }}</h1></body></html>"}


@pytest.fixture
async def campaigns_api(settings: HeraldSettings, world: World) -> AsyncIterator[httpx.AsyncClient]:
    """The campaigns service beside delivery, acme on a paid plan with an API key, its list `news` of AUDIENCE."""
    key_id, key, key_hash = new_api_key()
    await world.open_account("acme")
    await world.publish(
        PlanChanged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
            "plan": "monthly", "tier_subscriber_limit": 1000, "effective_at": "2026-11-02T00:00:00Z"}),
        ApiKeyIssued(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
            "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}))
    await world.add_list("acme", "news", AUDIENCE)
    async with campaigns_running(settings, key) as service:
        await eventually(lambda: service.service.store.list_info("acme", "news"), lambda info: info is not None,
                         what="the list")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://campaigns",
                                     headers={"Authorization": f"Bearer {key}"}) as api:
            yield api


async def test_a_campaign_submitted_through_the_api_has_its_messages_carry_its_submissions_request_id(
        start_delivery: Any, relay: Any, world: World, campaigns_api: httpx.AsyncClient) -> None:
    await start_delivery()
    assert (await campaigns_api.post("/v1/campaigns", json=DRAFT)).status_code == 201
    mine = uuid.uuid4()
    submitted = await campaigns_api.post("/v1/campaigns/c1/submission", json={}, headers={"X-Request-ID": str(mine)})
    assert submitted.status_code == 200, submitted.text
    assert submitted.headers["X-Request-ID"] == str(mine)

    events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es),
                                  "the campaign sent and finished")
    [submission] = [e for e in await world.events("herald.campaigns") if isinstance(e, CampaignSubmitted)]
    [queued] = [e for e in await world.events("herald.campaigns") if isinstance(e, CampaignQueued)]
    assert submission.correlation_id == mine  # the request's own event (herald_shared.correlation)
    # Queued later by campaigns' scheduler, out of any request, in the submission's flow: so the customer's
    # request id is on every message the campaign sent.
    assert (queued.correlation_id, queued.causation_id) == (mine, submission.event_id)
    sent = [e for e in events if isinstance(e, MessageSent)]
    assert sorted(e.payload.subscriber_id or "" for e in sent) == sorted(s for s, _ in AUDIENCE)
    assert {(e.correlation_id, e.causation_id) for e in sent} == {(mine, queued.event_id)}
    [finished] = [e for e in events if isinstance(e, CampaignDeliveryFinished)]
    assert (finished.correlation_id, finished.causation_id) == (mine, queued.event_id)


async def test_a_breach_by_a_campaigns_bounces_suspends_in_the_campaigns_flow(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World) -> None:
    """The campaign's bounces carry its flow; compliance's AccountSuspended carries the breaching bounce's and names
    it as its cause; the messages held since carry the flow too."""
    audience = [(f"s{i}", f"r{i}@example.org") for i in range(100)]
    bouncing = {address for i, (_, address) in enumerate(audience) if i % 4 == 0}
    compliance = Compliance(compliance_settings(settings, HERALD_RATE_MINIMUM_SENT=20))
    await compliance.start()
    try:
        relay.behaviour.delay = 0.05
        relay.behaviour.script.update({address: [("rcpt", "550 5.1.1 no such user")] for address in bouncing})
        await start_delivery(HERALD_SEND_CONCURRENCY=2)
        await world.open_account("acme")
        await world.add_list("acme", "news", audience)
        flow = uuid.uuid4()
        queued = campaign_queued("acme", "c1").model_copy(update={"correlation_id": flow})
        await world.publish(queued)

        suspended = await eventually(lambda: world.events("herald.compliance"),
                                     lambda es: any(isinstance(e, AccountSuspended) for e in es), within=60,
                                     what="compliance suspending the account")
        [suspension] = [e for e in suspended if isinstance(e, AccountSuspended)]
        events = await world.wait_for(lambda es: bool(held(es, "account_suspended")), "delivery holding")
        bounces = {e.event_id: e for e in events if isinstance(e, MessageBounced)}
        assert bounces and {(e.correlation_id, e.causation_id) for e in bounces.values()} == {
            (flow, queued.event_id)}
        assert suspension.correlation_id == flow
        assert suspension.causation_id in bounces  # the bounce that breached
        assert {(e.correlation_id, e.causation_id) for e in held(events, "account_suspended")} == {
            (flow, queued.event_id)}
    finally:
        await compliance.stop()


async def test_a_confirmation_and_a_test_send_carry_the_flow_of_the_event_that_asked_for_them(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Not of a campaign, yet of a request: a subscribe's confirmation and a test send's MessageSent carry the
    correlation of their ConfirmationRequested and CampaignTestRequested and name them as their cause."""
    await start_delivery()
    await world.open_account("acme")
    subscribe, testing = uuid.uuid4(), uuid.uuid4()
    confirmation = sample("ConfirmationRequested", account_id="acme", correlation_id=subscribe,
                          payload={**PAYLOADS["ConfirmationRequested"], "expires_at": "2099-01-01T00:00:00Z"})
    test = sample("CampaignTestRequested", account_id="acme", correlation_id=testing)
    await world.publish(confirmation, test)
    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) == 2,
                                  "the confirmation and the test send sent")
    assert {e.payload.kind: (e.correlation_id, e.causation_id) for e in events if isinstance(e, MessageSent)} == {
        "confirmation": (subscribe, confirmation.event_id), "test": (testing, test.event_id)}
