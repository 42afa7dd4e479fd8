"""Panoptic Quality (PQ = SQ x RQ) with the reference's exact rules, as integer partials that merge in any order.

References:
    A. Kirillov, K. He, R. Girshick, C. Rother, P. Dollar. "Panoptic Segmentation". CVPR 2019, arXiv:1801.00868.
    cocodataset/panopticapi, panopticapi/evaluation.py: ``pq_compute_single_core`` and ``PQStat.pq_average``,
    whose results this module reproduces bit for bit.

The rules, per image (VOID is segment id 0 unless segments_info lists it; a listed id 0 is a real segment):
  * a gt segment and a prediction match iff they share a category, the gt is not crowd, and
    IoU > 0.5 strictly, with ``union = pred_area + gt_area - intersection - |pred & gt VOID|``;
  * the prediction's area is counted in its PNG, the ground truth's is read from its JSON;
  * every unmatched non-crowd gt is a FN; crowd gt segments are kept per category (the last listed wins);
  * an unmatched prediction is a FP unless ``(|pred & VOID| + |pred & same-category crowd|) / pred_area > 0.5``.

A partial keeps integer counts (tp, fp, fn per category) and, per match, its image rank, ids and integer
intersection and union. Summing IoUs from those in the reference's order (images in gt-JSON order, matches
in ascending (gt id, pred id) order, one running float64 sum per category) reproduces panopticapi's
floating-point result exactly, whatever order the partials were merged in; ``math.fsum`` of the same IoUs
gives the correctly rounded, order-independent sum as well.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numba
import numpy as np

from segcore.categories import Categories

VOID = 0
OFFSET = 256 * 256 * 256
MATCH_FIELDS = ("image_rank", "gt_id", "pred_id", "category_id", "intersection", "union")


class PQInputError(ValueError):
    """Ground truth or prediction of one image is inconsistent; the message names the image and the id."""


@dataclass
class PQPartial:
    """Mergeable Panoptic Quality partial sums: integers only.

    Attributes:
        counts: category id -> [tp, fp, fn].
        matches: one tuple per match, fields MATCH_FIELDS.
        images: number of images folded in.
    """

    counts: dict[int, list[int]] = field(default_factory=dict)
    matches: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    images: int = 0

    def __iadd__(self, other: "PQPartial") -> "PQPartial":
        for category_id, (tp, fp, fn) in other.counts.items():
            mine = self.counts.setdefault(category_id, [0, 0, 0])
            mine[0] += tp
            mine[1] += fp
            mine[2] += fn
        self.matches.extend(other.matches)
        self.images += other.images
        return self

    def __add__(self, other: "PQPartial") -> "PQPartial":
        total = PQPartial()
        total += self
        total += other
        return total

    def to_json(self) -> dict:
        """Returns a JSON-ready form (integers only; matches stored as columns)."""
        columns = list(zip(*self.matches)) if self.matches else [() for _ in MATCH_FIELDS]
        return {
            "images": self.images,
            "counts": {str(k): list(v) for k, v in sorted(self.counts.items())},
            "matches": {name: list(column) for name, column in zip(MATCH_FIELDS, columns)},
        }

    @classmethod
    def from_json(cls, document: Mapping) -> "PQPartial":
        """Inverse of :meth:`to_json`."""
        columns = [document["matches"][name] for name in MATCH_FIELDS]
        return cls(
            counts={int(k): list(v) for k, v in document["counts"].items()},
            matches=[tuple(int(v) for v in row) for row in zip(*columns)],  # type: ignore[misc]
            images=int(document["images"]),
        )


class PQFold:
    """PQ sums folded shard by shard, in memory that does not grow with the images (the reduce's accumulator).

    Counts and the exact IoU sums are order-free: an IoU of a match lies in (0.5, 1], so it is an integer multiple
    of 2^-53, and those integers add up exactly (the sum is rounded once, at the end: the correctly rounded sum,
    equal to ``math.fsum``). The reference's running float sum needs the matches in gt-JSON order (image rank,
    then gt id, then prediction id). Shards whose ranks come in ascending, disjoint runs (every shard of
    embedded ground truth; ``--gt`` whose JSON lists images in input order) are folded as they are added, so
    nothing is kept. When a shard's ranks reach below those already folded, :attr:`in_order` turns False and
    the running sums are redone by :meth:`refold`, which takes the shards again in order of their lowest rank
    and keeps only the matches whose turn has not come (those of overlapping shards).
    """

    def __init__(self):
        self.counts: dict[int, list[int]] = {}
        self.exact: dict[int, int] = {}  # category id -> sum of IoU x 2^53 (exact integers)
        self.running: dict[int, float] = {}  # category id -> IoU sum in the reference's order
        self.images = 0
        self.in_order = True
        self._lowest = array("q")  # the lowest rank of each shard with matches
        self._keys: list[str] = []  # and their keys
        self._folded_to = -1  # the highest rank folded into ``running``

    @staticmethod
    def parse(document: Mapping, key: str = "") -> "ShardPQ":
        """A shard's partial (:meth:`PQPartial.to_json` form), checked, ready for :meth:`add`.

        Raises:
            ValueError: the document is not a PQ partial (names ``key``).
        """
        matches = _match_columns(document, key)
        try:
            counts = {int(category_id): [int(values[i]) for i in range(3)]
                      for category_id, values in document["counts"].items()}
            images = int(document["images"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise ValueError(f"Expected a PQ partial in {key or 'a shard'}, but its counts cannot be read: "
                             f"{error!r}") from None
        return ShardPQ(counts, images, matches)

    def add(self, partial: "Mapping | ShardPQ", key: str = "") -> None:
        """Adds a shard's partial (a document, or what :meth:`parse` made of it); ``key`` names it for refold.

        Raises:
            ValueError: a document that is not a PQ partial (names ``key``); nothing was added.
        """
        shard = partial if isinstance(partial, ShardPQ) else self.parse(partial, key)
        for category_id, values in shard.counts.items():
            mine = self.counts.setdefault(category_id, [0, 0, 0])
            for i in range(3):
                mine[i] += values[i]
        self.images += shard.images
        matches = shard.matches
        if not len(matches["image_rank"]):
            return
        lowest, highest = int(matches["image_rank"][0]), int(matches["image_rank"][-1])  # sorted by rank
        self._lowest.append(lowest)
        self._keys.append(key)
        for category_id, ious in _by_category(matches):
            scaled = np.ldexp(ious, 53).astype(np.int64)  # exact: 2^52 < IoU x 2^53 <= 2^53
            self.exact[category_id] = (self.exact.get(category_id, 0) + (int((scaled >> 26).sum()) << 26)
                                       + int((scaled & ((1 << 26) - 1)).sum()))
            if self.in_order and lowest > self._folded_to:
                self._fold(category_id, ious)
        if self.in_order and lowest <= self._folded_to:
            self.in_order = False
            self.running = {}
        self._folded_to = max(self._folded_to, highest)

    def refold(self, read: Callable[[list[str]], Iterable[Mapping]]) -> None:
        """Redoes the running sums in the reference's order when shards came out of rank order.

        Args:
            read: given keys, yields their partials (the same documents :meth:`add` took) in that order.
        """
        if self.in_order:
            return
        self.running = {}
        lowest = np.frombuffer(self._lowest, np.int64)
        ordered = np.argsort(lowest, kind="stable")
        pending: list[dict[str, np.ndarray]] = []
        for index, document in enumerate(read([self._keys[i] for i in ordered])):
            pending.append(self.parse(document, self._keys[ordered[index]]).matches)
            below = int(lowest[ordered[index + 1]]) if index + 1 < len(ordered) else None  # none later reaches below
            if below is None or min(int(m["image_rank"].min()) for m in pending) < below:
                pending = self._fold_below(pending, below)
        self.in_order = True

    def _fold_below(self, pending: list[dict[str, np.ndarray]], below: int | None) -> list[dict[str, np.ndarray]]:
        joined = {name: np.concatenate([m[name] for m in pending]) for name in pending[0]}
        order = np.lexsort((joined["pred_id"], joined["gt_id"], joined["image_rank"]))
        joined = {name: column[order] for name, column in joined.items()}
        cut = len(order) if below is None else int(np.searchsorted(joined["image_rank"], below))
        for category_id, ious in _by_category({name: column[:cut] for name, column in joined.items()}):
            self._fold(category_id, ious)
        rest = {name: column[cut:] for name, column in joined.items()}
        return [rest] if len(rest["image_rank"]) else []

    def _fold(self, category_id: int, ious: np.ndarray) -> None:
        # cumsum adds left to right, one at a time, as the reference's loop does
        self.running[category_id] = float(np.cumsum(np.concatenate(([self.running.get(category_id, 0.0)], ious)))[-1])

    def class_stats(self, categories: Categories) -> dict[int, "ClassStats"]:
        """As :func:`class_stats` of the PQPartial of the same matches.

        Raises:
            RuntimeError: shards came out of rank order and :meth:`refold` was not called.
        """
        if not self.in_order:
            raise RuntimeError("Expected refold() after shards that came out of rank order")
        stats = {}
        for category in categories:
            tp, fp, fn = self.counts.get(category.id, (0, 0, 0))
            stats[category.id] = ClassStats(tp, fp, fn, self.running.get(category.id, 0.0),
                                            self.exact.get(category.id, 0) / 2 ** 53)
        return stats


@dataclass(frozen=True)
class ShardPQ:
    """A shard's PQ partial as read: counts, images, and its matches as sorted columns (see _match_columns)."""

    counts: dict[int, list[int]]
    images: int
    matches: dict[str, np.ndarray]


def _match_columns(document: Mapping, key: str) -> dict[str, np.ndarray]:
    """A partial's matches as int64 columns, sorted in the reference's order, and their IoU ("iou", float64)."""
    try:
        columns = {name: np.asarray(document["matches"][name], np.int64) for name in MATCH_FIELDS}
        if len({len(column) for column in columns.values()}) > 1:
            raise ValueError("match columns of different lengths")
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"Expected a PQ partial in {key or 'a shard'}, but its matches cannot be read: {error}"
                         ) from None
    order = np.lexsort((columns["pred_id"], columns["gt_id"], columns["image_rank"]))
    columns = {name: column[order] for name, column in columns.items()}
    iou = columns["intersection"] / np.maximum(columns["union"], 1)
    if len(iou) and not ((iou > 0.5) & (iou <= 1)).all():
        raise ValueError(f"Expected matches of IoU > 0.5 in the PQ partial of {key or 'a shard'}, but some are not")
    columns["iou"] = iou
    return columns


def _by_category(matches: Mapping[str, np.ndarray]) -> Iterable[tuple[int, np.ndarray]]:
    """(category id, IoUs in the matches' order) per category present."""
    categories = matches["category_id"]
    order = np.argsort(categories, kind="stable")
    ordered = categories[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1]))) if len(ordered) else []
    bounds = list(starts) + [len(ordered)]
    for start, end in zip(bounds[:-1], bounds[1:]):
        yield int(ordered[start]), matches["iou"][order[start:end]]


@dataclass(frozen=True)
class ClassStats:
    """PQ sums of one category: counts, the reference-order IoU sum and the exactly rounded one."""

    tp: int
    fp: int
    fn: int
    iou: float
    iou_exact: float


def match_image(
    image_id: object,
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping],
    categories: Categories,
    image_rank: int = 0,
) -> PQPartial:
    """Matches one image's prediction to its ground truth with panopticapi's rules.

    Args:
        image_id: the image's id, for error messages.
        gt_ids: gt id map  # (H, W) uint32
        gt_segments: gt segments_info entries {id, category_id, iscrowd, area}.
        pred_ids: predicted id map  # (H, W) uint32
        pred_segments: predicted segments_info entries {id, category_id}.
        categories: the gt dataset's categories.
        image_rank: the image's position in gt-JSON order, for the reference's summation order.

    Returns:
        The image's partial.

    Raises:
        PQInputError: sizes differ; a PNG id is not listed; a listed prediction id is not in its PNG;
            a category id is unknown; a gt area makes a union non-positive. The message names the image and id.
    """
    return match_image_details(image_id, gt_ids, gt_segments, pred_ids, pred_segments, categories,
                               image_rank).partial


@dataclass(frozen=True)
class ImageMatch:
    """One image's match with what led to it, for views beyond PQ (sizes, per-image PQ, confusions).

    Attributes:
        partial: the image's PQ partial.
        gt, pred: both sides' segment tables (keys: listed ids plus VOID, ascending).
        counts: ``counts[i, j]`` pixels with gt key i and predicted key j.
        pred_area: (P,) pixels per predicted key, counted in the PNG.
        void_row: (P,) pixels of each prediction on gt VOID.
        matched: (gt index, pred index) per true positive, in the partial's match order.
        false_negatives: gt indices counted as FN.
        false_positives: pred indices counted as FP.
    """

    partial: PQPartial
    gt: "SegmentTable"
    pred: "SegmentTable"
    counts: np.ndarray
    pred_area: np.ndarray
    void_row: np.ndarray
    matched: list[tuple[int, int]]
    false_negatives: list[int]
    false_positives: list[int]


def match_image_details(
    image_id: object,
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping],
    categories: Categories,
    image_rank: int = 0,
) -> ImageMatch:
    """:func:`match_image` keeping the joint histogram and which segments were TP, FN and FP.

    Raises:
        PQInputError: as :func:`match_image`.
    """
    if gt_ids.shape != pred_ids.shape:
        raise PQInputError(
            f"Image {image_id}: gt map is {gt_ids.shape[1]}x{gt_ids.shape[0]} but the prediction is "
            f"{pred_ids.shape[1]}x{pred_ids.shape[0]} (width x height)"
        )
    _check_unique_gt_ids(image_id, gt_segments)
    gt = _segment_table(image_id, gt_segments, categories, "gt")
    pred = _segment_table(image_id, pred_segments, categories, "prediction")
    counts = _count_pairs(image_id, gt_ids, gt.keys, pred_ids, pred.keys)
    _check_gt_present(image_id, gt, counts.sum(axis=1))
    pred_area = counts.sum(axis=0)
    _check_predictions_present(image_id, pred, pred_area)
    # VOID is gt id 0 when unlisted. (panopticapi also takes a listed id 0 off unions as VOID, which
    # can divide by zero; COCO never lists 0, and here a listed 0 is a real segment only.)
    void_row = np.zeros(len(pred.keys), np.int64) if gt.listed[0] else counts[0]
    pairs, matches = _match_pairs(image_id, counts, gt, pred, pred_area, void_row, image_rank)
    partial = PQPartial(matches=matches, images=1)
    for category_id in (m[3] for m in matches):
        partial.counts.setdefault(category_id, [0, 0, 0])[0] += 1
    matched_gt = {r for r, _ in pairs}
    matched_pred = {c for _, c in pairs}
    crowd_index, false_negatives = _count_false_negatives(gt, matched_gt, partial)
    false_positives = _count_false_positives(pred, matched_pred, counts, pred_area, void_row, crowd_index, partial)
    return ImageMatch(partial, gt, pred, counts, pred_area, void_row, pairs, false_negatives, false_positives)


def class_stats(partial: "PQPartial | PQFold", categories: Categories) -> dict[int, ClassStats]:
    """Per-category sums, IoUs folded in the reference's order.

    Returns:
        category id -> ClassStats, for every category of ``categories`` (zeros where absent).
    """
    if isinstance(partial, PQFold):
        return partial.class_stats(categories)
    running: dict[int, float] = {}
    exact: dict[int, list[float]] = {}
    for _, _, _, category_id, intersection, union in sorted(partial.matches, key=_reference_order):
        iou = intersection / union
        running[category_id] = running.get(category_id, 0.0) + iou
        exact.setdefault(category_id, []).append(iou)
    stats = {}
    for category in categories:
        tp, fp, fn = partial.counts.get(category.id, (0, 0, 0))
        stats[category.id] = ClassStats(tp, fp, fn, running.get(category.id, 0.0), math.fsum(exact.get(category.id, ())))
    return stats


def summarize(partial: "PQPartial | PQFold", categories: Categories, exact: bool = False) -> dict:
    """PQ, SQ and RQ as panopticapi's ``pq_compute`` returns them.

    Args:
        partial: the merged partial of every image.
        categories: the gt dataset's categories, in gt-JSON order (the averaging order).
        exact: use the correctly rounded IoU sums instead of the reference's running sums.

    Returns:
        ``{"All": {pq, sq, rq, n}, "per_class": {category_id: {pq, sq, rq}}, "Things": ..., "Stuff": ...}``.
        Where a group has no category with tp + fp + fn > 0 (the reference divides by zero there),
        its pq, sq and rq are 0.0 and n is 0.
    """
    stats = class_stats(partial, categories)
    results: dict = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        group = [c for c in categories if isthing is None or c.isthing == isthing]
        results[name], per_class = _average(group, stats, exact)
        if name == "All":
            results["per_class"] = per_class
    return results


def _average(group: Iterable, stats: Mapping[int, ClassStats], exact: bool) -> tuple[dict, dict]:
    """The reference's ``pq_average``: per-class values, then plain means in category order."""
    pq = sq = rq = 0.0
    n = 0
    per_class = {}
    for category in group:
        s = stats[category.id]
        if s.tp + s.fp + s.fn == 0:
            per_class[category.id] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        iou = s.iou_exact if exact else s.iou
        n += 1
        per_class[category.id] = {
            "pq": iou / (s.tp + 0.5 * s.fp + 0.5 * s.fn),
            "sq": iou / s.tp if s.tp != 0 else 0,  # an int 0, as in the reference
            "rq": s.tp / (s.tp + 0.5 * s.fp + 0.5 * s.fn),
        }
        pq += per_class[category.id]["pq"]
        sq += per_class[category.id]["sq"]
        rq += per_class[category.id]["rq"]
    if n == 0:
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def _reference_order(match: tuple) -> tuple[int, int, int]:
    return match[0], match[1], match[2]


@dataclass(frozen=True)
class SegmentTable:
    """One side's segments as parallel arrays over ``keys`` (listed ids plus VOID, ascending)."""

    keys: np.ndarray  # (K,) int64 ascending
    listed: np.ndarray  # (K,) bool
    category: np.ndarray  # (K,) int64
    crowd: np.ndarray  # (K,) bool
    area: np.ndarray  # (K,) int64 (JSON areas; 0 where not listed)
    order: list[int]  # key indices of the listed segments in segments_info order (first occurrence)


def _segment_table(image_id: object, segments: Sequence[Mapping], categories: Categories, role: str) -> SegmentTable:
    """Indexes segments_info by id; like the reference, a repeated id keeps its last entry."""
    by_id: dict[int, Mapping] = {}
    for segment in segments:
        try:
            by_id[int(segment["id"])] = segment
        except (KeyError, TypeError, ValueError):
            raise PQInputError(f"Image {image_id}: {role} segment {dict(segment)!r} has no integer 'id'") from None
    keys = np.array(sorted(set(by_id) | {VOID}), dtype=np.int64)
    index = {int(k): i for i, k in enumerate(keys)}
    size = len(keys)
    listed = np.zeros(size, bool)
    category = np.full(size, -1, np.int64)
    crowd = np.zeros(size, bool)
    area = np.zeros(size, np.int64)
    for segment_id, segment in by_id.items():
        i = index[segment_id]
        listed[i] = True
        category[i] = _category_of(image_id, segment_id, segment, categories, role)
        crowd[i] = segment.get("iscrowd", 0) == 1
        if role == "gt":
            area[i] = _gt_area(image_id, segment_id, segment)
    return SegmentTable(keys, listed, category, crowd, area, [index[s] for s in by_id])


def _check_unique_gt_ids(image_id: object, segments: Sequence[Mapping]) -> None:
    """Malformed ground truth: one segment id listed twice (panopticapi silently keeps the last entry)."""
    seen: set = set()
    for segment in segments:
        segment_id = segment.get("id") if isinstance(segment, Mapping) else None
        if segment_id in seen:
            raise PQInputError(f"Image {image_id}: gt segment id {segment_id} is listed twice in segments_info")
        seen.add(segment_id)


def _check_gt_present(image_id: object, gt: SegmentTable, gt_pixels: np.ndarray) -> None:
    """Malformed ground truth: listed segments with no pixel in the gt PNG (panopticapi would count each as a
    false negative of its JSON area)."""
    absent = gt.keys[gt.listed & (gt_pixels == 0)]
    if len(absent):
        shown = ", ".join(str(int(k)) for k in absent[:10]) + (" ..." if len(absent) > 10 else "")
        raise PQInputError(f"Image {image_id}: {len(absent)} gt segments of segments_info are not in the gt PNG "
                           f"(ids {shown})")


def _category_of(image_id: object, segment_id: int, segment: Mapping, categories: Categories, role: str) -> int:
    category_id = segment.get("category_id")
    if category_id not in categories:
        raise PQInputError(f"Image {image_id}: {role} segment {segment_id} has unknown category_id {category_id}")
    return int(category_id)


def _gt_area(image_id: object, segment_id: int, segment: Mapping) -> int:
    area = segment.get("area")
    if not isinstance(area, (int, np.integer)) or area <= 0:
        raise PQInputError(f"Image {image_id}: gt segment {segment_id} needs a positive integer 'area', but has {area!r}")
    return int(area)


def _count_pairs(image_id: object, gt_ids: np.ndarray, gt_keys: np.ndarray, pred_ids: np.ndarray, pred_keys: np.ndarray) -> np.ndarray:
    """Joint histogram: ``counts[i, j]`` = pixels with gt id gt_keys[i] and predicted id pred_keys[j]."""
    counts = np.zeros((len(gt_keys), len(pred_keys)), np.int64)
    status, segment_id = _pair_histogram(gt_ids.reshape(-1), pred_ids.reshape(-1), gt_keys, pred_keys, counts)
    if status:
        role = "gt" if status == 1 else "prediction"
        raise PQInputError(f"Image {image_id}: segment id {segment_id} is in the {role} PNG but not in its segments_info")
    return counts


def _check_predictions_present(image_id: object, pred: SegmentTable, pred_area: np.ndarray) -> None:
    absent = pred.keys[pred.listed & (pred_area == 0)]
    if absent.size:
        raise PQInputError(
            f"Image {image_id}: prediction segment ids {absent.tolist()} are in segments_info but not in the PNG"
        )


def _match_pairs(image_id, counts, gt: SegmentTable, pred: SegmentTable, pred_area, void_row, image_rank):
    """Finds the IoU > 0.5 matches among same-category, non-crowd pairs, in ascending (gt id, pred id) order."""
    rows, cols = np.nonzero(counts)
    keep = gt.listed[rows] & pred.listed[cols] & ~gt.crowd[rows] & (gt.category[rows] == pred.category[cols])
    rows, cols = rows[keep], cols[keep]
    intersection = counts[rows, cols]
    union = pred_area[cols] + gt.area[rows] - intersection - void_row[cols]
    if (union <= 0).any():
        bad = int(gt.keys[rows[np.argmax(union <= 0)]])
        raise PQInputError(f"Image {image_id}: gt segment {bad} has an 'area' in segments_info smaller than its overlap")
    is_match = intersection / union > 0.5
    rows, cols = rows[is_match], cols[is_match]
    matches = [
        (image_rank, int(gt.keys[r]), int(pred.keys[c]), int(gt.category[r]), int(counts[r, c]), int(u))
        for r, c, u in zip(rows.tolist(), cols.tolist(), union[is_match].tolist())
    ]
    return list(zip(rows.tolist(), cols.tolist())), matches


def _count_false_negatives(gt: SegmentTable, matched: set[int], partial: PQPartial) -> tuple[dict[int, int], list[int]]:
    """Counts unmatched non-crowd gt as FN; returns category -> key index of its (last listed) crowd segment,
    and the FN indices."""
    crowd_index: dict[int, int] = {}
    false_negatives = []
    for i in gt.order:
        if i in matched:
            continue
        category_id = int(gt.category[i])
        if gt.crowd[i]:
            crowd_index[category_id] = i
            continue
        partial.counts.setdefault(category_id, [0, 0, 0])[2] += 1
        false_negatives.append(i)
    return crowd_index, false_negatives


def _count_false_positives(pred, matched, counts, pred_area, void_row, crowd_index, partial: PQPartial) -> list[int]:
    """Counts unmatched predictions as FP unless more than half of them lies on VOID or same-category crowd;
    returns the FP indices."""
    false_positives = []
    for j in pred.order:
        if j in matched:
            continue
        category_id = int(pred.category[j])
        ignored = int(void_row[j])
        if category_id in crowd_index:
            ignored += int(counts[crowd_index[category_id], j])
        if ignored / int(pred_area[j]) > 0.5:
            continue
        partial.counts.setdefault(category_id, [0, 0, 0])[1] += 1
        false_positives.append(j)
    return false_positives


@numba.njit(cache=True, nogil=True)
def _pair_histogram(gt, pred, gt_keys, pred_keys, counts):  # pragma: no cover - compiled
    """Counts (gt, pred) id pairs into ``counts``; returns (0, 0), or (1 | 2, id) for an id missing from the keys.

    A first, vectorisable pass marks the pixels where either id changes; the second visits only those
    (skipping eight unchanged pixels at a time) and looks ids up by binary search.
    """
    n = gt.size
    change = np.zeros((n + 7) // 8 * 8, np.uint8)
    change[0] = 1
    for i in range(1, n):
        change[i] = (gt[i] != gt[i - 1]) | (pred[i] != pred[i - 1])
    words = change.view(np.uint64)
    row = col = start = 0
    for word in range(words.size):
        if words[word] == 0:
            continue
        for i in range(word * 8, min(word * 8 + 8, n)):
            if not change[i]:
                continue
            counts[row, col] += i - start
            start = i
            row = np.searchsorted(gt_keys, np.int64(gt[i]))
            if row == gt_keys.size or gt_keys[row] != gt[i]:
                return 1, np.int64(gt[i])
            col = np.searchsorted(pred_keys, np.int64(pred[i]))
            if col == pred_keys.size or pred_keys[col] != pred[i]:
                return 2, np.int64(pred[i])
    counts[row, col] += n - start
    return 0, 0
