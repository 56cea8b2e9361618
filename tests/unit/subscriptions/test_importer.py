"""Pure parts of the CSV import: duplicate detection that stays small, row parsing rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald_subscriptions import domain
from herald_subscriptions.domain import ListState
from herald_subscriptions.importer import SeenAddresses, _field_value, _parse_row

LIST = ListState("acc", "news", "News", "single", {"age": "number", "vip": "boolean"})
HEADER = ["email", "consent_method", "consent_at", "age", "vip"]


@given(st.lists(st.text(min_size=1, max_size=12), max_size=400))
def test_seen_addresses_answers_new_exactly_for_first_occurrences(addresses: list[str]) -> None:
    seen = SeenAddresses(capacity=4)  # small, so it grows many times
    firsts: set[str] = set()
    for address in addresses:
        assert seen.add(address) is (address not in firsts)
        firsts.add(address)


def test_row_needs_consent_and_a_valid_address() -> None:
    with pytest.raises(domain.ConsentMissing):
        _parse_row(HEADER, ["a@example.com", "", "2026-10-01T10:00:00Z", "", ""], LIST)
    with pytest.raises(domain.ConsentMissing, match="not an ISO 8601 time"):
        _parse_row(HEADER, ["a@example.com", "form", "last week", "", ""], LIST)
    with pytest.raises(domain.InvalidEmail):
        _parse_row(HEADER, ["nobody", "form", "2026-10-01T10:00:00Z", "", ""], LIST)
    with pytest.raises(domain.InvalidCustomField, match="more values"):
        _parse_row(HEADER, ["a@example.com", "form", "2026-10-01", "1", "yes", "extra"], LIST)


def test_row_values_are_typed_by_the_lists_custom_fields() -> None:
    request = _parse_row(HEADER, ["A@Example.com", "form", "2026-10-01", "41,5", "yes"], LIST)
    assert request.email == "a@example.com" and request.custom_fields == {"age": 41.5, "vip": True}
    assert request.consent is not None and request.consent.collected_at.tzinfo is not None
    assert _field_value("number", "") is None and _field_value("boolean", "0") is False
    with pytest.raises(ValueError, match="yes/no"):
        _field_value("boolean", "maybe")
