"""On the real broker, before any reinstatement: hard bounces processed before their own MessageSent (delivery
republishing its sends after a crash, after the DSNs came) are judged as when the sends come first (PRODUCT.md,
"Sending suspension": hard bounce rate ≥ 8%). 9 of 200 (4.5%) never suspends, in either order; 20 of 200 (10%)
suspends once, judged against the 200 sent."""

from __future__ import annotations

import functools
from typing import Any

from tests.conftest import eventually

from .conftest import Bus, Running, counts_of, hard_bounce, sent


def judged(bounces: int) -> Any:
    """Every send and bounce counted, and none still waiting for its send or at the cut: the account has been judged
    on them all (its state is saved after what the judgement announced is published)."""
    def done(rates: dict[str, Any]) -> bool:
        scopes = rates.get("scopes", [])
        return counts_of(rates, "c1") == {"sent": 200, "hard_bounces": bounces, "complaints": 0, "unsubscribes": 0,
                                          "blocks": 0} and \
            all(s.get("awaiting_their_sends", 0) == 0 and s["counts"] == s["raw_counts"] for s in scopes)
    return done


def bounces_counted(bounces: int) -> Any:
    return lambda rates: (counts_of(rates, "c1") or {}).get("hard_bounces") == bounces


async def publish_both_orders(running: Running, bus: Bus, bounces: int, prefix: str) -> list[str]:
    in_order, bounces_first, together = f"{prefix}-inorder", f"{prefix}-bouncefirst", f"{prefix}-together"
    await bus.publish(*(sent(in_order, "c1", i) for i in range(200)),
                      *(hard_bounce(in_order, "c1", i) for i in range(bounces)))
    # the bounces first, each before its send; the sends once the bounces are counted (read, not yet judged)
    await bus.publish(*(hard_bounce(bounces_first, "c1", i) for i in range(bounces)))
    await eventually(lambda: running.rates(bounces_first), bounces_counted(bounces), what="bounces counted")
    await bus.publish(*(sent(bounces_first, "c1", i) for i in range(200)))
    # and in one go, the bounces ahead of their sends: likely one batch, with only part of the sends
    await bus.publish(*(hard_bounce(together, "c1", i) for i in range(bounces)),
                      *(sent(together, "c1", i) for i in range(200)))
    accounts = [in_order, bounces_first, together]
    for account in accounts:
        await eventually(functools.partial(running.rates, account), judged(bounces), within=60,
                         what=f"{account} judged")
    return accounts


async def test_9_hard_bounces_of_200_never_suspend_whether_read_before_or_after_their_sends(
        start_compliance: Any, bus: Bus) -> None:
    running = await start_compliance()  # minimum volume 100: 9 of the first sends read would be 9%
    accounts = await publish_both_orders(running, bus, 9, "nine")
    for account in accounts:
        rates = await running.rates(account)
        assert rates["suspended"] is False, (account, rates["suspension"])
    assert await bus.compliance_events("AccountSuspended") == []


async def test_20_hard_bounces_of_200_suspend_once_in_either_order_against_the_200_sent(
        start_compliance: Any, bus: Bus) -> None:
    running = await start_compliance()
    accounts = await publish_both_orders(running, bus, 20, "twenty")
    suspended = await eventually(lambda: bus.compliance_events("AccountSuspended"), lambda e: len(e) >= 3,
                                 what="three suspensions")
    assert sorted(e["account_id"] for e in suspended) == sorted(accounts)
    for event in suspended:
        payload = event["payload"]
        assert payload["metric"] == "hard_bounce_rate" and payload["counts"]["sent"] == 200, payload
        assert payload["scope"] == {"kind": "campaign", "campaign_id": "c1", "window": None}
        assert payload["value"] >= 0.08  # in order at the 16th bounce; read before their sends, all 20 at once


async def test_bounces_waiting_for_their_sends_wait_on_after_a_restart(start_compliance: Any, bus: Bus) -> None:
    """What waits is in the tables (the account state's `awaiting_facts`, a note per fact in the facts index): a
    worker recovering them from the changelogs judges the bounces as the first would have, once their sends come."""
    running = await start_compliance()
    for account, bounces in (("restart-9", 9), ("restart-20", 20)):
        await bus.publish(*(hard_bounce(account, "c1", i) for i in range(bounces)))
        rates = await eventually(functools.partial(running.rates, account), bounces_counted(bounces),
                                 what="bounces counted")
        assert {s["name"]: s["awaiting_their_sends"] for s in rates["scopes"]} == {
            "c1": bounces, "24h": bounces, "7d": bounces}
    await running.service.stop()

    again = await start_compliance()
    rates = await eventually(functools.partial(again.rates, "restart-9"), lambda r: bool(r.get("scopes")),
                             within=60, what="the state recovered")
    assert {s["name"]: s["awaiting_their_sends"] for s in rates["scopes"]} == {"c1": 9, "24h": 9, "7d": 9}
    for account in ("restart-9", "restart-20"):
        await bus.publish(*(sent(account, "c1", i) for i in range(200)))
    for account, bounces in (("restart-9", 9), ("restart-20", 20)):
        await eventually(functools.partial(again.rates, account), judged(bounces), within=60, what=f"{account} judged")
    assert (await again.rates("restart-9"))["suspended"] is False
    [suspension] = await bus.compliance_events("AccountSuspended")
    assert suspension["account_id"] == "restart-20" and suspension["payload"]["counts"]["sent"] == 200
