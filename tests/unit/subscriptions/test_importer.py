"""Pure parts of the CSV import: duplicate detection that stays small, row parsing rules."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald_subscriptions import domain
from herald_subscriptions.domain import ListState
from herald_subscriptions.importer import ImportRefused, SeenAddresses, Unreadable, _field_value, _parse_row, _rows

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
    with pytest.raises(domain.InvalidEmail):
        _parse_row(HEADER, ["nobody", "form", "2026-10-01T10:00:00Z", "", ""], LIST)
    with pytest.raises(domain.InvalidCustomField, match="more values"):
        _parse_row(HEADER, ["a@example.com", "form", "2026-10-01", "1", "yes", "extra"], LIST)


@pytest.mark.parametrize("values", [["a@example.com", "form", "", "", ""], ["a@example.com", "form", "  ", "", ""],
                                    ["a@example.com", "form"]])  # empty, blank, absent (a short row)
def test_a_row_without_a_consent_time_is_missing_consent(values: list[str]) -> None:
    with pytest.raises(domain.ConsentMissing) as refused:
        _parse_row(HEADER, values, LIST)
    assert refused.value.code == "missing_consent"


@pytest.mark.parametrize("consent_at", ["01/11/2026", "last week", "2026-13-01", "2026-11-01 25:00"])
def test_a_consent_time_that_cannot_be_read_is_invalid_consent_not_missing(consent_at: str) -> None:
    """README rules: bad consent evidence is `invalid_consent`; a time given but unreadable is evidence that is
    not valid, not evidence that is missing."""
    with pytest.raises(domain.InvalidConsent, match="is not an ISO 8601 time") as refused:
        _parse_row(HEADER, ["a@example.com", "form", consent_at, "", ""], LIST)
    assert refused.value.code == "invalid_consent"


def test_row_values_are_typed_by_the_lists_custom_fields() -> None:
    request = _parse_row(HEADER, ["A@Example.com", "form", "2026-10-01", "41,5", "yes"], LIST)
    assert request.email == "a@example.com" and request.custom_fields == {"age": 41.5, "vip": True}
    assert request.consent is not None and request.consent.collected_at.tzinfo is not None
    assert _field_value("number", "") is None and _field_value("boolean", "0") is False
    with pytest.raises(ValueError, match="yes/no"):
        _field_value("boolean", "maybe")


def read(data: bytes) -> dict[int, list[str] | Unreadable]:
    return dict(_rows(io.BytesIO(data))[1])


HEAD = b"email,consent_method,consent_at,notes\n"


@pytest.mark.parametrize("raw", ["1,000", "1.000", "-12,345", "1_000", "1 000", "1e5", "nan", "inf", "0x1f",
                                 "1,5,0", "1.5.0", "+", ".", "\u0661\u0662", "12abc"])
def test_a_number_is_a_sign_digits_and_one_decimal_separator_at_most(raw: str) -> None:
    """A "1,000" is one thousand to some and 1.0 to others: refused rather than read either way."""
    with pytest.raises(ValueError, match=r"ambiguous|not a number"):
        _field_value("number", raw)


def test_numbers_read_with_a_decimal_point_or_comma() -> None:
    cases = {"42": 42, "-3": -3, "+7": 7, "41,5": 41.5, "2.25": 2.25, "0,125": 0.125, "1234,567": 1234.567,
             "1000": 1000, ".5": 0.5, "-0.75": -0.75}
    assert {raw: _field_value("number", raw) for raw in cases} == cases


def test_a_value_running_over_lines_that_holds_a_row_of_its_own_rejects_the_lines_it_took() -> None:
    rows = read(HEAD + b'anna@example.com,form,2024-01-01,"VIP\n'
                       b"bob@example.com,form,2024-01-02,\ncarol@example.com,form,2024-01-03,\n")
    assert list(rows) == [2]
    assert isinstance(rows[2], Unreadable) and rows[2].reason == "multiline_row"
    assert "lines 2-4 were read as one row: its notes runs over several lines, and line 3" in rows[2].detail
    kept = read(HEAD + b'anna@example.com,form,2024-01-01,"Tartu\nold town"\nbob@example.com,form,2024-01-02,\n')
    assert kept == {2: ["anna@example.com", "form", "2024-01-01", "Tartu\nold town"],
                    4: ["bob@example.com", "form", "2024-01-02", ""]}


def test_a_row_of_empty_cells_is_rejected_and_only_a_blank_line_skipped() -> None:
    """Every line is accounted for: `,,,` (a row whose values were lost, e.g. cleared in a spreadsheet) is a
    rejected row with its line; an empty line, or one of spaces alone, is no row."""
    rows = read(HEAD + b"\n,,,\n   \n , ,\t,\nanna@example.com,form,2024-01-01,\n")
    assert list(rows) == [3, 5, 6]
    for line, cells in ((3, 4), (5, 4)):
        row = rows[line]
        assert isinstance(row, Unreadable) and row.reason == "empty_row"
        assert row.detail == f"line {line} has {cells} cells, all empty; not imported"
    assert rows[6] == ["anna@example.com", "form", "2024-01-01", ""]


def test_a_field_over_the_csv_limit_takes_its_whole_quoted_value_with_it() -> None:
    """The csv module goes on at the next line after a field over its limit: inside the quoted value, whose
    lines must not be read as rows (here, one with an address)."""
    value = b"x" * 100_000 + b"\n" + b"y" * 40_000 + b'\nevil@example.com,form,2024-01-01,""quoted""\nz,'
    rows = read(HEAD + b'anna@example.com,form,2024-01-01,"' + value + b'"\nbob@example.com,form,2024-01-02,ok\n')
    assert isinstance(rows[2], Unreadable) and rows[2].reason == "invalid_csv"
    assert "lines 2-5 were read as one row" in rows[2].detail
    assert rows[6] == ["bob@example.com", "form", "2024-01-02", "ok"] and list(rows) == [2, 6]
    unquoted = read(HEAD + b"anna@example.com,form,2024-01-01," + b"x" * 140_000 + b"\nbob@example.com,f,t,\n")
    assert isinstance(unquoted[2], Unreadable) and "lines" not in unquoted[2].detail and 3 in unquoted


def test_bytes_that_are_not_utf8_reject_their_row_only() -> None:
    good = b"".join(b"u%d@example.com,form,2024-01-01,n\n" % i for i in range(1000))  # ~35 KiB
    cut = good.index(b"u600@")
    rows = read(HEAD + good[:cut] + b"j\xf6rg@example.com,form,2024-01-01,\"a\nb\"\n" + good[cut:])
    bad = rows.pop(602)
    assert isinstance(bad, Unreadable) and bad.reason == "not_utf8"
    assert bad.detail.startswith("lines 602-603: byte 0xf6 is not UTF-8")
    assert len(rows) == 1000 and all(isinstance(values, list) for values in rows.values())
    assert rows[2][0] == "u0@example.com" and rows[604][0] == "u600@example.com"  # the lines after count on
    with pytest.raises(ImportRefused, match="byte 0xe9 in the header"):
        _rows(io.BytesIO(b"email,consent_method,consent_at,caf\xe9\n"))


def test_a_header_the_csv_module_cannot_read_refuses_the_file_with_why() -> None:
    """A header name over the csv module's field limit (131,072 characters), quoted or not: the file is refused
    (422 import_refused), as a header that is not UTF-8 is, not a 500."""
    for name in (b"x" * 200_000, b'"' + b"x" * 200_000 + b'"'):
        with pytest.raises(ImportRefused, match="the header \\(line 1\\) is not valid CSV: field larger than"):
            _rows(io.BytesIO(b"email,consent_method,consent_at," + name + b"\nu@example.com,form,2024-01-01,x\n"))
