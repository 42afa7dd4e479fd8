"""The labeling job when a node is lost: a simulated worker node removed while its actor is in the middle of a shard.

A ``ray.cluster_utils.Cluster`` runs in this process: a head (the driver's node, no GPU) and two worker nodes with
one fake GPU each, so the single actor (one GPU) lives on one worker node and can only come back on the other.
The node holding the actor is frozen (SIGSTOP: a lost node stops at once) and removed without a graceful shutdown
while the actor reads a shard after the first;
the job must still commit every shard exactly once, with the same PQ as an uninterrupted run.
The actor's process is found through ``/proc`` among the descendants of each node's raylet (Linux only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from segcore.io.commit import Output, committed_shards
from segcore.models.registry import ModelOptions
from segcore.runtime.driver import reduce_job, run_label_job
from segcore.runtime.labeling import LabelJobConfig
from segcore.runtime.verify import verify_output
from segcore.synthetic import write_demo_shards

from job_checks import (check_committed_once, check_metrics_equal, command_line, reference_metrics, shard_being_read,
                        shard_ids, wait_for)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds processes through /proc"),
]

N_SHARDS = 4
IMAGES_PER_SHARD = 32
SHARD_IDS = shard_ids(N_SHARDS)
# The GCS declares a node dead after this many missed health checks; Ray's defaults (3 s x 5) would add ~15 s.
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                   "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


# ---- processes, through /proc


def _process_stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time)`` of a live process; None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return None if fields[0] in ("Z", "X") else (int(fields[1]), int(fields[19]))


def _children() -> dict[int, list[int]]:
    """Parent pid -> pids of its live children, for every process."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _process_stat(int(name))) is not None:
            children.setdefault(stat[0], []).append(int(name))
    return children


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    """Live descendants of ``root``."""
    found, todo = [], [root]
    while todo:
        found += (kids := children.get(todo.pop(), []))
        todo += kids
    return found


def _raylet_pid(node) -> int:
    (info,) = node.all_processes["raylet"]
    return info.process.pid


def _actors_on(node, children: dict[int, list[int]] | None = None) -> list[int]:
    """The pids of the ``ShardWorker`` actor processes the node's raylet started (an actor's process can outlive
    its job by a moment); ``children``: a process table already read."""
    pids = _tree(_raylet_pid(node), children if children is not None else _children())
    return [pid for pid in pids if command_line(pid).startswith("ray::ShardWorker")]




# ---- the cluster, the corpus and the job


@pytest.fixture(scope="module")
def cluster():
    """A head node with the driver (1 CPU, no GPU) and two worker nodes with 1 CPU and 1 fake GPU each."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a Ray left connected by an earlier test: this module needs its own
        ray.shutdown()
    simulated = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False, "_system_config": FAST_NODE_DEATH})
    try:
        for _ in range(2):
            simulated.add_node(num_cpus=1, num_gpus=1)
        simulated.wait_for_nodes()
        ray.init(address=simulated.address, log_to_driver=False)  # run_label_job's init_ray keeps this connection
        assert ray.cluster_resources().get("GPU") == 2
        yield simulated
    finally:
        ray.shutdown()
        simulated.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_demo_shards(tmp_path_factory.mktemp("corpus"), n_shards=N_SHARDS, images_per_shard=IMAGES_PER_SHARD)


def job(corpus: str, output: str) -> LabelJobConfig:
    """One actor on one (fake) GPU: it fits on one worker node only, and shards run one after another."""
    return LabelJobConfig(input=corpus, output=output, model="demo", model_options=ModelOptions(device="cpu"),
                          actors=1, gpus_per_actor=1, cpus_per_actor=0.5, batch_size=8, decode_threads=1,
                          encode_threads=1)


@pytest.fixture(scope="module")
def reference(cluster, corpus, tmp_path_factory) -> dict:
    """metrics.json and data checksums of an uninterrupted run on the same cluster."""
    return reference_metrics(job(corpus, str(tmp_path_factory.mktemp("reference") / "labels")), N_SHARDS)


# ---- the test


def test_a_node_lost_mid_shard_moves_its_actor_and_shard_to_the_surviving_node(cluster, reference, corpus, tmp_path,
                                                                                caplog):
    caplog.set_level(logging.INFO, logger="segcore.runtime.driver")
    output_dir = tmp_path / "labels"
    config = job(corpus, str(output_dir))
    output = Output.open(str(output_dir))
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = run_label_job(config)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            outcome["error"] = error

    # Only this run's actor may be found: the reference run's has left (its process outlives its job briefly).
    wait_for(lambda: not any(_actors_on(node) for node in cluster.worker_nodes), 30, "earlier actors to exit")
    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        # The actor, warm and past shard 0, caught while it reads a later shard's tar: that shard's marker is
        # written only after its last image, so the node holds it in the middle.
        def actor_mid_shard():
            assert runner.is_alive(), outcome
            children = _children()
            for node in cluster.worker_nodes:
                for pid in _actors_on(node, children):
                    shard_id = shard_being_read(pid)
                    if shard_id is not None and shard_id != SHARD_IDS[0]:
                        return node, pid, shard_id
            return None

        node, pid, lost_shard = wait_for(actor_mid_shard, 120, "the actor to read a shard after the first")
        (survivor,) = cluster.worker_nodes - {node}
        # A lost node stops at once: freeze the actor first, so it cannot finish the shard while the node's
        # processes are torn down (which takes seconds on a loaded machine), then kill what the node leaves.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        removed_at = time.time()
        cluster.remove_node(node, allow_graceful=False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _process_stat(pid) is None, 30, "the lost node's actor process to exit")
        assert not Path(output.marker_path(lost_shard)).exists(), f"{lost_shard} was committed before the loss"
        assert SHARD_IDS[0] in committed_shards(output)
        # Ray restarts the actor (max_restarts=-1) where a GPU is left: the surviving node.
        wait_for(lambda: _actors_on(survivor) or not runner.is_alive(), 120, "the actor on the surviving node")
        restarted_on_survivor = bool(_actors_on(survivor))
        restart_seconds = time.time() - removed_at
    finally:
        runner.join(180)
    assert not runner.is_alive(), "the job did not finish after the node was lost"
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert result["failed"] == {} and result["done"] == N_SHARDS and result["images"] == N_SHARDS * IMAGES_PER_SHARD
    assert restarted_on_survivor, "the job finished before an actor showed on the surviving node"
    messages = [record.getMessage() for record in caplog.records]
    retries = [m for m in messages if "retry" in m]
    assert len(retries) == 1 and retries[0].startswith(f"shard {lost_shard} failed (actor died"), retries
    assert "an actor is back after a restart" in messages, messages
    assert not [m for m in messages if "given up" in m or "dead for good" in m or "did not come back" in m]
    seen = {m: r.created - removed_at for r in caplog.records for m in [r.getMessage()]
            if "retry" in m or "back after a restart" in m}
    print(f"lost {lost_shard}; actor process on the surviving node {restart_seconds:.1f} s after the removal;",
          ", ".join(f"{m!r} at {t:.1f} s" for m, t in seen.items()))
    check_committed_once(output_dir, N_SHARDS, IMAGES_PER_SHARD)
    reduce_job(config)
    check_metrics_equal(output_dir, reference)
    assert verify_output(str(output_dir)).problems == []
