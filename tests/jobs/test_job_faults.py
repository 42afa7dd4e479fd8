"""The labeling job under faults: the driver SIGKILLed and rerun, and a model actor SIGKILLed in the middle of a shard.

Both runs must end with every shard committed exactly once and the same metrics as an uninterrupted run.
Processes are found through ``/proc`` (Linux), never by name alone: only descendants of the process that started
them count, so other Ray instances on the machine are left alone.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from segcore.io.commit import Output, committed_shards
from segcore.models.registry import ModelOptions
from segcore.runtime.driver import reduce_job, run_label_job
from segcore.runtime.labeling import LabelJobConfig
from segcore.runtime.verify import verify_output
from segcore.synthetic import write_demo_shards

from job_checks import (
    check_committed_once, check_metrics_equal, command_line, reference_metrics, shard_being_read, shard_files,
    shard_ids, wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc"),
]

ROOT = Path(__file__).parents[2]
N_SHARDS = 4
IMAGES_PER_SHARD = 40  # most of a second of work per shard on one CPU: wide enough to kill in the middle of one
SHARD_IDS = shard_ids(N_SHARDS)


# ---- processes, through /proc


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(ppid, session id, start time)`` of a live process, or None when it is gone (zombies count as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(root: int) -> dict[int, int]:
    """Live descendants of ``root``: pid -> start time (to tell a reused pid from the same process)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None:
            children.setdefault(stat[0], []).append((pid, stat[2]))
    found, todo = {}, [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            found[pid] = started
            todo.append(pid)
    return found


def _alive(processes: dict[int, int]) -> dict[int, str]:
    """Those of ``processes`` (pid -> start time) still running: pid -> command line."""
    alive = {}
    for pid, started in processes.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started:
            alive[pid] = command_line(pid)
    return alive


def _shard_worker(root: int) -> int | None:
    """The pid of the ``ShardWorker`` actor process among ``root``'s descendants, if exactly one runs."""
    pids = [pid for pid in _descendants(root) if command_line(pid).startswith("ray::ShardWorker")]
    return pids[0] if len(pids) == 1 else None


# ---- the job and its output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_demo_shards(tmp_path_factory.mktemp("corpus"), n_shards=N_SHARDS, images_per_shard=IMAGES_PER_SHARD)


def job(corpus: str, output: str, **changes) -> LabelJobConfig:
    """One actor on one (fake) GPU: shards run one after another, in order."""
    settings = dict(input=corpus, output=output, model="demo", model_options=ModelOptions(device="cpu"), actors=1,
                    gpus_per_actor=1, cpus_per_actor=1.0, batch_size=8, decode_threads=2, encode_threads=1)
    return LabelJobConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def reference(ray_with_gpus, corpus, tmp_path_factory) -> dict:
    """metrics.json and data checksums of an uninterrupted run of the corpus."""
    return reference_metrics(job(corpus, str(tmp_path_factory.mktemp("reference") / "labels")), N_SHARDS)


# ---- the driver killed and rerun


def label_command(corpus: str, output: Path) -> list[str]:
    return [sys.executable, "-m", "jobs.label", "--input", corpus, "--output", str(output), "--actors", "1",
            "--gpus-per-actor", "0", "--cpus-per-actor", "1", "--device", "cpu", "--batch-size", "8"]


def driver_env() -> dict[str, str]:
    """The test's environment, without RAY_ADDRESS: the driver starts its own embedded Ray."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def test_a_killed_driver_is_rerun_and_labels_only_the_missing_shards(reference, corpus, tmp_path):
    output_dir = tmp_path / "labels"
    command = label_command(corpus, output_dir)
    output = Output.open(str(output_dir))
    markers = Path(output.marker_path(SHARD_IDS[0])).parent

    def committed() -> list[str]:
        return sorted(p.name for p in markers.iterdir()) if markers.exists() else []

    with open(tmp_path / "first.log", "wb") as log:  # its own session: the group is the driver and all its Ray
        driver = subprocess.Popen(command, cwd=ROOT, env=driver_env(), stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            wait_for(lambda: len(committed()) >= 2 or driver.poll() is not None, 120, "two committed shards")
            ray_processes = _descendants(driver.pid)
            commands = list(_alive(ray_processes).values())
        finally:
            os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as the OOM killer or `kill -9 PID` would
            driver.wait()
    assert driver.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()
    assert any("raylet" in c for c in commands) and any("gcs_server" in c for c in commands), commands
    assert any(c.startswith("ray::ShardWorker") for c in commands), commands
    session = re.search(r"--session[-_]dir=(\S+)", next(c for c in commands if "raylet" in c)).group(1)

    def lingering() -> dict[int, str]:  # the run's processes, and anything else naming its Ray session
        left = _alive(ray_processes)
        left.update({pid: command_line(pid) for pid in _pids() if session in command_line(pid) and _stat(pid) is not None})
        return left

    try:  # Ray's agents outlived a killed driver by about 60 s before the driver's reaper ended them
        wait_for(lambda: not lingering(), 15, "the killed run's Ray processes to exit", interval=0.2)
    finally:
        for pid in _alive(ray_processes):
            os.kill(pid, signal.SIGKILL)
    assert any("reaper.py" in c for c in commands), commands

    before = committed()
    assert 2 <= len(before) < N_SHARDS, before
    kept = {path: path.stat().st_mtime_ns for shard_id in before for path in shard_files(output_dir, shard_id)}
    assert all(Path(output.data_path(shard_id)) in kept for shard_id in before)

    rerun = subprocess.run(command, check=False, cwd=ROOT, env=driver_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout
    missing = N_SHARDS - len(before)
    assert f"{N_SHARDS} shards, {len(before)} committed, {missing} to do (resumed)" in rerun.stdout
    assert f"shards: {missing} committed now, {len(before)} already committed, 0 failed" in rerun.stdout
    assert f"images: {missing * IMAGES_PER_SHARD} (0 error rows)" in rerun.stdout
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # committed before the kill: not rewritten
    check_committed_once(output_dir, N_SHARDS, IMAGES_PER_SHARD)
    check_metrics_equal(output_dir, reference)
    assert verify_output(str(output_dir)).problems == []


# ---- an actor killed in the middle of a shard


def test_an_actor_killed_mid_shard_is_restarted_and_the_shard_redone(reference, corpus, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="segcore.runtime.driver")
    output_dir = tmp_path / "labels"
    config = job(corpus, str(output_dir))
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = run_label_job(config)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            outcome["error"] = error

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        # A shard after the first (the actor is warm and shard 0 committed), caught while its tar is being read:
        # its marker is written only after the last image is labelled, so it is in the middle of that shard.
        def actor_reading_a_later_shard():
            pid = _shard_worker(os.getpid())
            stat = _stat(pid) if pid is not None else None
            shard_id = shard_being_read(pid) if stat is not None else None
            if shard_id is not None and shard_id != SHARD_IDS[0]:
                return pid, stat[2], shard_id
            assert runner.is_alive(), outcome
            return None

        pid, started, killed = wait_for(actor_reading_a_later_shard, 120, "the actor to read a shard after the first")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive({pid: started}), 10, "the killed actor to exit")
        output = Output.open(str(output_dir))
        assert not Path(output.marker_path(killed)).exists(), f"{killed} was committed before the kill"
        assert SHARD_IDS[0] in committed_shards(output)
    finally:
        runner.join(240)
    assert not runner.is_alive(), "the job did not finish after its actor was killed"
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert result["failed"] == {} and result["done"] == N_SHARDS and result["images"] == N_SHARDS * IMAGES_PER_SHARD
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 1 and retries[0].startswith(f"shard {killed} failed (actor died"), retries
    check_committed_once(output_dir, N_SHARDS, IMAGES_PER_SHARD)
    assert reduce_job(config) is not None
    check_metrics_equal(output_dir, reference)
    assert verify_output(str(output_dir)).problems == []
