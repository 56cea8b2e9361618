"""The subscriptions process killed (SIGKILL) in the middle of a campaign's send, while delivery's hard bounces
flow back to it to be suppressed, then restarted. Delivery and subscriptions run as real processes; the relay
is a real SMTP server that refuses every tenth recipient with 550 5.1.1.

Invariants: every active subscriber the relay takes gets the campaign exactly once, and delivery keeps sending
while subscriptions is down; every bounce is processed: each bounced subscriber is suppressed by exactly one
SubscriberSuppressed event, however many bounces were redelivered after the kill; the list's counts say so,
and the read model equals a rebuild from the topics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from pymongo import AsyncMongoClient

from herald_shared.apikeys import new_api_key
from herald_shared.contract import Event, parse_event
from herald_shared.contract.delivery import CampaignDeliveryFinished, MessageBounced
from herald_shared.contract.subscriptions import SubscriberSuppressed
from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.mongo import Document, rebuild
from herald_shared.settings import HeraldSettings
from herald_subscriptions.domain import subscriber_id_for
from herald_subscriptions.store import SubscriptionsProjection
from tests.conftest import eventually, free_port
from tests.integration.delivery.conftest import RelayBehaviour, RelayHandler
from tests.samples import campaign_queued

from .conftest import ServiceProcess, approved_account, behind, dump, imported_backlog, list_counts

ROWS = 2_000
KILL_AT = ROWS // 4  # messages the relay has taken when subscriptions is killed
REFUSED = "550 5.1.1 <{}>: Recipient address rejected: User unknown"
SUBSCRIPTION_GROUPS = {"subscriptions.projection": ["herald.subscriptions", "herald.billing"],
                       "subscriptions.suppression": ["herald.delivery"]}


def address(i: int) -> str:
    return f"reader{i}@example.org"


@pytest.fixture
def relay() -> Iterator[RelayHandler]:
    handler = RelayHandler(RelayBehaviour(script={address(i): [("rcpt", REFUSED.format(address(i)))]
                                                  for i in range(0, ROWS, 10)}))
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port  # type: ignore[attr-defined]
    yield handler
    controller.stop()


async def topic_events(settings: HeraldSettings, base: str) -> list[Event]:
    found: list[Event] = []
    async for records in read_from_start(settings, [settings.topics(base)]):
        found += [parse_event(r.value) for r in records]
    return found


async def test_subscriptions_killed_mid_campaign_then_restarted_suppresses_each_bounce_once_and_equals_a_rebuild(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document], services: Any,
        relay: RelayHandler) -> None:
    key_id, key, key_hash = new_api_key()
    publisher = EventPublisher(producer, settings.topics)
    await publisher.publish_many([*approved_account(key_id, key_hash, tier_subscriber_limit=5000),
        *imported_backlog(ROWS)])
    subscriptions: ServiceProcess = services["subscriptions"]
    delivery: ServiceProcess = services["delivery"]
    delivery.env = {"HERALD_SMTP_PORT": relay.port, "HERALD_SEND_CONCURRENCY": 4}
    subscriptions.start()
    delivery.start()
    await subscriptions.ready()
    await delivery.ready()
    http = httpx.AsyncClient(base_url=subscriptions.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    async def counts() -> dict[str, int]:
        return await list_counts(http)

    await eventually(counts, lambda c: c.get("active") == ROWS, within=120, what="the list folded")

    # Killed from the relay's thread when it has taken KILL_AT messages: mid-send, bounces in flight.
    def kill_subscriptions(taken: int) -> None:
        if taken == KILL_AT:
            subscriptions.kill()

    async def running() -> bool:
        return subscriptions.alive

    relay.behaviour.on_data = kill_subscriptions
    await publisher.publish_many([campaign_queued("acme", "c1")])
    await eventually(running, lambda alive: not alive, within=120, what="the kill mid-send",
                     every=0.1)
    taken_at_kill = len(relay.recipients())
    suppressed_at_kill = sum(isinstance(e, SubscriberSuppressed)
                             for e in await topic_events(settings, "herald.subscriptions"))
    print(f"killed with {taken_at_kill} messages taken and {suppressed_at_kill} bounces suppressed")
    assert taken_at_kill < ROWS * 9 // 10, "the campaign was sent before the kill: make it larger"
    await eventually(relay.mailed, lambda r: len(r) > taken_at_kill + 100, within=60,
                     what="delivery sending on while subscriptions is down")

    subscriptions.start()
    await subscriptions.ready()
    finished = await eventually(lambda: topic_events(settings, "herald.delivery"),
                                lambda es: any(isinstance(e, CampaignDeliveryFinished) for e in es), within=180,
                                what="the campaign's end")
    for group, topics in SUBSCRIPTION_GROUPS.items():
        await eventually(lambda g=settings.topic_prefix + group, t=topics: behind(settings, g, t),  # type: ignore[misc]
                         lambda left: not left, within=120, what=f"{group} caught up", every=0.3)

    refused = {address(i) for i in range(0, ROWS, 10)}
    taken = Counter(relay.recipients())
    assert taken == Counter({address(i): 1 for i in range(ROWS) if address(i) not in refused}), \
        "every recipient the relay takes gets the campaign exactly once"
    bounced = {e.payload.subscriber_id for e in finished if isinstance(e, MessageBounced)}
    expected = {subscriber_id_for("acme", "news", a) for a in refused}
    assert bounced == expected
    suppressed = Counter(e.payload.subscriber_id for e in await topic_events(settings, "herald.subscriptions")
                         if isinstance(e, SubscriberSuppressed))
    assert suppressed == Counter(dict.fromkeys(expected, 1)), "each bounced subscriber suppressed exactly once"
    assert await counts() == {"pending": 0, "active": ROWS - len(refused), "unsubscribed": 0,
                              "suppressed": len(refused)}
    await http.aclose()

    live = SubscriptionsProjection(mongo[settings.database_name("subscriptions")])
    rebuilt = SubscriptionsProjection(mongo[settings.database_name("rebuilt")])
    await rebuild(rebuilt, settings, SUBSCRIPTION_GROUPS["subscriptions.projection"])
    live_docs, rebuilt_docs = await dump(live), await dump(rebuilt)
    for name in live.collections:
        assert live_docs[name] == rebuilt_docs[name], f"{name}: the read model differs from a rebuild"
