"""/healthz, /readyz and /metrics, with readiness checks against the real MongoDB."""

from __future__ import annotations

import httpx
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from herald_shared.http import add_health_routes
from herald_shared.kafka import EventPublisher
from herald_shared.mongo import Document, make_client
from herald_shared.settings import HeraldSettings
from tests.samples import sample


async def _ping(client: AsyncMongoClient[Document]) -> bool:
    await client.admin.command("ping")
    return True


async def test_readyz_reports_each_dependency_and_metrics_count_events(
        settings: HeraldSettings, mongo: AsyncMongoClient[Document], producer: AIOKafkaProducer) -> None:
    unreachable = settings.model_copy(update={"mongodb_url": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"})
    nowhere = make_client(unreachable, "tests")
    app = add_health_routes(FastAPI(), {"mongodb": lambda: _ping(mongo), "other-mongodb": lambda: _ping(nowhere)})
    await EventPublisher(producer, settings.topics).publish(sample("MessageSent"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["mongodb"] == "ok"
        assert ready.json()["checks"]["other-mongodb"].startswith("error")
        metrics = (await http.get("/metrics")).text
    await nowhere.close()
    assert 'herald_events_produced_total{topic="herald.delivery",type="MessageSent"}' in metrics
