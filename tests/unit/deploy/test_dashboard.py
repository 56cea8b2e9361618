"""The Grafana dashboard (deploy/k8s/base/monitoring/herald-dashboard.json): every panel's query parses as PromQL
(promtool checks it as a recording rule) and uses only metrics the services export; the panels the operators need
are there; the base ships it as a ConfigMap Grafana's sidecar provisions."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.unit.deploy.helpers import DASHBOARD, QUERIES, exported_metrics, objects, promtool, series_known


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"herald:dashboard:query_{n}", "expr": expr} for n, (_, expr) in enumerate(QUERIES)]}]}
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool(), "check", "rules", str(tmp_path / "queries.yaml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_query_uses_only_metrics_the_services_export() -> None:
    exported = exported_metrics()
    for title, expr in QUERIES:
        used = set(re.findall(r"\b(herald_[a-z_]+)", expr))
        assert used or expr.startswith("sum by (job) (up{"), title
        unknown = {m for m in used if not series_known(m, exported)}
        assert not unknown, f"{title}: {sorted(unknown)}"


def test_the_panels_operators_need_are_there() -> None:
    titles = " | ".join(panel["title"].lower() for panel in DASHBOARD["panels"])
    for wanted in ("sending rate", "outcome mix", "suspensions and warnings", "held messages by gate",
                   "consumer lag", "dead letters", "smtp transaction time", "compliance throughput",
                   "http availability", "http errors by route", "http latency by route"):
        assert wanted in titles, wanted
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) and DASHBOARD["uid"] == "herald-overview"
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]  # whichever Prometheus is chosen


def test_the_base_ships_the_dashboard_for_grafana_to_provision() -> None:
    for overlay in ("dev", "prod"):
        config_map = objects(overlay, "ConfigMap")["herald-dashboard"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"]["herald-dashboard.json"]) == DASHBOARD
