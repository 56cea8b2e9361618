"""Sending gates on the real stack: suspension, billing blocks, account and campaign review. A closed gate
holds messages (none is dropped) and they go out when it opens."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from herald_shared.contract.billing import AccountApproved, SendingBlocked, SendingUnblocked
from herald_shared.contract.campaigns import CampaignApproved
from herald_shared.contract.compliance import AccountReinstated, AccountSuspended
from herald_shared.contract.delivery import CampaignDeliveryFinished
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import World, held

CONCURRENCY = 3


async def test_a_suspension_mid_campaign_holds_the_rest_within_the_bound_and_reinstatement_sends_them(
        start_delivery: Any, relay: Any, world: World) -> None:
    """PRODUCT.md "Sending suspension": unsent messages are held, not dropped; the bound is the number of SMTP
    workers (HERALD_SEND_CONCURRENCY): at most one message each was already past its gate check."""
    relay.behaviour.delay = 0.05
    running = await start_delivery(HERALD_SEND_CONCURRENCY=CONCURRENCY)
    await world.open_account("acme")
    audience = [(f"s{i}", f"r{i}@example.org") for i in range(40)]
    await world.add_list("acme", "news", audience)
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(relay.mailed, lambda r: len(r) >= 8, what="campaign under way")

    await world.publish(AccountSuspended(account_id="acme", producer="compliance", payload={
        "metric": "hard_bounce_rate", "value": 0.09, "threshold": 0.08, "reason": "hard bounces 9% >= 8%"}))
    gates = running.service.gates
    # Measures the moment the suspension takes effect to the millisecond (eventually() polls every 100 ms).
    while not gates.account("acme").suspended:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    applied_at = time.time()
    events = await world.wait_for(lambda es: bool(held(es, "account_suspended")), "DeliveryHeld")
    notice = await eventually(relay.mailed, lambda r: "owner@acme.example" in r, what="suspension notice")
    campaign_mail = [r for r in relay.received if r.recipient != "owner@acme.example"]
    late = [r for r in campaign_mail if r.accepted_at > applied_at]
    assert len(late) <= CONCURRENCY, f"{len(late)} messages went out after the suspension took effect"
    assert not [r for r in campaign_mail if r.started_at > applied_at + 0.005], "a transaction began after it"
    sent_while_open = len(campaign_mail)
    assert sent_while_open < len(audience)
    report = held(events, "account_suspended")[0].payload
    assert report.campaign_id == "c1" and report.messages_held == len(audience) - sent_while_open
    assert "hard bounces" in report.reason
    notice_mail = next(r for r in relay.received if r.recipient == "owner@acme.example")
    assert b"suspended" in notice_mail.data and b"held, not dropped" in notice_mail.data
    del notice

    # Still held: the sender looks at the ledger again and again, and nothing more goes out.
    passes = running.service.sender.dispatch_passes

    async def dispatch_passes() -> int:
        return int(running.service.sender.dispatch_passes)

    await eventually(dispatch_passes, lambda n: n >= passes + 5, what="the sender to look for due messages")
    assert len([r for r in relay.received if r.recipient != "owner@acme.example"]) == sent_while_open
    await world.publish(AccountReinstated(account_id="acme", producer="compliance",
                                          payload={"reinstated_by": "staff-1", "reason": "list cleaned"}))
    everyone = await eventually(relay.mailed, lambda r: len(r) >= len(audience) + 1, what="the rest sent")
    counts = Counter(everyone)
    assert sorted(a for a in counts if a != "owner@acme.example") == sorted(a for _, a in audience)
    assert max(counts.values()) == 1


async def test_review_holds_until_the_account_and_the_campaign_are_approved(start_delivery: Any, relay: Any,
                                                                            world: World) -> None:
    """PRODUCT.md "Review": a new account is held until reviewed; in the trial every campaign is reviewed."""
    await start_delivery()
    await world.open_account("trial", approved=False)
    await world.add_list("trial", "news", [("s1", "a@example.org"), ("s2", "b@example.org")])
    await world.publish(campaign_queued("trial", "c1", review_required=True))
    await world.wait_for(lambda es: bool(held(es, "account_review")), "held for account review")
    await world.publish(AccountApproved(account_id="trial", producer="billing", payload={"reviewer": "staff"}))
    await world.wait_for(lambda es: bool(held(es, "campaign_review")), "held for campaign review")
    assert relay.recipients() == []
    await world.publish(CampaignApproved(account_id="trial", producer="campaigns",
                                         payload={"campaign_id": "c1", "reviewer": "staff"}))
    mailed = await eventually(relay.mailed, lambda r: len(r) == 2, what="sent after approval")
    assert sorted(mailed) == ["a@example.org", "b@example.org"]


async def test_a_billing_block_holds_sends_a_notice_and_lifting_it_sends_the_rest(start_delivery: Any,
                                                                                  relay: Any, world: World) -> None:
    """PRODUCT.md "Plans and billing": trial ended, over the limit, quota, credits, failed payment: no sending."""
    await start_delivery()
    await world.open_account("acme")
    await world.publish(SendingBlocked(account_id="acme", producer="billing",
                                       payload={"reason": "monthly_quota_reached", "detail": "10,900,000 sent"}))
    await world.add_list("acme", "news", [("s1", "a@example.org")])
    await world.publish(campaign_queued("acme", "c1"))
    events = await world.wait_for(lambda es: bool(held(es, "sending_blocked")), "held by billing")
    assert "monthly_quota_reached" in held(events, "sending_blocked")[0].payload.reason
    await eventually(relay.mailed, lambda r: r == ["owner@acme.example"], what="block notice")
    assert b"monthly quota reached" in relay.received[0].data
    await world.publish(SendingUnblocked(account_id="acme", producer="billing",
                                         payload={"reason": "monthly_quota_reached"}))
    await eventually(relay.mailed, lambda r: "a@example.org" in r, what="sent after the block is lifted")


async def test_a_rejected_campaign_is_never_sent(start_delivery: Any, relay: Any, world: World) -> None:
    from herald_shared.contract.campaigns import CampaignRejected

    running = await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "a@example.org")])
    await world.publish(campaign_queued("acme", "c1", review_required=True))
    await world.wait_for(lambda es: bool(held(es, "campaign_review")), "held for review")
    await world.publish(CampaignRejected(account_id="acme", producer="campaigns", payload={
        "campaign_id": "c1", "reviewer": "staff", "reasons": ["gambling offer"]}))

    async def outcomes() -> list[Any]:
        return await running.service.store.outcomes({"campaign_id": "c1"})

    found = await eventually(outcomes, bool, what="the message recorded as not sent")
    assert [(o["outcome"], o["reason"]) for o in found] == [("cancelled", "campaign_rejected")]
    assert relay.recipients() == []


async def test_a_suspension_published_while_delivery_was_down_holds_after_the_restart(
        start_delivery: Any, relay: Any, world: World) -> None:
    """The sender sends nothing until the gates have caught up with billing, compliance and campaigns."""
    first = await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(5)])
    await first.service.stop()
    await world.publish(campaign_queued("acme", "c1"))
    await world.publish(AccountSuspended(account_id="acme", producer="compliance", payload={
        "metric": "abuse_rate", "value": 0.006, "threshold": 0.005, "reason": "complaints 0.6% > 0.5%"}))
    await start_delivery()
    await world.wait_for(lambda es: bool(held(es, "account_suspended")), "held after the restart")
    assert [r for r in relay.recipients() if r != "owner@acme.example"] == []


async def test_a_suspension_takes_effect_while_another_campaign_is_expanding_and_a_restart_finishes_that(
        start_delivery: Any, relay: Any, world: World) -> None:
    """A campaign's expansion runs beside the control consumer: expanding a big list takes up to a minute, and a
    suspension behind it must not wait (the suspended account's mail would go on going out). Here acme's
    expansion is held at its read of the audience, for as long as the test likes: beta's suspension still
    closes beta's gate and mails its notice. The service is then stopped mid-expansion; the next one takes the
    expansion up again (the control consumer's checkpoint is past the CampaignQueued by then), sends each
    member once, and announces the campaign's end once."""
    first = await start_delivery()
    await world.open_account("acme")
    await world.open_account("beta")
    audience = [(f"s{i}", f"r{i}@example.org") for i in range(3)]
    await world.add_list("acme", "news", audience)
    store = first.service.store
    real_read = store.active_member_ids
    reading = asyncio.Event()

    async def stalled_read(account_id: str, list_id: str) -> Any:
        reading.set()
        if account_id == "acme":
            await asyncio.Event().wait()  # until the service stops
        async for page in real_read(account_id, list_id):
            yield page

    store.active_member_ids = stalled_read  # type: ignore[method-assign]
    await world.publish(campaign_queued("acme", "c1"))
    await asyncio.wait_for(reading.wait(), 60)
    await world.publish(AccountSuspended(account_id="beta", producer="compliance", payload={
        "metric": "abuse_rate", "value": 0.006, "threshold": 0.005, "reason": "complaints 0.6% > 0.5%"}))
    await eventually(relay.mailed, lambda r: "owner@beta.example" in r, what="beta's suspension notice")
    assert first.service.gates.gate_for("beta", None) == "account_suspended"
    campaign = await first.service.db["campaigns"].find_one({"_id": "acme:c1"})
    assert campaign is not None and "expansion_pending" in campaign and "expanded_jobs" not in campaign
    assert [r for r in relay.recipients() if r.startswith("r")] == []

    await first.service.stop()
    await start_delivery()
    events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es),
                                  "acme's campaign finished after the restart")
    finished = [e for e in events if isinstance(e, CampaignDeliveryFinished)]
    assert len(finished) == 1 and finished[0].payload.recipients == finished[0].payload.sent == len(audience)
    mailed = Counter(r for r in relay.recipients() if r.startswith("r"))
    assert sorted(mailed) == sorted(a for _, a in audience) and max(mailed.values()) == 1
