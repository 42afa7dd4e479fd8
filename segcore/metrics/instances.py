"""The instance view of panoptic maps: mask AP of the thing classes with pycocotools' COCOeval.

Each image with ground truth contributes its predicted thing segments (RLE masks with their scores) and its
ground-truth thing segments, crowds included (RLE masks, ``iscrowd``, and the segments_info area, as converting
COCO panoptic to COCO instances does). Shards keep these RLEs, small next to the maps, so the reduce evaluates
``COCOeval(iouType="segm")`` without decoding a PNG. A prediction without a score counts with score 1.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segcore.categories import Categories

INSTANCES_VERSION = 1
SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def rle_counts(id_map: np.ndarray, segment_ids: Sequence[int]) -> list[str]:
    """COCO compressed RLE counts of ``id_map == id`` for each id, from one pass over the map.

    Equal to ``pycocotools.mask.encode`` of each mask (column-major runs), without building the masks.
    """
    height, width = id_map.shape
    if not len(segment_ids):
        return []
    size = height * width
    # COCO RLEs run in column-major order, where a pixel follows the one above it (and a column's top pixel the
    # previous column's bottom one): the run starts are found on the row-major map, without transposing it.
    change = np.empty((height, width), dtype=bool)
    np.not_equal(id_map[1:], id_map[:-1], out=change[1:])
    np.not_equal(id_map[0, 1:], id_map[-1, :-1], out=change[0, 1:])
    change[0, 0] = True
    flat = np.flatnonzero(change)
    starts = np.sort(flat % width * height + flat // width)  # column-major positions of the run starts
    ends = np.append(starts[1:], size)
    values = id_map[starts % height, starts // height]
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    uncompressed = []
    for segment_id in segment_ids:
        lo, hi = np.searchsorted(sorted_values, [segment_id, segment_id + 1])
        runs = order[lo:hi]  # ascending positions (stable sort)
        run_starts, run_ends = starts[runs], ends[runs]
        gaps = run_starts - np.concatenate(([0], run_ends[:-1]))
        counts = np.empty(2 * len(runs), np.int64)
        counts[0::2], counts[1::2] = gaps, run_ends - run_starts
        counts = counts.tolist()
        if not runs.size or run_ends[-1] < size:
            counts.append(size - (int(run_ends[-1]) if runs.size else 0))
        uncompressed.append({"size": [height, width], "counts": counts})
    return [rle["counts"].decode() for rle in mask_utils.frPyObjects(uncompressed, height, width)]


@dataclass
class InstancePartial:
    """Summable instance-view partial: images, ground-truth and predicted thing segments with RLE counts.

    Attributes:
        images: {"rank", "width", "height"} per image with ground truth (rank: its position in gt-JSON order).
        gt: {"rank", "category_id", "iscrowd", "area", "counts"}.
        dt: {"rank", "category_id", "score", "counts"}.
    """

    images: list[dict] = field(default_factory=list)
    gt: list[dict] = field(default_factory=list)
    dt: list[dict] = field(default_factory=list)

    def __iadd__(self, other: "InstancePartial") -> "InstancePartial":
        self.images.extend(other.images)
        self.gt.extend(other.gt)
        self.dt.extend(other.dt)
        return self

    def to_json(self) -> dict:
        return {"version": INSTANCES_VERSION, "images": self.images, "gt": self.gt, "dt": self.dt}

    @classmethod
    def from_json(cls, document: Mapping) -> "InstancePartial":
        return cls(list(document["images"]), list(document["gt"]), list(document["dt"]))


def image_instances(rank: int, gt_ids: np.ndarray, gt_segments: Sequence[Mapping], pred_ids: np.ndarray,
                    pred_segments: Sequence[Mapping], categories: Categories) -> InstancePartial:
    """One image's thing segments on both sides as RLEs (categories already checked by the PQ match)."""
    height, width = gt_ids.shape
    partial = InstancePartial(images=[{"rank": rank, "width": width, "height": height}])
    things = {c.id for c in categories if c.isthing}
    gt_things = [s for s in gt_segments if s["category_id"] in things]
    for segment, counts in zip(gt_things, rle_counts(gt_ids, [int(s["id"]) for s in gt_things])):
        partial.gt.append({"rank": rank, "category_id": int(segment["category_id"]),
                           "iscrowd": int(segment.get("iscrowd", 0) == 1), "area": int(segment["area"]),
                           "counts": counts})
    pred_things = [s for s in pred_segments if s["category_id"] in things]
    for segment, counts in zip(pred_things, rle_counts(pred_ids, [int(s["id"]) for s in pred_things])):
        score = segment.get("score")
        partial.dt.append({"rank": rank, "category_id": int(segment["category_id"]),
                           "score": 1.0 if score is None else float(score), "counts": counts})
    return partial


def coco_datasets(partial: InstancePartial, categories: Categories) -> tuple[COCO, COCO]:
    """pycocotools COCO objects (ground truth, detections) for the partial; image ids are the ranks."""
    sizes = {image["rank"]: (image["height"], image["width"]) for image in partial.images}
    images = [{"id": rank, "height": h, "width": w} for rank, (h, w) in sorted(sizes.items())]
    thing_categories = [{"id": c.id, "name": c.name, "supercategory": c.supercategory}
                        for c in categories if c.isthing]
    gt_annotations = []
    for number, segment in enumerate(partial.gt, start=1):
        rle = {"size": list(sizes[segment["rank"]]), "counts": segment["counts"]}
        gt_annotations.append({"id": number, "image_id": segment["rank"], "category_id": segment["category_id"],
                               "iscrowd": segment["iscrowd"], "area": segment["area"], "segmentation": rle,
                               "bbox": mask_utils.toBbox(rle).tolist()})
    dt_annotations = []
    for number, segment in enumerate(partial.dt, start=1):
        rle = {"size": list(sizes[segment["rank"]]), "counts": segment["counts"]}
        dt_annotations.append({"id": number, "image_id": segment["rank"], "category_id": segment["category_id"],
                               "iscrowd": 0, "score": segment["score"], "segmentation": rle,
                               "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()})
    return (_coco({"images": images, "annotations": gt_annotations, "categories": thing_categories}),
            _coco({"images": images, "annotations": dt_annotations, "categories": thing_categories}))


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def instance_scores(partial: InstancePartial, categories: Categories) -> dict:
    """COCO mask AP of the thing classes: ``{AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl,
    per_class: {category id: AP}, images, gt, dt}``; -1 where COCOeval has nothing to average, as it reports."""
    gt, dt = coco_datasets(partial, categories)
    evaluator = COCOeval(gt, dt, iouType="segm")
    evaluator.params.imgIds = sorted(image["rank"] for image in partial.images)
    evaluator.params.catIds = [c.id for c in categories if c.isthing]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    scores: dict = {name: float(value) for name, value in zip(SUMMARY_NAMES, evaluator.stats)}
    precision = evaluator.eval["precision"]  # (iou thresholds, recall, categories, areas, max detections)
    per_class = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[int(category_id)] = float(values.mean()) if values.size else -1.0
    scores.update(per_class=per_class, images=len(partial.images), gt=len(partial.gt), dt=len(partial.dt))
    return scores


def format_instance_scores(scores: Mapping) -> str:
    """A plain-text table of the summary numbers (percent)."""
    header = " ".join(f"{name:>6}" for name in SUMMARY_NAMES[:6])
    values = " ".join(f"{100 * scores[name]:6.1f}" if scores[name] >= 0 else f"{'-':>6}" for name in SUMMARY_NAMES[:6])
    return (f"{header}\n{values}\n\nmask AP of {sum(1 for v in scores['per_class'].values() if v >= 0)} thing "
            f"classes over {scores['images']} images ({scores['gt']} ground-truth, {scores['dt']} predicted "
            "thing segments)")
