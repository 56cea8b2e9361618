"""SIGUSR1 on a service: where every task and thread is waiting, in the log."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import pytest

from herald_shared.lifecycle import on_shutdown_signal


async def parked_in_a_queue(queue: asyncio.Queue[int]) -> None:
    await queue.get()


async def test_sigusr1_logs_each_tasks_await_chain_and_each_thread(caplog: pytest.LogCaptureFixture) -> None:
    stopping = on_shutdown_signal()
    queue: asyncio.Queue[int] = asyncio.Queue()
    task = asyncio.create_task(parked_in_a_queue(queue), name="parked-task")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="herald_shared.lifecycle"):
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)
    task.cancel()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        loop.remove_signal_handler(sig)
    dump = "\n".join(r.getMessage() for r in caplog.records)
    parked = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("task parked-task"))
    assert "parked_in_a_queue" in parked and "queues.py" in parked  # down to the queue it waits on
    assert "thread " in dump and "tasks dumped" in dump
    assert not stopping.is_set()  # a dump is not a shutdown
