"""The billing API honours its published OpenAPI document: schemathesis (`--checks all`) against the live
service on the real stack, with a signed-in owner, and with a staff token for the staff API."""

from __future__ import annotations

from pathlib import Path

from herald_shared.settings import HeraldSettings
from tests.integration.helpers import UNTHROTTLED_API_KEYS, run_schemathesis

from .helpers import STAFF, Platform, running_billing

# Whether a password is good enough (not containing the username, not one character repeated), a username
# free, the terms accepted, the current password right or an owner asking: none of it is JSON Schema's to
# describe, so a schema-valid request may be refused with 403, 409 or 422.
RULES_BEYOND_THE_SCHEMA = {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409",
                                                                             "422", "429", "503"]}}


async def test_the_api_honours_its_openapi_document(platform: Platform, tmp_path: Path) -> None:
    """Logging out, changing the password and deleting the account end the session the run uses: those are
    proved by test_accounts_and_access and test_retention instead."""
    ada = await platform.sign_up("ada")
    assert (await ada.http.post("/v1/account/api-keys", json={"label": "crm"})).status_code == 201
    await run_schemathesis(platform.service.app, tmp_path, headers={"Authorization": f"Bearer {ada.token}"},
                           max_examples=15, checks=RULES_BEYOND_THE_SCHEMA,
                           extra_args=["--exclude-path-regex", "^/v1/staff/|password$", "--exclude-method", "DELETE"])


async def test_the_staff_api_honours_its_openapi_document(settings: HeraldSettings, tmp_path: Path) -> None:
    # Schemathesis sends wrong staff tokens again and again to check they are refused 401: lift the throttle.
    async with running_billing(settings, **UNTHROTTLED_API_KEYS) as platform:
        await platform.sign_up("ada")
        await run_schemathesis(platform.service.app, tmp_path, headers=STAFF, max_examples=15,
                               checks=RULES_BEYOND_THE_SCHEMA, extra_args=["--include-path-regex", "^/v1/staff/"])
