"""The shared HTTP contract of every service: errors are RFC 9457 problems, and the OpenAPI document says so."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import Request
from pydantic import BaseModel

from herald_shared.http import PROBLEM, api_app, problems


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
    assert set(errors) == {("/things/{thing_id}", "get", "404"), ("/things/{thing_id}", "get", "422"),
                           ("/things", "post", "400"), ("/things", "post", "409"), ("/things", "post", "413"),
                           ("/things", "post", "422")}
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
