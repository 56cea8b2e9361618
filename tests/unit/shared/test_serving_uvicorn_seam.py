"""What herald_shared.serving relies on of uvicorn beyond its documented API (STYLE.md: a private attribute is a
debt, confined to one module): this fails loudly when an upgrade of uvicorn changes one of them."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.server import ServerState

from herald_shared.serving import UVICORN_SEAM, HeraldServer


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_uvicorns_http_protocol_still_shows_its_request_cycle_and_flow_control() -> None:
    answered = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        answered.set()

    config = uvicorn.Config(app, log_config=None, lifespan="off")
    config.load()
    assert set(inspect.signature(AutoHTTPProtocol).parameters) >= {"config", "server_state", "app_state", "_loop"}
    protocol: Any = AutoHTTPProtocol(config=config, server_state=ServerState(), app_state={},  # type: ignore[call-arg]
                                     _loop=asyncio.get_running_loop())
    for name in UVICORN_SEAM["protocol"]:
        assert hasattr(protocol, name), f"uvicorn's {type(protocol).__name__} has no `{name}` any more"
    protocol.connection_made(FakeTransport())
    assert protocol.cycle is None
    protocol.data_received(b"POST /x HTTP/1.1\r\nHost: svc\r\nContent-Length: 6\r\n\r\nabc")
    cycle = protocol.cycle
    for name in UVICORN_SEAM["cycle"]:
        assert hasattr(cycle, name), f"uvicorn's {type(cycle).__name__} has no `{name}` any more"
    for name in UVICORN_SEAM["flow"]:
        assert hasattr(protocol.flow, name), f"uvicorn's FlowControl has no `{name}` any more"
    assert (cycle.more_body, cycle.response_started, cycle.response_complete) == (True, False, False)
    assert protocol.flow.read_paused is False
    protocol.data_received(b"def")
    assert cycle.more_body is False
    async with asyncio.timeout(5):
        await answered.wait()
    assert (cycle.response_started, cycle.response_complete) == (True, True)
    protocol.connection_lost(None)


def test_uvicorns_server_still_has_the_methods_herald_server_overrides() -> None:
    for name in ("capture_signals", "startup", "shutdown"):
        assert name in vars(uvicorn.Server), f"uvicorn.Server has no `{name}` any more: HeraldServer overrides it"
    for name in ("startup", "shutdown"):
        ours = inspect.signature(getattr(HeraldServer, name)).parameters
        assert list(inspect.signature(getattr(uvicorn.Server, name)).parameters) == list(ours), name
