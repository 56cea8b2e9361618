"""What the tests start dies with the process that started it (`conftest.dies_with_the_tests`): a CI job killed
mid-run leaves no service holding its ports for the runs after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

STARTER = """
import subprocess, sys, time
from tests.conftest import dies_with_the_tests
child = subprocess.Popen(["sleep", "60"], preexec_fn=dies_with_the_tests)
print(child.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie (dead, not yet reaped by init) is no longer running
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_started_process_is_killed_when_its_starter_is_sigkilled() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert starter.stdout is not None
    child = int(starter.stdout.readline())
    assert alive(child)
    starter.send_signal(signal.SIGKILL)
    starter.wait(10)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the started process outlived its starter"
