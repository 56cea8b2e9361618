"""The guided demo (scripts/demo) mails enough complaints to pass the abuse limit whatever its size: compliance
judges a small campaign's rates over its minimum volume, so `--rows 200` needs as many as a campaign of 500."""

from __future__ import annotations

from fractions import Fraction

import pytest

from demo.__main__ import JUDGED_AT_LEAST, complaints_past_the_limit
from herald_compliance.domain import Policy, default_rules


def test_the_demo_knows_compliances_minimum_volume() -> None:
    assert Policy(default_rules()).minimum_sent == JUDGED_AT_LEAST


@pytest.mark.parametrize("sent", [14, 204, 499, 500, 501, 2004, 20_004])
def test_the_complaints_pass_the_abuse_rate_over_what_compliance_judges(sent: int) -> None:
    [abuse] = [rule for rule in default_rules() if rule.metric == "abuse_rate"]
    complaints = complaints_past_the_limit(sent)
    assert Fraction(complaints, max(sent, JUDGED_AT_LEAST)) > abuse.threshold
    assert complaints <= max(sent // 2, 4)  # the rest of the demo still has readers
