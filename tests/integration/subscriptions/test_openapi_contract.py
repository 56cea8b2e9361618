"""The subscriptions API honours its published OpenAPI document: schemathesis (`--checks all`) against the live
service on the real stack, with a valid API key and a list it can work on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import UNTHROTTLED_API_KEYS, run_schemathesis

from .conftest import Platform

# CSV content is not JSON Schema's to describe: a file that is not UTF-8 CSV with the required columns is
# refused with 422 though any string matches `text/csv`. Every other route accepts what its schema allows.
IMPORT_REFUSES_UNREADABLE_FILES = {"include-path": "/v1/lists/{list_id}/imports",
                                   "checks": {"positive_data_acceptance": {
                                       "expected-statuses": ["2xx", "401", "404", "409", "422", "503"]}}}
# Nor can JSON Schema say "not after now": consent collected in the future is refused with 422
# (`invalid_consent`) though the schema's date-time allows any year.
SUBSCRIBE_REFUSES_FUTURE_CONSENT = {
    "include-path": "/v1/lists/{list_id}/subscribers", "include-method": "POST",
    "checks": {"positive_data_acceptance": {  # schemathesis' default statuses, and 422
        "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]}}}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return UNTHROTTLED_API_KEYS

async def test_the_api_honours_its_openapi_document(platform: Platform, tmp_path: Path) -> None:
    tenant = await platform.tenant("acme")
    await tenant.create_list("news", custom_fields=[{"name": "city", "kind": "text"}])
    subscribed = await tenant.subscribe("ann@example.org")
    assert subscribed.status_code == 201, subscribed.text
    await run_schemathesis(platform.service.app, tmp_path, headers={"Authorization": f"Bearer {tenant.key}"},
                           max_examples=15,
                           operations=[IMPORT_REFUSES_UNREADABLE_FILES, SUBSCRIBE_REFUSES_FUTURE_CONSENT])
