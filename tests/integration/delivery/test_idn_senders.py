"""A campaign From (and Reply-To) at an international domain on the real stack: sent through a relay without
SMTPUTF8 with an ASCII head (the domain as its A-labels), signed by the key filed under the Unicode name; a From
whose local part is not ASCII fails the campaign's messages once, with nothing sent."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from herald_shared.contract.campaigns import CampaignQueued
from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageSent

from .conftest import World
from .test_dkim import verifications, write_key

MEMBERS = [("s1", "anna@example.org"), ("s2", "ben@example.org"), ("s3", "cleo@example.org")]


def queued(from_email: str, reply_to: str | None = None) -> CampaignQueued:
    return CampaignQueued(account_id="acme", producer="campaigns", payload={
        "campaign_id": "c1", "list_id": "news", "segment": {"field_equals": {}}, "review_required": False,
        "content": {"subject": "Neue Bücher", "from_name": "Bücher", "from_email": from_email,
                    "reply_to": reply_to, "html_body": "<p>Hallo</p>", "text_body": "Hallo"}})


def finished(events: list[Any]) -> list[CampaignDeliveryFinished]:
    return [e for e in events if isinstance(e, CampaignDeliveryFinished)]


async def test_a_from_at_an_international_domain_goes_in_a_labels_signed_without_smtputf8(
        start_delivery: Any, relay: Any, world: World, tmp_path: Path) -> None:
    relay.behaviour.smtputf8 = False
    record = write_key(tmp_path, "s1", "bücher.de", ed25519.Ed25519PrivateKey.generate())
    await start_delivery(HERALD_DKIM_KEYS_DIR=str(tmp_path))
    await world.open_account("acme")
    await world.add_list("acme", "news", MEMBERS)
    await world.publish(queued("news@xn--bcher-kva.de", reply_to="hilfe@bücher.de"))
    events = await world.wait_for(lambda es: bool(finished(es)), "CampaignDeliveryFinished")
    assert finished(events)[0].payload.sent == len(MEMBERS)
    assert len([e for e in events if isinstance(e, MessageSent)]) == len(MEMBERS)
    assert sorted(relay.recipients()) == sorted(address for _, address in MEMBERS)
    for received in relay.received:
        assert received.data.split(b"\r\n\r\n")[0].isascii()
        message = email.message_from_bytes(received.data, policy=email.policy.strict)
        assert message["From"].addresses[0].addr_spec == "news@xn--bcher-kva.de"
        assert str(message["Reply-To"]) == "hilfe@xn--bcher-kva.de"
        assert verifications(received.data, {b"s1._domainkey.xn--bcher-kva.de": record}) == [
            (b"xn--bcher-kva.de", True)]


async def test_a_from_whose_local_part_is_not_ascii_fails_the_campaign_and_sends_nothing(
        start_delivery: Any, relay: Any, world: World) -> None:
    await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", MEMBERS)
    await world.publish(queued("josé@bücher.de"))
    events = await world.wait_for(lambda es: bool(finished(es)), "CampaignDeliveryFinished")
    outcome = finished(events)[0].payload
    assert (outcome.sent, outcome.failed) == (0, len(MEMBERS))
    assert relay.recipients() == []
