"""What a kube-prometheus-stack Prometheus finds of Herald: the rendered ServiceMonitors and PrometheusRule carry
the label deploy/README.md says its default selectors want, and the README's table names every alert."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.unit.deploy.helpers import OVERLAYS, ROOT, alerts, rendered

README = (ROOT / "deploy/README.md").read_text()
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def documented_release_label() -> tuple[str, str]:
    """The label the README's step-by-step says the overlays put on the monitoring objects."""
    found = re.search(r"labels its ServiceMonitors and PrometheusRule\s+`(release): ([\w.-]+)`", README)
    assert found, "deploy/README.md says which label the overlays put on the ServiceMonitors and PrometheusRule"
    return found.group(1), found.group(2)


def test_the_readme_names_both_helm_values_that_let_prometheus_select_any_monitor() -> None:
    for value in ("serviceMonitorSelectorNilUsesHelmValues", "ruleSelectorNilUsesHelmValues"):
        assert f"--set prometheus.prometheusSpec.{value}=false" in " ".join(README.split()), value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_monitor_and_rule_carries_the_label_a_default_kube_prometheus_stack_selects(overlay: str) -> None:
    key, value = documented_release_label()
    monitoring = [o for o in rendered(overlay) if o["kind"] in MONITORING_KINDS]
    assert {o["kind"] for o in monitoring} == MONITORING_KINDS
    assert len([o for o in monitoring if o["kind"] == "ServiceMonitor"]) == 7  # one per Deployment
    for obj in monitoring:
        assert obj["metadata"]["labels"].get(key) == value, f"{obj['kind']} {obj['metadata']['name']}"
    # only those: a label in a Deployment's or Service's selector would change what it selects
    others = [o["metadata"]["name"] for o in rendered(overlay)
              if o["kind"] not in MONITORING_KINDS and key in o["metadata"].get("labels", {})]
    assert not others


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_release_label_is_set_in_one_place_per_overlay(overlay: str) -> None:
    directory = ROOT / "deploy/k8s/overlays" / overlay
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert "prometheus-release.yaml" in kustomization["transformers"]
    transformer = yaml.safe_load((directory / "prometheus-release.yaml").read_text())
    assert transformer["labels"] == dict([documented_release_label()])
    assert {spec["kind"] for spec in transformer["fieldSpecs"]} == MONITORING_KINDS


def test_the_readme_names_every_alert_and_no_longer_calls_them_unwritten() -> None:
    table = {line.split("|")[1].strip() for line in README.splitlines() if line.startswith("| Herald")}
    assert table == set(alerts()), f"missing {sorted(set(alerts()) - table)}, unknown {sorted(table - set(alerts()))}"
    assert "not written yet" not in README
