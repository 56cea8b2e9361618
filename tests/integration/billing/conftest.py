"""The billing service running in-process against the real stack; accounts opened through its own API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from herald_shared.settings import HeraldSettings

from .helpers import Platform, running_billing


@pytest.fixture
async def platform(settings: HeraldSettings) -> AsyncIterator[Platform]:
    async with running_billing(settings) as running:
        yield running
