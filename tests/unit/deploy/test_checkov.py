"""checkov, a best-practice linter for Kubernetes, on both rendered overlays: no failed check, and every check
skipped in deploy/k8s/.checkov.yaml says why. checkov runs from its own virtualenv (scripts/lib.sh,
`ensure_checkov`: its dependencies clash with the project's), so HERALD_CHECKOV names it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.deploy.helpers import OVERLAYS, ROOT, UPGRADES, rendered, rendered_upgrade

CONFIG = ROOT / "deploy/k8s/.checkov.yaml"


def checkov() -> str:
    path = os.environ.get("HERALD_CHECKOV")
    assert path, "scripts/test installs checkov and exports HERALD_CHECKOV"
    return path


def assert_checks_pass(manifests: Path) -> None:
    done = subprocess.run([checkov(), "--config-file", str(CONFIG), "-f", str(manifests), "-o", "json"],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and not failed, "\n".join(failed)
    assert summary["passed"] > 100  # it did look at the objects
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_manifests_pass_every_check_not_skipped_for_a_reason(overlay: str, tmp_path: Path) -> None:
    manifests = tmp_path / f"{overlay}.yaml"
    manifests.write_text(yaml.safe_dump_all(rendered(overlay)))
    assert_checks_pass(manifests)


@pytest.mark.parametrize("upgrade", UPGRADES)
def test_an_upgrade_job_passes_every_check_beside_the_prod_overlay(upgrade: str, tmp_path: Path) -> None:
    """Checked with what it is applied beside: its pod's network policies are the overlay's."""
    manifests = tmp_path / f"prod-{upgrade}.yaml"
    manifests.write_text(yaml.safe_dump_all([*rendered("prod"), *rendered_upgrade(upgrade)]))
    assert_checks_pass(manifests)


def test_every_skipped_check_says_why() -> None:
    lines = CONFIG.read_text().splitlines()
    skipped = yaml.safe_load(CONFIG.read_text())["skip-check"]
    assert skipped
    for check in skipped:
        [at] = [n for n, line in enumerate(lines) if line.strip() == f"- {check}"]
        reason = lines[at - 1].strip()
        assert reason.startswith("#") and len(reason) > 40, f"{check}: no reason on the line above it"
        assert re.search(rf"\b{check}\b", "\n".join(lines[at - 3:at])), f"{check}: the reason names the check"
