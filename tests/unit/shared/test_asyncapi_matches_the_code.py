"""The AsyncAPI document says what the code does: who consumes each topic (read from each service's wiring, the
service built as `main` builds it), every header the code writes, and how dead letters are keyed."""

from __future__ import annotations

import ast
import json
import re
import socket
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from herald_billing.main import Billing, BillingSettings
from herald_campaigns.main import Campaigns, CampaignsSettings
from herald_compliance.main import Compliance, ComplianceSettings
from herald_delivery.main import Delivery, DeliverySettings
from herald_shared.contract.publish import SCHEMA_DIR
from herald_shared.kafka import EventConsumer
from herald_shared.topics import ALL_TOPICS, EVENT_TOPICS
from herald_subscriptions.main import Subscriptions, SubscriptionsSettings

REPO = Path(__file__).resolve().parents[3]


def asyncapi_document() -> Any:
    """The published document (test_published_schemas holds it to what the contract generates)."""
    return json.loads((SCHEMA_DIR / "asyncapi.json").read_text())


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def subscribed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The base topics of every EventConsumer built while the test runs, one list per consumer."""
    built: list[list[str]] = []
    wire = EventConsumer.__init__

    def recording(self: EventConsumer, settings: Any, *args: Any, topics: Any, **kwargs: Any) -> None:
        built.append(list(topics))
        wire(self, settings, *args, topics=topics, **kwargs)

    monkeypatch.setattr(EventConsumer, "__init__", recording)
    yield built


@pytest.fixture(autouse=True)
async def kafka_clients_closed(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The services are built, never started: their Kafka clients are stopped at the end, not left to the
    garbage collector (aiokafka reports an unclosed client then, after the test run's summary)."""
    clients: list[AIOKafkaProducer | AIOKafkaConsumer] = []
    for cls in (AIOKafkaProducer, AIOKafkaConsumer):
        def recording(self: Any, *args: Any, _wire: Any = cls.__init__, **kwargs: Any) -> None:
            clients.append(self)
            _wire(self, *args, **kwargs)
        monkeypatch.setattr(cls, "__init__", recording)
    yield
    for client in clients:
        await client.stop()


async def consumed_by_service(subscribed: list[list[str]]) -> dict[str, set[str]]:
    """Each service's consumed base topics, from its wiring: every EventConsumer it builds, and compliance's faust
    agent's source topics."""
    nowhere: dict[str, Any] = {"kafka_bootstrap_servers": f"127.0.0.1:{closed_port()}",
                               "mongodb_url": f"mongodb://127.0.0.1:{closed_port()}"}
    secret: dict[str, Any] = {"HERALD_LINK_SECRET": "s" * 40}
    consumed: dict[str, set[str]] = {}
    for service, build in (
            ("billing", lambda: Billing(BillingSettings(**nowhere))),
            ("campaigns", lambda: Campaigns(CampaignsSettings(**nowhere))),
            ("delivery", lambda: Delivery(DeliverySettings(**nowhere, **secret))),
            ("subscriptions", lambda: Subscriptions(SubscriptionsSettings(**nowhere, **secret)))):
        subscribed.clear()
        build()
        assert subscribed, f"{service} built no consumer: has its wiring moved?"
        consumed[service] = {topic for topics in subscribed for topic in topics}
    compliance = Compliance(ComplianceSettings(**nowhere))
    names = compliance.settings.topics
    consumed["compliance"] = {names.base(topic) for agent in compliance.faust.agents.values()
                              for topic in agent.channel.topics}  # type: ignore[attr-defined]
    return consumed


async def test_asyncapi_names_every_consumer_of_each_topic_as_the_services_are_wired(
        subscribed: list[list[str]]) -> None:
    consumed = await consumed_by_service(subscribed)
    owners = {spec.name: spec.owner for spec in EVENT_TOPICS}
    from_code = {(service, topic) for service, topics in consumed.items() for topic in topics
                 if owners[topic] != service}
    document = asyncapi_document()
    operations, channels = document["operations"], document["channels"]
    documented = {(name.split("Consumes")[0], channels[op["channel"]["$ref"].split("/")[-1]]["address"])
                  for name, op in operations.items() if op["action"] == "receive"}
    assert documented == from_code
    # billing reads campaigns' StaffViewed and compliance's StaffViewedRates and AccountReinstated (its audit log)
    assert {("billing", "herald.campaigns"), ("billing", "herald.compliance")} <= documented
    assert ("compliance", "herald.campaigns") not in documented


@cache
def _code() -> list[tuple[Path, list[ast.AST]]]:
    """Every node of the shared library's and the services' modules, by module."""
    paths = [*(REPO / "shared" / "herald_shared").rglob("*.py"), *(REPO / "services").glob("*/herald_*/*.py")]
    return [(path, list(ast.walk(ast.parse(path.read_text())))) for path in paths]


def _string_constants() -> Iterator[tuple[Path, str]]:
    for path, nodes in _code():
        if path.name == "publish.py":  # the document's own text
            continue
        for node in nodes:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield path, node.value


def test_every_herald_header_the_code_writes_is_in_the_asyncapi_document() -> None:
    schemas = asyncapi_document()["components"]["schemas"]
    documented = set(schemas["HeraldHeaders"]["properties"]) | set(schemas["DeadLetterHeaders"]["properties"])
    topics_and_loggers = {spec.name for spec in ALL_TOPICS}
    in_code = {value for _, value in _string_constants()
               if re.fullmatch(r"herald\.[a-z_]+(\.[a-z_]+)*", value) and value not in topics_and_loggers}
    assert {"herald.replayed_from", "herald.inbound.recipients", "herald.dlq.reason"} <= in_code
    assert in_code - documented == set()


def test_every_dead_letter_key_that_is_no_account_is_in_the_asyncapi_document() -> None:
    """A dead-letter entry from no topic keyed by a constant (the inbound server's b"inbound") says so."""
    keys: set[str] = set()
    for _, nodes in _code():
        for node in nodes:
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dead_letter":
                keys |= {kw.value.value.decode() for kw in node.keywords if kw.arg == "key"
                         and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bytes)}
    assert "inbound" in keys
    described = asyncapi_document()["components"]["messages"]["DeadLetter"]["bindings"]["kafka"]["key"]["description"]
    assert all(f"'{key}'" in described for key in keys)
