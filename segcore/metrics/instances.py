"""The instance view of panoptic maps: COCO mask AP of the thing classes, equal to pycocotools' COCOeval.

COCOeval works in two steps. ``evaluate`` matches each image's detections to its ground truth, per category and
area range, with no regard to any other image; ``accumulate`` then orders every detection of a category by score
(descending; ties by image, then by place in the image's own score order) and turns the running counts of true
and false positives into precision and recall. Here the first step runs where the image is, on that image alone,
by COCOeval itself (:func:`image_instances`); a shard keeps only what the second step reads:

- per detection: its category, image rank (position in gt-JSON order, COCOeval's image order), place in its
  image's score order (COCOeval keeps the first 100 per image and category), score, and for each area range and
  IoU threshold whether it matched a ground-truth instance and whether it is ignored (two 40-bit masks);
- per category and area range, the number of ground-truth instances not ignored.

That is 40 bytes a detection in memory where an RLE mask, kept before, took about 400, and the reduce
(:func:`instance_scores`) runs no matching at all: it orders the records as COCOeval does and accumulates with
COCOeval's arithmetic, then leaves the twelve summary numbers to COCOeval's own ``summarize``. Ground-truth
segments use their segments_info area and ``iscrowd``, as converting COCO panoptic to COCO instances does; a
prediction without a score counts with score 1.
"""

from __future__ import annotations

import contextlib
import io
from typing import Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from segcore.categories import Categories

INSTANCES_VERSION = 2  # 1: RLE masks of both sides (read, and evaluated on the way in)
SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
PARAMS = Params(iouType="segm")  # IoU thresholds (10), recall thresholds (101), area ranges (4), maxDets (1, 10, 100)
THRESHOLDS, AREAS = len(PARAMS.iouThrs), len(PARAMS.areaRng)
_CHUNKS_JOINED = 256  # shards added before their detection chunks are joined into one block
MAX_DETECTIONS = PARAMS.maxDets[-1]  # COCOeval keeps an image's best 100 detections per category
DETECTION_FIELDS = ("category_id", "rank", "order", "score", "matched", "ignored")
_DTYPES = {"category_id": np.int32, "rank": np.int64, "order": np.uint8, "score": np.float64,  # 37 bytes a record
           "matched": np.uint64, "ignored": np.uint64}


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


class InstancePartial:
    """Summable instance-view partial: what COCOeval's accumulate reads, per detection and per category.

    Adding keeps the added columns as chunks (joined when read), so summing many shards copies nothing twice.

    Attributes:
        images: ranks of the images with ground truth.  # (I,) int64
        gt: category id -> ground-truth instances not ignored, per area range (all, small, medium, large).
        dt: detection columns (``DETECTION_FIELDS``); bit ``area * 10 + threshold`` of ``matched`` and ``ignored``
            is COCOeval's dtMatches > 0 and dtIgnore for that area range and IoU threshold.  # (D,) each
    """

    def __init__(self, images: Sequence[int] | np.ndarray = (), gt: Mapping[int, list[int]] | None = None,
                 dt: Mapping[str, np.ndarray] | None = None):
        self._images = [np.asarray(images, np.int64)]
        self.gt: dict[int, list[int]] = {int(k): list(v) for k, v in (gt or {}).items()}
        empty = {name: np.zeros(0, _DTYPES[name]) for name in DETECTION_FIELDS}
        self._dt = [{name: np.asarray(column, _DTYPES[name]) for name, column in (dt or empty).items()}]
        self._recent_dt = self._recent_images = 0  # chunks added since the last join

    @property
    def images(self) -> np.ndarray:
        if len(self._images) > 1:
            self._images, self._recent_images = [np.concatenate(self._images)], 0
        return self._images[0]

    @property
    def dt(self) -> dict[str, np.ndarray]:
        if len(self._dt) > 1:
            self._dt, self._recent_dt = [_joined(self._dt)], 0
        return self._dt[0]

    @property
    def detections(self) -> int:
        return sum(len(chunk["rank"]) for chunk in self._dt)

    def of_category(self, category_id: int) -> dict[str, np.ndarray]:
        """The detection columns of one category (gathered block by block: the whole is never joined)."""
        return _joined([{name: column[chunk["category_id"] == category_id] for name, column in chunk.items()}
                        for chunk in self._dt])

    def __iadd__(self, other: "InstancePartial") -> "InstancePartial":
        self._images.extend(other._images)
        self._recent_images += len(other._images)
        for category_id, counts in other.gt.items():
            mine = self.gt.setdefault(category_id, [0] * AREAS)
            for a, count in enumerate(counts):
                mine[a] += count
        added = [chunk for chunk in other._dt if len(chunk["rank"])]
        self._dt.extend(added)
        self._recent_dt += len(added)
        # many small chunks cost more than their data: the recent ones are joined into one block
        if self._recent_dt >= _CHUNKS_JOINED:
            self._dt[-self._recent_dt:] = [_joined(self._dt[-self._recent_dt:])]
            self._recent_dt = 0
        if self._recent_images >= _CHUNKS_JOINED:
            self._images[-self._recent_images:] = [np.concatenate(self._images[-self._recent_images:])]
            self._recent_images = 0
        return self

    def to_json(self) -> dict:
        return {"version": INSTANCES_VERSION, "images": self.images.tolist(),
                "gt": {str(k): list(v) for k, v in sorted(self.gt.items())},
                "dt": {name: column.tolist() for name, column in self.dt.items()}}

    @classmethod
    def from_json(cls, document: Mapping) -> "InstancePartial":
        """Inverse of :meth:`to_json`; a version-1 partial (RLE masks) is evaluated image by image on the way in.

        Raises:
            ValueError: a version this code does not know, or columns of different lengths.
        """
        version = document.get("version")
        if version == 1:
            return _from_masks(document)
        if version != INSTANCES_VERSION:
            raise ValueError(f"Expected an instance partial of version 1 or {INSTANCES_VERSION}, but got "
                             f"{version!r}")
        try:
            dt = {name: np.asarray(document["dt"][name], dtype=_DTYPES[name]) for name in DETECTION_FIELDS}
        except OverflowError as error:  # e.g. a place in an image's order beyond 255
            raise ValueError(f"Expected detection columns in range in an instance partial, but {error}") from None
        if len({len(column) for column in dt.values()}) > 1:
            raise ValueError("Expected detection columns of one length in an instance partial")
        if len(dt["order"]) and int(dt["order"].max()) >= MAX_DETECTIONS:
            raise ValueError(f"Expected places below {MAX_DETECTIONS} in an image's order in an instance partial")
        return cls([int(rank) for rank in document["images"]],
                   {int(k): [int(n) for n in v] for k, v in document["gt"].items()}, dt)


def _joined(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in DETECTION_FIELDS}


def image_instances(rank: int, gt_ids: np.ndarray, gt_segments: Sequence[Mapping], pred_ids: np.ndarray,
                    pred_segments: Sequence[Mapping], categories: Categories) -> InstancePartial:
    """One image's instance partial: its thing segments on both sides as RLEs, matched by COCOeval."""
    height, width = gt_ids.shape
    things = {c.id for c in categories if c.isthing}
    gt_things = [s for s in gt_segments if s["category_id"] in things]
    gt = [{"category_id": int(s["category_id"]), "iscrowd": int(s.get("iscrowd", 0) == 1), "area": int(s["area"]),
           "counts": counts} for s, counts in zip(gt_things, rle_counts(gt_ids, [int(s["id"]) for s in gt_things]))]
    pred_things = [s for s in pred_segments if s["category_id"] in things]
    dt = [{"category_id": int(s["category_id"]), "score": 1.0 if s.get("score") is None else float(s["score"]),
           "counts": counts}
          for s, counts in zip(pred_things, rle_counts(pred_ids, [int(s["id"]) for s in pred_things]))]
    return evaluate_masks(rank, height, width, gt, dt)


def evaluate_masks(rank: int, height: int, width: int, gt: Sequence[Mapping], dt: Sequence[Mapping]
                   ) -> InstancePartial:
    """COCOeval's per-image step on one image: ``gt`` {category_id, iscrowd, area, counts}, ``dt``
    {category_id, score, counts} (compressed RLE counts of a height x width image)."""
    category_ids = sorted({int(s["category_id"]) for s in [*gt, *dt]})  # others: COCOeval finds nothing there
    if not category_ids:
        return InstancePartial([rank])
    evaluator = COCOeval(*_image_datasets(rank, height, width, gt, dt), iouType="segm")
    evaluator.params.imgIds, evaluator.params.catIds = [rank], category_ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
    columns: dict[str, list] = {name: [] for name in DETECTION_FIELDS}
    gt_counts: dict[int, list[int]] = {}
    for k, category_id in enumerate(category_ids):
        results = evaluator.evalImgs[k * AREAS:(k + 1) * AREAS]  # one image: index k * areas + a
        if results[0] is None:
            continue
        gt_counts[category_id] = [int(np.count_nonzero(e["gtIgnore"] == 0)) for e in results]
        detections = len(results[0]["dtScores"])
        matched = np.zeros(detections, np.uint64)
        ignored = np.zeros(detections, np.uint64)
        for a, e in enumerate(results):
            for t in range(THRESHOLDS):
                bit = np.uint64(1 << (a * THRESHOLDS + t))
                matched |= np.where(e["dtMatches"][t] > 0, bit, np.uint64(0))
                ignored |= np.where(e["dtIgnore"][t] > 0, bit, np.uint64(0))
        columns["category_id"] += [category_id] * detections
        columns["rank"] += [rank] * detections
        columns["order"] += list(range(detections))
        columns["score"] += list(results[0]["dtScores"])
        columns["matched"] += matched.tolist()
        columns["ignored"] += ignored.tolist()
    return InstancePartial([rank], gt_counts,
                           {name: np.asarray(columns[name], dtype=_DTYPES[name]) for name in DETECTION_FIELDS})


def _image_datasets(rank: int, height: int, width: int, gt: Sequence[Mapping], dt: Sequence[Mapping]
                    ) -> tuple[COCO, COCO]:
    images = [{"id": rank, "height": height, "width": width}]
    category_ids = sorted({int(s["category_id"]) for s in [*gt, *dt]})
    categories = [{"id": category_id, "name": str(category_id)} for category_id in category_ids]
    gt_annotations, dt_annotations = [], []
    for number, segment in enumerate(gt, start=1):
        rle = {"size": [height, width], "counts": segment["counts"]}
        gt_annotations.append({"id": number, "image_id": rank, "category_id": segment["category_id"],
                               "iscrowd": segment["iscrowd"], "area": segment["area"], "segmentation": rle,
                               "bbox": mask_utils.toBbox(rle).tolist()})
    for number, segment in enumerate(dt, start=1):
        rle = {"size": [height, width], "counts": segment["counts"]}
        dt_annotations.append({"id": number, "image_id": rank, "category_id": segment["category_id"],
                               "iscrowd": 0, "score": segment["score"], "segmentation": rle,
                               "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()})
    return (_coco({"images": images, "annotations": gt_annotations, "categories": categories}),
            _coco({"images": images, "annotations": dt_annotations, "categories": categories}))


def _from_masks(document: Mapping) -> InstancePartial:
    """A version-1 partial (images with sizes, RLEs of both sides) evaluated image by image."""
    by_rank: dict[int, tuple[list, list]] = {int(image["rank"]): ([], []) for image in document["images"]}
    for segment in document["gt"]:
        by_rank[int(segment["rank"])][0].append(segment)
    for segment in document["dt"]:
        by_rank[int(segment["rank"])][1].append(segment)
    partial = InstancePartial()
    for image in document["images"]:
        rank = int(image["rank"])
        partial += evaluate_masks(rank, int(image["height"]), int(image["width"]), *by_rank[rank])
    return partial


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def accumulate(partial: InstancePartial, category_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's ``precision`` (T, R, K, A, M) and ``recall`` (T, K, A, M) from the records, with its arithmetic.

    Per category: detections in COCOeval's order (score descending, then image rank, then place in the image);
    per area range and maxDets, the first maxDets of each image; running sums of true and false positives (not
    ignored), recall against the ground truth not ignored, precision made non-increasing from the right, read at
    the 101 recall thresholds. -1 where a category has no ground truth not ignored, as COCOeval leaves it.
    """
    p = PARAMS
    shape = (THRESHOLDS, len(p.recThrs), len(category_ids), AREAS, len(p.maxDets))
    precision, recall = -np.ones(shape), -np.ones((THRESHOLDS, len(category_ids), AREAS, len(p.maxDets)))
    for k, category_id in enumerate(category_ids):
        counts = partial.gt.get(category_id)
        if counts is None:
            continue
        dt = partial.of_category(category_id)
        mine = np.lexsort((dt["order"], dt["rank"], -dt["score"]))
        for a in range(AREAS):
            if counts[a] == 0:
                continue
            for m, max_detections in enumerate(p.maxDets):
                kept = mine[dt["order"][mine] < max_detections]
                for t in range(THRESHOLDS):
                    bit = np.uint64(1 << (a * THRESHOLDS + t))
                    matched = (dt["matched"][kept] & bit) > 0
                    not_ignored = (dt["ignored"][kept] & bit) == 0
                    tp = np.cumsum(matched & not_ignored).astype(float)
                    fp = np.cumsum(~matched & not_ignored).astype(float)
                    precision[t, :, k, a, m], recall[t, k, a, m] = _interpolated(tp, fp, counts[a], p.recThrs)
    return precision, recall


def _interpolated(tp: np.ndarray, fp: np.ndarray, positives: int, thresholds: np.ndarray
                  ) -> tuple[np.ndarray, float]:
    """Precision at each recall threshold (0 past the last detection) and the final recall."""
    recall = tp / positives
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or beyond
    at = np.searchsorted(recall, thresholds, side="left")
    values = np.zeros(len(thresholds))
    inside = at < len(precision)
    values[inside] = precision[at[inside]]
    return values, float(recall[-1]) if len(recall) else 0.0


def instance_scores(partial: InstancePartial, categories: Categories) -> dict:
    """COCO mask AP of the thing classes: ``{AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl,
    per_class: {category id: AP}, images, gt, dt}``; -1 where COCOeval has nothing to average, as it reports."""
    category_ids = [c.id for c in categories if c.isthing]
    precision, recall = accumulate(partial, category_ids)
    evaluator = COCOeval(iouType="segm")  # its summarize, on the accumulated arrays
    evaluator.params.catIds = category_ids
    evaluator.eval = {"params": evaluator.params, "counts": list(precision.shape), "precision": precision,
                      "recall": recall}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.summarize()
    scores: dict = {name: float(value) for name, value in zip(SUMMARY_NAMES, evaluator.stats)}
    per_class = {}
    for k, category_id in enumerate(category_ids):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[int(category_id)] = float(values.mean()) if values.size else -1.0
    scores.update(per_class=per_class, images=len(partial.images),
                  gt=int(sum(counts[0] for counts in partial.gt.values())), dt=partial.detections)
    return scores


def format_instance_scores(scores: Mapping) -> str:
    """A plain-text table of the summary numbers (percent)."""
    header = " ".join(f"{name:>6}" for name in SUMMARY_NAMES[:6])
    values = " ".join(f"{100 * scores[name]:6.1f}" if scores[name] >= 0 else f"{'-':>6}" for name in SUMMARY_NAMES[:6])
    return (f"{header}\n{values}\n\nmask AP of {sum(1 for v in scores['per_class'].values() if v >= 0)} thing "
            f"classes over {scores['images']} images ({scores['gt']} ground-truth instances, not counting crowds, "
            f"{scores['dt']} predicted)")
