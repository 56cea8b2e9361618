"""The unsubscribe link of a test message names no subscriber, so it unsubscribes no one: its page says the message
was a test and offers to stop the sender's tests (not "Unsubscribe"), and the RFC 8058 one-click POST a mail provider
makes is answered 2xx as for any message, publishing no unsubscription (only RecipientOptedOutOfTests:
test_test_send_opt_out.py). A test link of before it named its recipient still reads, and changes nothing. Delivery
renders the test, subscriptions serves the page, on the real stack."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

from herald_shared.contract.campaigns import CampaignTestRequested
from herald_shared.contract.subscriptions import RecipientOptedOutOfTests, SubscriberUnsubscribed
from herald_shared.links import LinkSigner
from tests.conftest import eventually
from tests.integration.helpers import form_token

from .conftest import SECRET, SubscriptionsBeside, World

CONTENT = {"subject": "November news", "from_name": "Acme News", "from_email": "news@acme.example",
           "html_body": "<html><body><h1>Hi {{ first_name }}</h1></body></html>", "text_body": "Hi {{ first_name }}"}


async def test_a_test_messages_unsubscribe_page_says_it_was_a_test_and_changes_nothing(
        start_delivery: Any, relay: Any, world: World, subscriptions: SubscriptionsBeside) -> None:
    async with subscriptions.pages() as pages:
        await start_delivery()
        await world.publish(CampaignTestRequested(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
            "campaign_id": "c1", "test_id": "t1", "recipients": ["tester@acme.example"], "content": CONTENT,
            "sample": {"first_name": "Sample"}, "requested_by": "anna"}))
        await eventually(relay.mailed, lambda r: "tester@acme.example" in r, what="the test mailed")
        message = email.message_from_bytes(relay.received[-1].data, policy=email.policy.default)
        assert isinstance(message, EmailMessage) and message["X-Herald-Test"] == "yes"
        path = str(message["List-Unsubscribe"]).split(",")[0].strip(" <>").removeprefix("http://subs.test")

        shown = await pages.get(path)
        assert shown.status_code == 200 and "This was a test message" in shown.text, shown.text
        assert "Stop test messages" in shown.text and "Unsubscribe</button>" not in shown.text
        older = LinkSigner(SECRET, "http://subs.test").unsubscribe_url("acme", "test:t0", "c1", "m0", test=True)
        older_path = older.removeprefix("http://subs.test")
        shown_older = await pages.get(older_path)
        assert "no subscription changed" in shown_older.text and "<form" not in shown_older.text
        assert (await pages.post(older_path, data={"List-Unsubscribe": "One-Click"})).text == (
            "This was a test message: its link belongs to no subscription, so no subscription changed.")

        one_click = await pages.post(path, data={"List-Unsubscribe": "One-Click"})
        assert one_click.status_code == 200 and "test message" in one_click.text, one_click.text
        assert "Unsubscribed." not in one_click.text
        by_hand = await pages.post(path, data=form_token(SECRET, path))
        assert by_hand.status_code == 200 and "This was a test message" in by_hand.text, by_hand.text
        assert "unsubscribed" not in by_hand.text.lower()

    # Each answer came after anything its handling published: none is an unsubscribe, and the older link
    # stopped nothing (the new link's one-click and button did).
    published = await world.events("herald.subscriptions")
    assert not [e for e in published if isinstance(e, SubscriberUnsubscribed)]
    stops = [e for e in published if isinstance(e, RecipientOptedOutOfTests)]
    assert len(stops) == 2 and "m0" not in {e.payload.message_id for e in stops}
