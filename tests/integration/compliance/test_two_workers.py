"""Two workers of one group share the accounts' partitions. SIGKILL one in the middle of the stream: the other
takes its partitions over (recovering their facts from the changelogs) and the counts end equal to a ground
truth recomputed from the input topic, with no AccountSuspended announced twice. Then the killed worker comes
back and takes partitions back from the survivor: between the two of them every account is held by exactly
one worker, with the same exact counts; and staff asking either worker get every account's answer (one held
elsewhere is forwarded to its holder, once)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from herald_compliance.api import ANSWERED_BY, FORWARDED
from herald_compliance.processor import account_partition
from herald_shared.contract import Event
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually, free_port

from .conftest import STAFF, Bus
from .helpers import PLAN, announced_once, ground_truth, start, stream


class Worker:
    """One `herald-compliance` process with its own HTTP port, and the accounts it answers for."""

    def __init__(self, settings: HeraldSettings, log: Path) -> None:
        self.settings, self.log_path = settings, log
        self.port = free_port()
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = start(self.settings, self.port, log)

    async def held(self) -> dict[str, dict[str, int]]:
        """Raw counts of the plan's accounts whose partition this worker holds (421 elsewhere: asked as a
        forwarded request, which is not forwarded again); {} while it does not answer at all."""
        result = {}
        for account in PLAN:
            try:
                response = await self.http.get(f"/v1/accounts/{account}/rates",
                                               headers={**STAFF, FORWARDED: "http://the-test"})
            except httpx.HTTPError:
                return {}
            if response.status_code == 200:
                result[account] = next(s["raw_counts"] for s in response.json()["scopes"] if s["name"] == "c1")
            else:
                assert response.status_code in (404, 421, 503), response.text
        return result

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    async def stop(self) -> None:
        """SIGTERM: a clean exit, else SIGKILL and the log's tail in the failure."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                assert self.process.wait(30) == 0, self.log_path.read_text()[-3000:]
            finally:
                if self.process.poll() is None:
                    os.kill(self.process.pid, signal.SIGKILL)
        await self.http.aclose()


async def answers_ready(workers: list[Worker]) -> list[bool]:
    async def ready(worker: Worker) -> bool:
        try:
            return (await worker.http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False
    return list(await asyncio.gather(*(ready(w) for w in workers)))


async def publish_slowly(bus: Bus, events: list[Event], chunk: int = 100, pause: float = 0.1) -> None:
    for first in range(0, len(events), chunk):
        await bus.publish(*events[first:first + chunk])
        await asyncio.sleep(pause)


async def progress(bus: Bus, workers: list[Worker]) -> tuple[list[dict[str, dict[str, int]]], dict[int, int]]:
    """What each worker answers, and the group's committed offset of each partition of the plan's accounts
    (-1: none yet)."""
    tps = {TopicPartition(bus.settings.topics("herald.delivery"), account_partition(a)) for a in PLAN}
    admin = AIOKafkaAdminClient(bootstrap_servers=bus.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{bus.settings.topic_prefix}herald-compliance",
                                                            partitions=list(tps))
    finally:
        await admin.close()
    offsets = {tp.partition: (meta.offset if (meta := committed.get(tp)) is not None else -1) for tp in tps}
    return await answers(workers), offsets


def sent_by(held: dict[str, dict[str, int]]) -> int:
    return sum(counts["sent"] for counts in held.values())


async def answers(workers: list[Worker]) -> list[dict[str, dict[str, int]]]:
    return list(await asyncio.gather(*(w.held() for w in workers)))


def split_between(held: list[dict[str, dict[str, int]]]) -> bool:
    """Every account of the plan answered by exactly one worker, and each worker answering for some."""
    owners = [account for counts in held for account in counts]
    return sorted(owners) == sorted(PLAN) and all(held)


async def test_two_workers_one_killed_mid_stream_then_back_give_exact_counts_and_no_duplicate_suspension(
        settings: HeraldSettings, bus: Bus, tmp_path: Path) -> None:
    events = stream()
    third = len(events) // 3
    a, b = Worker(settings, tmp_path / "a.log"), Worker(settings, tmp_path / "b.log")
    try:
        a.start()
        b.start()
        await eventually(lambda: answers_ready([a, b]), all, within=90, what="both workers ready")
        # the stream flows while the workers share it, so the kill lands in the middle of it
        publisher = asyncio.create_task(publish_slowly(bus, events[:2 * third]))
        # both counting their share, and each having committed some of it: the one killed leaves state in
        # the changelogs that its successor must recover, not only a stream to read again from offset 0
        held, _ = await eventually(lambda: progress(bus, [a, b]),
                                   lambda p: split_between(p[0]) and min(p[1].values()) > 0,
                                   within=90, what="the two workers sharing the accounts, each committing")
        # the one further behind, so it dies with the most of its share still to do
        victim, survivor = (a, b) if sent_by(held[0]) <= sent_by(held[1]) else (b, a)
        assert not publisher.done(), "the stream ended before the kill: publish more slowly"
        victim.kill()
        await publisher
        await bus.publish(*events[third:third + 500])  # duplicates: a publisher that retried a slice
        await bus.publish(*events[2 * third:])  # the rest of the stream
        truth = await ground_truth(bus)
        assert truth["acc-k0"] == {"sent": 3000, "hard_bounces": 300, "complaints": 0, "unsubscribes": 0,
                                   "blocks": 0}

        # the survivor took the killed worker's partitions over: it alone answers, with exact counts
        alone = await eventually(survivor.held, lambda c: c == truth, within=120,
                                 what="the survivor answering every account with exact counts")
        assert alone == truth

        # the killed worker comes back: the partitions are shared again, the counts stay exact
        victim.process = None
        victim.start()
        shared = await eventually(lambda: answers([a, b]),
                                  lambda h: split_between(h) and {k: v for w in h for k, v in w.items()} == truth,
                                  within=120, what="the returned worker sharing the accounts again, exactly")
        assert {k: v for w in shared for k, v in w.items()} == truth

        # Staff may ask either worker: an account the other holds is answered by its holder, through this one.
        for worker, its_own in ((a, shared[0]), (b, shared[1])):
            through: dict[str, dict[str, int]] = {}
            for account in PLAN:
                response = await worker.http.get(f"/v1/accounts/{account}/rates", headers=STAFF)
                assert response.status_code == 200, response.text
                assert (ANSWERED_BY in response.headers) == (account not in its_own), account
                through[account] = next(s["raw_counts"] for s in response.json()["scopes"] if s["name"] == "c1")
            assert through == truth
            elsewhere = next(account for account in PLAN if account not in its_own)
            # Naming a suspension that is not the account's: the holder refuses it whatever the account's state
            # (and reads the body it was forwarded to get there), so nothing is lifted.
            lift = await worker.http.post(f"/v1/accounts/{elsewhere}/reinstatement", headers=STAFF,
                                          json={"reason": "asked through the other worker",
                                                "suspension_event_id": "not-its-suspension"})
            assert lift.status_code == 409 and lift.headers[ANSWERED_BY], lift.text
            assert lift.json()["type"].rsplit("/", 1)[1] in ("not_suspended", "suspension_mismatch"), lift.text
            no_body = await worker.http.post(f"/v1/accounts/{elsewhere}/reinstatement", headers=STAFF)
            assert no_body.status_code == 422, no_body.text
            stranger = await worker.http.get(f"/v1/accounts/{elsewhere}/rates")
            assert stranger.status_code == 401 and ANSWERED_BY not in stranger.headers  # refused before forwarding

        await announced_once(bus)
    finally:
        try:
            await a.stop()
        finally:
            await b.stop()
