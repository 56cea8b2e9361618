"""Billing's blocks against delivery on the real stack, both services running, the account driven through the
billing API (PRODUCT.md, "Plans and billing"): the trial's 100 emails are a hard stop within a stated bound,
an upgrade sends the held rest, and a failed payment is emailed to the account and holds sending until paid."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from herald_shared.contract.billing import SendingBlocked
from herald_shared.contract.delivery import DeliveryHeld, MessageSent
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.billing.helpers import running_billing
from tests.samples import campaign_queued

from .conftest import World

CONCURRENCY = 2
OWNER = "ada@acme.example"


async def test_the_trial_quota_holds_the_rest_and_an_upgrade_sends_it(settings: HeraldSettings, start_delivery: Any,
                                                                      relay: Any, world: World) -> None:
    """The bound: delivery counts its sends against billing's allowance before each SMTP transaction, so exactly
    the trial's 100 campaign emails go out, however long billing takes to count the 100th and publish the block;
    and once delivery handles SendingBlocked, at most HERALD_SEND_CONCURRENCY messages (one per SMTP worker,
    already past its gate) could still start, as for a suspension."""
    relay.behaviour.delay = 0.02
    running = await start_delivery(HERALD_SEND_CONCURRENCY=CONCURRENCY)
    async with running_billing(settings) as billing:
        ada = await billing.sign_up("ada")
        account_id = ada.account_id
        approved = await billing.staff().post(f"/v1/staff/accounts/{account_id}/approval", json={})
        assert approved.status_code == 200
        audience = [(f"s{i}", f"r{i}@example.org") for i in range(20)]  # the trial's most
        await world.add_list(account_id, "news", audience)
        await eventually(lambda: ada.http.get("/v1/account"), lambda r: r.json()["usage"]["subscribers"] == 20,
                         what="billing counted the subscribers")
        await world.publish(*(campaign_queued(account_id, f"c{n}") for n in range(6)))  # 120 messages
        gates = running.service.gates
        while "trial_quota_reached" not in gates.account(account_id).blocked_reasons:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        closed_at = time.time()
        notice = await eventually(relay.mailed, lambda r: OWNER in r, what="the notice to the registered address")
        del notice
        campaign_mail = [r for r in relay.received if r.recipient != OWNER]
        late = [r for r in campaign_mail if r.accepted_at > closed_at]
        assert len(late) <= CONCURRENCY, f"{len(late)} messages went out after the block took effect"
        held_at = len(campaign_mail)
        past_quota = held_at - 100
        assert past_quota == 0, f"{past_quota} messages past the trial's 100 at ~{1 / 0.02 * CONCURRENCY:.0f}/s"
        notice_mail = next(r for r in relay.received if r.recipient == OWNER)
        assert b"paused" in notice_mail.data and b"100 emails" in notice_mail.data.replace(b"=\r\n", b"")
        # Billing counted exactly what delivery sent while on the trial.
        sent_events = [e for e in await world.events() if isinstance(e, MessageSent) and e.payload.kind == "campaign"]
        usage = await eventually(lambda: ada.http.get("/v1/account"),
                                 lambda r: r.json()["usage"]["trial_emails"] == len(sent_events),
                                 what="billing's count equal to delivery's sends")
        assert usage.json()["usage"]["trial_emails"] == held_at

        # Held, not dropped: a plan sends the rest, each message once.
        assert (await ada.http.put("/v1/account/payment-method", json={"provider": "simulated",
                                                                        "reference": "sim-card-ok"})).status_code == 204
        assert (await ada.http.put("/v1/account/plan", json={"subscribers": 500})).status_code == 200
        everyone = await eventually(relay.mailed, lambda r: len([a for a in r if a != OWNER]) == 120,
                                    what="the held messages sent after the upgrade")
        counts = Counter(a for a in everyone if a != OWNER)
        assert set(counts.values()) == {6} and len(counts) == 20


async def test_a_failed_payment_is_emailed_once_and_holds_sending_until_paid(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World) -> None:
    running = await start_delivery(HERALD_SEND_CONCURRENCY=CONCURRENCY)
    async with running_billing(settings) as billing:
        now = datetime.fromisoformat("2026-11-01T10:00:00+00:00")
        billing.set_clock(lambda: now)
        ada = await billing.sign_up("ada")
        account_id = ada.account_id
        assert (await billing.staff().post(f"/v1/staff/accounts/{account_id}/approval", json={})).status_code == 200
        for reference in ("sim-card-ok", None, "sim-card-insufficient-funds"):
            if reference is None:
                assert (await ada.http.put("/v1/account/plan", json={"subscribers": 500})).status_code == 200
                continue
            assert (await ada.http.put("/v1/account/payment-method", json={
                "provider": "simulated", "reference": reference})).status_code == 204
        now = datetime.fromisoformat("2026-12-01T10:00:00+00:00")
        await billing.service.clock.tick()
        await eventually(lambda: _blocked(running, account_id), bool, what="delivery closed the payment gate")
        await world.add_list(account_id, "news", [("s1", "reader@example.org")])
        await world.publish(campaign_queued(account_id, "c1"))
        await eventually(relay.mailed, lambda r: OWNER in r, what="the failed payment's notice")
        mail = next(r for r in relay.received if r.recipient == OWNER)
        assert b"payment" in mail.data and b"failed" in mail.data and b"insufficient funds" in mail.data
        # Held; and by then delivery has handled PaymentFailed and SendingBlocked: one notice, not two.
        await world.wait_for(lambda es: any(isinstance(e, DeliveryHeld) and e.payload.gate == "sending_blocked"
                                            for e in es), "the campaign held by the payment block")
        assert [r.recipient for r in relay.received] == [OWNER]
        now += timedelta(hours=2)
        ada = await billing.log_in("ada", account_id)
        assert (await ada.http.put("/v1/account/payment-method", json={
            "provider": "simulated", "reference": "sim-card-ok"})).status_code == 204
        paid = await ada.http.post("/v1/account/invoices/2026-000002/payment")
        assert paid.status_code == 200, paid.text
        await eventually(relay.mailed, lambda r: "reader@example.org" in r, what="the held campaign sent once paid")
        blocks = [e.payload.reason for e in await billing.events() if isinstance(e, SendingBlocked)]
        assert blocks == ["payment_failed"]


async def _blocked(running: Any, account_id: str) -> bool:
    return "payment_failed" in running.service.gates.account(account_id).blocked_reasons
