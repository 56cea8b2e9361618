"""The compliance processor on the real broker: events published as other services publish them (plain aiokafka
producing the contract's JSON, keyed by account), the processor's output read back from herald.compliance."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from herald_compliance.main import Compliance, ComplianceSettings
from herald_shared.apikeys import hash_secret
from herald_shared.contract import Event, serialize_event
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced, MessageSent
from herald_shared.contract.subscriptions import ListCreated, SubscriberAdded
from herald_shared.kafka import read_from_start
from herald_shared.settings import HeraldSettings

STAFF_TOKEN = "staff-secret-for-tests-0123456789"
STAFF_HASH = hash_secret(STAFF_TOKEN)
STAFF = {"Authorization": f"Bearer {STAFF_TOKEN}"}


def env_of(account_id: str, producer: str = "delivery", at: datetime | None = None) -> dict[str, Any]:
    return {"account_id": account_id, "producer": producer, "occurred_at": at or datetime.now(UTC)}


def ref(campaign: str, i: int) -> dict[str, Any]:
    return {"message_id": f"{campaign}-m{i}", "campaign_id": campaign, "subscriber_id": f"s{i}", "list_id": "l1"}


def sent(account_id: str, campaign: str, i: int) -> MessageSent:
    return MessageSent(**env_of(account_id), payload={**ref(campaign, i), "recipient_domain": "example.com",
                                                      "smtp_code": 250})


def hard_bounce(account_id: str, campaign: str, i: int) -> MessageBounced:
    return MessageBounced(**env_of(account_id), payload={**ref(campaign, i), "bounce_class": "hard",
                                                         "smtp_code": 550, "diagnostic": "5.1.1 no such user",
                                                         "source": "dsn"})


def complaint(account_id: str, campaign: str, i: int) -> ComplaintReceived:
    return ComplaintReceived(**env_of(account_id), payload={**ref(campaign, i), "feedback_type": "abuse",
                                                            "reporting_domain": "isp.example"})


def new_list(account_id: str, list_id: str, people: Iterable[int], at: datetime | None = None, *,
             create: bool = True) -> list[Event]:
    """A list created (unless `create` is false) and filled with person<i>@example.com for each i of `people`, as
    subscriptions publishes it, at `at` (or now)."""
    events: list[Event] = [ListCreated(**env_of(account_id, "subscriptions", at),  # type: ignore[arg-type]
                                       payload={"list_id": list_id, "name": list_id, "opt_in": "single"})]
    for i in people:
        address = f"person{i}@example.com"
        events.append(SubscriberAdded(**env_of(account_id, "subscriptions", at), payload={  # type: ignore[arg-type]
            "list_id": list_id, "subscriber_id": f"{list_id}-s{i}", "email": address,
            "email_sha256": hashlib.sha256(address.encode()).hexdigest(), "opt_in": "single",
            "consent": {"source": "import", "collected_at": "2026-11-01T00:00:00Z", "method": "test"}}))
    return events if create else events[1:]


def counts_of(rates: dict[str, Any], campaign: str) -> dict[str, int] | None:
    """A campaign's raw counts in a rates answer (`GET /v1/staff/accounts/{id}/rates`), None when it has none."""
    for scope in rates.get("scopes", []):
        if scope["scope"] == "campaign" and scope["name"] == campaign:
            return dict(scope["raw_counts"])
    return None


class Bus:
    """Publishes like another service (aiokafka, JSON, key = account_id) and reads the output topics."""

    def __init__(self, settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
        self.settings, self.producer = settings, producer

    async def publish(self, *events: Event) -> None:
        for event in events:
            await self.producer.send(self.settings.topics(event.topic), value=serialize_event(event),
                                     key=event.account_id.encode())
        await self.producer.flush()

    async def publish_raw(self, base_topic: str, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(self.settings.topics(base_topic), value=value, key=key)

    async def records(self, base_topic: str) -> list[Any]:
        return [r async for batch in read_from_start(self.settings, [self.settings.topics(base_topic)])
                for r in batch]

    async def compliance_events(self, type_name: str | None = None) -> list[dict[str, Any]]:
        events = [json.loads(r.value) for r in await self.records("herald.compliance")]
        return [e for e in events if type_name is None or e["type"] == type_name]


@pytest.fixture
async def bus(settings: HeraldSettings, producer: AIOKafkaProducer) -> Bus:
    return Bus(settings, producer)


def compliance_settings(settings: HeraldSettings, **overrides: Any) -> ComplianceSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": settings.kafka_bootstrap_servers, "mongodb_url": settings.mongodb_url,
        "HERALD_TOPIC_PREFIX": settings.topic_prefix, "HERALD_DATABASE_PREFIX": settings.database_prefix,
        "HERALD_RATE_MINIMUM_SENT": 100, "HERALD_STAFF_TOKENS": f"rita={STAFF_HASH}"}
    values.update(overrides)
    return ComplianceSettings(**values)


@dataclass
class Running:
    service: Compliance
    http: httpx.AsyncClient

    async def rates(self, account_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/accounts/{account_id}/rates", headers=STAFF)
        return response.json() if response.status_code == 200 else {}


@pytest.fixture
async def start_compliance(settings: HeraldSettings) -> AsyncIterator[Callable[..., Any]]:
    started: list[Compliance] = []

    async def start(**overrides: Any) -> Running:
        service = Compliance(compliance_settings(settings, **overrides))
        await service.start()
        started.append(service)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://compliance.test")
        return Running(service, http)

    yield start
    for service in started:
        await service.stop()
