"""`scripts/bench`'s runner (bench.run_all): it writes RESULTS.md with the machine, the date, each command and each
report, and its summary reads every benchmark's real output (samples/ holds outputs of `scripts/bench --quick`)
without inventing a figure it cannot find."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import run_all
from bench.run_all import BY_NAME, NOT_PARSED, Outcome, headline, render, report_text

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = Path(__file__).with_name("samples")
SAMPLED = sorted(p.stem for p in SAMPLES.glob("*.txt") if p.stem in BY_NAME)


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text()


def figures(text: str) -> set[str]:
    return set(re.findall(r"\d[\d,.]*", text))


def test_every_benchmark_module_in_bench_is_run() -> None:
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__", "harness", "run_all"}
    assert modules == set(BY_NAME)


def test_every_benchmark_has_a_sample_output() -> None:
    assert SAMPLED == sorted(BY_NAME)


@pytest.mark.parametrize("name", SAMPLED)
def test_the_summary_reads_measurement_baseline_and_ratio_from_the_report(name: str) -> None:
    output = sample(name)
    report = report_text(BY_NAME[name], output)
    assert report is not None
    found = headline(BY_NAME[name], report)
    for cell in (found.measured, found.baseline, found.ratio):
        assert cell is not None
        # every number shown is one the report printed (a ratio of two printed figures is not printed: dkim's
        # verdict compares the printed ratio with the printed target)
        assert figures(cell) <= figures(report), cell


@pytest.mark.parametrize("name", SAMPLED)
def test_the_report_leaves_out_progress_and_log_lines(name: str) -> None:
    report = report_text(BY_NAME[name], sample(name))
    assert report is not None
    assert "account suspended" not in report
    progress = r"^(filling|publishing [\d,]+ (MessageSent|members)|publishing .*not measured|run bench|wrk:|kept:)"
    assert not re.search(progress, report, re.MULTILINE)


def test_figures_of_the_compliance_and_subscribe_reports() -> None:
    compliance = headline(BY_NAME["compliance_stream"], report_text(BY_NAME["compliance_stream"],
                                                                     sample("compliance_stream")))
    assert compliance.measured == ("1,351 events/s (1,536 after the group join); breach → AccountSuspended p50 334 ms, "
                                   "p99 602 ms (10/10)")
    assert compliance.baseline == "plain consumer 72,315 events/s"
    assert compliance.ratio == "0.019 x (0.021 x after the join)"
    subscribe = headline(BY_NAME["subscribe_api"], report_text(BY_NAME["subscribe_api"], sample("subscribe_api")))
    assert subscribe.measured == "263 req/s, p50 71.8 ms, p99 130.6 ms"
    assert subscribe.baseline == "`GET /healthz` 5,628 req/s, p99 8.0 ms"
    assert subscribe.ratio == "0.047 x"
    assert subscribe.targets == (">= 600 req/s: NOT MET", "p99 < 50 ms: NOT MET")
    assert subscribe.checks == "every 201 counted: MET"


def test_the_import_headline_says_how_the_service_ran() -> None:
    imported = headline(BY_NAME["import_visible"], report_text(BY_NAME["import_visible"], sample("import_visible")))
    assert imported.measured == ("5,797 rows/s end to end (20,000 rows in 3.5 s), peak +40 MB; "
                                 "two processes (API, fold)")


def test_targets_and_checks_are_those_the_report_states() -> None:
    rebuild = headline(BY_NAME["projection_rebuild"], report_text(BY_NAME["projection_rebuild"],
                                                                   sample("projection_rebuild")))
    assert rebuild.targets == (">= 0.3 x: NOT MET",)
    assert rebuild.checks == "exact"
    dkim = headline(BY_NAME["dkim_sign"], report_text(BY_NAME["dkim_sign"], sample("dkim_sign")))
    assert dkim.ratio == "0.13 x"
    assert dkim.targets == (">= 0.7 x: NOT MET",)
    contract = headline(BY_NAME["contract_parse"], report_text(BY_NAME["contract_parse"], sample("contract_parse")))
    assert contract.targets == () and contract.checks is None


def test_a_report_that_changed_shape_is_said_not_parsed_rather_than_guessed() -> None:
    changed = sample("projection_rebuild").replace("rebuild / raw read", "rebuild over raw").replace(
        "checkpoint past the last event", "last checkpoint")
    outcome = Outcome(BY_NAME["projection_rebuild"], ["python", "-m", "bench.projection_rebuild"],
                      datetime.now(UTC), seconds=12.0, returncode=0, output=changed)
    summary = next(line for line in render([outcome], quick=True, started=datetime.now(UTC), total_s=12.0)
                   .splitlines() if line.startswith("| projection_rebuild |"))
    assert summary.count(NOT_PARSED) == 2  # measured and ratio; the baseline line is still there
    assert "raw read 29,516 events/s" in summary


def test_a_failed_benchmark_is_recorded_with_the_tail_of_its_output() -> None:
    failed = Outcome(BY_NAME["members_page"], ["python", "-m", "bench.members_page"], datetime.now(UTC),
                     seconds=33.0, returncode=1, failure="exited with 1", output=sample("members_page_failed"))
    ok = Outcome(BY_NAME["contract_parse"], ["python", "-m", "bench.contract_parse"], datetime.now(UTC),
                 seconds=1.0, returncode=0, output=sample("contract_parse"))
    text = render([ok, failed], quick=False, started=datetime.now(UTC), total_s=34.0)
    assert "| members_page | FAILED: exited with 1 |" in text
    assert "RuntimeError: members page answered 422" in text
    assert "1 succeeded, 1 failed (members_page)" in text
    assert "quick run" not in text


def test_a_stack_benchmark_without_a_stack_of_its_own_is_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the default ports: those are someone's test stack."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    outcome = run_all.run_one(BY_NAME["projection_rebuild"], ["false"], tmp_path, 10)
    assert not outcome.ok and "needs the stack" in (outcome.failure or "")


def test_the_runner_writes_results_with_machine_date_command_and_report(tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, "-m", "bench.run_all", "--only", "contract_parse", "--quick",
                           "--output", str(output), "--logs", str(tmp_path / "logs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    text = output.read_text()
    assert "## Machine" in text
    assert re.search(r"^\| CPU \| .+, \d+ cores", text, re.MULTILINE)
    assert re.search(r"^\| Python \| CPython 3\.11\.", text, re.MULTILINE)
    assert re.search(r"^- date: \d{4}-\d\d-\d\d \d\d:\d\d UTC", text, re.MULTILINE)
    assert re.search(r"^- commit: [0-9a-f]{12}", text, re.MULTILINE)
    assert "- command: `.venv/bin/python -m bench.contract_parse --events 5000 --rounds 3`" in text
    assert "This is the quick run" in text
    assert re.search(r"^json\.loads \(baseline\): +[\d,]+ events/s$", text, re.MULTILINE)
    assert re.search(r"^ratio parse_event / json\.loads: [\d.]+$", text, re.MULTILINE)
    assert re.search(r"^\| contract_parse \| ok \| \d+ s \| parse_event [\d,]+ events/s \| json\.loads [\d,]+ "
                     r"events/s \| [\d.]+ x \|", text, re.MULTILINE)
    assert (tmp_path / "logs" / "contract_parse.log").exists()


def test_the_delivery_report_states_each_of_its_targets() -> None:
    """Issue 16's unsigned rate (absolute and against smtp-source), the signed rate and the unrecorded window."""
    delivery = headline(BY_NAME["delivery_smtp"], report_text(BY_NAME["delivery_smtp"], sample("delivery_smtp")))
    assert delivery.targets == (">= 2,000 msg/s and >= 0.1 x smtp-source: NOT MET", ">= 1,000 msg/s with rsa: MET",
                                "p99 <= 50 ms: MET")
    assert delivery.measured == "1,550 msg/s (unrecorded window p99 <= 50.0 ms); DKIM rsa-sha256 2048: 1,048 msg/s"
