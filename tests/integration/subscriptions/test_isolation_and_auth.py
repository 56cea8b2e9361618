"""Account A can never read or change account B's data; every call needs an active API key, and guessing keys
is throttled (issue 20) without locking a key's owner out."""

from __future__ import annotations

import secrets

import httpx
from prometheus_client import REGISTRY

from herald_shared.apikeys import new_api_key
from herald_shared.contract.billing import ApiKeyIssued, ApiKeyRevoked
from herald_shared.http import PROBLEM
from tests.conftest import eventually
from tests.integration.subscriptions.conftest import Platform


async def test_one_account_cannot_see_or_change_another_accounts_data(platform: Platform) -> None:
    acme, rival = await platform.tenant("acme"), await platform.tenant("rival")
    await acme.create_list("news")
    anna = (await acme.subscribe("anna@example.com")).json()["subscriber_id"]

    assert (await rival.http.get("/v1/lists")).json() == {"items": [], "next_cursor": None}
    assert (await rival.http.get("/v1/lists/news")).status_code == 404
    assert (await rival.http.get("/v1/lists/news/subscribers")).status_code == 404
    assert (await rival.http.get(f"/v1/subscribers/{anna}")).status_code == 404
    assert (await rival.http.post(f"/v1/subscribers/{anna}/unsubscribe")).status_code == 404
    assert (await rival.http.patch("/v1/lists/news", json={"name": "Mine"})).status_code == 404
    assert (await rival.http.delete("/v1/lists/news")).status_code == 404
    assert (await rival.subscribe("spy@example.com", list_id="news")).status_code == 404
    assert (await rival.http.get("/v1/gdpr/export", params={"email": "anna@example.com"})).json()["memberships"] == []
    assert (await rival.http.post("/v1/gdpr/erase", json={"email": "anna@example.com"})).json() == {
        "erased_memberships": 0}

    # The same list id in another account is another list.
    await rival.create_list("news")
    assert (await acme.http.get(f"/v1/subscribers/{anna}")).json()["status"] == "active"
    assert (await acme.http.get("/v1/lists/news")).json()["counts"]["active"] == 1
    assert (await rival.http.get("/v1/lists/news")).json()["counts"]["active"] == 0


async def test_requests_without_a_valid_key_are_refused(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    anonymous = await acme.http.get("/v1/lists", headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    wrong = await acme.http.get("/v1/lists", headers={"Authorization": "Bearer hk_0000.nope"})
    assert wrong.status_code == 401
    via_header = await acme.http.get("/v1/lists", headers={"Authorization": "", "X-API-Key": acme.key})
    assert via_header.status_code == 200
    # Both sent: Authorization wins and X-API-Key is not looked at (documented in the OpenAPI document).
    both = await acme.http.get("/v1/lists", headers={"X-API-Key": "hk_0000.wrong"})
    assert both.status_code == 200
    wrong_bearer = await acme.http.get("/v1/lists", headers={"Authorization": "Bearer hk_0000.nope",
                                                             "X-API-Key": acme.key})
    assert wrong_bearer.status_code == 401

    key_id = acme.key.removeprefix("hk_").split(".")[0]
    await platform.publisher.publish(ApiKeyRevoked(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
        "key_id": key_id, "revoked_by": "owner"}))
    await eventually(lambda: platform.service.apikeys.authenticate(acme.key), lambda acc: acc is None,
                     what="revocation projected")
    assert (await acme.http.get("/v1/lists")).status_code == 401


async def test_an_unknown_key_id_takes_as_long_to_refuse_as_a_wrong_secret(platform: Platform) -> None:
    """No timing tells a valid key id from an invalid one: both verify a scrypt hash before answering 401."""
    import time

    acme = await platform.tenant("acme")
    key_id = acme.key.removeprefix("hk_").split(".")[0]

    async def refused_in(key: str) -> float:
        started = time.perf_counter()
        answer = await acme.http.get("/v1/lists", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 401 and answer.json()["type"].endswith("/unauthorised")
        return time.perf_counter() - started

    wrong_secret = min([await refused_in(f"hk_{key_id}.wrong{n}") for n in range(3)])
    unknown_id = min([await refused_in(f"hk_0000000000000000.wrong{n}") for n in range(3)])
    assert unknown_id > wrong_secret / 3, (unknown_id, wrong_secret)


def from_address(platform: Platform, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=platform.service.app, client=(address, 4711)),
                             base_url="http://subs")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("herald_api_key_refusals_total", {"reason": reason}) or 0.0


async def test_key_guessing_from_one_address_gets_429_with_retry_after_after_the_limit(platform: Platform) -> None:
    acme = await platform.tenant("acme")
    limit = platform.settings.auth_failures_per_ip  # the production default: 20 in 5 minutes
    before = refusals("throttled_ip")
    async with from_address(platform, "198.51.100.23") as guesser:
        guesses = [await guesser.get("/v1/lists", headers=bearer(f"hk_{secrets.token_hex(8)}.guess{n}"))
                   for n in range(limit)]
        assert [g.status_code for g in guesses] == [401] * limit
        throttled = await guesser.get("/v1/lists", headers=bearer(f"hk_{secrets.token_hex(8)}.guess"))
        # Everything from the address is refused while it is throttled, but a key this process has verified
        # (others' guesses behind the same NAT lock nobody out who already got in).
        with_the_right_key = await guesser.get("/v1/lists", headers=bearer(acme.key))
    assert throttled.status_code == 429 and throttled.headers["content-type"] == PROBLEM, throttled.text
    assert 0 < int(throttled.headers["Retry-After"]) <= platform.settings.auth_failures_per_ip_window
    assert with_the_right_key.status_code == 200, with_the_right_key.text
    assert refusals("throttled_ip") - before == 1
    assert (await acme.http.get("/v1/lists")).status_code == 200  # from another address


async def test_guessing_on_one_key_id_gets_429_but_its_owner_with_the_right_key_still_gets_through(
        platform: Platform) -> None:
    acme = await platform.tenant("acme")
    await acme.create_list("news")  # the owner's key is in use (verified by this process)
    key_id = acme.key.removeprefix("hk_").split(".")[0]
    limit = platform.settings.auth_failures_per_key  # the production default: 5 in 15 minutes
    before = refusals("throttled_key")
    for n in range(limit):  # from as many addresses: the key id is what counts
        async with from_address(platform, f"203.0.113.{n}") as guesser:
            assert (await guesser.get("/v1/lists", headers=bearer(f"hk_{key_id}.guess{n}"))).status_code == 401
    async with from_address(platform, "203.0.113.99") as guesser:
        throttled = await guesser.get("/v1/lists", headers=bearer(f"hk_{key_id}.guess"))
        via_header = await guesser.get("/v1/lists", headers={"X-API-Key": f"hk_{key_id}.another-guess"})
    for answer in (throttled, via_header):
        assert answer.status_code == 429 and answer.json()["type"].endswith("/too_many_attempts"), answer.text
        assert 0 < int(answer.headers["Retry-After"]) <= platform.settings.auth_failures_per_key_window
    assert refusals("throttled_key") - before == 2

    assert (await acme.http.get("/v1/lists/news")).status_code == 200
    assert (await acme.subscribe("ann@example.org")).status_code == 201


async def test_a_new_key_used_before_it_was_projected_is_not_kept_throttled_once_it_is(platform: Platform) -> None:
    """Its id's failures were its owner's (ids are random): forgotten when the key is issued."""
    await platform.tenant("acme")
    key_id, key, key_hash = new_api_key()
    async with from_address(platform, "192.0.2.44") as eager:
        for _ in range(platform.settings.auth_failures_per_key):
            assert (await eager.get("/v1/lists", headers=bearer(key))).status_code == 401
        assert (await eager.get("/v1/lists", headers=bearer(key))).status_code == 429
        await platform.publisher.publish(ApiKeyIssued(account_id="acme", producer="billing", payload={  # type: ignore[arg-type]
            "key_id": key_id, "key_hash": key_hash, "issued_by": "owner"}))
        await eventually(lambda: eager.get("/v1/lists", headers=bearer(key)), lambda r: r.status_code == 200,
                         what="the new key accepted")
