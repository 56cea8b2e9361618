"""A forgotten password end to end on the real stack, billing and delivery side by side with a real SMTP relay:
the request, PasswordResetRequested on Kafka without the link's secret, the link mailed to the account's registered
address (a member's reset too: users have no address of their own), the token taken from that mail, the new
password set once."""

from __future__ import annotations

import email
import email.policy
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from herald_shared.contract.billing import PasswordResetRequested, PaymentFailed
from herald_shared.contract.delivery import MessageSent
from herald_shared.kafka import read_from_start
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.billing.helpers import PASSWORD, running_billing

from .conftest import World

KEY = "the-reset-key-of-these-tests-0123"
NEW_PASSWORD = "a brand new passphrase"
LINK = re.compile(r"Link: (\S+)")


def mail_text(data: bytes) -> tuple[str, str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    body = message.get_body(("plain",))
    assert body is not None
    return str(message["Subject"]), body.get_content()


async def raw_events(settings: HeraldSettings, topic: str) -> list[bytes]:
    return [r.value async for batch in read_from_start(settings, [settings.topics(topic)]) for r in batch]


async def test_a_member_resets_a_forgotten_password_by_the_link_mailed_to_the_registered_address(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World) -> None:
    await start_delivery(HERALD_PASSWORD_RESET_KEY=KEY, HERALD_BILLING_PUBLIC_URL="https://billing.herald.test")
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as billing:
        ada = await billing.sign_up("ada", company="Acme Ltd")
        added = await ada.http.post("/v1/account/users", json={"username": "bob", "password": PASSWORD})
        assert added.status_code == 201, added.text

        unknown = await billing.http.post("/v1/password-resets", json={"username": "nobody"})
        asked = await billing.http.post("/v1/password-resets", json={"username": "bob"})
        assert unknown.status_code == asked.status_code == 202 and unknown.json() == asked.json()
        await billing.service.service.reset_requests_settled()

        await eventually(relay.mailed, lambda r: len(r) >= 1, what="the reset mail", within=60)
        assert relay.recipients() == ["ada@acme.example"]  # the account's registered address, for bob too
        subject, text = mail_text(relay.received[0].data)
        assert subject == "Herald: a password reset for bob"
        assert "A password reset was asked for user bob of Acme Ltd." in text
        assert "It works once, for one hour. If you did not ask, ignore this mail" in text
        assert "unsubscribe" not in text.lower() and b"/t/o/" not in relay.received[0].data  # a notice, untracked
        link = urlsplit(LINK.search(text)[1])  # type: ignore[index]
        assert (link.scheme, link.netloc, link.path) == ("https", "billing.herald.test", "/reset-password")
        query = parse_qs(link.query)
        request_id, token = query["request"][0], query["token"][0]

        resets = [e for e in await billing.events() if isinstance(e, PasswordResetRequested)]
        assert [(e.payload.request_id, e.payload.username) for e in resets] == [(request_id, "bob")]  # not nobody's
        assert not [raw for raw in await raw_events(settings, "herald.billing") if token.encode() in raw]
        assert not [raw for raw in await raw_events(settings, "herald.delivery") if token.encode() in raw]
        sent = await world.wait_for(lambda es: any(isinstance(e, MessageSent) for e in es), "the mail's MessageSent")
        assert {e.payload.kind for e in sent if isinstance(e, MessageSent)} == {"account_notice"}

        done = await billing.http.post(f"/v1/password-resets/{request_id}/completion",
                                       json={"token": token, "new_password": NEW_PASSWORD})
        assert done.status_code == 204, done.text
        old = await billing.http.post("/v1/sessions", json={"username": "bob", "password": PASSWORD})
        assert old.status_code == 401
        await billing.log_in("bob", ada.account_id, NEW_PASSWORD)
        again = await billing.http.post(f"/v1/password-resets/{request_id}/completion",
                                        json={"token": token, "new_password": "yet another passphrase"})
        assert again.status_code == 410 and again.json()["type"].endswith("password_reset_used")


async def test_without_the_key_delivery_mails_no_link_and_dead_letters_nothing(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Delivery not configured while billing is: the notice is skipped with a WARNING, not sent without a link nor
    dead-lettered; the notices after it go out."""
    monkeypatch.delenv("HERALD_PASSWORD_RESET_KEY", raising=False)  # scripts/run's, were it set here
    await start_delivery()
    async with running_billing(settings, HERALD_PASSWORD_RESET_KEY=KEY) as billing:
        ada = await billing.sign_up("ada")
        asked = await billing.http.post("/v1/password-resets", json={"username": "ada"})
        assert asked.status_code == 202
        await billing.service.service.reset_requests_settled()
        await eventually(billing.events, lambda es: any(isinstance(e, PasswordResetRequested) for e in es),
                         what="the request")
        # A notice after the reset: once it is mailed, delivery has handled the reset before it.
        await world.publish(PaymentFailed(account_id=ada.account_id, producer="billing", payload={
            "invoice_id": "2026-000001", "amount_cents": 900, "reason": "card declined", "attempt": 1}))
        await eventually(relay.mailed, lambda r: len(r) >= 1, what="the payment notice", within=60)
        subjects = [mail_text(r.data)[0] for r in relay.received]
        assert subjects == ["Herald: your payment failed"]
        dead = await raw_events(settings, "herald.billing.dlq")
        assert dead == []
        skipped, = [r for r in caplog.records if r.getMessage() == "password reset link not mailed"]
        assert (skipped.levelname, skipped.reason) == ("WARNING", "password_reset_not_configured")  # type: ignore[attr-defined]
