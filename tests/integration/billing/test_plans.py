"""Monthly plans through the billing API on the real stack (PRODUCT.md, "Plans and billing"), with a small plans
file so quotas are reached in a test: tiers of 2 and 5 subscribers (218 and 545 emails a period)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from herald_billing.payments import Charged, SimulatedProvider
from herald_billing.store import BillingProjection
from herald_shared.contract.billing import (
    CreditsExpired,
    InvoiceIssued,
    InvoiceVoided,
    PaymentFailed,
    PaymentMethodSet,
    PaymentSucceeded,
    PlanChanged,
    QuotaExhausted,
    SendingBlocked,
    SendingUnblocked,
)
from herald_shared.contract.delivery import MessageBounced, MessageSent
from herald_shared.kafka import partition_ids
from herald_shared.mongo import rebuild
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .helpers import Customer, Platform, account, running_billing

SMALL_PLANS = """vat_percent = 21
[[tiers]]
subscribers = 2
monthly_cents = 1000
pro_monthly_cents = 2000
[[tiers]]
subscribers = 5
monthly_cents = 4000
pro_monthly_cents = 6000
[[credit_packs]]
credits = 5
price_cents = 500
validity_days = 10
"""


@pytest.fixture
async def small(settings: HeraldSettings, tmp_path: Path) -> AsyncIterator[Platform]:
    plans = tmp_path / "plans.toml"
    plans.write_text(SMALL_PLANS)
    async with running_billing(settings, HERALD_BILLING_PLANS_FILE=str(plans)) as running:
        yield running


async def pay_with(customer: Customer, reference: str) -> None:
    response = await customer.http.put("/v1/account/payment-method", json={"provider": "simulated",
                                                                          "reference": reference})
    assert response.status_code == 204, response.text


def sent(account_id: str, n: int, at: datetime | None = None) -> MessageSent:
    return MessageSent(account_id=account_id, producer="delivery", **({"occurred_at": at} if at else {}),
                       payload={"message_id": f"m{n}", "campaign_id": "c1", "subscriber_id": f"s{n}",  # type: ignore[arg-type]
                                "recipient_domain": "example.com", "smtp_code": 250})


def bounced(account_id: str, n: int, at: datetime, source: str = "smtp_reply",
            kind: str = "campaign") -> MessageBounced:
    """By default a campaign email the receiving server refused when it was sent (a 5xx to RCPT TO or DATA):
    delivery publishes this, and no MessageSent."""
    return MessageBounced(account_id=account_id, producer="delivery", occurred_at=at, payload={  # type: ignore[arg-type]
        "message_id": f"m{n}", "kind": kind, "campaign_id": "c1",
        "subscriber_id": f"s{n}" if kind == "campaign" else None, "bounce_class": "block", "smtp_code": 550,
        "enhanced_status_code": "5.7.1", "diagnostic": "550 5.7.1 refused as spam", "source": source})


async def test_choosing_then_raising_a_tier_is_charged_and_never_lowered(small: Platform) -> None:
    now = datetime.fromisoformat("2027-01-31T10:00:00+00:00")
    small.set_clock(lambda: now)
    ada = await small.sign_up("ada")
    plans = (await small.http.get("/v1/plans")).json()
    assert [t["subscribers"] for t in plans["tiers"]] == [2, 5] and plans["tiers"][0]["monthly_send_cap"] == 218
    no_method = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
    assert no_method.status_code == 409 and no_method.json()["type"].endswith("/no_payment_method")
    await pay_with(ada, "sim-card-declined")
    declined = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
    assert declined.status_code == 402 and "declined" in declined.json()["detail"]
    assert (await account(ada))["plan"] == "trial" and (await account(ada))["open_invoices"] == []
    # The invoice was recorded before its charge: declined, it is void (its number is not given again).
    void = (await ada.http.get("/v1/account/invoices")).json()["items"]
    assert [(i["invoice_id"], i["status"], i["void_reason"]) for i in void] == [
        ("2027-000001", "void", "payment_declined")]
    assert "Void: not due" in (await ada.http.get("/v1/account/invoices/2027-000001/document")).text
    await pay_with(ada, "sim-card-ok")
    chosen = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
    assert chosen.status_code == 200, chosen.text
    monthly = chosen.json()["monthly"]
    assert (chosen.json()["plan"], monthly["billing_day"], monthly["monthly_send_cap"]) == ("monthly", 31, 218)
    assert monthly["paid_until"] == "2027-02-28T10:00:00+00:00"
    now += timedelta(days=14)  # 2027-02-14: half of the 28-day period left
    ada = await small.log_in("ada", ada.account_id)
    raised = await ada.http.put("/v1/account/plan", json={"subscribers": 5})
    assert raised.status_code == 200 and raised.json()["monthly"]["subscriber_limit"] == 5
    lowered = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
    assert lowered.status_code == 409 and lowered.json()["type"].endswith("/tier_cannot_be_lowered")
    for not_a_number in ("10", 10.0, True):  # the schema says integer: nothing else is read as one
        refused = await ada.http.put("/v1/account/plan", json={"subscribers": not_a_number})
        assert refused.status_code == 422 and refused.json()["type"].endswith("/invalid_request"), not_a_number
    invoices = (await ada.http.get("/v1/account/invoices")).json()["items"]
    assert [(i["invoice_id"], i["net_cents"], i["vat_cents"], i["amount_cents"], i["status"]) for i in invoices] == [
        ("2027-000001", 1000, 210, 1210, "void"), ("2027-000002", 1000, 210, 1210, "paid"),
        ("2027-000003", 1500, 315, 1815, "paid")]
    page = await ada.http.get("/v1/account/invoices/2027-000003/document")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # Nothing but its own stylesheet may load, it may not be framed, and its address goes nowhere else.
    assert page.headers["content-security-policy"].startswith("default-src 'none'; style-src 'sha256-")
    assert (page.headers["x-frame-options"], page.headers["referrer-policy"]) == ("DENY", "no-referrer")
    assert "Upgrade from 2 (standard) to 5 subscribers" in page.text and "18.15 EUR" in page.text
    changed = [e for e in await small.events() if isinstance(e, PlanChanged)]
    assert [(e.payload.plan, e.payload.tier_subscriber_limit) for e in changed] == [
        ("trial", None), ("monthly", 2), ("monthly", 5)]


async def test_the_monthly_quota_and_the_subscriber_limit_block_and_reopen(small: Platform) -> None:
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    await small.publisher.publish_many([sent(ada.account_id, n) for n in range(217)])
    await eventually(lambda: account(ada), lambda a: a["usage"]["period_emails"] == 217, what="217 counted")
    assert (await account(ada))["sending_blocked"] == []
    await small.publisher.publish(sent(ada.account_id, 217))
    blocked = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] != [], what="quota")
    assert blocked["sending_blocked"] == ["monthly_quota_reached"]
    exhausted = [e for e in await small.events() if isinstance(e, QuotaExhausted)]
    assert [(e.payload.quota, e.payload.limit, e.payload.used) for e in exhausted] == [("monthly_emails", 218, 218)]
    # An upgrade raises the cap (5 x 109 = 545): sending opens again at once.
    opened = await ada.http.put("/v1/account/plan", json={"subscribers": 5})
    assert opened.status_code == 200
    await eventually(lambda: account(ada), lambda a: a["sending_blocked"] == [], what="unblocked by the upgrade")
    reasons = [(type(e).__name__, e.payload.reason) for e in await small.events()  # type: ignore[attr-defined]
               if isinstance(e, (SendingBlocked, SendingUnblocked))]
    assert reasons == [("SendingBlocked", "monthly_quota_reached"), ("SendingUnblocked", "monthly_quota_reached")]


class AnswerLost(SimulatedProvider):
    """The simulated provider, whose next answer can be lost: `lose = "after"` it took the money (the reply
    never came back), `"before"` it was never reached."""

    def __init__(self) -> None:
        super().__init__()
        self.lose: str | None = None

    async def charge(self, reference: str, account_id: str, invoice_id: str, amount_cents: int) -> str | None:
        lose, self.lose = self.lose, None
        if lose == "before":
            raise ConnectionRefusedError("the provider is out of reach")
        declined = await super().charge(reference, account_id, invoice_id, amount_cents)
        if lose == "after":
            raise ConnectionResetError("the provider's answer was lost")
        return declined

    async def find_charge(self, invoice_id: str) -> Charged | None:
        lose, self.lose = self.lose, None
        if lose is not None:
            raise ConnectionRefusedError("the provider is out of reach")
        return await super().find_charge(invoice_id)


BOUGHT_AT = datetime.fromisoformat("2027-03-10T10:00:00+00:00")


async def ada_with_a_card(platform: Platform) -> Customer:
    """Ada signed up at BOUGHT_AT (the service's time from then on), with a card that pays."""
    platform.set_clock(lambda: BOUGHT_AT)
    ada = await platform.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    return ada


def small_billing(settings: HeraldSettings, tmp_path: Path, provider: AnswerLost,
                  clock: Callable[[], datetime] | None = None) -> Any:
    plans = tmp_path / "plans.toml"
    plans.write_text(SMALL_PLANS)
    return running_billing(settings, payments=provider, clock=clock, HERALD_BILLING_PLANS_FILE=str(plans))


async def test_a_charge_whose_answer_was_lost_is_recorded_once_by_the_next_request(settings: HeraldSettings,
                                                                                  tmp_path: Path) -> None:
    """The provider took the money and its answer was lost: 503, the purchase stays open (recorded, nothing
    changed yet); the owner's next request settles it first, asking the provider again for the same invoice.
    One charge, one invoice, paid; the plan from the purchase's time. Both ways: a plan, then credits."""
    provider = AnswerLost()
    async with small_billing(settings, tmp_path, provider) as platform:
        ada = await ada_with_a_card(platform)
        provider.lose = "after"
        lost = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
        assert lost.status_code == 503 and lost.json()["type"].endswith("/payment_provider_unavailable")
        pending = await account(ada)
        assert (pending["plan"], pending["open_invoices"]) == ("trial", ["2027-000001"])
        platform.set_clock(lambda: BOUGHT_AT + timedelta(minutes=3))
        again = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
        assert again.status_code == 200, again.text
        assert (again.json()["plan"], again.json()["open_invoices"]) == ("monthly", [])
        # From the purchase's time: 12:00 in Riga, 09:00 UTC once summer time began (28 March).
        assert again.json()["monthly"]["paid_until"] == "2027-04-10T09:00:00+00:00"
        invoices = (await ada.http.get("/v1/account/invoices")).json()["items"]
        assert [(i["invoice_id"], i["status"]) for i in invoices] == [("2027-000001", "paid")]
        assert provider.charges == {"2027-000001": (ada.account_id, 1210, None)}

        bob = await platform.sign_up("bob")
        await pay_with(bob, "sim-card-ok")
        provider.lose = "after"
        assert (await bob.http.post("/v1/account/credits", json={"credits": 5})).status_code == 503
        paid = await bob.http.post("/v1/account/invoices/2027-000002/payment")
        assert paid.status_code == 200 and paid.json()["status"] == "paid", paid.text
        bobs = await eventually(lambda: account(bob), lambda a: a["plan"] == "pay_as_you_go", what="credits")
        assert (bobs["credits"]["left"], bobs["open_invoices"]) == (5, [])
        assert provider.charges["2027-000002"] == (bob.account_id, 605, None) and len(provider.charges) == 2
        events = await platform.events()
        assert sorted(e.payload.invoice_id for e in events if isinstance(e, PaymentSucceeded)) == [
            "2027-000001", "2027-000002"]
        assert sorted((e.account_id, e.payload.plan) for e in events if isinstance(e, PlanChanged)  # two partitions
                      and e.payload.plan != "trial") == sorted([(ada.account_id, "monthly"),
                                                                 (bob.account_id, "pay_as_you_go")])


async def test_a_purchase_recorded_before_a_stop_is_settled_by_the_plan_clock_after_the_restart(
        settings: HeraldSettings, tmp_path: Path) -> None:
    """The service stops between recording a purchase and charging it (the provider was never reached). After
    the restart, the plan clock finds it (`purchases` listing) and settles it: charged once, plan changed."""
    provider = AnswerLost()
    async with small_billing(settings, tmp_path, provider) as first:
        ada = await ada_with_a_card(first)
        provider.lose = "before"
        assert (await ada.http.put("/v1/account/plan", json={"subscribers": 5, "edition": "pro"})).status_code == 503
    assert provider.charges == {}
    async with small_billing(settings, tmp_path, provider) as second:
        second.set_clock(lambda: BOUGHT_AT + timedelta(minutes=10))
        ada = await second.log_in("ada", ada.account_id)
        await second.service.clock.tick()  # (or its round at the start did it already: nothing else settles it)
        settled = await account(ada)
        assert (settled["plan"], settled["monthly"]["subscriber_limit"], settled["monthly"]["edition"],
                settled["open_invoices"]) == ("monthly", 5, "pro", [])
        assert provider.charges == {"2027-000001": (ada.account_id, 7260, None)}
        recorded = len(await second.events())
        await second.service.clock.tick()  # settled: nothing more to do
        assert len(await second.events()) == recorded


async def test_a_purchase_left_open_is_never_charged_once_its_account_is_deleted(settings: HeraldSettings,
                                                                                  tmp_path: Path) -> None:
    """Purchases an outage left open, then their accounts deleted. Ada's provider was never reached: her
    deletion voids the purchase (`account_deleted`), never charged. Bob's provider took the money and lost its
    answer: his deletion records the payment (money taken is never without its record), charging nothing more.
    Carol's provider does not answer at her deletion either: the deletion goes through all the same, and the
    plan clock voids the purchase later, still charging nothing."""
    provider = AnswerLost()
    async with small_billing(settings, tmp_path, provider) as platform:
        platform.set_clock(lambda: BOUGHT_AT)
        customers = []
        for name, lose in (("ada", "before"), ("bob", "after"), ("carol", "before")):
            customers.append(customer := await platform.sign_up(name))
            await pay_with(customer, "sim-card-ok")
            provider.lose = lose
            refused = await customer.http.put("/v1/account/plan", json={"subscribers": 2})
            assert refused.status_code == 503, refused.text
        ada, bob, carol = customers
        assert provider.charges == {"2027-000002": (bob.account_id, 1210, None)}
        for customer in (ada, bob):
            assert (await customer.http.delete("/v1/account")).status_code == 204
        provider.lose = "before"  # at carol's deletion
        assert (await carol.http.delete("/v1/account")).status_code == 204
        store = platform.service.store
        invoices = {i: await store.invoice(c.account_id, i)
                    for c, i in ((ada, "2027-000001"), (bob, "2027-000002"), (carol, "2027-000003"))}
        assert {i: (d or {}).get("status") for i, d in invoices.items()} == {
            "2027-000001": "void", "2027-000002": "paid", "2027-000003": "open"}
        assert invoices["2027-000001"]["void_reason"] == "account_deleted"  # type: ignore[index]

        platform.set_clock(lambda: BOUGHT_AT + timedelta(hours=1))
        await platform.service.clock.tick()
        carols = await store.invoice(carol.account_id, "2027-000003")
        assert carols is not None and (carols["status"], carols["void_reason"]) == ("void", "account_deleted")
        assert await store.purchases_due(BOUGHT_AT + timedelta(days=1)) == []
        assert provider.charges == {"2027-000002": (bob.account_id, 1210, None)}  # nothing charged since
        events = await platform.events()
        assert sorted((e.payload.invoice_id, e.payload.reason) for e in events if isinstance(e, InvoiceVoided)) == [
            ("2027-000001", "account_deleted"), ("2027-000003", "account_deleted")]
        assert [e.payload.invoice_id for e in events if isinstance(e, PaymentSucceeded)] == ["2027-000002"]


async def test_a_fold_from_offset_0_counts_each_send_under_its_plan_and_announces_nothing_new(
        settings: HeraldSettings, tmp_path: Path) -> None:
    """The read model folded again from offset 0 (a new database, the consumer group rewound): herald.billing is
    read to its end first, so each send counts under the plan in force when it went out, even with the account's
    history behind 40,000 other billing records (more than a fetch takes of a partition: without `lead` the
    sends are read first and not counted); and nothing is decided until the fold has caught up, so no state on
    the way (the account blocked for its quota, its sends not counted yet) is announced (without the wait: an
    unblock that never happened)."""
    provider = AnswerLost()
    async with small_billing(settings, tmp_path, provider) as live:
        await live.publisher.publish_many([  # records of accounts billing never opened: folded as nothing
            PaymentMethodSet(account_id=f"filler-{n}", producer="billing",
                             payload={"provider": "simulated", "reference": "sim-card-ok"})  # type: ignore[arg-type]
            for n in range(40_000)])
        ada = await ada_with_a_card(live)
        assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
        await live.publisher.publish_many([sent(ada.account_id, n, BOUGHT_AT + timedelta(hours=1))
                                           for n in range(218)])
        before = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] == ["monthly_quota_reached"],
                                  what="ada's quota reached")
        announced = {e.event_id for e in await live.events()}
    # The projection's consumer group back to offset 0 of every topic it reads.
    group = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                             group_id=f"{settings.topic_prefix}billing.projection")
    await group.start()
    try:
        topics = [settings.topics(t) for t in ("herald.billing", "herald.subscriptions", "herald.delivery",
                                               "herald.campaigns", "herald.compliance")]
        everything = [TopicPartition(t, p) for t, ids in (await partition_ids(settings, topics)).items() for p in ids]
        group.assign(everything)
        await group.commit(dict.fromkeys(everything, 0))
    finally:
        await group.stop()
    fresh = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}again_"})
    async with small_billing(fresh, tmp_path, provider, clock=lambda: BOUGHT_AT + timedelta(hours=2)) as again:
        await asyncio.wait_for(again.service.projector.caught_up.wait(), 120)
        ada = await again.log_in("ada", ada.account_id)  # recorded and applied: the fold is past its catch-up
        after = await account(ada)
        assert after["usage"] == before["usage"] and after["usage"]["period_emails"] == 218
        assert (after["plan"], after["sending_blocked"]) == ("monthly", ["monthly_quota_reached"])
        new = [e for e in await again.events() if e.event_id not in announced]
        assert [e.type for e in new] == ["LoginSucceeded"], [(e.type, e.payload) for e in new]


class Clock:
    """The billing service's time, moved by the test."""

    def __init__(self, small: Platform, at: str) -> None:
        self.now = datetime.fromisoformat(at)
        small.set_clock(lambda: self.now)


async def renewal_declined(small: Platform, clock: Clock, card: str) -> tuple[Customer, dict[str, Any]]:
    """Ada on the tier of 2 from the clock's day; then her card (`card`) declines the renewal a month later,
    which blocks sending. Returns her, logged in again, and her account then."""
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    await pay_with(ada, card)
    clock.now = datetime.fromisoformat(plans_next_month(clock.now))
    await small.service.clock.tick()
    ada = await small.log_in("ada", ada.account_id)
    blocked = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] == ["payment_failed"],
                               what="blocked by the failed payment")
    return ada, blocked


def plans_next_month(moment: datetime) -> str:
    return moment.replace(month=moment.month % 12 + 1, year=moment.year + moment.month // 12).isoformat()


async def test_a_failed_renewal_blocks_sending_until_the_invoice_is_paid(small: Platform) -> None:
    clock = Clock(small, "2026-11-01T10:00:00+00:00")
    ada, blocked = await renewal_declined(small, clock, "sim-card-insufficient-funds")
    assert blocked["open_invoices"] == ["2026-000002"] and blocked["monthly"]["paid_until"].startswith("2026-12-01")
    # Retried once a day, not at every tick.
    await small.service.clock.tick()
    clock.now += timedelta(days=1)
    await small.service.clock.tick()
    failures = [e.payload.attempt for e in await small.events() if isinstance(e, PaymentFailed)]
    assert failures == [1, 2]
    ada = await small.log_in("ada", ada.account_id)
    await pay_with(ada, "sim-card-ok")
    paid = await ada.http.post("/v1/account/invoices/2026-000002/payment")
    assert paid.status_code == 200 and paid.json()["status"] == "paid" and paid.json()["attempts"] == 2
    after = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] == [], what="unblocked")
    assert after["monthly"]["paid_until"].startswith("2027-01-01") and after["open_invoices"] == []
    issued = [e.payload.invoice_id for e in await small.events() if isinstance(e, InvoiceIssued)]
    assert issued == ["2026-000001", "2026-000002"]  # one invoice for the period, however often it was tried


async def test_a_cancelled_plan_ends_with_its_paid_period_and_invoices_number_per_year(small: Platform) -> None:
    now = datetime.fromisoformat("2026-12-31T10:00:00+00:00")
    small.set_clock(lambda: now)
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    bob = await small.sign_up("bob", company="Bob Ltd")
    await pay_with(bob, "sim-card-ok")
    now = datetime.fromisoformat("2027-01-01T09:00:00+00:00")
    bob, ada = await small.log_in("bob", bob.account_id), await small.log_in("ada", ada.account_id)
    assert (await bob.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    cancelled = await ada.http.post("/v1/account/cancellation")
    assert cancelled.status_code == 200 and cancelled.json()["monthly"]["cancel_at"].startswith("2027-01-31")
    assert (await ada.http.post("/v1/account/cancellation")).status_code == 409
    now = datetime.fromisoformat("2027-01-31T10:00:00+00:00")
    await small.service.clock.tick()
    ada = await small.log_in("ada", ada.account_id)
    ended = await eventually(lambda: account(ada), lambda a: a["plan"] == "none", what="the plan ended")
    assert ended["sending_blocked"] == ["no_plan"] and ended["monthly"] is None
    numbers = sorted(e.payload.invoice_id for e in await small.events() if isinstance(e, InvoiceIssued))
    assert numbers == ["2026-000001", "2027-000001"]  # ada's plan was not renewed


async def test_pay_as_you_go_credits_are_spent_block_when_gone_and_expire(small: Platform) -> None:
    now = datetime.fromisoformat("2026-11-01T10:00:00+00:00")
    small.set_clock(lambda: now)
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    bought = await ada.http.post("/v1/account/credits", json={"credits": 5})
    assert bought.status_code == 200, bought.text
    assert bought.json()["plan"] == "pay_as_you_go" and bought.json()["credits"]["left"] == 5
    assert (await ada.http.post("/v1/account/credits", json={"credits": 7})).status_code == 422
    # Sent at the service's time: a credit is taken from a batch valid when the email was sent.
    await small.publisher.publish_many([sent(ada.account_id, n, at=now) for n in range(4)])
    await eventually(lambda: account(ada), lambda a: a["credits"]["left"] == 1, what="4 credits spent")
    assert (await account(ada))["sending_blocked"] == []
    await small.publisher.publish(sent(ada.account_id, 4, at=now))
    gone = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] != [], what="credits gone")
    assert gone["sending_blocked"] == ["credits_exhausted"] and gone["credits"]["left"] == 0
    now += timedelta(days=5)
    ada = await small.log_in("ada", ada.account_id)
    more = await ada.http.post("/v1/account/credits", json={"credits": 5})
    assert more.status_code == 200 and more.json()["credits"]["left"] == 5
    await eventually(lambda: account(ada), lambda a: a["sending_blocked"] == [], what="unblocked by more credits")
    await small.publisher.publish(sent(ada.account_id, 5, at=now))
    await eventually(lambda: account(ada), lambda a: a["credits"]["left"] == 4, what="the new batch spent from")
    now += timedelta(days=10)  # the second batch (bought on day 5) expires on day 15 with 4 unused
    await small.service.clock.tick()
    ada = await small.log_in("ada", ada.account_id)
    expired = await eventually(lambda: account(ada), lambda a: a["sending_blocked"] == ["credits_exhausted"],
                               what="blocked once the credits expired")
    assert [(b["credits"], b["used"], b["expired"]) for b in expired["credits"]["batches"]] == [(5, 5, 0), (5, 1, 4)]
    told = sorted((e.payload.batch_id, e.payload.credits_expired) for e in await small.events()
                  if isinstance(e, CreditsExpired))
    assert [n for _, n in told] == [0, 4]
    invoices = (await ada.http.get("/v1/account/invoices")).json()["items"]
    assert [(i["net_cents"], i["amount_cents"]) for i in invoices] == [(500, 605), (500, 605)]


async def test_emails_sent_after_a_batch_expired_come_from_the_next_batch_before_the_expiry_is_told(
        small: Platform) -> None:
    """PRODUCT.md: each batch of credits with an expiry date; every email sent consumes a credit. Emails sent
    after a batch expired, folded before its expiry was told (the guard decides seconds later, or after an
    outage), come from the batch valid when they were sent: the expired one keeps 4 unused, not 1; and a
    rebuild from the topics counts them the same."""
    now = datetime.fromisoformat("2026-11-01T10:00:00+00:00")  # the first batch expires on 11-11 at 10:00
    small.set_clock(lambda: now)
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.post("/v1/account/credits", json={"credits": 5})).status_code == 200
    await small.publisher.publish(sent(ada.account_id, 0, at=now + timedelta(days=1)))
    now += timedelta(days=4)
    ada = await small.log_in("ada", ada.account_id)
    assert (await ada.http.post("/v1/account/credits", json={"credits": 5})).status_code == 200
    await eventually(lambda: account(ada), lambda a: a["credits"]["left"] == 9, what="one credit spent")
    now = datetime.fromisoformat("2026-11-11T10:00:30+00:00")  # 3 emails went out 5 s after the expiry
    await small.publisher.publish_many([sent(ada.account_id, n, at=now - timedelta(seconds=25)) for n in (1, 2, 3)])
    ada = await small.log_in("ada", ada.account_id)
    after = await eventually(lambda: account(ada), lambda a: a["credits"]["batches"][0]["expired"] is not None,
                             what="the first batch's expiry told by the guard")
    assert [(b["credits"], b["used"], b["expired"]) for b in after["credits"]["batches"]] == [(5, 1, 4), (5, 3, None)]
    assert after["credits"]["left"] == 2
    told = {(e.event_id, e.payload.credits_expired) for e in await small.events() if isinstance(e, CreditsExpired)}
    assert [n for _, n in told] == [4]  # once (a decision taken twice is the same event)
    live = small.service.projection
    rebuilt = BillingProjection(small.service.mongo[small.service.settings.database_name("billing_rebuilt")])
    await rebuild(rebuilt, small.service.settings, ["herald.billing", "herald.subscriptions", "herald.delivery"],
                  lead=["herald.billing"])
    for name in ("accounts", "usage"):
        assert [d async for d in rebuilt.db[name].find({}).sort("_id", 1)] == \
            [d async for d in live.db[name].find({}).sort("_id", 1)], name


async def test_a_plan_cancelled_while_its_renewal_is_declined_never_charges_that_renewal(small: Platform) -> None:
    """The renewal of 2026-12-02 is declined (sending blocked); the owner cancels, so the agreement ends at the
    end of the paid period, where the renewal's period begins: that invoice is void, never charged, and the
    block lifts (nothing declined is left to pay). A new plan bought later then upgrades freely and is the
    only thing renewed."""
    clock = Clock(small, "2026-11-02T10:00:00+00:00")
    ada, blocked = await renewal_declined(small, clock, "sim-card-declined")
    (renewal,) = blocked["open_invoices"]
    cancelled = await ada.http.post("/v1/account/cancellation")
    assert cancelled.status_code == 200 and cancelled.json()["open_invoices"] == [], cancelled.text
    assert "payment_failed" not in cancelled.json()["sending_blocked"]
    clock.now = datetime.fromisoformat("2026-12-02T10:01:00+00:00")
    await small.service.clock.tick()
    ada = await small.log_in("ada", ada.account_id)
    ended = await eventually(lambda: account(ada), lambda a: a["plan"] == "none", what="the plan ended")
    assert ended["sending_blocked"] == ["no_plan"]
    invoices = {i["invoice_id"]: i["status"] for i in (await ada.http.get("/v1/account/invoices")).json()["items"]}
    assert invoices[renewal] == "void"

    await pay_with(ada, "sim-card-ok")
    again = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
    assert again.status_code == 200 and again.json()["sending_blocked"] == [], again.text
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 5})).status_code == 200  # not "pending"
    clock.now = datetime.fromisoformat("2027-01-02T10:02:00+00:00")
    await small.service.clock.tick()
    ada = await small.log_in("ada", ada.account_id)
    await eventually(lambda: account(ada), lambda a: a["open_invoices"] == [], what="the new plan renewed")
    events = await small.events()
    assert not [e for e in events if isinstance(e, PaymentSucceeded) and e.payload.invoice_id == renewal]
    assert [e.payload.invoice_id for e in events if isinstance(e, InvoiceVoided)] == [renewal]


async def test_staff_recording_a_timely_request_after_its_renewal_was_paid_is_refused_with_the_refund(
        small: Platform) -> None:
    """PRODUCT.md: cancellation takes effect at the end of the paid period when it arrives 2 business days before
    the next payment. A letter received on 11-20, recorded on 12-03 after the 12-01 renewal was charged: 409
    `cancellation_needs_refund`, naming the invoice and the date, and nothing recorded (not a whole period more)."""
    clock = Clock(small, "2026-11-01T10:00:00+00:00")
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    clock.now = datetime.fromisoformat("2026-12-01T10:00:30+00:00")
    await small.service.clock.tick()
    ada = await small.log_in("ada", ada.account_id)
    await eventually(lambda: account(ada), lambda a: a["monthly"]["paid_until"] == "2027-01-01T10:00:00+00:00",
                     what="the 12-01 renewal paid")
    clock.now = datetime.fromisoformat("2026-12-03T10:00:00+00:00")
    async with small.staff() as staff:
        refused = await staff.post(f"/v1/staff/accounts/{ada.account_id}/cancellation",
                                   json={"received_at": "2026-11-20T09:00:00Z"})
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/cancellation_needs_refund") and "2026-12-01T10:00:00+00:00" in problem["detail"]
    assert [e["location"] for e in problem["errors"]] == ["body.received_at", "invoices.2026-000002"]
    ada = await small.log_in("ada", ada.account_id)
    assert (await account(ada))["monthly"]["cancel_at"] is None
    assert "cancellation_needs_refund" in (await small.http.get("/openapi.json")).text


async def test_staff_recording_a_timely_request_while_its_renewal_is_unpaid_voids_it(small: Platform) -> None:
    """The 12-01 renewal was declined and is open: the request received on 11-20 ends the plan on 12-01 and the
    renewal is void (agreement_ended), never charged."""
    clock = Clock(small, "2026-11-01T10:00:00+00:00")
    ada, blocked = await renewal_declined(small, clock, "sim-card-declined")
    (renewal,) = blocked["open_invoices"]
    clock.now = datetime.fromisoformat("2026-12-03T10:00:00+00:00")
    async with small.staff() as staff:
        for no_time_in_utc in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:00-01:00"):  # 422, never a 500
            refused = await staff.post(f"/v1/staff/accounts/{ada.account_id}/cancellation",
                                       json={"received_at": no_time_in_utc})
            assert refused.status_code == 422 and "no time in UTC" in refused.text, refused.text
        cancelled = await staff.post(f"/v1/staff/accounts/{ada.account_id}/cancellation",
                                     json={"received_at": "2026-11-20T09:00:00Z"})
    assert cancelled.status_code == 200, cancelled.text
    # 12-01 is past: the plan ended with the request's recording (no_plan blocked before payment_failed lifted).
    body = cancelled.json()
    assert (body["plan"], body["sending_blocked"], body["open_invoices"]) == ("none", ["no_plan"], [])
    ended = [e.payload.effective_at for e in await small.events() if isinstance(e, PlanChanged)
             and e.payload.plan == "none"]
    assert ended == [datetime.fromisoformat("2026-12-01T10:00:00+00:00")]
    ada = await small.log_in("ada", ada.account_id)
    invoice = (await ada.http.get(f"/v1/account/invoices/{renewal}")).json()
    assert (invoice["status"], invoice["void_reason"]) == ("void", "agreement_ended")


async def test_an_email_the_receiving_server_refused_counts_as_sent_on_every_plan(small: Platform) -> None:
    """PRODUCT.md: "every email sent consumes a credit, even if the receiving server blocks it": a campaign email
    refused when sent (MessageBounced smtp_reply, no MessageSent) counts as one sent on the trial, for credits and
    toward the monthly cap, once however often it comes; a later report on an email sent (dsn: its MessageSent
    counted it) and an email given up after retrying do not, nor a test send on a paid plan (on the trial it
    counts toward the 100 emails)."""
    clock = Clock(small, "2026-11-01T10:00:00+00:00")
    ada = await small.sign_up("ada")
    a = ada.account_id

    def not_sent(n: int) -> list[MessageBounced]:
        return [bounced(a, 0, clock.now, "dsn"), bounced(a, n, clock.now, "retry_expired"),
                bounced(a, n + 1, clock.now, kind="test")]

    clock.now += timedelta(minutes=1)
    refused = [bounced(a, n, clock.now) for n in range(100, 103)]
    await small.publisher.publish_many([sent(a, 0, clock.now), *refused, *refused[:2], *not_sent(900),
                                        sent(a, 1, clock.now)])
    await eventually(lambda: account(ada), lambda x: x["usage"]["trial_emails"] == 6, what="6 trial emails")

    clock.now += timedelta(minutes=1)
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.post("/v1/account/credits", json={"credits": 5})).status_code == 200
    refused = [bounced(a, n, clock.now) for n in range(200, 202)]
    await small.publisher.publish_many([*refused, *refused, *not_sent(910), sent(a, 2, clock.now)])
    await eventually(lambda: account(ada), lambda x: x["credits"]["left"] == 2, what="3 credits spent")
    await small.publisher.publish_many([bounced(a, n, clock.now) for n in range(202, 204)])
    gone = await eventually(lambda: account(ada), lambda x: x["sending_blocked"] != [], what="credits gone")
    assert gone["sending_blocked"] == ["credits_exhausted"] and gone["credits"]["left"] == 0

    clock.now += timedelta(minutes=1)
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200  # 218 a period
    refused = [bounced(a, n, clock.now) for n in range(300, 417)]
    await small.publisher.publish_many([*(sent(a, n, clock.now) for n in range(3, 103)), *refused, *refused[:10],
                                        *not_sent(920)])
    await eventually(lambda: account(ada), lambda x: x["usage"]["period_emails"] == 217, what="217 counted")
    assert (await account(ada))["sending_blocked"] == []
    await small.publisher.publish(bounced(a, 417, clock.now))
    blocked = await eventually(lambda: account(ada), lambda x: x["sending_blocked"] != [], what="the monthly cap")
    assert blocked["sending_blocked"] == ["monthly_quota_reached"] and blocked["usage"]["period_emails"] == 218
    exhausted = [(e.payload.quota, e.payload.used) for e in await small.events() if isinstance(e, QuotaExhausted)]
    assert exhausted == [("credits", 5), ("monthly_emails", 218)]


async def test_a_void_invoice_is_never_paid(small: Platform) -> None:
    """A declined purchase's invoice is void: paying it is refused (409 invoice_void, as the API documents),
    and it stays void, never charged."""
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-declined")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 402
    (void,) = (await ada.http.get("/v1/account/invoices")).json()["items"]
    assert (void["status"], void["void_reason"]) == ("void", "payment_declined")
    await pay_with(ada, "sim-card-ok")
    paying = await ada.http.post(f"/v1/account/invoices/{void['invoice_id']}/payment")
    assert paying.status_code == 409, paying.text
    assert paying.json()["type"] == "https://herald.dev/problems/invoice_void"
    assert (await ada.http.get(f"/v1/account/invoices/{void['invoice_id']}")).json()["status"] == "void"
    assert not [e for e in await small.events() if isinstance(e, PaymentSucceeded)]
    route = small.service.app.openapi()["paths"]["/v1/account/invoices/{invoice_id}/payment"]["post"]
    assert "409" in route["responses"] and "invoice_void" in route["description"]


async def test_cancelling_while_the_renewal_is_declined_ends_the_plan_before_the_payment_block_lifts(
        small: Platform) -> None:
    """The 12-02 renewal is declined (payment_failed); on 12-05 the owner cancels: the plan ends at the end of the
    paid period, 12-02, already past. It ends in the same commit, no_plan blocked before payment_failed is lifted:
    lifting it first left sending open until the clock's next round (up to 30 s), when delivery could release held
    mail of an account with no plan and nothing paid."""
    clock = Clock(small, "2026-11-02T10:00:00+00:00")
    ada, _ = await renewal_declined(small, clock, "sim-card-declined")
    clock.now = datetime.fromisoformat("2026-12-05T12:00:00+00:00")
    ada = await small.log_in("ada", ada.account_id)
    cancelled = await ada.http.post("/v1/account/cancellation")
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["plan"], body["sending_blocked"], body["open_invoices"]) == ("none", ["no_plan"], [])
    blocks: set[str] = set()
    for event in [e for e in await small.events() if e.account_id == ada.account_id]:  # as delivery reads them
        if isinstance(event, SendingBlocked):
            blocks.add(event.payload.reason)
        elif isinstance(event, SendingUnblocked):
            blocks.discard(event.payload.reason)
            assert blocks, f"sending open after {event.payload.reason} was lifted"
    assert blocks == {"no_plan"}
    ends = [e.payload.effective_at for e in await small.events() if isinstance(e, PlanChanged) and
            e.payload.plan == "none"]
    assert ends == [datetime.fromisoformat("2026-12-02T10:00:00+00:00")]
    await small.service.clock.tick()  # nothing left for the clock: the plan ended once
    assert len([e for e in await small.events() if isinstance(e, PlanChanged) and e.payload.plan == "none"]) == 1


async def test_a_higher_limit_is_a_raise_from_pro_to_standard_and_pro_stays_at_the_same_limit(
        small: Platform) -> None:
    """PRODUCT.md: "the tier can be raised at any time and never lowered": the tier is the subscriber limit. PRO 2
    (20.00) to standard 5 (40.00) raises it, charged the difference; PRO 5 back to standard 5 raises nothing and
    is refused (409 edition_cannot_be_lowered)."""
    small.set_clock(lambda: datetime.fromisoformat("2027-01-05T10:00:00+00:00"))
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2, "edition": "pro"})).status_code == 200
    raised = await ada.http.put("/v1/account/plan", json={"subscribers": 5, "edition": "standard"})
    assert raised.status_code == 200, raised.text
    assert (raised.json()["monthly"]["subscriber_limit"], raised.json()["monthly"]["edition"]) == (5, "standard")
    upgrade = (await ada.http.get("/v1/account/invoices")).json()["items"][-1]
    assert (upgrade["net_cents"], upgrade["amount_cents"]) == (2000, 2420)  # the whole period is left
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 5, "edition": "pro"})).status_code == 200
    back = await ada.http.put("/v1/account/plan", json={"subscribers": 5, "edition": "standard"})
    assert back.status_code == 409 and back.json()["type"].endswith("/edition_cannot_be_lowered"), back.text
    lower = await ada.http.put("/v1/account/plan", json={"subscribers": 2, "edition": "pro"})
    assert lower.status_code == 409 and lower.json()["type"].endswith("/tier_cannot_be_lowered")


async def test_test_sends_are_not_counted_on_a_monthly_plan(small: Platform) -> None:
    """The trial counts test sends toward its 100 emails (test_trial); a paid plan's cap counts campaign emails."""
    now = datetime.fromisoformat("2027-01-05T10:00:00+00:00")
    small.set_clock(lambda: now)
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    tests = [MessageSent(account_id=ada.account_id, producer="delivery", occurred_at=now, payload={  # type: ignore[arg-type]
        "message_id": f"t{n}", "kind": "test", "recipient_domain": "example.com", "smtp_code": 250})
        for n in range(3)]
    await small.publisher.publish_many([*tests, sent(ada.account_id, 1, now)])
    counted = await eventually(lambda: account(ada), lambda a: a["usage"]["period_emails"] >= 1, what="counted")
    assert (counted["usage"]["period_emails"], counted["usage"]["trial_emails"]) == (1, 0)


@pytest.mark.parametrize(("zone", "billing_day", "paid_until", "dates", "period_emails"), [
    ("Europe/Riga", 1, "2027-03-31T21:30:00+00:00", "2027-03-01 to 2027-04-01", 2),
    ("UTC", 28, "2027-03-28T22:30:00+00:00", "2027-02-28 to 2027-03-28", 1)])
async def test_the_billing_day_and_periods_are_taken_in_the_platforms_time_zone(
        settings: HeraldSettings, tmp_path: Path, zone: str, billing_day: int, paid_until: str, dates: str,
        period_emails: int) -> None:
    """PRODUCT.md: the billing date is the day of the month of the first payment. Paid at 00:30 on 1 March in
    Riga (22:30 on 28 February in UTC), it is the 1st in Europe/Riga (HERALD_BILLING_TIME_ZONE's default), and
    the period, the send cap's count and the invoice's dates follow; times are kept in UTC."""
    plans = tmp_path / "plans.toml"
    plans.write_text(SMALL_PLANS)
    now = datetime.fromisoformat("2027-02-28T22:30:00+00:00")
    overrides = {"HERALD_BILLING_TIME_ZONE": zone} if zone != "Europe/Riga" else {}  # the default
    async with running_billing(settings, clock=lambda: now, HERALD_BILLING_PLANS_FILE=str(plans),
                               **overrides) as platform:
        ada = await platform.sign_up("ada")
        await pay_with(ada, "sim-card-ok")
        chosen = await ada.http.put("/v1/account/plan", json={"subscribers": 2})
        assert chosen.status_code == 200, chosen.text
        assert (chosen.json()["monthly"]["billing_day"], chosen.json()["monthly"]["paid_until"]) == (
            billing_day, paid_until)
        (invoice,) = (await ada.http.get("/v1/account/invoices")).json()["items"]
        assert invoice["lines"][0]["description"].endswith(dates) and invoice["period_end"] == paid_until
        assert f"Period: {dates}" in (await ada.http.get(f"/v1/account/invoices/{invoice['invoice_id']}/document")).text
        # Noon on 28 March (UTC) is in Riga's first period, and before the second period in UTC; 29 March is in
        # the current period in both.
        await platform.publisher.publish_many([sent(ada.account_id, 1, datetime.fromisoformat("2027-03-28T12:00Z")),
                                               sent(ada.account_id, 2, datetime.fromisoformat("2027-03-29T09:00Z"))])
        now = datetime.fromisoformat("2027-03-29T10:00:00+00:00")
        ada = await platform.log_in("ada", ada.account_id)
        await eventually(lambda: account(ada), lambda a: a["usage"]["period_emails"] == period_emails,
                         what="the sends counted in their periods")


async def test_two_business_days_leave_out_latvian_public_holidays(small: Platform) -> None:
    """The terms are Latvian ("divu darba dienu"): a request received on Tuesday 2025-12-23 for the payment on
    Friday 2025-12-26 leaves one business day, the 23rd itself (24 and 25 December are public holidays; a Monday
    request would have been in time): too late, it takes effect a period later."""
    clock = Clock(small, "2025-11-26T10:00:00+00:00")
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    clock.now = datetime.fromisoformat("2025-12-23T15:00:00+00:00")
    async with small.staff() as staff:
        cancelled = await staff.post(f"/v1/staff/accounts/{ada.account_id}/cancellation",
                                     json={"received_at": "2025-12-23T09:00:00Z"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["monthly"]["cancel_at"] == "2026-01-26T10:00:00+00:00"


async def test_invoices_are_numbered_in_the_year_they_are_dated_in(small: Platform) -> None:
    """An invoice issued at 00:30 on 1 January in Riga (22:30 UTC the day before) is dated 2027-01-01 and numbered
    in 2027's series; it went into 2026's while the year was taken from UTC (review, 2026-12-07)."""
    now = datetime.fromisoformat("2026-12-31T21:30:00+00:00")  # 23:30 in Riga: still 2026
    small.set_clock(lambda: now)
    ada = await small.sign_up("ada")
    await pay_with(ada, "sim-card-declined")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 402
    now = datetime.fromisoformat("2026-12-31T22:30:00+00:00")  # 00:30 on 1 January in Riga
    ada = await small.log_in("ada", ada.account_id)
    await pay_with(ada, "sim-card-ok")
    assert (await ada.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    invoices = (await ada.http.get("/v1/account/invoices")).json()["items"]
    assert [(i["invoice_id"], i["status"]) for i in invoices] == [("2026-000001", "void"), ("2027-000001", "paid")]
    page = await ada.http.get("/v1/account/invoices/2027-000001/document")
    assert page.status_code == 200 and "2027-01-01" in page.text


async def test_sends_dated_by_a_clock_behind_billings_just_before_a_purchase_count_under_it(small: Platform) -> None:
    """PRODUCT.md: every email sent consumes a credit; emails sent in a month may not exceed 109 x the tier's
    limit. Delivery sends once it read the purchase; with its clock a minute behind billing's, its sends are dated
    before the plan began, and they count under it up to domain.CLOCK_SKEW (5 min) before; earlier, not."""
    bought_at = datetime.fromisoformat("2026-12-05T10:00:00+00:00")
    now = bought_at - timedelta(days=31)
    small.set_clock(lambda: now)
    ada, bob = await small.sign_up("ada"), await small.sign_up("bob", company="Bob Ltd")
    now += timedelta(days=30)
    await small.service.clock.tick()
    now = bought_at
    ada, bob = await small.log_in("ada", ada.account_id), await small.log_in("bob", bob.account_id)
    for customer in (ada, bob):
        await eventually(lambda c=customer: account(c), lambda a: a["plan"] == "trial_ended",
                         what="the trial ended")
    await pay_with(ada, "sim-card-ok")
    await pay_with(bob, "sim-card-ok")
    assert (await ada.http.post("/v1/account/credits", json={"credits": 5})).status_code == 200
    assert (await bob.http.put("/v1/account/plan", json={"subscribers": 2})).status_code == 200
    edge = bought_at - timedelta(minutes=5)
    for customer in (ada, bob):
        beyond = [sent(customer.account_id, n, at=edge - timedelta(milliseconds=1)) for n in range(2)]
        await small.publisher.publish_many([*beyond, sent(customer.account_id, 2, at=edge)])
    store = small.service.service.store
    for customer in (ada, bob):
        await eventually(lambda c=customer: store.usage(c.account_id), lambda u: sum(u.lifetime_sent.values()) == 3,
                         what="the 3 sends folded")
    assert (await account(ada))["credits"]["left"] == 4
    assert (await account(bob))["usage"]["period_emails"] == 1
    late = bought_at - timedelta(seconds=60)
    for customer in (ada, bob):
        await small.publisher.publish_many([sent(customer.account_id, n, at=late) for n in range(3, 303)])
    await eventually(lambda: account(ada), lambda a: a["credits"]["left"] == 0
                     and a["sending_blocked"] == ["credits_exhausted"],
                     what="the credits spent by sends dated before the purchase")
    await eventually(lambda: account(bob), lambda a: a["usage"]["period_emails"] == 301
                     and a["sending_blocked"] == ["monthly_quota_reached"],
                     what="the sends dated before the plan counted in its first period, and its cap reached")
