"""The flow a piece of work belongs to: an HTTP request's id, or the correlation of the event being handled, carried
to the events made meanwhile and to the log lines written meanwhile."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

_FLOW: ContextVar[UUID | None] = ContextVar("herald_correlation", default=None)

REQUEST_ID_HEADER = "X-Request-ID"


def current() -> UUID | None:
    """The correlation id of the work under way in this task, if any."""
    return _FLOW.get()


@contextmanager
def flow(correlation_id: UUID | None) -> Iterator[None]:
    """Runs the block as part of the flow `correlation_id` (None: of none)."""
    token = _FLOW.set(correlation_id)
    try:
        yield
    finally:
        _FLOW.reset(token)


def request_id(given: str | None) -> UUID:
    """A request's correlation id: the client's `X-Request-ID` when it is a UUID (a client may follow its own
    request through the events and logs it caused), else a new one. The contract's `correlation_id` is a UUID, so
    another form of id is not carried (it would be the client's words in every event and log line)."""
    if given is not None and len(given) <= 64:
        try:
            return UUID(given.strip())
        except ValueError:
            pass
    return uuid.uuid4()


class CorrelationFilter(logging.Filter):
    """Adds `correlation_id` to every record written while a flow is under way (unless the record names one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        flow_id = _FLOW.get()
        if flow_id is not None and not hasattr(record, "correlation_id"):
            record.correlation_id = str(flow_id)
        return True


class RequestCorrelation:
    """ASGI middleware: each HTTP request runs as a flow of its own (`request_id`), and its response says which in
    `X-Request-ID`, so a customer reporting a failed request gives the id that finds its log lines and events."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value.decode("latin-1") for name, value in scope.get("headers", ())
                      if name == b"x-request-id"), None)
        flow_id = request_id(given)
        header = (REQUEST_ID_HEADER.lower().encode(), str(flow_id).encode())

        async def with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        with flow(flow_id):
            await self.app(scope, receive, with_id)
