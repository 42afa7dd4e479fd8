"""A labeling job's predictions in COCO panoptic form: ``DEST.json`` plus the PNG folder ``DEST/`` beside it.

That is panopticapi's convention, so ``pq_compute`` (and ``python -m jobs.evaluate``) and detectron2's COCO panoptic
loader read the export as predictions. Only committed shards are exported (markers are the truth); rows without a
map (images that could not be labelled) are left out and counted.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow.parquet as pq

from segcore.io import storage
from segcore.io.commit import MANIFEST, Output, committed_shards
from segcore.io.truth import default_folder, load_ground_truth

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: images exported, rows left out (no map), and where."""

    images: int
    skipped: int
    json_uri: str
    png_folder: str


def coco_image_id(key: str, ids_by_key: Mapping[str, Any] | None = None) -> Any:
    """The COCO image id of a row: from the ground truth when the job had one, else the key (an integer when the
    key is all digits, as COCO's zero-padded file names are)."""
    if ids_by_key is not None:
        found = ids_by_key.get(key, ids_by_key.get(posixpath.basename(key)))
        if found is not None:
            return found
    return int(key) if key.isdigit() else key


def export_coco_panoptic(output_uri: str, dest_json: str, storage_options: Mapping | None = None) -> ExportSummary:
    """Writes the job's predictions as a COCO panoptic JSON and PNG folder (``dest_json`` without ``.json``).

    Segments carry ``id``, ``category_id``, ``iscrowd`` (0), ``area``, ``bbox`` and ``score``; images their size.

    Raises:
        ValueError: ``output_uri`` is not a jobs.label output (no manifest), or ``dest_json`` does not end in
            ``.json``.
    """
    if not dest_json.endswith(".json"):
        raise ValueError(f"Expected the export's JSON path to end in .json, but got {dest_json!r}")
    output = Output.open(output_uri, storage_options)
    if not output.fs.exists(output.path(MANIFEST)):
        raise ValueError(f"Expected a jobs.label output with {MANIFEST} at {output_uri}, but found none")
    manifest = json.loads(output.fs.cat_file(output.path(MANIFEST)))
    ids_by_key = None
    if manifest.get("ground_truth"):
        truth = load_ground_truth(manifest["ground_truth"]["json"], manifest["ground_truth"]["dir"], storage_options)
        ids_by_key = {key: ref.image_id for key, ref in truth.by_key.items()}
    folder = storage.Folder(default_folder(dest_json), storage_options)
    folder.fs.makedirs(folder.path, exist_ok=True)
    images, annotations, skipped = [], [], 0
    for shard_id in sorted(committed_shards(output)):
        with output.fs.open(output.data_path(shard_id), "rb") as f:
            rows = pq.read_table(f).to_pylist()
        for row in rows:
            if row["panoptic_png"] is None:
                skipped += 1
                continue
            image_id = coco_image_id(row["image_id"], ids_by_key)
            file_name = f"{row['image_id']}.png"
            path = posixpath.join(folder.path, file_name)
            if "/" in file_name:
                folder.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            folder.fs.pipe_file(path, row["panoptic_png"])
            images.append({"id": image_id, "file_name": posixpath.basename(row["source"].rsplit("#", 1)[-1]),
                           "width": row["width"], "height": row["height"]})
            annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": [
                {"id": s["id"], "category_id": s["category_id"], "iscrowd": 0, "area": s["area"],
                 "bbox": list(s["bbox"]), "score": s["score"]} for s in row["segments"]]})
    document = {"images": images, "annotations": annotations, "categories": manifest["categories"]}
    storage.write_json(dest_json, document, storage_options)
    logger.info("exported %d images (%d rows without a map left out) to %s", len(images), skipped, dest_json)
    return ExportSummary(len(images), skipped, dest_json, folder.uri)
