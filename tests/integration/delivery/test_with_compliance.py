"""The compliance loop across services on the real stack (ARCHITECTURE.md, "The compliance loop"): delivery's
hard bounces reach the compliance processor through Kafka, it suspends the account once, delivery holds the
rest of the campaign and tells the account, staff reinstate on the compliance API, and delivery sends the rest:
no message dropped, none sent twice."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx

from herald_compliance.main import Compliance
from herald_shared.contract.compliance import AccountSuspended
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.compliance.conftest import STAFF, compliance_settings
from tests.samples import campaign_queued

from .conftest import World, held

AUDIENCE = [(f"s{i}", f"r{i}@example.org") for i in range(300)]
BOUNCING = {address for i, (_, address) in enumerate(AUDIENCE) if i % 5 == 0}  # 20% hard bounces


async def test_bounces_suspend_delivery_holds_staff_reinstate_and_the_rest_is_sent(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World) -> None:
    compliance = Compliance(compliance_settings(settings, HERALD_RATE_MINIMUM_SENT=20))
    await compliance.start()
    staff = httpx.AsyncClient(transport=httpx.ASGITransport(app=compliance.app), base_url="http://compliance.test")
    try:
        relay.behaviour.delay = 0.05
        relay.behaviour.script.update({address: [("rcpt", "550 5.1.1 no such user")] for address in BOUNCING})
        running = await start_delivery(HERALD_SEND_CONCURRENCY=2)
        await world.open_account("acme")
        await world.add_list("acme", "news", AUDIENCE)
        await world.publish(campaign_queued("acme", "c1"))

        suspended = await eventually(lambda: world.events("herald.compliance"),
                                     lambda es: any(isinstance(e, AccountSuspended) for e in es), within=60,
                                     what="compliance suspending the account")
        suspension = next(e for e in suspended if isinstance(e, AccountSuspended))
        assert suspension.payload.metric == "hard_bounce_rate" and suspension.payload.value >= 0.08
        assert suspension.payload.counts is not None and suspension.payload.counts.hard_bounces >= 2  # 8% of 20
        relay.behaviour.script.clear()  # the list is cleaned: whatever is still held will be accepted

        events = await world.wait_for(lambda es: bool(held(es, "account_suspended")), "delivery holding")
        await eventually(relay.mailed, lambda r: "owner@acme.example" in r, what="the suspension notice")
        campaign_mail = [r for r in relay.recipients() if r != "owner@acme.example"]
        assert len(campaign_mail) < len(AUDIENCE) - len(BOUNCING), "the suspension held nothing"
        assert held(events, "account_suspended")[0].payload.campaign_id == "c1"

        refused = await staff.post("/v1/accounts/acme/reinstatement", json={"reason": "list cleaned"})
        assert refused.status_code == 401
        response = await staff.post("/v1/accounts/acme/reinstatement", headers=STAFF,
                                    json={"reason": "the customer removed the bad addresses"})
        assert response.status_code == 202, response.text
        assert response.json()["suspension_event_id"] == str(suspension.event_id)

        bounced = {address for address, answer in relay.attempts if address in BOUNCING and "550" in answer}
        wanted = {address for _, address in AUDIENCE} - bounced
        mailed = await eventually(relay.mailed, lambda r: wanted <= set(r), within=90,
                                  what="the held messages sent")
        counts = Counter(r for r in mailed if r != "owner@acme.example")
        assert max(counts.values()) == 1  # nothing sent twice
        assert not set(counts) & bounced  # a hard-bounced address is not tried again
        compliance_events = await world.events("herald.compliance")
        assert len([e for e in compliance_events if isinstance(e, AccountSuspended)]) == 1
        assert running.service.gates.account("acme").suspended is False
    finally:
        await staff.aclose()
        await compliance.stop()
