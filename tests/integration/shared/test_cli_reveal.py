"""`herald tail` and `herald dlq list` against the real stack: subscribers' personal data masked by default; shown
with --reveal --staff NAME only once the look is recorded (billing StaffAccessed, what=event_log: once per account
per command), which billing's audit log then shows (PRODUCT.md: every access by platform staff to an account's
data, who and when)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from aiokafka import AIOKafkaProducer

from herald_shared.contract import parse_event, serialize_event
from herald_shared.contract.billing import StaffAccessed
from herald_shared.kafka import EventPublisher, read_from_start
from herald_shared.settings import HeraldSettings
from tests.conftest import dies_with_the_tests, eventually, subprocess_env
from tests.integration.billing.helpers import running_billing
from tests.samples import confirmation_request, sample


def herald(settings: HeraldSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herald_shared.cli", *args], env=subprocess_env(settings),
                          capture_output=True, text=True, timeout=90, check=False)


async def run(settings: HeraldSettings, *args: str) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(herald, settings, *args)
    assert done.returncode == 0, done.stderr
    return done


async def staff_accesses(settings: HeraldSettings) -> list[StaffAccessed]:
    found: list[StaffAccessed] = []
    async for records in read_from_start(settings, [settings.topics("herald.billing")]):
        found += [event for event in (parse_event(r.value) for r in records) if isinstance(event, StaffAccessed)]
    return found


async def test_tail_masks_addresses_and_reveals_them_once_the_look_is_recorded_per_account(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    publisher = EventPublisher(producer, settings.topics)
    await publisher.publish_many([*confirmation_request("acc-r1", "s1", "janis.berzins@example.com"),
                                  sample("SubscriberAdded", "acc-r2")])

    masked = await run(settings, "tail", "herald.subscriptions")
    assert len(masked.stdout.splitlines()) == 3
    assert "janis.berzins" not in masked.stdout and "anna@" not in masked.stdout and "Anna" not in masked.stdout
    assert '"email":"j•••@example.com"' in masked.stdout and '"greeting_name":"•••"' in masked.stdout
    assert await staff_accesses(settings) == []  # looking masked records nothing

    revealed = await run(settings, "tail", "herald.subscriptions", "--reveal", "--staff", "rita")
    assert '"email":"janis.berzins@example.com"' in revealed.stdout and '"first_name":"Anna"' in revealed.stdout
    accesses = await staff_accesses(settings)
    assert sorted((e.account_id, e.payload.staff, e.payload.what, e.producer) for e in accesses) == [
        ("acc-r1", "rita", "event_log", "herald-cli"), ("acc-r2", "rita", "event_log", "herald-cli")]

    # -n: the latest one only, its account's look recorded again (once per command).
    await run(settings, "tail", "herald.subscriptions", "-n", "1", "--reveal", "--staff", "maris")
    assert len([e for e in await staff_accesses(settings) if e.payload.staff == "maris"]) == 1


async def test_follow_records_each_account_seen_later_once(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    """`-f --reveal`: the accounts already on the topic recorded first, then each new account once when its first
    event arrives; a later event of a recorded account records nothing more."""
    publisher = EventPublisher(producer, settings.topics)
    await publisher.publish(sample("SubscriberAdded", "acc-f1"))
    follow = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herald_shared.cli", "tail", "-f", "herald.subscriptions", "--reveal", "--staff", "rita",
        env=subprocess_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=dies_with_the_tests)
    out = follow.stdout
    assert out is not None

    async def next_line() -> str:
        line: bytes = await asyncio.wait_for(out.readline(), 60)
        return line.decode()

    try:
        assert "account=acc-f1" in await next_line()
        await publisher.publish_many([sample("SubscriberAdded", "acc-f2"), sample("SubscriberAdded", "acc-f1")])
        later = [await next_line(), await next_line()]
        assert sorted(line.split("account=")[1].split()[0] for line in later) == ["acc-f1", "acc-f2"]
        assert all('"email":"anna@example.com"' in line for line in later)
    finally:
        follow.terminate()
        await follow.wait()
    assert sorted(e.account_id for e in await staff_accesses(settings)) == ["acc-f1", "acc-f2"]


async def test_dlq_list_masks_a_dead_letter_and_reveals_it_recorded(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    broken: dict[str, Any] = json.loads(serialize_event(sample("SubscriberAdded", "acc-d1")))
    del broken["payload"]["list_id"]
    publisher = EventPublisher(producer, settings.topics)
    await publisher.dead_letter("herald.subscriptions", json.dumps(broken).encode(), "invalid SubscriberAdded",
                                origin="test", consumer="tests", key=b"acc-d1")
    mail = b"From: anna@example.com\n\nhi"
    await publisher.dead_letter("herald.subscriptions", mail, "not JSON", origin="test", consumer="tests",
                                key=b"acc-d1")

    masked = await run(settings, "dlq", "list", "herald.subscriptions")
    assert "anna@" not in masked.stdout and "2 dead-letter entries" in masked.stdout
    assert f"value: <{len(mail)} bytes, not JSON: not shown>" in masked.stdout
    assert await staff_accesses(settings) == []

    revealed = await run(settings, "dlq", "list", "herald.subscriptions", "--reveal", "--staff", "rita")
    assert "anna@example.com" in revealed.stdout
    assert [(e.account_id, e.payload.staff) for e in await staff_accesses(settings)] == [
        ("acc-d1", "rita")]


async def test_a_revealed_look_is_in_the_accounts_audit_log_through_billings_api(
        settings: HeraldSettings, producer: AIOKafkaProducer) -> None:
    async with running_billing(settings) as platform:
        ada = await platform.sign_up("ada")
        await EventPublisher(producer, settings.topics).publish(sample("SubscriberAdded", ada.account_id))
        await run(settings, "tail", "herald.subscriptions", "--reveal", "--staff", "rita")

        async def audit() -> list[dict[str, Any]]:
            answer = await ada.http.get("/v1/account/audit-log")
            assert answer.status_code == 200, answer.text
            return answer.json()["items"]  # type: ignore[no-any-return]

        log = await eventually(audit, lambda items: any(e["kind"] == "staff_access" for e in items),
                               what="the staff access in the audit log")
    assert [(e["staff"], e["what"], e["service"]) for e in log if e["kind"] == "staff_access"] == [
        ("rita", "event_log", "herald-cli")]  # where the look was: the topics, through the CLI
