"""Custom fields of a list: whether a value is of a field's kind. Subscriptions checks what members carry,
campaigns what a segment compares them with; one rule for both, so a segment can match what a member holds."""

from __future__ import annotations

import math
from datetime import datetime

from .contract.subscriptions import FieldValue


def fits(kind: str, value: FieldValue) -> bool:
    """A value of this kind (`text`, `number`, `date`, `boolean`); None fits every kind (no value)."""
    if value is None:
        return True
    if kind == "text":
        return isinstance(value, str)
    if kind == "number":
        return _storable_number(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "date":
        return isinstance(value, str) and _is_iso_date(value)
    return False


def _storable_number(value: object) -> bool:
    """A number MongoDB can store: a 64-bit integer or a finite double."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def _is_iso_date(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
