"""The relay connection with STARTTLS and AUTH, against an aiosmtpd relay that requires both."""

from __future__ import annotations

from typing import Any

import pytest

from herald_shared.contract.delivery import MessageSent
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import World


@pytest.mark.parametrize("required", [True, False], ids=["starttls_required", "starttls_by_default"])
async def test_delivery_sends_over_starttls_with_auth(start_delivery: Any, tls_relay: Any, world: World,
                                                      required: bool) -> None:
    """Required, or by default: STARTTLS is used whenever the relay offers it, and AUTH goes only over TLS."""
    await start_delivery(HERALD_SMTP_PORT=tls_relay.port, HERALD_SMTP_STARTTLS=required, HERALD_SMTP_VERIFY_TLS=False,
                         HERALD_SMTP_USERNAME="herald", HERALD_SMTP_PASSWORD="s3cret")
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "a@example.org"), ("s2", "b@example.org")])
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(tls_relay.mailed, lambda r: len(r) == 2, what="both sent over TLS with AUTH")
    assert tls_relay.sessions == [(True, "herald"), (True, "herald")]
    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) == 2, "sent")
    assert all(e.payload.smtp_code == 250 for e in events if isinstance(e, MessageSent))


async def test_wrong_credentials_defer_instead_of_losing_the_message(start_delivery: Any, tls_relay: Any,
                                                                    world: World) -> None:
    from herald_shared.contract.delivery import MessageDeferred

    await start_delivery(HERALD_SMTP_PORT=tls_relay.port, HERALD_SMTP_STARTTLS=True, HERALD_SMTP_VERIFY_TLS=False,
                         HERALD_SMTP_USERNAME="herald", HERALD_SMTP_PASSWORD="wrong")
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "a@example.org")])
    await world.publish(campaign_queued("acme", "c1"))
    events = await world.wait_for(lambda es: any(isinstance(e, MessageDeferred) for e in es), "deferred")
    deferred = next(e for e in events if isinstance(e, MessageDeferred)).payload
    assert deferred.smtp_code is None  # our configuration, not the recipient: deferred, never bounced
    assert "AUTH refused: 535 5.7.8" in deferred.diagnostic
    assert tls_relay.recipients() == []
