"""The compliance staff API honours its published OpenAPI document: schemathesis (`--checks all`) against the
live processor on the real stack, with a staff token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from herald_compliance.api import RatesOut
from tests.conftest import eventually
from tests.integration.helpers import UNTHROTTLED_API_KEYS, run_schemathesis

from .conftest import STAFF, Bus, sent


async def test_the_staff_api_honours_its_openapi_document(start_compliance: Any, bus: Bus, tmp_path: Path) -> None:
    running = await start_compliance(**UNTHROTTLED_API_KEYS)  # it sends wrong staff tokens again and again
    await bus.publish(*(sent("acc-1", "c1", i) for i in range(3)))
    # Generated account ids are never this one: its answer is checked against the documented model here.
    rates = await eventually(lambda: running.rates("acc-1"), lambda r: bool(r.get("scopes")), what="rates")
    RatesOut.model_validate(rates)
    await run_schemathesis(running.service.app, tmp_path, headers=STAFF, max_examples=15)
