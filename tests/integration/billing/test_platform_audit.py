"""Login attempts naming no user are audited (PRODUCT.md: "Every login and login attempt is written to an audit log
(who, when, from where, success or not)") in the platform's audit log, not in an account's: read by staff (each
read audited), bounded against a flood of made-up usernames (per address and per hour) and kept 90 days."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from herald_shared.settings import HeraldSettings

from .helpers import Platform, running_billing


async def staff_read(platform: Platform, path: str = "/v1/staff/platform-audit-log",
                     **params: Any) -> dict[str, Any]:
    answer = await platform.staff().get(path, params={"limit": 200, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def attempts(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["result"], e["reason"], e["username"], e["ip"], e["user_agent"]) for e in items if e["kind"] == "login"]


async def test_a_login_for_a_username_nobody_has_is_in_the_platform_audit_log_that_staff_read(
        platform: Platform) -> None:
    ada = await platform.sign_up("ada")
    stuffer = platform.client(address=("198.51.100.77", 1))
    typo = await stuffer.post("/v1/sessions", json={"username": " AdaA", "password": "guess guess guess"},
                              headers={"User-Agent": "stuffer/2"})
    assert typo.status_code == 401
    long_name = "N" * 300  # not valid (422), and no user: its first 100 characters are kept
    malformed = await stuffer.post("/v1/sessions", json={"username": long_name, "password": ""},
                                   headers={"User-Agent": "x" * 1000})
    assert malformed.status_code == 422

    log = await staff_read(platform)
    assert attempts(log["items"]) == [("failure", "unknown_user", " AdaA", "198.51.100.77", "stuffer/2"),
                                      ("failure", "malformed", "N" * 100, "198.51.100.77", "x" * 256)]
    assert [(e["kind"], e["staff"], e["what"]) for e in log["items"][2:]] == [
        ("staff_access", "rita", "platform_audit_log")]
    # Paged by its keys: one at a time, from after the last one read.
    first = await staff_read(platform, limit=1)
    second = await staff_read(platform, limit=1, cursor=first["next_cursor"])
    assert [e["id"] for e in first["items"] + second["items"]] == [e["id"] for e in log["items"][:2]]
    since = await staff_read(platform, since=log["items"][1]["at"])
    assert since["items"][0]["id"] == log["items"][1]["id"]
    # Not in any account's log: ada's has her own login only.
    ada_log = (await ada.http.get("/v1/account/audit-log")).json()["items"]
    assert [(e["kind"], e["result"], e["username"]) for e in ada_log] == [("login", "success", "ada")]


async def test_a_flood_of_made_up_usernames_is_counted_and_written_only_up_to_the_hourly_bound(
        settings: HeraldSettings) -> None:
    now = datetime.fromisoformat("2026-12-07T10:15:00+00:00")
    async with running_billing(settings, clock=lambda: now, HERALD_BILLING_PLATFORM_AUDIT_ATTEMPTS_PER_HOUR=12,
                               HERALD_BILLING_PLATFORM_AUDIT_DAYS=90) as platform:
        one_address = platform.client(address=("198.51.100.10", 1))
        for n in range(33):  # the address throttle refuses from the 31st on, unchecked (locked)
            answer = await one_address.post("/v1/sessions", json={"username": f"made-up-{n}", "password": "x" * 12})
            assert answer.status_code == (401 if n < 30 else 429)
        for n in range(4):
            spread = platform.client(address=(f"192.0.2.{n}", 1))
            assert (await spread.post("/v1/sessions", json={"username": f"other-{n}", "password": "x" * 12})
                    ).status_code == 401

        log = await staff_read(platform)
        # 10 from the one address (its bound an hour), then the others' up to the hour's 12.
        assert [e["username"] for e in log["items"] if e["kind"] == "login"] == [
            *(f"made-up-{n}" for n in range(10)), "other-0", "other-1"]
        [hour] = (await staff_read(platform, "/v1/staff/platform-audit-log/hours"))["items"]
        assert (hour["hour"], hour["attempts"], hour["itemised"], hour["reasons"]) == (
            "2026-12-07T10:00:00+00:00", 37, 12, {"unknown_user": 34, "locked": 3})
        stored = [doc async for doc in platform.service.db["platform_audit"].find({})]
        assert len([d for d in stored if d["kind"] == "login"]) == 12

        # Kept 90 days: the retention clock deletes what is older, staff reads included.
        now += timedelta(days=90) - timedelta(microseconds=1)
        await platform.service.service.purge_due()
        assert len([doc async for doc in platform.service.db["platform_audit"].find({})]) == len(stored)
        now += timedelta(hours=1)  # the hour 10:00 to 11:00 ended 90 days ago
        await platform.service.service.purge_due()
        assert [doc async for doc in platform.service.db["platform_audit"].find({})] == []
        assert (await staff_read(platform, "/v1/staff/platform-audit-log/hours"))["items"] == []


async def test_concurrent_attempts_opening_an_hour_are_each_counted_and_the_hours_bound_holds(
        settings: HeraldSettings) -> None:
    """30 attempts at once, from 30 addresses, in a new hour: each answered 401 (two upserts of the hour had failed
    on its `_id`, a 500), each counted (concurrent `$inc`s had lost counts), and exactly the bound written."""
    now = [datetime.fromisoformat("2026-12-07T10:15:00+00:00")]
    async with running_billing(settings, clock=lambda: now[0],
                               HERALD_BILLING_PLATFORM_AUDIT_ATTEMPTS_PER_HOUR=5) as platform:
        for hour in range(2):
            now[0] += timedelta(hours=1)

            async def attempt(n: int, hour: int = hour) -> int:
                client = platform.client(address=(f"203.0.{hour}.{n}", 1))
                answer = await client.post("/v1/sessions", json={"username": f"ghost-{hour}-{n}",
                                                                 "password": "guess guess guess"})
                return answer.status_code

            assert await asyncio.gather(*(attempt(n) for n in range(30))) == [401] * 30
            counted = (await staff_read(platform, "/v1/staff/platform-audit-log/hours",
                                        since=now[0].replace(minute=0).isoformat()))["items"]
            assert [(h["attempts"], h["itemised"]) for h in counted] == [(30, 5)], counted
            written = [e for e in (await staff_read(platform, since=now[0].replace(minute=0).isoformat()))["items"]
                       if e["kind"] == "login"]
            assert len(written) == 5
