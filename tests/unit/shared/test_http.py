"""The shared HTTP contract of every service: errors are RFC 9457 problems, and the OpenAPI document says so."""

from __future__ import annotations

import httpx
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
                           ("/things", "post", "400"), ("/things", "post", "409"), ("/things", "post", "422")}
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
