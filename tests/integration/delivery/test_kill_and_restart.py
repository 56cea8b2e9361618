"""SIGKILL of the delivery process in the middle of a campaign, and a restart: no recipient gets the campaign
twice and none is skipped (ARCHITECTURE.md principle 4, "effectively-once out")."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageSent
from herald_shared.mongo import Document
from tests.conftest import dies_with_the_tests, eventually, free_port, subprocess_env
from tests.samples import campaign_queued

from .conftest import BOUNCE_DOMAIN, SECRET, World

AUDIENCE = 30
KILL_AT = 10  # the relay freezes (answers nothing more) when the 11th message arrives; then the process dies


def start_process(settings: Any, relay_port: int, log: Path) -> subprocess.Popen[bytes]:
    env = subprocess_env(settings, HERALD_LINK_SECRET=SECRET, HERALD_SMTP_HOST="127.0.0.1",
                         HERALD_SMTP_PORT=relay_port, HERALD_HTTP_PORT=free_port(),
                         HERALD_INBOUND_SMTP_PORT=free_port(), HERALD_BOUNCE_DOMAIN=BOUNCE_DOMAIN,
                         HERALD_SEND_CONCURRENCY=4, HERALD_SEND_POLL_SECONDS=0.2, HERALD_LOG_FORMAT="text")
    with log.open("ab") as out:
        return subprocess.Popen(["herald-delivery"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=dies_with_the_tests)


async def test_sigkill_mid_campaign_and_restart_sends_everyone_exactly_once(
        settings: Any, relay: Any, world: World, mongo: AsyncMongoClient[Document], tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    frozen = asyncio.Event()

    def freeze_at(count: int) -> None:
        if count >= KILL_AT and not frozen.is_set() and not relay.behaviour.frozen.is_set():
            relay.behaviour.frozen.set()  # every transaction now waits at the end of DATA, unanswered
            loop.call_soon_threadsafe(frozen.set)

    relay.behaviour.on_data = freeze_at
    log = tmp_path / "delivery.log"
    process = start_process(settings, relay.port, log)
    db = mongo[settings.database_name("delivery")]
    jobs, outcomes = db["jobs"], db["outcomes"]
    try:
        await world.open_account("acme")
        audience = [(f"s{i}", f"r{i}@example.org") for i in range(AUDIENCE)]
        await world.add_list("acme", "news", audience)
        await world.publish(campaign_queued("acme", "c1"))
        await asyncio.wait_for(frozen.wait(), timeout=90)

        # Kill once the ledger has recorded every message the relay accepted: the transactions in flight are
        # then all unanswered ones. (A kill between the relay's 250 and the ledger write, the one window that
        # repeats a message, is measured by herald_delivery_unrecorded_window_seconds instead.)
        async def sent_in_ledger() -> int:
            return await outcomes.count_documents({"outcome": "sent"})

        accepted = len(relay.recipients())
        await eventually(sent_in_ledger, lambda n: n == accepted, what="ledger to catch up with the relay")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        # What it left in flight, read once it is dead: until the kill it may claim another batch.
        claimed = {i async for c in db["claims"].find({}) for i in c["message_ids"]}
        finished = {o["message_id"] async for o in outcomes.find({"final": True})}
        in_flight = len(claimed - finished)
        assert in_flight >= 1, "the kill must land with transactions in flight"
        relay.behaviour.frozen.clear()
        assert len(relay.recipients()) == accepted  # frozen transactions died unanswered: not delivered

        process = start_process(settings, relay.port, log)
        mailed = await eventually(relay.mailed, lambda r: len(r) >= AUDIENCE, within=120,
                                  what=f"the rest of the campaign after the restart (log: {log})")
        events = await world.wait_for(lambda es: len({e.payload.message_id for e in es
                                                      if isinstance(e, MessageSent)}) >= AUDIENCE, "MessageSent")
        counts = Counter(mailed)
        assert sorted(counts) == sorted(address for _, address in audience), "a recipient was skipped"
        assert max(counts.values()) == 1, f"sent twice: {[a for a, n in counts.items() if n > 1]}"
        assert await jobs.count_documents({"in_doubt": True}) == in_flight
        sent = [e for e in events if isinstance(e, MessageSent)]
        assert len({e.payload.message_id for e in sent}) == AUDIENCE
        # The campaign's end, counted from the ledger folded at the restart and the messages sent since.
        events = await world.wait_for(lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es),
                                      "CampaignDeliveryFinished")
        end, = [e for e in events if isinstance(e, CampaignDeliveryFinished)]
        assert (end.payload.recipients, end.payload.sent) == (AUDIENCE, AUDIENCE)
        # Every claim goes once its jobs are done with, not at the next start (which would read them all).
        await eventually(lambda: db["claims"].count_documents({}), lambda n: n == 0, within=30,
                         what="the claims closed as their jobs were done with")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if os.environ.get("HERALD_SHOW_LOGS"):
            print(log.read_text())
