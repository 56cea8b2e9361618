"""A test's metric series go with its topics (`conftest.forget_series`), so a late test in a run reads a metric
as fast as the first."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from tests.conftest import forget_series


def test_the_series_naming_a_tests_prefix_go_and_the_others_stay() -> None:
    registry = CollectorRegistry()
    lag = Gauge("lag", "lag", ["consumer", "partition"], registry=registry)
    sent = Counter("sent", "sent", ["kind"], registry=registry)
    Counter("total", "no labels", registry=registry).inc()
    lag.labels("tabc123.herald-billing", "0").set(3)
    lag.labels("tabc123.herald-billing", "1").set(4)
    lag.labels("tdef456.herald-billing", "0").set(5)
    sent.labels("campaign").inc()
    assert forget_series("tabc123", registry) == 2
    assert registry.get_sample_value("lag", {"consumer": "tabc123.herald-billing", "partition": "0"}) is None
    assert registry.get_sample_value("lag", {"consumer": "tdef456.herald-billing", "partition": "0"}) == 5
    assert registry.get_sample_value("sent_total", {"kind": "campaign"}) == 1
    assert registry.get_sample_value("total_total") == 1
