"""The campaigns API honours its published OpenAPI document: schemathesis (`--checks all`) against the live
service on the real stack, with a valid API key and a list to target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import UNTHROTTLED_API_KEYS, run_schemathesis

from .conftest import STAFF, Platform, draft

# schemathesis 4.32's coverage phase, probing the boundaries of the path's campaign id, sends `0` as this
# operation's JSON body (not an object, so not schema-valid) and then reports the 422 as a valid request
# refused. The other phases (fuzzing, stateful) still test the operation with every check.
# Bodies are templates: whether one compiles (Jinja2 syntax, only the list's fields) is not JSON Schema's to
# describe, so a schema-valid draft may be refused with 422 (with the part, line and reason).
TEMPLATES_MAY_NOT_COMPILE = {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "409", "422",
                                                                               "503"]}}
PUT_COVERAGE_SENDS_INVALID_BODIES = {"include-path": "/v1/campaigns/{campaign_id}", "include-method": "PUT",
                                     "phases": {"coverage": {"enabled": False}}, "checks": TEMPLATES_MAY_NOT_COMPILE}
CREATE_TEMPLATES = {"include-path": "/v1/campaigns", "include-method": "POST", "checks": TEMPLATES_MAY_NOT_COMPILE}

# Whether a send time is acceptable depends on the clock (not in the past) and the zone's rules (no local time
# skipped by DST, a zone that exists), and whether the content may be submitted on what it says (screening):
# none of it is JSON Schema's to describe, so a schema-valid submission may be refused with 422.
SUBMISSION_DEPENDS_ON_TIME_AND_CONTENT = {
    "include-path": "/v1/campaigns/{campaign_id}/submission",
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "409", "422", "503"]}}}

# Whether a domain name is one (IDNA's rules, label lengths, a real top level) or a mailbox provider's, and whether
# the account added it already, is not JSON Schema's to say: a schema-valid domain may be refused with 409 or 422.
DOMAIN_RULES = {"include-path": "/v1/sending-domains", "include-method": "POST",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "409", "422", "503"]}}}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # the daily cap on test sends is a rule of its own (test_review_and_schedule.py), not this test's business
    return {**UNTHROTTLED_API_KEYS, "test_sends_per_day": 1_000_000}

async def test_the_api_honours_its_openapi_document(platform: Platform, tmp_path: Path) -> None:
    acme = await platform.tenant("acme", "news")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    await run_schemathesis(platform.service.app, tmp_path, headers={"Authorization": f"Bearer {acme.key}"},
                           max_examples=15, operations=[PUT_COVERAGE_SENDS_INVALID_BODIES, CREATE_TEMPLATES,
                                                        SUBMISSION_DEPENDS_ON_TIME_AND_CONTENT, DOMAIN_RULES],
                           extra_args=["--exclude-path-regex", "^/v1/staff/"])


async def test_the_staff_api_honours_its_openapi_document(platform: Platform, tmp_path: Path) -> None:
    acme = await platform.tenant("acme", "news", account="trial")
    assert (await acme.http.post("/v1/campaigns", json={**draft(), "campaign_id": "c1"})).status_code == 201
    assert (await acme.http.post("/v1/campaigns/c1/submission", json={})).json()["status"] == "in_review"
    await run_schemathesis(platform.service.app, tmp_path, headers=STAFF, max_examples=15,
                           extra_args=["--include-path-regex", "^/v1/staff/"])
