"""An invoice as a page a person reads and prints (HTML, no scripts, every value escaped)."""

from __future__ import annotations

from html import escape
from typing import Any

from herald_shared.http import html_security_headers

from .domain import Account
from .plans import BillingCalendar

STYLE = ("body{font-family:sans-serif;max-width:48rem;margin:2rem auto}table{width:100%;border-collapse:collapse}"
         "td,th{padding:.4rem;border-bottom:1px solid #ccc;text-align:left}.n{text-align:right}"
         ".parties{display:flex;gap:2rem}.parties>div{flex:1}")
INVOICE_HEADERS = html_security_headers(STYLE)  # its one stylesheet, nothing else


def _eur(cents: int | None) -> str:
    return f"{(cents or 0) / 100:,.2f} EUR"


def _party(party: dict[str, Any]) -> str:
    """A party as the invoice names it: the name, each address line, the country, the VAT number."""
    lines = [party["name"], *party["address"], party["country"]]
    if party.get("vat_number"):
        lines.append(f"VAT number {party['vat_number']}")
    return "<br>".join(escape(str(line)) for line in lines)


def invoice_html(doc: dict[str, Any], account: Account, calendar: BillingCalendar) -> str:
    """Dates are the platform's (its time zone), as the invoice's lines give them. The seller and the customer as
    the invoice recorded them when it was issued; an invoice from before they were recorded names the account's
    company (and Herald) as it did then."""
    lines = "".join(f"<tr><td>{escape(str(line['description']))}</td><td class=n>{_eur(line['amount_cents'])}</td></tr>"
                    for line in doc["lines"])
    status = {"paid": "Paid", "void": "Void: not due"}.get(doc["status"], "Due")
    seller = _party(doc["seller"]) if doc.get("seller") else "Herald"
    customer = _party(doc["customer"]) if doc.get("customer") else escape(account.company_name)
    note = f"<p>{escape(doc['vat_note'])}</p>\n" if doc.get("vat_note") else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {escape(doc['invoice_id'])}</title>
<style>{STYLE}</style></head>
<body>
<h1>Invoice {escape(doc['invoice_id'])}</h1>
<p>Issued {escape(calendar.day(doc['issued_at']).isoformat())} &middot; {status}</p>
<div class=parties><div><h2>From</h2><p>{seller}</p></div>
<div><h2>To</h2><p>{customer}<br>{escape(account.registered_email)}<br>Account {escape(account.account_id)}</p></div>
</div>
<p>Period: {escape(calendar.day(doc['period_start']).isoformat())} to \
{escape(calendar.day(doc['period_end']).isoformat())}</p>
<table><thead><tr><th>Description</th><th class=n>Amount</th></tr></thead><tbody>{lines}</tbody>
<tfoot><tr><td>Net</td><td class=n>{_eur(doc.get('net_cents'))}</td></tr>
<tr><td>VAT {escape(str(doc.get('vat_percent') or 0))} %</td><td class=n>{_eur(doc.get('vat_cents'))}</td></tr>
<tr><th>Total</th><th class=n>{_eur(doc['amount_cents'])}</th></tr></tfoot></table>
{note}<p>Fees are not refunded; a cancellation takes effect at the end of the paid period.</p>
</body></html>
"""
