"""Delivery's tracking endpoints honour their published OpenAPI document: schemathesis (`--checks all`)
against the live service on the real stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.helpers import run_schemathesis


async def test_the_tracking_endpoints_honour_their_openapi_document(start_delivery: Any, tmp_path: Path) -> None:
    running = await start_delivery()
    await run_schemathesis(running.service.app, tmp_path, headers={}, max_examples=15)
