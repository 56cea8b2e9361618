"""A service process: entry point, HTTP server, and graceful shutdown (SIGTERM and SIGINT call the
service's stop callbacks once; SIGUSR1 logs every asyncio task's stack)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from fastapi import FastAPI
from pydantic import ValidationError

from .http import make_server
from .kafka import is_transient
from .logs import RepeatLimit, configure_logging
from .settings import HeraldSettings

log = logging.getLogger(__name__)
# A periodic round that fails while Kafka or MongoDB is away fails the same way every round until it is back: a
# traceback each time made a stream of identical ones (a review: ~40 lines every 15 s with the broker away, ~75
# every 10 s with MongoDB away). So such a failure (`kafka.is_transient`, as the consumers judge it) is one line, a
# loop's first, then at most one per `logs.REPEAT_INTERVAL_SECONDS` carrying `suppressed` (how many were left
# out), as aiokafka's own lines are limited (`logs.RepeatLimit`); and one line when the loop works again.
_away = logging.getLogger(f"{__name__}.away")
_away.addFilter(RepeatLimit((_away.name,)))
ERROR_SHOWN = 500  # characters of the error on such a line (a server-selection timeout describes the topology)


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
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    return stopping


def dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task (of every loop in the process) and every thread is waiting, for a
    worker that seems stuck."""
    tasks = [t for t in list(getattr(asyncio.tasks, "_all_tasks", ())) if not t.done()] or list(asyncio.all_tasks())
    for task in sorted(tasks, key=lambda t: t.get_name()):
        log.warning("task %s:\n%s", task.get_name(), "".join(_awaiting(task.get_coro())))
    for ident, frame in sys._current_frames().items():
        log.warning("thread %s:\n%s", ident, "".join(traceback.format_stack(frame, limit=15)))
    log.warning("tasks dumped", extra={"tasks": len(tasks)})


def _awaiting(coro: object) -> list[str]:
    """The chain of awaits of a suspended coroutine, outermost first, down to the future it waits on."""
    lines: list[str] = []
    while coro is not None and len(lines) < 40:
        frame = next((f for a in ("cr_frame", "ag_frame", "gi_frame") if (f := getattr(coro, a, None))), None)
        if frame is None:
            lines.append(f"  awaiting {coro!r}\n"[:400])
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")
        coro = next((c for a in ("cr_await", "ag_await", "gi_yieldfrom") if (c := getattr(coro, a, None))), None)
    return lines


async def every(interval: float, stopping: asyncio.Event, work: Callable[[], Awaitable[object]], what: str) -> None:
    """Do `work` every `interval` seconds until `stopping` is set (a scheduler, a clock). A round that fails is
    logged and the next one retries: the loop outlives it. A dependency away is a rate-limited line (`_away`);
    anything else, a bug, its traceback every time."""
    away = 0  # rounds failed in a row on a dependency away
    while not stopping.is_set():
        try:
            await work()
        except Exception as exc:
            if not is_transient(exc):
                log.exception("%s failed; retrying", what)
            else:
                away += 1
                # the loop's name in the template: RepeatLimit limits each loop's lines on their own
                _away.warning(what.replace("%", "%%") + " failed, a dependency is away; retrying",
                              extra={"error": f"{type(exc).__name__}: {exc}"[:ERROR_SHOWN], "failed_rounds": away})
        else:
            if away:
                log.info("%s works again", what, extra={"failed_rounds": away})
            away = 0
        try:
            async with asyncio.timeout(interval):
                await stopping.wait()
        except TimeoutError:
            pass


class WatchedTasks:
    """A service's background tasks (consumers, clocks, the sender), watched: one that ends without being asked
    to (an exception, or a return) takes the process down loudly, `failed` saying which and why, so that it is
    restarted instead of serving on with a part of it dead."""

    def __init__(self) -> None:
        self.failed: str | None = None
        self.on_failure: Callable[[], None] | None = None
        self.stopping = False

    def watched(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        task.add_done_callback(self._task_ended)
        return task

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stopping:
            return
        error = task.exception()
        self.failed = f"{task.get_name()} stopped: {error!r}" if error else f"{task.get_name()} ended on its own"
        log.error("a part of the service stopped; shutting down", extra={"reason": self.failed},
                  exc_info=error)
        if self.on_failure is not None:
            self.on_failure()


class Service(Protocol):
    """What a service's wiring offers its process: an HTTP app, background work, and a way to stop."""

    app: FastAPI
    failed: str | None  # set when a part of the service stopped on its own: the process exits non-zero
    on_failure: Callable[[], None] | None  # called then, to stop the HTTP server

    async def start(self) -> None: ...

    def request_stop(self) -> None: ...

    async def stop(self) -> None: ...


SettingsT = TypeVar("SettingsT", bound=HeraldSettings)

# Young-generation collections every 20,000 net allocations instead of CPython's 700. A consumer folding a
# 2,000-event batch allocates far more than 700 objects per event, all of them short-lived and free of cycles
# (reference counting frees them); at 700 the collector ran dozens of times per batch and, promoting the
# batch's live objects, full collections followed. Measured on the campaign reports fold: 20% of its time.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Called once a service has started: what it built until then (modules, routes, models, clients) lives as
    long as the process, so it moves out of the collector's sight (`gc.freeze`), and young collections run less
    often (`GC_YOUNG_THRESHOLD`). Cyclic garbage is still collected; only later."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_service(name: str, settings_class: type[SettingsT], build: Callable[[SettingsT], Service]) -> None:
    """The `herald-<name>` entry point: settings from the environment (a clear exit when they are invalid),
    logging, then the service and its HTTP server until SIGTERM/SIGINT."""
    try:
        settings = settings_class()
    except ValidationError as exc:
        problems = ", ".join(str(e["loc"][0]) for e in exc.errors())
        raise SystemExit(f"herald-{name}: invalid or missing configuration: {problems}") from None
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_serve(name, settings, build))


async def _serve(name: str, settings: SettingsT, build: Callable[[SettingsT], Service]) -> None:
    service = build(settings)  # inside the loop: clients bind to it
    server = make_server(service.app, settings.http_host, settings.http_port, settings.forwarded_allow_ips)

    def stop_server() -> None:
        server.should_exit = True

    on_shutdown_signal(service.request_stop, stop_server)
    service.on_failure = stop_server
    await service.start()
    tune_gc()
    log.info("service started", extra={"service": name, "port": settings.http_port})
    try:
        await server.serve()
    finally:
        await service.stop()
    if service.failed:
        raise SystemExit(f"herald-{name}: {service.failed}")
