"""Issue 17, memory: a worker keeps at most HERALD_COMPLIANCE_MAX_FACTS facts for deduplication. When the horizon
holds more, it forgets the oldest hours early, and says so: the account's rates name the time forgotten, and
herald_compliance_facts_forgotten_total counts them. No silent loss of exactness: a republished fact it forgot is
late (not counted twice), one it still remembers is a duplicate, a new fact of the forgotten time is late too,
and new facts after it count as ever, also after a restart recovers the tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY

from herald_shared.contract.delivery import MessageSent
from tests.conftest import eventually

from .conftest import Bus, env_of, ref

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
OLD, RECENT = NOW - timedelta(hours=3), NOW - timedelta(hours=1)


def sent(i: int, at: datetime) -> MessageSent:
    return MessageSent(**env_of("acme", at=at), payload={**ref("c1", i), "recipient_domain": "example.com",
                                                          "smtp_code": 250})


def sent_in(rates: dict[str, Any]) -> int:
    return next((int(s["raw_counts"]["sent"]) for s in rates.get("scopes", [])
                 if s["scope"] == "campaign" and s["name"] == "c1"), 0)


def outcome(name: str) -> float:
    return REGISTRY.get_sample_value("herald_compliance_events_total",
                                     {"topic": "herald.delivery", "type": "MessageSent", "outcome": name}) or 0.0


async def test_a_full_fact_index_forgets_its_oldest_hours_and_never_counts_a_fact_twice(
        start_compliance: Any, bus: Bus) -> None:
    running = await start_compliance(HERALD_COMPLIANCE_MAX_FACTS=100, HERALD_COMPLIANCE_FACTS_CHECK_SECONDS=0.2)
    forgotten_before = REGISTRY.get_sample_value("herald_compliance_facts_forgotten_total") or 0.0
    await bus.publish(*(sent(i, OLD) for i in range(60)), *(sent(i, RECENT) for i in range(60, 120)))
    async def forgotten() -> float:
        return (REGISTRY.get_sample_value("herald_compliance_facts_forgotten_total") or 0.0) - forgotten_before

    # The account records the time first, then the facts go, then they are counted.
    assert await eventually(forgotten, bool, within=60, what="the oldest hour forgotten") == 60
    rates = await eventually(lambda: running.rates("acme"), lambda r: sent_in(r) == 120, within=60,
                             what="every send counted")  # the eviction may come between two batches
    assert datetime.fromisoformat(rates["forgotten_until"]) == OLD  # the newest fact of the hour it forgot
    assert len(running.service.facts) == 60

    late, duplicate = outcome("late"), outcome("duplicate")
    await bus.publish(*(sent(i, OLD) for i in range(60)),  # republished, forgotten: late
                      *(sent(i, RECENT) for i in range(60, 120)),  # republished, remembered: duplicates
                      *(sent(i, OLD) for i in range(200, 210)),  # never seen, of the forgotten time: late
                      *(sent(i, NOW) for i in range(300, 310)))  # new: counted
    await eventually(lambda: running.rates("acme"), lambda r: sent_in(r) == 130, within=60, what="the new sends")
    await eventually(lambda: running.rates("acme"), lambda r: outcome("late") - late == 70, within=30,
                     what="the late ones")
    assert outcome("duplicate") - duplicate == 60
    assert sent_in(await running.rates("acme")) == 130

    # A restart recovers the account's forgotten time with its state: a forgotten fact stays uncounted.
    await running.service.stop()
    again = await start_compliance(HERALD_COMPLIANCE_MAX_FACTS=100, HERALD_COMPLIANCE_FACTS_CHECK_SECONDS=0.2)
    rates = await eventually(lambda: again.rates("acme"), lambda r: sent_in(r) == 130, within=60, what="recovered")
    assert datetime.fromisoformat(rates["forgotten_until"]) == OLD
    # The tables came back through the preload (faust_adapter.PreloadedStore), not record by record in faust.
    assert again.service.facts.table.data.preloaded_records > 0
    assert again.service.accounts.table.data.preloaded_records > 0
    late = outcome("late")
    await bus.publish(*(sent(i, OLD) for i in range(5)), sent(400, NOW))
    await eventually(lambda: again.rates("acme"), lambda r: sent_in(r) == 131, within=60, what="after the restart")
    await eventually(lambda: again.rates("acme"), lambda r: outcome("late") - late == 5, within=30,
                     what="forgotten facts late after the restart")
    assert sent_in(await again.rates("acme")) == 131
