"""What an SRE relies on, without a broker: compliance's dead-letter series exist at 0 from the start (a series
born at its first dead letter starts at 1 and increase() says 0: HeraldDeadLettersGrowing would miss it); the lag
is reported from the broker's end offsets by its own task, not only by a processed batch (a stuck worker would
keep its last value, about 0); a table recovery in progress reports how long it has run; /readyz's "kafka"
check is the broker's answer (herald_shared's BrokerProbe), not only whether the worker started."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from herald_compliance import metrics
from herald_compliance.continuity import lag
from herald_compliance.main import Compliance, ComplianceSettings, recovery_running
from herald_compliance.processor import DEAD_LETTERED_AS, INPUT_TOPICS, Processor
from herald_shared.kafka import DEAD_LETTER_CATEGORIES
from herald_shared.topics import TopicNames


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def closed_port() -> int:
    """A local port nothing listens on: a broker that cannot be reached (refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_broker() -> Iterator[ComplianceSettings]:
    yield ComplianceSettings(kafka_bootstrap_servers=f"127.0.0.1:{closed_port()}",
                             mongodb_url=f"mongodb://127.0.0.1:{closed_port()}",
                             HERALD_TOPIC_PREFIX=f"obs{time.monotonic_ns()}.")


# --- dead letters -----------------------------------------------------------------------------------------------

class SentNowhere:
    async def send_and_wait(self, *args: Any, **kwargs: Any) -> None:
        return None


async def test_compliance_dead_letter_series_exist_at_zero_once_wired_and_its_first_dead_letter_counts_one(
        no_broker: ComplianceSettings) -> None:
    prefix = no_broker.topic_prefix
    service = Compliance(no_broker)
    assert set(DEAD_LETTERED_AS) <= set(DEAD_LETTER_CATEGORIES)
    for topic in INPUT_TOPICS:
        for category in DEAD_LETTERED_AS:
            assert sample("herald_events_dead_lettered_total", consumer=f"{prefix}compliance",
                          topic=f"{prefix}{topic}", category=category) == 0, (topic, category)
    # a record the processor dead-letters counts in one of those series (not in a new one, born at 1)
    service.processor.dead_letters._producer = SentNowhere()
    record = ConsumerRecord(topic=f"{prefix}herald.delivery", partition=0, offset=7, timestamp=0, timestamp_type=0,
                            key=b"acc", value=b"{not json", checksum=None, serialized_key_size=3,
                            serialized_value_size=9, headers=[])
    assert await service.processor._parse(record) is None
    assert sample("herald_events_dead_lettered_total", consumer=f"{prefix}compliance",
                  topic=f"{prefix}herald.delivery", category="invalid") == 1


# --- lag ----------------------------------------------------------------------------------------------------------

def test_lag_is_the_records_past_the_next_offset_expected_of_the_partitions_still_expected() -> None:
    a, b, c = (TopicPartition("herald.delivery", p) for p in (0, 1, 2))
    assert lag({a: 10, b: 5}, {a: 60_000, b: 5, c: 99}) == {a: 59_990, b: 0}  # c: revoked meanwhile
    assert lag({a: 10}, {a: 3}) == {a: 0}  # an end below it (a topic deleted and made again) is not negative


class EndsOnTheBroker:
    """The continuity's view: the next offset expected per owned partition, and the broker's end offsets, which
    answer only when the test says (a revocation may come meanwhile)."""

    def __init__(self, expected: dict[TopicPartition, int], ends: dict[TopicPartition, int]) -> None:
        self.expected, self.ends = expected, ends
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        self.asked.set()
        await self.answer.wait()
        return {tp: self.ends[tp] for tp in tps}


class Table:
    def _take(self) -> dict[Any, Any]:
        return {}


def processor_over(continuity: EndsOnTheBroker) -> Processor:
    return Processor(None, TopicNames(), Table(), Table(), Table(), None, None, None,  # type: ignore[arg-type]
                     lambda tp: None, continuity, None)  # type: ignore[arg-type]


async def test_the_lag_report_rises_while_no_batch_is_processed_and_skips_a_partition_revoked_meanwhile() -> None:
    topic = f"lag{time.monotonic_ns()}.herald.delivery"  # series of this test's own
    held, moved = TopicPartition(topic, 4), TopicPartition(topic, 5)
    continuity = EndsOnTheBroker({held: 100, moved: 40}, {held: 60_000, moved: 900})
    proc = processor_over(continuity)
    metrics.LAG_MESSAGES.labels(topic, "4").set(0)  # what the last processed batch left
    # the lock is held, as by a batch that does not end: the report does not wait for it
    async with proc._lock:
        report = asyncio.create_task(proc.report_lag())
        await asyncio.wait_for(continuity.asked.wait(), timeout=5)
        del continuity.expected[moved]  # revoked while the broker was asked
        continuity.answer.set()
        await asyncio.wait_for(report, timeout=5)
    assert sample("herald_compliance_lag_messages", topic=topic, partition="4") == 59_900
    assert sample("herald_compliance_lag_messages", topic=topic, partition="5") is None


# --- table recovery ---------------------------------------------------------------------------------------------

def test_a_recovery_in_progress_reports_how_long_it_has_run_and_none_reports_zero() -> None:
    assert recovery_running(None, 1_000.0) == 0.0
    assert recovery_running(400.0, 1_000.0) == 600.0


async def test_the_recovery_gauge_runs_from_the_first_assignment_until_the_stream_resumes(
        no_broker: ComplianceSettings) -> None:
    service = Compliance(no_broker)
    await service._on_assigned(service.faust, set())
    started = service._recovering_since
    assert started is not None
    await service._on_assigned(service.faust, set())  # a rebalance during the recovery: its clock goes on
    assert service._recovering_since == started
    service._recovering_since = time.monotonic() - 900  # a recovery that has not ended in 15 minutes
    service._report_recovery()
    assert (sample("herald_compliance_table_recovery_running_seconds") or 0) >= 900
    await service._on_recovered(service.faust)
    assert sample("herald_compliance_table_recovery_running_seconds") == 0


# --- readiness --------------------------------------------------------------------------------------------------

async def test_readyz_is_503_when_the_broker_cannot_be_reached(no_broker: ComplianceSettings) -> None:
    service = Compliance(no_broker)
    service._started = True  # as after start(); the tables recovered (faust not in recovery)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service.app), base_url="http://t") as http:
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert checks["tables"] == "ok" and checks["kafka"].startswith("not ready: no Kafka broker"), checks
