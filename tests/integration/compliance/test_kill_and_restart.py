"""SIGKILL the processor in the middle of a stream (once, or again while it catches up), restart it: the final
counts equal a ground truth recomputed from the input topics, and no AccountSuspended is announced twice (the kill
test is the judge of exactly once)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx
import pytest

from herald_shared.settings import HeraldSettings
from tests.conftest import eventually, free_port

from .conftest import STAFF, Bus
from .helpers import PLAN, announced_once, ground_truth, start, stream


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
