"""COCO panoptic predictions made elsewhere, turned into a labeling output: shards, partials, reduce.

``P.json`` plus its PNG folder (``P/`` beside it, or ``pred_dir``) becomes the layout ``jobs.label`` writes
(manifest, ``shards/import-NNNNN.parquet``, errors, statistics, markers), so the same reduce gives every view of
quality, and ``jobs.export``, ``jobs.render`` and ``jobs.verify`` work on it. Each map is checked and re-encoded
with the project's PNG encoder; its segments' areas and boxes are recomputed from the map; ``score`` is kept
(absent: none). With ground truth, each image is matched exactly as the labeling worker matches it.

An annotation whose PNG is missing or unreadable, or whose segments do not fit its map, becomes a row with status
``bad_prediction`` and the reason (also in ``errors/``). Shards are committed one by one with the labeling job's
protocol, under the output's lock, so an interrupted import resumes where it stopped.
"""

from __future__ import annotations

import datetime
import json
import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from segcore.categories import Categories, categories_from_json
from segcore.io import storage
from segcore.io.commit import Output, claim_output, commit_shard, committed_shards
from segcore.io.lock import acquire
from segcore.io.table import STATUS_OK, error_row, image_row, rows_to_table, table_to_parquet
from segcore.io.truth import GroundTruth, default_folder, load_ground_truth
from segcore.metrics.pq import PQInputError
from segcore.metrics.views import ShardViews
from segcore.panoptic import VOID, segment_stats
from segcore.png import PNGError, decode_ids, encode_ids
from segcore.runtime.labeling import code_version
from segcore.runtime.reduce import reduce_output
from segcore.runtime.worker import BAD_GROUND_TRUTH, evaluate_truth, read_truth, shard_stats

logger = logging.getLogger(__name__)
BAD_PREDICTION = "bad_prediction"
MODEL = "import"
SHARD_PREFIX = "import-"


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: shards committed now and before, images, error rows, and the reduce's metrics."""

    shards: int
    skipped: int
    images: int
    errors: int
    metrics: dict


@dataclass(frozen=True)
class _Prediction:
    key: str
    source: str
    png_uri: str
    segments: tuple
    file_name: str


class _BadPrediction(ValueError):
    """A prediction that cannot become a row; the message names the image and what is wrong."""


def import_coco_panoptic(
    pred_json: str,
    output_uri: str,
    pred_dir: str | None = None,
    gt: str | None = None,
    gt_dir: str | None = None,
    images_per_shard: int = 1000,
    workers: int = 2,
    storage_options: Mapping | None = None,
    overwrite: bool = False,
) -> ImportSummary:
    """Imports COCO panoptic predictions into ``output_uri`` and reduces it (metrics.json, report.md).

    Args:
        pred_json: the predictions' JSON (``annotations`` with ``file_name`` and ``segments_info``; ``images``
            optional; ``categories`` needed unless ``gt`` gives them).
        pred_dir: the predictions' PNG folder; default: ``pred_json`` without ``.json``.
        gt, gt_dir: COCO panoptic ground truth, as ``jobs.label --gt``; its categories become the output's.
        images_per_shard: annotations per shard, in the JSON's order.
        workers: threads converting images.
        overwrite: start over on an output holding another job (or this one).

    Raises:
        ValueError: not a COCO panoptic JSON, no categories, a non-positive count, a duplicate image.
        FileNotFoundError: a JSON does not exist.
        segcore.io.commit.ManifestMismatch: the output holds another job and ``overwrite`` is False.
        segcore.io.lock.JobLocked: another job is running on the output.
    """
    if images_per_shard < 1 or workers < 1:
        raise ValueError(f"Expected positive `images_per_shard` and `workers`, but got {images_per_shard!r}, "
                         f"{workers!r}")
    document = storage.read_json(pred_json, storage_options)
    if not isinstance(document, dict) or not isinstance(document.get("annotations"), list):
        raise ValueError(f"Expected a COCO panoptic JSON with an 'annotations' list at {pred_json}")
    truth = load_ground_truth(gt, gt_dir, storage_options) if gt else None
    if truth is not None:
        categories = truth.categories
    elif document.get("categories"):
        categories = categories_from_json(document)
    else:
        raise ValueError(f"Expected 'categories' in {pred_json}, or ground truth (--gt) that has them")
    predictions = _predictions(document, pred_json, pred_dir or default_folder(pred_json), storage_options)
    shards = {f"{SHARD_PREFIX}{n:05d}": predictions[start:start + images_per_shard]
              for n, start in enumerate(range(0, len(predictions), images_per_shard))}
    output = Output.open(output_uri, storage_options)
    manifest = _manifest(pred_json, pred_dir, gt, gt_dir, images_per_shard, categories, shards)
    lock = acquire(output)
    try:
        lock.start_heartbeat()
        claim = claim_output(output, manifest, overwrite)
        done = committed_shards(output, validate=True) if claim != "overwritten" else set()
        pending = [shard_id for shard_id in shards if shard_id not in done]
        logger.info("import: %d shards, %d committed, %d to do (%s)", len(shards), len(shards) - len(pending),
                    len(pending), claim)
        images = errors = 0
        with ThreadPoolExecutor(workers, thread_name_prefix="import") as pool:
            for shard_id in pending:
                rows = _import_shard(output, shard_id, shards[shard_id], categories, truth, storage_options, pool)
                images += len(rows)
                errors += sum(row["status"] != STATUS_OK for row in rows)
        metrics = reduce_output(output, storage_options)
    finally:
        lock.release()
    return ImportSummary(len(pending), len(shards) - len(pending), images, errors, metrics)


def _predictions(document: dict, pred_json: str, folder: str, storage_options: Mapping | None) -> list[_Prediction]:
    """The annotations in JSON order, keyed by their PNG's file name without extension."""
    images = {image.get("id"): image for image in document.get("images", ()) if isinstance(image, dict)}
    pngs = storage.Folder(folder, storage_options)
    predictions, seen = [], set()
    for number, annotation in enumerate(document["annotations"]):
        if (not isinstance(annotation, dict) or not isinstance(annotation.get("file_name"), str)
                or not isinstance(annotation.get("segments_info"), list)):
            raise ValueError(f"Expected annotation {number} of {pred_json} to have a file_name and a "
                             "segments_info list")
        key = posixpath.splitext(annotation["file_name"])[0]
        if key in seen:
            raise ValueError(f"Expected one annotation per image in {pred_json}, but {annotation['file_name']!r} "
                             "has two")
        seen.add(key)
        png_uri = pngs.uri_of(annotation["file_name"])
        source = images.get(annotation.get("image_id"), {}).get("file_name") or png_uri
        predictions.append(_Prediction(key, source, png_uri, tuple(annotation["segments_info"]),
                                       annotation["file_name"]))
    return predictions


def _manifest(pred_json, pred_dir, gt, gt_dir, images_per_shard, categories: Categories, shards: dict) -> dict:
    return {
        "input": pred_json,
        "input_dir": pred_dir,
        "model": MODEL,
        "ground_truth": {"json": gt, "dir": gt_dir} if gt else None,
        "images_per_shard": images_per_shard,
        "categories": categories.to_coco(),
        "shards": [{"shard_id": shard_id, "kind": "coco-panoptic", "uri": pred_json, "images": len(members)}
                   for shard_id, members in shards.items()],
        "code_version": code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _import_shard(output: Output, shard_id: str, predictions: Sequence[_Prediction], categories: Categories,
                  truth: GroundTruth | None, storage_options: Mapping | None, pool: ThreadPoolExecutor) -> list[dict]:
    """Converts, matches and commits one shard; returns its rows."""
    views = ShardViews(categories)
    results = list(pool.map(lambda p: _import_image(p, categories, truth, storage_options), predictions))
    rows = []
    for row, image_views, unevaluated in results:
        rows.append(row)
        if image_views is not None:
            views.add(image_views)
        views.unevaluated += unevaluated
    errors = [{k: row[k] for k in ("image_id", "source", "status", "error")} for row in rows
              if row["status"] != STATUS_OK]
    commit_shard(output, shard_id, table_to_parquet(rows_to_table(rows)), rows=len(rows),
                 errors="".join(json.dumps(e) + "\n" for e in errors).encode() or None,
                 partials=json.dumps(views.pq.to_json()).encode() if views.evaluated else None,
                 stats=json.dumps(shard_stats(rows, views)).encode())
    logger.info("import: shard %s, %d images, %d errors", shard_id, len(rows), len(errors))
    return rows


def _import_image(prediction: _Prediction, categories: Categories, truth: GroundTruth | None,
                  storage_options: Mapping | None):
    """(row, views or None, 1 if its ground truth was left out else 0) of one prediction."""
    ref = truth.lookup(prediction.key) if truth is not None else None
    try:
        ids, segments = _read_prediction(prediction, categories, storage_options)
    except _BadPrediction as problem:
        return error_row(prediction.key, prediction.source, BAD_PREDICTION, str(problem), MODEL), None, int(
            ref is not None)
    status, error, views = STATUS_OK, None, None
    if ref is not None:
        try:
            views = evaluate_truth(prediction.key, prediction.source, read_truth(ref, storage_options), ids, segments,
                                   categories)
        except PQInputError as problem:
            status, error = BAD_GROUND_TRUTH, str(problem)
    height, width = ids.shape
    row = image_row(prediction.key, prediction.source, width, height, encode_ids(ids), segments, MODEL, status, error)
    return row, views, int(ref is not None and views is None)


def _read_prediction(prediction: _Prediction, categories: Categories,
                     storage_options: Mapping | None) -> tuple[np.ndarray, list[dict]]:
    """The prediction's map and its segments (areas and boxes from the map).

    Raises:
        _BadPrediction: the PNG is missing or unreadable, a segment's id or category is wrong, or the map holds
            an id its segments do not list.
    """
    where = f"prediction {prediction.file_name} ({prediction.png_uri})"
    try:
        ids = decode_ids(storage.read_bytes(prediction.png_uri, storage_options))
    except FileNotFoundError:
        raise _BadPrediction(f"{where}: the PNG does not exist") from None
    except PNGError as error:
        raise _BadPrediction(f"{where}: the PNG is unreadable: {error}") from None
    found = segment_stats(ids)
    present = {int(i): k for k, i in enumerate(found["id"].tolist())}
    segments, listed = [], set()
    for segment in prediction.segments:
        if not isinstance(segment, dict):
            raise _BadPrediction(f"{where}: segment {segment!r} is not an object")
        try:
            segment_id, category_id = int(segment["id"]), int(segment["category_id"])
        except (KeyError, TypeError, ValueError):
            raise _BadPrediction(f"{where}: segment {segment!r} needs integer 'id' and 'category_id'") from None
        if category_id not in categories:
            raise _BadPrediction(f"{where}: segment {segment_id} has unknown category_id {category_id}")
        if segment_id in listed:
            raise _BadPrediction(f"{where}: segment id {segment_id} is listed twice")
        if segment_id == VOID or segment_id not in present:
            raise _BadPrediction(f"{where}: segment {segment_id} is listed but not in the PNG")
        listed.add(segment_id)
        k = present[segment_id]
        score = segment.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise _BadPrediction(f"{where}: segment {segment_id} has a score {score!r} that is not a number")
        segments.append({"id": segment_id, "category_id": category_id,
                         "isthing": categories.by_id(category_id).isthing, "area": int(found["area"][k]),
                         "bbox": [int(v) for v in found["bbox"][k]],
                         "score": None if score is None else float(score)})
    unlisted = sorted(set(present) - listed - {VOID})
    if unlisted:
        raise _BadPrediction(f"{where}: segment ids {unlisted[:10]} are in the PNG but not in segments_info")
    return ids, segments
