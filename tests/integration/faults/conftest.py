"""Fault tests: each service runs as a real process (`herald-<service>`, as `scripts/run` starts it) against the
real stack, with the test's own topic and database prefixes; these helpers start, probe and stop such
processes, and read what Kafka says a consumer group has done."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from herald_shared.contract import Event
from herald_shared.contract.billing import AccountApproved, AccountOpened, ApiKeyIssued, PlanChanged
from herald_shared.contract.subscriptions import ListCreated, SubscriberAdded, SubscriberConfirmed
from herald_shared.kafka import (
    DLQ_CONSUMER,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    end_offsets,
    read_from_start,
)
from herald_shared.mongo import Document
from herald_shared.settings import HeraldSettings
from herald_subscriptions.domain import subscriber_id_for
from herald_subscriptions.store import SubscriptionsProjection
from tests.conftest import dies_with_the_tests, eventually, free_port, subprocess_env

LINK_SECRET = "fault-tests-link-secret-0123456789"


# What each service needs besides the stack's addresses to start (delivery's relay: a port nobody listens on
# unless a test passes its own).
SERVICE_ENV: dict[str, dict[str, Any]] = {
    "billing": {"HERALD_SESSION_SECRET": "fault-tests-session-secret"},
    "campaigns": {},
    "compliance": {},
    "delivery": {"HERALD_LINK_SECRET": LINK_SECRET, "HERALD_SMTP_HOST": "127.0.0.1",
                 "HERALD_BOUNCE_DOMAIN": "bounces.herald.test", "HERALD_SEND_POLL_SECONDS": 0.2},
    "subscriptions": {"HERALD_LINK_SECRET": LINK_SECRET},
}


@dataclass
class ServiceProcess:
    """One `herald-<service>` process of a test; `start()` again after it died restarts it on the same port."""

    name: str
    settings: HeraldSettings
    log: Path
    env: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # A restart after a SIGKILL waits for the dead member's session to end before it gets its partitions.
        env = {**SERVICE_ENV[self.name], "HERALD_LOG_FORMAT": "text", "HERALD_KAFKA_SESSION_TIMEOUT_SECONDS": 6,
               **self.env}
        if self.name == "delivery":
            env.setdefault("HERALD_SMTP_PORT", free_port())
            env.setdefault("HERALD_INBOUND_SMTP_PORT", free_port())
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([f"herald-{self.name}"], stdout=out, stderr=subprocess.STDOUT,
                                            env=subprocess_env(self.settings, HERALD_HTTP_PORT=self.port, **env),
                                            preexec_fn=dies_with_the_tests)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def ready(self, within: float = 60.0) -> None:
        async def probe() -> int | None:
            if not self.alive:
                return None
            try:
                async with httpx.AsyncClient(timeout=5) as http:
                    return (await http.get(f"{self.url}/readyz")).status_code
            except httpx.HTTPError:
                return 0

        code = await eventually(probe, lambda c: c in (200, None), within=within,
                                what=f"{self.name} ready (log: {self.log})")
        assert code == 200, f"{self.name} exited before it was ready:\n{self.tail()}"

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or committed."""
        assert self.process is not None and self.alive, f"{self.name} is not running:\n{self.tail()}"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, within: float) -> tuple[int | None, float]:
        """SIGTERM, then wait up to `within` seconds: (exit code or None if still running, seconds taken)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(within)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.alive:
            code, _ = self.terminate(30)
            if code is None:
                self.process.kill()
                self.process.wait(10)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


@pytest.fixture
async def services(settings: HeraldSettings, tmp_path: Path) -> AsyncIterator[dict[str, ServiceProcess]]:
    """`services[name]` (created on first use) is that service's process for this test; all are stopped after."""
    started: dict[str, ServiceProcess] = {}

    class Registry(dict[str, ServiceProcess]):
        def __missing__(self, name: str) -> ServiceProcess:
            started[name] = self[name] = ServiceProcess(name, settings, tmp_path / f"{name}.log")
            return started[name]

    yield Registry()
    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in started.values()))


async def committed(settings: HeraldSettings, group: str) -> dict[TopicPartition, int]:
    """A consumer group's committed offsets, as Kafka has them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="fault-tests")
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def behind(settings: HeraldSettings, group: str, topics: list[str]) -> dict[str, int]:
    """Per partition (`topic:partition`) of these base topics that holds records, how many records the group
    has not committed: {} when it has processed (or dead-lettered) everything there is."""
    done = await committed(settings, group)
    left = {}
    for base in topics:
        topic = settings.topics(base)
        for partition, end in (await end_offsets(settings, topic)).items():
            gap = end - done.get(TopicPartition(topic, partition), 0)
            if end and gap:
                left[f"{topic}:{partition}"] = gap
    return left


@dataclass(frozen=True)
class DeadLetter:
    consumer: str
    partition: int
    offset: int
    reason: str


async def dead_letters(settings: HeraldSettings, base: str) -> list[DeadLetter]:
    """Every dead letter of a base topic, with who wrote it and where its record was."""
    found = []
    async for records in read_from_start(settings, [settings.topics.dead_letter(base)]):
        for record in records:
            headers = {k: bytes(v).decode() for k, v in record.headers}
            found.append(DeadLetter(headers[DLQ_CONSUMER], int(headers[DLQ_SOURCE_PARTITION]),
                                    int(headers[DLQ_SOURCE_OFFSET]), headers[DLQ_REASON]))
    return found


def approved_account(key_id: str, key_hash: str, tier_subscriber_limit: int) -> list[Event]:
    """What billing and subscriptions publish for acme: opened, approved, on a monthly plan of this tier, with an
    API key, and its list `news` (single opt-in)."""
    billing: dict[str, Any] = {"account_id": "acme", "producer": "billing"}
    return [
        AccountOpened(**billing, payload={"company_name": "Acme Ltd", "registered_email": "owner@acme.example",
                                          "main_username": "owner", "terms_accepted_at": "2026-11-01T00:00:00Z"}),
        AccountApproved(**billing, payload={"reviewer": "staff"}),
        PlanChanged(**billing, payload={"plan": "monthly", "tier_subscriber_limit": tier_subscriber_limit,
                                        "effective_at": "2026-11-02T00:00:00Z"}),
        ApiKeyIssued(**billing, payload={"key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}),
        ListCreated(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "name": "News", "opt_in": "single"})]


async def list_counts(http: httpx.AsyncClient) -> dict[str, int]:
    """The counts of acme's list `news` from the subscriptions API; {} while the process does not answer."""
    try:
        response = await http.get("/v1/lists/news")
    except httpx.HTTPError:
        return {}
    return response.json()["counts"] if response.status_code == 200 else {}  # type: ignore[no-any-return]


def imported_backlog(rows: int) -> list[Event]:
    """What an import of `rows` into acme's list `news` records: each row added (single opt-in) and confirmed."""
    events: list[Event] = []
    for i in range(rows):
        address = f"reader{i}@example.org"
        subscriber_id = subscriber_id_for("acme", "news", address)
        events.append(SubscriberAdded(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": subscriber_id, "email": address, "first_name": f"Reader{i}",
            "email_sha256": hashlib.sha256(address.encode()).hexdigest(), "opt_in": "single",
            "consent": {"source": "import", "collected_at": "2026-10-01T10:00:00Z", "method": "webinar signup"}}))
        events.append(SubscriberConfirmed(account_id="acme", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "subscriber_id": subscriber_id, "method": "single_opt_in"}))
    return events


async def dump(projection: SubscriptionsProjection) -> dict[str, list[Document]]:
    return {name: [d async for d in projection.db[name].find({}).sort("_id", 1)] for name in projection.collections}
