"""Invoices that are VAT invoices (Council Directive 2006/112/EC, art. 226; Latvia's VAT law): both parties named,
VAT numbers checked by format, and the VAT each customer's details call for."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from herald_billing import domain, vat
from herald_billing.domain import User
from herald_billing.invoice_page import invoice_html
from herald_billing.main import BillingSettings
from herald_billing.plans import BillingCalendar, CreditPack
from herald_billing.store import account_doc, account_of
from herald_billing.vat import Party
from herald_shared.contract.billing import BillingDetailsChanged, InvoiceIssued
from tests.unit.billing.helpers import PLANS, at, monthly, opened_account

SELLER = Party("Herald SIA", ("Brīvības iela 1, Rīga, LV-1010",), "LV", "LV40003000001")
SOLD = replace(PLANS, seller=SELLER)
OWNER, MEMBER = User("ada", "a1", "owner", "h" * 20), User("bob", "a1", "member", "h" * 20)


def details(country: str, vat_number: str | None = None, name: str = "Acme") -> Party:
    return domain.billing_details(name, ["Street 1", "City"], country, vat_number)


def plan_invoice(customer: Party | None) -> InvoiceIssued:
    account = opened_account(billing_details=customer)
    invoice = domain.buy_monthly(account, domain.Usage(), SOLD, 500, "standard", "2026-000001", at("2026-11-01"))
    assert invoice is not None
    return invoice


@pytest.mark.parametrize(("customer", "treatment", "vat_cents", "note"), [
    (None, "domestic", 189, None),
    (details("LV"), "domestic", 189, None),
    (details("LV", "LV40003000002"), "domestic", 189, None),
    (details("DE", "DE123456789"), "reverse_charge", 0, "Reverse charge"),
    (details("GR", "EL123456789"), "reverse_charge", 0, "Reverse charge"),
    (details("DE"), "eu_consumer", 189, None),
    (details("US"), "outside_eu", 0, "Outside the scope of EU VAT"),
    (details("NO"), "outside_eu", 0, "Outside the scope of EU VAT"),
    (details("AX"), "outside_eu", 0, "Outside the scope of EU VAT"),  # Åland: outside the EU's VAT area
])
def test_each_customer_is_invoiced_the_vat_their_details_call_for(
        customer: Party | None, treatment: str, vat_cents: int, note: str | None) -> None:
    """In Latvia or without details: Latvian VAT; a business elsewhere in the EU with its VAT number: reverse charge;
    outside the EU: outside the scope; a consumer elsewhere in the EU: Latvian VAT (OSS is not built)."""
    issued = plan_invoice(customer).payload
    assert (issued.vat_treatment, issued.net_cents, issued.vat_cents) == (treatment, 900, vat_cents)
    assert issued.amount_cents == 900 + vat_cents
    assert issued.vat_percent == ("21" if vat_cents else "0")
    assert (issued.vat_note or "").startswith(note or "")
    assert bool(issued.vat_note) == bool(note)
    assert issued.seller is not None and (issued.seller.name, issued.seller.vat_number) == (
        "Herald SIA", "LV40003000001")
    if customer is None:
        assert issued.customer is None
    else:
        assert issued.customer is not None
        assert (issued.customer.name, issued.customer.address, issued.customer.country,
                issued.customer.vat_number) == ("Acme", ["Street 1", "City"], customer.country, customer.vat_number)


def test_vat_rounding_is_unchanged_half_up_on_the_invoices_net() -> None:
    account = opened_account(billing_details=details("LV"))
    credits = replace(SOLD, packs=(CreditPack(100, 1050, 30),))
    invoice = domain.buy_credits(account, credits, 100, "2026-000001", at("2026-11-01"))
    assert (invoice.payload.net_cents, invoice.payload.vat_cents) == (1050, 221)  # 220.5 rounds up


@pytest.mark.parametrize(("country", "given", "kept"), [
    ("LV", "LV40003000001", "LV40003000001"),
    ("LV", "lv 4000 3000-001", "LV40003000001"),
    ("DE", "DE123456789", "DE123456789"),
    ("AT", "ATU12345678", "ATU12345678"),
    ("GR", "EL123456789", "EL123456789"),
    ("NL", "NL123456789B01", "NL123456789B01"),
    ("FR", "FRXX123456789", "FRXX123456789"),
    ("ES", "ESB12345678", "ESB12345678"),
    ("IE", "IE1234567WA", "IE1234567WA"),
    ("IE", "IE1+23456A", "IE1+23456A"),
    ("SE", "SE123456789001", "SE123456789001"),
    ("BE", "BE0123456789", "BE0123456789"),
    ("CY", "CY12345678X", "CY12345678X"),
])
def test_a_vat_number_of_its_countrys_format_is_taken_normalised(country: str, given: str, kept: str) -> None:
    assert vat.check_vat_number(country, given) == kept


@pytest.mark.parametrize(("country", "given", "says"), [
    ("LV", "LV4000300000", "LV followed by 11 digits"),  # 10 digits
    ("LV", "40003000001", "LV followed by 11 digits"),  # no prefix
    ("DE", "DE12345678", "DE followed by 9 digits"),
    ("AT", "DE123456789", "AT followed by U and 8 digits"),  # another country's number
    ("GR", "GR123456789", "EL followed by 9 digits"),  # Greece's prefix is EL
    ("FR", "FRIO123456789", "FR followed by"),  # no I or O in the key
    ("SE", "SE123456789012", "ending in 01"),
    ("US", "US123456789", "EU member states only"),
])
def test_a_vat_number_not_of_its_countrys_format_is_refused_saying_the_format(country: str, given: str,
                                                                              says: str) -> None:
    """No VIES look-up is reachable: the format is what is checked, per the country's prefix."""
    with pytest.raises(vat.VatNumberInvalid) as refused:
        vat.check_vat_number(country, given)
    assert says in str(refused.value)


def test_every_member_state_has_a_vat_number_format_and_is_an_iso_country() -> None:
    assert len(vat.EU_MEMBER_STATES) == 27 and vat.EU_MEMBER_STATES <= vat.COUNTRIES
    assert len(vat.COUNTRIES) == 249 and "GB" in vat.COUNTRIES and "UK" not in vat.COUNTRIES
    assert "GB" not in vat.EU_MEMBER_STATES and vat.SELLER_COUNTRY in vat.EU_MEMBER_STATES


def test_billing_details_are_checked_and_trimmed() -> None:
    assert domain.billing_details("  Acme GmbH ", [" Hauptstraße 1 ", "10115 Berlin"], "de", "de 123 456 789") == \
        Party("Acme GmbH", ("Hauptstraße 1", "10115 Berlin"), "DE", "DE123456789")
    with pytest.raises(domain.BillingDetailsInvalid) as refused:
        domain.billing_details(" ", ["Street 1", "  "], "XX", "XX123")
    assert (refused.value.http_status, refused.value.code) == (422, "billing_details_invalid")
    assert [where for where, _ in refused.value.errors or []] == ["body.legal_name", "body.address.1",
                                                                  "body.country"]
    with pytest.raises(domain.BillingDetailsInvalid) as wrong_number:
        domain.billing_details("Acme", ["Street 1"], "LV", "DE123456789")
    assert [where for where, _ in wrong_number.value.errors or []] == ["body.vat_number"]
    with pytest.raises(domain.BillingDetailsInvalid):
        domain.billing_details("Acme", [], "LV", None)


def test_owners_change_the_billing_details_and_the_next_invoice_takes_them() -> None:
    """An invoice names the details of the time it is issued: a renewal after a change names the new ones."""
    account = monthly(at("2026-11-01"), SOLD)
    german = details("DE", "DE123456789", "Acme GmbH")
    with pytest.raises(domain.OwnersOnly):
        domain.change_billing_details(MEMBER, account, german)
    (changed,) = domain.change_billing_details(OWNER, account, german)
    assert isinstance(changed, BillingDetailsChanged) and changed.payload.changed_by == "ada"
    moved = domain.evolve_all(account, [changed])
    assert moved.billing_details == german
    assert domain.change_billing_details(OWNER, moved, german) == []  # nothing changed
    with pytest.raises(domain.AccountClosed):
        domain.change_billing_details(OWNER, replace(moved, deleted_at=at("2026-11-02")), german)
    renewal = domain.renewal(moved, SOLD, "2026-000002", at("2026-12-01"))
    assert renewal is not None and renewal.payload.vat_treatment == "reverse_charge"
    assert renewal.payload.customer is not None and renewal.payload.customer.vat_number == "DE123456789"
    # Stored and read back as the fold left it.
    doc: dict[str, Any] = account_doc(moved)
    doc["billing_details"] = {**doc["billing_details"], "address": list(doc["billing_details"]["address"])}
    assert account_of(doc) == moved


SELLER_SETTINGS = {"HERALD_BILLING_SELLER_NAME": "Herald SIA",
                   "HERALD_BILLING_SELLER_ADDRESS": "Brīvības iela 1, Rīga, LV-1010",
                   "HERALD_BILLING_SELLER_VAT_NUMBER": "LV 40003000001"}


def test_the_seller_is_configured_whole_and_valid_or_the_start_fails() -> None:
    assert BillingSettings(**SELLER_SETTINGS).seller() == SELLER  # type: ignore[arg-type]
    assert BillingSettings().seller() is None  # not configured: invoices name no seller (a warning at start)
    with pytest.raises(ValidationError, match="missing: HERALD_BILLING_SELLER_VAT_NUMBER"):
        BillingSettings(**{**SELLER_SETTINGS, "HERALD_BILLING_SELLER_VAT_NUMBER": ""})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="HERALD_BILLING_SELLER_VAT_NUMBER: not a VAT number of LV"):
        BillingSettings(**{**SELLER_SETTINGS, "HERALD_BILLING_SELLER_VAT_NUMBER": "DE123456789"})  # type: ignore[arg-type]


def test_the_invoice_page_names_both_parties_their_vat_numbers_and_the_treatment() -> None:
    issued = plan_invoice(details("DE", "DE123456789", "Acme <GmbH>"))
    doc = {**issued.payload.model_dump(mode="python"), "issued_at": issued.occurred_at, "status": "paid"}
    page = invoice_html(doc, opened_account(), BillingCalendar())
    for shown in ("Herald SIA", "Brīvības iela 1, Rīga, LV-1010", "VAT number LV40003000001", "Acme &lt;GmbH&gt;",
                  "Street 1<br>City<br>DE", "VAT number DE123456789", "VAT 0 %", "Reverse charge: VAT to be "
                  "accounted for by the customer", "9.00 EUR"):
        assert shown in page, shown
    # An invoice issued before parties were recorded reads as it did: the account's company, and Herald.
    old = {k: v for k, v in doc.items() if k not in ("seller", "customer", "vat_treatment", "vat_note")}
    old_page = invoice_html(old, opened_account(), BillingCalendar())
    assert "<p>Herald</p>" in old_page and "<p>Acme<br>ada@acme.example" in old_page


def test_an_invoice_issued_before_the_parties_were_recorded_still_parses() -> None:
    issued = plan_invoice(None)
    wire = issued.model_dump(mode="json")
    for field in ("seller", "customer", "vat_treatment", "vat_note"):
        wire["payload"].pop(field)
    assert InvoiceIssued.model_validate(wire).payload.seller is None
    assert datetime.fromisoformat(wire["occurred_at"]).astimezone(UTC) == issued.occurred_at
    assert Decimal(wire["payload"]["vat_percent"]) == Decimal(21)
