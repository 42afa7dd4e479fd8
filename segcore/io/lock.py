"""One running job per output: a lease file written create-only, kept alive by a heartbeat, released at the end.

A second job started on the same output while the first runs is refused instead of interleaving. A lock left by
a job that died is taken over: at once when its driver ran on this host and that process is gone, else once its
heartbeat is older than the lease.

The lock's content is written in one step (``create_only``: complete or absent, never empty), and every rewrite
replaces it whole. Taking over a stale lock and renewing a held one are done under a second create-only file,
``_lock.json.takeover``, so two jobs cannot both take over one stale lock and a renewal cannot overwrite the lock
of a job that took it over. A job whose heartbeat finds the lock gone to another job marks itself ``lost``; the
driver stops and exits non-zero, naming the holder.
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
TAKEOVER = "_lock.json.takeover"
LEASE_S = 120.0  # a lock whose heartbeat is older than this is stale; the heartbeat runs every LEASE_S / 4
TAKEOVER_S = 30.0  # a takeover file older than this was left by a job that died while taking over


class JobLocked(RuntimeError):
    """Another job holds the output; the message says which (host, pid, since when) and how to proceed."""


class LockLost(RuntimeError):
    """This job's lock was taken over by another job; the message names it. The job must stop writing."""


def describe_holder(document: dict) -> str:
    """``host 'h', pid 12, since 2026-12-05 10:00:00 UTC`` for messages."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(document.get("acquired", 0) or 0)))
    return f"host {document.get('host')!r}, pid {document.get('pid')}, since {since} UTC"


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
    lost: str | None = None  # set when another job holds the lock now: who
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return self.output.path(LOCK)

    def refresh(self) -> None:
        """Writes a new heartbeat if the lock is still this job's; otherwise marks it ``lost`` and stops the
        heartbeat. Skipped (the next beat tries again) while another job holds the takeover file."""
        with _takeover(self.output) as held:
            if not held:
                return
            current = _read(self.output)
            if current is None or current.get("token") != self.token:
                self.lost = describe_holder(current) if current else "no job (the lock file is gone)"
                logger.error("the lock at %s is no longer this job's: held by %s", self.path, self.lost)
                self._stop.set()
                return
            self.document["heartbeat"] = time.time()
            write_whole(self.output, self.path, json.dumps(self.document).encode())

    def check(self) -> None:
        """Raises LockLost when the heartbeat found the lock taken over (call between units of work).

        Raises:
            LockLost: another job holds the output now; the message names it.
        """
        if self.lost is not None:
            raise LockLost(f"Expected to hold the lock of {self.output.root} until the end, but it was taken over "
                           f"(now: {self.lost}); this job stops writing")

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


def _read(output: Output, name: str = LOCK) -> dict | None:
    try:
        document = json.loads(output.fs.cat_file(output.path(name)))
    except FileNotFoundError:
        return None
    except ValueError:  # foreign or legacy half-written content: stale, with a heartbeat of 0
        return {}
    return document if isinstance(document, dict) else {}


class _takeover:
    """Holds ``_lock.json.takeover`` (create-only) for a takeover or a renewal; ``held`` False when another job
    holds it. A takeover file older than ``TAKEOVER_S`` (its job died inside) is removed first."""

    def __init__(self, output: Output):
        self.output = output
        self.path = output.path(TAKEOVER)
        self.held = False

    def __enter__(self) -> bool:
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode()
        for _ in range(2):
            try:
                create_only(self.output, self.path, content)
                self.held = True
                return True
            except FileExistsError:
                existing = _read(self.output, TAKEOVER)
                if existing is None or time.time() - float(existing.get("time", 0) or 0) <= TAKEOVER_S:
                    return False
                logger.warning("removing %s, left by a job that died while taking over", self.path)
                try:
                    self.output.fs.rm(self.path)
                except FileNotFoundError:
                    pass
        return False

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                self.output.fs.rm(self.path)
            except FileNotFoundError:
                pass


def acquire(output: Output, lease_s: float = LEASE_S) -> JobLock:
    """Takes the output's lock (create-only), taking over a stale one under the takeover file.

    Raises:
        JobLocked: a live job holds it, or another job is taking over the same stale lock.
    """
    token = uuid.uuid4().hex
    now = time.time()
    document = {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "acquired": now, "heartbeat": now}
    data = json.dumps(document).encode()
    try:
        create_only(output, output.path(LOCK), data)
        return JobLock(output, token, lease_s, document)
    except FileExistsError:
        pass
    with _takeover(output) as held:
        existing = _read(output)
        if not held or (existing is not None and not is_stale(existing, lease_s)):
            holder = existing or {}
            raise JobLocked(
                f"Expected no other job on {output.root}, but one is running there ({describe_holder(holder)}, "
                f"heartbeat {now - float(holder.get('heartbeat', 0) or 0):.0f} s ago)"
                + ("" if held else ", or taking over its lock") + "; wait for it, or stop it; a lock left by a "
                f"dead job is taken over once its heartbeat is {lease_s:.0f} s old"
            )
        if existing is not None:
            logger.warning("taking over a stale lock at %s (%s)", output.path(LOCK), describe_holder(existing))
        write_whole(output, output.path(LOCK), data)  # replaced whole, under the takeover file
    return JobLock(output, token, lease_s, document)
