"""The alert rules (deploy/k8s/base/monitoring/alerts.yaml): `promtool check rules`, `promtool test rules` with
alerts_test.yaml, and every metric they use is one a service exports. promtool comes from Debian's prometheus
package, unpacked by scripts/lib.sh (`ensure_promtool`; scripts/test exports HERALD_PROMTOOL)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.unit.deploy.helpers import (
    MONITORING,
    ROOT,
    RULE,
    alerts,
    exported_metrics,
    promtool,
    recording_rules,
    series_known,
)


def test_the_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULE["spec"]))
    done = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts()) + len(recording_rules())} rules found" in done.stdout


def test_every_alert_fires_when_it_should_and_not_before(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(RULE["spec"]))
    tests = yaml.safe_load((MONITORING / "alerts_test.yaml").read_text())
    by_name = alerts()
    tested = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            tested.add(check["alertname"])
            for expected in check["exp_alerts"]:
                annotations = expected.setdefault("exp_annotations", {})
                assert "summary" in annotations, f"{check['alertname']}: say which summary is expected"
                annotations["runbook"] = by_name[check["alertname"]]["annotations"]["runbook"]
    assert tested == set(by_name), f"alerts without a test: {sorted(set(by_name) - tested)}"
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests))
    done = subprocess.run([promtool(), "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_severity_a_summary_and_a_static_runbook() -> None:
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        runbook = rule["annotations"]["runbook"]
        assert len(runbook) > 100 and "{{" not in runbook, f"{name}: a runbook says what to do, in plain text"


def test_every_metric_the_alerts_use_is_one_a_service_exports() -> None:
    exported = exported_metrics()
    assert "herald_delivery_messages_total" in exported and "herald_consumer_lag" in exported
    recorded = set(recording_rules())
    for name, rule in {**alerts(), **recording_rules()}.items():
        used = set(re.findall(r"\b(herald_[a-z_]+)", rule["expr"]))
        records = set(re.findall(r"\b(herald:[a-z_:0-9]+)", rule["expr"]))
        assert used or records or re.match(r"up\{", rule["expr"]), name  # `up`: Prometheus' own, per target
        unknown = {metric for metric in used if not series_known(metric, exported)}
        assert not unknown, f"{name} uses metrics no service exports: {sorted(unknown)}"
        assert records <= recorded, f"{name} uses recording rules that are not written: {sorted(records - recorded)}"


def test_the_rules_are_part_of_the_base() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/base/kustomization.yaml").read_text())
    assert "monitoring/alerts.yaml" in kustomization["resources"]
