"""A test send does not reach a person the account suppressed or who unsubscribed (PRODUCT.md "Every message":
only confirmed, non-suppressed subscribers; from a review: tests went to them): their jobs are recorded skipped
with why, and a colleague's address the account holds no membership of still gets the test. Real stack."""

from __future__ import annotations

import hashlib
from typing import Any

from herald_shared.contract.campaigns import CampaignTestRequested
from herald_shared.contract.delivery import MessageSent
from herald_shared.contract.subscriptions import SubscriberSuppressed, SubscriberUnsubscribed
from tests.conftest import eventually

from .conftest import World

BOB, CAROL, COLLEAGUE = "bob@example.org", "carol@example.org", "editor@acme.example"
CONTENT = {"subject": "News", "from_name": "Acme News", "from_email": "news@acme.example",
           "html_body": "<html><body><p>Hi</p></body></html>", "text_body": "Hi"}


async def test_a_test_send_skips_suppressed_and_unsubscribed_people_and_mails_the_rest(
        start_delivery: Any, relay: Any, world: World) -> None:
    running = await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [("s-bob", BOB), ("s-carol", CAROL)])
    await world.publish(
        SubscriberSuppressed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "subscriber_id": "s-bob", "email_sha256": hashlib.sha256(BOB.encode()).hexdigest(),
            "reason": "complaint"}),
        SubscriberUnsubscribed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": "s-carol", "source": "one_click"}))

    async def statuses() -> dict[str, str]:
        found = await running.service.store.members("acme", ["s-bob", "s-carol"])
        return {subscriber_id: member.status for subscriber_id, member in found.items()}

    await eventually(statuses, lambda s: s == {"s-bob": "suppressed", "s-carol": "unsubscribed"},
                     what="the audience folded")
    await world.publish(CampaignTestRequested(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "test_id": "t1", "recipients": [BOB, "Carol@example.org", COLLEAGUE],
        "content": CONTENT, "sample": {}, "requested_by": "anna"}))

    async def refused() -> list[Any]:
        return await running.service.store.outcomes({"campaign_id": "c1", "outcome": "skipped"})

    skipped = await eventually(refused, lambda found: len(found) == 2, what="two tests refused")
    assert sorted(o["reason"] for o in skipped) == ["address_suppressed", "address_unsubscribed"]
    await eventually(relay.mailed, lambda r: COLLEAGUE in r, what="the colleague's test mailed")
    assert [r.lower() for r in relay.recipients()] == [COLLEAGUE]
    sent = [e for e in await world.events() if isinstance(e, MessageSent)]
    assert [e.payload.kind for e in sent] == ["test"]
