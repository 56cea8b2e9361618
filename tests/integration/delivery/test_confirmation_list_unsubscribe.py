"""Subscriptions and delivery on the real stack: the double opt-in confirmation email carries List-Unsubscribe
with List-Unsubscribe-Post (PRODUCT.md: every message "carries an unsubscribe link ... one click (RFC 8058)"), so
the person whose address someone else posted to a form says "do not subscribe me" in one click. The pending
membership is then unsubscribed (an opt-out the customer cannot undo), and its confirm link no longer confirms
(both audience folds take a confirmation after an unsubscribe as a race); the person can subscribe again through
the form."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from typing import Any

from herald_shared.contract.subscriptions import SubscriberUnsubscribed
from tests.conftest import eventually
from tests.integration.helpers import form_token

from .conftest import SECRET, SubscriptionsBeside, World


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_a_confirmation_email_is_refused_in_one_click_and_the_opt_out_stands(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside) -> None:
    api = subscriptions.api
    async with subscriptions.pages() as pages:
        await start_delivery()
        created = await api.post("/v1/lists", json={"list_id": "news", "name": "News", "opt_in": "double"})
        assert created.status_code == 201, created.text
        ids = {}
        for address in ("ann@example.org", "bob@example.org"):
            added = await api.post("/v1/lists/news/subscribers",
                                   json={"email": address, "consent": {"method": "signup form"}})
            assert added.status_code == 201 and added.json()["outcome"] == "pending", added.text
            ids[address] = added.json()["subscriber_id"]
        await eventually(relay.mailed, lambda r: sorted(r) == ["ann@example.org", "bob@example.org"],
                         what="confirmation emails")
        mails = {m.recipient: parsed(m.data) for m in relay.received}

        ann = mails["ann@example.org"]
        assert ann["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url, mailto = (part.strip(" <>") for part in str(ann["List-Unsubscribe"]).split(","))
        assert url.startswith("http://subs.test/unsubscribe/") and mailto.startswith("mailto:")
        body = ann.get_content()
        assert body.count("http") == 1  # the body is still the request to confirm alone
        confirm_path = re.findall(r"http://subs\.test/confirm/\S+", body)[0].removeprefix("http://subs.test")

        # Ann's mail client sends the RFC 8058 POST.
        answer = await pages.post(url.removeprefix("http://subs.test"), data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200, answer.text

        async def unsubscribes() -> list[SubscriberUnsubscribed]:
            return [e for e in await world.events("herald.subscriptions") if isinstance(e, SubscriberUnsubscribed)]

        recorded = await eventually(unsubscribes, lambda es: len(es) == 1, what="the one-click opt-out recorded")
        payload = recorded[0].payload
        assert (payload.subscriber_id, payload.list_id, payload.source, payload.campaign_id) == (
            ids["ann@example.org"], "news", "one_click", None)
        member = await eventually(lambda: api.get(f"/v1/subscribers/{ids['ann@example.org']}"),
                                  lambda r: r.json()["status"] == "unsubscribed", what="Ann unsubscribed")
        assert member.status_code == 200

        # Twice is the same as once.
        again = await pages.post(url.removeprefix("http://subs.test"), data={"List-Unsubscribe": "One-Click"})
        assert again.status_code == 200
        # The customer cannot add her again: only her own double opt-in could.
        readded = await api.post("/v1/lists/news/subscribers",
                                 json={"email": "ann@example.org", "consent": {"method": "signup form"}})
        assert readded.status_code == 409 and "previously_unsubscribed" in readded.text, readded.text
        # Her confirm link does not undo the opt-out; the page says how to subscribe.
        confirmed = await pages.post(confirm_path, data=form_token(SECRET, confirm_path))
        assert confirmed.status_code == 410 and "subscribe form" in confirmed.text, confirmed.text
        assert (await api.get(f"/v1/subscribers/{ids['ann@example.org']}")).json()["status"] == "unsubscribed"

        # Bob opens the link in a browser: the page speaks of a subscription he never had, and its button works.
        bob_url = str(mails["bob@example.org"]["List-Unsubscribe"]).split(",")[0].strip(" <>")
        bob_path = bob_url.removeprefix("http://subs.test")
        shown = await pages.get(bob_path)
        assert shown.status_code == 200 and "Do not subscribe me" in shown.text and "News" in shown.text
        done = await pages.post(bob_path, data={**form_token(SECRET, bob_path), "confirm": "yes"})
        assert done.status_code == 200 and "You will not be subscribed to News" in done.text, done.text
        both = await eventually(unsubscribes, lambda es: len(es) == 2, what="Bob's opt-out recorded")
        assert {e.payload.source for e in both} == {"one_click", "unsubscribe_page"}
        assert len(await unsubscribes()) == 2 and len(relay.received) == 2
