"""Below the minimum volume a rate is judged against the minimum, on the real broker (PRODUCT.md, "Sending
suspension" and "Trial": a trial account sends at most 100 emails, and 40 hard bounces of them suspend it)."""

from __future__ import annotations

from typing import Any

from tests.conftest import eventually

from .conftest import Bus, counts_of, hard_bounce, sent


async def test_a_100_message_campaign_with_40_hard_bounces_suspends_and_39_do_not(start_compliance: Any,
                                                                                  bus: Bus) -> None:
    running = await start_compliance(HERALD_RATE_MINIMUM_SENT=500)  # the production default
    for account, bounces in (("trial-40", 40), ("trial-39", 39)):
        await bus.publish(*(sent(account, "c1", i) for i in range(100)),
                          *(hard_bounce(account, "c1", i) for i in range(bounces)))

    suspended = await eventually(lambda: bus.compliance_events("AccountSuspended"), lambda e: len(e) >= 1,
                                 what="AccountSuspended")
    assert [e["account_id"] for e in suspended] == ["trial-40"]
    payload = suspended[0]["payload"]
    assert payload["metric"] == "hard_bounce_rate" and payload["value"] == 0.08 and payload["threshold"] == 0.08
    assert payload["scope"] == {"kind": "campaign", "campaign_id": "c1", "window": None}
    assert payload["counts"] == {"sent": 100, "hard_bounces": 40, "complaints": 0, "unsubscribes": 0, "blocks": 0}
    assert payload["reason"] == ("hard bounce rate 8.00% ≥ 8.00% (campaign c1: 40 hard bounces of 100 sent, judged "
                                 "against the minimum volume of 500)")

    # A batch's announcements are in Kafka before its counts are in the table the rates are read from.
    rates = await eventually(lambda: running.rates("trial-39"), lambda r: counts_of(r, "c1") == {
        "sent": 100, "hard_bounces": 39, "complaints": 0, "unsubscribes": 0, "blocks": 0}, what="39 bounces counted")
    assert rates["suspended"] is False
    assert {s["name"]: s["judged_sent"] for s in rates["scopes"]} == {"c1": 500, "24h": 500, "7d": 500}
    assert [e["account_id"] for e in await bus.compliance_events("AccountSuspended")] == ["trial-40"]
    warned = [e["payload"] for e in await bus.compliance_events("AccountWarned") if e["account_id"] == "trial-39"]
    assert {(w["metric"], w["warning_level"], w["scope"]["kind"]) for w in warned} == {
        ("hard_bounce_rate", 0.05, "campaign"), ("hard_bounce_rate", 0.05, "rolling_window")}
    assert all(w["evidence"] == {"judged_sent": 500} for w in warned)
