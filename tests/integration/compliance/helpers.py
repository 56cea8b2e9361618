"""The compliance kill tests' plan and judges (`test_kill_and_restart`, `test_two_workers`): a stream of known
rates across six accounts, the worker started as its own process, the counts recomputed from the input topic."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from typing import Any

from herald_shared.contract import Event
from herald_shared.settings import HeraldSettings
from tests.conftest import dies_with_the_tests, subprocess_env

from .conftest import STAFF_HASH, Bus, complaint, hard_bounce, sent

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


def start(settings: HeraldSettings, port: int, log: Any) -> subprocess.Popen[bytes]:
    env = subprocess_env(settings, HERALD_HTTP_PORT=port, HERALD_RATE_MINIMUM_SENT=500,
                         HERALD_STAFF_TOKENS=f"rita={STAFF_HASH}", HERALD_COMPLIANCE_BATCH_SIZE=200,
                         HERALD_LOG_FORMAT="text")
    return subprocess.Popen(["herald-compliance"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=dies_with_the_tests)


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
