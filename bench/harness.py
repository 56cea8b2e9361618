"""Shared pieces of the benchmarks that run Herald's services on the local stack: a service as its own process
(with its RSS read from /proc), API keys, member events published in bulk, waiting on a consumer's checkpoint,
wrk, percentiles, and clean-up of what a run created. Not a benchmark itself.

Every run works under its own prefix (`bench<hex>`): topics `<prefix>.herald.*`, databases `<prefix>_*`.
`--reuse-prefix P` runs again on a prefix a previous run left behind with `--keep` (a filled list is
filled once).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata
from pymongo import AsyncMongoClient

from herald_shared.apikeys import new_api_key
from herald_shared.contract import Event, parse_event
from herald_shared.contract.billing import ApiKeyIssued
from herald_shared.contract.subscriptions import (
    ListCreated,
    SubscriberAdded,
    SubscriberConfirmed,
    SubscriberUnsubscribed,
)
from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.mongo import Document, make_client
from herald_shared.settings import HeraldSettings

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SECRET = "bench-only-secret-0123456789"
ACCOUNT = "bench"
LIST = "news"
CONSENT_AT = "2026-10-01T10:00:00+00:00"
PUBLISH_CHUNK = 1000


def new_prefix() -> str:
    return f"bench{uuid.uuid4().hex[:8]}"


def settings_for(prefix: str) -> HeraldSettings:
    """Kafka and MongoDB from the environment (`eval "$(scripts/stack env)"`), names under the prefix."""
    return HeraldSettings(topic_prefix=f"{prefix}.", database_prefix=f"{prefix}_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Members: the same ids the subscriptions service computes (domain.subscriber_id_for), so the API, cursors
# and later subscribe requests see them as the service's own.

def email_of(i: int) -> str:
    return f"person{i}@example.com"


def subscriber_id(account_id: str, list_id: str, email: str) -> str:
    return "s" + hashlib.sha256(f"{account_id}\0{list_id}\0{email}".encode()).hexdigest()[:24]


def member_events(indices: Iterable[int], *, account_id: str = ACCOUNT, list_id: str = LIST) -> list[Event]:
    """SubscriberAdded + SubscriberConfirmed (single opt-in, consent from an import) for each index."""
    events: list[Event] = []
    for i in indices:
        email = email_of(i)
        sid = subscriber_id(account_id, list_id, email)
        events.append(SubscriberAdded(account_id=account_id, producer="subscriptions", payload={
            "list_id": list_id, "subscriber_id": sid, "email": email, "first_name": f"First{i}",
            "email_sha256": hashlib.sha256(email.encode()).hexdigest(), "opt_in": "single",
            "consent": {"source": "import", "collected_at": CONSENT_AT, "method": "webinar signup form",
                        "ip": f"198.51.100.{i % 250}"}}))
        events.append(SubscriberConfirmed(account_id=account_id, producer="subscriptions", payload={
            "list_id": list_id, "subscriber_id": sid, "method": "single_opt_in"}))
    return events


def unsubscribe_events(indices: Iterable[int], *, account_id: str = ACCOUNT, list_id: str = LIST) -> list[Event]:
    return [SubscriberUnsubscribed(account_id=account_id, producer="subscriptions", payload={
        "list_id": list_id, "subscriber_id": subscriber_id(account_id, list_id, email_of(i)), "source": "api"})
        for i in indices]


def list_created(account_id: str = ACCOUNT, list_id: str = LIST) -> Event:
    return ListCreated(account_id=account_id, producer="subscriptions",
                       payload={"list_id": list_id, "name": "News", "opt_in": "single"})


Positions = dict[tuple[str, int], int]


def last_positions(records: Iterable[RecordMetadata], into: Positions | None = None) -> Positions:
    """The highest offset published per (topic, partition)."""
    found = into if into is not None else {}
    for r in records:
        found[(r.topic, r.partition)] = max(r.offset, found.get((r.topic, r.partition), -1))
    return found


async def publish_members(publisher: EventPublisher, indices: range, *, unsubscribed: range = range(0),
                          progress: str | None = None) -> tuple[float, Positions]:
    """Publish members (and unsubscriptions) in chunks. Returns (seconds spent in publish_many, last positions);
    building the events is not counted."""
    positions: Positions = {}
    spent = 0.0
    step = PUBLISH_CHUNK // 2
    announced = time.monotonic()
    for start in range(indices.start, indices.stop, step):
        events = member_events(range(start, min(start + step, indices.stop)))
        began = time.perf_counter()
        last_positions(await publisher.publish_many(events), positions)
        spent += time.perf_counter() - began
        if progress and time.monotonic() - announced > 10:
            announced = time.monotonic()
            print(f"  {progress}: {start - indices.start:,} of {len(indices):,} published", flush=True)
    for start in range(unsubscribed.start, unsubscribed.stop, PUBLISH_CHUNK):
        events = unsubscribe_events(range(start, min(start + PUBLISH_CHUNK, unsubscribed.stop)))
        last_positions(await publisher.publish_many(events), positions)
    return spent, positions


async def raw_read(settings: HeraldSettings, expected: int,
                   topics: Sequence[str] = ("herald.subscriptions",)) -> float:
    """Seconds to read the topics from offset 0 and parse every event (the baseline)."""
    started = time.perf_counter()
    consumed = 0
    async for records in read_from_start(settings, [settings.topics(t) for t in topics]):
        for record in records:
            parse_event(record.value)
        consumed += len(records)
    seconds = time.perf_counter() - started
    assert consumed == expected, f"read back {consumed} of {expected} events"
    return seconds


async def wait_checkpoint(db: Any, consumer: str, positions: Positions, *, within: float,
                          what: str, interval: float = 1.0) -> float:
    """Wait until a consumer's stored checkpoint (`checkpoints.<consumer>`: the next offset per partition) is
    past every position; polled by `_id`, never counted. Returns the seconds waited."""
    started = time.monotonic()
    collection = db[f"checkpoints.{consumer}"]
    while True:
        behind = 0
        for (topic, partition), offset in positions.items():
            doc = await collection.find_one({"_id": f"{topic}:{partition}"})
            applied = int(doc["next_offset"]) if doc else 0
            behind += max(0, offset + 1 - applied)
        if behind == 0:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise TimeoutError(f"{what}: {behind:,} events still not applied after {within:.0f} s")
        await asyncio.sleep(interval)


async def issue_api_key(publisher: EventPublisher, account_id: str = ACCOUNT) -> str:
    key_id, key, key_hash = new_api_key()
    await publisher.publish(ApiKeyIssued(account_id=account_id, producer="billing", payload={
        "key_id": key_id, "key_hash": key_hash, "issued_by": "bench"}))
    return key


async def wait_authorised(http: httpx.AsyncClient, within: float = 120) -> None:
    """Until the service's projection has the key (GET /v1/lists answers 200 with it)."""
    deadline = time.monotonic() + within
    while True:
        response = await http.get("/v1/lists")
        if response.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the API key is not accepted after {within:.0f} s: {response.status_code} "
                               f"{response.text[:200]}")
        await asyncio.sleep(0.2)


async def ensure_list(http: httpx.AsyncClient, list_id: str = LIST) -> None:
    response = await http.post("/v1/lists", json={"list_id": list_id, "name": "News", "opt_in": "single"})
    if response.status_code not in (200, 201):
        raise RuntimeError(f"creating list {list_id}: {response.status_code} {response.text[:300]}")


async def list_counts(http: httpx.AsyncClient, list_id: str = LIST) -> dict[str, int]:
    response = await http.get(f"/v1/lists/{list_id}")
    response.raise_for_status()
    return dict(response.json()["counts"])


# A service as its own process

class ServiceProcess:
    """`herald-<name>` from .venv/bin with env-var configuration, its output in a log file; RSS from /proc."""

    def __init__(self, name: str, settings: HeraldSettings, *, port: int | None = None,
                 env: dict[str, str] | None = None, role: str = "") -> None:
        """`role` tells apart, in the log's name, processes of one service configured differently."""
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.gettempdir()) / f"{settings.topic_prefix}{name}{'-' + role if role else ''}.log"
        self.env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                    "MONGODB_URL": settings.mongodb_url, "HERALD_TOPIC_PREFIX": settings.topic_prefix,
                    "HERALD_DATABASE_PREFIX": settings.database_prefix, "HERALD_HTTP_HOST": "127.0.0.1",
                    "HERALD_HTTP_PORT": str(self.port), "HERALD_LINK_SECRET": SECRET,
                    "HERALD_LOG_LEVEL": "WARNING", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([str(VENV_BIN / f"herald-{self.name}")], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_ready(self, within: float = 120) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"herald-{self.name} exited during start-up:\n{self.log_tail()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"herald-{self.name} not ready after {within:.0f} s:\n{self.log_tail()}")
                await asyncio.sleep(0.2)

    def status_kib(self) -> dict[str, int]:
        return status_kib(self.pid)

    def reset_peak(self) -> bool:
        return reset_peak(self.pid)

    def stop(self) -> int | None:
        """SIGTERM (the service finishes its batch), SIGKILL after 30 s. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def subscriptions_processes(settings: HeraldSettings, *, split: bool) -> list[ServiceProcess]:
    """herald-subscriptions as one process, or split as its README's "Processes" describes: an API process
    (`HERALD_RUN_CONSUMERS=false`), first in the list (the one to send requests to), and one that folds."""
    if not split:
        return [ServiceProcess("subscriptions", settings)]
    return [ServiceProcess("subscriptions", settings, env={"HERALD_RUN_CONSUMERS": "false"}, role="api"),
            ServiceProcess("subscriptions", settings, role="fold")]


async def start_processes(processes: Sequence[ServiceProcess]) -> None:
    for process in processes:
        process.start()
    for process in processes:
        await process.wait_ready()


def stop_processes(processes: Sequence[ServiceProcess]) -> None:
    """Stop each; one that exited with an error says so, with its log's tail."""
    for process in processes:
        code = process.stop()
        if code not in (0, None):
            print(f"herald-{process.name} exited with {code}; log {process.log_path}:\n{process.log_tail()}")


def api_client(url: str, key: str, *, timeout: float = 60) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout,
                             limits=httpx.Limits(max_connections=20, max_keepalive_connections=20))


# Reuse of a filled list across runs: a marker in the run's own database says what is in it.

async def filled(settings: HeraldSettings, list_id: str = LIST) -> Document:
    mongo = make_client(settings, "bench")
    try:
        doc = await mongo[settings.database_name("bench")]["fills"].find_one({"_id": list_id})
        return doc or {"_id": list_id, "members": 0, "unsubscribed": 0}
    finally:
        await mongo.close()


async def record_fill(settings: HeraldSettings, members: int, unsubscribed: int, list_id: str = LIST) -> None:
    mongo = make_client(settings, "bench")
    try:
        await mongo[settings.database_name("bench")]["fills"].replace_one(
            {"_id": list_id}, {"_id": list_id, "members": members, "unsubscribed": unsubscribed}, upsert=True)
    finally:
        await mongo.close()


async def fill_list(settings: HeraldSettings, publisher: EventPublisher, members: int, unsubscribed: int,
                    *, consumer_db: Any, consumer: str, within: float = 7200) -> tuple[int, int, float]:
    """Make the list hold `members` members (person0..), the first `unsubscribed` of them unsubscribed,
    publishing only what an earlier run on this prefix did not, then wait until the consumer `consumer`
    (checkpoints in `consumer_db`) applied it. Returns (members published now, unsubscribed now, seconds)."""
    have = await filled(settings)
    started = time.monotonic()
    total_members = max(members, have["members"])
    total_unsubscribed = max(have["unsubscribed"], min(unsubscribed, total_members))
    new_members = range(have["members"], total_members)
    new_unsubscribed = range(have["unsubscribed"], total_unsubscribed)
    if new_members or new_unsubscribed:
        print(f"filling: {len(new_members):,} members and {len(new_unsubscribed):,} unsubscriptions "
              f"(not measured)", flush=True)
        _, positions = await publish_members(publisher, new_members, unsubscribed=new_unsubscribed,
                                             progress="members")
        await wait_checkpoint(consumer_db, consumer, positions, within=within, what="the fill",
                              interval=2.0)
        await record_fill(settings, total_members, total_unsubscribed)
    return len(new_members), len(new_unsubscribed), time.monotonic() - started


async def cleanup(settings: HeraldSettings, services: Sequence[str], prefixes: Sequence[str] = ()) -> None:
    """Drop the run's databases and delete its topics (after its services stopped: a database in use is not
    dropped). `prefixes`: further topic prefixes the run created."""
    mongo: AsyncMongoClient[Document] = make_client(settings, "bench-cleanup")
    try:
        for service in (*services, "bench"):
            await mongo.drop_database(settings.database_name(service))
    finally:
        await mongo.close()
    admin = AIOKafkaAdminClient(**settings.kafka_client_options(), client_id="bench-cleanup")
    await admin.start()
    try:
        wanted = (settings.topic_prefix, *prefixes)
        doomed = [t for t in await admin.list_topics() if t.startswith(wanted)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


# Figures

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    unexpected: int
    socket_errors: dict[str, int]
    codes: dict[int, int]
    output: str


WRK_LUA = r"""-- written by bench/harness.py: %(what)s
wrk.method = "%(method)s"
%(headers)s
local threads = {}
local expected = %(expected)d

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  codes = {}
end

%(request)s

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, codes_out, non2xx, unexpected = {}, {}, 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("codes")) do
      total[status] = (total[status] or 0) + count
    end
  end
  for status, count in pairs(total) do
    table.insert(codes_out, status .. ":" .. count)
    if status < 200 or status > 299 then non2xx = non2xx + count end
    if status ~= expected then unexpected = unexpected + count end
  end
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%%d seconds=%%.3f p50_ms=%%.3f p90_ms=%%.3f p99_ms=%%.3f max_ms=%%.3f non2xx=%%d " ..
    "unexpected=%%d connect=%%d read=%%d write=%%d timeout=%%d status=%%d codes=%%s\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, non2xx, unexpected, e.connect, e.read, e.write,
    e.timeout, e.status, table.concat(codes_out, ",")))
end
"""

SUBSCRIBE_REQUEST = r"""local run = "%(run)s"
function request()
  counter = counter + 1
  local body = string.format('{"email": "w%%s-%%d-%%d@example.com", "consent": {"method": "bench"}}',
                             run, id, counter)
  return wrk.format(nil, nil, nil, body)
end"""


def wrk_script(path: Path, *, what: str, method: str = "GET", headers: dict[str, str] | None = None,
               expected: int = 200, request: str = "") -> Path:
    header_lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    path.write_text(WRK_LUA % {"what": what, "method": method, "headers": header_lines, "expected": expected,
                               "request": request})
    return path


def run_wrk(url: str, script: Path, *, connections: int, seconds: int, threads: int = 2,
            timeout: str = "30s") -> WrkResult:
    """wrk with a script written by wrk_script; its `done` prints one WRK_RESULT line, parsed here."""
    command = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}",
               "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 120)
    match = re.search(r"^WRK_RESULT (.*)$", done.stdout, re.M)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    fields = dict(item.split("=", 1) for item in match.group(1).split())
    codes = {int(k): int(v) for k, v in (c.split(":") for c in fields["codes"].split(",") if c)}
    requests, seconds_run = int(fields["requests"]), float(fields["seconds"])
    return WrkResult(requests=requests, seconds=seconds_run, rps=requests / seconds_run if seconds_run else 0.0,
                     p50_ms=float(fields["p50_ms"]), p90_ms=float(fields["p90_ms"]),
                     p99_ms=float(fields["p99_ms"]), max_ms=float(fields["max_ms"]), non2xx=int(fields["non2xx"]),
                     unexpected=int(fields["unexpected"]),
                     socket_errors={k: int(fields[k]) for k in ("connect", "read", "write", "timeout")},
                     codes=codes, output=done.stdout)


def status_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, ... of a process in KiB (from /proc/<pid>/status)."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        match = re.match(r"(Vm\w+):\s+(\d+) kB", line)
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def reset_peak(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux: `echo 5 > /proc/<pid>/clear_refs`); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def cpu_seconds_by_program(programs: Sequence[str]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by every running process of each program (its `comm`: "java",
    "ferretdb", "postgres", ...), and by this process as "self"; subtract two of these to see where a
    machine's cores went meanwhile. A process that ended in between is missed (its time left with it)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(programs, 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        name, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if name in used:
            used[name] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15)
    used["self"] = time.process_time()
    return used
