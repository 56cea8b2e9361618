"""/readyz of a service of consumers (`ConsumingService`) while its Kafka broker is stopped, then paused (SIGSTOP:
connections stay open, nothing answers): not ready, saying so in the "kafka" check, while its consumers' loops run
on; ready again once the broker is back. On a Kafka of this module's own, started with `scripts/stack` in its own
folder and on its own ports (`private_kafka`: the stack of the other tests is never touched), and deleted at the end."""

from __future__ import annotations

import asyncio
import signal
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from herald_shared.consuming import ConsumingService
from herald_shared.http import add_health_routes
from herald_shared.kafka import EventConsumer
from herald_shared.mongo import make_client
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually
from tests.integration.helpers import PrivateKafka
from tests.integration.shared.helpers import RecordingHandler


class Consuming(ConsumingService):
    """The smallest service of consumers: one consumer, its health routes."""

    def __init__(self, settings: HeraldSettings) -> None:
        super().__init__(settings, "readiness")
        self.consumers = [EventConsumer(settings, name=f"{settings.topic_prefix}readiness", topics=["herald.billing"],
                                        handler=RecordingHandler(), producer=self.producer, retry_delay=0.05)]
        self.app = add_health_routes(FastAPI(), self.ready_checks())


async def test_readyz_is_not_ready_while_the_broker_is_away_and_ready_when_it_is_back(
        private_kafka: PrivateKafka, stack_env: dict[str, str]) -> None:
    run = uuid.uuid4().hex[:10]
    settings = HeraldSettings(kafka_bootstrap_servers=private_kafka.bootstrap,
                              mongodb_url=stack_env["MONGODB_URL"], topic_prefix=f"t{run}.",
                              database_prefix=f"t{run}_")
    service = Consuming(settings)
    await asyncio.wait_for(service.start(), timeout=60)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://svc", timeout=10)

    async def readiness() -> tuple[int, dict[str, Any]]:
        answer = await http.get("/readyz")
        return answer.status_code, answer.json()["checks"]

    paused = False
    try:
        await eventually(readiness, lambda r: r[0] == 200, within=60, what="ready with the broker up")

        await asyncio.to_thread(private_kafka, "stop-kafka")
        _, checks = await eventually(readiness, lambda r: r[0] == 503, within=30, what="not ready, stopped")
        assert checks["kafka"].startswith("not ready: no Kafka broker"), checks
        # What /readyz answered before the "kafka" check: MongoDB up, the consumer's loop running on.
        assert (checks["mongodb"], checks["consumers"]) == ("ok", "ok")
        await asyncio.to_thread(private_kafka, "start-kafka")
        await eventually(readiness, lambda r: r[0] == 200, within=60, what="ready once the broker is back")

        private_kafka.signal(signal.SIGSTOP)
        paused = True
        _, checks = await eventually(readiness, lambda r: r[0] == 503, within=30, what="not ready, paused")
        assert checks["kafka"] == "not ready: no Kafka broker answered within 1 s", checks
        private_kafka.signal(signal.SIGCONT)
        paused = False
        await eventually(readiness, lambda r: r[0] == 200, within=60, what="ready once the broker answers again")
    finally:
        if paused:
            private_kafka.signal(signal.SIGCONT)
        await http.aclose()
        await asyncio.wait_for(service.stop(), timeout=60)
        client = make_client(settings, "tests-cleanup")
        for name in await client.list_database_names():
            if name.startswith(settings.database_prefix):
                await client.drop_database(name)
        await client.close()
