"""SIGKILL the processor in the middle of a stream (once, or again while it catches up), restart it: the final
counts equal a ground truth recomputed from the input topics, and no AccountSuspended is announced twice (the kill
test is the judge of exactly once)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from collections import defaultdict
from typing import Any

import httpx
import pytest

from herald_shared.contract import Event
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually, subprocess_env

from .conftest import STAFF, STAFF_HASH, Bus, complaint, hard_bounce, sent

PLAN = {  # account: (sent, hard bounces, complaints)
    "acc-k0": (3000, 300, 0),  # 10% hard bounces: suspended
    "acc-k1": (3000, 150, 0),  # 5%: warned only
    "acc-k2": (3000, 0, 30),  # 1% complaints: suspended
    "acc-k3": (3000, 30, 3),
    "acc-k4": (3000, 0, 0),
    "acc-k5": (3000, 90, 0),
}


def stream() -> list[Event]:
    """Interleaved across accounts; bounces and complaints spread evenly, each after its message was sent, so
    every prefix of an account's stream shows the same rates."""
    events: list[Event] = []
    for i in range(3000):
        for account, (n_sent, n_bounced, n_complaints) in PLAN.items():
            events.append(sent(account, "c1", i))
            if n_bounced and i % (n_sent // n_bounced) == 0:
                events.append(hard_bounce(account, "c1", i))
            if n_complaints and i % (n_sent // n_complaints) == 0:
                events.append(complaint(account, "c1", i))
    return events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(settings: HeraldSettings, port: int, log: Any) -> subprocess.Popen[bytes]:
    env = subprocess_env(settings, HERALD_HTTP_PORT=port, HERALD_RATE_MINIMUM_SENT=500,
                         HERALD_STAFF_TOKENS=f"rita={STAFF_HASH}", HERALD_COMPLIANCE_BATCH_SIZE=200,
                         HERALD_LOG_FORMAT="text")
    return subprocess.Popen(["herald-compliance"], env=env, stdout=log, stderr=subprocess.STDOUT)


async def ground_truth(bus: Bus) -> dict[str, dict[str, int]]:
    """Recomputed from the input topic alone: distinct messages sent, hard-bounced, complained about."""
    seen: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for record in await bus.records("herald.delivery"):
        event = json.loads(record.value)
        payload = event["payload"]
        kind = {"MessageSent": "sent", "MessageBounced": "hard_bounces", "ComplaintReceived": "complaints"}[
            event["type"]]
        seen[event["account_id"]][kind].add(payload["message_id"])
    return {account: {"sent": len(kinds["sent"]), "hard_bounces": len(kinds["hard_bounces"]),
                      "complaints": len(kinds["complaints"]), "unsubscribes": 0, "blocks": 0}
            for account, kinds in seen.items()}


async def announced_once(bus: Bus) -> None:
    """The plan's two suspensions, each announced once; warnings once each, acc-k1's among them."""
    suspended = await bus.compliance_events("AccountSuspended")
    assert sorted(e["account_id"] for e in suspended) == ["acc-k0", "acc-k2"]
    assert len({e["event_id"] for e in suspended}) == len(suspended) == 2
    warned = await bus.compliance_events("AccountWarned")
    assert len({e["event_id"] for e in warned}) == len(warned)
    assert {e["account_id"] for e in warned} >= {"acc-k1"}


@pytest.mark.parametrize("kill_after", [(1500,), (1500, 5000)], ids=["once", "twice"])
async def test_sigkill_mid_stream_then_restart_gives_exact_counts_and_no_duplicate_suspension(
        settings: HeraldSettings, bus: Bus, tmp_path: Any, kill_after: tuple[int, ...]) -> None:
    """Killed once, or killed again while the restarted worker catches up; then restarted for good."""
    port = free_port()
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5)

    async def counts() -> dict[str, Any]:
        result = {}
        for account in PLAN:
            try:
                response = await http.get(f"/v1/accounts/{account}/rates", headers=STAFF)
            except httpx.HTTPError:
                return {}
            if response.status_code == 200:
                result[account] = next(s["raw_counts"] for s in response.json()["scopes"] if s["name"] == "c1")
        return result

    async def ready() -> bool:
        try:
            return (await http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    events = stream()
    third = len(events) // 3
    publisher: asyncio.Task[None] | None = None
    for run, counted_before_kill in enumerate(kill_after):
        with (tmp_path / f"run{run}.log").open("wb") as log:
            worker = start(settings, port, log)
            try:
                await eventually(ready, lambda ok, w=worker: ok or w.poll() is not None,
                                 within=60, what="processor ready")
                if publisher is None:
                    publisher = asyncio.create_task(bus.publish(*events[:2 * third]))
                # kill while the stream flows: some of it counted, much of it not
                at_kill = await eventually(
                    counts, lambda c, n=counted_before_kill: sum(v["sent"] for v in c.values()) > n,
                    within=60, what="processing under way")
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                await publisher
                published = sum(v["sent"] for v in (await ground_truth(bus)).values())
                assert sum(v["sent"] for v in at_kill.values()) < published  # killed with work left to do
            finally:
                if worker.poll() is None:
                    worker.kill()
        # duplicates: a publisher that retried a slice
        await bus.publish(*events[third:third + 500])
    last = tmp_path / "last.log"
    with last.open("wb") as log:
        worker = start(settings, port, log)
        try:
            await bus.publish(*events[2 * third:])  # the rest of the stream
            truth = await ground_truth(bus)
            assert truth["acc-k0"] == {"sent": 3000, "hard_bounces": 300, "complaints": 0, "unsubscribes": 0,
                                       "blocks": 0}
            final = await eventually(counts, lambda c: c == truth, within=120, what="counts equal the ground truth")
            assert final == truth
            await announced_once(bus)
            recovered = [line for line in (await http.get("/metrics")).text.splitlines()
                         if line.startswith("herald_compliance_table_recovery_seconds ")]
            assert recovered and float(recovered[0].split()[1]) > 0  # the restart recovered the tables, timed
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                assert worker.wait(30) == 0, last.read_text()[-3000:]
            finally:
                if worker.poll() is None:
                    os.kill(worker.pid, signal.SIGKILL)
            await http.aclose()
