"""Bounces of messages really sent, mailed back to the inbound server in the formats real MTAs write, on the
real stack: each becomes one MessageBounced of the right class; only `hard` suppresses (subscriptions running);
a burst of blocks warns, then suspends (compliance running)."""

from __future__ import annotations

import email
from typing import Any

import httpx

from herald_compliance.main import Compliance
from herald_shared.contract.compliance import AccountSuspended, AccountWarned
from herald_shared.contract.delivery import MessageBounced, MessageSent
from herald_shared.contract.subscriptions import SubscriberSuppressed
from herald_shared.settings import HeraldSettings
from herald_subscriptions.main import Subscriptions, SubscriptionsSettings
from tests.conftest import eventually
from tests.integration.compliance.conftest import STAFF, compliance_settings
from tests.samples import campaign_queued

from .conftest import BOUNCE_DOMAIN, SECRET, World, delivery_report, dsn, mail_inbound

AUDIENCE = [("s1", "lena@t-online.de"), ("s2", "otto@web-de.example"), ("s3", "mia@example.org"),
            ("s4", "paul@example.org"), ("s5", "jan@t-online.de"), ("s6", "eva@example.org")]


def plain_bounce(reason: str, quoted_message_id: str) -> str:
    """A non-DSN bounce (qmail's format) that quotes the original inline below its explanation."""
    return ("From: MAILER-DAEMON@mx.web-de.example\r\nTo: postmaster@" + BOUNCE_DOMAIN + "\r\n"
            "Subject: failure notice\r\n\r\nHi. This is the qmail-send program at mx.web-de.example.\r\n"
            "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n"
            f"<otto@web-de.example>:\r\n{reason}\r\n\r\n--- Below this line is a copy of the message.\r\n\r\n"
            f"Message-ID: {quoted_message_id}\r\nSubject: Spring sale\r\n\r\nno such user, blocked, spam\r\n")


async def sent_to(start_delivery: Any, relay: Any, world: World, audience: list[tuple[str, str]],
                  **overrides: Any) -> tuple[Any, dict[str, Any]]:
    running = await start_delivery(**overrides)
    await world.open_account("acme")
    await world.add_list("acme", "news", audience)
    await world.publish(campaign_queued("acme", "c1"))
    await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) == len(audience), "all sent")
    return running, {r.recipient: r for r in relay.received}


async def test_each_kind_of_bounce_is_recorded_once_with_its_class_and_only_hard_suppresses(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World) -> None:
    subscriptions = Subscriptions(SubscriptionsSettings(**settings.model_dump(), HERALD_LINK_SECRET=SECRET,
                                                        HERALD_PUBLIC_URL="http://subs.test"))
    await subscriptions.start()
    try:
        running, mail = await sent_to(start_delivery, relay, world, AUDIENCE)
        path = {address: mail[address].mail_from for _, address in AUDIENCE}
        # A spam block (Gmail's wording) in a DSN whose Status is only 5.0.0.
        lena = path["lena@t-online.de"]
        await mail_inbound(running, lena, dsn(lena, "failed", "5.0.0", "550-5.7.1 [192.0.2.7] Our system has "
                                              "detected that this message is likely unsolicited mail."))
        # A blocklist listing in a plain-text bounce for a hyphenated domain, tied only by the quoted Message-ID.
        otto_id = email.message_from_bytes(mail["otto@web-de.example"].data)["Message-ID"]
        await mail_inbound(running, f"postmaster@{BOUNCE_DOMAIN}", plain_bounce(
            "Remote host said: 554 Service unavailable; client host blocked, listed at zen.spamhaus.org", otto_id))
        # Mailbox full, and a report nothing classifies.
        mia, paul = path["mia@example.org"], path["paul@example.org"]
        await mail_inbound(running, mia, dsn(mia, "failure", "5.2.2", "552 5.2.2 mailbox full"))
        await mail_inbound(running, paul, f"From: postmaster@example.org\r\nTo: {paul}\r\nSubject: Returned mail"
                                          "\r\n\r\nYour mail could not be handled here.\r\n")
        # Lenient DSN, the recipient named three times, reported twice: one hard bounce.
        jan = path["jan@t-online.de"]
        lenient = "Final-Recipient: rfc822; jan@t-online.de\r\nAction: failed (Bad destination mailbox address)\r\n" \
                  "Status: 553\r\nDiagnostic-Code: smtp; 553 sorry, no mailbox here by that name\r\n"
        await mail_inbound(running, jan, delivery_report(jan, lenient, lenient, lenient))
        await mail_inbound(running, jan, delivery_report(jan, lenient.replace("553 sorry", "553 Sorry")))

        # The server answers 250 once the events are in Kafka: what is there now is all there will be.
        bounces = [e for e in await world.events() if isinstance(e, MessageBounced)]
        by_subscriber = {e.payload.subscriber_id: e.payload for e in bounces}
        assert len(bounces) == len(by_subscriber) == 5
        assert {s: p.bounce_class for s, p in by_subscriber.items()} == {
            "s1": "block", "s2": "block", "s3": "soft", "s4": "undetermined", "s5": "hard"}
        assert by_subscriber["s5"].smtp_code == 553 and by_subscriber["s1"].enhanced_status_code == "5.0.0"
        assert "zen.spamhaus.org" in by_subscriber["s2"].diagnostic

        async def suppressed() -> list[SubscriberSuppressed]:
            return [e for e in await world.events("herald.subscriptions") if isinstance(e, SubscriberSuppressed)]

        # Subscriptions handles delivery's events in order, and the hard bounce came last.
        found = await eventually(suppressed, lambda es: len(es) >= 1, what="the hard bounce suppressing")
        assert [(e.payload.subscriber_id, e.payload.reason) for e in found] == [("s5", "hard_bounce")]
    finally:
        await subscriptions.stop()


async def test_a_burst_of_blocks_warns_then_suspends_on_the_block_rate_not_the_hard_bounce_rate(
        settings: HeraldSettings, start_delivery: Any, relay: Any, world: World) -> None:
    compliance = Compliance(compliance_settings(settings, HERALD_RATE_MINIMUM_SENT=20))
    await compliance.start()
    staff = httpx.AsyncClient(transport=httpx.ASGITransport(app=compliance.app), base_url="http://compliance.test")
    audience = [(f"s{i}", f"r{i}@mail-box.example") for i in range(100)]
    try:
        running, mail = await sent_to(start_delivery, relay, world, audience)

        async def campaign_counts() -> dict[str, Any]:
            response = await staff.get("/v1/accounts/acme/rates", headers=STAFF)
            scopes = response.json()["scopes"] if response.status_code == 200 else []
            return next((s["counts"] for s in scopes if s["name"] == "c1"), {})

        await eventually(campaign_counts, lambda c: c.get("sent") == 100, what="100 sends counted")

        async def block(address: str) -> None:
            path = mail[address].mail_from
            await mail_inbound(running, path, dsn(path, "failed", "5.7.1",
                                                  "554 5.7.1 Service unavailable; client host blocked using "
                                                  "zen.spamhaus.org"))

        for i in range(2):  # 2%: the warning level
            await block(f"r{i}@mail-box.example")
        warned = await eventually(lambda: world.events("herald.compliance"),
                                  lambda es: any(isinstance(e, AccountWarned) for e in es), what="a warning")
        assert {e.payload.metric for e in warned if isinstance(e, AccountWarned)} == {"block_rate"}
        assert not any(isinstance(e, AccountSuspended) for e in warned)

        for i in range(2, 5):  # 5%: suspends
            await block(f"r{i}@mail-box.example")
        events = await eventually(lambda: world.events("herald.compliance"),
                                  lambda es: any(isinstance(e, AccountSuspended) for e in es), what="suspension")
        [suspension] = [e for e in events if isinstance(e, AccountSuspended)]
        assert suspension.payload.metric == "block_rate" and suspension.payload.value == 0.05
        assert suspension.payload.counts is not None
        assert (suspension.payload.counts.blocks, suspension.payload.counts.hard_bounces) == (5, 0)
        assert await campaign_counts() == {"sent": 100, "hard_bounces": 0, "complaints": 0, "unsubscribes": 0,
                                           "blocks": 5}
    finally:
        await staff.aclose()
        await compliance.stop()
