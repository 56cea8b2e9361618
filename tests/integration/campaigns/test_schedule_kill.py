"""The scheduler survives a SIGKILL around the due time: the `herald-campaigns` process is killed just before
campaigns fall due, or the moment the first CampaignQueued reaches Kafka (before the process can have folded
it); restarted, every campaign is queued exactly once. The topic itself is the judge."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from herald_shared.apikeys import new_api_key
from herald_shared.contract import Event
from herald_shared.contract.billing import ApiKeyIssued
from herald_shared.contract.campaigns import CampaignQueued
from herald_shared.contract.subscriptions import ListCreated
from herald_shared.kafka import EventPublisher
from herald_shared.settings import HeraldSettings
from tests.conftest import dies_with_the_tests, eventually, free_port, subprocess_env

from .conftest import billing_history, campaigns_settings, draft

CAMPAIGNS = 8


async def queued(settings: HeraldSettings) -> list[Event]:
    from herald_shared.contract import parse_event
    from herald_shared.kafka import read_from_start
    found: list[Event] = []
    async for records in read_from_start(settings, [settings.topics("herald.campaigns")]):
        found += [e for e in map(parse_event, (r.value for r in records)) if isinstance(e, CampaignQueued)]
    return found


def start(settings: HeraldSettings, port: int, log: Any) -> subprocess.Popen[bytes]:
    # The drafts' From domain is a shared one: this test is about the scheduler, not senders.
    env = subprocess_env(settings, HERALD_HTTP_PORT=port, HERALD_LOG_FORMAT="text",
                         HERALD_CAMPAIGNS_SCHEDULE_INTERVAL_SECONDS=0.1,
                         HERALD_CAMPAIGNS_SHARED_SENDING_DOMAINS="acme.example")
    return subprocess.Popen(["herald-campaigns"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=dies_with_the_tests)


@pytest.mark.parametrize("kill_at", ["before_due", "first_queued"])
async def test_sigkill_around_the_due_time_then_restart_queues_each_campaign_exactly_once(
        settings: HeraldSettings, producer: Any, tmp_path: Any, kill_at: str) -> None:
    campaigns_settings(settings)  # the settings the process reads from its environment are valid
    key_id, key, key_hash = new_api_key()
    await EventPublisher(producer, settings.topics).publish_many([
        *billing_history("acc-kill", "paid"),
        ApiKeyIssued(account_id="acc-kill", producer="billing", payload={  # type: ignore[arg-type]
            "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}),
        ListCreated(account_id="acc-kill", producer="subscriptions", payload={  # type: ignore[arg-type]
            "list_id": "news", "name": "news", "opt_in": "single",
            "custom_fields": [{"name": "city", "kind": "text"}]})])
    port = free_port()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                             headers={"Authorization": f"Bearer {key}"})

    async def ready() -> bool:
        try:
            return (await http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    with (tmp_path / "first.log").open("wb") as log:
        worker = start(settings, port, log)
        try:
            await eventually(ready, lambda ok: ok or worker.poll() is not None, within=60, what="campaigns ready")
            due = datetime.now(UTC) + timedelta(seconds=6)
            for i in range(CAMPAIGNS):
                created = await eventually(
                    lambda i=i: http.post("/v1/campaigns", json={**draft(), "campaign_id": f"c{i}"}),  # type: ignore[misc]
                    lambda r: r.status_code == 201, within=30, what="draft created (key and list projected)")
                assert created.status_code == 201
                submitted = await http.post(f"/v1/campaigns/c{i}/submission", json={"send_at": due.isoformat()})
                assert submitted.json()["status"] == "scheduled", submitted.text
            if kill_at == "before_due":
                await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds() - 0.3))
            else:
                await eventually(lambda: queued(settings), bool, within=30, what="the first CampaignQueued")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
    at_kill = len(await queued(settings))
    assert at_kill < CAMPAIGNS or kill_at == "first_queued"
    with (tmp_path / "second.log").open("wb") as log:
        worker = start(settings, port, log)
        try:
            await eventually(ready, lambda ok: ok or worker.poll() is not None, within=60, what="restarted")
            found = await eventually(lambda: queued(settings), lambda q: len(q) >= CAMPAIGNS, within=60,
                                     what="every campaign queued")
            await asyncio.sleep(2)  # many scheduler rounds after: still once each
            found = await queued(settings)
            assert sorted(e.payload.campaign_id for e in found) == [f"c{i}" for i in range(CAMPAIGNS)]
            assert all(e.occurred_at >= due for e in found)
            statuses = {(await http.get(f"/v1/campaigns/c{i}")).json()["status"] for i in range(CAMPAIGNS)}
            assert statuses == {"queued"}
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
    await http.aclose()
