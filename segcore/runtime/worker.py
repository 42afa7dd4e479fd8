"""The in-actor pipeline: one shard from storage to a committed Parquet file.

``ShardWorker`` is a plain class (the driver wraps it with ``ray.remote`` at submit time), so it runs and is
tested without Ray: read -> decode (thread pool, bounded look-ahead) -> batch -> model -> encode id-map PNGs
(thread pool) -> one Parquet file -> commit (data, errors, marker). A bad image becomes a row with
``status != "ok"`` and its reason, also in ``errors/<shard>.jsonl``; the shard goes on. A shard that cannot be
read at all raises, so the driver retries or reports it; nothing is committed for it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np

from segcore.io.commit import Output, commit_shard
from segcore.io.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_rgb
from segcore.io.shards import Sample, ShardSpec, read_shard
from segcore.io.table import error_row, image_row, rows_to_table, table_to_parquet
from segcore.models.registry import ModelOptions, load_segmenter
from segcore.metrics.pq import PQInputError, PQPartial, match_image
from segcore.png import decode_ids, encode_ids

logger = logging.getLogger(__name__)
RANK_STRIDE = 1_000_000_000  # image rank = shard index * stride + position: shard order, then member order


@dataclass(frozen=True)
class WorkerConfig:
    """What every actor of a job needs.

    Attributes:
        output: the job's output URI.
        model: model spec (see segcore.models.registry).
        model_options: device, dtype, thresholds, label map.
        batch_size: images per forward pass.
        decode_threads: threads decoding images ahead of the model.
        encode_threads: threads encoding id-map PNGs behind it.
        max_pixels: images with more pixels are refused before decoding.
        storage_options: fsspec options for the input and output.
        torch_threads: torch's intra-op threads in this actor (its CPU share); None leaves torch's default.
    """

    output: str
    model: str = "demo"
    model_options: ModelOptions = field(default_factory=ModelOptions)
    batch_size: int = 8
    decode_threads: int = 4
    encode_threads: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    storage_options: Mapping = field(default_factory=dict)
    torch_threads: int | None = None


@dataclass
class Decoded:
    """A sample after decoding: the image, or the status and reason it failed."""

    sample: Sample
    image: np.ndarray | None = None
    status: str = "ok"
    error: str | None = None


class ShardWorker:
    """Loads the model once; labels and commits shards one at a time."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        if config.torch_threads:
            import torch

            torch.set_num_threads(config.torch_threads)  # more threads than CPUs given slows a shared node down
        self.segmenter = load_segmenter(config.model, config.model_options)
        self.output = Output.open(config.output, config.storage_options)
        self.decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        self.encode_pool = ThreadPoolExecutor(config.encode_threads, thread_name_prefix="encode")
        self._partial_lock = threading.Lock()
        self._rank = 0

    def label_shard(self, spec: ShardSpec, shard_index: int = 0) -> dict:
        """Labels every image of a shard and commits it; returns a summary (counts and seconds per stage).

        Samples that carry ground truth (a ``<key>.panoptic.png`` member and ``segments_info`` in the ``.json``)
        are matched on the in-memory maps and the shard's PQ partial is committed with it; an image's rank for
        the reference summation order is ``shard_index * RANK_STRIDE + position in the shard``.

        Raises:
            segcore.io.shards.ShardError: the shard cannot be read (not a tar, truncated, ...); nothing is
                committed.
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}
        rows, errors = [], []
        partial = PQPartial()
        self._rank = shard_index * RANK_STRIDE
        for batch in self._batches(self._decoded(spec, timings)):
            for row in self._label_batch(batch, timings, partial):
                rows.append(row)
                if row["status"] != "ok":
                    errors.append({k: row[k] for k in ("image_id", "source", "status", "error")})
        write_started = time.perf_counter()
        data = table_to_parquet(rows_to_table(rows))
        error_lines = "".join(json.dumps(e) + "\n" for e in errors).encode()
        partials = json.dumps(partial.to_json()).encode() if partial.images else None
        commit_shard(self.output, spec.shard_id, data, rows=len(rows), errors=error_lines or None, partials=partials)
        timings["write"] = time.perf_counter() - write_started
        summary = {
            "shard_id": spec.shard_id,
            "images": len(rows),
            "errors": len(errors),
            "seconds": time.perf_counter() - started,
            "stages": timings,
        }
        logger.info("shard %s: %d images, %d errors", spec.shard_id, len(rows), len(errors))
        return summary

    def _decoded(self, spec: ShardSpec, timings: dict[str, float]) -> Iterator[Decoded]:
        """Samples of the shard decoded in the pool, in order, at most ``2 * batch_size`` ahead of the model."""
        window: deque[Future] = deque()
        ahead = 2 * self.config.batch_size
        read_started = time.perf_counter()
        for sample in read_shard(spec, self.config.storage_options):
            timings["read"] = timings.get("read", 0.0) + time.perf_counter() - read_started
            window.append(self.decode_pool.submit(self._decode, sample))
            if len(window) >= ahead:
                yield window.popleft().result()
            read_started = time.perf_counter()
        while window:
            yield window.popleft().result()

    def _decode(self, sample: Sample) -> Decoded:
        """Decodes one sample; failures become a status and reason."""
        if sample.error is not None:
            return Decoded(sample, status="bad_member", error=sample.error)
        try:
            return Decoded(sample, decode_rgb(sample.image_bytes or b"", sample.source, self.config.max_pixels))
        except ImageDecodeError as error:
            return Decoded(sample, status=error.status, error=str(error))

    def _batches(self, decoded: Iterator[Decoded]) -> Iterator[list[Decoded]]:
        """Groups decoded samples into lists of ``batch_size``."""
        batch: list[Decoded] = []
        for item in decoded:
            batch.append(item)
            if len(batch) == self.config.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _label_batch(self, batch: list[Decoded], timings: dict[str, float], partial: PQPartial) -> list[dict]:
        """Segments the batch's good images and builds every row, in the batch's order; matches ground truth."""
        good = [item for item in batch if item.image is not None]
        results = iter(self.segmenter.segment([item.image for item in good], timings) if good else [])
        encode_started = time.perf_counter()
        pending: list[Future | dict] = []
        for item in batch:
            if item.image is None:
                pending.append(error_row(item.sample.key, item.sample.source, item.status, item.error or "",
                                         self.segmenter.spec))
            else:
                pending.append(self.encode_pool.submit(self._image_row, item, next(results), self._rank, partial))
            self._rank += 1
        rows = [p.result() if isinstance(p, Future) else p for p in pending]
        timings["encode"] = timings.get("encode", 0.0) + time.perf_counter() - encode_started
        return rows

    def _image_row(self, item: Decoded, result, rank: int, partial: PQPartial) -> dict:
        """The row of a labelled image: its id map as a PNG and its segments; its PQ partial is added."""
        id_map = result.id_map_numpy().astype(np.uint32)  # once: the PNG and the PQ match both take uint32
        if item.sample.panoptic_png is not None:
            image_partial = self._match_truth(item.sample, id_map, result.segments, rank)
            with self._partial_lock:
                partial += image_partial
        height, width = id_map.shape
        png = encode_ids(id_map)
        return image_row(item.sample.key, item.sample.source, width, height, png, result.segments, self.segmenter.spec)

    def _match_truth(self, sample: Sample, id_map: np.ndarray, segments: list[dict], rank: int) -> PQPartial:
        """Matches a prediction to the sample's embedded ground truth (panopticapi's rules)."""
        gt_segments = (sample.metadata or {}).get("segments_info")
        if gt_segments is None:
            raise PQInputError(f"{sample.source}: ground-truth map without segments_info in its .json member")
        gt_ids = decode_ids(sample.panoptic_png)
        return match_image(sample.source, gt_ids, gt_segments, id_map, segments,
                           self.segmenter.categories, rank)

    def close(self) -> None:
        """Stops the thread pools."""
        self.decode_pool.shutdown()
        self.encode_pool.shutdown()
