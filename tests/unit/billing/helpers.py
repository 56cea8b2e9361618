"""Accounts and plans for billing's unit tests: an account past its trial, a purchase paid at once, a monthly
plan bought at a given time."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from herald_billing import domain
from herald_billing.domain import Account, Usage
from herald_billing.plans import Plans, Tier
from herald_shared.contract import Event
from herald_shared.contract.billing import InvoiceIssued

PLANS = Plans(tiers=(Tier(500, 900, 1900), Tier(1000, 1500, 2900)), packs=(), vat_percent=Decimal(21))


def at(day: str, time: str = "10:00:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{time}+00:00")


def opened_account(**changes: object) -> Account:
    base = Account("a1", "Acme", "ada@acme.example", "ada", at("2026-11-01"), payment_method="simulated:sim-card-ok",
                   plan="trial_ended", blocked=("trial_ended",))
    return replace(base, **changes)  # type: ignore[arg-type]


def bought(account: Account, invoice: InvoiceIssued | None) -> list[Event]:
    """A purchase as recorded when its charge is paid at once: its invoice, then what settling it records."""
    assert invoice is not None
    issued = domain.evolve_all(account, [invoice])
    return [invoice, *domain.settle_purchase(issued, invoice.payload.invoice_id, None, invoice.occurred_at)]


def monthly(now: datetime, config: Plans = PLANS, **changes: object) -> Account:
    """A 500-subscriber standard plan bought at `now` by an account opened with `changes`."""
    account = opened_account(**changes)
    purchase = domain.buy_monthly(account, Usage(), config, 500, "standard", "2026-000001", now)
    account = domain.evolve_all(account, bought(account, purchase))
    return domain.evolve_all(account, domain.enforce(account, Usage(), now))  # the trial's block lifted
