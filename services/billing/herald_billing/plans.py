"""Plan arithmetic, pure: the tiers and prices (from a configuration file), billing periods, proration, VAT and
credit packs. Money is integer cents; every division rounds half up to the cent with Decimal, never float.
PRODUCT.md, "Plans and billing".
"""

from __future__ import annotations

import calendar
import itertools
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import MINYEAR, UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .vat import Party

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
    """What invoices are made from: the tiers and packs, the Latvian VAT rate (`vat_percent`), and the seller every
    invoice names (the platform's company, HERALD_BILLING_SELLER_*; None: not configured)."""

    tiers: tuple[Tier, ...]
    packs: tuple[CreditPack, ...]
    vat_percent: Decimal
    seller: Party | None = None

    def tier(self, subscribers: int) -> Tier | None:
        return next((t for t in self.tiers if t.subscribers == subscribers), None)

    def pack(self, credits: int) -> CreditPack | None:
        return next((p for p in self.packs if p.credits == credits), None)

    def vat(self, net_cents: int) -> int:
        return vat_cents(net_cents, self.vat_percent)


def vat_cents(net_cents: int, percent: Decimal) -> int:
    return cents(Decimal(net_cents) * percent / 100)


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


def prorated(difference_cents: int, start: datetime, end: datetime, now: datetime) -> int:
    """What a change of `difference_cents` a period costs for the rest of [start, end) from `now`."""
    if now >= end:
        return 0
    left = (end - max(now, start)) / timedelta(microseconds=1)
    whole = (end - start) / timedelta(microseconds=1)
    return cents(Decimal(difference_cents) * Decimal(int(left)) / Decimal(int(whole)))


def period_send_cap(limits: Sequence[tuple[datetime, int]], start: datetime, end: datetime) -> int:
    """A billing period's monthly send cap when its tier was raised during it: 109 x each subscriber limit for the
    part of [start, end) it held, summed, rounded up to a whole email (in the customer's favour), as a raise is
    charged the difference prorated to the time left. `limits`: (from when, limit) in time order; the one in force
    at `start` is the last from at or before it (the first one's, if none is). One limit over the whole period
    gives 109 x it exactly; a raise at the period's first instant, the new limit's whole cap. Never below the cap
    of the limit at `start` (tiers are never lowered; a history saying otherwise is not held against the
    customer)."""
    if not limits:
        raise ValueError("no subscriber limit to take the cap from")
    whole = (end - start) // timedelta(microseconds=1)
    if whole <= 0:
        return MONTHLY_SEND_FACTOR * limits[-1][1]
    at_start = next((limit for since, limit in reversed(limits) if since <= start), limits[0][1])
    held = [(start, at_start), *((since, limit) for since, limit in limits if start < since < end)]
    weighted = sum(limit * ((until - since) // timedelta(microseconds=1))
                   for (since, limit), until in zip(held, [*(s for s, _ in held[1:]), end], strict=True))
    cap = -(-MONTHLY_SEND_FACTOR * weighted // whole)
    return max(cap, MONTHLY_SEND_FACTOR * at_start)


# Billing periods: the billing day is the day of the month of the first payment (PRODUCT.md), or the month's
# last day when the month is shorter. A period runs from one billing date to the next, at the first payment's time
# of day. Days and months are the platform's (`BillingCalendar`): the terms are Latvian, and a payment at 00:30 on
# 1 March in Riga was made on the 1st, whatever day it was in UTC.

DEFAULT_TIME_ZONE = "Europe/Riga"


@dataclass(frozen=True)
class BillingCalendar:
    """Billing days, billing dates, calendar months and business days, on the wall clock of the platform's time zone
    (`HERALD_BILLING_TIME_ZONE`); every time it is given or gives back is an instant, returned in UTC as billing
    keeps them. A billing date keeps the first payment's local time of day, so it moves with daylight saving time
    in UTC."""

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIME_ZONE))

    @classmethod
    def named(cls, name: str) -> BillingCalendar:
        """The calendar of an IANA time zone name (ValueError for a name the zone database does not have)."""
        try:
            return cls(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{name!r} is not an IANA time zone name (such as Europe/Riga): {exc}") from None

    def local(self, at: datetime) -> datetime:
        return at.astimezone(self.zone)

    def day(self, at: datetime) -> date:
        """`at`'s day on the platform's calendar (the calendar's first or last day for a time at its very end, which
        a time zone cannot hold)."""
        try:
            return self.local(at).date()
        except OverflowError:
            return date.min if at.year == MINYEAR else date.max

    def billing_day(self, at: datetime) -> int:
        """The billing day of a plan first paid at `at`."""
        return self.local(at).day

    def billing_date(self, year: int, month: int, billing_day: int, anchor: datetime) -> datetime:
        """The billing date of a month: its `billing_day` (its last day when shorter), at `anchor`'s local time."""
        day = min(billing_day, calendar.monthrange(year, month)[1])
        return self.local(anchor).replace(year=year, month=month, day=day).astimezone(UTC)

    def next_billing_date(self, billing_day: int, anchor: datetime, after: datetime) -> datetime:
        """The first billing date strictly after `after`."""
        local = self.local(after)
        this_month = self.billing_date(local.year, local.month, billing_day, anchor)
        if this_month > after:
            return this_month
        return self.billing_date(*_month_after(local.year, local.month), billing_day, anchor)

    def period_containing(self, billing_day: int, anchor: datetime, at: datetime) -> tuple[datetime, datetime]:
        """The period [start, end) that contains `at`, for billing dates on `billing_day` at `anchor`'s local time
        (the anchor is the first payment)."""
        local = self.local(at)
        start = self.billing_date(local.year, local.month, billing_day, anchor)
        if start > at:
            year, month = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
            start = self.billing_date(year, month, billing_day, anchor)
        return start, self.next_billing_date(billing_day, anchor, start)

    def add_months(self, at: datetime, months: int) -> datetime:
        """`months` calendar months after `at`, at its local time (the month's last day when it is shorter)."""
        local = self.local(at)
        month = local.month - 1 + months
        return self.billing_date(local.year + month // 12, month % 12 + 1, local.day, at)

    def business_days_before(self, start: datetime, end: datetime) -> int:
        """Business days from `start`'s day (itself, when one) up to and including the day before `end`'s day: a
        request "at least 2 business days before" a payment date is one made on or before the second business
        day before it (on a Thursday, for a Monday's payment; "ne vēlāk kā divu darba dienu laikā līdz").
        Days on the platform's calendar."""
        first = self.day(start)
        return self.business_days_between(start, end) + (1 if first < self.day(end) and self._business(first) else 0)

    def _business(self, day: date) -> bool:
        return day.weekday() < 5 and day not in latvian_public_holidays(day.year)

    def business_days_between(self, start: datetime, end: datetime) -> int:
        """Whole business days from the day after `start` up to and including the day before `end`'s day: what "at
        least 2 business days before" counts ("divu darba dienu": Monday to Friday, not a Latvian public holiday).
        Days on the platform's calendar: the same instant counts the same whatever offset it was written with."""
        first, last = self.day(start), self.day(end)
        holidays = {d for year in range(first.year, last.year + 1) for d in latvian_public_holidays(year)}
        return sum(1 for n in range(1, (last - first).days)
                   if (day := first + timedelta(days=n)).weekday() < 5 and day not in holidays)


def _month_after(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def easter_sunday(year: int) -> date:
    """Western Easter of a Gregorian year (the anonymous Gregorian computus, as Meeus gives it)."""
    golden = year % 19
    century, year_of_century = divmod(year, 100)
    leap_centuries, century_rest = divmod(century, 4)
    correction = (century - (century + 8) // 25 + 1) // 3
    epact = (19 * golden + century - leap_centuries - correction + 15) % 30
    leap_years, year_rest = divmod(year_of_century, 4)
    weekday = (32 + 2 * century_rest + 2 * leap_years - epact - year_rest) % 7
    shift = (golden + 11 * epact + 22 * weekday) // 451
    month, day = divmod(epact + weekday - 7 * shift + 114, 31)
    return date(year, month, day + 1)


def latvian_public_holidays(year: int) -> frozenset[date]:
    """Latvia's public holidays of a year that can fall on a working day (the Law on Public Holidays, Commemoration
    Days and Days of Celebration, section 1): New Year, Good Friday and Easter Monday, 1 and 4 May, Midsummer (23 and
    24 June), 18 November, 24 to 26 and 31 December; 4 May and 18 November falling on a Saturday or Sunday make the
    next Monday a holiday. Not known here: days a law declares for one year only, and the closing day of the Song
    and Dance Festival, whose date each festival sets."""
    easter = easter_sunday(year)
    days = {date(year, 1, 1), easter - timedelta(days=2), easter + timedelta(days=1), date(year, 5, 1),
            date(year, 6, 23), date(year, 6, 24), date(year, 12, 24), date(year, 12, 25), date(year, 12, 26),
            date(year, 12, 31)}
    for moving in (date(year, 5, 4), date(year, 11, 18)):
        days.add(moving if moving.weekday() < 5 else moving + timedelta(days=7 - moving.weekday()))
    return frozenset(days)
