"""The processor's metrics as the alerts read them: every suspension and warning series exists at 0 before the
first (increase() over a series born at 1 says 0: HeraldSuspensionSpike would miss each series' first), and a
partition taken away from this worker is no longer reported (its last lag would keep HeraldComplianceLagging
firing on a worker that no longer holds it)."""

from __future__ import annotations

from typing import Any, get_args

from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from herald_compliance import metrics
from herald_compliance.domain import RateMetric
from herald_compliance.processor import Processor
from herald_shared.contract.compliance import Metric
from herald_shared.topics import TopicNames


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_every_suspension_and_warning_series_exists_at_zero_before_the_first() -> None:
    assert set(get_args(RateMetric)) <= set(get_args(Metric))
    for metric in get_args(RateMetric):
        for scope in ("campaign", "rolling_window"):
            assert sample("herald_compliance_suspensions_total", metric=metric, scope=scope) is not None
            assert sample("herald_compliance_warnings_total", metric=metric, scope=scope) is not None
    assert sample("herald_compliance_warnings_total", metric="one_off_sending", scope="list") is not None
    assert metrics.SCOPE_KINDS == ("campaign", "rolling_window")


class Table:
    """A changelog-backed table with nothing to write."""

    def _take(self) -> dict[Any, Any]:
        return {}

    def _restore(self, pending: dict[Any, Any]) -> None:
        return None

    async def _send(self, pending: dict[Any, Any]) -> list[Any]:
        return []


class Forgets:
    def forget(self, *args: Any) -> None:
        return None


def processor() -> Processor:
    return Processor(None, TopicNames(), Table(), Table(), Table(), Forgets(), None, None,  # type: ignore[arg-type]
                     lambda tp: None, Forgets(), Forgets())  # type: ignore[arg-type]


async def test_a_partition_taken_away_is_no_longer_reported_behind() -> None:
    proc = processor()
    proc.owned = {3, 4}
    metrics.LAG_MESSAGES.labels("herald.delivery", "3").set(25_000)  # what a batch of partition 3 left
    metrics.LAG_MESSAGES.labels("herald.delivery", "4").set(7)
    await proc.revoked([TopicPartition("herald.delivery", 3)])
    assert sample("herald_compliance_lag_messages", topic="herald.delivery", partition="3") is None
    assert sample("herald_compliance_lag_messages", topic="herald.delivery", partition="4") == 7
    assert proc.owned == {4}
