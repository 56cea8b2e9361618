"""Plan arithmetic, pure: the tiers and prices (from a configuration file), billing periods, proration, VAT and
credit packs. Money is integer cents; every division rounds half up to the cent with Decimal, never float.
PRODUCT.md, "Plans and billing".
"""

from __future__ import annotations

import calendar
import itertools
import tomllib
from dataclasses import dataclass
from datetime import MINYEAR, UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

Edition = Literal["standard", "pro"]
# PRODUCT.md: emails sent in a month may not exceed 109 x the tier's subscriber limit.
MONTHLY_SEND_FACTOR = 109


class PlansInvalid(ValueError):
    """The plans file is not usable; the message says where."""


@dataclass(frozen=True)
class Tier:
    subscribers: int
    monthly_cents: int
    pro_monthly_cents: int

    def fee(self, edition: Edition) -> int:
        return self.pro_monthly_cents if edition == "pro" else self.monthly_cents

    @property
    def monthly_send_cap(self) -> int:
        return MONTHLY_SEND_FACTOR * self.subscribers


@dataclass(frozen=True)
class CreditPack:
    credits: int
    price_cents: int
    validity_days: int


@dataclass(frozen=True)
class Plans:
    tiers: tuple[Tier, ...]
    packs: tuple[CreditPack, ...]
    vat_percent: Decimal

    def tier(self, subscribers: int) -> Tier | None:
        return next((t for t in self.tiers if t.subscribers == subscribers), None)

    def pack(self, credits: int) -> CreditPack | None:
        return next((p for p in self.packs if p.credits == credits), None)

    def vat(self, net_cents: int) -> int:
        return cents(Decimal(net_cents) * self.vat_percent / 100)


def cents(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def load_plans(path: Path | None = None) -> Plans:
    """The plans file (TOML): `vat_percent`, `[[tiers]]` (subscribers, monthly_cents, pro_monthly_cents) and
    `[[credit_packs]]` (credits, price_cents, validity_days). Without a path, the one shipped with billing."""
    text = path.read_text() if path is not None else \
        resources.files("herald_billing").joinpath("plans.toml").read_text()
    try:
        raw = tomllib.loads(text)
        tiers = tuple(sorted((Tier(_positive(t, "subscribers"), _positive(t, "monthly_cents"),
                                   _positive(t, "pro_monthly_cents")) for t in raw["tiers"]),
                             key=lambda t: t.subscribers))
        packs = tuple(sorted((CreditPack(_positive(p, "credits"), _positive(p, "price_cents"),
                                         _positive(p, "validity_days")) for p in raw.get("credit_packs", [])),
                             key=lambda p: p.credits))
        vat = Decimal(str(raw["vat_percent"]))
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ArithmeticError) as exc:
        raise PlansInvalid(f"plans file: {exc!r}") from None
    if not tiers or not Decimal(0) <= vat < Decimal(100):
        raise PlansInvalid("plans file: at least one tier, and vat_percent from 0 to 100")
    for lower, higher in itertools.pairwise(tiers):
        if lower.subscribers == higher.subscribers or higher.monthly_cents <= lower.monthly_cents or \
                higher.pro_monthly_cents <= lower.pro_monthly_cents:
            raise PlansInvalid("plans file: tiers need distinct subscriber limits and prices that grow with them")
    if any(t.pro_monthly_cents < t.monthly_cents for t in tiers):
        raise PlansInvalid("plans file: PRO costs at least the standard price of its tier")
    return Plans(tiers, packs, vat)


def _positive(table: dict[str, Any], name: str) -> int:
    value = table[name]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PlansInvalid(f"plans file: {name} must be a positive whole number, not {value!r}")
    return value


# Billing periods: the billing day is the day of the month of the first payment (PRODUCT.md), or the month's
# last day when the month is shorter. A period runs from one billing date to the next, at the same time of day.


def billing_date(year: int, month: int, billing_day: int, like: datetime) -> datetime:
    day = min(billing_day, calendar.monthrange(year, month)[1])
    return like.replace(year=year, month=month, day=day)


def _month_after(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def next_billing_date(billing_day: int, after: datetime) -> datetime:
    """The first billing date strictly after `after` (at `after`'s time of day)."""
    this_month = billing_date(after.year, after.month, billing_day, after)
    if this_month > after:
        return this_month
    return billing_date(*_month_after(after.year, after.month), billing_day, after)


def period_containing(billing_day: int, anchor: datetime, at: datetime) -> tuple[datetime, datetime]:
    """The period [start, end) that contains `at`, for billing dates on `billing_day` at `anchor`'s time of day
    (the anchor is the first payment)."""
    start = billing_date(at.year, at.month, billing_day, anchor)
    if start > at:
        year, month = (at.year - 1, 12) if at.month == 1 else (at.year, at.month - 1)
        start = billing_date(year, month, billing_day, anchor)
    return start, next_billing_date(billing_day, start)


def prorated(difference_cents: int, start: datetime, end: datetime, now: datetime) -> int:
    """What a change of `difference_cents` a period costs for the rest of [start, end) from `now`."""
    if now >= end:
        return 0
    left = (end - max(now, start)) / timedelta(microseconds=1)
    whole = (end - start) / timedelta(microseconds=1)
    return cents(Decimal(difference_cents) * Decimal(int(left)) / Decimal(int(whole)))


def business_days_between(start: datetime, end: datetime) -> int:
    """Whole working days (Monday to Friday) from the day after `start` up to and including the day before
    `end`'s day: what "at least 2 business days before" counts. Days in UTC, as every time billing keeps: the
    same instant counts the same whatever offset it was written with."""
    first, last = utc_date(start), utc_date(end)
    return sum(1 for n in range(1, (last - first).days) if (first + timedelta(days=n)).weekday() < 5)


def utc_date(at: datetime) -> date:
    """`at`'s day in UTC (the calendar's first or last day for a time at its very end, which UTC cannot hold)."""
    try:
        return at.astimezone(UTC).date()
    except OverflowError:
        return date.min if at.year == MINYEAR else date.max
