"""Views of the PQ match beyond panopticapi: PQ by segment size, per-image PQ, and mislabelled segments.

All three come from one image's :class:`segcore.metrics.pq.ImageMatch` (no extra pass over the pixels) and are
kept as summable partials:

* **By size** (COCO's area ranges: small < 32², medium < 96², large otherwise): a true positive and a false
  negative fall in the bucket of the ground-truth segment's area (its JSON area), a false positive in the
  bucket of its own area. Each bucket keeps per-category tp, fp, fn and the IoU sum, and averages like PQ.
* **Per image**: the image's PQ, SQ and RQ over the categories it has (tp + fp + fn > 0), averaged like PQ, with
  its counts, so the worst images can be found. Images with no segment on either side have no PQ.
* **Category confusion**: a non-crowd gt segment and a prediction of another category with IoU > 0.5 (PQ's union,
  VOID taken off): the segment was found but mislabelled. Each such pair is both an FN and an FP in PQ.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from segcore.categories import Categories
from segcore.metrics.pq import ClassStats, ImageMatch, _average

SIZES = (("small", 32 ** 2), ("medium", 96 ** 2), ("large", None))  # name, area upper bound (exclusive)
EXTRAS_VERSION = 1


def size_of(area: int) -> str:
    """The COCO size bucket of a segment area in pixels."""
    for name, bound in SIZES:
        if bound is None or area < bound:
            return name
    raise AssertionError("unreachable")


@dataclass
class PQExtras:
    """Summable partials of the extra PQ views.

    Attributes:
        by_size: size -> category id -> [tp, fp, fn, iou sum].
        images: one record per image with ground truth: image_id, source, rank, pq, sq, rq (None without
            segments), tp, fp, fn.
        confusion: (gt category, predicted category) -> count of mislabelled matches.
    """

    by_size: dict[str, dict[int, list]] = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)
    confusion: dict[tuple[int, int], int] = field(default_factory=dict)

    def __iadd__(self, other: "PQExtras") -> "PQExtras":
        for size, per_class in other.by_size.items():
            mine = self.by_size.setdefault(size, {})
            for category_id, values in per_class.items():
                sums = mine.setdefault(category_id, [0, 0, 0, 0.0])
                for k in range(4):
                    sums[k] += values[k]
        self.images.extend(other.images)
        for pair, count in other.confusion.items():
            self.confusion[pair] = self.confusion.get(pair, 0) + count
        return self

    def to_json(self) -> dict:
        return {
            "version": EXTRAS_VERSION,
            "by_size": {size: {str(k): v for k, v in sorted(per.items())} for size, per in self.by_size.items()},
            "images": self.images,
            "confusion": [[gt, pred, n] for (gt, pred), n in sorted(self.confusion.items())],
        }

    @classmethod
    def from_json(cls, document: Mapping) -> "PQExtras":
        return cls(
            by_size={size: {int(k): list(v) for k, v in per.items()} for size, per in document["by_size"].items()},
            images=list(document["images"]),
            confusion={(int(gt), int(pred)): int(n) for gt, pred, n in document["confusion"]},
        )


def image_extras(match: ImageMatch, image_id: str, source: str, rank: int) -> PQExtras:
    """The extras of one matched image (see the module docstring)."""
    extras = PQExtras()
    gt, pred = match.gt, match.pred
    per_image: dict[int, list] = {}  # category -> [tp, fp, fn, iou sum]

    def add(size: str, category_id: int, slot: int, iou: float = 0.0) -> None:
        for table in (extras.by_size.setdefault(size, {}), per_image):
            sums = table.setdefault(category_id, [0, 0, 0, 0.0])
            sums[slot] += 1
            sums[3] += iou

    for (_, _, _, category_id, intersection, union), (i, _) in zip(match.partial.matches, match.matched):
        add(size_of(int(gt.area[i])), category_id, 0, intersection / union)
    for j in match.false_positives:
        add(size_of(int(match.pred_area[j])), int(pred.category[j]), 1)
    for i in match.false_negatives:
        add(size_of(int(gt.area[i])), int(gt.category[i]), 2)
    extras.images.append(_image_record(per_image, image_id, source, rank))
    extras.confusion = _mislabelled(match)
    return extras


def _image_record(per_image: Mapping[int, list], image_id: str, source: str, rank: int) -> dict:
    record = {"image_id": image_id, "source": source, "rank": rank, "pq": None, "sq": None, "rq": None,
              "tp": sum(v[0] for v in per_image.values()), "fp": sum(v[1] for v in per_image.values()),
              "fn": sum(v[2] for v in per_image.values())}
    if per_image:
        pq = sq = rq = 0.0
        for tp, fp, fn, iou in per_image.values():
            denominator = tp + 0.5 * fp + 0.5 * fn
            pq += iou / denominator
            sq += iou / tp if tp else 0.0
            rq += tp / denominator
        n = len(per_image)
        record.update(pq=pq / n, sq=sq / n, rq=rq / n)
    return record


def _mislabelled(match: ImageMatch) -> dict[tuple[int, int], int]:
    """(gt category, predicted category) counts of pairs with IoU > 0.5 but different categories."""
    gt, pred, counts = match.gt, match.pred, match.counts
    rows, cols = np.nonzero(counts)
    keep = gt.listed[rows] & pred.listed[cols] & ~gt.crowd[rows] & (gt.category[rows] != pred.category[cols])
    rows, cols = rows[keep], cols[keep]
    intersection = counts[rows, cols]
    union = match.pred_area[cols] + gt.area[rows] - intersection - match.void_row[cols]
    hit = intersection / np.maximum(union, 1) > 0.5
    found: dict[tuple[int, int], int] = {}
    for r, c in zip(rows[hit].tolist(), cols[hit].tolist()):
        pair = (int(gt.category[r]), int(pred.category[c]))
        found[pair] = found.get(pair, 0) + 1
    return found


def pq_by_size(extras: PQExtras, categories: Categories) -> dict:
    """``{size: {"All" | "Things" | "Stuff": {pq, sq, rq, n}}}``, each averaged over the categories with data in
    that size, as PQ averages."""
    result = {}
    for size, _ in SIZES:
        per_class = extras.by_size.get(size, {})
        stats = {c.id: ClassStats(*_ints(per_class.get(c.id)), *(2 * [_iou(per_class.get(c.id))]))
                 for c in categories}
        result[size] = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            group = [c for c in categories if isthing is None or c.isthing == isthing]
            result[size][name], _ = _average(group, stats, exact=False)
    return result


def _ints(values: list | None) -> tuple[int, int, int]:
    return (0, 0, 0) if values is None else (int(values[0]), int(values[1]), int(values[2]))


def _iou(values: list | None) -> float:
    return 0.0 if values is None else float(values[3])


def worst_and_best(records: Iterable[dict], k: int) -> tuple[list[dict], list[dict]]:
    """The ``k`` images of lowest and of highest PQ (ties: by image id), from records that have a PQ."""
    scored = [r for r in records if r["pq"] is not None]
    worst = heapq.nsmallest(k, scored, key=lambda r: (r["pq"], str(r["image_id"])))
    best = heapq.nsmallest(k, scored, key=lambda r: (-r["pq"], str(r["image_id"])))
    return worst, best


def confusion_table(extras: PQExtras, limit: int | None = None) -> list[dict]:
    """The mislabelled pairs, most frequent first: ``[{"gt", "pred", "count"}]``."""
    rows = sorted(extras.confusion.items(), key=lambda item: (-item[1], item[0]))
    return [{"gt": gt, "pred": pred, "count": n} for (gt, pred), n in rows[:limit]]
