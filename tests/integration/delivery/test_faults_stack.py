"""Issue 19, "Faults": the Kafka broker, then the MongoDB server, stopped and restarted in the middle of a
campaign, with `herald-delivery` running as a real process. They run on a private stack this module starts
with `scripts/stack` in its own folder and on its own ports (the shared stack of the other tests and of other
engineers is never touched), and stops and deletes at the end. Invariant: every active subscriber gets the
campaign exactly once, every message's MessageSent is on the topic once, the campaign ends with exact counts,
and the process survives the outage (still running, ready again)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageSent
from herald_shared.kafka import EventPublisher, ensure_topics, make_producer
from herald_shared.settings import HeraldSettings
from tests.conftest import ROOT, dies_with_the_tests, eventually, free_port, subprocess_env
from tests.samples import campaign_queued

from .conftest import BOUNCE_DOMAIN, SECRET, World

AUDIENCE = 30
OUTAGE_AT = 10  # the relay holds its answers when the 11th message arrives; then the outage starts


@dataclass
class PrivateStack:
    """A stack of this module's own: `scripts/stack <command>` with its folder and ports."""

    env: dict[str, str]
    kafka: str
    mongodb: str

    def __call__(self, command: str) -> None:
        done = subprocess.run([str(ROOT / "scripts/stack"), command], env=self.env, capture_output=True, text=True,
                              timeout=180, check=False)
        assert done.returncode == 0, f"scripts/stack {command}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateStack]:
    kafka_port, mongodb_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL")}
    env.update(HERALD_STACK_DIR=str(tmp_path_factory.mktemp("stack")), HERALD_STACK_TMPFS="1",
               HERALD_KAFKA_PORT=str(kafka_port), HERALD_KAFKA_CONTROLLER_PORT=str(free_port()),
               HERALD_MONGODB_PORT=str(mongodb_port), HERALD_KAFKA_HEAP="512m")
    stack = PrivateStack(env, f"127.0.0.1:{kafka_port}", f"mongodb://127.0.0.1:{mongodb_port}")
    try:
        stack("start")
        yield stack
    finally:
        stack("reset")


@pytest.fixture
async def private_world(private_stack: PrivateStack) -> AsyncIterator[World]:
    private_stack("start")  # whatever an earlier test left stopped
    run = uuid.uuid4().hex[:10]
    settings = HeraldSettings(kafka_bootstrap_servers=private_stack.kafka, mongodb_url=private_stack.mongodb,
                              topic_prefix=f"t{run}.", database_prefix=f"t{run}_")
    await asyncio.wait_for(ensure_topics(settings), timeout=60)
    producer = make_producer(settings, "tests")
    await producer.start()
    yield World(settings, EventPublisher(producer, settings.topics))
    await producer.stop()


def start_delivery(settings: HeraldSettings, relay_port: int, http_port: int, log: Path) -> subprocess.Popen[bytes]:
    env = subprocess_env(settings, HERALD_LINK_SECRET=SECRET, HERALD_SMTP_HOST="127.0.0.1",
                         HERALD_SMTP_PORT=relay_port, HERALD_HTTP_PORT=http_port,
                         HERALD_INBOUND_SMTP_PORT=free_port(), HERALD_BOUNCE_DOMAIN=BOUNCE_DOMAIN,
                         HERALD_SEND_CONCURRENCY=4, HERALD_SEND_POLL_SECONDS=0.2, HERALD_LOG_FORMAT="text")
    with log.open("ab") as out:
        return subprocess.Popen(["herald-delivery"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=dies_with_the_tests)


@pytest.mark.parametrize("outage", ["kafka", "mongodb"])
async def test_the_broker_or_the_database_stopped_and_restarted_mid_send_everyone_gets_it_exactly_once(
        private_stack: PrivateStack, private_world: World, relay: Any, tmp_path: Path, outage: str) -> None:
    world, settings = private_world, private_world.settings
    loop = asyncio.get_running_loop()
    held = asyncio.Event()

    def hold_at(count: int) -> None:
        if count >= OUTAGE_AT and not held.is_set() and not relay.behaviour.frozen.is_set():
            relay.behaviour.frozen.set()  # every transaction now waits at the end of DATA
            loop.call_soon_threadsafe(held.set)

    relay.behaviour.on_data = hold_at
    log, port = tmp_path / "delivery.log", free_port()
    process = start_delivery(settings, relay.port, port, log)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5)

    async def readiness() -> int | None:
        if process.poll() is not None:
            return None
        try:
            return (await http.get("/readyz")).status_code
        except httpx.HTTPError:
            return 0

    try:
        await eventually(readiness, lambda code: code in (200, None), within=60, what="delivery ready")
        await world.open_account("acme")
        audience = [(f"s{i}", f"r{i}@example.org") for i in range(AUDIENCE)]
        await world.add_list("acme", "news", audience)
        await world.publish(campaign_queued("acme", "c1"))
        await asyncio.wait_for(held.wait(), timeout=90)

        await asyncio.to_thread(private_stack, f"stop-{outage}")
        relay.behaviour.frozen.clear()  # the messages in flight are accepted while the broker or database is away
        if outage == "mongodb":  # the process noticed: its readiness says the database is away
            await eventually(readiness, lambda code: code != 200, within=30, what="delivery not ready without MongoDB")
        await asyncio.to_thread(private_stack, f"start-{outage}")

        mailed = await eventually(relay.mailed, lambda r: len(r) >= AUDIENCE, within=120,
                                  what=f"the rest of the campaign after the {outage} restart (log: {log})")
        events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es),
                                      "CampaignDeliveryFinished", within=120)
        counts = Counter(mailed)
        assert sorted(counts) == sorted(address for _, address in audience), "a recipient was skipped"
        assert max(counts.values()) == 1, f"sent twice: {[a for a, n in counts.items() if n > 1]}"
        sent = [e for e in events if isinstance(e, MessageSent)]
        assert len(sent) == len({e.payload.message_id for e in sent}) == AUDIENCE, "a MessageSent lost or doubled"
        end, = [e.payload for e in events if isinstance(e, CampaignDeliveryFinished)]
        assert (end.recipients, end.sent) == (AUDIENCE, AUDIENCE)
        assert process.poll() is None, f"delivery exited during the {outage} outage:\n{log.read_text()[-4000:]}"
        assert await eventually(readiness, lambda code: code in (200, None), within=30, what="ready again") == 200
    finally:
        await http.aclose()
        relay.behaviour.frozen.clear()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
