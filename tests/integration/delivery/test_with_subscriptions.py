"""Subscriptions and delivery together on the real stack, talking only through Kafka: the confirmation
email's link confirms, a campaign's one-click unsubscribe link and its mailto address unsubscribe (recording
the campaign), and a DSN for a campaign message suppresses the address."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from typing import Any

from herald_shared.contract.subscriptions import SubscriberSuppressed, SubscriberUnsubscribed
from tests.conftest import eventually
from tests.integration.helpers import form_token
from tests.samples import campaign_queued

from .conftest import SECRET, SubscriptionsBeside, World, dsn, mail_inbound


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_confirm_unsubscribe_and_bounce_across_the_two_services(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside) -> None:
    api = subscriptions.api
    async with subscriptions.pages() as pages:
        running = await start_delivery()
        created = await api.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "double"})
        assert created.status_code == 201, created.text
        for address in ("ann@example.org", "bob@example.org"):
            response = await api.post("/v1/lists/news/subscribers",
                                      json={"email": address, "consent": {"method": "signup form"}})
            assert response.status_code in (200, 201), response.text

        # Double opt-in: delivery mails the confirmation; its only link confirms through subscriptions' page.
        await eventually(relay.mailed, lambda r: sorted(r) == ["ann@example.org", "bob@example.org"],
                         what="confirmation emails")
        for mail in list(relay.received):
            body = parsed(mail.data).get_content()
            links = re.findall(r"http://subs\.test/confirm/\S+", body)
            assert len(links) == 1
            path = links[0].removeprefix("http://subs.test")
            confirmed = await pages.post(path, data=form_token(SECRET, path))
            assert confirmed.status_code == 200 and "confirmed" in confirmed.text

        # A campaign reaches both (delivery's own audience projection saw the confirmations).
        await world.publish(campaign_queued("acme", "c1"))
        await eventually(relay.mailed, lambda r: len(r) == 4, what="campaign sent to both")
        campaign_mail = {m.recipient: parsed(m.data) for m in relay.received[2:]}
        return_paths = {m.recipient: m.mail_from for m in relay.received[2:]}

        # RFC 8058 one-click unsubscribe with the List-Unsubscribe URL of Ann's message.
        url = str(campaign_mail["ann@example.org"]["List-Unsubscribe"]).split(",")[0].strip(" <>")
        answer = await pages.post(url.removeprefix("http://subs.test"), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200, answer.text

        async def of_subscriptions(cls: type) -> list[Any]:
            return [e for e in await world.events("herald.subscriptions") if isinstance(e, cls)]

        unsubscribed = await eventually(lambda: of_subscriptions(SubscriberUnsubscribed), lambda es: len(es) == 1,
                                        what="one-click unsubscribe recorded")
        assert (unsubscribed[0].payload.source, unsubscribed[0].payload.campaign_id) == ("one_click", "c1")
        assert unsubscribed[0].payload.message_id is not None

        # Bob uses the mailto address of List-Unsubscribe (RFC 2369) instead: a mail to it unsubscribes too.
        mailto = str(campaign_mail["bob@example.org"]["List-Unsubscribe"]).split(",")[1].strip(" <>")
        address = mailto.removeprefix("mailto:").split("?")[0]
        await mail_inbound(running, address, "From: bob@example.org\r\nSubject: unsubscribe\r\n\r\n\r\n",
                           sender="bob@example.org")
        both = await eventually(lambda: of_subscriptions(SubscriberUnsubscribed), lambda es: len(es) == 2,
                                what="mailto unsubscribe recorded")
        by_mail = next(e for e in both if e.payload.source == "mailto").payload
        assert (by_mail.campaign_id, by_mail.list_id) == ("c1", "news")

        # A hard-bounce DSN for Bob's message: delivery reports it, subscriptions suppresses the address.
        bob_path = return_paths["bob@example.org"]
        await mail_inbound(running, bob_path, dsn(bob_path, "failed", "5.1.1", "550 5.1.1 user unknown"))

        found = await eventually(lambda: of_subscriptions(SubscriberSuppressed), lambda es: len(es) == 1,
                                 what="suppression")
        assert found[0].payload.reason == "hard_bounce" and found[0].payload.campaign_id == "c1"


async def test_the_customer_is_notified_of_subscribes_and_unsubscribes_when_it_asked_to_be(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside) -> None:
    """PRODUCT.md "Data protection": the customer is notified of subscribes and unsubscribes when it asked to be.
    A list that asked (PUT .../notifications): each subscribe (a double opt-in confirmed, the API adding an active
    member) and each unsubscribe by the member (one click, a mail to the List-Unsubscribe address) is one email
    to the registered address; an import and the account's own API unsubscribe notify nothing, nor does a list
    that did not ask. (A complaint notifies nothing either: who complained is never disclosed; the domain's unit
    test covers it.)"""
    from herald_shared.contract.subscriptions import MembershipNoticeRequested

    api, owner = subscriptions.api, "owner@acme.example"
    async with subscriptions.pages() as pages:
        running = await start_delivery()
        for list_id, opt_in in (("news", "double"), ("quiet", "single"), ("shop", "single")):
            created = await api.post("/v1/lists", json={"list_id": list_id, "name": list_id.title(), "opt_in": opt_in})
            assert created.status_code == 201, created.text
        for list_id in ("news", "shop"):
            asked = await api.put(f"/v1/lists/{list_id}/notifications", json={"subscribes": True, "unsubscribes": True})
            assert asked.status_code == 200 and asked.json()["notifications"] == {"subscribes": True,
                                                                                   "unsubscribes": True}, asked.text
        assert (await api.get("/v1/lists/quiet")).json()["notifications"] == {"subscribes": False,
                                                                               "unsubscribes": False}
        consent, ids = {"method": "signup form"}, {}
        for list_id, address in (("news", "ann@example.org"), ("quiet", "quinn@example.org"),
                                 ("shop", "sam@example.org")):
            added = await api.post(f"/v1/lists/{list_id}/subscribers", json={"email": address, "consent": consent})
            assert added.status_code in (200, 201), added.text
            ids[address] = added.json()["subscriber_id"]
        imported = await api.post("/v1/lists/shop/imports", headers={"Content-Type": "text/csv"},
                                  content=b"email,consent_method,consent_at\nimp@example.org,fair,2026-11-01T00:00:00Z\n")
        assert imported.status_code == 202 and imported.json()["rows_imported"] == 1, imported.text

        # Sam (API, single opt-in) is noticed at once; Ann once she confirms; Quinn's list did not ask.
        await eventually(relay.mailed, lambda r: sorted(r) == ["ann@example.org", owner], what="notice, confirmation")
        confirmation = next(m for m in relay.received if m.recipient == "ann@example.org")
        path = re.findall(r"http://subs\.test/confirm/\S+", parsed(confirmation.data).get_content())[0]
        path = path.removeprefix("http://subs.test")
        assert (await pages.post(path, data=form_token(SECRET, path))).status_code == 200
        await eventually(relay.mailed, lambda r: r.count(owner) == 2, what="the confirmation noticed")

        # Unsubscribes: Sam by one click, then Ann by the account's own API call (no notice).
        await world.publish(campaign_queued("acme", "c1", list_id="shop"))
        await eventually(relay.mailed, lambda r: "sam@example.org" in r and "imp@example.org" in r,
                         what="the campaign")
        sams = parsed(next(m.data for m in relay.received if m.recipient == "sam@example.org"))
        url = str(sams["List-Unsubscribe"]).split(",")[0].strip(" <>")
        answer = await pages.post(url.removeprefix("http://subs.test"), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200, answer.text
        await eventually(relay.mailed, lambda r: r.count(owner) == 3, what="the unsubscribe noticed")
        # The imported member (whose subscribe was not noticed) leaves by a mail to the List-Unsubscribe address.
        imps = parsed(next(m.data for m in relay.received if m.recipient == "imp@example.org"))
        mailto = str(imps["List-Unsubscribe"]).split(",")[1].strip(" <>").removeprefix("mailto:").split("?")[0]
        await mail_inbound(running, mailto, "From: imp@example.org\r\nSubject: unsubscribe\r\n\r\n\r\n",
                           sender="imp@example.org")
        await eventually(relay.mailed, lambda r: r.count(owner) == 4, what="the mailto unsubscribe noticed")
        gone = await api.post(f"/v1/subscribers/{ids['ann@example.org']}/unsubscribe")
        assert gone.status_code == 200, gone.text

        notices = [e for e in await world.events("herald.subscriptions") if isinstance(e, MembershipNoticeRequested)]
        assert sorted((e.payload.email, e.payload.change, e.payload.how) for e in notices) == [
            ("ann@example.org", "subscribed", "double_opt_in"), ("imp@example.org", "unsubscribed", "mailto"),
            ("sam@example.org", "subscribed", "api"), ("sam@example.org", "unsubscribed", "one_click")]
        texts = sorted(m.data.replace(b"=\r\n", b"").decode() for m in relay.received if m.recipient == owner)
        assert any("Subject: Herald: sam@example.org unsubscribed from Shop" in t for t in texts)
        assert any("ann@example.org subscribed to your list News confirmed by the link" in t for t in texts)
        await running.service.audience_caught_up()
        assert relay.recipients().count(owner) == 4
