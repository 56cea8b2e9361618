"""The README's commands as a newcomer runs them: a second `scripts/stack start` is harmless, and
`scripts/run` brings the platform up (topics created), prints the table of what runs where that the README shows,
and stops within 10 s on Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from herald_shared.apikeys import hash_secret
from tests.conftest import ROOT, eventually

STAFF_TOKEN = "e2e-staff-token-0123456789"


def local_env(**extra: str) -> dict[str, str]:
    """The environment without the stack's addresses, so the scripts treat the local stack as their own."""
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def local_stack() -> None:
    status = subprocess.run([ROOT / "scripts" / "stack", "status"], env=local_env(), capture_output=True, text=True,
                            check=False)
    if status.returncode != 0:
        pytest.skip("the suite runs against a Kafka/MongoDB that scripts/stack did not start: " + status.stdout)


def test_a_second_stack_start_is_harmless(local_stack: None) -> None:
    again = subprocess.run([ROOT / "scripts" / "stack", "start"], env=local_env(), capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert "Kafka: already running" in again.stderr
    assert "MongoDB: already running" in again.stderr
    assert again.stdout.startswith("export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:")


@pytest.fixture
async def run_prefix(stack_env: dict[str, str]) -> AsyncIterator[str]:
    prefix = f"run{uuid.uuid4().hex[:8]}."
    yield prefix
    admin = AIOKafkaAdminClient(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack_env["MONGODB_URL"])
    try:
        for name in await mongo.list_database_names():
            if name.startswith(prefix.replace(".", "_")):
                await mongo.drop_database(name)
    finally:
        await mongo.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int, run: int = 3) -> list[int]:
    """A free base port whose next `run - 1` ports are free too, then `count - run` more free ports."""
    while True:
        base = free_port()
        try:
            for offset in range(1, run):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        block = list(range(base, base + run))
        others: list[int] = []
        while len(others) < count - run:
            candidate = free_port()
            if candidate not in (*block, *others):
                others.append(candidate)
        return [*block, *others]


async def _ready(url: str) -> int:
    async with httpx.AsyncClient(timeout=2) as http:
        try:
            return (await http.get(url)).status_code
        except httpx.TransportError:
            return 0


async def test_run_command_brings_up_the_topics_and_services_prints_where_and_stops_on_ctrl_c(
        local_stack: None, run_prefix: str, stack_env: dict[str, str], tmp_path: Path) -> None:
    output = tmp_path / "run.log"
    # billing on `port`, then campaigns, compliance, delivery and subscriptions (folder order)
    port, _, _, _, _, dev_smtp, inbound = free_ports(7, run=5)
    sink = await asyncio.to_thread(output.open, "w")
    env = local_env(HERALD_TOPIC_PREFIX=run_prefix, HERALD_DATABASE_PREFIX=run_prefix.replace(".", "_"),
                    HERALD_RUN_BASE_PORT=str(port), HERALD_DEV_SMTP_PORT=str(dev_smtp),
                    HERALD_INBOUND_SMTP_PORT=str(inbound), HERALD_STAFF_TOKENS=f"rita={hash_secret(STAFF_TOKEN)}")
    process = await asyncio.create_subprocess_exec(  # its own process group: nothing it starts outlives the test
        ROOT / "scripts" / "run", env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)
    sink.close()
    try:
        await eventually(lambda: _read(output), lambda text: "Herald is running" in text, within=180,
                         what="scripts/run to report the platform running")
        admin = AIOKafkaAdminClient(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"])
        await admin.start()
        try:
            topics = {t for t in await admin.list_topics() if t.startswith(run_prefix)}
        finally:
            await admin.close()
        assert {t.removeprefix(run_prefix) for t in topics} >= {"herald.delivery", "herald.delivery.dlq",
                                                                "herald.billing", "herald.subscriptions"}
        assert len({t for t in topics if t.startswith(run_prefix + "herald.")}) == 10
        # Every service is up, with its consumers, MongoDB or tables: folder order from `port`.
        services = ("billing", "campaigns", "compliance", "delivery", "subscriptions")
        for service_port, service in enumerate(services, start=port):
            await eventually(lambda p=service_port: _ready(f"http://127.0.0.1:{p}/readyz"),  # type: ignore[misc]
                             lambda code: code == 200, within=60, what=f"{service} /readyz")
        # A newcomer can read what the platform mails: a confirmation request lands in the development Maildir.
        marker = f"http://127.0.0.1:{port + 4}/confirm/{run_prefix}token"
        await _publish_confirmation_request(stack_env, run_prefix, marker)
        mailbox = ROOT / ".stack" / "mailbox" / "new"
        await eventually(lambda: _mail_containing(mailbox, marker), bool, within=60,
                         what="the confirmation email in .stack/mailbox")
        # An account opened, approved and given a key through the billing API; a list made through the
        # subscriptions API; a campaign written, submitted, approved by staff and queued through the campaigns
        # API: delivery sends it into the development mailbox.
        subject = f"Our {run_prefix} news"
        await _send_a_campaign(run_prefix, *(f"http://127.0.0.1:{p}" for p in (port, port + 1, port + 4)), subject)
        await eventually(lambda: _mail_containing(mailbox, subject), bool, within=90,
                         what="the campaign in .stack/mailbox")
        assert printed_table(await _read(output), port) == readme_table()
        process.send_signal(signal.SIGINT)  # Ctrl-C
        asked = time.monotonic()
        returncode = await asyncio.wait_for(process.wait(), timeout=30)
        stopped_after = time.monotonic() - asked
    finally:
        if process.returncode is None:  # the test failed midway: stop it as Ctrl-C would, then make sure
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left (services, mailbox)
        await process.wait()
    text = await _read(output)
    assert returncode == 0, text
    assert "stopped (the stack keeps running" in text
    assert stopped_after < 10, f"scripts/run took {stopped_after:.1f} s to stop"


def readme_table() -> list[list[str]]:
    """The table of what runs where, as the README shows it (default ports), cell by cell."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```text\n(service .*?)```", readme, re.S)
    assert block, "the README shows the table scripts/run prints"
    return [line.split() for line in block.group(1).strip().splitlines()]


def printed_table(output: str, base_port: int) -> list[list[str]]:
    """The table scripts/run printed, its ports given back as the defaults from 8081 (the README's)."""
    lines = output.splitlines()
    start = next(n for n, line in enumerate(lines) if line.split()[:2] == ["service", "URL"])
    rows = [lines[start], *lines[start + 1:start + 6]]
    default = {str(base_port + i): str(8081 + i) for i in range(5)}
    return [re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{default.get(m.group(1), m.group(1))}", row).split()
            for row in rows]


async def _publish_confirmation_request(stack_env: dict[str, str], prefix: str, confirm_url: str) -> None:
    from herald_shared.contract.subscriptions import ConfirmationRequested
    from herald_shared.kafka import EventPublisher, make_producer
    from herald_shared.settings import HeraldSettings

    settings = HeraldSettings(kafka_bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"], topic_prefix=prefix)
    producer = make_producer(settings, "e2e")
    await producer.start()
    try:
        await EventPublisher(producer, settings.topics).publish(ConfirmationRequested(
            account_id="e2e", producer="subscriptions", payload={
                "list_id": "news", "subscriber_id": "s1", "email": "newcomer@example.org", "list_name": "News",
                "company_name": "E2E Ltd", "confirm_url": confirm_url, "expires_at": "2099-01-01T00:00:00Z"}))
    finally:
        await producer.stop()


async def _send_a_campaign(prefix: str, billing: str, campaigns: str, subscriptions: str, subject: str) -> None:
    """Only the public APIs: sign-up, the staff's approval, a login and an API key (billing); a single opt-in
    list with one subscriber (subscriptions); a campaign, its submission (sent now) and, the account being on
    its trial, the staff's approval of the campaign (campaigns)."""
    staff = {"Authorization": f"Bearer {STAFF_TOKEN}"}
    username, password = f"owner-{prefix}e2e", "a long e2e password"
    async with httpx.AsyncClient(base_url=billing, timeout=20) as bill:
        opened = await bill.post("/v1/accounts", json={
            "company_name": "E2E Ltd", "email": "owner@e2e.example", "username": username, "password": password,
            "accept_terms": True, "age_18": True})
        assert opened.status_code == 201, opened.text
        account_id = opened.json()["account_id"]
        approved = await bill.post(f"/v1/staff/accounts/{account_id}/approval", json={}, headers=staff)
        assert approved.status_code == 200 and approved.json()["review"] == "approved", approved.text
        session = await bill.post("/v1/sessions", json={"username": username, "password": password})
        assert session.status_code == 201, session.text
        issued = await bill.post("/v1/account/api-keys", json={"label": "e2e"},
                                 headers={"Authorization": f"Bearer {session.json()['token']}"})
        assert issued.status_code == 201, issued.text
    headers = {"Authorization": f"Bearer {issued.json()['key']}"}
    async with httpx.AsyncClient(base_url=subscriptions, headers=headers, timeout=20) as subs, \
            httpx.AsyncClient(base_url=campaigns, headers=headers, timeout=20) as camp:
        # A key used before it is projected fails, and failures are throttled (429 after a few: README,
        # HERALD_AUTH_FAILURES_*): asked once a second; a key id's failures are forgotten once it is projected.
        created = await eventually(lambda: subs.post("/v1/lists", json={"list_id": "news", "name": "News",
                                                                         "opt_in": "single"}),
                                   lambda r: r.status_code not in (401, 429), within=60, every=1.0,
                                   what="the API key projected")
        assert created.status_code == 201, created.text
        subscribed = await subs.post("/v1/lists/news/subscribers", json={
            "email": "reader@example.org", "first_name": "Reader", "consent": {"method": "e2e signup form"}})
        assert subscribed.status_code == 201, subscribed.text
        draft = {"campaign_id": "nov", "name": "November", "list_id": "news", "subject": subject,
                 "from_name": "E2E", "from_email": "news@e2e.example",
                 "html_body": '<p>Hello {{ first_name | default("friend") }}</p>'}
        made = await eventually(lambda: camp.post("/v1/campaigns", json=draft),
                                lambda r: r.status_code not in (401, 409, 429), within=60, every=1.0,
                                what="the key and the list projected in campaigns")
        assert made.status_code == 201, made.text
        submitted = await camp.post("/v1/campaigns/nov/submission", json={})
        assert submitted.status_code == 200 and submitted.json()["status"] == "in_review", submitted.text
        approval = await camp.post(f"/v1/staff/campaigns/{account_id}/nov/approval", json={}, headers=staff)
        assert approval.status_code == 200 and approval.json()["status"] == "scheduled", approval.text


async def _mail_containing(folder: Path, text: str) -> bool:
    def scan() -> bool:
        return folder.is_dir() and any(text.encode() in f.read_bytes().replace(b"=\r\n", b"")
                                       for f in folder.iterdir())
    return await asyncio.to_thread(scan)


async def _read(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)
