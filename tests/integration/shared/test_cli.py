"""The `herald` operator CLI against the real broker: topics, publishing with validation, tailing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from aiokafka import AIOKafkaProducer

from herald_shared.contract import serialize_event
from herald_shared.kafka import event_headers
from herald_shared.settings import HeraldSettings
from tests.conftest import subprocess_env
from tests.samples import sample


def herald(settings: HeraldSettings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herald_shared.cli", *args], env=subprocess_env(settings),
                          capture_output=True, text=True, input=stdin, timeout=60, check=False)


async def run(settings: HeraldSettings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(herald, settings, *args, stdin=stdin)


async def test_topic_creation_is_idempotent(settings: HeraldSettings) -> None:
    again = await run(settings, "topics", "create")
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert len(lines) == 10
    assert all(line.startswith("exists") for line in lines)


async def test_publish_validates_then_tail_shows_the_event(settings: HeraldSettings) -> None:
    event = json.loads(serialize_event(sample("ApiKeyIssued", "acc-cli")))
    for field in ("event_id", "occurred_at", "schema_version", "producer"):
        del event[field]  # filled in by the CLI
    published = await run(settings, "publish", "-", stdin=json.dumps(event))
    assert published.returncode == 0, published.stderr
    assert f"-> {settings.topics('herald.billing')}[" in published.stdout

    tail = await run(settings, "tail", "herald.billing", "-n", "1")
    assert tail.returncode == 0, tail.stderr
    assert "ApiKeyIssued account=acc-cli" in tail.stdout
    assert '"issued_by":"anna"' in tail.stdout


def _ids(tail: subprocess.CompletedProcess[str]) -> list[str]:
    """The event ids `herald tail` printed, in its order."""
    return [part.removeprefix("id=") for line in tail.stdout.splitlines() for part in line.split()
            if part.startswith("id=")]


async def test_tail_n_prints_the_latest_events_of_every_partition_oldest_first(settings: HeraldSettings) -> None:
    """As `tail -n` prints a file's last lines (it printed the topic's first N): events of accounts on every
    partition, published in two rounds; `-n 3` is the second round, `-n 0` nothing, a larger N all of them."""
    first = [sample("ApiKeyIssued", f"acc-old-{i}") for i in range(12)]
    last = [sample("ApiKeyIssued", f"acc-new-{i}") for i in range(3)]
    for events in (first, last):
        published = await run(settings, "publish", "-", stdin=json.dumps(
            [json.loads(serialize_event(event)) for event in events]))
        assert published.returncode == 0, published.stderr
    assert len({line.split("[")[1] for line in published.stdout.splitlines()}) > 1  # several partitions
    latest = await run(settings, "tail", "herald.billing", "-n", "3")
    assert latest.returncode == 0, latest.stderr
    assert sorted(_ids(latest)) == sorted(str(event.event_id) for event in last)
    everything = await run(settings, "tail", "herald.billing", "--lines", "100")
    assert len(_ids(everything)) == 15
    assert set(_ids(everything)[:12]) == {str(event.event_id) for event in first}  # oldest first
    assert (await run(settings, "tail", "herald.billing", "-n", "0")).stdout == ""
    refused = await run(settings, "tail", "herald.billing", "-n", "-2")
    assert refused.returncode == 2 and "give a number of events" in refused.stderr


async def test_tail_n_counts_events_not_offsets_of_a_topic_written_in_transactions(settings: HeraldSettings) -> None:
    """Each transaction's commit marker takes an offset and an aborted transaction's records are never read: the
    latest 4 events are the last 4 committed, not what the last 4 offsets hold."""
    topic = settings.topics("herald.billing")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                transactional_id=f"{topic}-tail-test")
    await producer.start()
    events = [sample("ApiKeyIssued", "acc-tx") for _ in range(10)]
    try:
        for index, event in enumerate(events):
            async with producer.transaction():
                await producer.send_and_wait(topic, serialize_event(event), key=b"acc-tx",
                                             headers=event_headers(event))
            if index == 8:  # an aborted one just before the last
                await producer.begin_transaction()
                await producer.send_and_wait(topic, serialize_event(sample("ApiKeyIssued", "acc-tx")), key=b"acc-tx")
                await producer.abort_transaction()
    finally:
        await producer.stop()
    latest = await run(settings, "tail", "herald.billing", "-n", "4")
    assert latest.returncode == 0, latest.stderr
    assert _ids(latest) == [str(event.event_id) for event in events[-4:]]


async def test_publish_refuses_an_invalid_event_and_publishes_nothing(settings: HeraldSettings) -> None:
    good = json.loads(serialize_event(sample("PaymentSucceeded")))
    bad = {**good, "payload": {"invoice_id": "i1", "amount_cents": -5}}
    refused = await run(settings, "publish", "-", stdin=json.dumps([good, bad]))
    assert refused.returncode == 1
    assert "event #2 refused, nothing published: invalid PaymentSucceeded: payload.amount_cents" in refused.stderr
    tail = await run(settings, "tail", "herald.billing")
    assert tail.stdout == ""


async def test_unknown_topic_is_a_clear_error(settings: HeraldSettings) -> None:
    result = await run(settings, "tail", "herald.nope")
    assert result.returncode == 1 and "unknown topic 'herald.nope'" in result.stderr


async def test_status_names_each_service_with_its_links_and_state(settings: HeraldSettings) -> None:
    """`herald status` against real HTTP servers: one answering /readyz 200, one 503, and a closed port."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Ready(BaseHTTPRequestHandler):
        status = 200

        def do_GET(self) -> None:
            self.send_response(self.status if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Starting(Ready):
        status = 503

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for handler in (Ready, Starting)]
    for server in servers:
        Thread(target=server.serve_forever, daemon=True).start()
    closed = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    closed_port = closed.server_address[1]
    closed.server_close()
    try:
        ports = [s.server_address[1] for s in servers]
        done = await run(settings, "status", f"billing={ports[0]}", f"campaigns={ports[1]}",
                         f"delivery={closed_port}", "--wait", "1")
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert done.returncode == 1, done.stderr  # not every service is ready
    header, *rows = [line.split() for line in done.stdout.splitlines()]
    assert header == ["service", "URL", "API", "docs", "metrics", "state"]
    url = f"http://127.0.0.1:{ports[0]}"
    assert rows[0] == ["billing", url, f"{url}/docs", f"{url}/metrics", "ready"]
    assert [row[-1] for row in rows] == ["ready", "starting", "down"]
    refused = await run(settings, "status", "billing")
    assert refused.returncode == 1 and "NAME=PORT" in refused.stderr
