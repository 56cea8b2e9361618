"""The customer's notices of subscribes and unsubscribes (PRODUCT.md: "The customer is notified of subscribes and
unsubscribes when it asked to be"), on the real stack: subscriptions asks (MembershipNoticeRequested), delivery
mails the account's registered address once; an erasure reaches a notice not sent yet; an account delivery
does not know is dead-lettered, not dropped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from herald_delivery.handlers import new_job
from herald_shared.contract.delivery import MessageSent
from herald_shared.contract.subscriptions import MembershipNoticeRequested
from herald_shared.kafka import DLQ_REASON, read_from_start
from tests.conftest import eventually

from .conftest import World


def notice(account_id: str, change: str = "subscribed", how: str = "double_opt_in") -> MembershipNoticeRequested:
    return MembershipNoticeRequested(account_id=account_id, producer="subscriptions", payload={  # type: ignore[arg-type]
        "list_id": "news", "list_name": "Newsletter", "subscriber_id": "s1", "email": "anna@example.org",
        "change": change, "how": how})


async def test_a_notice_goes_once_to_the_registered_address(start_delivery: Any, relay: Any, world: World) -> None:
    await start_delivery()
    await world.open_account("acme")
    subscribed, unsubscribed = notice("acme"), notice("acme", "unsubscribed", "one_click")
    await world.publish(subscribed, unsubscribed, subscribed)  # the first one redelivered: one email
    await eventually(relay.mailed, lambda r: len(r) >= 2, what="two notices")
    assert relay.recipients() == ["owner@acme.example", "owner@acme.example"]
    texts = sorted(r.data.replace(b"=\r\n", b"").decode() for r in relay.received)
    assert "Subject: Herald: anna@example.org subscribed to Newsletter" in texts[0]
    assert "confirmed by the link in the confirmation email" in texts[0]
    assert "Subject: Herald: anna@example.org unsubscribed from Newsletter" in texts[1]
    assert "with the one-click unsubscribe of an email" in texts[1]
    sent = await world.wait_for(lambda es: len([e for e in es if isinstance(e, MessageSent)]) == 2, "two sent")
    assert {(e.payload.kind, e.payload.subscriber_id) for e in sent if isinstance(e, MessageSent)} == {
        ("account_notice", None)}  # to the customer: a bounce of it is about no subscriber
    await world.publish(notice("acme", "subscribed", "form"))  # a new event: a new notice
    await eventually(relay.mailed, lambda r: len(r) == 3, what="the third notice")


async def test_an_erasure_reaches_a_notice_not_sent_yet(start_delivery: Any, relay: Any, world: World) -> None:
    """The notice names the member: an erasure removes the address, the subject and the text from it, as from a
    confirmation (the sender then skips it)."""
    running = await start_delivery()
    store = running.service.store
    job = new_job(str(uuid.uuid4()), "acme", "account_notice", datetime.now(UTC), about_subscriber_id="s9",
                  recipient="owner@acme.example", subject="Herald: zoe@example.org subscribed to News",
                  text="zoe@example.org subscribed to your list News")
    await store.add_jobs([job])
    await store.forget_recipient("acme", "s9")
    doc = await store.jobs.find_one({"_id": job["_id"]})
    assert doc is not None and not {"recipient", "subject", "text"} & set(doc)


async def test_a_notice_for_an_account_delivery_does_not_know_is_dead_lettered(start_delivery: Any, relay: Any,
                                                                              world: World) -> None:
    await start_delivery()
    await world.publish(notice("ghost"))
    topic = world.settings.topics("herald.subscriptions") + ".dlq"

    async def dead_letters() -> list[Any]:
        return [r async for batch in read_from_start(world.settings, [topic]) for r in batch]

    entry, = await eventually(dead_letters, lambda rs: len(rs) == 1, what="the dead-letter entry")
    assert "no AccountOpened gave account 'ghost' a registered address" in dict(entry.headers)[DLQ_REASON].decode()
    assert relay.recipients() == []


async def test_a_notice_in_a_backlog_with_its_accounts_opening_is_sent(start_delivery: Any, relay: Any,
                                                                      world: World) -> None:
    """Both waiting when delivery starts: the notice's consumer may come to it before the control consumer has
    folded AccountOpened; it waits for that one to catch up rather than dead-letter the notice."""
    await world.open_account("fresh")
    await world.publish(notice("fresh"))
    await start_delivery()
    await eventually(relay.mailed, lambda r: r == ["owner@fresh.example"], what="the notice")
