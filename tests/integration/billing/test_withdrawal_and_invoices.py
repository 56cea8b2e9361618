"""On the real stack: a cancellation withdrawn before it takes effect (the plan renewed as if never cancelled, or
refused once its time came), and invoices that name the seller and the customer with the VAT the customer's billing
details call for (PRODUCT.md, "Plans and billing"; Council Directive 2006/112/EC, art. 226)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from herald_billing.api import invoice_out
from herald_billing.store import BillingProjection, BillingStore
from herald_billing.vat import Party
from herald_shared.contract.billing import CancellationWithdrawn, InvoiceIssued
from herald_shared.mongo import rebuild
from herald_shared.settings import HeraldSettings

from .helpers import Platform, account, on_a_monthly_plan, running_billing

SELLER = {"HERALD_BILLING_SELLER_NAME": "Herald SIA", "HERALD_BILLING_SELLER_ADDRESS": "Brīvības iela 1, Rīga, LV-1010",
          "HERALD_BILLING_SELLER_VAT_NUMBER": "LV40003000001"}
GERMAN_BUSINESS = {"legal_name": "Acme GmbH", "address": ["Hauptstraße 1", "10115 Berlin"], "country": "DE",
                   "vat_number": "DE 123 456 789"}


@pytest.fixture
async def selling(settings: HeraldSettings) -> AsyncIterator[Platform]:
    async with running_billing(settings, **SELLER) as running:
        yield running


def problem_type(response: Any) -> str:
    return str(response.json()["type"]).rsplit("/", 1)[-1]


async def test_a_withdrawn_cancellation_keeps_the_plan_renewed_and_one_past_its_time_is_refused(
        selling: Platform) -> None:
    now = datetime.fromisoformat("2026-11-02T10:00:00+00:00")
    selling.set_clock(lambda: now)
    ada = await on_a_monthly_plan(selling, "ada")
    added = await ada.http.post("/v1/account/users", json={"username": "bob", "password": "another long one",
                                                           "role": "member"})
    assert added.status_code == 201, added.text
    bob = await selling.log_in("bob", ada.account_id, "another long one")
    nothing = await ada.http.post("/v1/account/cancellation/withdrawal")
    assert nothing.status_code == 409 and problem_type(nothing) == "no_pending_cancellation"
    assert (await ada.http.post("/v1/account/cancellation")).status_code == 200
    assert (await account(ada))["monthly"]["cancel_at"] == "2026-12-02T10:00:00+00:00"
    # Choosing the plan again, or raising it, does not keep it: refused, naming the withdrawal.
    for subscribers in (500, 1000):
        refused = await ada.http.put("/v1/account/plan", json={"subscribers": subscribers})
        assert refused.status_code == 409 and problem_type(refused) == "cancellation_pending", refused.text
        assert "/v1/account/cancellation/withdrawal" in refused.json()["detail"]
    by_member = await bob.http.post("/v1/account/cancellation/withdrawal")
    assert by_member.status_code == 403 and problem_type(by_member) == "owners_only"
    withdrawn = await ada.http.post("/v1/account/cancellation/withdrawal")
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["monthly"]["cancel_at"] is None and withdrawn.json()["plan"] == "monthly"
    # Cancelled again, and withdrawn by staff on the customer's email.
    assert (await ada.http.post("/v1/account/cancellation")).status_code == 200
    async with selling.staff() as staff:
        future = await staff.post(f"/v1/staff/accounts/{ada.account_id}/cancellation/withdrawal",
                                  json={"received_at": "2026-11-03T10:00:00Z"})
        assert future.status_code == 422 and problem_type(future) == "received_in_the_future"
        recorded = await staff.post(f"/v1/staff/accounts/{ada.account_id}/cancellation/withdrawal",
                                    json={"received_at": "2026-11-02T08:00:00Z"})
        assert recorded.status_code == 200 and recorded.json()["monthly"]["cancel_at"] is None, recorded.text
    log = (await ada.http.get("/v1/account/audit-log")).json()["items"]
    # (In time order on the log; sorted here: the test's frozen clock gives several entries one time.)
    assert sorted((e["what"], e["username"] or "", e["staff"] or "") for e in log if e["kind"] == "cancellation") == [
        ("requested", "ada", ""), ("requested", "ada", ""), ("withdrawn", "", "rita"), ("withdrawn", "ada", "")]
    assert ("staff_access", "withdraw_cancellation", "rita") in [(e["kind"], e["what"], e["staff"]) for e in log]
    withdrawals = [e for e in await selling.events() if isinstance(e, CancellationWithdrawn)]
    assert [(e.payload.channel, e.payload.withdrawn_by, e.payload.cancel_at.isoformat()) for e in withdrawals] == [
        ("self_service", "ada", "2026-12-02T10:00:00+00:00"), ("request", "rita", "2026-12-02T10:00:00+00:00")]
    # The end of the paid period renews the plan as if never cancelled.
    now = datetime.fromisoformat("2026-12-02T10:00:00+00:00")
    await selling.service.clock.tick()
    ada = await selling.log_in("ada", ada.account_id)
    renewed = await account(ada)
    assert (renewed["plan"], renewed["monthly"]["paid_until"]) == ("monthly", "2027-01-02T10:00:00+00:00")
    # Cancelled again; its time comes before the clock's next round: the plan is over, not kept.
    assert (await ada.http.post("/v1/account/cancellation")).status_code == 200
    now = datetime.fromisoformat("2027-01-02T10:00:00+00:00")
    ada = await selling.log_in("ada", ada.account_id)
    late = await ada.http.post("/v1/account/cancellation/withdrawal")
    assert late.status_code == 409 and problem_type(late) == "cancellation_took_effect", late.text
    assert "PUT /v1/account/plan" in late.json()["detail"]
    ended = await account(ada)
    assert (ended["plan"], ended["sending_blocked"]) == ("none", ["no_plan"])
    again = await ada.http.put("/v1/account/plan", json={"subscribers": 500})
    assert again.status_code == 200 and again.json()["monthly"]["billing_day"] == 2, again.text
    issued = [e.payload.invoice_id for e in await selling.events() if isinstance(e, InvoiceIssued)]
    assert issued == ["2026-000001", "2026-000002", "2027-000001"]  # the cancelled period was never invoiced


async def test_an_invoice_issued_after_billing_details_were_set_names_both_parties_and_its_vat(
        selling: Platform) -> None:
    now = datetime.fromisoformat("2026-11-02T10:00:00+00:00")
    selling.set_clock(lambda: now)
    ada = await selling.sign_up("ada")
    await ada.http.put("/v1/account/payment-method", json={"provider": "simulated", "reference": "sim-card-ok"})
    before = await ada.http.put("/v1/account/plan", json={"subscribers": 500})
    assert before.status_code == 200 and before.json()["billing_details"] is None
    wrong = await ada.http.put("/v1/account/billing-details", json={**GERMAN_BUSINESS, "vat_number": "LV40003000002"})
    assert wrong.status_code == 422 and problem_type(wrong) == "billing_details_invalid", wrong.text
    assert [e["location"] for e in wrong.json()["errors"]] == ["body.vat_number"]
    given = await ada.http.put("/v1/account/billing-details", json=GERMAN_BUSINESS)
    assert given.status_code == 200, given.text
    assert given.json()["billing_details"] == {"legal_name": "Acme GmbH", "address": ["Hauptstraße 1", "10115 Berlin"],
                                               "country": "DE", "vat_number": "DE123456789"}
    assert (await account(ada))["billing_details"] == given.json()["billing_details"]
    now += timedelta(days=10)
    ada = await selling.log_in("ada", ada.account_id)
    raised = await ada.http.put("/v1/account/plan", json={"subscribers": 1000})
    assert raised.status_code == 200, raised.text
    first, upgrade = (await ada.http.get("/v1/account/invoices")).json()["items"]
    # Issued before the details: Latvian VAT, no customer; the seller named all the same.
    assert (first["vat_treatment"], first["vat_percent"], first["customer"]) == ("domestic", "21", None)
    assert first["seller"] == {"name": "Herald SIA", "address": ["Brīvības iela 1, Rīga, LV-1010"], "country": "LV",
                               "vat_number": "LV40003000001"}
    assert (upgrade["vat_treatment"], upgrade["vat_percent"], upgrade["vat_cents"]) == ("reverse_charge", "0", 0)
    assert upgrade["amount_cents"] == upgrade["net_cents"] > 0
    assert upgrade["customer"]["vat_number"] == "DE123456789" and upgrade["vat_note"].startswith("Reverse charge")
    page = (await ada.http.get(f"/v1/account/invoices/{upgrade['invoice_id']}/document")).text
    for shown in ("Herald SIA", "VAT number LV40003000001", "Acme GmbH", "Hauptstraße 1<br>10115 Berlin<br>DE",
                  "VAT number DE123456789", "Reverse charge: VAT to be accounted for by the customer"):
        assert shown in page, shown
    log = (await ada.http.get("/v1/account/audit-log")).json()["items"]
    assert [(e["kind"], e["username"]) for e in log if e["kind"] == "billing_details"] == [("billing_details", "ada")]
    # Folded again from offset 0: the same details, and each invoice as it was issued.
    settings = selling.service.settings
    rebuilt = selling.service.mongo[settings.database_name("billing_rebuilt")]
    await rebuild(BillingProjection(rebuilt), settings, ["herald.billing"])
    again = await BillingStore(rebuilt).account(ada.account_id)
    assert again is not None and again.billing_details == Party("Acme GmbH", ("Hauptstraße 1", "10115 Berlin"), "DE",
                                                                "DE123456789")
    assert [invoice_out(d) for d in await BillingStore(rebuilt).invoices(ada.account_id, None, 10)] == [first, upgrade]
