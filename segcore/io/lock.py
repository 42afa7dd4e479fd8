"""One running job per output: a lease file written create-only, kept alive by a heartbeat, released at the end.

A second job started on the same output while the first runs is refused instead of interleaving. A lock left by
a job that died is taken over: at once when its driver ran on this host and that process is gone, else once its
heartbeat is older than the lease.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from segcore.io.commit import Output, create_only, write_whole

logger = logging.getLogger(__name__)
LOCK = "_lock.json"
LEASE_S = 120.0  # a lock whose heartbeat is older than this is stale; the heartbeat runs every LEASE_S / 4


class JobLocked(RuntimeError):
    """Another job holds the output; the message says which (host, pid, since when) and how to proceed."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_stale(document: dict, lease_s: float, now: float | None = None) -> bool:
    """Whether a lock no longer protects a running job: its process on this host is gone, or its heartbeat is old."""
    now = time.time() if now is None else now
    if document.get("host") == socket.gethostname() and not _process_alive(int(document.get("pid", -1))):
        return True
    return now - float(document.get("heartbeat", 0.0)) > lease_s


@dataclass
class JobLock:
    """A held lock: refresh it while working (``start_heartbeat``), release it when done."""

    output: Output
    token: str
    lease_s: float = LEASE_S
    document: dict = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return self.output.path(LOCK)

    def refresh(self) -> None:
        """Writes a new heartbeat if the lock is still this job's (a job that lost it logs and stops refreshing)."""
        current = _read(self.output)
        if current is None or current.get("token") != self.token:
            logger.error("the lock at %s is no longer this job's; another job may be writing there", self.path)
            self._stop.set()
            return
        self.document["heartbeat"] = time.time()
        write_whole(self.output, self.path, json.dumps(self.document).encode())

    def start_heartbeat(self) -> None:
        """Refreshes the lock every ``lease_s / 4`` in a daemon thread until ``release``."""
        def beat() -> None:
            while not self._stop.wait(self.lease_s / 4):
                try:
                    self.refresh()
                except OSError as error:  # storage hiccup: the next beat tries again, well within the lease
                    logger.warning("lock heartbeat failed: %s", error)

        self._thread = threading.Thread(target=beat, name="job-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stops the heartbeat and removes the lock if it is still this job's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = _read(self.output)
        if current is not None and current.get("token") == self.token:
            self.output.fs.rm(self.path)


def _read(output: Output) -> dict | None:
    try:
        return json.loads(output.fs.cat_file(output.path(LOCK)))
    except FileNotFoundError:
        return None
    except ValueError:  # half-written or foreign content: treat as stale, with a heartbeat of 0
        return {}


def acquire(output: Output, lease_s: float = LEASE_S) -> JobLock:
    """Takes the output's lock (create-only), taking over a stale one.

    Raises:
        JobLocked: a live job holds it (two jobs taking over the same stale lock: the slower one is refused too).
    """
    token = uuid.uuid4().hex
    now = time.time()
    document = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "acquired": now, "heartbeat": now}
    data = json.dumps(document).encode()
    try:
        create_only(output, output.path(LOCK), data)
    except FileExistsError:
        existing = _read(output)
        if existing is not None and not is_stale(existing, lease_s):
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(existing.get("acquired", 0)))
            raise JobLocked(
                f"Expected no other job on {output.root}, but one is running there (host "
                f"{existing.get('host')!r}, pid {existing.get('pid')}, since {since} UTC, heartbeat "
                f"{now - float(existing.get('heartbeat', 0)):.0f} s ago); wait for it, or stop it; a lock left by a "
                f"dead job is taken over once its heartbeat is {lease_s:.0f} s old"
            ) from None
        logger.warning("taking over a stale lock at %s (host %r, pid %s)", output.path(LOCK),
                       (existing or {}).get("host"), (existing or {}).get("pid"))
        if existing is not None:
            output.fs.rm(output.path(LOCK))
        try:
            create_only(output, output.path(LOCK), data)
        except FileExistsError:
            raise JobLocked(f"Expected to take over the stale lock on {output.root}, but another job took it "
                            "first") from None
    return JobLock(output, token, lease_s, document)
