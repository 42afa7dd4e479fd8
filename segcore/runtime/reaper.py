"""Ends an embedded Ray instance's processes when the process that started it dies, however it dies (Linux).

A driver that starts its own Ray (``ray.init(address="local")``) owns the GCS server and the raylet; Ray ties
those two to the driver's life, but not the agents the raylet starts (``ray::DashboardAgent``,
``ray::RuntimeEnvAgent``): after a SIGKILL of the driver they stayed about 60 s, holding ports and memory. This
watcher closes that gap:

    python segcore/runtime/reaper.py PID [PID ...]      (run as a script: it imports nothing of segcore or Ray)

It is started by the driver (:func:`start`) with the pids of the processes ``ray.init`` created, in a session of
its own (so a Ctrl-C or a kill of the driver's process group does not reach it) and with its stdin a pipe whose
only writer is the driver. Every ``REFRESH_S`` it notes those processes and their live descendants (pid and start
time, so a reused pid is never taken for one of them); when stdin reaches end-of-file, which is when the driver
has exited or been killed, it sends SIGTERM to every noted process still alive, then SIGKILL to those still alive
``GRACE_S`` later, and exits. A normal exit (``ray.shutdown`` ran) leaves it nothing to do.

Only processes that descend from Ray's own are touched: whatever else the driver started is left alone.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

REFRESH_S = 1.0
GRACE_S = 3.0


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time)`` of a live process, or None (gone, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            text = file.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[19])


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, of every live process."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(name))
    return children


def _note(known: dict[int, int]) -> None:
    """Adds the live descendants of the live processes of ``known`` (pid -> start time) to it."""
    children = _children()
    todo = [pid for pid, started in known.items() if (_stat(pid) or (0, None))[1] == started]
    while todo:
        for child in children.get(todo.pop(), []):
            stat = _stat(child)
            if stat is not None and child not in known and child != os.getpid():
                known[child] = stat[1]
                todo.append(child)


def _alive(known: dict[int, int]) -> list[int]:
    return [pid for pid, started in known.items() if (_stat(pid) or (0, None))[1] == started]


def _signal(pids: list[int], number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, number)
        except OSError:  # gone meanwhile, or not ours
            pass


def watch(roots: list[int], stream=None) -> list[int]:
    """Notes ``roots`` and their descendants until ``stream`` (default stdin) ends, then ends those alive.

    Returns the pids that were still alive at the end (and were signalled).
    """
    stream = stream if stream is not None else sys.stdin.buffer
    known = {pid: stat[1] for pid in roots if (stat := _stat(pid)) is not None}
    while True:
        _note(known)
        readable, _, _ = select.select([stream], [], [], REFRESH_S)
        if readable and not os.read(stream.fileno(), 4096):
            break  # end of file: the driver is gone
    _note(known)
    left = _alive(known)
    _signal(left, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while _alive(known) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal(_alive(known), signal.SIGKILL)
    return left


def start(roots: list[int]) -> subprocess.Popen | None:
    """Starts the watcher for ``roots`` (pids Ray started for this process); None where it cannot run (no /proc).

    The returned process's stdin is the pipe: it stays open for the life of this process (do not close it).
    """
    if not roots or not os.path.isdir("/proc") or _stat(os.getpid()) is None:
        return None
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *map(str, roots)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        close_fds=True,
    )


def child_pids() -> set[int]:
    """The pids of this process's live children."""
    return set(_children().get(os.getpid(), [])) if os.path.isdir("/proc") else set()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    watch([int(arg) for arg in sys.argv[1:]])
