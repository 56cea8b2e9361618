"""On the real stack, with the account's rate limit making messages wait after they were handed to the workers:
a member who leaves meanwhile is not mailed, and a campaign cancelled meanwhile (the account suspended at the
same moment) sends none of the messages that were waiting."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.campaigns import CampaignCancelled
from herald_shared.contract.compliance import AccountSuspended
from herald_shared.contract.delivery import CampaignDeliveryFinished
from herald_shared.contract.subscriptions import SubscriberSuppressed, SubscriberUnsubscribed
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import World

OWNER = "owner@acme.example"  # the account's notices (a suspension's) are not campaign mail


def end_of(events: list[Event]) -> list[CampaignDeliveryFinished]:
    return [e for e in events if isinstance(e, CampaignDeliveryFinished) and e.payload.campaign_id == "c1"]


async def test_a_member_who_unsubscribes_while_their_message_waits_for_the_rate_limit_is_skipped(
        start_delivery: Any, relay: Any, world: World) -> None:
    """PRODUCT.md: a campaign goes only to confirmed, non-suppressed subscribers. Eight messages at 2 a second
    are handed out at once (one member read for the batch); two members who leave while theirs wait for the
    rate limit are skipped, never mailed."""
    running = await start_delivery(HERALD_ACCOUNT_RATE=2, HERALD_SEND_CONCURRENCY=4)
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(8)])
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(relay.mailed, bool, what="the first message sent")
    sub = {"account_id": "acme", "producer": "subscriptions"}
    await world.publish(
        SubscriberUnsubscribed(**sub, payload={"list_id": "news", "subscriber_id": "s7", "source": "one_click"}),
        SubscriberSuppressed(**sub, payload={"subscriber_id": "s6", "reason": "complaint", "email_sha256": "0" * 64}))
    await running.service.audience_caught_up()
    assert not {"r6@example.org", "r7@example.org"} & set(relay.recipients()), "mailed before they left: no test"

    end, = end_of(await world.wait_for(lambda es: bool(end_of(es)), "CampaignDeliveryFinished"))
    assert (end.payload.recipients, end.payload.sent, end.payload.skipped) == (8, 6, 2)
    assert sorted(relay.recipients()) == [f"r{i}@example.org" for i in range(6)]
    outcomes = running.service.store.db["outcomes"]
    reasons = sorted([doc["reason"] async for doc in outcomes.find({"campaign_id": "c1", "outcome": "skipped"})])
    assert reasons == ["member_suppressed", "member_unsubscribed"]


async def test_messages_waiting_for_the_rate_limit_when_their_campaign_is_cancelled_are_not_sent(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Eight messages at 1 a second, four workers each past its first check and waiting for a token, when the
    campaign is cancelled and the account suspended: no SMTP transaction begins after the cancellation is
    handled (before, each waiting one was still sent, up to 3 s later), and the rest are recorded cancelled."""
    running = await start_delivery(HERALD_ACCOUNT_RATE=1, HERALD_SEND_CONCURRENCY=4)
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(8)])
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(relay.mailed, bool, what="the first message sent")
    await world.publish(
        CampaignCancelled(account_id="acme", producer="campaigns", payload={"campaign_id": "c1",
                                                                            "cancelled_by": "anna"}),
        AccountSuspended(account_id="acme", producer="compliance", payload={
            "metric": "hard_bounce_rate", "value": 0.09, "threshold": 0.08, "reason": "hard bounces 9% >= 8%"}))
    gates = running.service.gates
    # The moment the cancellation takes effect, to the millisecond (eventually() polls every 100 ms).
    while not gates.campaign("acme", "c1").cancelled:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    handled_at = time.time()

    end, = end_of(await world.wait_for(lambda es: bool(end_of(es)), "CampaignDeliveryFinished"))
    campaign_mail = [r for r in relay.received if r.recipient != OWNER]
    # A transaction already under way when it was handled may end after it; none may begin after it.
    assert not [r.recipient for r in campaign_mail if r.started_at > handled_at + 0.005]
    assert end.payload.sent == len(campaign_mail) < 4
    assert (end.payload.recipients, end.payload.cancelled) == (8, 8 - len(campaign_mail))
