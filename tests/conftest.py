"""Fixtures shared by all tests. Integration tests use the real stack that scripts/test started (or the
KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL given); each test gets its own topic prefix and database prefix."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import hypothesis
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from pymongo import AsyncMongoClient

from herald_shared.kafka import ensure_topics, make_producer
from herald_shared.mongo import Document, make_client
from herald_shared.settings import HeraldSettings

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# Property tests check what holds, never how fast: no per-example deadline and no "generation is slow" check.
# Both are timings, and both failed on a busy CI machine: a fresh clone has no .hypothesis cache, so the first
# test drawing text built Hypothesis's Unicode tables inside its first example (1.7 s).
hypothesis.settings.register_profile("herald", deadline=None,
                                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("herald")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path) or "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.alone)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # On workers (scripts/test gives each whole files, in this order) the integration files start first and
        # the many short unit tests fill the end, so no worker is left with a long file after the other is done.
        items.sort(key=lambda item: 0 if "/integration/" in str(item.path) else 1)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The stack's addresses; fails (never skips) when an integration test has no stack to talk to."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        "MONGODB_URL": os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017"),
    }
    return env


@pytest.fixture
async def settings(stack_env: dict[str, str]) -> AsyncIterator[HeraldSettings]:
    """Settings with a fresh topic prefix (topics created) and database prefix, cleaned up afterwards."""
    run = uuid.uuid4().hex[:10]
    config = HeraldSettings(
        kafka_bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"],
        mongodb_url=stack_env["MONGODB_URL"],
        topic_prefix=f"t{run}.",
        database_prefix=f"t{run}_",
    )
    try:
        await asyncio.wait_for(ensure_topics(config), timeout=60)
    except Exception as exc:
        pytest.fail(f"no Kafka at {config.kafka_bootstrap_servers} ({exc!r}); run scripts/test, which starts it")
    yield config
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap_servers)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(config.topic_prefix)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()
    client = make_client(config, "tests-cleanup")
    try:
        for name in await client.list_database_names():
            if name.startswith(config.database_prefix):
                await client.drop_database(name)
    finally:
        await client.close()
    forget_series(f"t{run}")


def forget_series(marker: str, registry: CollectorRegistry = REGISTRY) -> int:
    """Drop the metric series whose label values name a test's topics, consumers or databases (`marker`, its
    prefix without the separator); how many. Each test's consumers label their series with its prefix, so a
    worker's registry grew by ~350 series a test (29,495 after billing's 84 integration tests; 4,349 with this),
    and reading one value (`REGISTRY.get_sample_value` collects them all) takes ~1 s per 60,000 series, blocking
    the test's loop: late in a CI run the send-deadline tests timed out on it. The registry's collectors and a
    metric's children are private to prometheus_client; this is the one place the tests reach them."""
    dropped = 0
    for collector in list(registry._collector_to_names):
        if not isinstance(collector, MetricWrapperBase) or not collector._labelnames:
            continue  # a custom collector, or a metric without labels: no children
        children = collector._metrics
        for values in [values for values in list(children) if any(marker in str(v) for v in values)]:
            collector.remove(*values)
            dropped += 1
    return dropped


@pytest.fixture
async def mongo(settings: HeraldSettings) -> AsyncIterator[AsyncMongoClient[Document]]:
    client = make_client(settings, "tests")
    try:
        await asyncio.wait_for(client.admin.command("ping"), timeout=15)
    except Exception as exc:
        pytest.fail(f"no MongoDB at {settings.mongodb_url} ({exc!r}); run scripts/test, which starts it")
    yield client
    await client.close()


@pytest.fixture
async def producer(settings: HeraldSettings) -> AsyncIterator[AIOKafkaProducer]:
    kafka_producer = make_producer(settings, "tests")
    await kafka_producer.start()
    yield kafka_producer
    await kafka_producer.stop()


async def eventually(probe: Callable[[], Awaitable[T]], until: Callable[[T], bool], *, within: float = 30.0,
                     what: str = "condition", every: float = 0.1) -> T:
    """Poll `probe` every `every` seconds until `until(result)` holds; fail with the last result at the deadline."""
    deadline = time.monotonic() + within
    result = await probe()
    while not until(result):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last value: {result!r}")
        await asyncio.sleep(every)
        result = await probe()
    return result


def free_port() -> int:
    """A TCP port nobody listens on at this moment (the system's pick), for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


PR_SET_PDEATHSIG = 1  # Linux's prctl(2) option
_LIBC = ctypes.CDLL(None, use_errno=True)


def dies_with_the_tests() -> None:
    """`preexec_fn` of a service, broker or command a test starts: the kernel SIGKILLs it when the process that
    started it dies, however that dies (a CI job's time limit, a pytest-xdist worker crashing, SIGKILL), so that
    none is left holding its ports and a core for the runs after. Tied to the starting thread: the tests start
    them from the thread that runs them, which lives as long as the process."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def subprocess_env(settings: HeraldSettings, **extra: Any) -> dict[str, str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "MONGODB_URL": settings.mongodb_url, "HERALD_TOPIC_PREFIX": settings.topic_prefix,
           "HERALD_DATABASE_PREFIX": settings.database_prefix}
    env.update({k: str(v) for k, v in extra.items()})
    return env
