"""Delivery says when it has finished a campaign (CampaignDeliveryFinished), on the real stack: once every
message has a final outcome, once per campaign, with exact counts, across cancellation and restarts."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

from herald_shared.contract import Event
from herald_shared.contract.campaigns import CampaignCancelled
from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageBounced, MessageDeferred, MessageSent
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import World

AUDIENCE = 50


def ends(events: list[Event], campaign_id: str = "c1") -> list[CampaignDeliveryFinished]:
    return [e for e in events if isinstance(e, CampaignDeliveryFinished) and e.payload.campaign_id == campaign_id]


def counts(end: CampaignDeliveryFinished) -> dict[str, int]:
    return end.payload.model_dump(exclude={"campaign_id"})


async def test_a_campaign_ends_once_after_its_last_message_with_exact_counts(start_delivery: Any, relay: Any,
                                                                            world: World) -> None:
    """A refusal at SMTP time is final (bounced); a deferral is not: the end waits for its retry."""
    running = await start_delivery()
    await world.open_account("acme")
    audience = [(f"s{i}", f"r{i}@example.org") for i in range(6)]
    await world.add_list("acme", "news", audience)
    relay.behaviour.script["r1@example.org"] = [("rcpt", "550 5.1.1 <r1@example.org>: user unknown")]
    relay.behaviour.script["r2@example.org"] = [("data", "451 4.7.1 greylisted, try again later")]
    queued = campaign_queued("acme", "c1")
    await world.publish(queued)
    events = await world.wait_for(lambda es: bool(ends(es)), "CampaignDeliveryFinished")
    end, = ends(events)
    assert counts(end) == {"recipients": 6, "sent": 5, "bounced": 1, "skipped": 0, "failed": 0, "cancelled": 0}
    assert end.account_id == "acme" and end.producer == "delivery"
    # After every outcome event of the campaign, the deferral and its retry included.
    position = events.index(end)
    outcomes = [e for e in events if isinstance(e, MessageSent | MessageBounced | MessageDeferred)]
    assert len(outcomes) == 7 and all(events.index(e) < position for e in outcomes)
    assert sorted(relay.recipients()) == sorted(a for _, a in audience if a != "r1@example.org")

    # A CampaignQueued published again (a new event id) expands to nothing new and announces nothing new.
    await world.publish(queued.model_copy(update={"event_id": uuid.uuid4()}))
    await running.service.gates_caught_up()  # the control consumer has handled it
    assert len(ends(await world.events())) == 1


async def test_a_campaign_nobody_receives_ends_right_after_its_expansion(start_delivery: Any, relay: Any,
                                                                       world: World) -> None:
    """An empty list, a deleted one, a segment matching nobody: recipients 0."""
    from herald_shared.contract.subscriptions import ListCreated, ListDeleted

    await start_delivery()
    await world.open_account("acme")
    subs = {"account_id": "acme", "producer": "subscriptions"}
    await world.publish(ListCreated(**subs, payload={"list_id": "empty", "name": "Empty", "opt_in": "single"}))
    await world.add_list("acme", "gone", [("g1", "g1@example.org")])
    await world.publish(ListDeleted(**subs, payload={"list_id": "gone", "members_at_deletion": 1}))
    await world.add_list("acme", "news", [("s1", "s1@example.org")], city="Oslo")
    await world.publish(campaign_queued("acme", "c1", list_id="empty"),
                        campaign_queued("acme", "c2", list_id="gone"),
                        campaign_queued("acme", "c3", list_id="news", segment={"city": "Riga"}))
    events = await world.wait_for(lambda es: all(ends(es, c) for c in ("c1", "c2", "c3")), "three ends")
    for campaign_id in ("c1", "c2", "c3"):
        end, = ends(events, campaign_id)
        assert counts(end) == {"recipients": 0, "sent": 0, "bounced": 0, "skipped": 0, "failed": 0,
                               "cancelled": 0}, campaign_id
    assert [r for r in relay.recipients() if r != "owner@acme.example"] == []


async def test_a_list_deleted_after_the_expansion_is_mailed_no_more(start_delivery: Any, relay: Any,
                                                                    world: World) -> None:
    """PRODUCT.md: a campaign goes only to subscribers of its target list. Its messages held behind a gate
    (the account suspended) when the list is deleted: none is sent after that, each is recorded skipped
    (`list_deleted`), and the campaign ends with those counts."""
    from herald_shared.contract.compliance import AccountReinstated, AccountSuspended
    from herald_shared.contract.delivery import DeliveryHeld
    from herald_shared.contract.subscriptions import ListDeleted

    running = await start_delivery()
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(3)])
    await world.publish(AccountSuspended(account_id="acme", producer="compliance", payload={
        "metric": "hard_bounce_rate", "value": 0.09, "threshold": 0.08, "reason": "hard bounces 9% >= 8%"}))
    await world.publish(campaign_queued("acme", "c1"))
    await world.wait_for(lambda es: any(isinstance(e, DeliveryHeld) and e.payload.campaign_id == "c1"
                                        for e in es), "the campaign held")
    await world.publish(ListDeleted(account_id="acme", producer="subscriptions",
                                    payload={"list_id": "news", "members_at_deletion": 3}))
    await running.service.audience_caught_up()
    await world.publish(AccountReinstated(account_id="acme", producer="compliance",
                                          payload={"reinstated_by": "staff-1", "reason": "list cleaned"}))
    end, = ends(await world.wait_for(lambda es: bool(ends(es)), "CampaignDeliveryFinished"))
    assert counts(end) == {"recipients": 3, "sent": 0, "bounced": 0, "skipped": 3, "failed": 0, "cancelled": 0}
    assert [r for r in relay.recipients() if r != "owner@acme.example"] == []


async def test_a_campaign_cancelled_mid_send_ends_when_its_other_messages_are_recorded_cancelled(
        start_delivery: Any, relay: Any, world: World) -> None:
    await start_delivery(HERALD_ACCOUNT_RATE=5)  # 5 messages a second: time to cancel in the middle
    await world.open_account("acme")
    audience = [(f"s{i}", f"r{i}@example.org") for i in range(20)]
    await world.add_list("acme", "news", audience)
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(relay.mailed, lambda r: len(r) >= 3, what="the first messages sent")
    await world.publish(CampaignCancelled(account_id="acme", producer="campaigns",
                                          payload={"campaign_id": "c1", "cancelled_by": "anna"}))
    events = await world.wait_for(lambda es: bool(ends(es)), "CampaignDeliveryFinished")
    end, = ends(events)
    mailed = [r for r in relay.recipients() if r != "owner@acme.example"]
    p = end.payload
    assert p.recipients == 20 and p.cancelled > 0 and p.sent == len(mailed) >= 3
    assert p.sent + p.cancelled == 20 and p.bounced == p.skipped == p.failed == 0


async def test_a_campaign_cancelled_before_its_expansion_started_ends_with_no_message(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Its expansion held back (it waits for the audience) until the cancellation is handled: no job is written,
    and the campaign ends at once with nothing in it (before, every member got a job recorded cancelled)."""
    running = await start_delivery()
    handler = running.service.control_handler
    release, audience_caught_up = asyncio.Event(), handler._audience_caught_up

    async def held_back() -> None:
        await release.wait()
        await audience_caught_up()

    handler._audience_caught_up = held_back
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(20)])
    await world.publish(campaign_queued("acme", "c1"))
    await world.publish(CampaignCancelled(account_id="acme", producer="campaigns",
                                          payload={"campaign_id": "c1", "cancelled_by": "anna"}))
    await eventually(lambda: asyncio.sleep(0, running.service.gates.campaign("acme", "c1")),
                     lambda state: state.cancelled, what="the cancellation handled")
    assert len(handler.expansions) == 1  # waiting still
    release.set()
    events = await world.wait_for(lambda es: bool(ends(es)), "CampaignDeliveryFinished")
    end, = ends(events)
    assert counts(end) == {"recipients": 0, "sent": 0, "bounced": 0, "skipped": 0, "failed": 0, "cancelled": 0}
    assert await running.service.store.jobs.count_documents({"campaign_id": "c1"}) == 0
    assert [r for r in relay.recipients() if r != "owner@acme.example"] == []


async def test_a_restart_in_the_middle_of_a_campaign_neither_loses_nor_repeats_its_end(
        start_delivery: Any, relay: Any, world: World) -> None:
    first = await start_delivery(HERALD_ACCOUNT_RATE=10)
    await world.open_account("acme")
    # A graceful stop finishes the messages handed to the workers (up to 16 here): most are left for after.
    audience = [(f"s{i}", f"r{i}@example.org") for i in range(AUDIENCE)]
    await world.add_list("acme", "news", audience)
    relay.behaviour.script["r7@example.org"] = [("rcpt", "554 5.7.1 rejected by policy")]
    await world.publish(campaign_queued("acme", "c1"))
    await eventually(relay.mailed, lambda r: len(r) >= 8, what="the first messages sent")
    await first.service.stop()
    assert ends(await world.events()) == []
    assert len(relay.recipients()) < AUDIENCE - 10
    second = await start_delivery(HERALD_ACCOUNT_RATE=10)
    events = await world.wait_for(lambda es: bool(ends(es)), "CampaignDeliveryFinished after the restart")
    end, = ends(events)
    assert counts(end) == {"recipients": AUDIENCE, "sent": AUDIENCE - 1, "bounced": 1, "skipped": 0, "failed": 0,
                           "cancelled": 0}
    mailed = Counter(r for r in relay.recipients() if r != "owner@acme.example")
    assert len(mailed) == AUDIENCE - 1 and set(mailed.values()) == {1}

    # Started again after the end: the ledger says the campaign is over, and it was announced already.
    await second.service.stop()
    third = await start_delivery(HERALD_ACCOUNT_RATE=10)
    await eventually(third.service._running, bool, what="the sender folded the ledger")
    await third.service.gates_caught_up()
    assert ends(await world.events()) == [end]


async def test_an_outcome_that_cannot_become_its_event_is_recorded_and_dead_lettered(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Should building an outcome's event fail after the relay answered (no known reply does so any more), the
    message is recorded all the same: its campaign ends with it counted, it is not pending (so not sent again
    after a restart), and the dead-letter topic says which message and why."""
    from herald_shared.kafka import DLQ_REASON, read_from_start

    running = await start_delivery()
    sender = running.service.sender
    build = sender._outcome

    def failing(job: Any, rendered: Any, reply: Any) -> Any:
        if rendered.recipient == "r1@example.org":
            raise ValueError("a reply the contract cannot carry")
        return build(job, rendered, reply)

    sender._outcome = failing  # type: ignore[method-assign]
    await world.open_account("acme")
    await world.add_list("acme", "news", [(f"s{i}", f"r{i}@example.org") for i in range(3)])
    await world.publish(campaign_queued("acme", "c1"))
    events = await world.wait_for(lambda es: bool(ends(es)), "CampaignDeliveryFinished")
    end, = ends(events)
    assert counts(end) == {"recipients": 3, "sent": 3, "bounced": 0, "skipped": 0, "failed": 0, "cancelled": 0}
    sent = [e for e in events if isinstance(e, MessageSent)]
    assert len(sent) == 2 and sorted(relay.recipients()) == ["r0@example.org", "r1@example.org", "r2@example.org"]
    fold = await running.service.store.load_pending()
    assert not [job for job in fold.pending if job.get("campaign_id") == "c1"]

    async def dead_letters() -> list[Any]:
        topic = world.settings.topics("herald.delivery") + ".dlq"
        return [r async for batch in read_from_start(world.settings, [topic]) for r in batch]

    entry, = await eventually(dead_letters, lambda rs: len(rs) == 1, what="the dead-letter entry")
    reason = dict(entry.headers)[DLQ_REASON].decode()
    assert "outcome event not made (ValueError: a reply the contract cannot carry)" in reason
    recorded = json.loads(entry.value)
    assert recorded["outcome"] == "sent" and recorded["final"] and recorded["smtp_code"] == 250
    assert recorded["message_id"] not in {e.payload.message_id for e in sent}
