"""Readiness asks the broker (pod-defaults.yaml: "ready: MongoDB and Kafka reachable, consumers running"): the
"kafka" check is a metadata request that must be answered within a second, its answer kept two seconds so probes
do not load the broker; /readyz says why a check is not ready, and runs the checks at once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiokafka.errors import KafkaConnectionError, KafkaError
from fastapi import FastAPI

from herald_shared.consuming import ConsumingService, broker_readiness
from herald_shared.http import NotReady, add_health_routes
from herald_shared.kafka import BrokerProbe
from herald_shared.settings import HeraldSettings


class FakeClient:
    """aiokafka's AIOKafkaClient as the probe uses it: a metadata request that answers, fails or hangs."""

    def __init__(self) -> None:
        self.requests = 0
        self.failure: Exception | None = None
        self.hanging = False
        self.answer = asyncio.Event()
        self.answer.set()

    async def fetch_all_metadata(self) -> object:
        self.requests += 1
        if self.hanging:
            await asyncio.Event().wait()  # a paused broker: the connection is open, nothing comes back
        await self.answer.wait()
        if self.failure is not None:
            raise self.failure
        return object()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def probe(client: FakeClient, clock: Clock, timeout: float = 1.0) -> BrokerProbe:
    producer: Any = type("Producer", (), {"client": client})()
    return BrokerProbe(producer, timeout=timeout, kept=2.0, clock=clock)


async def test_a_broker_that_answers_is_reachable_and_one_that_refuses_is_not_with_why() -> None:
    client, clock = FakeClient(), Clock()
    broker = probe(client, clock)
    assert await broker.unreachable() is None
    client.failure = KafkaError("Unable to get cluster metadata over all known brokers")
    clock.now += 2.0
    assert await broker.unreachable() == "no Kafka broker reachable (KafkaError)"
    client.failure = KafkaConnectionError("connection refused")
    clock.now += 2.0
    assert await broker.unreachable() == "no Kafka broker reachable (KafkaConnectionError)"
    client.failure = None
    clock.now += 2.0
    assert await broker.unreachable() is None  # back


async def test_a_broker_that_does_not_answer_is_unreachable_after_the_timeout() -> None:
    client, clock = FakeClient(), Clock()
    client.hanging = True
    assert await probe(client, clock, timeout=0.05).unreachable() == "no Kafka broker answered within 0.05 s"


async def test_an_answer_is_kept_two_seconds_and_callers_meanwhile_share_one_request() -> None:
    client, clock = FakeClient(), Clock()
    broker = probe(client, clock)
    client.answer.clear()
    waiting = [asyncio.ensure_future(broker.unreachable()) for _ in range(5)]
    await asyncio.sleep(0)  # every caller waits on the request out
    client.answer.set()
    assert await asyncio.gather(*waiting) == [None] * 5 and client.requests == 1
    client.failure = OSError("connection refused")
    clock.now += 1.9
    assert await broker.unreachable() is None and client.requests == 1  # the answer kept
    clock.now += 0.1
    assert await broker.unreachable() == "no Kafka broker reachable (OSError)" and client.requests == 2


async def test_a_caller_that_gives_up_leaves_the_request_to_the_others() -> None:
    client, clock = FakeClient(), Clock()
    broker = probe(client, clock)
    client.answer.clear()
    impatient = asyncio.ensure_future(broker.unreachable())
    patient = asyncio.ensure_future(broker.unreachable())
    await asyncio.sleep(0)
    impatient.cancel()
    await asyncio.gather(impatient, return_exceptions=True)
    client.answer.set()
    assert await patient is None and client.requests == 1


async def test_readyz_says_why_the_broker_is_not_ready_and_runs_the_checks_at_once() -> None:
    client, clock = FakeClient(), Clock()
    client.failure = KafkaConnectionError("connection refused")
    other_started = asyncio.Event()

    async def mongodb() -> bool:  # answers only once the other check runs too: the checks are not one by one
        await asyncio.wait_for(other_started.wait(), 1.0)
        return True

    async def consumers() -> bool:
        other_started.set()
        return True

    app = add_health_routes(FastAPI(), {"mongodb": mongodb, "kafka": broker_readiness(probe(client, clock)),
                                        "consumers": consumers})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
        answer = await http.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"] == {"mongodb": "ok", "consumers": "ok",
                                           "kafka": "not ready: no Kafka broker reachable (KafkaConnectionError)"}
        client.failure = None
        clock.now += 2.0
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200  # the process only, whatever the broker says


async def test_a_check_raising_not_ready_is_shown_with_why() -> None:
    async def replicas() -> bool:
        raise NotReady("2 of 3 caught up")

    app = add_health_routes(FastAPI(), {"replicas": replicas})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
        answer = await http.get("/readyz")
    assert (answer.status_code, answer.json()["checks"]) == (503, {"replicas": "not ready: 2 of 3 caught up"})


async def test_every_consuming_service_checks_the_broker() -> None:
    service = ConsumingService(HeraldSettings(), "unit-readiness")
    try:
        assert set(service.ready_checks()) == {"mongodb", "kafka", "consumers"}
        assert service.broker._client is service.producer.client  # the producer's connections, started with it
    finally:
        await service.mongo.close()
