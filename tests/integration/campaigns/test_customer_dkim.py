"""Per-customer DKIM keys on the real stack (Kafka, FerretDB, the test's DNS server and SMTP relay): a sending domain
added through campaigns gets one key from delivery (a redelivered addition makes no second), campaigns shows its
DNS record, the verification finds it there, and from then on the account's campaign mail From the domain is
signed d=<domain> s=herald1 (DMARC-aligned), verified by dkimpy against the published record; before, the
platform's key signs it, as it did; a delivery whose store lost its keys learns them back from the events."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pymongo import AsyncMongoClient

from herald_delivery.main import CUSTOMER_KEYS_RESTORED, Delivery
from herald_delivery.store import DKIM_KEYS, DKIM_SIGNING
from herald_shared.contract.campaigns import SendingDomainAdded, SendingDomainDkimVerified
from herald_shared.contract.delivery import DkimKeyCreated
from herald_shared.mongo import Document
from herald_shared.rebuilding import FORMATS
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.delivery.conftest import World, delivery_settings, relay, world  # noqa: F401 (fixtures)

from .conftest import Platform, Tenant, draft

ENCRYPTION_KEY = base64.b64encode(os.urandom(32)).decode()
ACCOUNT = "acc-dkim"


def platform_key(folder: Path) -> dict[str, bytes]:
    """The operator's key of the platform's domain (signs other domains' mail); its DNS record by name."""
    key = ed25519.Ed25519PrivateKey.generate()
    (folder / "p1._domainkey.herald.example.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"p1._domainkey.herald.example": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)}


def signatures(message: bytes, records: dict[str, bytes]) -> list[tuple[str, str, bool]]:
    """(d=, s=, verified by dkimpy) of each DKIM-Signature, top first."""
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode().removesuffix("."))

    checker = dkim.DKIM(message)
    found = []
    for index, (_, value) in enumerate(h for h in checker.headers if h[0].lower() == b"dkim-signature"):
        tags = dkim.util.parse_tag_value(value)
        found.append((tags[b"d"].decode(), tags[b"s"].decode(), bool(checker.verify(idx=index, dnsfunc=lookup))))
    return found


async def send_campaign(tenant: Tenant, sink: Any, campaign_id: str) -> bytes:
    """A campaign From news@acme.example to the one member, through the API: the message the relay got."""
    before = len(sink.received)
    created = await tenant.http.post("/v1/campaigns", json={**draft(subject=campaign_id), "campaign_id": campaign_id})
    assert created.status_code == 201, created.text
    submitted = await tenant.http.post(f"/v1/campaigns/{campaign_id}/submission", json={})
    assert submitted.status_code == 200, submitted.text
    await eventually(sink.mailed, lambda r: len(r) > before, within=60, what=f"{campaign_id} sent")
    return sink.received[-1].data  # type: ignore[no-any-return]


async def test_a_sending_domain_gets_its_own_key_and_its_mail_is_signed_aligned_once_the_record_is_found(
        platform: Platform, relay: Any, world: World, settings: HeraldSettings,  # noqa: F811
        mongo: AsyncMongoClient[Document], tmp_path: Path) -> None:
    records = platform_key(tmp_path)
    await world.open_account(ACCOUNT)
    await world.add_list(ACCOUNT, "news", [("s1", "ann@example.org")])
    acme = await platform.tenant(ACCOUNT, account="paid", sending_domains=())
    await eventually(lambda: platform.service.service.store.list_info(ACCOUNT, "news"), bool, what="list")

    def delivery() -> Delivery:
        return Delivery(delivery_settings(settings, relay.port, HERALD_DKIM_ENCRYPTION_KEY=ENCRYPTION_KEY,
                                          HERALD_DKIM_KEYS_DIR=str(tmp_path),
                                          HERALD_DKIM_DEFAULT_DOMAIN="herald.example"))

    running = delivery()
    await running.start()
    try:
        added = await acme.http.post("/v1/sending-domains", json={"domain": "acme.example"})
        assert added.status_code == 201, added.text
        shown = await eventually(lambda: acme.http.get("/v1/sending-domains/acme.example"),
                                 lambda r: r.json()["dkim"] is not None, what="the DKIM key shown")
        dkim_out = shown.json()["dkim"]
        [key] = [e for e in await world.events() if isinstance(e, DkimKeyCreated)]
        assert dkim_out == {"status": "pending", "selector": "herald1", "verified_at": None, "record": {
            "type": "TXT", "name": "herald1._domainkey.acme.example",
            "value": f"v=DKIM1; k=rsa; p={key.payload.public_key}"}}
        assert key.account_id == ACCOUNT and key.payload.encrypted_private_key not in shown.text

        # The addition redelivered (a producer's retry, a replay): no second key.
        [addition] = [e for e in await platform.events() if isinstance(e, SendingDomainAdded)]
        await platform.publisher.publish(addition)
        await eventually(lambda: running._caught_up(running.control_checkpoints, ["herald.campaigns"]),
                         lambda _: True, what="delivery read the redelivery")
        keys = {e.payload.public_key for e in await world.events() if isinstance(e, DkimKeyCreated)}
        assert keys == {key.payload.public_key}
        assert await mongo[settings.database_name("delivery")][DKIM_KEYS].count_documents({}) == 1

        # The domain verified, its DKIM record not published yet: verified, DKIM pending, mail signed as before.
        platform.dns.publish("acme.example", added.json()["record"]["value"])
        verified = await acme.http.post("/v1/sending-domains/acme.example/verification")
        assert verified.status_code == 200, verified.text
        assert verified.json()["status"] == "verified" and verified.json()["dkim"]["status"] == "pending"
        before = await send_campaign(acme, relay, "c1")
        assert signatures(before, records) == [("herald.example", "p1", True)]
        missing = await acme.http.post("/v1/sending-domains/acme.example/verification")
        assert missing.status_code == 409 and "herald1._domainkey.acme.example" in missing.json()["detail"]

        # The record published as shown: verified, and the account's mail From the domain is signed by its key.
        record = dkim_out["record"]
        platform.dns.txt[record["name"]] = [record["value"]]
        records[record["name"]] = record["value"].encode()
        found = await acme.http.post("/v1/sending-domains/acme.example/verification")
        assert found.status_code == 200 and found.json()["dkim"]["status"] == "verified", found.text
        assert found.json()["dkim"]["verified_at"] is not None
        assert [e.payload.public_key for e in await platform.events()
                if isinstance(e, SendingDomainDkimVerified)] == [key.payload.public_key]
        await eventually(lambda: running._caught_up(running.control_checkpoints, ["herald.campaigns"]),
                         lambda _: True, what="delivery read the verification")
        after = await send_campaign(acme, relay, "c2")
        assert signatures(after, records) == [("acme.example", "herald1", True)]
    finally:
        await running.stop()

    # A store that lost its keys (restored from an old backup, a new database): learnt back from the events.
    db = mongo[settings.database_name("delivery")]
    for name in (DKIM_KEYS, DKIM_SIGNING):
        await db[name].drop()
    await db[FORMATS].delete_one({"_id": CUSTOMER_KEYS_RESTORED})
    again = delivery()
    await again.start()
    try:
        rebuilt = await send_campaign(acme, relay, "c3")
        assert signatures(rebuilt, records) == [("acme.example", "herald1", True)]
        assert await db[DKIM_KEYS].count_documents({}) == 1
    finally:
        await again.stop()
