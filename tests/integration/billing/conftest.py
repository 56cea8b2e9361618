"""The billing service running in-process against the real stack; accounts opened through its own API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions, SubscriptionsSettings

from .helpers import Platform, running_billing


@pytest.fixture
async def platform(settings: HeraldSettings) -> AsyncIterator[Platform]:
    async with running_billing(settings) as running:
        yield running


@pytest.fixture
async def subscriptions(settings: HeraldSettings) -> AsyncIterator[Subscriptions]:
    """herald-subscriptions beside billing, on the same stack (tests that need both)."""
    service = Subscriptions(SubscriptionsSettings(**settings.model_dump(), HERALD_LINK_SECRET="test-link-secret-0123",
                                                  HERALD_PUBLIC_URL="http://subs"))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
