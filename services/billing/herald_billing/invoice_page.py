"""An invoice as a page a person reads and prints (HTML, no scripts, every value escaped)."""

from __future__ import annotations

from html import escape
from typing import Any

from herald_shared.http import html_security_headers

from .domain import Account
from .plans import BillingCalendar

STYLE = ("body{font-family:sans-serif;max-width:48rem;margin:2rem auto}table{width:100%;border-collapse:collapse}"
         "td,th{padding:.4rem;border-bottom:1px solid #ccc;text-align:left}.n{text-align:right}")
INVOICE_HEADERS = html_security_headers(STYLE)  # its one stylesheet, nothing else


def _eur(cents: int | None) -> str:
    return f"{(cents or 0) / 100:,.2f} EUR"


def invoice_html(doc: dict[str, Any], account: Account, calendar: BillingCalendar) -> str:
    """Dates are the platform's (its time zone), as the invoice's lines give them."""
    lines = "".join(f"<tr><td>{escape(str(line['description']))}</td><td class=n>{_eur(line['amount_cents'])}</td></tr>"
                    for line in doc["lines"])
    status = {"paid": "Paid", "void": "Void: not due"}.get(doc["status"], "Due")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {escape(doc['invoice_id'])}</title>
<style>{STYLE}</style></head>
<body>
<h1>Invoice {escape(doc['invoice_id'])}</h1>
<p>Herald &middot; issued {escape(calendar.day(doc['issued_at']).isoformat())} &middot; {status}</p>
<p>To: {escape(account.company_name)}<br>{escape(account.registered_email)}<br>Account {escape(account.account_id)}</p>
<p>Period: {escape(calendar.day(doc['period_start']).isoformat())} to \
{escape(calendar.day(doc['period_end']).isoformat())}</p>
<table><thead><tr><th>Description</th><th class=n>Amount</th></tr></thead><tbody>{lines}</tbody>
<tfoot><tr><td>Net</td><td class=n>{_eur(doc.get('net_cents'))}</td></tr>
<tr><td>VAT {escape(str(doc.get('vat_percent') or 0))} %</td><td class=n>{_eur(doc.get('vat_cents'))}</td></tr>
<tr><th>Total</th><th class=n>{_eur(doc['amount_cents'])}</th></tr></tfoot></table>
<p>Fees are not refunded; a cancellation takes effect at the end of the paid period.</p>
</body></html>
"""
