"""What the deploy tests share (and tests/integration/deploy, tests/e2e with them): the Kubernetes manifests
rendered with kustomize, the alert rules and promtool, the dashboard's queries, and the Dockerfile as the builder
reads it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]

# The manifests (deploy/k8s), rendered by kustomize (built by scripts/lib.sh with `go install`: HERALD_KUSTOMIZE).
OVERLAYS = ("dev", "prod")
# deploy/k8s/upgrade: kustomizations an operator applies on purpose beside an overlay (a Job each), in no overlay.
UPGRADES = ("subscriptions-rebuild", "delivery-rebuild", "billing-rebuild")


def build(path: Path) -> list[dict[str, Any]]:
    kustomize = os.environ.get("HERALD_KUSTOMIZE") or shutil.which("kustomize")
    assert kustomize, "kustomize is needed to render deploy/k8s: scripts/test builds it (HERALD_KUSTOMIZE)"
    done = subprocess.run([kustomize, "build", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@cache
def rendered(overlay: str) -> list[dict[str, Any]]:
    return build(ROOT / "deploy/k8s/overlays" / overlay)


@cache
def rendered_upgrade(name: str) -> list[dict[str, Any]]:
    return build(ROOT / "deploy/k8s/upgrade" / name)


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in rendered(overlay) if o["kind"] == kind}


# The alert rules and the dashboard (deploy/k8s/base/monitoring). promtool comes from Debian's prometheus package,
# unpacked by scripts/lib.sh (`ensure_promtool`; scripts/test exports HERALD_PROMTOOL).
MONITORING = ROOT / "deploy/k8s/base/monitoring"
RULE = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
METRIC_DEFINITION = re.compile(r'(?:Counter|Gauge|Histogram|Summary)\(\s*"(herald_[a-z_]+)"')
# No `_created`: the pods do not serve them (PROMETHEUS_DISABLE_CREATED_SERIES in herald-common).
SERIES_SUFFIXES = ("_total", "_bucket", "_sum", "_count")
DASHBOARD = json.loads((MONITORING / "herald-dashboard.json").read_text())
QUERIES = [(panel["title"], target["expr"]) for panel in DASHBOARD["panels"] for target in panel["targets"]]


def promtool() -> str:
    path = os.environ.get("HERALD_PROMTOOL") or shutil.which("promtool")
    assert path, "promtool is needed: scripts/test fetches it (HERALD_PROMTOOL)"
    return path


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in RULE["spec"]["groups"] for rule in group["rules"] if "alert" in rule}


def recording_rules() -> dict[str, dict[str, Any]]:
    return {rule["record"]: rule for group in RULE["spec"]["groups"] for rule in group["rules"] if "record" in rule}


def exported_metrics() -> set[str]:
    """Every metric name the services define (prometheus_client adds `_total` to counters in what it serves)."""
    names: set[str] = set()
    for source in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        names |= set(METRIC_DEFINITION.findall(source.read_text()))
    return names


def series_known(name: str, exported: set[str]) -> bool:
    return name in exported or any(name.endswith(s) and name.removesuffix(s) in exported for s in SERIES_SUFFIXES)


# The service images: deploy/images/Dockerfile, and the services it builds (every folder of services/ a project).
DOCKERFILE = ROOT / "deploy/images/Dockerfile"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction: comments dropped, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(args.split())))
    return found


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the stages in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            image, _, name = rest.partition(" AS ")
            stages.append(Stage(image.strip(), name.strip() or None))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())
BUILD, FINAL = STAGES[0], STAGES[-1]
