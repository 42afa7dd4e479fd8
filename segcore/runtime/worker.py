"""The in-actor pipeline: one shard from storage to a committed Parquet file.

``ShardWorker`` is a plain class (the driver wraps it with ``ray.remote`` at submit time), so it runs and is
tested without Ray: read (a thread) -> decode (thread pool, bounded look-ahead) -> batch -> model -> id maps to the
host -> encode id-map PNGs (thread pool, while the model works on the next batch) -> one Parquet file -> commit
(data, errors, marker). A bad image becomes a row with
``status != "ok"`` and its reason, also in ``errors/<shard>.jsonl``; the shard goes on. An image whose ground
truth is broken keeps its prediction, gets the status ``bad_ground_truth`` with the reason, and is left out of PQ.
A shard that cannot be read at all raises, so the driver retries or reports it; nothing is committed for it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np

from segcore.categories import Categories
from segcore.io import storage
from segcore.io.commit import Output, commit_shard
from segcore.io.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_rgb
from segcore.io.shards import Sample, ShardSpec, read_shard
from segcore.io.table import STATUS_OK, error_row, image_row, rows_to_table, table_to_parquet
from segcore.io.truth import GroundTruth, TruthRef
from segcore.metrics.pq import PQInputError
from segcore.metrics.stats import LabelStats
from segcore.metrics.views import ImageViews, ShardViews, evaluate_image
from segcore.models.base import id_maps_to_host, orientation
from segcore.models.registry import ModelOptions, load_segmenter
from segcore.png import PNGError, decode_ids, encode_ids
from segcore.runtime.truth_use import RANK_STRIDE

logger = logging.getLogger(__name__)
BAD_GROUND_TRUTH = "bad_ground_truth"
STATS_VERSION = 1
BUCKET_HOLD = 4  # batches' worth of decoded images that may wait in the size buckets
_END = object()  # the reader thread's end-of-shard marker


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
        categories: the dataset categories labels map onto (the ground truth's); None: the model's default.
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
    categories: Categories | None = None


@dataclass
class Truth:
    """An image's ground truth, read and decoded beside the image, or what was wrong with it."""

    rank: int
    image_id: object
    ids: np.ndarray | None = None  # (H, W) uint32
    segments: list | None = None
    size: tuple[int, int] | None = None  # (height, width) the ground-truth JSON gives
    error: str | None = None


@dataclass
class Decoded:
    """A sample after decoding: the image, or the status and reason it failed; its ground truth if any."""

    sample: Sample
    image: np.ndarray | None = None
    status: str = STATUS_OK
    error: str | None = None
    truth: Truth | None = None


class ThreadSeconds:
    """Seconds that several threads spend in a stage, summed per stage; one per shard, so work still running from
    an abandoned shard cannot count in the next one."""

    def __init__(self):
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


@dataclass(frozen=True)
class Unlabelled:
    """The row of a sample that failed before the model, and whether it had ground truth (left out of PQ)."""

    row: dict
    had_truth: bool


class ShardWorker:
    """Loads the model once; labels and commits shards one at a time."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        if config.torch_threads:
            import torch

            torch.set_num_threads(config.torch_threads)  # more threads than CPUs given slows a shared node down
        self.segmenter = load_segmenter(config.model, config.model_options, config.categories)
        self.output = Output.open(config.output, config.storage_options)
        self.decode_pool = ThreadPoolExecutor(config.decode_threads, thread_name_prefix="decode")
        self.encode_pool = ThreadPoolExecutor(config.encode_threads, thread_name_prefix="encode")
        self._views = ShardViews(self.segmenter.categories)

    def label_shard(self, spec: ShardSpec, shard_index: int = 0, truth: GroundTruth | None = None) -> dict:
        """Labels every image of a shard and commits it; returns a summary (counts and seconds per stage).

        The summary's ``batch_pixels``, where the segmenter counts them, are the image pixels and the padded
        batch pixels fed to the model. Stages, in seconds: on the model's side, in sequence, ``decode_wait``
        (waiting for decoded images), the segmenter's own (pre-process, forward, post-process), ``to_host`` (the
        batch's id maps copied to the host), ``encode_wait`` (waiting for the previous batch's rows) and
        ``write`` (Parquet and commit); beside it, summed over their threads, ``read`` (the shard stream),
        ``decode`` (images and ground truth) and ``encode`` (id-map PNGs, rows, ground-truth views). A batch's
        rows are encoded while the model works on the next one.

        Ground truth comes from ``truth`` (a COCO panoptic dataset, looked up by sample key; an image's rank is
        its annotation's position in the JSON) or, without it, from the samples themselves: a
        ``<key>.panoptic.png`` member with ``segments_info`` in the ``.json`` (rank ``shard_index * RANK_STRIDE
        + position``). Predictions are matched on the in-memory maps (:func:`segcore.metrics.views.evaluate_image`);
        the shard's label statistics, and when some image had ground truth its PQ partial and the partials of the
        other views (semantic confusion, PQ extras, instance RLEs), are committed with it.

        Raises:
            segcore.io.shards.ShardError: the shard cannot be read (not a tar, truncated, ...); nothing is
                committed.
            OSError: storage failed; nothing is committed, so the shard can be retried.
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}
        self._views = ShardViews(self.segmenter.categories)  # every view of the images with ground truth
        pixels_before = list(getattr(self.segmenter, "pixels", (0, 0)))
        threads = ThreadSeconds()  # decode and encode seconds, summed over their threads
        labelled: list[tuple[int, dict]] = []
        in_flight: tuple[list[int], list[Future | Unlabelled]] | None = None  # the batch being encoded
        submitted = None
        try:
            for batch in self._batches(self._decoded(spec, shard_index, truth, timings, threads)):
                submitted = ([position for position, _ in batch],
                             self._submit_batch([item for _, item in batch], timings, threads))
                if in_flight is not None:  # its encodes ran while the model worked on this batch
                    labelled += zip(in_flight[0], self._collect_batch(in_flight[1], timings))
                in_flight, submitted = submitted, None
            if in_flight is not None:
                labelled += zip(in_flight[0], self._collect_batch(in_flight[1], timings))
                in_flight = None
        except BaseException:
            for left in (in_flight, submitted):  # nothing of this shard may run on into the next one
                if left is not None:
                    _abandon([done for done in left[1] if isinstance(done, Future)])
            raise
        timings["decode"] = threads.seconds.get("decode", 0.0)
        timings["encode"] = threads.seconds.get("encode", 0.0)
        rows = [row for _, row in sorted(labelled, key=lambda pair: pair[0])]  # shard order, whatever the batches
        errors = [{k: row[k] for k in ("image_id", "source", "status", "error")} for row in rows
                  if row["status"] != STATUS_OK]
        write_started = time.perf_counter()
        data = table_to_parquet(rows_to_table(rows))
        error_lines = "".join(json.dumps(e) + "\n" for e in errors).encode()
        partials = json.dumps(self._views.pq.to_json()).encode() if self._views.evaluated else None
        stats = json.dumps(shard_stats(rows, self._views)).encode()
        commit_shard(self.output, spec.shard_id, data, rows=len(rows), errors=error_lines or None, partials=partials,
                     stats=stats)
        timings["write"] = time.perf_counter() - write_started
        summary = {
            "shard_id": spec.shard_id,
            "images": len(rows),
            "errors": len(errors),
            "seconds": time.perf_counter() - started,
            "stages": timings,
        }
        pixels = getattr(self.segmenter, "pixels", None)  # [image pixels, padded batch pixels], when counted
        if pixels is not None:  # padding waste = 1 - image pixels / batch pixels
            summary["batch_pixels"] = [pixels[0] - pixels_before[0], pixels[1] - pixels_before[1]]
        logger.info("shard %s: %d images, %d errors", spec.shard_id, len(rows), len(errors))
        return summary

    def _decoded(
        self, spec: ShardSpec, shard_index: int, truth: GroundTruth | None, timings: dict[str, float],
        threads: ThreadSeconds,
    ) -> Iterator[Decoded]:
        """Samples of the shard decoded in the pool, in order, at most ``2 * batch_size`` ahead of the model.

        A reader thread streams the shard and submits the decodes, so reading never holds up the model's side;
        an error reading the shard is raised here, after the samples read before it. When the consumer stops
        early (the model failed), the decodes not yet started are cancelled and a read in progress is not waited
        for: the reader sees the stop after it and ends.
        """
        window: queue.Queue = queue.Queue(maxsize=2 * self.config.batch_size)
        stop = threading.Event()
        reader = threading.Thread(target=self._read_into,
                                  args=(spec, shard_index, truth, window, stop, timings, threads),
                                  name=f"read-{spec.shard_id}", daemon=True)
        reader.start()
        finished = False
        try:
            while True:
                started = time.perf_counter()
                entry = window.get()
                if entry is _END:
                    finished = True
                    break
                if isinstance(entry, BaseException):
                    finished = True  # the reader has ended
                    raise entry
                decoded = entry.result()
                timings["decode_wait"] = timings.get("decode_wait", 0.0) + time.perf_counter() - started
                yield decoded
        finally:
            if finished:
                reader.join()
            else:
                stop.set()
                left = []
                while True:
                    try:
                        left.append(window.get_nowait())
                    except queue.Empty:
                        break
                _abandon([entry for entry in left if isinstance(entry, Future)])

    def _read_into(self, spec: ShardSpec, shard_index: int, truth: GroundTruth | None, window: queue.Queue,
                   stop: threading.Event, timings: dict[str, float], threads: ThreadSeconds) -> None:
        """The reader thread: streams the shard, submits each sample's decode, and queues the futures in order;
        then the end marker, or the exception that stopped the stream. Ends without either once ``stop`` is set."""
        seconds = 0.0
        claims: dict[int, str] = {}  # ground-truth rank -> the first sample (in shard order) it matched
        try:
            started = time.perf_counter()
            for position, sample in enumerate(read_shard(spec, self.config.storage_options)):
                seconds += time.perf_counter() - started
                if stop.is_set():
                    return
                rank = shard_index * RANK_STRIDE + position
                claimed_by = _claim(claims, truth, sample.key)
                future = self.decode_pool.submit(self._decode, sample, rank, truth, threads, claimed_by)
                if not _offer(window, future, stop):
                    future.cancel()
                    return
                started = time.perf_counter()
            seconds += time.perf_counter() - started
            _offer(window, _END, stop)
        except BaseException as error:  # noqa: BLE001 - handed to the model's side, which raises it
            _offer(window, error, stop)
        finally:
            timings["read"] = timings.get("read", 0.0) + seconds

    def _decode(self, sample: Sample, rank: int, truth: GroundTruth | None,
                threads: ThreadSeconds | None = None, claimed_by: str | None = None) -> Decoded:
        """Decodes one sample and its ground truth; failures become a status and reason. Its seconds are added to
        ``threads``' ``decode`` stage. ``claimed_by``: an earlier sample of the shard matched the same
        ground-truth image (the match is ambiguous: this one is not scored)."""
        if sample.error is not None:
            return Decoded(sample, status="bad_member", error=sample.error)
        started = time.perf_counter()
        try:
            image = decode_rgb(sample.image_bytes or b"", sample.source, self.config.max_pixels)
        except ImageDecodeError as error:
            has_truth = truth.lookup(sample.key) is not None if truth else sample.panoptic_png is not None
            missed = Truth(rank, sample.key, error="the image could not be labelled") if has_truth else None
            return Decoded(sample, status=error.status, error=str(error), truth=missed)
        if claimed_by is not None:
            ref = truth.lookup(sample.key)
            ambiguous = Truth(rank, sample.key, error=(
                f"{sample.source}: its ground truth {ref.png_uri} (image {ref.image_id}) is matched by sample "
                f"{claimed_by!r} of this shard too: an ambiguous match, scored once only"))
            decoded = Decoded(sample, image, truth=ambiguous)
        else:
            decoded = Decoded(sample, image, truth=self._truth(sample, rank, truth))
        if threads is not None:  # thread seconds: decoding overlaps the model, so this can exceed the wait
            threads.add("decode", time.perf_counter() - started)
        return decoded

    def _truth(self, sample: Sample, rank: int, truth: GroundTruth | None) -> Truth | None:
        """The sample's ground truth: from the dataset's JSON and PNG folder, else embedded in the shard."""
        if truth is not None:
            ref = truth.lookup(sample.key)
            return read_truth(ref, self.config.storage_options) if ref is not None else None
        if sample.panoptic_png is None:
            return None
        found = Truth(rank, sample.key, segments=(sample.metadata or {}).get("segments_info"))
        if found.segments is None:
            found.error = f"{sample.source}: ground-truth map without segments_info in its .json member"
            return found
        try:
            found.ids = decode_ids(sample.panoptic_png)
        except PNGError as error:
            found.error = f"{sample.source}: ground-truth PNG is unreadable: {error}"
        return found

    def _batches(self, decoded: Iterator[Decoded]) -> Iterator[list[tuple[int, Decoded]]]:
        """Groups decoded samples, with their positions in the shard, into batches of images of one padded size.

        Images go to a bucket by the segmenter's ``batch_key`` (its padded input size; without one, by
        orientation), and a bucket is a batch once it holds ``batch_size`` images, so a batch carries no padding
        between images of different shapes. At most ``BUCKET_HOLD * batch_size`` images wait in the buckets (the
        fullest goes then, short); the rest go at the end of the shard, in the order their buckets opened.
        Samples that failed to decode go at once, alone (they take no place in a forward pass).
        """
        size = self.config.batch_size
        key_of = getattr(self.segmenter, "batch_key", None) or orientation
        buckets: dict = {}
        held = 0
        for position, item in enumerate(decoded):
            if item.image is None:
                yield [(position, item)]
                continue
            key = key_of(*item.image.shape[:2])
            buckets.setdefault(key, []).append((position, item))
            held += 1
            if len(buckets[key]) == size:
                held -= size
                yield buckets.pop(key)
            elif held > BUCKET_HOLD * size:
                batch = buckets.pop(max(buckets, key=lambda k: len(buckets[k])))
                held -= len(batch)
                yield batch
        yield from buckets.values()

    def _submit_batch(self, batch: list[Decoded], timings: dict[str, float],
                      threads: ThreadSeconds) -> list[Future | Unlabelled]:
        """Segments the batch's good images, brings their id maps to the host, and submits each row's encoding
        (the error rows are made at once); :meth:`_collect_batch` takes the rows, in the batch's order."""
        good = [item for item in batch if item.image is not None]
        results = self.segmenter.segment([item.image for item in good], timings) if good else []
        started = time.perf_counter()
        maps = iter(id_maps_to_host(results))  # one copy per batch, before the next batch is launched
        timings["to_host"] = timings.get("to_host", 0.0) + time.perf_counter() - started
        results = iter(results)
        pending: list[Future | Unlabelled] = []
        try:
            for item in batch:
                if item.image is None:
                    row = error_row(item.sample.key, item.sample.source, item.status, item.error or "",
                                    self.segmenter.spec)
                    pending.append(Unlabelled(row, had_truth=item.truth is not None))
                else:
                    pending.append(self.encode_pool.submit(self._image_row, item, next(results).segments, next(maps),
                                                           threads))  # not the result: its device map can go
        except BaseException:
            _abandon([done for done in pending if isinstance(done, Future)])
            raise
        return pending

    def _collect_batch(self, pending: list[Future | Unlabelled], timings: dict[str, float]) -> list[dict]:
        """The rows of a submitted batch, in its order; adds the images' views to the shard's in that order (so
        the sums do not depend on threads). The wait is the ``encode_wait`` stage."""
        started = time.perf_counter()
        rows = []
        for done in pending:
            if isinstance(done, Unlabelled):
                row, views = done.row, None
                self._views.unevaluated += done.had_truth
            else:
                row, views = done.result()
            rows.append(row)
            if views is not None:
                self._views.add(views)
            elif row["status"] == BAD_GROUND_TRUTH:
                self._views.unevaluated += 1
        timings["encode_wait"] = timings.get("encode_wait", 0.0) + time.perf_counter() - started
        return rows

    def _image_row(self, item: Decoded, segments: list[dict], host_map: np.ndarray,
                   threads: ThreadSeconds | None = None) -> tuple[dict, ImageViews | None]:
        """The row of a labelled image (its id map, on the host, as a PNG; its segments, as the segmenter listed
        them) and, with ground truth, its views; its seconds are added to ``threads``' ``encode`` stage."""
        started = time.perf_counter()
        id_map = host_map.astype(np.uint32)  # once: the PNG and the PQ match both take uint32
        status, error, views = STATUS_OK, None, None
        if item.truth is not None:
            try:
                views = evaluate_truth(item.sample.key, item.sample.source, item.truth, id_map, segments,
                                       self.segmenter.categories)
            except PQInputError as problem:
                status, error = BAD_GROUND_TRUTH, str(problem)
        height, width = id_map.shape
        png = encode_ids(id_map)
        row = image_row(item.sample.key, item.sample.source, width, height, png, segments,
                        self.segmenter.spec, status, error)
        if threads is not None:
            threads.add("encode", time.perf_counter() - started)
        return row, views

    def close(self) -> None:
        """Stops the thread pools."""
        self.decode_pool.shutdown()
        self.encode_pool.shutdown()


def _offer(window: queue.Queue, entry, stop: threading.Event) -> bool:
    """Puts ``entry`` into the bounded queue, waiting for room until ``stop`` is set; whether it went in."""
    while not stop.is_set():
        try:
            window.put(entry, timeout=0.05)
            return True
        except queue.Full:
            pass
    return False


def _abandon(futures: list[Future]) -> None:
    """Cancels the futures not started and waits for the running ones, whose results and errors are dropped."""
    for future in futures:
        future.cancel()
    wait(futures)


def _claim(claims: dict[int, str], truth: GroundTruth | None, key: str) -> str | None:
    """Records the first sample matching each ground-truth image; returns that sample's key when ``key`` is a
    later one (None when ``key`` is first or has no ground truth)."""
    ref = truth.lookup(key) if truth is not None else None
    if ref is None:
        return None
    first = claims.setdefault(ref.rank, key)
    return first if first != key else None


def read_truth(ref: TruthRef, storage_options: Mapping | None = None) -> Truth:
    """Reads and decodes the ground-truth PNG of a COCO panoptic dataset's image; a missing or unreadable PNG
    becomes the Truth's ``error``."""
    found = Truth(ref.rank, ref.image_id, segments=list(ref.segments_info), size=ref.size)
    try:
        found.ids = decode_ids(storage.read_bytes(ref.png_uri, storage_options))
    except FileNotFoundError:
        found.error = f"ground-truth PNG {ref.png_uri} of image {ref.image_id} does not exist"
    except PNGError as error:
        found.error = f"ground-truth PNG {ref.png_uri} of image {ref.image_id} is unreadable: {error}"
    return found


def evaluate_truth(key: str, source: str, truth: Truth, id_map: np.ndarray, segments: list[dict],
                   categories: Categories) -> ImageViews:
    """Matches a prediction to its ground truth with panopticapi's rules; every view's partial.

    Raises:
        PQInputError: the ground truth is missing, unreadable, of another size, or inconsistent; the message
            names the image and what is wrong.
    """
    if truth.error is not None:
        raise PQInputError(truth.error)
    if truth.size is not None and truth.ids.shape != tuple(truth.size):
        raise PQInputError(
            f"Image {truth.image_id}: gt PNG is {truth.ids.shape[1]}x{truth.ids.shape[0]} but the images list "
            f"says {truth.size[1]}x{truth.size[0]} (width x height)")
    return evaluate_image(key, source, truth.rank, truth.ids, truth.segments, id_map, segments, categories)


def shard_stats(rows: list[dict], views: ShardViews | None = None) -> dict:
    """A shard's summable statistics: label statistics of its rows and, from ``views``, the count of images whose
    ground truth could not be used and the partials of the semantic, PQ-extras and instance views (None where no
    image was matched to ground truth)."""
    stats = LabelStats()
    for row in rows:
        if row["panoptic_png"] is None:
            stats.add_failure(row["status"])
        else:
            stats.add_image(row["width"], row["height"], row["segments"], row["status"])
    fields = views.stats_fields() if views is not None else {
        "truth_unevaluated": 0, "semantic": None, "pq_extras": None, "instances": None}
    return {"version": STATS_VERSION, "stats": stats.to_json(), **fields}
