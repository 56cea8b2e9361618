"""The shared HTTP contract of every service: errors are RFC 9457 problems, and the OpenAPI document says so."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import Depends, Request
from prometheus_client import REGISTRY, generate_latest
from pydantic import BaseModel

from herald_shared.http import MAX_TARGET_BYTES, PROBLEM, PROBLEM_STATUSES, api_app, api_key_account, problems
from herald_shared.throttle import CredentialAttempts


class ThingIn(BaseModel):
    name: str


def app_with_routes() -> httpx.AsyncClient:
    app = api_app("Test", "A test app.")

    @app.get("/things/{thing_id}", responses=problems(404))
    async def thing(thing_id: int) -> dict[str, int]:
        return {"thing_id": thing_id}

    @app.get("/things")
    async def things() -> list[str]:
        return []

    @app.post("/things", status_code=201, responses=problems(409))
    async def create(body: ThingIn) -> dict[str, str]:
        return {"name": body.name}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_every_error_response_in_the_document_is_a_problem_document() -> None:
    async with app_with_routes() as client:
        document = (await client.get("/openapi.json")).json()
    responses = {(path, method, code): response for path, operations in document["paths"].items()
                 for method, operation in operations.items() for code, response in operation["responses"].items()}
    errors = {key: r for key, r in responses.items() if key[2][0] in "45"}
    assert set(errors) == {("/things/{thing_id}", "get", "404"), ("/things/{thing_id}", "get", "414"),
                           ("/things/{thing_id}", "get", "422"), ("/things", "get", "414"),
                           ("/things", "post", "400"), ("/things", "post", "409"), ("/things", "post", "413"),
                           ("/things", "post", "414"), ("/things", "post", "422"),
                           *((path, method, code) for path, method in  # every operation: too slow, or away
                             (("/things/{thing_id}", "get"), ("/things", "get"), ("/things", "post"))
                             for code in ("408", "503"))}
    for response in errors.values():
        assert response["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    schemas = document["components"]["schemas"]
    assert {"Problem", "FieldProblem"} <= set(schemas) and "HTTPValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail"}


async def test_invalid_requests_unknown_routes_and_wrong_methods_get_problems() -> None:
    async with app_with_routes() as client:
        invalid = await client.post("/things", json={"name": 3})
        unknown = await client.get("/nowhere")
        wrong_method = await client.delete("/things")
    assert invalid.status_code == 422 and invalid.headers["content-type"] == PROBLEM
    assert invalid.json()["errors"] == [{"location": "body.name", "message": "Input should be a valid string"}]
    assert unknown.status_code == 404 and unknown.headers["content-type"] == PROBLEM
    # Every method of the path, not only those of the first route Starlette matched (RFC 9110 15.5.6).
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, POST"
    async with app_with_routes() as client:
        assert (await client.put("/things/1")).headers["allow"] == "GET"


def limited_app() -> tuple[httpx.AsyncClient, list[int]]:
    """A route that reads its whole body (what it got is recorded), under a small default and a larger import."""
    import herald_shared.http as http

    handled: list[int] = []
    original, http.MAX_BODY_BYTES = http.MAX_BODY_BYTES, 1000
    try:
        app = api_app("Test", "A test app.", larger_bodies={r"/lists/[^/]+/imports": 5000})
    finally:
        http.MAX_BODY_BYTES = original

    @app.post("/things")
    async def things(request: Request) -> dict[str, int]:
        handled.append(len(await request.body()))
        return {"bytes": handled[-1]}

    @app.post("/lists/{list_id}/imports")
    async def imports(list_id: str, request: Request) -> dict[str, int]:
        handled.append(sum([len(chunk) async for chunk in request.stream()]))
        return {"bytes": handled[-1]}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test"), handled


async def test_a_body_over_the_routes_limit_is_refused_413_before_the_route_handles_it() -> None:
    http, handled = limited_app()
    async with http:
        assert (await http.post("/things", content=b"x" * 1000)).json() == {"bytes": 1000}
        declared = await http.post("/things", content=b"x" * 1001)  # Content-Length says it at once
        assert declared.status_code == 413 and declared.headers["content-type"] == PROBLEM
        assert declared.json()["detail"] == "this route takes at most 1,000 bytes of request body"

        async def chunks(n: int) -> Any:
            for _ in range(n):
                yield b"y" * 400

        streamed = await http.post("/things", content=chunks(3))  # chunked: counted as it is read
        assert streamed.status_code == 413 and streamed.json()["title"] == "body too large"
        assert (await http.post("/lists/l1/imports", content=chunks(12))).json() == {"bytes": 4800}
        assert (await http.post("/lists/l1/imports", content=chunks(13))).status_code == 413
        assert (await http.post("/lists/l1/imports/x", content=b"x" * 1001)).status_code == 413  # whole path
        assert handled == [1000, 4800]  # the refused bodies never reached a route whole


async def test_every_route_that_takes_a_body_documents_413() -> None:
    http = app_with_routes()
    async with http:
        document = (await http.get("/openapi.json")).json()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert all(("413" in op["responses"]) == ("requestBody" in op) for op in operations)
    assert any("requestBody" in op for op in operations)


async def test_a_request_target_over_8_kib_is_refused_414_before_routing() -> None:
    async with app_with_routes() as client:
        room = MAX_TARGET_BYTES - len("/things?q=")
        assert (await client.get("/things", params={"q": "x" * room})).status_code == 200  # at the limit: routed
        long_query = await client.get("/things", params={"q": "x" * (room + 1)})
        long_path = await client.get("/things/" + "1" * MAX_TARGET_BYTES)
    for refused in (long_path, long_query):
        assert refused.status_code == 414 and refused.headers["content-type"] == PROBLEM
        assert refused.json()["detail"] == "the request target (path and query) takes at most 8,192 bytes"


async def test_every_operation_documents_414() -> None:
    async with app_with_routes() as client:
        document = (await client.get("/openapi.json")).json()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert operations and all("414" in op["responses"] for op in operations)
    assert 414 in PROBLEM_STATUSES


async def test_every_operation_documents_the_408_of_a_request_too_slow_to_arrive() -> None:
    """`herald_shared.serving` answers 408 (a problem document) to a head or body that does not arrive in time,
    before any route: every operation may answer it."""
    async with app_with_routes() as client:
        document = (await client.get("/openapi.json")).json()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert operations and all(op["responses"]["408"]["content"] == {
        PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}} for op in operations)


GOOD_KEY = "hk_0123456789abcdef.right"  # the one key of account acme


class Keys:
    """The API keys of account acme; `checked` lists what was verified the slow way (scrypt, in the real one)."""

    def __init__(self, attempts: CredentialAttempts) -> None:
        self.attempts = attempts
        self.checked: list[str] = []
        self._verified: set[str] = set()

    async def authenticate(self, key: str, *, remembered_only: bool = False) -> str | None:
        if key in self._verified:
            return "acme"
        if remembered_only:
            return None
        self.checked.append(key)
        if key == GOOD_KEY:
            self._verified.add(key)
            return "acme"
        return None


def keyed_app(per_ip: int, per_key: int) -> tuple[Callable[[str], httpx.AsyncClient], Keys, list[datetime]]:
    """An app with one route taking an API key; a client per address; the clock (`now[0]`) to move."""
    keys = Keys(CredentialAttempts.api_keys(per_ip, timedelta(minutes=5), per_key, timedelta(minutes=15)))
    now = [datetime(2026, 12, 3, 9, 0, tzinfo=UTC)]
    app = api_app("Test", "A test app.")
    account = api_key_account(keys, clock=lambda: now[0])

    @app.get("/things", responses=problems(401, 429))
    async def things(account_id: str = Depends(account)) -> dict[str, str]:
        return {"account_id": account_id}

    def client(address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 4711)),
                                 base_url="http://test")

    return client, keys, now


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("herald_api_key_refusals_total", {"reason": reason}) or 0.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_failed_keys_from_one_address_get_429_with_retry_after_and_everything_from_it_is_refused() -> None:
    client, keys, now = keyed_app(per_ip=3, per_key=100)
    before = refusals("throttled_ip"), refusals("bad_key")
    async with client("198.51.100.1") as guesser, client("198.51.100.2") as other:
        for n in range(3):  # each on another key id: the address is what counts
            assert (await guesser.get("/things", headers=bearer(f"hk_{n:016x}.guess"))).status_code == 401
        throttled = await guesser.get("/things", headers=bearer("hk_0000000000000009.guess"))
        assert throttled.status_code == 429 and throttled.headers["content-type"] == PROBLEM
        assert throttled.headers["Retry-After"] == "300" and throttled.json()["type"].endswith("/too_many_attempts")
        assert (await guesser.get("/things", headers=bearer(GOOD_KEY))).status_code == 429  # even a right key
        assert (await guesser.get("/things")).status_code == 429  # and no key at all
        assert (await other.get("/things", headers=bearer(GOOD_KEY))).json() == {"account_id": "acme"}
        # Verified once by this process, the key gets through from the throttled address (a shared NAT), unchecked.
        assert (await guesser.get("/things", headers=bearer(GOOD_KEY))).status_code == 200
        now[0] += timedelta(seconds=61)
        assert (await guesser.get("/things")).headers["Retry-After"] == "239"
        now[0] += timedelta(seconds=239)  # the first failure left the window
        assert (await guesser.get("/things", headers=bearer(GOOD_KEY))).status_code == 200
    # The three guesses and the right key once (then remembered); nothing refused 429 was checked.
    assert keys.checked == [f"hk_{n:016x}.guess" for n in range(3)] + [GOOD_KEY]
    assert (refusals("throttled_ip") - before[0], refusals("bad_key") - before[1]) == (4, 3)


async def test_a_throttled_key_id_refuses_unverified_secrets_unchecked_but_lets_its_owner_through() -> None:
    client, keys, _ = keyed_app(per_ip=100, per_key=2)
    before = refusals("throttled_key")
    async with client("192.0.2.10") as owner:
        assert (await owner.get("/things", headers=bearer(GOOD_KEY))).status_code == 200  # verified once
        for n in range(2):  # guesses on the owner's key id, each from another address
            async with client(f"203.0.113.{n}") as guesser:
                assert (await guesser.get("/things", headers=bearer(f"hk_0123456789abcdef.g{n}"))).status_code == 401
        async with client("203.0.113.99") as guesser:
            refused = await guesser.get("/things", headers=bearer("hk_0123456789abcdef.g3"))
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "900"
        assert (await owner.get("/things", headers=bearer(GOOD_KEY))).json() == {"account_id": "acme"}
        assert (await owner.get("/things", headers={"X-API-Key": GOOD_KEY})).status_code == 200
    assert keys.checked == [GOOD_KEY, "hk_0123456789abcdef.g0", "hk_0123456789abcdef.g1"]
    assert refusals("throttled_key") - before == 1


async def test_an_unknown_key_id_is_throttled_like_a_real_one() -> None:
    """No answer tells a valid key id from an invalid one: guesses on either get the same 401s, then 429s."""
    client, _, _ = keyed_app(per_ip=100, per_key=2)
    answers = {}
    for key_id in ("0123456789abcdef", "fedcba9876543210"):  # acme's, and none
        async with client("203.0.113.5") as guesser:
            answers[key_id] = [(r.status_code, r.headers.get("Retry-After"), r.json()["detail"]) for r in [
                await guesser.get("/things", headers=bearer(f"hk_{key_id}.g{n}")) for n in range(3)]]
    assert answers["0123456789abcdef"] == answers["fedcba9876543210"]
    assert [status for status, _, _ in answers["fedcba9876543210"]] == [401, 401, 429]


async def test_a_request_without_a_key_costs_nothing_and_is_not_counted() -> None:
    client, keys, _ = keyed_app(per_ip=1, per_key=1)
    async with client("198.51.100.7") as anonymous:
        for _ in range(3):
            answer = await anonymous.get("/things")
            assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
        assert (await anonymous.get("/things", headers=bearer(GOOD_KEY))).status_code == 200
    assert keys.checked == [GOOD_KEY]


def test_the_refusals_counter_is_exported_with_every_reason() -> None:
    exported = generate_latest().decode()
    for reason in ("bad_key", "throttled_ip", "throttled_key"):
        assert f'herald_api_key_refusals_total{{reason="{reason}"}}' in exported


async def test_a_store_whose_database_is_away_and_a_broker_that_never_acknowledges_answer_503_not_500_or_never(
        monkeypatch: Any) -> None:
    """A review (R1): with PostgreSQL stopped under FerretDB every request answered 500 (FerretDB's code 1, which
    the consumers wait out), and with the broker away a request waited unanswered for minutes (aiokafka retries an
    idempotent batch for ever). Both are the dependency away: 503, retry. A refused write stays the request's own."""
    import asyncio

    from pymongo.errors import DuplicateKeyError, OperationFailure

    from herald_shared import commands
    from herald_shared.commands import Recorder

    class SilentBroker:
        async def publish_many(self, events: Any) -> list[Any]:
            await asyncio.Event().wait()  # acknowledged never
            return []

    monkeypatch.setattr(commands, "PUBLISH_TIMEOUT", 0.05)
    recorder = Recorder(SilentBroker(), None, "herald.things")  # type: ignore[arg-type]
    app = api_app("t", "t")

    @app.get("/postgres-away")
    async def postgres_away() -> None:
        raise OperationFailure("PostgreSQL is not reachable", code=1)

    @app.get("/duplicate")
    async def duplicate() -> None:
        raise DuplicateKeyError("E11000 duplicate key", code=11000)

    @app.post("/decide")
    async def decide() -> None:
        from tests.samples import sample
        await recorder.commit([sample("ListCreated")])

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
        for answer in (await http.get("/postgres-away"), await asyncio.wait_for(http.post("/decide"), 5)):
            assert answer.status_code == 503, answer.text
            assert answer.json()["type"].endswith("/dependency_unavailable") and answer.headers["Retry-After"] == "1"
        assert (await http.get("/duplicate")).status_code == 500
