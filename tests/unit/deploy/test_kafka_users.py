"""Kafka authentication and write rights in the prod overlay: the brokers authenticate (SCRAM-SHA-512) and authorize
(ACLs), every service has a KafkaUser that may write its own topic and the dead-letter topics of what it consumes
and nothing else, and every Deployment authenticates as its service's user (the review's finding: a third party
on the broker wrote billing's topic and issued itself another account's API key)."""

from __future__ import annotations

from typing import Any

from herald_shared.settings import HeraldSettings
from herald_shared.topics import ALL_TOPICS, DLQ_SUFFIX, EVENT_TOPICS
from tests.unit.deploy.helpers import objects

SERVICES = ("subscriptions", "campaigns", "delivery", "billing", "compliance")
# The user each Deployment runs as: a service's edge processes are the service.
USER_OF = {**{s: s for s in SERVICES}, "delivery-edge": "delivery", "subscriptions-api": "subscriptions"}
# compliance's faust app (`herald-compliance`): its consumer group, and its tables' changelog topics' prefix.
FAUST_APP = "herald-compliance"
WRITES = {"Write", "Create", "All"}


def acls(user: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(resource type, name, pattern type, operation) of each operation a KafkaUser is allowed."""
    rows = []
    for acl in user["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow", acl
        resource = acl["resource"]
        for operation in acl.get("operations", [acl.get("operation")]):
            rows.append((resource["type"], resource["name"], resource.get("patternType", "literal"), operation))
    return rows


def consumed(service: str) -> set[str]:
    """Its own topic and those whose consumers name it (herald_shared.topics)."""
    return {f"herald.{service}"} | {t.name for t in EVENT_TOPICS if service in t.consumers}


def matches(name: str, pattern: str, topic: str) -> bool:
    return topic.startswith(name) if pattern == "prefix" else topic == name


def test_the_brokers_authenticate_and_authorize_and_the_users_are_watched_where_they_are() -> None:
    kafka = objects("prod", "Kafka")["herald"]["spec"]
    [listener] = kafka["kafka"]["listeners"]
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert kafka["kafka"]["authorization"]["type"] == "simple"
    assert kafka["entityOperator"]["userOperator"]["watchedNamespace"] == "herald"
    assert "allow.everyone.if.no.acl.found" not in kafka["kafka"].get("config", {})  # Kafka's default: false


def test_every_service_has_a_scram_user_in_the_namespace_the_operator_watches() -> None:
    users = objects("prod", "KafkaUser")
    assert sorted(users) == sorted(SERVICES)
    for name, user in users.items():
        assert user["metadata"]["namespace"] == "herald", name
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "herald", name
        assert user["apiVersion"] == "kafka.strimzi.io/v1beta2", name
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}, name
        assert user["spec"]["authorization"]["type"] == "simple", name


def test_each_service_may_write_only_its_own_topic_and_the_dead_letters_of_what_it_consumes() -> None:
    """Nobody forges another service's events: billing's topic (API keys) is billing's alone to write."""
    users = objects("prod", "KafkaUser")
    registry = [t.name for t in ALL_TOPICS]
    for service in SERVICES:
        rows = acls(users[service])
        written = {topic for topic in registry for kind, name, pattern, op in rows
                   if kind in ("topic", "cluster") and op in WRITES and matches(name, pattern, topic)}
        assert written == {f"herald.{service}"} | {t + DLQ_SUFFIX for t in consumed(service)}, service
        assert not [row for row in rows if row[3] == "All" or row[0] in ("cluster", "transactionalId")], service
        for kind, name, pattern, op in rows:  # the only other writes: compliance's faust changelogs
            if op in WRITES and not (kind == "topic" and pattern == "literal"):
                assert (service, kind, name, pattern) == ("compliance", "topic", f"{FAUST_APP}-", "prefix"), op
    writers = {topic: sorted(s for s in SERVICES for kind, name, pattern, op in acls(users[s])
                             if kind == "topic" and op == "Write" and matches(name, pattern, topic))
               for topic in ("herald.billing", "herald.subscriptions")}
    assert writers == {"herald.billing": ["billing"], "herald.subscriptions": ["subscriptions"]}


def test_each_service_reads_what_it_consumes_in_its_own_consumer_groups() -> None:
    users = objects("prod", "KafkaUser")
    for service in SERVICES:
        rows = acls(users[service])
        read = {t.name for t in EVENT_TOPICS for kind, name, pattern, op in rows
                if kind == "topic" and op == "Read" and matches(name, pattern, t.name)}
        assert read == consumed(service), service
        groups = {(name, pattern) for kind, name, pattern, op in rows if kind == "group" and op == "Read"}
        assert groups == {(FAUST_APP if service == "compliance" else f"{service}.", "prefix")}, service
        # a process creating missing topics at start (ensure_topics) must see every registry topic
        assert ("topic", "herald.", "prefix", "Describe") in rows, service
    faust = {op for kind, name, pattern, op in acls(users["compliance"]) if name == f"{FAUST_APP}-"}
    assert faust == {"Create", "Describe", "Read", "Write"}
    assert not [t for t in ALL_TOPICS if t.name.startswith(f"{FAUST_APP}-")]


def test_every_deployment_authenticates_as_its_services_user() -> None:
    common = objects("prod", "ConfigMap")["herald-common"]["data"]
    assert common["HERALD_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    deployments = objects("prod", "Deployment")
    assert sorted(deployments) == sorted(USER_OF)
    for name, deployment in deployments.items():
        user = USER_OF[name]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        env = {v["name"]: v for v in container["env"]}
        assert env["HERALD_KAFKA_USERNAME"] == {"name": "HERALD_KAFKA_USERNAME", "value": user}, name
        # the Secret Strimzi's user operator writes for the KafkaUser, under the user's name
        assert env["HERALD_KAFKA_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": user, "key": "password"}}, name
        assert "HERALD_KAFKA_SECURITY_PROTOCOL" not in env, name  # one place: herald-common
        settings = HeraldSettings(**{**common, "HERALD_KAFKA_USERNAME": user,  # type: ignore[arg-type]
                                     "HERALD_KAFKA_PASSWORD": "from-the-secret"})
        assert settings.kafka_client_options()["sasl_mechanism"] == "SCRAM-SHA-512", name  # the listener's


def test_the_dev_overlay_keeps_plaintext_and_no_users() -> None:
    """A development cluster runs its own Kafka without Strimzi's operators: nothing to authenticate against."""
    assert not objects("dev", "KafkaUser")
    assert "HERALD_KAFKA_SECURITY_PROTOCOL" not in objects("dev", "ConfigMap")["herald-common"]["data"]
    for name, deployment in objects("dev", "Deployment").items():
        env = {v["name"] for v in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        assert not {"HERALD_KAFKA_USERNAME", "HERALD_KAFKA_PASSWORD"} & env, name
