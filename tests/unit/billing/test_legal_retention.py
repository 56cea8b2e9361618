"""What outlives an account's purge, and for how long: its invoices, for the years accounting law sets after the
end of the calendar year they were issued in (GDPR art. 17(3)(b)), as issued and with nothing else of the account;
and the platform audit log's entries, each value cut to its bound."""

from __future__ import annotations

from datetime import datetime

from herald_billing import domain
from herald_billing.plans import BillingCalendar
from herald_billing.platform_audit import USER_AGENT_MAX, USERNAME_MAX, hour_of, login_entry
from herald_billing.store import kept_invoice

UTC_CALENDAR = BillingCalendar.named("UTC")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_an_invoice_is_kept_five_years_after_the_end_of_its_calendar_year_in_riga() -> None:
    assert domain.invoice_kept_until(at("2026-01-01T00:00:00+02:00")) == at("2032-01-01T00:00:00+02:00")
    assert domain.invoice_kept_until(at("2026-12-31T21:59:59.999999+00:00")) == at("2031-12-31T22:00:00+00:00")
    # 31 December 22:30 in UTC is already the new year in Riga: an invoice of that year.
    assert domain.invoice_kept_until(at("2026-12-31T22:30:00+00:00")) == at("2032-12-31T22:00:00+00:00")
    assert domain.invoice_kept_until(at("2026-12-31T22:30:00+00:00"), 5, UTC_CALENDAR) == \
        at("2032-01-01T00:00:00+00:00")


def test_the_years_kept_are_a_setting() -> None:
    assert domain.invoice_kept_until(at("2026-06-15T10:00:00+00:00"), 10) == at("2036-12-31T22:00:00+00:00")


def invoice(**changes: object) -> dict[str, object]:
    return {"_id": "a1/2026-000007", "account_id": "a1", "invoice_id": "2026-000007", "status": "paid",
            "issued_at": at("2026-03-01T10:00:00+00:00"), "paid_at": at("2026-03-01T10:00:01+00:00"),
            "attempts": 2, "last_failure": "card_declined", "last_attempt_at": at("2026-03-01T10:00:00+00:00"),
            "amount_cents": 1089, "lines": [{"description": "Standard 500", "amount_cents": 900}],
            "customer": {"name": "Acme GmbH", "address": ["Hauptstraße 1"], "country": "DE",
                         "vat_number": "DE123456789"}, **changes}


def test_a_kept_invoice_is_the_invoice_as_issued_without_the_account() -> None:
    until = at("2031-12-31T22:00:00+00:00")
    kept = kept_invoice(invoice(), "Acme Ltd", until)
    assert kept == {"_id": "2026-000007", "invoice_id": "2026-000007", "status": "paid",
                    "issued_at": at("2026-03-01T10:00:00+00:00"), "paid_at": at("2026-03-01T10:00:01+00:00"),
                    "amount_cents": 1089, "lines": [{"description": "Standard 500", "amount_cents": 900}],
                    "customer": invoice()["customer"], "kept_until": until}


def test_an_invoice_without_billing_details_keeps_the_company_name_it_named() -> None:
    kept = kept_invoice(invoice(customer=None), "Acme Ltd", at("2031-12-31T22:00:00+00:00"))
    assert (kept["customer"], kept["customer_name"]) == (None, "Acme Ltd")


def test_a_platform_audit_entry_keeps_each_value_within_its_bound() -> None:
    entry = login_entry(at("2026-12-07T10:15:00+00:00"), "N" * 500, "2001:db8::1%" + "e" * 100, "u" * 5000,
                        "unknown_user")
    assert (len(entry["username"]), len(entry["ip"]), len(entry["user_agent"])) == (USERNAME_MAX, 64, USER_AGENT_MAX)
    assert login_entry(at("2026-12-07T10:15:00+00:00"), "", None, None, "malformed")["username"] is None
    assert login_entry(at("2026-12-07T10:15:00+00:00"), " AdaA", None, None, "unknown_user")["username"] == " AdaA"
    # What a JSON body may hold and the store may not: a NUL, a lone surrogate.
    assert login_entry(at("2026-12-07T10:15:00+00:00"), "a\x00b\ud969c", None, None, "malformed")["username"] == \
        "a\ufffdb?c"


def test_attempts_are_counted_by_the_hour_in_utc() -> None:
    assert hour_of(at("2026-12-07T12:59:59.999999+02:00")) == at("2026-12-07T10:00:00+00:00")
