"""The HTTP side every service has: /healthz, /readyz and /metrics on a FastAPI app, served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]
PROBLEM = "application/problem+json"


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document."""
    return JSONResponse({"type": f"https://herald.dev/problems/{code}", "title": code.replace("_", " "),
                         "status": status, "detail": detail, **extra}, status_code=status, media_type=PROBLEM)


def add_health_routes(app: FastAPI, readiness: Mapping[str, ReadinessCheck]) -> FastAPI:
    """/healthz: the process answers. /readyz: every dependency check passes (503 with details if not)."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in readiness.items():
            try:
                ok = await asyncio.wait_for(check(), timeout=2.0)
            except Exception as exc:
                results[name] = f"error: {type(exc).__name__}"
                continue
            results[name] = "ok" if ok else "not ready"
        ready = all(v == "ok" for v in results.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": results},
                            status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def make_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server to run inside the service's own event loop (`await server.serve()`)."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    # main.py owns SIGTERM/SIGINT (see lifecycle.py), so uvicorn must not capture them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server
