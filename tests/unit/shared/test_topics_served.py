"""`ensure_topics` returns only once the broker serves every topic it wants (`until_led`): a consumer that
subscribes before then is assigned none of a new topic's partitions until the next metadata refresh, minutes away."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaError

from herald_shared.kafka import until_led


def topic(name: str, leaders: list[int], error_code: int = 0) -> dict[str, Any]:
    return {"topic": name, "error_code": error_code,
            "partitions": [{"partition": n, "error_code": 0, "leader": leader} for n, leader in enumerate(leaders)]}


class Metadata:
    """The broker's answers, one per request; the last one again once they run out."""

    def __init__(self, *answers: list[dict[str, Any]]) -> None:
        self.answers, self.asked = list(answers), 0

    async def __call__(self, names: list[str]) -> list[dict[str, Any]]:
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def test_it_waits_while_a_new_topic_is_unknown_or_a_partition_has_no_leader() -> None:
    metadata = Metadata([topic("t.a", [1, 1]), topic("t.b", [], error_code=3)],  # UNKNOWN_TOPIC_OR_PARTITION
                        [topic("t.a", [1, 1]), topic("t.b", [1, -1])],
                        [topic("t.a", [1, 1]), topic("t.b", [1])],  # one of its two partitions only
                        [topic("t.a", [1, 1]), topic("t.b", [1, 1])])
    await until_led(metadata, {"t.a": 2, "t.b": 2}, within=10)
    assert metadata.asked == 4


async def test_topics_served_at_once_cost_one_request() -> None:
    metadata = Metadata([topic("t.a", [1, 1, 1])])
    await until_led(metadata, {"t.a": 3}, within=10)
    assert metadata.asked == 1


async def test_a_topic_never_served_is_named_when_the_time_is_up() -> None:
    metadata = Metadata([topic("t.a", [1]), topic("t.b", [-1, 1]), topic("t.c", [], error_code=3)])
    with pytest.raises(KafkaError) as refused:
        await until_led(metadata, {"t.a": 1, "t.b": 2, "t.c": 1}, within=0.1)
    assert "t.b: 1 of 2 partitions led" in str(refused.value) and "t.c: error 3" in str(refused.value)
    assert "t.a" not in str(refused.value) and metadata.asked > 1


async def test_a_topic_that_existed_needs_only_to_be_known_not_every_partition_led() -> None:
    """A topic another process created (or an operator, with other partitions), or one with a partition whose
    leader is away: the service starts on it as before."""
    metadata = Metadata([topic("t.a", [], error_code=3)], [topic("t.a", [1, -1, 1, 1])])
    await until_led(metadata, {"t.a": 0}, within=10)
    assert metadata.asked == 2
