"""Test sends on the real stack: a CampaignTestRequested, as campaigns publishes it, becomes one marked message
per address, rendered with the sample values; its outcomes are of kind "test"; a redelivered request sends
nothing twice; review does not hold tests, a suspension refuses them."""

from __future__ import annotations

import email
import email.policy
import uuid
from email.message import EmailMessage
from typing import Any

from herald_shared.contract.campaigns import CampaignTestRequested
from herald_shared.contract.compliance import AccountSuspended
from herald_shared.contract.delivery import MessageSent
from tests.conftest import eventually

from .conftest import World

CONTENT = {"subject": "News for {{ first_name | default('you') }}", "preheader": "Hello {{ first_name }}",
           "from_name": "Acme News", "from_email": "news@acme.example",
           "html_body": "<html><body><h1>Hi {{ first_name }}</h1><p>{% if city %}From {{ city }}{% endif %}</p>"
                        "<a href='https://acme.example/sale'>Sale</a></body></html>",
           "text_body": 'Hello {{ first_name | default("friend") }} from {{ city }}!'}


def requested(test_id: str, *recipients: str) -> CampaignTestRequested:
    return CampaignTestRequested(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "test_id": test_id, "recipients": list(recipients), "content": CONTENT,
        "sample": {"first_name": "Sample", "city": "Ventspils"}, "requested_by": "anna"})


def marked_for(relay: Any, address: str) -> list[EmailMessage]:
    found = []
    for received in relay.received:
        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if received.recipient == address and message["X-Herald-Test"] == "yes":
            found.append(message)
    return found


async def test_a_test_send_reaches_each_address_once_marked_and_rendered_with_the_sample(
        start_delivery: Any, relay: Any, world: World) -> None:
    running = await start_delivery()
    await world.open_account("acme", approved=False)  # staff review holds campaigns, not tests
    request = requested("t1", "tester@acme.example", "Editor@Acme.example", "tester@acme.example")
    await world.publish(request)
    await eventually(relay.mailed, lambda r: len(r) >= 2, what="both addresses mailed")

    message, = marked_for(relay, "tester@acme.example")
    assert message["Subject"] == "[Test] News for Sample"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    assert "Hello Sample from Ventspils!" in text.get_content()
    html_text = html.get_content()
    assert "<h1>Hi Sample</h1><p>From Ventspils</p>" in html_text and ">Hello Sample</div>" in html_text
    assert "https://acme.example/sale" in html_text and "/t/c/" not in html_text  # a test is not tracked
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(marked_for(relay, "Editor@acme.example")) == 1  # as the contract normalises it

    events = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) >= 2,
                                  "the outcomes of the test")
    sent = [e for e in events if isinstance(e, MessageSent)]
    assert sorted(e.payload.kind for e in sent) == ["test", "test"]
    assert all(e.payload.campaign_id == "c1" and e.payload.subscriber_id is None for e in sent)

    # A redelivered request (a new event id, as a retrying producer sends it) sends nothing again: a later
    # request is handled after it, so once that one is mailed the redelivery has been handled too.
    await world.publish(request.model_copy(update={"event_id": uuid.uuid4()}), requested("t2", "second@acme.example"))
    await eventually(relay.mailed, lambda r: "second@acme.example" in r, what="the second test mailed")
    assert len(marked_for(relay, "tester@acme.example")) == 1 and len(marked_for(relay, "Editor@acme.example")) == 1
    assert await running.service.store.jobs.count_documents({"test_id": "t1"}) == 2


async def test_a_suspended_account_cannot_send_tests(start_delivery: Any, relay: Any, world: World) -> None:
    """A suspended account must not mail anyone through test sends: the request is recorded as refused."""
    running = await start_delivery()
    await world.open_account("acme")
    await world.publish(AccountSuspended(account_id="acme", producer="compliance", payload={  # type: ignore[arg-type]
        "metric": "hard_bounce_rate", "value": 0.09, "threshold": 0.08, "reason": "hard bounces 9% >= 8%"}))
    await world.publish(requested("t3", "tester@acme.example"))

    async def refused() -> list[Any]:
        return await running.service.store.outcomes({"reason": "account_suspended"})

    outcomes = await eventually(refused, bool, what="the test refused")
    assert [(o["outcome"], o["campaign_id"]) for o in outcomes] == [("skipped", "c1")]
    assert marked_for(relay, "tester@acme.example") == []
    events = await world.events()
    assert [e for e in events if isinstance(e, MessageSent) and e.payload.kind == "test"] == []
