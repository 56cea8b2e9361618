"""A compliance worker that stops processing is seen, on the real broker: its lag is reported from the broker's
end offsets by a task of its own, so it rises while a batch does not end and events keep coming (before, only a
processed batch set it, and a stuck worker kept exporting its last value, about 0); and /readyz's "kafka" check
fails while the broker does not answer (a SIGSTOPped broker of a private stack), and passes again once it does.
With that broker stopped, the staff routes answer 503 within the publish deadline instead of hanging for the whole
outage, and what they handed the producer lands once it is back (README, "HTTP")."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY

from herald_compliance.main import Compliance
from herald_compliance.processor import account_partition
from herald_shared.commands import PUBLISH_TIMEOUT
from herald_shared.kafka import ensure_topics, make_producer, read_from_start
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.helpers import PrivateKafka

from .conftest import STAFF, Bus, Running, compliance_settings, counts_of, hard_bounce, sent


async def lag_of(settings: HeraldSettings, account: str) -> float | None:
    return REGISTRY.get_sample_value("herald_compliance_lag_messages", {
        "topic": settings.topics("herald.delivery"), "partition": str(account_partition(account))})


async def test_the_lag_rises_while_a_batch_does_not_end_and_events_keep_coming(
        start_compliance: Any, bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    # the stall check would process the partition itself: here it waits longer than the test
    running: Running = await start_compliance(HERALD_COMPLIANCE_LAG_REPORT_SECONDS=0.2,
                                              HERALD_COMPLIANCE_STALL_SECONDS=600)
    account = "acc-stuck"
    await bus.publish(*(sent(account, "c1", i) for i in range(10)))
    await eventually(lambda: running.rates(account), lambda r: (counts_of(r, "c1") or {}).get("sent") == 10,
                     what="10 sent counted")
    await eventually(lambda: lag_of(bus.settings, account), lambda v: v == 0, what="lag 0")

    processor = running.service.processor
    handle = processor.handle
    blocked, release = asyncio.Event(), asyncio.Event()

    async def batch_that_does_not_end(events: Any) -> None:
        async with processor._lock:  # as a batch holds it: neither the stall check nor a sweep goes on
            blocked.set()
            await release.wait()
        await handle(events)

    monkeypatch.setattr(processor, "handle", batch_that_does_not_end)
    try:
        await bus.publish(sent(account, "c1", 10))
        await asyncio.wait_for(blocked.wait(), timeout=30)
        await bus.publish(*(sent(account, "c1", i) for i in range(11, 311)))
        # the held record and the 300 behind it; no batch has ended since the lag was 0
        await eventually(lambda: lag_of(bus.settings, account), lambda v: v == 301,
                         what="the lag of the blocked worker")
    finally:
        release.set()
    await eventually(lambda: running.rates(account), lambda r: (counts_of(r, "c1") or {}).get("sent") == 311,
                     what="everything counted once the batch ends")
    await eventually(lambda: lag_of(bus.settings, account), lambda v: v == 0,
                     what="lag 0 again")


# --- readiness against a broker that stops answering ----------------------------------------------------------

@pytest.fixture
async def on_private_kafka(private_kafka: PrivateKafka) -> AsyncIterator[tuple[Compliance, httpx.AsyncClient]]:
    run = uuid.uuid4().hex[:10]
    settings = HeraldSettings(kafka_bootstrap_servers=private_kafka.bootstrap, topic_prefix=f"t{run}.",
                              database_prefix=f"t{run}_")
    await asyncio.wait_for(ensure_topics(settings), timeout=60)
    service = Compliance(compliance_settings(settings))
    await service.start()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://compliance.test")
    yield service, http
    await http.aclose()
    await service.stop()


async def test_readiness_fails_while_the_broker_does_not_answer_and_passes_once_it_does_again(
        private_kafka: PrivateKafka, on_private_kafka: tuple[Compliance, httpx.AsyncClient]) -> None:
    _, http = on_private_kafka
    await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, within=60, what="ready")
    private_kafka.signal(signal.SIGSTOP)  # connections stay open; nothing answers
    try:
        answer = await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 503, within=15,
                                  what="not ready while the broker is stopped")
        assert answer.json()["checks"]["kafka"].startswith("not ready: no Kafka broker answered"), answer.json()
    finally:
        private_kafka.signal(signal.SIGCONT)
    answer = await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, within=60,
                              what="ready again")
    assert answer.json()["checks"] == {"kafka": "ok", "tables": "ok"}


# --- the staff routes while the broker is stopped -------------------------------------------------------------

async def compliance_events(service: Compliance) -> list[dict[str, Any]]:
    topic = service.settings.topics("herald.compliance")
    return [json.loads(r.value) async for batch in read_from_start(service.settings, [topic]) for r in batch]


async def test_the_staff_routes_answer_503_while_the_broker_is_stopped_and_their_events_land_once_it_is_back(
        private_kafka: PrivateKafka, on_private_kafka: tuple[Compliance, httpx.AsyncClient]) -> None:
    service, http = on_private_kafka
    await eventually(lambda: http.get("/readyz"), lambda r: r.status_code == 200, within=60, what="ready")
    account = "acc-away"
    events = [*(sent(account, "c1", i) for i in range(100)), *(hard_bounce(account, "c1", i) for i in range(8))]

    async def published() -> bool:
        """All of them, by a producer of its own (as delivery would), or False to try again with a new one: the
        fresh broker's new partitions may have no leader yet (NotLeaderForPartition, then OutOfOrderSequence from
        an idempotent producer's retry). The processor counts each message once, however often it comes."""
        producer = make_producer(service.settings, "tests")
        try:
            await producer.start()
            await Bus(service.settings, producer).publish(*events)
        except KafkaError:
            return False
        finally:
            await producer.stop()
        return True

    await eventually(published, bool, within=60, what="the account's events published")
    rates = await eventually(lambda: http.get(f"/v1/accounts/{account}/rates", headers=STAFF),
                             lambda r: r.status_code == 200 and r.json()["suspended"], within=60, what="suspended")
    suspension = rates.json()["suspension"]["event_id"]

    await asyncio.to_thread(private_kafka, "stop-kafka")
    try:
        for method, path in (("GET", "rates"), ("POST", "reinstatement")):
            started = time.monotonic()
            # before the fix: no answer for as long as the broker was away (a client's ReadTimeout at 120 s)
            answer = await asyncio.wait_for(http.request(method, f"/v1/accounts/{account}/{path}", headers=STAFF,
                                                         json={"reason": "list cleaned"} if method == "POST" else None),
                                            timeout=PUBLISH_TIMEOUT + 5)
            took = time.monotonic() - started
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["type"].endswith("/dependency_unavailable") and answer.headers["Retry-After"], path
            assert took < PUBLISH_TIMEOUT + 5, (path, took)
    finally:
        await asyncio.to_thread(private_kafka, "start-kafka")

    # back: the producer kept what the 503s had handed it, and it lands, once: the look, and the reinstatement
    back = await eventually(lambda: http.get(f"/v1/accounts/{account}/rates", headers=STAFF),
                            lambda r: r.status_code == 200 and not r.json()["suspended"], within=120,
                            what="answering again, the reinstatement answered 503 applied")
    assert back.json()["reinstatements"] == 1
    events = await compliance_events(service)
    reinstated = [e for e in events if e["type"] == "AccountReinstated"]
    assert [e["payload"]["suspension_event_id"] for e in reinstated] == [suspension]
    # the look before the outage, the one answered 503, the one just answered 200 (more if `eventually` retried)
    assert len([e for e in events if e["type"] == "StaffViewedRates" and e["account_id"] == account]) >= 3
    again = await http.post(f"/v1/accounts/{account}/reinstatement", headers=STAFF, json={"reason": "retry"})
    assert again.status_code == 409 and again.json()["type"].endswith("/not_suspended")  # what a retry then says
