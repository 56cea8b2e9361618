"""/healthz, /readyz and /metrics, with readiness checks against the real MongoDB; a request whose dependency is
away is answered 503 with a problem document."""

from __future__ import annotations

from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, DuplicateKeyError, ServerSelectionTimeoutError

from herald_shared.http import add_health_routes, api_app, dependency_away
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


async def test_a_request_that_finds_its_database_away_is_answered_503_problem_and_documented(
        settings: HeraldSettings) -> None:
    """The real driver against a MongoDB that is not there: a problem document asking to retry, not a bare 500;
    and every operation's OpenAPI says it may answer 503."""
    unreachable = settings.model_copy(update={"mongodb_url": "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300"})
    nowhere = make_client(unreachable, "tests")
    app = api_app("t", "t")

    @app.get("/things/{thing}")
    async def thing(thing: str) -> dict[str, Any]:
        return {"found": await nowhere["db"]["things"].find_one({"_id": thing}) is not None}

    @app.get("/broken")
    async def broken() -> None:
        raise DuplicateKeyError("E11000 duplicate key")  # the request's own failure, not an outage

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
            away = await http.get("/things/t1")
            assert away.status_code == 503 and away.headers["content-type"] == "application/problem+json"
            assert away.json()["type"].endswith("/dependency_unavailable") and away.headers["Retry-After"] == "1"
            failed = await http.get("/broken")
            assert failed.status_code == 500 and failed.json()["type"].endswith("/internal_error")
            operations = [op for path in (await http.get("/openapi.json")).json()["paths"].values()
                          for op in path.values()]
            assert operations and all("503" in op["responses"] for op in operations)
    finally:
        await nowhere.close()


def test_which_client_errors_say_a_dependency_is_away() -> None:
    assert dependency_away(ServerSelectionTimeoutError("no server")) and dependency_away(AutoReconnect("reset"))
    assert dependency_away(KafkaConnectionError()) and dependency_away(KafkaTimeoutError())
    assert not dependency_away(DuplicateKeyError("E11000")) and not dependency_away(MessageSizeTooLargeError())
