"""A labeling job's predictions in standard forms: COCO panoptic, semantic label PNGs, COCO instance annotations.

Every export reads the same rows (:class:`Predictions`): only committed shards (markers are the truth), in shard
order, with COCO image ids from the job's ground truth when it had one. Rows without a map (images that could not
be labelled) are left out and counted. The formats are described in docs/export.md.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
from PIL import Image

from segcore.io import storage
from segcore.io.commit import MANIFEST, Output, committed_shards
from segcore.io.table import read_table
from segcore.io.truth import default_folder, load_ground_truth
from segcore.metrics.instances import rle_counts
from segcore.png import decode_ids

logger = logging.getLogger(__name__)

VOID = 0  # the semantic value of pixels no segment covers
MAX_SEMANTIC_ID = 2**16 - 1  # a semantic PNG is 16-bit at most


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote.

    Attributes:
        images: images exported.
        skipped: rows left out (images without a map).
        json_uri: the JSON written, or None (semantic maps).
        png_folder: the PNG folder written, or None (instance annotations).
        annotations: segments (panoptic) or instance annotations written; 0 for semantic maps.
    """

    images: int
    skipped: int
    json_uri: str | None
    png_folder: str | None
    annotations: int = 0


def coco_image_id(key: str, ids_by_key: Mapping[str, Any] | None = None) -> Any:
    """The COCO image id of a row: from the ground truth when the job had one, else the key (an integer when the
    key is all digits, as COCO's zero-padded file names are)."""
    if ids_by_key is not None:
        found = ids_by_key.get(key, ids_by_key.get(posixpath.basename(key)))
        if found is not None:
            return found
    return int(key) if key.isdigit() else key


class Predictions:
    """The labelled rows of a jobs.label output, read once in shard order.

    Attributes:
        output_uri: the output read.
        manifest: the job's manifest (``categories`` are COCO panoptic category records).
        skipped: rows without a map met so far; final once the rows have been iterated.
    """

    def __init__(self, output_uri: str, storage_options: Mapping | None = None):
        """Opens the output and reads its manifest, and the job's ground truth for the COCO image ids.

        Raises:
            ValueError: ``output_uri`` is not a jobs.label output (no manifest).
        """
        self.output_uri = output_uri
        self.output = Output.open(output_uri, storage_options)
        if not self.output.fs.exists(self.output.path(MANIFEST)):
            raise ValueError(f"Expected a jobs.label output with {MANIFEST} at {output_uri}, but found none")
        self.manifest = json.loads(self.output.fs.cat_file(self.output.path(MANIFEST)))
        self.ids_by_key = self._ids_by_key(storage_options)
        self.skipped = 0

    def _ids_by_key(self, storage_options: Mapping | None) -> dict[str, Any] | None:
        truth = self.manifest.get("ground_truth")
        if not truth:
            return None
        loaded = load_ground_truth(truth["json"], truth["dir"], storage_options)
        return {key: ref.image_id for key, ref in loaded.by_key.items()}

    @property
    def categories(self) -> list[dict]:
        """The job's categories, as COCO panoptic category records."""
        return self.manifest["categories"]

    def rows(self) -> Iterator[tuple[Any, dict]]:
        """Yields ``(COCO image id, row)`` for every row with a map; rows without one are counted in ``skipped``.

        Raises:
            segcore.io.table.TableError: a committed data file is not a shard table (the message names it).
        """
        for shard_id in sorted(committed_shards(self.output)):
            path = self.output.data_path(shard_id)
            table = read_table(self.output.fs.cat_file(path), self.output.fs.unstrip_protocol(path))
            for row in table.to_pylist():
                if row["panoptic_png"] is None:
                    self.skipped += 1
                    continue
                yield coco_image_id(row["image_id"], self.ids_by_key), row


def image_record(image_id: Any, row: Mapping) -> dict:
    """The COCO ``images`` entry of a row: id, the source's file name, and size."""
    return {"id": image_id, "file_name": posixpath.basename(row["source"].rsplit("#", 1)[-1]),
            "width": row["width"], "height": row["height"]}


def _open_folder(uri: str, storage_options: Mapping | None) -> storage.Folder:
    folder = storage.Folder(uri, storage_options)
    folder.fs.makedirs(folder.path, exist_ok=True)
    return folder


def _write_file(folder: storage.Folder, name: str, data: bytes) -> None:
    """Writes one file of a folder whole; a key with '/' gets its sub-folder (local filesystems need it)."""
    path = posixpath.join(folder.path, name)
    if "/" in name:
        folder.fs.makedirs(posixpath.dirname(path), exist_ok=True)
    folder.fs.pipe_file(path, data)


def _log_export(kind: str, summary: ExportSummary) -> None:
    where = " and ".join(filter(None, (summary.json_uri, summary.png_folder)))
    logger.info("exported %s of %d images (%d rows without a map left out) to %s",
                kind, summary.images, summary.skipped, where)


def export_coco_panoptic(output_uri: str, dest_json: str, storage_options: Mapping | None = None) -> ExportSummary:
    """Writes the job's predictions as a COCO panoptic JSON and PNG folder (``dest_json`` without ``.json``).

    That is panopticapi's convention, so ``pq_compute`` (and ``python -m jobs.evaluate``) and detectron2's COCO
    panoptic loader read the export as predictions. Segments carry ``id``, ``category_id``, ``iscrowd`` (0),
    ``area``, ``bbox`` and ``score``; images their size.

    Raises:
        ValueError: ``output_uri`` is not a jobs.label output (no manifest), or ``dest_json`` does not end in
            ``.json``.
    """
    if not dest_json.endswith(".json"):
        raise ValueError(f"Expected the export's JSON path to end in .json, but got {dest_json!r}")
    predictions = Predictions(output_uri, storage_options)
    folder = _open_folder(default_folder(dest_json), storage_options)
    images, annotations = [], []
    for image_id, row in predictions.rows():
        file_name = f"{row['image_id']}.png"
        _write_file(folder, file_name, row["panoptic_png"])
        images.append(image_record(image_id, row))
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": [
            {"id": s["id"], "category_id": s["category_id"], "iscrowd": 0, "area": s["area"],
             "bbox": list(s["bbox"]), "score": s["score"]} for s in row["segments"]]})
    document = {"images": images, "annotations": annotations, "categories": predictions.categories}
    storage.write_json(dest_json, document, storage_options)
    segments = sum(len(a["segments_info"]) for a in annotations)
    summary = ExportSummary(len(images), predictions.skipped, dest_json, folder.uri, segments)
    _log_export("COCO panoptic", summary)
    return summary


def semantic_map(id_map: np.ndarray, segments: list[Mapping], dtype: np.dtype) -> np.ndarray:
    """Maps segment ids to their category ids; pixels of no listed segment become VOID (0).

    Args:
        id_map: segment ids  # (H, W) uint32
        segments: the row's segments (``id``, ``category_id``).
        dtype: the output dtype, wide enough for every category id.

    Returns:
        category ids  # (H, W) ``dtype``
    """
    if not segments:
        return np.full(id_map.shape, VOID, dtype)
    segment_ids = np.array([s["id"] for s in segments], np.int64)
    category_ids = np.array([s["category_id"] for s in segments], dtype)
    order = np.argsort(segment_ids)
    segment_ids, category_ids = segment_ids[order], category_ids[order]
    # One lookup table for the whole image: the position of each pixel's id among the sorted segment ids.
    position = np.searchsorted(segment_ids, id_map).clip(max=len(segment_ids) - 1)
    listed = segment_ids[position] == id_map
    return np.where(listed, category_ids[position], np.asarray(VOID, dtype))


def semantic_dtype(categories: list[Mapping]) -> np.dtype:
    """uint8 when every category id fits in 8 bits, else uint16.

    Raises:
        ValueError: a category id is below 1 (0 is VOID) or above 65535.
    """
    ids = [c["id"] for c in categories]
    if ids and (min(ids) < 1 or max(ids) > MAX_SEMANTIC_ID):
        raise ValueError(f"Expected category ids in [1, {MAX_SEMANTIC_ID}] for semantic PNGs, but got "
                         f"{min(ids)}..{max(ids)}")
    return np.dtype(np.uint8 if not ids or max(ids) <= 255 else np.uint16)


def encode_semantic_png(semantic: np.ndarray) -> bytes:
    """A grey PNG of category ids: 8-bit ("L") for uint8, 16-bit ("I;16") for uint16.  # (H, W)"""
    buffer = io.BytesIO()
    Image.fromarray(semantic).save(buffer, "PNG")
    return buffer.getvalue()


def export_semantic(output_uri: str, dest_dir: str, storage_options: Mapping | None = None) -> ExportSummary:
    """Writes one semantic label PNG per image, ``dest_dir/<row key>.png``, named as the panoptic export's PNGs.

    Each pixel holds its segment's dataset category id, VOID (pixels of no segment) is 0. The PNG is 8-bit grey
    when every category id of the job is at most 255, else 16-bit grey; the depth is the same for every image
    of an export.

    Raises:
        ValueError: ``output_uri`` is not a jobs.label output (no manifest), or a category id does not fit in
            16 bits.
    """
    predictions = Predictions(output_uri, storage_options)
    dtype = semantic_dtype(predictions.categories)
    folder = _open_folder(dest_dir, storage_options)
    images = 0
    for _, row in predictions.rows():
        semantic = semantic_map(decode_ids(row["panoptic_png"]), row["segments"], dtype)
        _write_file(folder, f"{row['image_id']}.png", encode_semantic_png(semantic))
        images += 1
    summary = ExportSummary(images, predictions.skipped, None, folder.uri)
    _log_export("semantic maps", summary)
    return summary


def encode_thing_masks(id_map: np.ndarray, segment_ids: list[int]) -> list[dict]:
    """COCO RLEs of the segments' masks, ``{"size": [H, W], "counts": str}`` per segment, in order (from one pass
    over the map, as the instance view's partials are: no mask is built)."""
    height, width = id_map.shape
    return [{"size": [height, width], "counts": counts} for counts in rle_counts(id_map, segment_ids)]


def instance_annotations(image_id: Any, row: Mapping, first_id: int) -> list[dict]:
    """The COCO instance annotations of a row's thing segments, ids counting from ``first_id``."""
    things = [s for s in row["segments"] if s["isthing"]]
    if not things:
        return []
    rles = encode_thing_masks(decode_ids(row["panoptic_png"]), [s["id"] for s in things])
    return [{"id": first_id + index, "image_id": image_id, "category_id": s["category_id"], "segmentation": rle,
             "area": s["area"], "bbox": list(s["bbox"]), "iscrowd": 0,
             "score": 1.0 if s["score"] is None else s["score"]}  # COCOeval needs one: none counts as certain
            for index, (s, rle) in enumerate(zip(things, rles))]


def export_instances(output_uri: str, dest_json: str, storage_options: Mapping | None = None) -> ExportSummary:
    """Writes the job's thing segments as COCO instance predictions (``iouType='segm'``) in one JSON.

    The document has ``images``, ``annotations`` (``id``, ``image_id``, ``category_id``, ``segmentation`` as
    RLE with str counts, ``area``, ``bbox``, ``iscrowd`` 0, ``score``) and the thing ``categories``:
    ``pycocotools.coco.COCO(dest_json)`` loads it, and its ``annotations`` list is a results list for
    ``COCO(gt).loadRes``. Stuff segments are left out.

    Raises:
        ValueError: ``output_uri`` is not a jobs.label output (no manifest).
    """
    predictions = Predictions(output_uri, storage_options)
    images, annotations = [], []
    for image_id, row in predictions.rows():
        images.append(image_record(image_id, row))
        annotations += instance_annotations(image_id, row, len(annotations) + 1)
    things = [c for c in predictions.categories if c.get("isthing")]
    storage.write_json(dest_json, {"images": images, "annotations": annotations, "categories": things},
                       storage_options)
    summary = ExportSummary(len(images), predictions.skipped, dest_json, None, len(annotations))
    _log_export("instance annotations", summary)
    return summary
