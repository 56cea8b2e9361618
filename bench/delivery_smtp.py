"""Messages per second from CampaignQueued to SMTP acceptance, against Postfix's `smtp-sink`, next to
Postfix's own `smtp-source` blasting the same sink in the same run (the physical limit of this machine's
loopback SMTP), and the parts of the cost: rendering with and without DKIM, and the ledger write window. The
audience is given to two fresh services: one sends it unsigned, then one DKIM-signed (`--dkim`: rsa-sha256 2048
by default, ed25519, dual, or none to skip it; issue 16 asks >= 1,000 msg/s with rsa). Each sends it as
`--repeats` campaigns (3) one after the other, each timed alone, and `smtp-source` runs as many times: the
figures are their medians, with every run shown (single runs here move by +-15% from one to the next). The
service runs in this process: its peak RSS while it sends (VmHWM, reset once the audience is projected) is
reported above its RSS before the campaigns.

Connections: 40 by default, and `smtp-source` gets as many sessions. With 20 the service's loop waits on its
round trips (each connection: the relay's answer, the ledger write, the event's acknowledgement) with the CPU
at ~60%: 1,420 msg/s where 40 give 2,200-2,600 on this machine (2026-12-05). A real MTA opens as many to one
relay (Postfix's default concurrency per destination is 20, and its relay transport is often raised).

    eval "$(scripts/stack env)"; .venv/bin/python -m bench.delivery_smtp [--messages 2000] [--connections 40] \
        [--dkim rsa|ed25519|dual|none] [--repeats 3]

Needs Debian's `postfix` package for smtp-sink and smtp-source (installed here when missing and root).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import operator
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client import REGISTRY

from herald_delivery.domain import Member
from herald_delivery.main import Delivery, DeliverySettings
from herald_delivery.render import DkimKey, MessageTokens, Renderer, RenderSettings, compile_campaign
from herald_shared.contract import Event
from herald_shared.contract.billing import AccountApproved, AccountOpened
from herald_shared.contract.campaigns import CampaignContent
from herald_shared.contract.subscriptions import ListCreated, SubscriberAdded, SubscriberConfirmed
from herald_shared.kafka import EventPublisher
from herald_shared.lifecycle import tune_gc
from herald_shared.links import LinkSigner
from herald_shared.mongo import make_client
from tests.conftest import eventually
from tests.samples import campaign_queued

from . import harness

BODY = ("Dear {{ first_name }}, " + "lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 80)[:5000]
SECRET = "bench-only-secret-0123456789"
# Issue 16: unsigned >= 2,000 msg/s and >= 0.1 x smtp-source; with rsa >= 1,000; the unrecorded window kept.
TARGET_UNSIGNED, TARGET_UNSIGNED_RATIO, TARGET_SIGNED, TARGET_WINDOW_P99_MS = 2000, 0.1, 1000, 50


def postfix_tool(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit(f"{name} is missing: apt-get install postfix (Debian)")
    subprocess.run("echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections",
                   shell=True, check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postfix"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def smtp_source_rate(port: int, messages: int, connections: int) -> float:
    """Postfix's smtp-source: `connections` parallel sessions, 5 KB messages, no QUIT between messages."""
    started = time.perf_counter()
    subprocess.run([postfix_tool("smtp-source"), "-s", str(connections), "-l", "5120", "-m", str(messages), "-d",
                    "-f", "bench@acme.example", "-t", "reader@example.org", f"127.0.0.1:{port}"], check=True)
    return messages / (time.perf_counter() - started)


def render_rate(keys: dict[str, list[DkimKey]], count: int) -> float:
    """Campaign messages of 5 KB rendered (and signed with `keys`) per second, on this core."""
    renderer = Renderer(RenderSettings("https://t.example", "bounces.example"), MessageTokens(SECRET),
                        LinkSigner(SECRET, "https://lists.example"), keys)
    content = CampaignContent(subject="Bench", from_name="Acme", from_email="news@acme.example",
                              html_body=f"<p>{BODY}</p><a href='https://acme.example/'>x</a>", text_body=BODY)
    template = compile_campaign("acme", "c1", content, footer=True, settings=renderer.settings)
    # The members and message ids exist before a message is rendered (the expansion made them): not timed.
    work = [(Member(f"s{i}", "news", f"r{i}@example.org", "active", "Ann"), str(uuid.uuid4())) for i in range(count)]
    started = time.perf_counter()
    for member, message_id in work:
        renderer.campaign_message(template, member, message_id)
    return count / (time.perf_counter() - started)


def new_key(kind: str, selector: str) -> DkimKey:
    """A fresh key made by openssl: "rsa" (2048 bits) or "ed25519"."""
    with tempfile.TemporaryDirectory() as tmp:
        key_path = Path(tmp) / "k.pem"
        command = ["openssl", "genrsa", "-out", str(key_path), "2048"] if kind == "rsa" else \
            ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key_path)]
        subprocess.run(command, check=True, capture_output=True)
        return DkimKey("acme.example", selector, key_path.read_bytes())


def render_rates(messages: int) -> tuple[float, float]:
    """Messages rendered per second without and with a 2048-bit RSA DKIM signature (OpenSSL)."""
    return render_rate({}, messages), render_rate({"acme.example": [new_key("rsa", "s1")]}, messages)


def histogram_quantile(name: str, quantile: float) -> float:
    """A quantile from a Prometheus histogram's cumulative buckets (upper bound of the bucket)."""
    buckets = sorted((float(s.labels["le"]), s.value) for m in REGISTRY.collect() if m.name == name
                     for s in m.samples if s.name == f"{name}_bucket")
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= quantile * total:
            return bound
    return float("nan")


def sent_so_far() -> float:
    """Campaign messages the relay accepted, by this process's `herald_delivery_messages_total`."""
    return REGISTRY.get_sample_value("herald_delivery_messages_total", {"kind": "campaign", "outcome": "sent"}) or 0.0


async def sent_since(before: float) -> float:
    return sent_so_far() - before


DKIM_KEYS = {"rsa": ("rsa",), "ed25519": ("ed25519",), "dual": ("ed25519", "rsa"), "none": ()}
DKIM_NAMES = {"rsa": "rsa-sha256 2048", "ed25519": "ed25519-sha256", "dual": "ed25519-sha256 + rsa-sha256 2048"}


async def herald_rates(port: int, messages: int, connections: int, repeats: int,
                       keys_dir: Path | None = None) -> tuple[list[float], dict[str, list[float]], dict[str, int]]:
    """Messages per second of each of `repeats` campaigns to the same audience, sent one after the other (the
    ledger holding every outcome of one before the next is queued), and the memory in KiB: RSS before the
    first campaign, its peak while they are sent. `keys_dir`: the DKIM keys the service signs acme.example's
    mail with."""
    run = uuid.uuid4().hex[:8]
    settings = DeliverySettings(topic_prefix=f"bench{run}.", database_prefix=f"bench{run}_",
                                HERALD_LINK_SECRET=SECRET, HERALD_SMTP_HOST="127.0.0.1", HERALD_SMTP_PORT=port,
                                HERALD_SEND_CONCURRENCY=connections, HERALD_INBOUND_SMTP_PORT=0,
                                HERALD_SEND_POLL_SECONDS=0.05, HERALD_DKIM_KEYS_DIR=keys_dir)
    service = Delivery(settings)
    await service.start()
    tune_gc()  # as the service's entry point does once it has started (herald_shared.lifecycle.run_service)
    try:
        publisher = EventPublisher(service.producer, settings.topics)
        setup: list[Event] = [
            AccountOpened(account_id="acme", producer="billing", payload={
                "company_name": "Acme", "registered_email": "owner@acme.example", "main_username": "o",
                "terms_accepted_at": "2026-11-01T00:00:00Z"}),
            AccountApproved(account_id="acme", producer="billing", payload={"reviewer": "bench"}),
            ListCreated(account_id="acme", producer="subscriptions",
                        payload={"list_id": "news", "name": "News", "opt_in": "single"})]
        for i in range(messages):
            address = f"r{i}@example.org"
            setup.append(SubscriberAdded(account_id="acme", producer="subscriptions", payload={
                "list_id": "news", "subscriber_id": f"s{i}", "email": address, "first_name": "Ann",
                "email_sha256": hashlib.sha256(address.encode()).hexdigest(), "opt_in": "single",
                "consent": {"source": "api", "collected_at": "2026-11-01T00:00:00Z", "method": "bench"}}))
            setup.append(SubscriberConfirmed(account_id="acme", producer="subscriptions", payload={
                "list_id": "news", "subscriber_id": f"s{i}", "method": "single_opt_in"}))
        for start in range(0, len(setup), 1000):
            await publisher.publish_many(setup[start:start + 1000])
        del setup  # the bench's own copies of the events, not the service's memory
        members = service.db["members"]
        await eventually(lambda: members.count_documents({"status": "active"}), lambda n: n >= messages,
                         within=3600, what="the audience projection (not measured)")
        outcomes = service.db["outcomes"]
        memory = {"before": harness.status_kib()["VmRSS"], "peak_reset": harness.reset_peak()}
        rates: list[float] = []
        cpu: dict[str, list[float]] = {}
        for n in range(1, repeats + 1):
            sent_before = sent_so_far()
            started, cpu_before = time.perf_counter(), harness.cpu_seconds_by_program(PROGRAMS)
            await publisher.publish(campaign_queued(
                "acme", f"bench{n}", text_body=BODY, html_body=f"<p>{BODY}</p><a href='https://acme.example/'>x</a>"))
            # Watched through the sender's own counter (in this process): counting the ledger while it is
            # written would scan the outcomes table on FerretDB ten times a second and slow the run it measures.
            await eventually(functools.partial(sent_since, sent_before), functools.partial(operator.le, messages),
                             within=3600, what="every message accepted by the sink")
            rates.append(messages / (time.perf_counter() - started))
            cpu_after = harness.cpu_seconds_by_program(PROGRAMS)
            for program, seconds in cpu_after.items():
                cpu.setdefault(program, []).append((seconds - cpu_before[program]) / messages * 1e6)
            # Then the ledger must hold every outcome (not timed).
            await eventually(lambda: outcomes.count_documents({"outcome": "sent"}),
                             functools.partial(operator.le, messages * n),
                             within=600, what="every outcome recorded in the ledger")
        memory["peak"] = harness.status_kib()["VmHWM"]
        return rates, cpu, memory
    finally:
        await service.stop()
        # Only once nothing uses it: FerretDB 1.24 (SQLite) dies of SIGBUS when a database in use is dropped.
        cleanup = make_client(settings, "bench-cleanup")
        await cleanup.drop_database(settings.database_name("delivery"))
        await cleanup.close()


def start_sink(port: int) -> subprocess.Popen[bytes]:
    sink = subprocess.Popen([postfix_tool("smtp-sink"), "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:  # ready when it accepts a connection
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return sink
        except OSError:
            if time.monotonic() > deadline or sink.poll() is not None:
                sink.kill()
                raise SystemExit("smtp-sink did not start") from None
            time.sleep(0.05)


# The programs a campaign's messages cost CPU in, besides the service ("self": this process, every thread).
PROGRAMS = ("ferretdb", "postgres", "java", "smtp-sink")
PROGRAM_NAMES = {"self": "the service", "ferretdb": "FerretDB", "postgres": "PostgreSQL", "java": "Kafka",
                 "smtp-sink": "smtp-sink"}


def cpu_shares(cpu: dict[str, list[float]]) -> str:
    """Microseconds of CPU a message, by program, and their sum."""
    medians = {program: statistics.median(values) for program, values in cpu.items()}
    parts = ", ".join(f"{PROGRAM_NAMES[program]} {us:,.0f} us" for program, us in
                      sorted(medians.items(), key=lambda item: -item[1]))
    return f"{parts}; {sum(medians.values()):,.0f} us in all"


def runs(rates: list[float]) -> str:
    return " / ".join(f"{rate:,.0f}" for rate in rates)


def main(messages: int, connections: int, dkim: str, repeats: int) -> None:
    port = free_port()
    sink = start_sink(port)
    signed_rates: list[float] = []
    signed_cpu: dict[str, list[float]] = {}
    try:
        sources = [smtp_source_rate(port, max(messages, 20_000), connections) for _ in range(repeats)]
        herald_rates_, cpu, memory = asyncio.run(herald_rates(port, messages, connections, repeats))
        if DKIM_KEYS[dkim]:
            with tempfile.TemporaryDirectory() as keys_dir:
                for n, kind in enumerate(DKIM_KEYS[dkim]):
                    key = new_key(kind, f"k{n}")
                    (Path(keys_dir) / f"k{n}._domainkey.acme.example.pem").write_bytes(key.private_key_pem)
                signed_rates, signed_cpu, _ = asyncio.run(
                    herald_rates(port, messages, connections, repeats, Path(keys_dir)))
    finally:
        sink.terminate()
        sink.wait()
    source, herald = statistics.median(sources), statistics.median(herald_rates_)
    signed_rate = statistics.median(signed_rates) if signed_rates else None
    plain, signed = render_rates(messages)
    window_p50 = histogram_quantile("herald_delivery_unrecorded_window_seconds", 0.5)
    window_p99 = histogram_quantile("herald_delivery_unrecorded_window_seconds", 0.99)
    smtp_p50 = histogram_quantile("herald_delivery_smtp_seconds", 0.5)
    print(f"smtp-source -s {connections} -l 5120 -d into smtp-sink: {source:,.0f} msg/s (the physical limit; "
          f"median of {runs(sources)})")
    met = herald >= TARGET_UNSIGNED and herald / source >= TARGET_UNSIGNED_RATIO
    print(f"Herald, CampaignQueued -> SMTP acceptance, {messages:,} x 5 KB over {connections} connections: "
          f"{herald:,.0f} msg/s = {herald / source:.3f} x smtp-source (target >= {TARGET_UNSIGNED:,} msg/s and "
          f">= {TARGET_UNSIGNED_RATIO} x smtp-source: {harness.verdict(met)}); median of {runs(herald_rates_)}")
    print(f"where the machine's CPU went, a message sent, unsigned (median of the campaigns): {cpu_shares(cpu)}")
    if signed_cpu:
        print(f"  the same with DKIM {DKIM_NAMES[dkim]}: {cpu_shares(signed_cpu)}")
    if signed_rate is not None:
        target = (f"target >= {TARGET_SIGNED:,} msg/s with rsa: {harness.verdict(signed_rate >= TARGET_SIGNED)}"
                  if dkim == "rsa" else f"the target, >= {TARGET_SIGNED:,} msg/s, is for rsa alone")
        print(f"Herald with DKIM {DKIM_NAMES[dkim]}, the same campaign: {signed_rate:,.0f} msg/s = "
              f"{signed_rate / herald:.2f} x unsigned ({target}); median of {runs(signed_rates)}")
    print(f"rendering alone: {plain:,.0f} msg/s unsigned, {signed:,.0f} msg/s with DKIM rsa-sha256 2048 (OpenSSL)")
    # The histogram's bucket bounds: p99 is at most the bound given (5, 10, 25, 50, 100 ms...).
    print(f"unrecorded window (relay 250 -> ledger written): p50 <= {window_p50 * 1000:.1f} ms, "
          f"p99 <= {window_p99 * 1000:.1f} ms (target p99 <= {TARGET_WINDOW_P99_MS} ms: "
          f"{harness.verdict(window_p99 * 1000 <= TARGET_WINDOW_P99_MS)}); "
          f"SMTP transaction p50 <= {smtp_p50 * 1000:.1f} ms")
    peak = "peak" if memory["peak_reset"] else "peak (VmHWM could not be reset: since the process started)"
    print(f"memory while sending: RSS {memory['before'] / 1024:,.0f} MiB before the campaigns, {peak} "
          f"{memory['peak'] / 1024:,.0f} MiB (+{(memory['peak'] - memory['before']) / 1024:,.0f} MiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--dkim", choices=sorted(DKIM_KEYS), default="rsa",
                        help="the keys of the signed run (none: no signed run)")
    parser.add_argument("--repeats", type=int, default=3, help="campaigns (and smtp-source runs) per figure")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    main(args.messages, args.connections, args.dkim, args.repeats)
