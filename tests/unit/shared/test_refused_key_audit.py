"""A refused API key of a known account goes to that account's audit log (PRODUCT.md: "Every login and login
attempt is written to an audit log (who, when, from where, success or not)"): the refusing service publishes its own
event of it, bounded per key id, beside the answer (herald_shared.http.RefusedKeys)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import Depends

from herald_shared import http
from herald_shared.apikeys import KeyHolder
from herald_shared.contract import Event, parse_event, serialize_event
from herald_shared.contract.subscriptions import ApiKeyRefusedBySubscriptions
from herald_shared.http import RefusedKeys, api_app, api_key_account, problems
from herald_shared.throttle import CredentialAttempts

ACTIVE, REVOKED = "0123456789abcdef", "fedcba9876543210"  # account acme's keys
GOOD_KEY = f"hk_{ACTIVE}.the-right-secret"
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


class Keys:
    """Account acme's two keys, one revoked; `per_key` failed attempts on a key id within 15 minutes throttle it."""

    def __init__(self, per_key: int = 5) -> None:
        self.attempts = CredentialAttempts.api_keys(1000, timedelta(minutes=5), per_key, timedelta(minutes=15))

    async def authenticate(self, key: str, *, remembered_only: bool = False) -> str | None:
        return "acme" if key == GOOD_KEY and not remembered_only else None

    async def holder(self, key_id: str) -> KeyHolder | None:
        return {ACTIVE: KeyHolder("acme", revoked=False), REVOKED: KeyHolder("acme", revoked=True)}.get(key_id)


class Published:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, event: Event) -> object:
        self.events.append(event)
        return None


class Failing:
    async def publish(self, event: Event) -> object:
        raise ConnectionError("the event log is away")


class Stuck:
    """A publish that never completes (a broker that does not answer)."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def publish(self, event: Event) -> object:
        self.asked.set()
        await asyncio.Event().wait()
        return None


def audited_app(publisher: Any, keys: Keys | None = None) -> tuple[httpx.AsyncClient, RefusedKeys, list[datetime]]:
    """An app with one route taking an API key and auditing refusals; the clock (`now[0]`) to move."""
    keys = keys or Keys()
    now = [T0]
    refusals = RefusedKeys(keys, publisher, ApiKeyRefusedBySubscriptions, "subscriptions")
    app = api_app("Test", "A test app.")
    account = api_key_account(keys, clock=lambda: now[0], refusals=refusals)

    @app.get("/v1/lists", responses=problems(401, 429))
    async def lists(account_id: str = Depends(account)) -> dict[str, str]:
        return {"account_id": account_id}

    @app.get("/v1/lists/{list_id}", responses=problems(401, 429))
    async def one_list(list_id: str, account_id: str = Depends(account)) -> dict[str, str]:
        return {"account_id": account_id, "list_id": list_id}

    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.23", 4711)),
                               base_url="http://test", headers={"User-Agent": "crm-sync/3"})
    return client, refusals, now


def summary(event: Event) -> tuple[object, ...]:
    p = event.payload
    return (event.type, event.account_id, event.producer, event.occurred_at, p.key_id, p.reason,  # type: ignore[attr-defined]
            p.ip, p.user_agent, p.path)  # type: ignore[attr-defined]


async def test_a_revoked_key_and_a_wrong_secret_of_a_known_key_are_recorded_for_its_account_never_the_secret() -> None:
    published = Published()
    client, refusals, _ = audited_app(published)
    async with client:
        assert (await client.get("/v1/lists", headers={"Authorization": f"Bearer {GOOD_KEY}"})).status_code == 200
        assert (await client.get("/v1/lists", headers={"X-API-Key": f"hk_{REVOKED}.its-old-secret"})).status_code == 401
        assert (await client.get("/v1/lists?x=1", headers={"X-API-Key": f"hk_{ACTIVE}.a-guess"})).status_code == 401
    await refusals.drain()
    assert [summary(e) for e in published.events] == [
        ("ApiKeyRefusedBySubscriptions", "acme", "subscriptions", T0, REVOKED, "revoked_key", "198.51.100.23",
         "crm-sync/3", "/v1/lists"),
        ("ApiKeyRefusedBySubscriptions", "acme", "subscriptions", T0, ACTIVE, "wrong_secret", "198.51.100.23",
         "crm-sync/3", "/v1/lists")]
    wire = " ".join(e.model_dump_json() for e in published.events)
    assert "its-old-secret" not in wire and "a-guess" not in wire


async def test_a_nul_in_the_path_is_not_carried_into_the_event() -> None:
    """The contract refuses a NUL in any text (no read model stores one): the event must stay one consumers take."""
    published = Published()
    client, refusals, _ = audited_app(published)
    async with client:
        assert (await client.get("/v1/lists/a%00b", headers={"X-API-Key": f"hk_{ACTIVE}.a-guess"})).status_code == 401
    await refusals.drain()
    [event] = published.events
    assert event.payload.path == "/v1/lists/a\ufffdb"  # type: ignore[attr-defined]
    assert parse_event(serialize_event(event)) == event


async def test_an_unknown_key_id_a_malformed_key_or_no_key_is_recorded_for_nobody() -> None:
    published = Published()
    client, refusals, _ = audited_app(published)
    async with client:
        for headers in ({"X-API-Key": "hk_9999999999999999.a-guess"}, {"X-API-Key": "not-a-key"}, {}):
            assert (await client.get("/v1/lists", headers=headers)).status_code == 401
    await refusals.drain()
    assert published.events == []


async def test_a_throttled_key_ids_unchecked_refusals_are_recorded_once_per_window() -> None:
    """1,000 guesses on a throttled key id are not 1,000 events: its checked failures (the throttle's limit), then
    one unchecked refusal per window."""
    published = Published()
    client, refusals, now = audited_app(published, Keys(per_key=2))
    async with client:
        answers = [(await client.get("/v1/lists", headers={"X-API-Key": f"hk_{ACTIVE}.guess-{n}"})).status_code
                   for n in range(1000)]
        await refusals.drain()
        assert answers == [401, 401] + [429] * 998
        assert [e.payload.reason for e in published.events] == [  # type: ignore[attr-defined]
            "wrong_secret", "wrong_secret", "throttled_key"]
        now[0] += timedelta(minutes=14)  # still within the window of the one recorded
        assert (await client.get("/v1/lists", headers={"X-API-Key": f"hk_{ACTIVE}.late"})).status_code == 429
        await refusals.drain()
        assert len(published.events) == 3
        now[0] += timedelta(minutes=1)  # a window later: the same again
        for n in range(100):
            await client.get("/v1/lists", headers={"X-API-Key": f"hk_{ACTIVE}.later-{n}"})
        await refusals.drain()
    assert [(e.payload.reason, e.occurred_at) for e in published.events[3:]] == [  # type: ignore[attr-defined]
        ("wrong_secret", now[0]), ("wrong_secret", now[0]), ("throttled_key", now[0])]


async def test_a_refusal_from_a_throttled_address_is_recorded_for_the_key_it_names() -> None:
    published = Published()
    keys = Keys()
    keys.attempts = CredentialAttempts.api_keys(1, timedelta(minutes=5), 100, timedelta(minutes=15))
    client, refusals, _ = audited_app(published, keys)
    async with client:
        assert (await client.get("/v1/lists", headers={"X-API-Key": "hk_9999999999999999.g"})).status_code == 401
        for _ in range(3):  # the right key too, not yet verified by this process
            assert (await client.get("/v1/lists", headers={"X-API-Key": GOOD_KEY})).status_code == 429
    await refusals.drain()
    assert [(e.payload.key_id, e.payload.reason) for e in published.events] == [  # type: ignore[attr-defined]
        (ACTIVE, "throttled_ip")]


async def test_a_failing_publish_still_answers_401_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="herald_shared.http")
    client, refusals, _ = audited_app(Failing())
    async with client:
        answer = await client.get("/v1/lists", headers={"X-API-Key": f"hk_{REVOKED}.its-old-secret"})
    await refusals.drain()
    assert answer.status_code == 401 and answer.json()["type"].endswith("/unauthorised")
    failures = [r for r in caplog.records if r.getMessage() == "API key refusal not audited"]
    assert [(r.levelno, r.key_id, r.exc_info is not None) for r in failures] == [  # type: ignore[attr-defined]
        (logging.ERROR, REVOKED, True)]


async def test_a_refusal_does_not_wait_for_its_publish_and_a_stopping_service_gives_it_up(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(http, "REFUSALS_DRAIN_SECONDS", 0.01)
    stuck = Stuck()
    client, refusals, _ = audited_app(stuck)
    async with client:
        answer = await asyncio.wait_for(
            client.get("/v1/lists", headers={"X-API-Key": f"hk_{ACTIVE}.a-guess"}), timeout=5)
    assert answer.status_code == 401
    await asyncio.wait_for(stuck.asked.wait(), timeout=5)
    await asyncio.wait_for(refusals.close(), timeout=5)
    await refusals.drain()  # the given-up publish is cancelled: nothing is left running
    assert [r.count for r in caplog.records  # type: ignore[attr-defined]
            if r.getMessage() == "API key refusals not audited: the service is stopping"] == [1]
