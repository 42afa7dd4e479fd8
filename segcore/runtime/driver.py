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


def init_ray(num_cpus: int | None = None) -> None:
    """Joins a running cluster (RAY_ADDRESS or `ray start`) or starts an embedded local Ray with ``num_cpus``.

    Token authentication is left as configured; when RAY_AUTH_MODE is unset it is disabled for the
    embedded instance, which listens on localhost only.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


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
