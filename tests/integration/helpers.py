"""Shared by the integration tests of every service: schemathesis against the live service, what a service's
database still holds (retention), a Kafka broker of a test module's own, and headless Chromium."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, async_playwright

from herald_shared.http import make_server
from herald_subscriptions.forms import FormTokens
from tests.conftest import ROOT, dies_with_the_tests, free_port

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Schemathesis' `ignored_auth` check sends wrong API keys to every operation and expects 401 each time; with the
# strict production limits (HERALD_AUTH_FAILURES_*) the service would answer 429 after a few. The contract tests
# construct their services with these instead (settings by field name).
UNTHROTTLED_API_KEYS = {"auth_failures_per_ip": 1_000_000, "auth_failures_per_key": 1_000_000}


CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's headless Chromium, driven by Playwright (scripts/test installs the package)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed; scripts/test installs Debian's package (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"


async def run_schemathesis(app: FastAPI, tmp_path: Path, *, headers: dict[str, str], max_examples: int = 15,
                           operations: Sequence[dict[str, Any]] = (), extra_args: Sequence[str] = (),
                           **config: Any) -> str:
    """Serve the app over TCP (uvicorn, in this event loop) and run `schemathesis run --checks all` at its
    published /openapi.json as a separate process; fails with schemathesis' report on any failure. Returns
    the report. `config` and `operations` go to schemathesis' configuration file (its TOML keys); `extra_args` to
    its command line (e.g. `--include-path-regex`)."""
    port = free_port()
    server = make_server(app, "127.0.0.1", port)
    serving = asyncio.create_task(server.serve())
    # Every service answers a request target over 8 KB with 414 (herald_shared.http), as schemathesis' longest
    # generated queries get: a rejection like its defaults'.
    rejections = {"negative_data_rejection": {"expected-statuses": [
        "400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429", "5xx"]}}
    config = {**config, "checks": {**rejections, **config.get("checks", {})}}
    lines = [f"{key} = {_toml(value)}" for key, value in config.items()]
    for operation in operations:
        lines.append("[[operations]]")
        lines += [f"{key} = {_toml(value)}" for key, value in operation.items()]
    config_file, log = tmp_path / "schemathesis.toml", tmp_path / "schemathesis.log"
    config_file.write_text("\n".join(lines) + "\n")
    try:
        async with asyncio.timeout(10):
            while not server.started:  # uvicorn says so once it listens; its task raises if it cannot
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.01)
        args = [str(SCHEMATHESIS), "--config-file", str(config_file), "run", f"http://127.0.0.1:{port}/openapi.json",
                "--checks", "all", "--max-examples", str(max_examples), "--no-color", "--request-timeout", "20",
                *extra_args]
        for name, value in headers.items():
            args += ["--header", f"{name}: {value}"]
        with log.open("wb") as out:
            # In tmp_path: schemathesis keeps its cache and hypothesis database in its working folder.
            process = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=asyncio.subprocess.STDOUT,
                                                           cwd=tmp_path, preexec_fn=dies_with_the_tests)
            await process.wait()
    finally:
        server.should_exit = True
        await serving
    report = log.read_text(errors="replace")
    assert process.returncode == 0, f"schemathesis found failures (exit {process.returncode}):\n{report}"
    return report


async def documents_holding(db: Any, *texts: str) -> list[str]:
    """Every document of a service's database whose text contains any of `texts`, as `collection: document`
    (the purged accounts' tombstones aside: they hold the id and nothing else)."""
    found = []
    for name in sorted(await db.list_collection_names()):
        if name == "purged_accounts":
            continue
        found += [f"{name}: {doc!r}" async for doc in db[name].find({}) if any(t in repr(doc) for t in texts)]
    return found


def form_token(secret: str, path: str, served_ago: timedelta = timedelta(minutes=1)) -> dict[str, str]:
    """The hidden field of a hosted form at `path` as its page would have served it `served_ago` (a person takes
    seconds to fill a form; a post sooner than the minimum fill time is screened out as a bot's)."""
    return {"form_token": FormTokens(secret).issue(path, datetime.now(UTC) - served_ago)}


class PrivateKafka:
    """A Kafka broker of a test module's own, to stop, start or freeze (SIGSTOP) without touching the stack the
    other tests share: `scripts/stack <command>` in its own folder, on free ports, Kafka alone."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        port = free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL")}
        self.env.update(HERALD_STACK_DIR=str(folder), HERALD_STACK_TMPFS="1", HERALD_KAFKA_PORT=str(port),
                        HERALD_KAFKA_CONTROLLER_PORT=str(free_port()), HERALD_KAFKA_HEAP="512m")

    def __call__(self, command: str) -> None:
        """`scripts/stack start-kafka`, `stop-kafka` or `reset` on this broker."""
        done = subprocess.run([str(ROOT / "scripts/stack"), command], env=self.env, capture_output=True, text=True,
                              timeout=180, check=False)
        assert done.returncode == 0, f"scripts/stack {command}:\n{done.stdout}\n{done.stderr}"

    def signal(self, number: signal.Signals) -> None:
        os.kill(int((self.folder / "run/kafka.pid").read_text().strip()), number)


@contextmanager
def private_kafka_in(folder: Path) -> Iterator[PrivateKafka]:
    """A private broker started in `folder`, and deleted with its data at the end."""
    kafka = PrivateKafka(folder)
    try:
        kafka("start-kafka")
        yield kafka
    finally:
        kafka("reset")
