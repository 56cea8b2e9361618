"""What HeraldDeliveryStalled, HeraldSenderWaitingForGates and HeraldDeadLettersGrowing read of the sender:
outcome series exist at 0 from the start (a restarted sender that sends nothing shows it), waiting for the gates
is exported while it lasts, and an outcome that could not become its event counts as a dead letter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from prometheus_client import REGISTRY

from herald_delivery.domain import AccountState, MessageKind, SmtpReply
from herald_delivery.handlers import GateBook
from herald_delivery.main import DeliverySettings
from herald_delivery.queue import JobQueue
from herald_delivery.sender import Sender, SenderConfig
from herald_shared.kafka import EventPublisher
from herald_shared.topics import TopicNames
from tests.unit.delivery.helpers import job_of_test_send, sender

ROOT = Path(__file__).resolve().parents[3]
SENDER_DEAD_LETTERS = {"consumer": "delivery.sender", "topic": "herald.delivery", "category": "handler_failed"}


def waiting() -> float | None:
    return REGISTRY.get_sample_value("herald_delivery_sender_waiting_for_gates")


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


def test_every_outcome_series_exists_before_the_first_outcome() -> None:
    for kind in get_args(MessageKind):
        for outcome in ("sent", "bounced", "deferred"):
            value = REGISTRY.get_sample_value("herald_delivery_messages_total", {"kind": kind, "outcome": outcome})
            assert value is not None, (kind, outcome)


class LedgerNotReached(Exception):
    pass


class Ledger:
    async def load_pending(self, keep: Any = None) -> Any:
        raise LedgerNotReached  # the test ends here: the sender got past the gates


async def test_the_sender_exports_that_it_waits_for_the_gates_while_it_does() -> None:
    gates = GateBook()
    caught_up = asyncio.Event()
    send = Sender(Ledger(), gates, JobQueue(gates.changed), None, None, None, None, SenderConfig(),  # type: ignore[arg-type]
                  ready=caught_up.wait)
    assert waiting() == 0  # exported from the start
    running = asyncio.create_task(send.run())
    await until(lambda: waiting() == 1)
    caught_up.set()
    try:
        await asyncio.wait_for(running, 5)
    except LedgerNotReached:
        pass
    assert waiting() == 0


class Producer:
    def __init__(self) -> None:
        self.topics: list[str] = []

    async def send_and_wait(self, topic: str, **record: Any) -> None:
        self.topics.append(topic)


async def test_an_outcome_that_could_not_become_its_event_counts_as_a_dead_letter() -> None:
    send, store, _ = sender(AccountState("acme", approved=True))
    assert REGISTRY.get_sample_value("herald_events_dead_lettered_total", SENDER_DEAD_LETTERS) is not None
    producer = Producer()
    send._publisher = EventPublisher(producer, TopicNames())  # type: ignore[arg-type]

    def no_event(*args: Any) -> Any:
        raise ValueError("an outcome no event can say")

    send._outcome = no_event  # type: ignore[method-assign]
    before = REGISTRY.get_sample_value("herald_events_dead_lettered_total", SENDER_DEAD_LETTERS)
    job = job_of_test_send("tm1", "owner@acme.example")
    send._jobs.push([job])

    class Relay:
        async def send(self, *args: Any) -> SmtpReply:
            return SmtpReply(250, "2.0.0 OK")

    await send._deliver(job, None, Relay())  # type: ignore[arg-type]
    assert producer.topics == ["herald.delivery.dlq"]
    assert [o["outcome"] for o in store.recorded] == ["sent"]
    assert REGISTRY.get_sample_value("herald_events_dead_lettered_total", SENDER_DEAD_LETTERS) == (before or 0) + 1


def test_unsubscribe_links_point_at_subscriptions_where_scripts_run_puts_it() -> None:
    """scripts/run gives each service a port from 8081 up, in folder order; the default is subscriptions' (8084
    was delivery's own)."""
    services = sorted(d.name for d in (ROOT / "services").iterdir() if (d / "pyproject.toml").is_file())
    port = 8081 + services.index("subscriptions")
    assert DeliverySettings.model_fields["subscriptions_url"].default == f"http://127.0.0.1:{port}"
    assert f"`http://127.0.0.1:{port}`" in (ROOT / "services/delivery/README.md").read_text()


def test_the_inbound_servers_dead_letter_series_exists_at_zero_before_its_first() -> None:
    from herald_delivery.inbound import INBOUND_CONSUMER, InboundHandler
    from herald_shared.metrics import EVENTS_DEAD_LETTERED

    labels = {"consumer": INBOUND_CONSUMER, "topic": "herald.delivery", "category": "invalid"}
    if REGISTRY.get_sample_value("herald_events_dead_lettered_total", labels) is not None:
        # Another test of this process dead-lettered through it: the series starts again from nothing here.
        EVENTS_DEAD_LETTERED.remove(*labels.values())
    assert REGISTRY.get_sample_value("herald_events_dead_lettered_total", labels) is None
    InboundHandler(None, None, None, "bounces.example")  # type: ignore[arg-type]
    assert REGISTRY.get_sample_value("herald_events_dead_lettered_total", labels) == 0.0
