"""Issue 17, memory: the facts table is kept packed (`packed_facts`) and its changelog keyed `<account>|#<digest>`.
A worker upgraded onto a changelog written in the earlier format (`<account>|s:<message id>` → marker) still
knows those facts: a republished one is a duplicate, and forgetting one deletes its old record from the
changelog, so it does not come back with the next recovery."""

from __future__ import annotations

import json
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from herald_compliance import packed_facts
from herald_compliance.processor import SWEEP_MARGIN_SECONDS, account_partition
from herald_shared.kafka import read_from_start
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .conftest import Bus, sent


def sent_in(rates: dict[str, Any]) -> int:
    return next((int(s["raw_counts"]["sent"]) for s in rates.get("scopes", [])
                 if s["scope"] == "campaign" and s["name"] == "c1"), 0)


async def changelog(settings: HeraldSettings) -> list[tuple[str, bytes | None]]:
    topic = f"{settings.topic_prefix}herald-compliance-facts-changelog"
    return [(json.loads(r.key), r.value) async for batch in read_from_start(settings, [topic]) for r in batch]


async def test_facts_written_in_the_earlier_format_are_known_and_forgotten_for_good(
        start_compliance: Any, bus: Bus, settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    running = await start_compliance()
    await bus.publish(*(sent("acme", "c1", i) for i in range(5)))
    await eventually(lambda: running.rates("acme"), lambda r: sent_in(r) == 5, what="sends counted")
    await running.service.stop()
    written = await changelog(settings)
    new_keys = {key: value for key, value in written if value is not None}
    assert len(new_keys) == 5 and all(key.startswith("acme|#") for key in new_keys)

    # The earlier version's changelog: the same facts under their own keys (as a worker before the upgrade wrote
    # them), the new records gone.
    topic, partition = f"{settings.topic_prefix}herald-compliance-facts-changelog", account_partition("acme")
    by_digest = {packed_facts.parse_key(key)[1]: value for key, value in new_keys.items()}  # type: ignore[index]
    for i in range(5):
        fact = packed_facts.digest("acme", f"s:c1-m{i}")
        await producer.send(topic, key=json.dumps(packed_facts.changelog_key("acme", fact)).encode(), value=None,
                            partition=partition)
        await producer.send(topic, key=json.dumps(f"acme|s:c1-m{i}").encode(), value=by_digest[fact],
                            partition=partition)
    await producer.flush()

    again = await start_compliance()
    await eventually(lambda: again.rates("acme"), lambda r: sent_in(r) == 5, what="recovered")
    assert len(again.service.facts) == 5
    assert len(again.service.facts.facts.legacy) == 5  # read in the earlier format
    await bus.publish(*(sent("acme", "c1", i) for i in range(7)))  # 0-4 again: duplicates; 5 and 6 are new
    await eventually(lambda: again.rates("acme"), lambda r: sent_in(r) == 7, what="the new sends")
    assert sent_in(await again.rates("acme")) == 7

    later = time.time() + SWEEP_MARGIN_SECONDS + 60
    assert await again.service.processor.sweep_facts(0, later) == 7
    await again.service.stop()
    last: dict[str, bytes | None] = {}
    for key, value in await changelog(settings):
        last[key] = value
    assert {key for key, value in last.items() if value is not None} == set()  # every fact's record deleted

    third = await start_compliance()
    await eventually(lambda: third.rates("acme"), lambda r: sent_in(r) == 7, what="recovered again")
    assert len(third.service.facts) == 0
