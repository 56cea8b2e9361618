"""The `herald` operator CLI against the real broker: topics, publishing with validation, tailing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from herald_shared.contract import serialize_event
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

    tail = await run(settings, "tail", "herald.billing", "--limit", "1")
    assert tail.returncode == 0, tail.stderr
    assert "ApiKeyIssued account=acc-cli" in tail.stdout
    assert '"issued_by":"anna"' in tail.stdout


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
