"""The send allowance on the real stack, billing and delivery running, the account driven through the billing API
(PRODUCT.md, "Plans and billing": the trial "at most ... 100 emails"; "every email sent consumes a credit"): at
delivery's full speed, 40 connections and a relay that answers at once, exactly the allowed emails reach the relay
and the rest are held, not dropped; credits bought send exactly as many more."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from herald_delivery.domain import outcome_event_id
from herald_delivery.handlers import new_job
from herald_delivery.store import LEDGER_LISTED, OUTCOMES, SENDER_STATE, SENT_COUNTS, DeliveryStore
from herald_shared.contract import serialize_event
from herald_shared.contract.billing import SendAllowanceChanged
from herald_shared.contract.delivery import DeliveryHeld, MessageSent
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.billing.helpers import running_billing
from tests.samples import campaign_queued

from .conftest import World

CONCURRENCY = 40
OWNER = "ada@acme.example"
SUBSCRIBERS = 20  # the trial's most
CAMPAIGNS = 14  # 280 messages: 100 on the trial, 100 and 50 on credits, 30 still held
PLANS = """vat_percent = 21
[[tiers]]
subscribers = 500
monthly_cents = 1000
pro_monthly_cents = 2000
[[credit_packs]]
credits = 100
price_cents = 500
validity_days = 30
[[credit_packs]]
credits = 50
price_cents = 300
validity_days = 30
"""


def _campaign_mail(relay: Any) -> int:
    return len([r for r in relay.received if r.recipient != OWNER])


async def _settled(running: Any, relay: Any, account_id: str, sent: int, held: int) -> None:
    """Wait until `sent` campaign emails reached the relay and the other `held` wait with none in flight: nothing
    can go any more until a larger allowance arrives (the relay answers at once and nothing is deferred)."""
    campaigns = [f"c{n}" for n in range(CAMPAIGNS)]

    async def state() -> tuple[int, int, bool]:
        waiting = sum(running.service.jobs.unfinished(account_id, c) for c in campaigns)
        return _campaign_mail(relay), waiting, account_id in running.service.gates.in_flight

    await eventually(state, lambda s: s[0] + s[1] == SUBSCRIBERS * CAMPAIGNS and not s[2] and s[1] == held,
                     what=f"{sent} campaign emails sent and {held} held, none in flight", within=120)
    assert _campaign_mail(relay) == sent


async def test_the_trial_and_each_batch_of_credits_send_exactly_what_they_allow_at_full_speed(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World, tmp_path: Path) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS)
    running = await start_delivery(HERALD_SEND_CONCURRENCY=CONCURRENCY)
    async with running_billing(settings, HERALD_BILLING_PLANS_FILE=str(plans)) as billing:
        ada = await billing.sign_up("ada")
        account_id = ada.account_id
        assert (await billing.staff().post(f"/v1/staff/accounts/{account_id}/approval", json={})).status_code == 200
        async def allowance() -> Any:
            return running.service.gates.account(account_id).allowance

        await eventually(allowance, lambda a: a is not None and a.remaining == 100,
                         what="the trial's allowance in delivery")
        await world.add_list(account_id, "news", [(f"s{i}", f"r{i}@example.org") for i in range(SUBSCRIBERS)])
        await eventually(lambda: ada.http.get("/v1/account"),
                         lambda r: r.json()["usage"]["subscribers"] == SUBSCRIBERS, what="billing counted them")
        await world.publish(*(campaign_queued(account_id, f"c{n}") for n in range(CAMPAIGNS)))

        await _settled(running, relay, account_id, sent=100, held=SUBSCRIBERS * CAMPAIGNS - 100)
        await eventually(lambda: ada.http.get("/v1/account"), lambda r: r.json()["usage"]["trial_emails"] == 100,
                         what="billing counted the trial's 100")
        # Held by the allowance, or by billing's block once it has counted the 100th (whichever delivery asks first).
        await world.wait_for(lambda es: any(isinstance(e, DeliveryHeld) and e.payload.gate in (
            "send_allowance", "sending_blocked") for e in es), "the rest announced held")

        assert (await ada.http.put("/v1/account/payment-method", json={
            "provider": "simulated", "reference": "sim-card-ok"})).status_code == 204
        bought = await ada.http.post("/v1/account/credits", json={"credits": 100})
        assert bought.status_code == 200, bought.text
        await _settled(running, relay, account_id, sent=200, held=SUBSCRIBERS * CAMPAIGNS - 200)

        bought = await ada.http.post("/v1/account/credits", json={"credits": 50})
        assert bought.status_code == 200, bought.text
        await _settled(running, relay, account_id, sent=250, held=SUBSCRIBERS * CAMPAIGNS - 250)
        usage = await eventually(lambda: ada.http.get("/v1/account"),
                                 lambda r: r.json()["credits"]["left"] == 0, what="every credit spent")
        assert usage.json()["usage"]["trial_emails"] == 100
        sends = [e for e in await world.events() if isinstance(e, MessageSent) and e.payload.kind == "campaign"]
        assert len(sends) == 250 and len({e.payload.message_id for e in sends}) == 250
        allowances = [e.payload for e in await billing.events() if isinstance(e, SendAllowanceChanged)]
        assert [a.remaining for a in allowances][:1] == [100]


def counted_outcome(message_id: str, kind: str, total: int, at: datetime) -> dict[str, Any]:
    event = MessageSent(event_id=outcome_event_id(message_id, "sent", 1), account_id="acme", producer="delivery",
                        payload={"message_id": message_id, "kind": kind, "campaign_id": "c1",
                                 "recipient_domain": "example.org", "smtp_code": 250, "attempt": 1})
    return {"_id": f"{message_id}:1", "message_id": message_id, "account_id": "acme", "campaign_id": "c1",
            "attempt": 1, "first_attempt_at": at, "recorded_at": at, "final": True, "outcome": "sent",
            "smtp_code": 250, "outcome_event": serialize_event(event).decode(), "counted_kind": kind,
            "counted_total": total}


async def test_the_counts_are_written_with_the_outcomes_and_never_lowered(mongo: Any,
                                                                         settings: HeraldSettings) -> None:
    db = mongo[settings.database_name("delivery")]
    store = DeliveryStore(db)
    now = datetime.now(UTC)
    # Workers record at once: one group commit round or a few; the highest count of each kind is what stays.
    await asyncio.gather(*(store.record(counted_outcome(f"m{n}", "campaign", n, now)) for n in range(1, 31)),
                         store.record(counted_outcome("t1", "test", 1, now)))
    assert await db[SENT_COUNTS].find_one({"_id": "acme"}) == {"_id": "acme", "campaign": 30, "test": 1}
    await store.record(counted_outcome("m-late", "campaign", 12, now))  # a round retried late
    assert (await db[SENT_COUNTS].find_one({"_id": "acme"}))["campaign"] == 30
    assert await DeliveryStore(db).sent_counts() == {("acme", "campaign"): 30, ("acme", "test"): 1}


async def test_a_start_recounts_what_a_crash_left_between_an_outcomes_insert_and_its_counts_write(
        mongo: Any, settings: HeraldSettings, start_delivery: Any, world: World) -> None:
    """The counts stored say 5 test sends; an outcome recorded since the published-watermark says it made the
    7th (the process died before the round's counts were written): the next start counts 7, and stores it."""
    db = mongo[settings.database_name("delivery")]
    store = DeliveryStore(db)
    await db[SENDER_STATE].insert_one({"_id": LEDGER_LISTED, "at": datetime.now(UTC)})
    now = datetime.now(UTC)
    await db[SENDER_STATE].insert_one({"_id": "published", "before": now - timedelta(seconds=1)})
    await db[SENT_COUNTS].insert_one({"_id": "acme", "test": 5})
    await store.add_jobs([new_job("tm7", "acme", "test", now, campaign_id="c1", test_id="t1", recipient="x@y.org")])
    await db[OUTCOMES].insert_one(counted_outcome("tm7", "test", 7, now))

    running = await start_delivery()

    async def counted() -> dict[str, int]:
        return dict(running.service.gates.sent.get("acme", {}))

    await eventually(counted, lambda c: c == {"test": 7}, what="the count raised by the outcome read again")
    assert await db[SENT_COUNTS].find_one({"_id": "acme"}) == {"_id": "acme", "test": 7}
    await world.wait_for(lambda es: any(isinstance(e, MessageSent) and e.payload.message_id == "tm7" for e in es),
                         "its outcome published again")


def told(account_id: str, sequence: int, remaining: int, until: datetime | None) -> SendAllowanceChanged:
    return SendAllowanceChanged(account_id=account_id, producer="billing", payload={  # type: ignore[arg-type]
        "remaining": remaining, "counts": ["campaign"], "as_of": {"campaign": 0, "test": 0}, "sequence": sequence,
        "until": until})


async def test_nothing_is_sent_from_the_allowances_until_on_until_billing_tells_a_newer_one(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Credits expired (or a trial ended) a moment ago and billing has not looked at its clock since: its
    allowance, with 1,000 left, says until when it holds, so delivery holds the campaign at once, announced as
    held by the allowance; the newer allowance billing tells next sends it."""
    running = await start_delivery()
    await world.open_account("acme")
    await world.publish(told("acme", 1, 1_000, datetime.now(UTC) - timedelta(seconds=1)))
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(5)])
    await world.publish(campaign_queued("acme", "c1"))
    await world.wait_for(lambda es: any(isinstance(e, DeliveryHeld) and e.payload.gate == "send_allowance"
                                        for e in es), "the campaign held by the allowance's end")
    assert running.service.jobs.unfinished("acme", "c1") == 5 and relay.received == []
    await world.publish(told("acme", 2, 1_000, None))
    sends = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) == 5,
                                 "the campaign sent under the newer allowance")
    assert len({e.payload.message_id for e in sends if isinstance(e, MessageSent)}) == 5
