"""The topic registry: one place for names, partitions, retention and dead-letter topics."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from herald_shared.contract import EVENT_TYPES
from herald_shared.topics import ALL_TOPICS, EVENT_TOPICS, FOREVER, TopicNames, events_of, spec, strimzi_manifests


def test_every_event_type_belongs_to_a_registered_topic() -> None:
    registered = {t.name for t in EVENT_TOPICS}
    assert {cls.topic for cls in EVENT_TYPES.values()} == registered


def test_every_event_topic_has_a_dead_letter_topic() -> None:
    names = {t.name for t in ALL_TOPICS}
    for topic in EVENT_TOPICS:
        assert topic.name + ".dlq" in names
        assert spec(topic.name + ".dlq").retention_ms > 0


def test_event_topics_keep_events_forever() -> None:
    """ARCHITECTURE.md: events are the truth, projections are rebuilt from the topics."""
    assert all(t.retention_ms == FOREVER and t.cleanup_policy == "delete" for t in EVENT_TOPICS)
    assert spec("herald.delivery").config()["retention.ms"] == "-1"


def test_prefix_applies_to_every_name_and_round_trips() -> None:
    names = TopicNames("t42.")
    assert names("herald.delivery") == "t42.herald.delivery"
    assert names.dead_letter("herald.delivery") == "t42.herald.delivery.dlq"
    assert names.base("t42.herald.delivery") == "herald.delivery"


def test_unknown_topic_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown topic"):
        TopicNames()("herald.nonsense")


def test_events_of_a_topic() -> None:
    assert {c.__name__ for c in events_of("herald.compliance")} == {
        "AccountWarned", "AccountSuspended", "AccountReinstated", "ContentFlagged", "StaffViewedRates"}


def test_committed_strimzi_manifests_match_the_registry() -> None:
    path = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "base" / "kafka-topics.yaml"
    assert path.read_text() == strimzi_manifests(), "run `herald topics manifests > deploy/k8s/base/kafka-topics.yaml`"
    docs = list(yaml.safe_load_all(path.read_text()))
    assert [d["spec"]["topicName"] for d in docs] == [t.name for t in ALL_TOPICS]
    assert all(d["kind"] == "KafkaTopic" and d["spec"]["config"]["retention.ms"] for d in docs)
