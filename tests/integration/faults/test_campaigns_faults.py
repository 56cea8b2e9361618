"""The campaigns process killed (SIGKILL) in the middle of a campaign, while its reports consumer folds
delivery's stream of sends, opens and clicks (and billing and subscriptions go on publishing), then restarted.
Invariant: nothing lost, nothing doubled: each message is counted once (the report equals what was published,
however much of it was folded twice), and the read model equals a rebuild from the topics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from herald_campaigns.store import CampaignsProjection, CampaignsStore, ReportsProjection
from herald_shared.apikeys import new_api_key
from herald_shared.contract import Event
from herald_shared.contract.delivery import LinkClicked, MessageOpened, MessageSent
from herald_shared.kafka import EventPublisher
from herald_shared.mongo import Document, rebuild
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .conftest import ServiceProcess, approved_account, behind

MESSAGES = 6_000
CHUNK = 500  # published a chunk at a time, as delivery would, while the process folds
CLIENT = {"ip": "198.51.100.7", "user_agent": "Mozilla/5.0"}
GROUPS = {"campaigns.projection": ["herald.campaigns", "herald.subscriptions", "herald.delivery", "herald.billing",
                                   "herald.compliance"],
          "campaigns.reports": ["herald.delivery", "herald.subscriptions", "herald.billing"]}


def campaign_stream() -> list[Event]:
    """Delivery's events of campaign c1: every message sent; a third opened, a sixth twice; a tenth clicked."""
    env: dict[str, Any] = {"account_id": "acme", "producer": "delivery"}
    events: list[Event] = []
    for i in range(MESSAGES):
        ref = {"message_id": f"m-c1-{i}", "kind": "campaign", "campaign_id": "c1", "subscriber_id": f"s{i}",
               "list_id": "news"}
        events.append(MessageSent(**env, payload={**ref, "recipient_domain": "example.org", "smtp_code": 250}))
        for _ in range((i % 3 == 0) + (i % 6 == 0)):
            events.append(MessageOpened(**env, payload={**ref, "client": CLIENT}))
        if i % 10 == 0:
            events.append(LinkClicked(**env, payload={**ref, "url": "https://acme.example/a", "link_index": 0,
                                                      "client": CLIENT}))
    return events


async def test_sigkill_mid_campaign_then_restart_counts_each_message_once_and_equals_a_rebuild(
        settings: HeraldSettings, producer: AIOKafkaProducer, mongo: AsyncMongoClient[Document],
        services: Any) -> None:
    key_id, key, key_hash = new_api_key()
    publisher = EventPublisher(producer, settings.topics)
    await publisher.publish_many(approved_account(key_id, key_hash, tier_subscriber_limit=1000))
    process: ServiceProcess = services["campaigns"]
    # The draft's From domain is a shared one: this test is about crashes and counts, not senders.
    process.env["HERALD_CAMPAIGNS_SHARED_SENDING_DOMAINS"] = "acme.example"
    process.start()
    await process.ready()
    http = httpx.AsyncClient(base_url=process.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    draft = {"campaign_id": "c1", "name": "November", "list_id": "news", "subject": "Our November news",
             "from_name": "Acme", "from_email": "news@acme.example", "html_body": "<h1>Hello</h1><p>News.</p>"}
    created = await eventually(lambda: http.post("/v1/campaigns", json=draft), lambda r: r.status_code == 201,
                               within=30, what="the draft (key and list projected)")
    assert created.status_code == 201

    async def report() -> dict[str, Any]:
        try:
            response = await http.get("/v1/campaigns/c1/report")
        except httpx.HTTPError:
            return {}
        return response.json() if response.status_code == 200 else {}  # type: ignore[no-any-return]

    stream = campaign_stream()
    # The kill comes while the process folds the first three fifths (published a chunk at a time beside it); the
    # rest is published only after the kill, so it is mid-campaign however fast the machine folds.
    before_kill = next(n for n, event in enumerate(stream)
                       if isinstance(event, MessageSent) and event.payload.message_id == f"m-c1-{MESSAGES * 3 // 5}")

    async def publish(events: list[Event]) -> None:
        for start in range(0, len(events), CHUNK):
            await publisher.publish_many(events[start:start + CHUNK])

    publishing = asyncio.create_task(publish(stream[:before_kill]))
    at_kill = await eventually(report, lambda r: r.get("sent", 0) > MESSAGES // 4, within=60,
                               what="the report folding")
    process.kill()
    await publishing
    assert at_kill["sent"] <= MESSAGES * 3 // 5
    await publish(stream[before_kill:])
    # A publisher that retried a stretch: the same events (same ids) again, after the kill.
    await publisher.publish_many(stream[: len(stream) // 3])

    process.start()
    await process.ready()
    for group, topics in GROUPS.items():
        await eventually(lambda g=settings.topic_prefix + group, t=topics: behind(settings, g, t),  # type: ignore[misc]
                         lambda left: not left, within=90, what=f"{group} caught up")
    final = await report()
    await http.aclose()
    opened = sum(1 for i in range(MESSAGES) if i % 3 == 0)
    clicked = sum(1 for i in range(MESSAGES) if i % 10 == 0)
    assert (final["sent"], final["delivered"]) == (MESSAGES, MESSAGES)
    assert final["opens"] == {"unique": opened, "total": opened + sum(1 for i in range(MESSAGES) if i % 6 == 0),
                              "automated": 0, "by_country": {"unknown": opened}, "by_device": {"unknown": opened}}
    assert (final["clicks"]["unique"], final["clicks"]["total"]) == (clicked, clicked)

    db = mongo[settings.database_name("rebuilt")]
    for projection in (CampaignsProjection(db), ReportsProjection(db)):
        await rebuild(projection, settings, GROUPS["campaigns.projection"])
    live, rebuilt = CampaignsStore(mongo[settings.database_name("campaigns")]), CampaignsStore(db)
    assert await rebuilt.report_counts("acme", "c1") == await live.report_counts("acme", "c1")
    assert await rebuilt.campaign("acme", "c1") == await live.campaign("acme", "c1")
