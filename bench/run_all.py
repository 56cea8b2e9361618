"""Runs every benchmark in bench/, one after another, each as its own process, and writes bench/RESULTS.md: the
machine, the date, the commit, and for each benchmark its exact command, its duration and its report (baseline,
measurement and ratio, all from the same run), with a summary table on top. What `scripts/bench` runs.

    eval "$(scripts/stack env)"; .venv/bin/python -m bench.run_all [--quick] [--only NAME ...] \
        [--output bench/RESULTS.md]

Default sizes are the issue's (1,000,000 import rows, 1,000,000 members, ...); `--quick` runs every benchmark
small, to check that they all work and to see rough figures in minutes. A benchmark that fails is recorded as
failed with the tail of its output and the others still run; the exit status is 0 only if every one succeeded.
The stack benchmarks are refused unless KAFKA_BOOTSTRAP_SERVERS and MONGODB_URL are set, so they never fall back
to the default ports of someone's test stack.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "RESULTS.md"
NOT_PARSED = "not parsed (see its report)"
TAIL_LINES = 40


@dataclass(frozen=True)
class Headline:
    """One line of the summary table; None where the report did not say (never a guess)."""

    measured: str | None = None
    baseline: str | None = None
    ratio: str | None = None
    targets: tuple[str, ...] = ()
    checks: str | None = None


Parser = Callable[[str], Headline]


@dataclass(frozen=True)
class Benchmark:
    name: str
    asks: str  # what it answers: issue 19's words where the issue names it
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    needs_stack: bool
    parse: Parser
    # Benchmarks without a `== name:` section: the lines of the report start with one of these.
    report_lines: tuple[str, ...] = ()


@dataclass
class Outcome:
    benchmark: Benchmark
    command: list[str]
    started: datetime
    seconds: float = 0.0
    returncode: int | None = None
    failure: str | None = None
    output: str = ""
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    log: Path | None = None
    kept_prefix: str | None = None  # a run it left for the next benchmark (members_page --keep)

    @property
    def ok(self) -> bool:
        return self.failure is None


# Reading the reports

def _find(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, re.MULTILINE)


def report_text(benchmark: Benchmark, output: str) -> str | None:
    """The benchmark's report: its `== name:` section to the end, else the lines starting as its report does."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"== {benchmark.name}:"):
            return "\n".join(line for line in lines[i:] if not line.startswith("kept: ")).strip()
    if benchmark.report_lines:
        found = [line for line in lines if line.startswith(benchmark.report_lines)]
        if found:
            return "\n".join(found)
    return None


def targets_of(report: str) -> tuple[str, ...]:
    """Every `target ...: MET` / `NOT MET` the report states."""
    return tuple(f"{m[1].strip()}: {m[2]}" for m in re.finditer(r"target ([^:;\n]+?): (NOT MET|MET)\b", report))


def checks_of(report: str) -> str | None:
    if "MISMATCH" in report or "NOT all visible" in report:
        return "MISMATCH"
    if re.search(r": exact\b|all there", report):
        return "exact"
    return None


def parse_contract(report: str) -> Headline:
    base = _find(r"^json\.loads \(baseline\):\s+([\d,]+) events/s", report)
    ours = _find(r"^parse_event:\s+([\d,]+) events/s", report)
    ratio = _find(r"^ratio parse_event / json\.loads: ([\d.]+)", report)
    return Headline(measured=ours and f"parse_event {ours[1]} events/s",
                    baseline=base and f"json.loads {base[1]} events/s", ratio=ratio and f"{ratio[1]} x")


def parse_dkim(report: str) -> Headline:
    base = _find(r"rsa2048 ([\d,]+) sign/s", report)
    ours = _find(r"^render \+ sign, 5 KB campaign message, rsa-sha256 2048: ([\d,]+) msg/s", report)
    ratio = _find(r"^rsa-sha256 2048: ([\d.]+) x openssl speed rsa2048 \(target >= ([\d.]+)\)", report)
    targets: tuple[str, ...] = ()
    if ratio:  # the report states the target without a verdict: compare its own two figures
        met = float(ratio[1]) >= float(ratio[2])
        targets = (f">= {ratio[2]} x: {'MET' if met else 'NOT MET'}",)
    return Headline(measured=ours and f"render + rsa-sha256 2048: {ours[1]} msg/s",
                    baseline=base and f"`openssl speed rsa2048` {base[1]} sign/s",
                    ratio=ratio and f"{ratio[1]} x", targets=targets)


def parse_delivery(report: str) -> Headline:
    base = _find(r"^smtp-source .*?: ([\d,]+) msg/s", report)
    ours = _find(r"^Herald, CampaignQueued -> SMTP acceptance, .*?: ([\d,]+) msg/s = ([\d.]+) x smtp-source", report)
    window = _find(r"^unrecorded window .*?p99 <= ([\d.]+) ms", report)
    signed = _find(r"^Herald with DKIM (.*?), the same campaign: ([\d,]+) msg/s", report)
    measured = ours and f"{ours[1]} msg/s" + (f" (unrecorded window p99 <= {window[1]} ms)" if window else "") + (
        f"; DKIM {signed[1]}: {signed[2]} msg/s" if signed else "")
    return Headline(measured=measured, baseline=base and f"`smtp-source` {base[1]} msg/s",
                    ratio=ours and f"{ours[2]} x")


def parse_compliance(report: str) -> Headline:
    base = _find(r"plain aiokafka consumer ([\d,]+) events/s", report)
    ours = _find(r"processor ([\d,]+) events/s = ([\d.]+) x including .*?, ([\d,]+) events/s = ([\d.]+) x after it",
                 report)
    breach = _find(r"^breach -> AccountSuspended: (\d+)/(\d+) suspended, p50 (\d+) ms, p99 (\d+) ms", report)
    parts = []
    if ours:
        parts.append(f"{ours[1]} events/s ({ours[3]} after the group join)")
    if breach:
        parts.append(f"breach → AccountSuspended p50 {breach[3]} ms, p99 {breach[4]} ms ({breach[1]}/{breach[2]})")
    return Headline(measured="; ".join(parts) or None, baseline=base and f"plain consumer {base[1]} events/s",
                    ratio=ours and f"{ours[2]} x ({ours[4]} x after the join)")


def parse_compliance_workers(report: str) -> Headline:
    base = _find(r"^one worker:\s+([\d,]+) events/s from the start", report)
    ours = _find(r"^two workers:\s+([\d,]+) events/s from the start", report)
    ratio = _find(r"^two / one: ([\d.]+) x from the start", report)
    return Headline(measured=ours and f"two workers {ours[1]} events/s",
                    baseline=base and f"one worker {base[1]} events/s", ratio=ratio and f"{ratio[1]} x")


def parse_import_rows(report: str) -> Headline:
    base = _find(r"^csv\.reader \(baseline\):\s+([\d,]+) rows/s\s+peak RSS\s+([\d.]+) MiB", report)
    ours = _find(r"^import pipeline:\s+([\d,]+) rows/s\s+peak RSS\s+([\d.]+) MiB", report)
    ratio = _find(r"^ratios: speed ([\d.]+) of csv\.reader; memory above csv\.reader (-?\d+) MiB", report)
    return Headline(measured=ours and f"{ours[1]} rows/s, peak RSS {ours[2]} MiB",
                    baseline=base and f"`csv.reader` {base[1]} rows/s, {base[2]} MiB",
                    ratio=ratio and f"{ratio[1]} x; +{ratio[2]} MiB")


def parse_import_api(report: str) -> Headline:
    base = _find(r"^publishing [\d,]+ events \(floor\):\s+([\d,]+) rows/s", report)
    ours = _find(r"^import through the API:\s+([\d,]+) rows/s\s+peak RSS (\d+) MiB \(before the import (\d+) MiB\)",
                 report)
    ratio = _find(r"^ratio import / floor: ([\d.]+)", report)
    return Headline(measured=ours and f"{ours[1]} rows/s to the 202, peak RSS {ours[2]} MiB (before {ours[3]})",
                    baseline=base and f"publishing {base[1]} rows/s", ratio=ratio and f"{ratio[1]} x")


def parse_import_visible(report: str) -> Headline:
    base = _find(r"^floor, publishing [\d,]+ events through EventPublisher:\s+([\d,]+) rows/s", report)
    ours = _find(r"^all ([\d,]+) visible after ([\d.]+) s:\s+([\d,]+) rows/s end to end", report)
    memory = _find(r"(-?\d+) MB above idle", report)
    ratio = _find(r"^ratio end to end / publish floor: ([\d.]+)", report)
    measured = None
    if ours:
        measured = f"{ours[3]} rows/s end to end ({ours[1]} rows in {ours[2]} s)"
    elif "NOT all visible" in report:
        measured = "NOT all visible"
    if measured and memory:
        measured += f", peak +{memory[1]} MB"
    if measured and (shape := _find(r"through herald-subscriptions, (.+) ==$", report)):
        measured += f"; {shape[1]}"
    return Headline(measured=measured, baseline=base and f"publishing {base[1]} rows/s",
                    ratio=ratio and f"{ratio[1]} x")


def parse_members_page(report: str) -> Headline:
    rows = [(m[1].strip(), m[2], m[3])
            for m in re.finditer(r"^(\S.*?)\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms", report, re.MULTILINE)]
    measured_rows = [r for r in rows if "baseline" not in r[0]]
    deep = next((r for r in rows if r[0] == "active, deep pages at random cursors"), None)
    store = next((r for r in rows if r[0].startswith("store alone")), None)
    ratio = _find(r"^deep pages through the API / the store alone: p50 ([\d.]+) x, p99 ([\d.]+) x", report)
    measured = None
    if deep and measured_rows:
        worst = max(measured_rows, key=lambda r: float(r[2]))
        measured = f"deep pages p50 {deep[1]} / p99 {deep[2]} ms; worst p99 {worst[2]} ms ({worst[0]})"
    return Headline(measured=measured, baseline=store and f"store alone p50 {store[1]} / p99 {store[2]} ms",
                    ratio=ratio and f"p50 {ratio[1]} x, p99 {ratio[2]} x")


def parse_subscribe_api(report: str) -> Headline:
    wrk = r"\s([\d,]+) req/s\s+p50\s+([\d.]+) ms\s+p90\s+([\d.]+) ms\s+p99\s+([\d.]+) ms"
    base = _find(r"^GET /healthz.*?" + wrk, report)
    ours = _find(r"^POST .*?" + wrk, report)
    ratio = _find(r"^subscribe / healthz: ([\d.]+) x the requests/s", report)
    counted = _find(r"every 201 counted: (NOT MET|MET)", report)
    return Headline(measured=ours and f"{ours[1]} req/s, p50 {ours[2]} ms, p99 {ours[4]} ms",
                    baseline=base and f"`GET /healthz` {base[1]} req/s, p99 {base[4]} ms",
                    ratio=ratio and f"{ratio[1]} x", checks=counted and f"every 201 counted: {counted[1]}")


def parse_expansion(report: str) -> Headline:
    base = _find(r"raw \(read_from_start \+ parse_event\): [\d.]+ s =\s+([\d,]+) members/s", report)
    ours = _find(r"^CampaignQueued -> every job in the ledger .*?: ([\d.]+) s =\s+([\d,]+) jobs/s", report)
    ratio = _find(r"^expansion / raw read: ([\d.]+) x", report)
    return Headline(measured=ours and f"{ours[1]} s ({ours[2]} jobs/s)",
                    baseline=base and f"raw read {base[1]} members/s", ratio=ratio and f"{ratio[1]} x")


def parse_fold(what: str) -> Parser:
    """projection_rebuild and campaign_reports: a fold from offset 0 against reading the same topics raw."""

    def parse(report: str) -> Headline:
        base = _find(r"^baseline, reading them raw .*?: +[\d.]+ s =\s+([\d,]+) events/s", report)
        ours = _find(r"checkpoint past the last event: +([\d.]+) s =\s+([\d,]+) events/s", report)
        ratio = _find(rf"^{what} / raw read: ([\d.]+) x", report)
        return Headline(measured=ours and f"{ours[2]} events/s ({ours[1]} s)",
                        baseline=base and f"raw read {base[1]} events/s", ratio=ratio and f"{ratio[1]} x")

    return parse


def parse_ledger_fold(report: str) -> Headline:
    base = _find(r"^baseline, reading the jobs and outcomes raw .*?: [\d.]+ s =\s+([\d,]+) messages/s", report)
    ours = _find(r"^fold \(DeliveryStore.load_pending\).*?: ([\d.]+) s =\s+([\d,]+) messages/s; peak RSS \+(\d+) MiB",
                 report)
    ratio = _find(r"^fold / raw read: ([\d.]+) x", report)
    return Headline(measured=ours and f"{ours[2]} messages/s ({ours[1]} s), peak RSS +{ours[3]} MiB",
                    baseline=base and f"raw read {base[1]} messages/s", ratio=ratio and f"{ratio[1]} x")


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("contract_parse", "the event contract's parsing cost", (), ("--events", "5000", "--rounds", "3"),
              False, parse_contract, report_lines=("events:", "json.loads", "parse_event", "ratio")),
    Benchmark("dkim_sign", "DKIM vs `openssl speed`", (), ("--messages", "500"), False, parse_dkim,
              report_lines=("openssl speed", "render + sign", "rsa-sha256 2048:")),
    Benchmark("import_rows", "import rows/s and peak memory for 1,000,000 rows (the row pipeline alone)", (),
              ("--rows", "50000"), False, parse_import_rows,
              report_lines=("file:", "csv.reader", "import pipeline", "ratios:")),
    Benchmark("delivery_smtp", "delivery vs `smtp-source`", ("--messages", "20000"), ("--messages", "1000"), True,
              parse_delivery,
              report_lines=("smtp-source", "Herald, CampaignQueued", "Herald with DKIM", "where the machine's CPU",
                            "  the same with DKIM", "rendering alone", "unrecorded window", "memory while sending")),
    Benchmark("compliance_stream", "compliance vs a plain consumer; breach → suspension latency", (),
              ("--events", "10000", "--breaches", "10"), True, parse_compliance,
              report_lines=("throughput:", "memory:", "sweep of", "breach -> AccountSuspended", "restart:",
                            "faust's ceiling")),
    Benchmark("compliance_workers", "two compliance workers against one (issue 17: >= 1.6 x)", (),
              ("--events", "20000", "--accounts", "1000"), True, parse_compliance_workers),
    Benchmark("import_api", "import rows/s and peak memory for 1,000,000 rows (through the HTTP API, to the 202)",
              (), ("--rows", "20000"), True, parse_import_api,
              report_lines=("import: HTTP", "publishing", "import through the API", "ratio import")),
    Benchmark("import_visible", "import of 1,000,000 rows until the last one is visible, peak memory", (),
              ("--rows", "20000", "--slice", "2000"), True, parse_import_visible),
    # members_page keeps its filled list and subscribe_api runs on it (one fill of 1,000,000 members, not two).
    Benchmark("members_page", "members pages on a 1,000,000-member list (issue 11)", ("--keep",),
              ("--members", "20000", "--requests", "100", "--keep"), True, parse_members_page),
    Benchmark("subscribe_api", "subscribe API req/s and p99 under a loopback load generator (wrk)", (),
              ("--members", "20000", "--duration", "10"), True, parse_subscribe_api),
    Benchmark("delivery_expansion", "a campaign's expansion to 100,000 members (issue 11)", (),
              ("--members", "10000"), True, parse_expansion),
    Benchmark("projection_rebuild", "projection rebuild vs raw consumption", (), ("--members", "20000"), True,
              parse_fold("rebuild")),
    Benchmark("campaign_reports", "report fold rate", (), ("--events", "20000"), True, parse_fold("reports")),
    Benchmark("ledger_fold", "delivery's start-up fold over a history of finished messages", (),
              ("--messages", "20000"), True, parse_ledger_fold),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def headline(benchmark: Benchmark, report: str | None) -> Headline:
    """The summary line of a report: its own parser, then the targets and checks every report states alike."""
    if report is None:
        return Headline()
    found = benchmark.parse(report)
    return Headline(measured=found.measured, baseline=found.baseline, ratio=found.ratio,
                    targets=found.targets or targets_of(report), checks=found.checks or checks_of(report))


# Running

def command_for(benchmark: Benchmark, quick: bool, reuse_prefix: str | None) -> list[str]:
    args = list(benchmark.quick_args if quick else benchmark.args)
    if reuse_prefix:
        args += ["--reuse-prefix", reuse_prefix]
    return [sys.executable, "-m", f"bench.{benchmark.name}", *args]


def run_one(benchmark: Benchmark, command: list[str], logs: Path, timeout_s: float) -> Outcome:
    """Runs the benchmark in its own process group, its output (stdout and stderr) echoed and kept; the group is
    killed when it outlives the timeout or when this runner is interrupted."""
    outcome = Outcome(benchmark, command, datetime.now(UTC), load_before=os.getloadavg(),
                      log=logs / f"{benchmark.name}.log")
    assert outcome.log is not None
    if benchmark.needs_stack and not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("MONGODB_URL")):
        outcome.failure = ("needs the stack: KAFKA_BOOTSTRAP_SERVERS and MONGODB_URL are not set (run it through "
                           "scripts/bench, or eval \"$(scripts/stack env)\" of a stack of its own)")
        return outcome
    started = time.monotonic()
    captured: list[str] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    timed_out = threading.Event()
    with outcome.log.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace", start_new_session=True)

        def kill() -> None:
            timed_out.set()
            _kill_group(process)

        watchdog = threading.Timer(timeout_s, kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                captured.append(line)
                log.write(line)
                print(f"  {benchmark.name}| {line}", end="", flush=True)
            process.wait()
        except BaseException:
            _kill_group(process)
            raise
        finally:
            watchdog.cancel()
    outcome.seconds = time.monotonic() - started
    outcome.returncode = process.returncode
    outcome.output = "".join(captured)
    if timed_out.is_set():
        outcome.failure = f"timed out after {timeout_s:.0f} s (killed)"
    elif process.returncode != 0:
        outcome.failure = f"exited with {process.returncode}"
    kept = _find(r"^kept: prefix (bench\w+)", outcome.output)
    outcome.kept_prefix = kept[1] if kept else None
    return outcome


def _kill_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the benchmark and what it started (services, wrk, smtp-sink), SIGKILL 10 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def drop_kept(prefixes: Sequence[str]) -> None:
    """The lists members_page kept for subscribe_api: their topics and databases."""
    if not prefixes:
        return
    from bench import harness  # needs the stack's settings, only then

    async def drop() -> None:
        for prefix in prefixes:
            await harness.cleanup(harness.settings_for(prefix), ["subscriptions"])

    try:
        asyncio.run(drop())
    except Exception as error:  # the results matter more than the clean-up; the stack's reset removes it too
        print(f"could not drop the kept runs {', '.join(prefixes)}: {error!r}", file=sys.stderr)


# Writing RESULTS.md

def _shell(command: Sequence[str]) -> str:
    """What a reader types from the repository's root."""
    parts = [".venv/bin/python" if part == sys.executable else part for part in command]
    return " ".join(parts)


def _run(command: Sequence[str], *, any_status: bool = False) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 or any_status else None


def machine() -> list[tuple[str, str]]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = _find(r"^model name\s*:\s*(.+)$", cpuinfo)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = _find(r"^MemTotal:\s+(\d+) kB", meminfo)
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    distro = _find(r'^PRETTY_NAME="?([^"\n]+)"?', os_release)
    rows = [
        ("CPU", f"{model[1].strip() if model else platform.processor() or 'unknown'}, {os.cpu_count()} cores "
                f"(this process may use {len(os.sched_getaffinity(0))})"),
        ("memory", f"{int(mem[1]) / 2**20:.1f} GiB" if mem else "unknown"),
        ("system", f"{distro[1] if distro else platform.system()}, kernel {platform.release()} "
                   f"({platform.machine()})"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
    ]
    pom = ROOT / "deploy" / "local" / "kafka-pom.xml"
    kafka = _find(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text()) if pom.exists() else None
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        rows.append(("Kafka", f"{kafka[1] if kafka else 'version unknown'} (deploy/local/kafka-pom.xml) at "
                              f"{os.environ['KAFKA_BOOTSTRAP_SERVERS']}"))
    if os.environ.get("MONGODB_URL"):
        rows.append(("MongoDB", f"{mongodb_version(os.environ['MONGODB_URL'])} at {os.environ['MONGODB_URL']}"))
    if os.environ.get("HERALD_BENCH_STACK_NOTE"):
        rows.append(("stack", os.environ["HERALD_BENCH_STACK_NOTE"]))
    tools = (("PostgreSQL", ["psql", "--version"], False), ("OpenSSL", ["openssl", "version"], False),
             ("wrk", ["wrk", "--version"], True),  # prints its version, then its usage, and exits 1
             ("Postfix (smtp-source, smtp-sink)", ["dpkg-query", "-W", "-f", "${Version}", "postfix"], False))
    for tool, command, any_status in tools:
        version = _run(command, any_status=any_status)
        if version:
            rows.append((tool, version.splitlines()[0]))
    return rows


def mongodb_version(url: str) -> str:
    try:
        from pymongo import MongoClient

        client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=2000)
        try:
            info = client.admin.command("buildInfo")
        finally:
            client.close()
    except Exception:
        return "version unknown"
    if "ferretdbVersion" in info:
        return f"FerretDB {info['ferretdbVersion']} (MongoDB wire version {info.get('version')})"
    return f"mongod {info.get('version')}"


def commit() -> str:
    head = _run(["git", "rev-parse", "--short=12", "HEAD"])
    if head is None:
        return "unknown (not a git checkout)"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return head + (" with uncommitted changes" if dirty else "")


def _cell(value: str | None, outcome: Outcome) -> str:
    if not outcome.ok:
        return "—"
    return (value or NOT_PARSED).replace("|", "\\|")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render(outcomes: Sequence[Outcome], *, quick: bool, started: datetime, total_s: float,
           pending: Sequence[Benchmark] = (), source: str | None = None) -> str:
    """RESULTS.md. `source`: the commit the run started from (`commit()` taken before the first write, which
    would otherwise count this file itself as an uncommitted change); asked now when not given."""
    out: list[str] = ["# Benchmark results", ""]
    out.append("Written by `scripts/bench` (`python -m bench.run_all`); do not edit by hand. Each ratio is against a "
               "baseline measured in the same run on the same machine; see bench/README.md for what each "
               "benchmark does and the figures' history.")
    out.append("")
    if quick:
        out += ["**This is the quick run (`--quick`): every benchmark at a small size (see each command). Its "
                "figures show that the benchmarks work and roughly where they stand; they are not the issue's "
                "sizes, and targets stated for those sizes are compared at these.**", ""]
    if pending:
        out += [f"**Incomplete: {len(pending)} benchmark(s) not run yet or interrupted: "
                f"{', '.join(b.name for b in pending)}.**", ""]
    failed = [o for o in outcomes if not o.ok]
    out += [f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}; all benchmarks took {_duration(total_s)}",
            f"- commit: {source or commit()}",
            *([f"- load average (1, 5, 15 min) before the first benchmark: "
               f"{', '.join(f'{x:.2f}' for x in outcomes[0].load_before)} on {os.cpu_count()} cores; other work on "
               "the machine slows every figure (each section gives the load before it)"] if outcomes else []),
            f"- run: {len(outcomes)} benchmark(s), {len(outcomes) - len(failed)} succeeded, {len(failed)} failed"
            + (f" ({', '.join(o.benchmark.name for o in failed)})" if failed else ""), ""]
    out += ["## Machine", "", "| | |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in machine()]
    out += ["", "## Summary", "",
            "| benchmark | status | time | measured | baseline (same run) | ratio | target | checks |",
            "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        h = headline(o.benchmark, report_text(o.benchmark, o.output)) if o.ok else Headline()
        status = "ok" if o.ok else f"FAILED: {o.failure}"
        targets = "; ".join(h.targets) or "—"
        out.append(f"| {o.benchmark.name} | {status} | {_duration(o.seconds)} | {_cell(h.measured, o)} | "
                   f"{_cell(h.baseline, o)} | {_cell(h.ratio, o)} | {targets.replace('|', '/')} | "
                   f"{h.checks or '—'} |")
    for o in outcomes:
        out += ["", f"## {o.benchmark.name}: {o.benchmark.asks}", ""]
        out.append(f"- command: `{_shell(o.command)}`")
        out.append(f"- started {o.started.strftime('%H:%M:%S UTC')}, took {_duration(o.seconds)}; load average "
                   f"before: {', '.join(f'{x:.2f}' for x in o.load_before)}")
        out.append(f"- status: {'ok' if o.ok else 'FAILED: ' + (o.failure or '')}")
        out.append("")
        report = report_text(o.benchmark, o.output)
        if o.ok and report is not None:
            out += ["```text", report, "```"]
        elif o.ok:
            out += ["Its report was not found in its output; the last lines:", "", "```text",
                    *o.output.splitlines()[-TAIL_LINES:], "```"]
        else:
            out += [f"The last {TAIL_LINES} lines of its output:", "", "```text",
                    *(o.output.splitlines()[-TAIL_LINES:] or ["(no output)"]), "```"]
    return "\n".join(out) + "\n"


def write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every benchmark at a small size (minutes, not an hour)")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(BY_NAME),
                        help=f"run only these (in the usual order): {', '.join(BY_NAME)}")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the results")
    parser.add_argument("--logs", type=Path, default=None, help="folder for each benchmark's full output "
                        "(default: a new temporary folder)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds before a benchmark is killed (default 3600, 900 with --quick)")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    logs = args.logs or Path(tempfile.mkdtemp(prefix="herald-bench-"))
    logs.mkdir(parents=True, exist_ok=True)
    timeout_s = args.timeout or (900.0 if args.quick else 3600.0)
    started, began, source = datetime.now(UTC), time.monotonic(), commit()
    print(f"bench: {len(chosen)} benchmark(s){' (quick)' if args.quick else ''}; full output in {logs}", flush=True)
    outcomes: list[Outcome] = []
    kept: list[str] = []
    interrupted = False
    try:
        for i, benchmark in enumerate(chosen):
            reuse = None
            if benchmark.name == "subscribe_api":  # on the list members_page kept in this run, if it did
                reuse = next((o.kept_prefix for o in outcomes if o.benchmark.name == "members_page" and o.ok), None)
            command = command_for(benchmark, args.quick, reuse)
            print(f"bench: [{i + 1}/{len(chosen)}] {_shell(command)}", flush=True)
            outcome = run_one(benchmark, command, logs, timeout_s)
            if outcome.kept_prefix and outcome.kept_prefix not in kept:
                kept.append(outcome.kept_prefix)
            outcomes.append(outcome)
            print(f"bench: {benchmark.name} {'ok' if outcome.ok else 'FAILED (' + str(outcome.failure) + ')'} "
                  f"in {_duration(outcome.seconds)}", flush=True)
            write(args.output, render(outcomes, quick=args.quick, started=started,
                                      total_s=time.monotonic() - began, pending=chosen[i + 1:], source=source))
    except KeyboardInterrupt:
        interrupted = True
        print("bench: interrupted; writing what was measured", flush=True)
    finally:
        drop_kept(kept)
    write(args.output, render(outcomes, quick=args.quick, started=started, total_s=time.monotonic() - began,
                              pending=chosen[len(outcomes):], source=source))
    failed = [o.benchmark.name for o in outcomes if not o.ok]
    print(f"bench: wrote {args.output}; {len(outcomes) - len(failed)} of {len(chosen)} succeeded"
          + (f", failed: {', '.join(failed)}" if failed else ""), flush=True)
    if interrupted:
        return 130
    return 1 if failed or len(outcomes) < len(chosen) else 0

if __name__ == "__main__":
    sys.exit(main())
