"""Every request a service's app answers is counted by route template, method and status and timed: the SLI of
the 99.5% availability target (PRODUCT.md) that deploy/k8s/base/monitoring's burn-rate alerts read."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from prometheus_client import REGISTRY

from herald_shared.http import MAX_BODY_BYTES, MAX_TARGET_BYTES, UNMATCHED, api_app


def counted(route: str, method: str, status: int) -> float:
    return REGISTRY.get_sample_value("herald_http_requests_total",
                                     {"route": route, "method": method, "status": str(status)}) or 0.0


def timed(route: str, method: str) -> float:
    return REGISTRY.get_sample_value("herald_http_request_seconds_count", {"route": route, "method": method}) or 0.0


SLOW_ENTERED = asyncio.Event()


def client() -> tuple[httpx.AsyncClient, str]:
    """An app with routes under a prefix of its own (the metrics are the process's: other tests count too)."""
    prefix = f"/m{uuid.uuid4().hex[:8]}"
    app = api_app("Test", "Counted.")

    @app.get(prefix + "/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"thing_id": thing_id}

    @app.post(prefix + "/things")
    async def create() -> dict[str, str]:
        return {}

    @app.get(prefix + "/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    @app.get(prefix + "/slow")
    async def slow() -> None:
        SLOW_ENTERED.set()
        await asyncio.Event().wait()  # answers never

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test"), prefix


async def test_requests_are_counted_by_route_template_never_by_the_path_itself() -> None:
    http, prefix = client()
    async with http:
        for thing_id in (1, 2, 3):
            assert (await http.get(f"{prefix}/things/{thing_id}")).status_code == 200
        assert (await http.get(f"{prefix}/things/x")).status_code == 422
    template = prefix + "/things/{thing_id}"
    assert counted(template, "GET", 200) == 3 and counted(template, "GET", 422) == 1
    assert timed(template, "GET") == 4
    assert REGISTRY.get_sample_value("herald_http_requests_total",
                                     {"route": f"{prefix}/things/1", "method": "GET", "status": "200"}) is None


async def test_failures_count_as_what_the_client_got() -> None:
    http, prefix = client()
    before = {status: counted(UNMATCHED, "GET", status) for status in (404, 414)}
    async with http:
        assert (await http.get(f"{prefix}/broken")).status_code == 500  # the handler raised
        assert (await http.get(f"{prefix}/nowhere")).status_code == 404
        assert (await http.get(f"{prefix}/{'x' * MAX_TARGET_BYTES}")).status_code == 414
        assert (await http.delete(f"{prefix}/things/1")).status_code == 405
        big = await http.post(f"{prefix}/things", content=b"x" * (MAX_BODY_BYTES + 1))
        assert big.status_code == 413
        assert (await http.request("BREW", f"{prefix}/things/1")).status_code == 405
    assert counted(prefix + "/broken", "GET", 500) == 1
    assert counted(UNMATCHED, "GET", 404) == before[404] + 1 and counted(UNMATCHED, "GET", 414) == before[414] + 1
    assert counted(prefix + "/things/{thing_id}", "DELETE", 405) == 1
    assert counted(prefix + "/things", "POST", 413) == 1  # refused before routing: the route it was for
    assert counted(prefix + "/things/{thing_id}", "other", 405) == 1  # a made-up method adds no series of its own


async def test_a_client_that_leaves_before_the_answer_counts_as_499() -> None:
    http, prefix = client()
    async with http:
        request = asyncio.create_task(http.get(f"{prefix}/slow"))
        await asyncio.wait_for(SLOW_ENTERED.wait(), timeout=10)
        request.cancel()
        await asyncio.gather(request, return_exceptions=True)
    assert counted(prefix + "/slow", "GET", 499) == 1
