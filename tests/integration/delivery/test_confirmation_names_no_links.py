"""On the real stack, through Kafka and SMTP: a confirmation email for a company named "Shop24.com" and a list named
"220.lv: Buy now, best prices in town" carries neither in its From name, subject or body (PRODUCT.md: "The
confirmation email contains only the request to confirm: no advertising, no other call to action"); plain names
are still shown."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

from herald_shared.contract.subscriptions import ConfirmationRequested
from tests.conftest import eventually

from .conftest import World


def confirmation(email_address: str, company: str, list_name: str) -> ConfirmationRequested:
    return ConfirmationRequested(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "subscriber_id": email_address.split("@")[0], "email": email_address, "list_name": list_name,
        "company_name": company, "confirm_url": "http://subs.test/confirm/tok",
        "expires_at": "2099-01-01T00:00:00Z"})


async def test_a_confirmation_names_no_domain_and_no_call_to_action(start_delivery: Any, relay: Any,
                                                                    world: World) -> None:
    await start_delivery()
    await world.open_account("acme")
    await world.publish(confirmation("ann@example.org", "Shop24.com", "220.lv: Buy now, best prices in town"),
                        confirmation("bob@example.org", "AS Latvenergo", "Riga Bakery news"))
    await eventually(relay.mailed, lambda r: sorted(r) == ["ann@example.org", "bob@example.org"],
                     what="both confirmations mailed")
    mails: dict[str, EmailMessage] = {}
    for received in relay.received:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mails[received.recipient] = message

    ann = mails["ann@example.org"]
    seen = f"{ann['From']}\n{ann['Subject']}\n{ann.get_content()}".lower()
    for part in ("shop24", "220", ".lv", ".com", "buy", "best prices"):
        assert part not in seen, part
    assert ann["From"].addresses[0].display_name == "Herald"
    assert ann["Subject"] == "Please confirm your subscription"
    assert ann.get_content().count("http") == 1 and "emails from this sender." in ann.get_content()

    bob = mails["bob@example.org"]
    assert bob["From"].addresses[0].display_name == "AS Latvenergo"
    assert bob["Subject"] == "Please confirm your subscription to Riga Bakery news"
