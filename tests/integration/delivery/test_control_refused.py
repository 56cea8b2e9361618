"""The control consumer and what the store refuses (ARCHITECTURE.md: "Bad input never stops a stream"): an event
whose effects the store cannot keep is dead-lettered with why, the events around it take effect once each, and
no gate is opened, no message sent, for the refused one."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from herald_delivery.domain import transactional_message_id
from herald_shared.contract.billing import PlanChanged, SendingBlocked
from herald_shared.contract.campaigns import CampaignApproved
from herald_shared.contract.compliance import AccountSuspended
from herald_shared.kafka import DLQ_REASON, read_from_start
from tests.conftest import eventually
from tests.samples import campaign_queued

from .conftest import Running, World, held

MEMBERS = [("s0", "r0@example.org"), ("s1", "r1@example.org")]
OWNER = "owner@acme.example"


async def dead_letters(world: World, base_topic: str) -> list[Any]:
    topic = world.settings.topics(base_topic) + ".dlq"
    return [record async for batch in read_from_start(world.settings, [topic]) for record in batch]


def mailed(relay: Any, subject: str) -> list[str]:
    """The recipients of the messages with this subject, one entry per message received."""
    return [r.recipient for r in relay.received if f"Subject: {subject}".encode() in r.data]


async def held_for_review(running: Running, world: World) -> None:
    """acme, approved, with two members, and its campaign c1 written as jobs, held until staff approve it."""
    await world.open_account("acme")
    await world.add_list("acme", "news", MEMBERS)
    await world.publish(campaign_queued("acme", "c1", review_required=True, subject="c1 news"))
    await world.wait_for(lambda es: any(h.payload.campaign_id == "c1" and h.payload.messages_held == 2
                                        for h in held(es, "campaign_review")), "c1 held for review")


async def test_a_campaign_queued_for_a_time_utc_has_not_is_dead_lettered_and_opens_no_gate(
        start_delivery: Any, relay: Any, world: World) -> None:
    """A send_at such as 0001-01-01T00:00+01:00 has an offset but is no time in UTC, which the store keeps times
    in (its driver raises OverflowError): the contract refuses it, so it is dead-lettered with why before the
    gate book changes (before, handling it failed part way and its state stayed in memory)."""
    running = await start_delivery()
    await held_for_review(running, world)
    queued_again = campaign_queued("acme", "c1", subject="c1 refused")  # no review asked: it would open c1
    unstorable = queued_again.model_copy(update={"payload": queued_again.payload.model_copy(update={
        "send_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))})})
    await world.publish(unstorable, campaign_queued("acme", "c2", subject="c2 news"))

    entry, = await eventually(lambda: dead_letters(world, "herald.campaigns"), lambda rs: len(rs) == 1,
                              what="the refused CampaignQueued dead-lettered")
    await eventually(relay.mailed, lambda r: len(mailed(relay, "c2 news")) == 2, what="c2 sent")
    gates = running.service.gates
    assert gates.gate_for("acme", "c1") == "campaign_review" and mailed(relay, "c1 news") == []
    reason = dict(entry.headers)[DLQ_REASON].decode()
    assert reason.startswith("invalid CampaignQueued: payload.send_at: ") and "no time in UTC" in reason, reason
    stored = await running.service.store.campaign("acme", "c1")
    assert stored is not None and stored["state"]["review_required"] and stored["send_at"] is None

    await world.publish(CampaignApproved(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
        "campaign_id": "c1", "reviewer": "staff"}))
    await eventually(relay.mailed, lambda r: len(mailed(relay, "c1 news")) == 2, what="c1 sent once approved")
    assert sorted(mailed(relay, "c1 news")) == sorted(mailed(relay, "c2 news")) == [a for _, a in MEMBERS]
    assert mailed(relay, "c1 refused") == []


async def test_an_event_the_store_refuses_in_the_flush_is_dead_lettered_and_the_batch_around_it_applies_once(
        start_delivery: Any, relay: Any, world: World) -> None:
    """Nothing the contract lets through is refused by this flush today; the store is made to refuse one
    account's document (as FerretDB refuses a nested array: a WriteError no retry changes), standing for
    whatever may be one day. Before, the flush was retried for good and the partitions never moved again."""
    running = await start_delivery()
    store = running.service.store
    save_accounts = store.save_accounts

    async def refusing(states: Any) -> None:
        if any(state.blocked_reasons for state in states):
            await store.db["accounts"].insert_one({"_id": "refused", "value": [[0]]})
        await save_accounts(states)

    store.save_accounts = refusing  # type: ignore[method-assign]
    await held_for_review(running, world)
    blocked = SendingBlocked(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "reason": "monthly_quota_reached", "detail": "the store refuses this one"})
    await world.publish(
        CampaignApproved(account_id="acme", producer="campaigns", payload={  # type: ignore[arg-type]
            "campaign_id": "c1", "reviewer": "staff"}),
        blocked,
        PlanChanged(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
            "plan": "monthly", "edition": "pro", "tier_subscriber_limit": 1000,
            "effective_at": "2026-11-01T00:00:00Z"}))

    entry, = await eventually(lambda: dead_letters(world, "herald.billing"), lambda rs: len(rs) == 1,
                              what="the refused SendingBlocked dead-lettered")
    assert dict(entry.headers)[DLQ_REASON].decode().startswith("not stored after 3 attempts: WriteError")
    assert b'"SendingBlocked"' in entry.value
    await eventually(relay.mailed, lambda r: len(mailed(relay, "c1 news")) == 2, what="c1 sent once approved")
    gates = running.service.gates
    assert gates.account("acme").blocked_reasons == frozenset() and gates.account("acme").edition == "pro"
    stored = await store.db["accounts"].find_one({"_id": "acme"})
    assert stored is not None and stored["blocked_reasons"] == [] and stored["edition"] == "pro"
    notice = transactional_message_id("account_notice", str(blocked.event_id))
    assert await store.jobs.find_one({"_id": notice}) is None and notice not in running.service.jobs

    # The partitions move on: a suspension after it is applied, and its notice is the owner's only mail.
    await world.publish(AccountSuspended(account_id="acme", producer="compliance", payload={  # type: ignore[arg-type]
        "metric": "abuse_rate", "value": 0.006, "threshold": 0.005, "reason": "complaints 0.6% > 0.5%"}))
    await eventually(relay.mailed, lambda r: OWNER in r, what="the suspension notice")
    assert gates.gate_for("acme", "c1") == "account_suspended"
    assert Counter(relay.recipients()) == {OWNER: 1, **{a: 1 for _, a in MEMBERS}}
    assert b"suspended" in next(r.data for r in relay.received if r.recipient == OWNER)
