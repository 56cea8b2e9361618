"""The adapter over aiokafka's private parts (herald_shared.aiokafka_adapter): what it does, with a stand-in
fetcher, and the contract it relies on in the installed aiokafka, which fails loudly on an upgrade that moves it.
The real broker's side: tests/integration/shared/test_idle_fetches.py."""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher

from herald_shared.aiokafka_adapter import KNOWN_GOOD_AIOKAFKA, hold_idle_fetches


class StandInFetcher:
    def __init__(self) -> None:
        self._records: dict[str, object] = {}
        self._fetch_max_wait_ms = 50
        self.waits: list[int] = []

    def _get_actions_per_node(self, assignment: Any) -> str:
        self.waits.append(self._fetch_max_wait_ms)
        return f"actions for {assignment}"


class StandInConsumer:
    def __init__(self) -> None:
        self._fetcher = StandInFetcher()


def test_a_fetch_waits_long_only_while_the_consumer_holds_no_records() -> None:
    consumer = StandInConsumer()
    hold_idle_fetches(consumer, busy_ms=50, idle_ms=500)  # type: ignore[arg-type]
    fetcher = consumer._fetcher
    assert fetcher._get_actions_per_node("a") == "actions for a"  # what aiokafka's own gives, handed back
    fetcher._records["news-0"] = object()  # records in hand: that partition is left out of the fetch
    fetcher._get_actions_per_node("a")
    fetcher._records.clear()
    fetcher._get_actions_per_node("a")
    assert fetcher.waits == [500, 50, 500]


def test_the_installed_aiokafka_is_a_version_the_adapter_was_checked_against() -> None:
    installed = version("aiokafka")
    assert installed in KNOWN_GOOD_AIOKAFKA, (
        f"aiokafka {installed} is not among {KNOWN_GOOD_AIOKAFKA}: run this module's tests and "
        "tests/integration/shared/test_idle_fetches.py, read what changed in its Fetcher, then add the version")


def test_aiokafka_builds_each_fetch_with_the_wait_and_the_records_in_hand_the_adapter_sets_and_reads() -> None:
    """The adapter swaps the fetcher's `_get_actions_per_node` on the instance and sets `_fetch_max_wait_ms` from
    `_records` before each call: so the fetch routine must call it through the instance, and it must read both."""
    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start), (
        "aiokafka's consumer no longer makes its Fetcher in start() as `_fetcher`")
    assert "self._get_actions_per_node(" in inspect.getsource(Fetcher._fetch_requests_routine), (
        "aiokafka's fetch routine no longer asks `self._get_actions_per_node` for its requests")
    building = inspect.getsource(Fetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms" in building and "in self._records" in building, (
        "aiokafka no longer builds each fetch from `_fetch_max_wait_ms` and `_records` in _get_actions_per_node")
    assert "self._records = " in inspect.getsource(Fetcher.__init__)
