"""The reaper: the processes an embedded Ray started end when their driver does; nothing else is touched."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from segcore.runtime import reaper

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="the reaper reads /proc (Linux)")

# a "raylet": starts an "agent" that ignores SIGTERM and outlives it, prints the agent's pid, then waits
RAYLET = """
import signal, subprocess, sys, time
agent = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
print(agent.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    stat = reaper._stat(pid)
    return stat is not None


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_pipe_closing_ends_the_roots_and_their_descendants_and_nothing_else():
    raylet = subprocess.Popen([sys.executable, "-c", RAYLET], stdout=subprocess.PIPE, text=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    agent = int(raylet.stdout.readline())
    watcher = reaper.start([raylet.pid])
    try:
        assert watcher is not None
        time.sleep(reaper.REFRESH_S * 2)  # noted by a refresh
        raylet.kill()  # the raylet goes first (Ray ties it to the driver): its agent is reparented, still running
        raylet.wait()
        assert alive(agent)
        watcher.stdin.close()  # what the driver's death does
        assert watcher.wait(timeout=reaper.GRACE_S + 10) == 0
        assert wait_until(lambda: not alive(agent), 5)  # SIGTERM ignored: SIGKILL after the grace period
        assert bystander.poll() is None  # started by the same process, not by Ray: left alone
    finally:
        for process in (raylet, bystander):
            process.kill()
            process.wait()
        if alive(agent):
            os.kill(agent, 9)


def test_nothing_to_watch_starts_nothing():
    assert reaper.start([]) is None
