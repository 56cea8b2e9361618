"""The one registry of Herald's Kafka topics: names, owners, partitions, retention, dead-letter topics."""

from __future__ import annotations

from dataclasses import dataclass, field

from .contract import EVENT_TYPES, Event

DLQ_SUFFIX = ".dlq"
FOREVER = -1
DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    owner: str
    partitions: int
    description: str
    consumers: tuple[str, ...] = ()
    # Events are the truth, so event topics keep everything; dead letters are kept 30 days.
    retention_ms: int = FOREVER
    cleanup_policy: str = "delete"
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def dead_letter(self) -> TopicSpec:
        return TopicSpec(
            name=self.name + DLQ_SUFFIX,
            owner=self.owner,
            partitions=1,
            description=f"Dead letters of {self.name}: raw bytes, reason and origin in headers.",
            retention_ms=30 * DAY_MS,
        )

    def config(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy, **self.extra_config}


# `consumers`: the other services that read the topic, as their consumers are wired (the owner reads its own too);
# tests/unit/shared/test_asyncapi_consumers.py builds each service and holds this to what it subscribes to.
EVENT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("herald.subscriptions", "subscriptions", 6, "Lists, subscribers, consent, suppression, erasure.",
              consumers=("billing", "campaigns", "compliance", "delivery")),
    TopicSpec("herald.campaigns", "campaigns", 6, "Campaigns from creation through review to completion.",
              consumers=("billing", "delivery")),
    TopicSpec("herald.delivery", "delivery", 6, "Sending outcomes, bounces, complaints, opens and clicks.",
              consumers=("billing", "campaigns", "compliance", "subscriptions")),
    TopicSpec("herald.compliance", "compliance", 6, "Warnings, suspensions, reinstatements, content flags.",
              consumers=("billing", "campaigns", "delivery")),
    TopicSpec("herald.billing", "billing", 6, "Accounts, users, API keys, plans, quotas, credits, payments.",
              consumers=("campaigns", "compliance", "delivery", "subscriptions")),
)

ALL_TOPICS: tuple[TopicSpec, ...] = tuple(t for spec in EVENT_TOPICS for t in (spec, spec.dead_letter))
_BY_NAME = {t.name: t for t in ALL_TOPICS}


def spec(name: str) -> TopicSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(_BY_NAME)}") from None


def topic_of(event: Event | type[Event]) -> str:
    """Base name of the topic that owns an event type."""
    return event.topic


def events_of(topic: str) -> list[type[Event]]:
    return [cls for cls in EVENT_TYPES.values() if cls.topic == topic]


@dataclass(frozen=True)
class TopicNames:
    """Maps base names to real names: a prefix keeps tests (or tenants of a shared cluster) apart."""

    prefix: str = ""

    def __call__(self, base: str) -> str:
        spec(base)
        return self.prefix + base

    def base(self, real: str) -> str:
        if not real.startswith(self.prefix):
            raise KeyError(f"topic {real!r} does not carry the prefix {self.prefix!r}")
        return spec(real[len(self.prefix):]).name

    def dead_letter(self, base: str) -> str:
        return self(base) if base.endswith(DLQ_SUFFIX) else self(base + DLQ_SUFFIX)


def strimzi_manifests(cluster: str = "herald", namespace: str = "herald", replicas: int = 3) -> str:
    """Strimzi KafkaTopic resources for every registry topic (deploy/k8s/base/kafka-topics.yaml is this)."""
    docs = []
    for topic in ALL_TOPICS:
        resource = topic.name.replace(".", "-")
        config = "\n".join(f"    {key}: \"{value}\"" for key, value in sorted(topic.config().items()))
        docs.append(
            f"# {topic.description}\n"
            "apiVersion: kafka.strimzi.io/v1beta2\n"
            "kind: KafkaTopic\n"
            "metadata:\n"
            f"  name: {resource}\n"
            f"  namespace: {namespace}\n"
            f"  labels:\n    strimzi.io/cluster: {cluster}\n    app.kubernetes.io/part-of: herald\n"
            f"    herald.dev/owner: {topic.owner}\n"
            "spec:\n"
            f"  topicName: {topic.name}\n"
            f"  partitions: {topic.partitions}\n"
            f"  replicas: {replicas}\n"
            f"  config:\n{config}\n"
            "    min.insync.replicas: \"2\"\n"
        )
    header = ("# Generated from shared/herald_shared/topics.py by `herald topics manifests`; do not edit.\n"
              "# Strimzi KafkaTopic resources for an operator-managed cluster named 'herald'.\n")
    return header + "---\n".join(docs)
