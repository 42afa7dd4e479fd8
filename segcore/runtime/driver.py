"""The Ray driver: fans work out to Ray workers and sums what they return (the only ray importer in segcore)."""

from __future__ import annotations

import logging
import os
from typing import Sequence

from segcore.categories import Categories
from segcore.metrics import pq
from segcore.runtime.evaluation import EvaluationConfig, ImagePair, chunk, evaluate_pairs

log = logging.getLogger(__name__)
CHUNKS_PER_WORKER = 4  # several chunks per worker so a slow chunk does not hold up the end
_REAPER = None  # the watcher of an embedded Ray instance (see init_ray)


def init_ray(num_cpus: int | None = None) -> None:
    """Joins a running cluster (RAY_ADDRESS or `ray start`) or starts an embedded local Ray with ``num_cpus``.

    Token authentication is left as configured; when RAY_AUTH_MODE is unset it is disabled for the
    embedded instance, which listens on localhost only. An embedded instance is watched by
    :mod:`segcore.runtime.reaper`, so none of its processes outlives this one, even when this one is SIGKILLed.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        from segcore.runtime import reaper

        before = reaper.child_pids()
        # "local": a new instance, even when a `ray start` cluster runs on this machine (RAY_ADDRESS joins one)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        global _REAPER  # kept for the life of the process: its pipe closing is what tells the watcher to act
        _REAPER = reaper.start(sorted(reaper.child_pids() - before))


def evaluate_on_ray(pairs: Sequence[ImagePair], config: EvaluationConfig, categories: Categories) -> pq.PQPartial:
    """Evaluates image pairs on ``config.workers`` concurrent Ray tasks and sums their integer partials.

    The sum does not depend on how the images were split: the summary orders matches by gt rank.
    """
    import ray

    init_ray(num_cpus=max(config.workers, 1))
    remote = ray.remote(num_cpus=1)(evaluate_pairs)
    chunks = chunk(pairs, config.workers * CHUNKS_PER_WORKER)
    categories_ref = ray.put(categories)
    options = dict(config.storage_options)
    total = pq.PQPartial()
    pending: list = []
    for part in chunks:  # at most `workers` chunks in flight
        if len(pending) == config.workers:
            total += _take_finished(ray, pending)
        pending.append(remote.remote(part, config.gt_folder, config.pred_folder, categories_ref, options))
    while pending:
        total += _take_finished(ray, pending)
    log.info("evaluated %d images in %d chunks on Ray", total.images, len(chunks))
    return total


def _take_finished(ray, pending: list) -> pq.PQPartial:
    """Waits for one task of ``pending``, removes it and returns its partial."""
    (done,), rest = ray.wait(pending, num_returns=1)
    pending[:] = rest
    return ray.get(done)


def run_label_job(config, reduce: bool = False) -> dict:
    """Runs the labeling job: plan (validated before Ray starts), an actor pool, retries, progress, summary.

    The output's lock is held from the plan to the end, through the reduce when ``reduce`` is set, so no other
    job (an ``--overwrite`` one included) can change the output while this one reads or writes it.

    Args:
        config: a :class:`segcore.runtime.labeling.LabelJobConfig`.
        reduce: also run the reduce (metrics.json, reports) under the lock; its document is ``"metrics"``.

    Returns:
        ``{"done", "skipped", "failed" (shard id -> last error), "images", "errors", "seconds", "stages"
        (seconds per stage summed over shards), "shards" (per committed shard: shard_id, started and seconds,
        started counted from the job's start), "claim", "categories", and "batch_pixels" (image pixels and
        padded batch pixels fed to the model, where the segmenter counts them)}``.

    Raises:
        segcore.io.lock.LockLost: another job took the output's lock over; this one stopped writing.
    """
    from segcore.runtime.labeling import plan

    job = plan(config)
    try:
        result = _label(config, job)
        if reduce and not config.dry_run:
            job.lock.check()
            result["metrics"] = reduce_job(config)
        return result
    finally:
        if job.lock is not None:
            job.lock.release()


def _label(config, job) -> dict:
    """Runs a planned job's pending shards on an actor pool; the output's lock is held by the caller."""
    import heapq
    import time

    from segcore.io.retry import RetryPolicy
    from segcore.runtime.labeling import shard_truth

    started = time.perf_counter()
    result = {"done": 0, "skipped": len(job.shards) - len(job.pending), "failed": {}, "images": 0, "errors": 0,
              "seconds": 0.0, "stages": {}, "shards": [], "claim": job.claim, "categories": job.categories}
    if config.dry_run or not job.pending:
        return result
    job.lock.start_heartbeat()
    init_ray()
    import ray

    pool = _ActorPool(config, len(job.pending), config.worker_config(job.categories))
    whole_truth = ray.put(job.truth) if job.truth is not None else None  # tar/Parquet shards: keys known when read
    index_of = {spec.shard_id: index for index, spec in enumerate(job.shards)}
    attempts = {spec.shard_id: 0 for spec in job.pending}
    queue = list(reversed(job.pending))
    backoff = RetryPolicy.from_env()  # a failed shard waits before its retry, without holding up the others
    waiting: list = []  # heap of (time it may be retried, shard index, spec)
    while queue or waiting or pool.busy():
        while waiting and waiting[0][0] <= time.monotonic():
            queue.append(heapq.heappop(waiting)[2])
        while queue and pool.has_idle():
            spec = queue.pop()
            truth = shard_truth(job.truth, spec) if spec.kind == "folder" else whole_truth
            pool.submit(spec, index_of[spec.shard_id], truth)
        if not pool.busy() and waiting and pool.has_idle():  # only shards backing off are left
            time.sleep(max(0.0, waiting[0][0] - time.monotonic()))
            continue
        if not pool.busy():  # shards left but every actor was given up
            left = [*queue, *(spec for _, _, spec in waiting)]
            result["failed"].update({spec.shard_id: "no actor left" for spec in left})
            break
        timeout = max(0.0, waiting[0][0] - time.monotonic()) if waiting and pool.has_idle() else None
        finished = pool.next_finished(timeout)
        if finished is None:  # an actor came back from a restart or was given up, or a retry is due
            continue
        job.lock.check()  # another job took the output over: stop before counting or dispatching more
        spec, summary, error, retryable = finished
        if error is None:
            _count(result, summary, time.perf_counter() - started)
        else:
            attempts[spec.shard_id] += 1
            if retryable and attempts[spec.shard_id] <= config.max_retries:
                delay = backoff.delay(attempts[spec.shard_id])
                log.warning("shard %s failed (%s); retry %d in %.1f s", spec.shard_id, error,
                            attempts[spec.shard_id], delay)
                heapq.heappush(waiting, (time.monotonic() + delay, index_of[spec.shard_id], spec))
            else:
                result["failed"][spec.shard_id] = error
                log.error("shard %s failed%s: %s", spec.shard_id,
                          "" if retryable else " (not retried: the same input would fail the same way)", error)
        _log_progress(result, len(job.pending), started)
    result["seconds"] = time.perf_counter() - started
    return result


def worth_retrying(error: BaseException) -> bool:
    """Whether a shard that raised ``error`` may succeed when run again.

    Yes for faults of the moment: storage errors judged transient (:func:`segcore.io.retry.is_transient`, network
    faults, 5xx, throttling), storage retries that ran out (``RetriesExhausted``), and memory pressure (the host's
    ``MemoryError``, a device's ``OutOfMemoryError``), which another actor or a later moment may not have. No for
    everything else: a shard that is not a tar, a missing file, a full disk, a refused permission, a bug. Those
    recur on every try, so the shard is reported at once with its cause. (An actor that died is retried too.)
    """
    from segcore.io.retry import RetriesExhausted, is_transient

    if isinstance(error, (RetriesExhausted, MemoryError)) or type(error).__name__ == "OutOfMemoryError":
        return True
    return is_transient(error)


def reduce_job(config) -> dict:
    """The reduce of a labeling job's output: label statistics, and PQ with ground truth, from the committed
    shards' partials (never pixels)."""
    from segcore.io.commit import Output
    from segcore.runtime.reduce import reduce_output

    return reduce_output(Output.open(config.output, config.storage_options), config.storage_options)


def _count(result: dict, summary: dict, finished: float) -> None:
    """Adds one shard's summary to the job's; ``finished``: seconds since the job started."""
    result["done"] += 1
    result["shards"].append({"shard_id": summary["shard_id"], "started": finished - summary["seconds"],
                             "seconds": summary["seconds"]})
    result["images"] += summary["images"]
    result["errors"] += summary["errors"]
    for stage, seconds in summary["stages"].items():
        result["stages"][stage] = result["stages"].get(stage, 0.0) + seconds
    if "batch_pixels" in summary:
        pixels = result.setdefault("batch_pixels", [0, 0])
        pixels[0] += summary["batch_pixels"][0]
        pixels[1] += summary["batch_pixels"][1]


def _log_progress(result: dict, total: int, started: float) -> None:
    """Images/s, shards done/failed and the ETA, on the driver."""
    import time

    elapsed = time.perf_counter() - started
    finished = result["done"] + len(result["failed"])
    eta = elapsed / finished * (total - finished) if finished else float("nan")
    log.info("shards %d/%d done, %d failed; %.1f img/s; ETA %.0f s", result["done"], total,
             len(result["failed"]), result["images"] / max(elapsed, 1e-9), eta)


class _ActorPool:
    """``ShardWorker`` actors, one shard in flight each; a dead actor is restarted by Ray and its shard requeued.

    Calls on an actor that Ray is restarting fail at once (``ActorUnavailableError``, as the label_shard calls
    have no task retries), so an actor whose shard died is only given work again once a readiness probe says it
    is back; one not back ``RESTART_TIMEOUT_S`` after dying, or dead for good, leaves the pool.
    """

    RESTART_TIMEOUT_S = 900.0  # a model load on a fresh node can take minutes
    PROBE_RETRIES = 10  # each probe waits through a few seconds of the restart before it is sent again

    def __init__(self, config, n_shards: int, worker_config):
        import ray

        from segcore.runtime.worker import ShardWorker

        resources = ray.cluster_resources()
        gpus = config.gpus_per_actor if config.gpus_per_actor is not None else (1 if resources.get("GPU") else 0)
        count = config.actors or (int(resources.get("GPU", 0) // max(gpus, 1)) if gpus else
                                  max(1, int(resources.get("CPU", 1) // 2)))
        count = max(1, min(count, n_shards))
        actor_class = ray.remote(num_gpus=gpus, num_cpus=config.cpus_per_actor, max_restarts=-1)(ShardWorker)
        self.idle = [actor_class.remote(worker_config) for _ in range(count)]
        self.running: dict = {}  # object ref -> (actor, spec)
        self.restarting: dict = {}  # readiness probe ref -> (actor, when it died)
        log.info("%d actors, %s GPU and %s CPU each", count, gpus, config.cpus_per_actor)

    def has_idle(self) -> bool:
        return bool(self.idle)

    def busy(self) -> bool:
        """Shards in flight or actors coming back: ``next_finished`` has something to wait for."""
        return bool(self.running or self.restarting)

    def submit(self, spec, *args) -> None:
        """Sends ``label_shard(spec, *args)`` to an idle actor."""
        actor = self.idle.pop()
        self.running[actor.label_shard.remote(spec, *args)] = (actor, spec)

    def next_finished(self, timeout: float | None = None):
        """Waits for one shard or restarted actor, at most ``timeout`` seconds (None: as long as it takes).

        Returns:
            ``(spec, summary, None, False)``, ``(spec, None, error text, whether a retry may succeed)``, or None
            when an actor came back from a restart (it is idle again) or was given up, or the timeout passed.
        """
        import time

        import ray

        ready, _ = ray.wait([*self.running, *self.restarting], num_returns=1, timeout=timeout)
        if not ready:
            return None
        (ref,) = ready
        if ref in self.restarting:
            self._restarted(ref)
            return None
        actor, spec = self.running.pop(ref)
        try:
            summary = ray.get(ref)
        except ray.exceptions.RayActorError as error:  # the actor died: Ray restarts it (max_restarts=-1)
            self._probe(actor, time.monotonic())
            return spec, None, f"actor died: {type(error).__name__}", True
        except ray.exceptions.RayTaskError as error:
            self.idle.append(actor)
            cause = error.cause if getattr(error, "cause", None) is not None else error
            return spec, None, f"{type(cause).__name__}: {cause}", worth_retrying(cause)
        self.idle.append(actor)
        return spec, summary, None, False

    def _probe(self, actor, died: float) -> None:
        """Asks a restarting actor whether it is up; its task retries wait through the restart."""
        probe = actor.__ray_ready__.options(max_task_retries=self.PROBE_RETRIES).remote()
        self.restarting[probe] = (actor, died)

    def _restarted(self, probe) -> None:
        """An actor is idle again once its probe succeeds; probed again while restarting, else given up."""
        import time

        import ray

        actor, died = self.restarting.pop(probe)
        try:
            ray.get(probe)
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() - died < self.RESTART_TIMEOUT_S:
                self._probe(actor, died)
                return
            ray.kill(actor, no_restart=True)
            log.error("an actor did not come back within %.0f s of dying; %d left", self.RESTART_TIMEOUT_S,
                      len(self.idle) + len(self.running) + len(self.restarting))
            return
        except ray.exceptions.RayActorError as error:
            log.error("an actor is dead for good (%s); %d left", type(error).__name__,
                      len(self.idle) + len(self.running) + len(self.restarting))
            return
        log.info("an actor is back after a restart")
        self.idle.append(actor)
