"""A breach on the real broker leads to exactly one AccountSuspended with its evidence; staff reinstate."""

from __future__ import annotations

import time
import uuid
from typing import Any

from herald_compliance.processor import SWEEP_MARGIN_SECONDS
from herald_shared.contract.compliance import AccountReinstated
from herald_shared.contract.subscriptions import SubscriberUnsubscribed
from herald_shared.kafka import DLQ_REASON
from tests.conftest import eventually

from .conftest import STAFF, Bus, complaint, counts_of, env_of, hard_bounce, ref, sent


async def test_hard_bounce_rate_of_8_percent_suspends_account_once_with_evidence(start_compliance: Any,
                                                                                   bus: Bus) -> None:
    running = await start_compliance()
    await bus.publish(*(sent("acc-1", "c1", i) for i in range(100)))
    await bus.publish(*(hard_bounce("acc-1", "c1", i) for i in range(7)))
    await eventually(lambda: running.rates("acc-1"), lambda r: counts_of(r, "c1") == {
        "sent": 100, "hard_bounces": 7, "complaints": 0, "unsubscribes": 0, "blocks": 0}, what="7 bounces counted")
    assert await bus.compliance_events("AccountSuspended") == []  # 7% does not suspend

    await bus.publish(hard_bounce("acc-1", "c1", 7))  # the 8th: 8.00%
    suspended = await eventually(lambda: bus.compliance_events("AccountSuspended"), lambda e: len(e) == 1,
                                 what="AccountSuspended")
    payload = suspended[0]["payload"]
    assert suspended[0]["account_id"] == "acc-1"
    assert payload["metric"] == "hard_bounce_rate" and payload["value"] == 0.08 and payload["threshold"] == 0.08
    assert payload["scope"] == {"kind": "campaign", "campaign_id": "c1", "window": None}
    assert payload["counts"] == {"sent": 100, "hard_bounces": 8, "complaints": 0, "unsubscribes": 0, "blocks": 0}
    assert payload["notify_account"] is True

    # every event after the breach, and the same events published again, change nothing
    await bus.publish(*(hard_bounce("acc-1", "c1", i) for i in range(8, 20)))
    await bus.publish(*(sent("acc-1", "c1", i) for i in range(100)))  # republished: counted once
    await eventually(lambda: running.rates("acc-1"), lambda r: counts_of(r, "c1") == {
        "sent": 100, "hard_bounces": 20, "complaints": 0, "unsubscribes": 0, "blocks": 0}, what="later bounces counted")
    assert len(await bus.compliance_events("AccountSuspended")) == 1
    rates = await running.rates("acc-1")
    assert rates["suspended"] is True and rates["suspension"]["metric"] == "hard_bounce_rate"
    # Every staff look at the rates is recorded for the account's audit log (billing shows it to the owner).
    looks = await bus.compliance_events("StaffViewedRates")
    assert looks and {(e["account_id"], e["payload"]["staff"]) for e in looks} == {("acc-1", "rita")}


async def test_staff_reinstatement_restarts_the_counters(start_compliance: Any, bus: Bus) -> None:
    running = await start_compliance()
    await bus.publish(*(sent("acc-2", "c1", i) for i in range(200)))
    await bus.publish(*(complaint("acc-2", "c1", i) for i in range(2)))  # 1.0% > 0.5%
    await eventually(lambda: bus.compliance_events("AccountSuspended"), lambda e: len(e) == 1, what="suspension")

    refused = await running.http.post("/v1/accounts/acc-2/reinstatement", json={"reason": "cleaned list"})
    assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
    response = await running.http.post("/v1/accounts/acc-2/reinstatement", headers=STAFF,
                                       json={"reason": "customer removed the purchased addresses"})
    assert response.status_code == 202, response.text
    reinstated = await eventually(lambda: bus.compliance_events("AccountReinstated"), lambda e: len(e) == 1,
                                  what="AccountReinstated")
    assert reinstated[0]["payload"]["reinstated_by"] == "rita"
    assert reinstated[0]["payload"]["suspension_event_id"] == (await bus.compliance_events("AccountSuspended"))[0][
        "event_id"]
    rates = await eventually(lambda: running.rates("acc-2"), lambda r: r.get("reinstatements") == 1,
                             what="reinstatement applied")
    assert rates["suspended"] is False
    campaign = next(s for s in rates["scopes"] if s["name"] == "c1")
    assert campaign["counts"]["complaints"] == 0 and campaign["raw_counts"]["complaints"] == 2
    looks = len(await bus.compliance_events("StaffViewedRates"))
    conflict = await running.http.post("/v1/accounts/acc-2/reinstatement", headers=STAFF, json={"reason": "again"})
    assert conflict.status_code == 409
    # A refusal shows the account's suspension state: a staff look, recorded for the audit log like one at the rates.
    await eventually(lambda: bus.compliance_events("StaffViewedRates"), lambda e: len(e) == looks + 1,
                     what="the refused reinstatement's look recorded")

    # a new breach after reinstatement suspends again, once
    await bus.publish(*(sent("acc-2", "c2", i) for i in range(100)))
    await bus.publish(*(complaint("acc-2", "c2", i) for i in range(3)))
    events = await eventually(lambda: bus.compliance_events("AccountSuspended"), lambda e: len(e) == 2,
                              what="second suspension")
    assert events[1]["payload"]["scope"]["campaign_id"] == "c2" and events[1]["event_id"] != events[0]["event_id"]

    # a reinstatement of the first suspension, delivered again, does not lift the second
    stale = AccountReinstated.model_validate({**reinstated[0], "event_id": str(uuid.uuid4())})
    await bus.publish(stale, sent("acc-2", "c3", 0))
    await eventually(lambda: running.rates("acc-2"), lambda r: counts_of(r, "c3") is not None, what="c3 counted")
    assert (await running.rates("acc-2"))["suspended"] is True
    looks = len(await bus.compliance_events("StaffViewedRates"))
    mismatch = await running.http.post("/v1/accounts/acc-2/reinstatement", headers=STAFF, json={
        "reason": "wrong one", "suspension_event_id": events[0]["event_id"]})
    assert mismatch.status_code == 409 and mismatch.json()["type"].endswith("suspension_mismatch")
    looked = await eventually(lambda: bus.compliance_events("StaffViewedRates"), lambda e: len(e) == looks + 1,
                              what="the mismatch's look recorded")
    assert looked[-1]["account_id"] == "acc-2" and looked[-1]["payload"]["staff"] == "rita"
    # the same request twice (a double click) is one event (or, once the first was applied, refused)
    statuses = [(await running.http.post("/v1/accounts/acc-2/reinstatement", headers=STAFF,
                                         json={"reason": "list cleaned again"})).status_code for _ in range(2)]
    assert statuses[0] == 202 and statuses[1] in (202, 409)
    ids = [e["event_id"] for e in await bus.compliance_events("AccountReinstated")]
    assert len(set(ids)) == 3  # the first, the stale copy, and the double click's one id


async def test_after_a_reinstatement_reports_processed_before_their_sends_count_once_the_sends_come(
        start_compliance: Any, bus: Bus) -> None:
    """A new campaign after a reinstatement: its DSNs (herald.delivery) and one-click unsubscribes
    (herald.subscriptions) are processed before its MessageSent (republished after a sender's restart, or on a
    partition read later). Set aside while the sends are unknown, they count once the sends come: 8 hard bounces
    of 100 suspend, as they would with the sends first."""
    running = await start_compliance()
    await bus.publish(*(sent("acc-6", "c1", i) for i in range(100)), *(hard_bounce("acc-6", "c1", i) for i in range(8)))
    await eventually(lambda: bus.compliance_events("AccountSuspended"), lambda e: len(e) == 1, what="suspension")
    response = await running.http.post("/v1/accounts/acc-6/reinstatement", headers=STAFF,
                                       json={"reason": "customer removed the purchased addresses"})
    assert response.status_code == 202, response.text
    await eventually(lambda: running.rates("acc-6"), lambda r: r.get("reinstatements") == 1,
                     what="reinstatement applied")

    unsubscribes = [SubscriberUnsubscribed(**env_of("acc-6", "subscriptions"), payload={
        "list_id": "l1", "subscriber_id": ref("c3", i)["subscriber_id"], "source": "one_click", "campaign_id": "c3",
        "message_id": ref("c3", i)["message_id"]}) for i in range(8, 10)]
    await bus.publish(*(hard_bounce("acc-6", "c3", i) for i in range(8)), *unsubscribes)
    rates = await eventually(lambda: running.rates("acc-6"), lambda r: counts_of(r, "c3") == {
        "sent": 0, "hard_bounces": 8, "complaints": 0, "unsubscribes": 2, "blocks": 0}, what="c3's reports counted")
    c3 = next(s for s in rates["scopes"] if s["name"] == "c3")
    assert c3["counts"]["hard_bounces"] == 0 and c3["counts"]["unsubscribes"] == 0  # set aside: no send seen yet

    await bus.publish(*(sent("acc-6", "c3", i) for i in range(100)))
    events = await eventually(lambda: bus.compliance_events("AccountSuspended"), lambda e: len(e) == 2,
                              what="second suspension")
    payload = events[1]["payload"]
    assert payload["metric"] == "hard_bounce_rate" and payload["scope"]["campaign_id"] == "c3"
    # Judged against the minimum volume (100 here), the 8 bounces suspend once their own 8 sends are seen, in
    # whichever batch the rest of the sends arrive.
    counts = payload["counts"]
    assert counts["hard_bounces"] == 8 and 8 <= counts["sent"] <= 100, counts


async def test_abuse_rate_warnings_at_bulk_sender_levels(start_compliance: Any, bus: Bus) -> None:
    running = await start_compliance(HERALD_RATE_MINIMUM_SENT=1000)
    await bus.publish(*(sent("acc-3", "c1", i) for i in range(1000)))
    await bus.publish(complaint("acc-3", "c1", 0))  # 0.1%
    warned = await eventually(lambda: bus.compliance_events("AccountWarned"), lambda e: len(e) >= 1,
                              what="0.1% warning")
    assert {(w["payload"]["metric"], w["payload"]["warning_level"]) for w in warned} == {("abuse_rate", 0.001)}
    await bus.publish(*(complaint("acc-3", "c1", i) for i in range(1, 3)))  # 0.3%
    warned = await eventually(lambda: bus.compliance_events("AccountWarned"),
                              lambda e: {w["payload"]["warning_level"] for w in e} == {0.001, 0.003},
                              what="0.3% warning")
    assert await bus.compliance_events("AccountSuspended") == []
    assert (await running.rates("acc-3"))["suspended"] is False


async def test_malformed_event_goes_to_the_dead_letter_topic_and_processing_continues(start_compliance: Any,
                                                                                       bus: Bus) -> None:
    running = await start_compliance()
    await bus.publish_raw("herald.delivery", b"acc-4", b"{not json")
    await bus.publish_raw("herald.delivery", b"acc-4", b'{"type": "MessageSent", "account_id": "acc-4"}')
    wrong_key = sent("acc-4", "c1", 99)
    await bus.publish_raw("herald.delivery", b"someone-else", wrong_key.model_dump_json().encode())
    await bus.publish(*(sent("acc-4", "c1", i) for i in range(3)))
    await eventually(lambda: running.rates("acc-4"), lambda r: counts_of(r, "c1") is not None
                     and counts_of(r, "c1")["sent"] == 3, what="valid events counted")  # type: ignore[index]
    dead = await eventually(lambda: bus.records("herald.delivery.dlq"), lambda r: len(r) == 3, what="dead letters")
    reasons = {r.value: dict(r.headers)[DLQ_REASON].decode() for r in dead}  # the original bytes, each with why
    assert reasons[b"{not json"].startswith("not JSON")
    assert reasons[b'{"type": "MessageSent", "account_id": "acc-4"}'].startswith("invalid")
    assert "not the event's account_id" in reasons[wrong_key.model_dump_json().encode()]


async def test_facts_older_than_the_longest_window_are_forgotten(start_compliance: Any, bus: Bus) -> None:
    running = await start_compliance()
    await bus.publish(*(sent("acc-5", "c1", i) for i in range(10)))
    await eventually(lambda: running.rates("acc-5"), lambda r: (counts_of(r, "c1") or {}).get("sent") == 10,
                     what="sends counted")
    processor, facts = running.service.processor, running.service.facts
    assert await processor.sweep_facts(3600, time.time()) == 0  # an hour's horizon keeps them
    assert len(facts) == 10
    later = time.time() + SWEEP_MARGIN_SECONDS + 60
    assert await processor.sweep_facts(0, later) == 10  # past the margin, a zero horizon forgets all
    assert len(facts) == 0
    assert (counts_of(await running.rates("acc-5"), "c1") or {}).get("sent") == 10  # counts stay
