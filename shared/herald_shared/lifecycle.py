"""Graceful shutdown: SIGTERM and SIGINT call the service's stop callbacks once."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)


def on_shutdown_signal(*callbacks: Callable[[], None]) -> asyncio.Event:
    """Install handlers on the running loop; returns an event set when a shutdown signal arrived."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def handle(signame: str) -> None:
        if stopping.is_set():
            return
        log.info("shutdown signal received", extra={"signal": signame})
        stopping.set()
        for callback in callbacks:
            callback()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig.name)
    return stopping
