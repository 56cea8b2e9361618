"""An imported row carries its consent evidence (PRODUCT.md: "each imported row carries its consent evidence
(source, time, IP where known)"): a placeholder method ("-", "n/a", "none", "?"...) is evidence missing, and a
consent date without a time is taken as that day's start in UTC, marked as a date only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from herald_subscriptions import domain
from herald_subscriptions.domain import ListState
from herald_subscriptions.importer import DATE_ONLY_MARK, _parse_row

LIST = ListState("acc", "news", "News", "single", {})
HEADER = ["email", "consent_method", "consent_at"]
AT = "2026-10-01T10:00:00Z"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def consent(method: str, at: str = AT) -> domain.ConsentEvidence:
    request = _parse_row(HEADER, ["a@example.com", method, at], LIST)
    assert request.consent is not None
    return request.consent


@pytest.mark.parametrize("method", ["-", "--", "n/a", "N/A", "n.a.", "NA", "none", "(none)", "None", "null", "NULL",
                                    "nil", "unknown", "Unknown", "?", "???", "x", "tbd", "undefined", "—", "0"])
def test_a_placeholder_consent_method_is_missing_consent(method: str) -> None:
    with pytest.raises(domain.ConsentMissing, match="placeholder") as refused:
        domain.check_consent(consent(method), NOW)
    assert refused.value.code == "missing_consent"


@pytest.mark.parametrize("method", ["", " ", "\t"])
def test_a_method_empty_after_trimming_is_missing_consent_when_the_row_is_read(method: str) -> None:
    with pytest.raises(domain.ConsentMissing, match="required"):
        _parse_row(HEADER, ["a@example.com", method, AT], LIST)


@pytest.mark.parametrize("method", ["signup form on example.com", "checkout checkbox", "CRM sync", "paper form",
                                    "webinar", "m", "Nota bene form", "unknown-referrer landing page", "x-mas form"])
def test_a_method_that_says_how_is_evidence(method: str) -> None:
    evidence = consent(f"  {method} ")
    domain.check_consent(evidence, NOW)
    assert evidence.method == method


def test_a_consent_date_without_a_time_is_the_day_s_start_in_utc_marked_date_only() -> None:
    for day in ("2026-11-01", "20261101"):
        evidence = consent("paper form", day)
        assert evidence.collected_at == datetime(2026, 11, 1, tzinfo=UTC)
        assert evidence.method == f"paper form {DATE_ONLY_MARK}"
        domain.check_consent(evidence, NOW)
    timed = consent("paper form", "2026-11-01T00:00:00Z")
    assert timed.method == "paper form" and timed.collected_at == datetime(2026, 11, 1, tzinfo=UTC)
    assert consent("paper form", "2026-11-01 09:30").method == "paper form"


def test_a_placeholder_method_with_a_date_only_is_still_missing_consent() -> None:
    with pytest.raises(domain.ConsentMissing):
        domain.check_consent(consent("n/a", "2026-11-01"), NOW)
