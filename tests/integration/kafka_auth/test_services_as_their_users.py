"""Every service as `scripts/run` starts it (`herald-<service>`), each authenticating as its own user of the prod
overlay against a broker that enforces that overlay's ACLs: all start and become ready (compliance's faust worker
creates and reads its changelog topics, delivery and compliance see the topics they would create), and the rights
are enough to work: billing's key reaches subscriptions, whose list is written to its topic and folded back."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from herald_shared.apikeys import new_api_key
from herald_shared.contract.billing import ApiKeyIssued
from herald_shared.kafka import EventPublisher, make_producer
from tests.conftest import dies_with_the_tests, eventually, free_port
from tests.integration.kafka_auth.helpers import SERVICES, SecuredKafka
from tests.samples import sample

SECRET = "kafka-auth-tests-secret-0123456789"
# What each service needs besides the brokers and MongoDB to start (delivery's relay: a port nobody listens on).
SERVICE_ENV: dict[str, dict[str, str]] = {
    "billing": {"HERALD_SESSION_SECRET": SECRET},
    "campaigns": {},
    "compliance": {},
    "delivery": {"HERALD_LINK_SECRET": SECRET, "HERALD_SMTP_HOST": "127.0.0.1", "HERALD_BOUNCE_DOMAIN": "b.test"},
    "subscriptions": {"HERALD_LINK_SECRET": SECRET},
}


@pytest.fixture
def services(authorized_kafka: SecuredKafka, stack_env: dict[str, str],
             tmp_path: Path) -> Iterator[dict[str, tuple[str, Path]]]:
    """Each service's process (its URL and log), stopped at the end; their databases are this test's own."""
    database_prefix = f"t{uuid.uuid4().hex[:10]}_"
    processes, started = [], {}
    try:
        for service in SERVICES:
            port, log = free_port(), tmp_path / f"{service}.log"
            env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
            env.update(SERVICE_ENV[service], KAFKA_BOOTSTRAP_SERVERS=authorized_kafka.bootstrap,
                       MONGODB_URL=stack_env["MONGODB_URL"], HERALD_DATABASE_PREFIX=database_prefix,
                       HERALD_HTTP_PORT=str(port), HERALD_LOG_FORMAT="text",
                       HERALD_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", HERALD_KAFKA_USERNAME=service,
                       HERALD_KAFKA_PASSWORD=authorized_kafka.passwords[service])
            if service == "delivery":
                env.update(HERALD_SMTP_PORT=str(free_port()), HERALD_INBOUND_SMTP_PORT=str(free_port()))
            with log.open("wb") as out:
                processes.append(subprocess.Popen([f"herald-{service}"], stdout=out, stderr=subprocess.STDOUT,
                                                  env=env, preexec_fn=dies_with_the_tests))
            started[service] = (f"http://127.0.0.1:{port}", log)
        yield started
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


async def test_every_service_works_as_its_own_user_under_the_prod_acls(
        authorized_kafka: SecuredKafka, services: dict[str, tuple[str, Path]]) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        for service, (url, log) in services.items():
            async def ready(url: str = url) -> int:
                try:
                    return (await http.get(f"{url}/readyz")).status_code
                except httpx.HTTPError:
                    return 0

            await eventually(ready, lambda code: code == 200, within=120, every=0.3,
                             what=f"{service} ready (log: {log})")

        billing = authorized_kafka.settings("billing")
        producer = make_producer(billing, "billing")
        await producer.start()
        try:
            key_id, key, key_hash = new_api_key()
            account = f"acc-{uuid.uuid4().hex[:8]}"
            await EventPublisher(producer, billing.topics).publish_many([
                sample("AccountOpened", account, producer="billing"),
                ApiKeyIssued(account_id=account, producer="billing", payload={  # type: ignore[arg-type]
                    "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"})])
        finally:
            await producer.stop()

        subscriptions = services["subscriptions"][0]
        auth = {"Authorization": f"Bearer {key}"}
        await eventually(lambda: http.get(f"{subscriptions}/v1/lists", headers=auth),
                         lambda answer: answer.status_code == 200, within=60, what="billing's key in subscriptions")
        created = await http.post(f"{subscriptions}/v1/lists", headers=auth,
                                  json={"list_id": "news", "name": "News", "opt_in": "single"})
        assert created.status_code == 201, created.text
        await eventually(lambda: http.get(f"{subscriptions}/v1/lists/news", headers=auth),
                         lambda answer: answer.status_code == 200, within=60, what="the list folded back")

    for service, (_, log) in services.items():
        said = log.read_text(errors="replace")
        assert "AuthorizationFailed" not in said and "SaslAuthenticationFailed" not in said, f"{service}:\n{said}"
