"""Strict schema validation of every object the overlays render, offline: the core kinds against the Kubernetes
1.32 schemas kubernetes-validate ships (unknown fields are errors), the Prometheus Operator's kinds against the
OpenAPI schemas of its CRDs (from its Go module, fetched by scripts/lib.sh: HERALD_PROMETHEUS_OPERATOR_DIR).
Strimzi publishes its CRDs on no registry we can reach: its three kinds are checked by the tests that generate
and use them (tests/unit/shared/test_topics.py, test_k8s.py), and nothing else may go unvalidated."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.helpers import OVERLAYS, UPGRADES, rendered, rendered_upgrade

KUBERNETES_VERSION = "1.32"  # what the manifests target (deploy/README.md)
OPERATOR_KINDS = {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}
STRIMZI_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}  # their structure: test_kafka_users.py


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    directory = os.environ.get("HERALD_PROMETHEUS_OPERATOR_DIR")
    assert directory, "scripts/test exports HERALD_PROMETHEUS_OPERATOR_DIR (the Prometheus Operator's CRDs)"
    path = Path(directory) / "example/prometheus-operator-crd" / f"monitoring.coreos.com_{OPERATOR_KINDS[kind]}.yaml"
    crd = yaml.safe_load(path.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return dict(version["schema"]["openAPIV3Schema"])


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare (the API server would drop them silently): what strict means."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{n}]")
    return found


@pytest.mark.parametrize("source", [*OVERLAYS, *(f"upgrade/{name}" for name in UPGRADES)])
def test_every_rendered_object_is_valid_against_its_schema(source: str) -> None:
    objects = rendered_upgrade(source.removeprefix("upgrade/")) if source.startswith("upgrade/") else rendered(source)
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind in OPERATOR_KINDS:
            schema = crd_schema(kind)
            # not checked against the metaschema: its Go regular expressions (`^(?i)...`) are not Python's
            errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
            assert not errors, f"{kind} {name}: {errors}"
            assert not unknown_fields(obj, schema), f"{kind} {name}: {unknown_fields(obj, schema)}"
        elif kind in STRIMZI_KINDS:
            assert obj["apiVersion"] == "kafka.strimzi.io/v1beta2", f"{kind} {name}"
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The checks above can fail: a field in the wrong place is an error for both kinds of schema."""
    deployment = next(o for o in rendered("prod") if o["kind"] == "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    monitor = next(o for o in rendered("prod") if o["kind"] == "ServiceMonitor")
    misplaced = yaml.safe_load(yaml.safe_dump(monitor))
    misplaced["spec"]["endpoints"][0]["scrapeInterval"] = "30s"
    misplaced["spec"]["endpoints"][0]["port"] = 8080  # a name, not a number
    assert list(jsonschema.Draft7Validator(crd_schema("ServiceMonitor")).iter_errors(misplaced))
    assert unknown_fields(misplaced, crd_schema("ServiceMonitor")) == [".spec.endpoints[0].scrapeInterval"]
