"""A purged account's invoices outlive its purge for the period accounting law sets (GDPR art. 17(3)(b); Latvia's
accounting law: 5 years, counted from the end of the invoice's calendar year), as issued and with nothing else of
the account, readable by staff (each look audited) and deleted by the retention clock once that period is over."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .helpers import Platform, on_a_monthly_plan, running_billing

SELLER = {"HERALD_BILLING_SELLER_NAME": "Herald SIA", "HERALD_BILLING_SELLER_ADDRESS": "Brīvības iela 1, Rīga, LV-1010",
          "HERALD_BILLING_SELLER_VAT_NUMBER": "LV40003000001"}
GERMAN_BUSINESS = {"legal_name": "Acme GmbH", "address": ["Hauptstraße 1", "10115 Berlin"], "country": "DE",
                   "vat_number": "DE 123 456 789"}
# 1 January 2032 in Riga (UTC+2 in winter): five whole years after 2026.
END_OF_2026_INVOICES = "2031-12-31T22:00:00+00:00"


async def documents(db: Any) -> list[tuple[str, Any]]:
    found = []
    for name in sorted(await db.list_collection_names()):
        found += [(name, doc) async for doc in db[name].find({})]
    return found


async def everything(platform: Platform) -> str:
    return "\n".join(f"{name}: {doc!r}" for name, doc in await documents(platform.service.db))


async def traces(platform: Platform, account_id: str) -> list[str]:
    """Documents naming the account, but its tombstone."""
    return [f"{name}: {doc!r}" for name, doc in await documents(platform.service.db)
            if account_id in repr(doc) and name != "purged_accounts"]


async def staff_looks(platform: Platform) -> list[tuple[str, str | None, str | None]]:
    answer = await platform.staff().get("/v1/staff/platform-audit-log", params={"limit": 200})
    assert answer.status_code == 200, answer.text
    return [(e["staff"], e["what"], e["invoice_id"]) for e in answer.json()["items"] if e["kind"] == "staff_access"]


async def test_a_purged_accounts_invoices_are_kept_as_issued_until_five_years_after_their_year(
        settings: HeraldSettings) -> None:
    now = datetime.fromisoformat("2026-08-03T10:00:00+00:00")
    async with running_billing(settings, clock=lambda: now, **SELLER) as platform:
        ada = await platform.sign_up("ada", company="Acme Ltd")
        assert (await ada.http.put("/v1/account/billing-details", json=GERMAN_BUSINESS)).status_code == 200
        assert (await ada.http.put("/v1/account/payment-method", json={"provider": "simulated",
                                                                       "reference": "sim-card-ok"})).status_code == 204
        assert (await ada.http.put("/v1/account/plan", json={"subscribers": 500})).status_code == 200
        bob = await on_a_monthly_plan(platform, "bob", "Bob Ltd")
        [issued] = (await ada.http.get("/v1/account/invoices")).json()["items"]
        assert issued["invoice_id"] == "2026-000001"
        assert (await ada.http.delete("/v1/account")).status_code == 204

        now = datetime.fromisoformat("2026-11-03T11:00:00+00:00")  # 3 months on Riga's wall clock (DST ended)
        assert await platform.service.service.purge_due() == 1
        await eventually(lambda: traces(platform, ada.account_id), lambda found: found == [],
                         what="the account purged")
        text = await everything(platform)
        for trace in ("'ada'", "ada@acme.example", "Acme Ltd"):
            assert trace not in text, trace
        # Kept: the invoice as issued and its status, nothing of the account's users, payments or audit.
        [stored] = [doc async for doc in platform.service.db["kept_invoices"].find({})]
        assert set(stored) == {"_id", "invoice_id", "issued_at", "status", "paid_at", "kind", "amount_cents",
                               "currency", "period_start", "period_end", "due_at", "lines", "net_cents",
                               "vat_cents", "vat_percent", "purchase", "seller", "customer", "vat_treatment",
                               "vat_note", "kept_until"}

        staff = platform.staff()
        kept = await staff.get("/v1/staff/kept-invoices/2026-000001")
        assert kept.status_code == 200, kept.text
        body = kept.json()
        assert {k: body[k] for k in ("invoice_id", "status", "kind", "amount_cents", "net_cents", "vat_cents",
                                     "vat_treatment", "customer_name", "kept_until")} == {
            "invoice_id": "2026-000001", "status": "paid", "kind": "plan", "amount_cents": issued["amount_cents"],
            "net_cents": issued["net_cents"], "vat_cents": 0, "vat_treatment": "reverse_charge",
            "customer_name": None, "kept_until": END_OF_2026_INVOICES}
        assert body["customer"] == issued["customer"] == {"name": "Acme GmbH", "address": ["Hauptstraße 1",
                                                                                         "10115 Berlin"],
                                                          "country": "DE", "vat_number": "DE123456789"}
        assert (body["seller"], body["lines"], body["period_start"], body["vat_note"]) == (
            issued["seller"], issued["lines"], issued["period_start"], issued["vat_note"])
        # Bob's is still his account's: not a kept invoice.
        assert (await staff.get("/v1/staff/kept-invoices/2026-000002")).status_code == 404
        assert await staff_looks(platform) == [("rita", "kept_invoice", "2026-000001"),
                                               ("rita", "kept_invoice", "2026-000002"),
                                               ("rita", "platform_audit_log", None)]

        # The purged account's number is never given again.
        carol = await on_a_monthly_plan(platform, "carol", "Carol Ltd")
        assert [i["invoice_id"] for i in (await carol.http.get("/v1/account/invoices")).json()["items"]] == [
            "2026-000003"]

        # The last moment of the period: kept (bob and carol, 2 years without a login, are purged now, and their
        # invoices, of 2026 too, kept until the same instant; bob's without billing details names his company).
        now = datetime.fromisoformat(END_OF_2026_INVOICES) - timedelta(microseconds=1)
        assert await platform.service.service.purge_due() == 2
        bobs = await eventually(lambda: staff.get("/v1/staff/kept-invoices/2026-000002"),
                                lambda r: r.status_code == 200, what="bob's invoice kept")
        assert (bobs.json()["customer"], bobs.json()["customer_name"]) == (None, "Bob Ltd")
        assert (await staff.get("/v1/staff/kept-invoices/2026-000001")).status_code == 200
        await eventually(lambda: traces(platform, bob.account_id), lambda found: found == [], what="bob purged")

        now = datetime.fromisoformat(END_OF_2026_INVOICES)
        assert await platform.service.service.purge_due() == 0
        for number in ("2026-000001", "2026-000002", "2026-000003"):
            gone = await staff.get(f"/v1/staff/kept-invoices/{number}")
            assert gone.status_code == 404 and gone.json()["type"].endswith("/invoice_not_found"), number
        db = platform.service.db
        assert [d async for d in db["kept_invoices"].find({})] == []
        assert [d async for d in db["kept_invoices_until"].find({})] == []
