"""On the real broker: an unsubscribe is judged against every send published before it was read, whichever of
herald.subscriptions and herald.delivery the processor happens to read first (PRODUCT.md: suspend when a campaign
"shows an unsubscribe rate above 1%"). 1.0% exactly never suspends, read in any order; 1.1% does, once."""

from __future__ import annotations

from typing import Any

from herald_compliance.domain import AccountState
from herald_compliance.processor import account_partition
from herald_shared.contract.subscriptions import SubscriberUnsubscribed
from tests.conftest import eventually

from .conftest import Bus, Running, counts_of, env_of, sent


def unsubscribed(account_id: str, i: int) -> SubscriberUnsubscribed:
    return SubscriberUnsubscribed(**env_of(account_id, "subscriptions"), payload={
        "list_id": "l1", "subscriber_id": f"s{i}", "source": "one_click", "campaign_id": "c1",
        "message_id": f"c1-m{i}"})


def neighbours(account_id: str, n: int) -> list[str]:
    """`n` other accounts whose events share `account_id`'s partitions."""
    partition = account_partition(account_id)
    names = (f"{account_id}-n{i}" for i in range(10_000))
    return [name for name in names if account_partition(name) == partition][:n]


async def judged(running: Running, account_id: str, sent_n: int, unsubscribes: int) -> None:
    """Wait until every send and unsubscribe is counted and none still awaits its sends: the account has been
    judged on them all (its state is saved after what the judgement announced is published)."""
    await eventually(lambda: running.rates(account_id), lambda r: counts_of(r, "c1") == {
        "sent": sent_n, "hard_bounces": 0, "complaints": 0, "unsubscribes": unsubscribes, "blocks": 0},
        within=90, what=f"{sent_n} sent and {unsubscribes} unsubscribes counted")

    async def awaiting() -> Any:
        return AccountState.from_json(running.service.accounts.get(account_id)).awaiting_sends

    await eventually(awaiting, lambda entries: entries == [], within=30, what="no unsubscribe awaiting its sends")


async def suspensions(bus: Bus, account_id: str) -> list[dict[str, Any]]:
    return [e for e in await bus.compliance_events("AccountSuspended") if e["account_id"] == account_id]


async def test_unsubscribes_read_before_the_sends_published_ahead_of_them_do_not_suspend_at_1_percent(
        start_compliance: Any, bus: Bus) -> None:
    """After an outage: 2000 sends, then 20 one-click unsubscribes (1.0%), all published before the processor
    starts; it reads the unsubscribes within its first batches, long before the last sends."""
    account = "acc-cut1"
    await bus.publish(*(sent(account, "c1", i) for i in range(2000)))
    await bus.publish(*(unsubscribed(account, i) for i in range(20)))
    running = await start_compliance(HERALD_RATE_MINIMUM_SENT=500, HERALD_COMPLIANCE_BATCH_SIZE=100)
    await judged(running, account, 2000, 20)
    assert await suspensions(bus, account) == []

    await bus.publish(unsubscribed(account, 20))  # 1.05%
    suspended = await eventually(lambda: suspensions(bus, account), lambda e: len(e) == 1, what="one suspension")
    payload = suspended[0]["payload"]
    assert payload["metric"] == "unsubscribe_rate" and payload["value"] == 0.0105
    assert payload["counts"] == {"sent": 2000, "hard_bounces": 0, "complaints": 0, "unsubscribes": 21, "blocks": 0}
    await judged(running, account, 2000, 21)
    assert len(await suspensions(bus, account)) == 1


async def test_a_running_processor_behind_on_delivery_judges_unsubscribes_against_the_sends_before_them(
        start_compliance: Any, bus: Bus) -> None:
    """Live: the processor runs and is behind on the account's herald.delivery partition (10,000 sends of other
    accounts ahead of its 1000), when the 10 unsubscribes (1.0%) published after them come on herald.subscriptions.
    They are judged once the sends published before them are read: warned at 0.5% on 1000 sent, not suspended."""
    account = "acc-cut2"
    running = await start_compliance(HERALD_RATE_MINIMUM_SENT=500)
    await bus.publish(*(sent(other, "c0", i) for i in range(1000) for other in neighbours(account, 10)))
    await bus.publish(*(sent(account, "c1", i) for i in range(1000)))
    await bus.publish(*(unsubscribed(account, i) for i in range(10)))
    await judged(running, account, 1000, 10)
    assert await suspensions(bus, account) == []
    warned = [e["payload"] for e in await bus.compliance_events("AccountWarned") if e["account_id"] == account]
    assert {(w["metric"], w["warning_level"]) for w in warned} == {("unsubscribe_rate", 0.005)}
    assert all(w["counts"]["sent"] == 1000 and w["counts"]["unsubscribes"] == 10 for w in warned), warned

    await bus.publish(unsubscribed(account, 10))  # 1.1%
    suspended = await eventually(lambda: suspensions(bus, account), lambda e: len(e) == 1, what="one suspension")
    assert suspended[0]["payload"]["value"] == 0.011
    assert suspended[0]["payload"]["counts"]["sent"] == 1000


async def test_unsubscribes_awaiting_their_sends_are_judged_after_a_restart_without_more_of_the_accounts_events(
        start_compliance: Any, bus: Bus) -> None:
    """The account's 1000 sends, 30,000 of other accounts on its partition, then 11 unsubscribes (1.1%). The
    processor stops while they await the end of that backlog; the next one finds them in the recovered table and
    suspends once it has read the backlog, though no event of the account follows."""
    account = "acc-cut3"
    await bus.publish(*(sent(account, "c1", i) for i in range(1000)))
    await bus.publish(*(sent(other, "c0", i) for i in range(3000) for other in neighbours(account, 10)))
    await bus.publish(*(unsubscribed(account, i) for i in range(11)))
    running = await start_compliance(HERALD_RATE_MINIMUM_SENT=500)

    async def stored() -> AccountState:
        return AccountState.from_json(running.service.accounts.get(account))

    await eventually(stored, lambda s: s.campaign_counts("c1").sent == 1000 and s.campaign_counts("c1").unsubscribe
                     == 11 and s.awaiting_sends != [], what="the unsubscribes counted, awaiting the backlog")
    await running.service.stop()
    assert (await stored()).awaiting_sends != [] and await suspensions(bus, account) == []

    again = await start_compliance(HERALD_RATE_MINIMUM_SENT=500)
    suspended = await eventually(lambda: suspensions(bus, account), lambda e: len(e) == 1, within=90,
                                 what="one suspension once the backlog is read")
    assert suspended[0]["payload"]["value"] == 0.011 and suspended[0]["payload"]["counts"]["sent"] == 1000
    await judged(again, account, 1000, 11)
    assert len(await suspensions(bus, account)) == 1
