"""One job per output: the lock is create-only, refused while its job lives, taken over once the job is gone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from segcore.io.commit import Output
from segcore.io.lock import LOCK, JobLocked, acquire, is_stale


@pytest.fixture
def output(tmp_path) -> Output:
    return Output.open(str(tmp_path / "out"))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_held_lock_refuses_a_second_job_and_release_frees_it(output):
    lock = acquire(output)
    with pytest.raises(JobLocked, match=f"pid {lock.document['pid']}"):
        acquire(output)
    lock.release()
    assert not output.fs.exists(output.path(LOCK))
    acquire(output).release()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(output):
    lock = acquire(output)
    stale = {**lock.document, "pid": dead_pid(), "token": "old"}
    output.fs.pipe_file(output.path(LOCK), json.dumps(stale).encode())
    taken = acquire(output)
    assert json.loads(output.fs.cat_file(output.path(LOCK)))["token"] == taken.token != "old"
    lock.release()  # the old holder's release must not remove the new holder's lock
    assert output.fs.exists(output.path(LOCK))
    taken.release()


def test_another_hosts_lock_is_stale_only_when_its_heartbeat_is_older_than_the_lease(output):
    now = time.time()
    other = {"token": "t", "host": socket.gethostname() + "-elsewhere", "pid": 1, "acquired": now, "heartbeat": now}
    assert not is_stale(other, lease_s=60, now=now + 59)
    assert is_stale(other, lease_s=60, now=now + 61)
    output.fs.makedirs(output.root, exist_ok=True)
    output.fs.pipe_file(output.path(LOCK), json.dumps(other).encode())
    with pytest.raises(JobLocked, match="elsewhere"):
        acquire(output, lease_s=60)
    output.fs.pipe_file(output.path(LOCK), json.dumps({**other, "heartbeat": now - 61}).encode())
    acquire(output, lease_s=60).release()


def test_the_heartbeat_keeps_the_lock_fresh(output):
    lock = acquire(output, lease_s=0.4)
    first = lock.document["heartbeat"]
    lock.start_heartbeat()
    time.sleep(0.5)
    current = json.loads(output.fs.cat_file(output.path(LOCK)))
    assert current["heartbeat"] > first and not is_stale(current, lease_s=0.4)
    with pytest.raises(JobLocked):
        acquire(output, lease_s=0.4)
    lock.release()
    assert not output.fs.exists(output.path(LOCK))


def test_a_thousand_simultaneous_starts_grant_the_lock_once_each(tmp_path):
    # half of the rounds race to create the lock, half to take over a stale one (a dead process's lock)
    import multiprocessing

    from lock_race import contend

    rounds, contenders = 1000, 4
    for round_number in range(1, rounds, 2):
        folder = tmp_path / f"{round_number:05d}"
        folder.mkdir()
        stale = {"token": "dead", "host": socket.gethostname(), "pid": dead_pid() if round_number == 1 else 999_999_999,
                 "acquired": 0, "heartbeat": 0}
        (folder / LOCK).write_text(json.dumps(stale))
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(contenders), context.Queue()
    processes = [context.Process(target=contend, args=(str(tmp_path), rounds, barrier, results))
                 for _ in range(contenders)]
    for process in processes:
        process.start()
    grants, failures = [0] * rounds, []
    for _ in range(rounds * contenders):
        round_number, granted = results.get(timeout=120)
        if isinstance(granted, str):
            failures.append((round_number, granted))
        else:
            grants[round_number] += granted
    for process in processes:
        process.join(timeout=60)
    assert failures == []
    assert grants == [1] * rounds  # never two, never none


def test_a_job_whose_lock_was_taken_over_finds_out_and_must_stop(output):
    from segcore.io.lock import LockLost

    lock = acquire(output)
    other = {"token": "other", "host": "elsewhere", "pid": 77, "acquired": time.time(), "heartbeat": time.time()}
    output.fs.pipe_file(output.path(LOCK), json.dumps(other).encode())  # another job took it over
    lock.check()  # nothing noticed before the next heartbeat
    lock.refresh()
    with pytest.raises(LockLost, match="'elsewhere', pid 77"):
        lock.check()
    assert json.loads(output.fs.cat_file(output.path(LOCK)))["token"] == "other"  # its lock is left alone
    lock.release()
    assert output.fs.exists(output.path(LOCK))


def test_renewal_waits_while_another_job_takes_over(output):
    lock = acquire(output)
    output.fs.pipe_file(output.path("_lock.json.takeover"), json.dumps({"time": time.time()}).encode())
    before = output.fs.cat_file(output.path(LOCK))
    lock.refresh()  # skipped: it must not overwrite a lock being taken over
    assert output.fs.cat_file(output.path(LOCK)) == before and lock.lost is None
    with pytest.raises(JobLocked, match="taking over"):
        acquire(output)
    output.fs.rm(output.path("_lock.json.takeover"))
    lock.release()
