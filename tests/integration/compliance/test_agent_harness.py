"""The compliance agent under faust's own test harness (`AgentTestWrapper`, what `agent.test_context()` builds).

The harness replaces the agent's input with an in-memory channel: no consumer group, no rebalance, no
recovery; every record is put straight into the agent's stream with the offset and partition the test gives.
What the agent does with it (tables, the changelog writes it waits for, announcements, dead letters) still
goes to the real broker, which is where the result is read.

`test_context()` names its messages after the agent's topic, and ours has four (faust raises for a topic with
several names), so the wrapper is built as `test_context` builds it, with the one topic the records come from.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.agents.agent import AgentTestWrapper
from mode.supervisors import CrashingSupervisor

from herald_compliance.domain import AccountState, rate_report
from herald_compliance.main import Compliance
from herald_compliance.processor import PARTITIONS, account_partition
from herald_shared.contract import Event, serialize_event
from herald_shared.kafka import ensure_topics
from herald_shared.settings import HeraldSettings
from tests.conftest import eventually

from .conftest import Bus, compliance_settings, hard_bounce, sent

ACCOUNT = "acc-h1"
PARTITION = account_partition(ACCOUNT)


@pytest.fixture
async def harness(settings: HeraldSettings) -> AsyncIterator[tuple[Compliance, Any]]:
    service = Compliance(compliance_settings(settings, HERALD_COMPLIANCE_BATCH_SIZE=20))
    await ensure_topics(service.settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:  # faust declares its changelogs when the app starts; the harness does not start it
        await admin.create_topics([NewTopic(table.changelog_topic.get_topic_name(), PARTITIONS, 1,
                                            topic_configs={"cleanup.policy": "compact"})
                                   for table in service.faust.tables.values()])
    finally:
        await admin.close()
    await service.producer.start()
    agent = service.faust.agents["compliance"]
    service.faust.flow_control.resume()  # what test_context() does first: faust starts with flow suspended
    wrapper = agent.clone(cls=AgentTestWrapper, channel=service.faust.channel(),
                          supervisor_strategy=CrashingSupervisor, original_channel=service.faust.topic(
                              service.settings.topics("herald.delivery")))
    async with wrapper:
        yield service, wrapper
    await service.continuity.stop()
    await service.producer.stop()


async def put(wrapper: Any, *events: Event, partition: int = PARTITION) -> None:
    for event in events:
        await wrapper.put(serialize_event(event), key=event.account_id.encode(), partition=partition)


async def test_agent_counts_suspends_once_and_skips_a_redelivered_record(harness: tuple[Compliance, Any],
                                                                          bus: Bus) -> None:
    service, wrapper = harness
    await put(wrapper, *(sent(ACCOUNT, "c1", i) for i in range(100)))
    await put(wrapper, *(hard_bounce(ACCOUNT, "c1", i) for i in range(8)))  # 8.00%: suspends
    suspended = await eventually(lambda: bus.compliance_events("AccountSuspended"), lambda e: len(e) == 1,
                                 what="AccountSuspended from the harnessed agent")
    assert suspended[0]["account_id"] == ACCOUNT
    assert suspended[0]["payload"]["counts"] == {"sent": 100, "hard_bounces": 8, "complaints": 0,
                                                 "unsubscribes": 0, "blocks": 0}

    # the same bytes again at new offsets (a publisher's retry): duplicates, counted once, no second suspension
    await put(wrapper, *(hard_bounce(ACCOUNT, "c1", i) for i in range(8)))
    await put(wrapper, sent(ACCOUNT, "c1", 100))
    report = await eventually(lambda: _rates(service), lambda r: r["c1"]["sent"] == 101, what="the 101st send")
    assert report["c1"] == {"sent": 101, "hard_bounces": 8, "complaints": 0, "unsubscribes": 0, "blocks": 0}
    assert len(await bus.compliance_events("AccountSuspended")) == 1


async def test_agent_dead_letters_a_record_on_the_wrong_partition(harness: tuple[Compliance, Any],
                                                                  bus: Bus) -> None:
    service, wrapper = harness
    wrong = (PARTITION + 1) % PARTITIONS
    await put(wrapper, sent(ACCOUNT, "c1", 0), partition=wrong)
    await put(wrapper, sent(ACCOUNT, "c1", 1))
    dead = await eventually(lambda: bus.records("herald.delivery.dlq"), lambda r: len(r) == 1, what="dead letter")
    assert json.loads(dead[0].value)["payload"]["message_id"] == "c1-m0"
    report = await eventually(lambda: _rates(service), lambda r: r.get("c1", {}).get("sent") == 1,
                              what="the valid record counted")
    assert report["c1"]["sent"] == 1


async def _rates(service: Compliance) -> dict[str, Any]:
    data = service.accounts.get(ACCOUNT)
    if data is None:
        return {}
    report = rate_report(AccountState.from_json(data), service.policy)
    return {scope["name"]: scope["raw_counts"] for scope in report["scopes"]}
