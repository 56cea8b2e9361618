"""The README's table of topics names every event type of the contract on its topic, and no other."""

from __future__ import annotations

import re
from collections import defaultdict

from herald_shared.contract import EVENT_TYPES
from tests.conftest import ROOT


def readme_topic_table() -> dict[str, set[str]]:
    """Topic -> the event types its row of the README's table lists."""
    rows = re.findall(r"^\| `(herald\.[a-z]+)` \| [a-z]+ \| (.+?) \|$", (ROOT / "README.md").read_text(), re.M)
    assert rows, "the README has its table of topics"
    return {topic: {name.strip() for name in events.split(",")} for topic, events in rows}


def test_every_event_type_is_in_its_topics_row() -> None:
    contract: dict[str, set[str]] = defaultdict(set)
    for name, cls in EVENT_TYPES.items():
        contract[cls.topic].add(name)
    assert readme_topic_table() == dict(contract)
