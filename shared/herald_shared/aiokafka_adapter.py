"""The one place Herald reaches into aiokafka's private parts (STYLE.md: a private attribute of a library is a debt,
kept in one adapter module with a test that fails loudly when an upgrade moves it: tests/unit/shared/
test_aiokafka_adapter.py). Known good: the versions in `KNOWN_GOOD_AIOKAFKA`.

What it does: a consumer's fetch waits on empty partitions for as long as it helps, not one fixed time.
aiokafka keeps one fetch in flight per broker and leaves out of it a partition whose records the consumer still
holds, so while a consumer works through a batch, the fetch out is for its idle partitions only and the busy
partition's next records wait until it comes back: that wait must be short (`FETCH_MAX_WAIT_MS`, 50 ms). When the
consumer holds no records, every partition is in the fetch and the broker answers it as soon as any has new
records, so a long wait delays nothing; a short one made every idle consumer send 20 fetches a second (measured:
an idle subscriptions process 5.8% of a core, 1.8% with 500 ms).
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer

KNOWN_GOOD_AIOKAFKA = ("0.14.0",)  # aiokafka versions this module was checked against


def hold_idle_fetches(consumer: AIOKafkaConsumer, *, busy_ms: int, idle_ms: int) -> None:
    """After `consumer.start()`: each fetch it sends waits at most `busy_ms` on empty partitions while the consumer
    holds records not yet taken (`getmany`), `idle_ms` when it holds none."""
    fetcher: Any = consumer._fetcher  # made by start()
    build = fetcher._get_actions_per_node

    def actions_per_node(assignment: Any) -> Any:
        # Read by the same call, when it builds the fetch requests (the contract test checks it still is).
        fetcher._fetch_max_wait_ms = busy_ms if fetcher._records else idle_ms
        return build(assignment)

    fetcher._get_actions_per_node = actions_per_node
