"""The login throttles and password changes under concurrent requests, on the real stack (billing README, "Audit log
and throttling": after 5 failures for a username, or 30 from one address, within 15 minutes, attempts are refused
unchecked with 429; "Sessions": a password change ends the sessions issued before it). Found broken by the
concurrency review R2 of 2026-12-07: every attempt in flight was checked against the failures counted before it."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from .helpers import PASSWORD, Platform

NEW_PASSWORD = "a brand new passphrase 42"


async def test_thirty_wrong_passwords_at_once_check_five_and_then_refuse_the_right_one(platform: Platform) -> None:
    await platform.sign_up("ada@acme.example")
    # Each from its own address: only the username's throttle is in play.
    guesses = [platform.client(address=(f"198.51.100.{i + 1}", 1000)).post(
        "/v1/sessions", json={"username": "ada@acme.example", "password": f"wrong guess number {i:04d}"})
        for i in range(30)]
    answers = await asyncio.gather(*guesses)
    assert Counter(a.status_code for a in answers) == {401: 5, 429: 25}
    right = await platform.client(address=("192.0.2.1", 1)).post(
        "/v1/sessions", json={"username": "ada@acme.example", "password": PASSWORD})
    assert right.status_code == 429 and right.json()["type"].endswith("/too_many_attempts")


async def test_sixty_usernames_at_once_from_one_address_check_thirty(platform: Platform) -> None:
    attacker = platform.client(address=("203.0.113.99", 1))
    answers = await asyncio.gather(*[attacker.post("/v1/sessions", json={
        "username": f"nobody{i}@example.org", "password": "wrong guess 123456"}) for i in range(60)])
    assert Counter(a.status_code for a in answers) == {401: 30, 429: 30}


async def test_thirty_password_changes_at_once_with_wrong_current_passwords_check_five(platform: Platform) -> None:
    ada = await platform.sign_up("ada@acme.example")
    answers = await asyncio.gather(*[ada.http.put("/v1/account/password", json={
        "current_password": f"guess number {i:04d}", "new_password": NEW_PASSWORD}) for i in range(30)])
    assert Counter(a.status_code for a in answers) == {403: 5, 429: 25}


async def test_two_password_changes_at_once_with_the_right_password_change_it_once(platform: Platform) -> None:
    """Both checked the current password before either was folded: the second would replace the first's new
    password with a session the first had ended."""
    ada = await platform.sign_up("ada@acme.example")
    answers = await asyncio.gather(*[ada.http.put("/v1/account/password", json={
        "current_password": PASSWORD, "new_password": f"{NEW_PASSWORD} {n}"}) for n in range(2)])
    assert sorted(a.status_code for a in answers) == [204, 403], [a.text for a in answers]


async def test_right_passwords_at_once_all_log_in(platform: Platform) -> None:
    """Checks under way hold places in the throttles until they end; right passwords wait for them, unrefused."""
    await platform.sign_up("ada@acme.example")
    answers = await asyncio.gather(*[platform.http.post(
        "/v1/sessions", json={"username": "ada@acme.example", "password": PASSWORD}) for _ in range(20)])
    assert [a.status_code for a in answers] == [201] * 20


async def old_password_logins(platform: Platform, address: str, username: str,
                              change: asyncio.Task[httpx.Response]) -> list[str]:
    """Logins with the old password back to back until the change has answered: the tokens it got."""
    client, tokens = platform.client(address=(address, 1000)), []
    while not change.done():
        answer = await client.post("/v1/sessions", json={"username": username, "password": PASSWORD})
        if answer.status_code == 201:
            tokens.append(answer.json()["token"])
    return tokens


async def test_no_session_opened_with_the_old_password_outlives_a_change_it_raced(platform: Platform) -> None:
    """Logins with the old password back to back from 8 clients for as long as the change takes: those that got a
    session got it before the change, which ends it."""
    for round_ in range(5):
        username = f"racer{round_}@acme.example"
        customer = await platform.sign_up(username)
        change = asyncio.create_task(customer.http.put("/v1/account/password", json={
            "current_password": PASSWORD, "new_password": NEW_PASSWORD}))
        async with asyncio.timeout(60):
            streams = await asyncio.gather(*[old_password_logins(platform, f"198.51.100.{i + 1}", username, change)
                                             for i in range(8)])
        assert (await change).status_code == 204, (await change).text
        tokens = [token for stream in streams for token in stream]
        still_valid = [token for token in tokens if (await platform.client(
            {"Authorization": f"Bearer {token}"}).get("/v1/account")).status_code == 200]
        assert still_valid == [], f"round {round_}: {len(still_valid)} of {len(tokens)} sessions outlived the change"
