"""Delivery with its default HERALD_SMTP_STARTTLS=false and relay credentials, against the aiosmtpd relay of
test_relay_tls_auth (STARTTLS offered, AUTH only over TLS): the service upgrades the session and authenticates over
TLS, never in the clear."""

from __future__ import annotations

from typing import Any

from herald_shared.contract.delivery import MessageSent
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import World


async def test_default_settings_send_over_starttls_when_the_relay_offers_it(start_delivery: Any, tls_relay: Any,
                                                                           world: World) -> None:
    await start_delivery(HERALD_SMTP_PORT=tls_relay.port, HERALD_SMTP_VERIFY_TLS=False,
                         HERALD_SMTP_USERNAME="herald", HERALD_SMTP_PASSWORD="s3cret")
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s1", "a@example.org"), ("s2", "b@example.org")])
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(tls_relay.mailed, lambda r: len(r) == 2, what="both sent over TLS with AUTH")
    assert tls_relay.sessions == [(True, "herald"), (True, "herald")]
    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) == 2, "sent")
    assert all(e.payload.smtp_code == 250 for e in events if isinstance(e, MessageSent))
