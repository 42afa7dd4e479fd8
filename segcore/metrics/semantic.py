"""The semantic view of panoptic maps: a summable confusion matrix over dataset categories, and the scores of
semantic segmentation from it (per-class IoU, mIoU, pixel accuracy, mean accuracy, frequency-weighted IoU).

Each pixel's semantic label is its segment's category (crowd regions included, as converting COCO panoptic to
semantic labels does); pixels of no segment are VOID. Pixels whose ground truth is VOID are ignored. A predicted
VOID pixel on a labelled ground-truth pixel counts against that class's accuracy and IoU (a miss), and for no
predicted class. Scores average over the classes present in the ground truth, as detectron2's evaluator does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from segcore.categories import Categories


def _category_lookup(ids: np.ndarray, segments: Sequence[Mapping], column: Mapping[int, int], void: int,
                     where: str) -> np.ndarray:
    """Each pixel's category column (VOID for unlisted ids).  # same shape as ids"""
    keys, inverse = np.unique(ids, return_inverse=True)
    by_id = {int(s["id"]): int(s["category_id"]) for s in segments}
    table = np.full(len(keys), void, np.int64)
    for position, segment_id in enumerate(keys.tolist()):
        category_id = by_id.get(segment_id)
        if category_id is not None:
            if category_id not in column:
                raise ValueError(f"{where}: segment {segment_id} has unknown category_id {category_id}")
            table[position] = column[category_id]
    return table[inverse.reshape(ids.shape)]


@dataclass
class Confusion:
    """``matrix[gt, pred]`` pixel counts over the categories in order, VOID last (row and column).

    Attributes:
        category_ids: the dataset categories, in the order of the rows and columns.
        matrix: (K + 1, K + 1) int64.
    """

    category_ids: tuple[int, ...]
    matrix: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        size = len(self.category_ids) + 1
        if self.matrix is None:
            self.matrix = np.zeros((size, size), np.int64)
        elif self.matrix.shape != (size, size):
            raise ValueError(f"Expected a {size}x{size} confusion matrix, but got {self.matrix.shape}")

    @classmethod
    def for_categories(cls, categories: Categories) -> "Confusion":
        return cls(tuple(c.id for c in categories))

    def add_image(self, gt_ids: np.ndarray, gt_segments: Sequence[Mapping], pred_ids: np.ndarray,
                  pred_segments: Sequence[Mapping], where: str = "image") -> None:
        """Adds one image's pixels (both maps of one size; segments as in COCO panoptic ``segments_info``).

        Raises:
            ValueError: the maps differ in size, or a segment has a category not in ``category_ids``.
        """
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"{where}: gt map {gt_ids.shape} and prediction {pred_ids.shape} differ in size")
        column = {category_id: index for index, category_id in enumerate(self.category_ids)}
        void = len(self.category_ids)
        gt = _category_lookup(gt_ids, gt_segments, column, void, f"{where} (gt)")
        pred = _category_lookup(pred_ids, pred_segments, column, void, f"{where} (prediction)")
        size = void + 1
        self.matrix += np.bincount((gt * size + pred).ravel(), minlength=size * size).reshape(size, size)

    def add_pairs(self, pair_counts: np.ndarray, gt_categories: np.ndarray, pred_categories: np.ndarray) -> None:
        """Adds a joint histogram of segment pairs (e.g. the PQ match's): ``pair_counts[i, j]`` pixels whose gt
        segment has category ``gt_categories[i]`` and whose prediction ``pred_categories[j]`` (-1: VOID).

        Equal to :meth:`add_image` on the maps the histogram was counted from, without another pass over them.

        Raises:
            ValueError: a category is not in ``category_ids``.
        """
        column = {category_id: index for index, category_id in enumerate(self.category_ids)}
        void = len(self.category_ids)

        def columns(categories: np.ndarray) -> np.ndarray:
            try:
                return np.array([void if c < 0 else column[c] for c in categories.tolist()], np.int64)
            except KeyError as error:
                raise ValueError(f"Expected categories of {self.category_ids}, but got {error.args[0]}") from None

        rows, cols = np.nonzero(pair_counts)
        np.add.at(self.matrix, (columns(gt_categories)[rows], columns(pred_categories)[cols]), pair_counts[rows, cols])

    def __iadd__(self, other: "Confusion") -> "Confusion":
        if other.category_ids != self.category_ids:
            raise ValueError("Expected confusion matrices over the same categories, but they differ")
        self.matrix += other.matrix
        return self

    def to_json(self) -> dict:
        """Sparse JSON form: ``[[gt index, pred index, count], ...]`` for the non-zero cells."""
        rows, cols = np.nonzero(self.matrix)
        return {"category_ids": list(self.category_ids),
                "cells": [[int(r), int(c), int(self.matrix[r, c])] for r, c in zip(rows, cols)]}

    @classmethod
    def from_json(cls, document: Mapping) -> "Confusion":
        confusion = cls(tuple(document["category_ids"]))
        for row, col, count in document["cells"]:
            confusion.matrix[row, col] += count
        return confusion


def semantic_scores(confusion: Confusion, categories: Categories) -> dict:
    """mIoU, per-class IoU and accuracy, pixel accuracy, mean accuracy and frequency-weighted IoU (fractions).

    Classes without ground-truth pixels get None and are left out of the means.
    """
    classes = len(confusion.category_ids)
    labelled = confusion.matrix[:classes]  # gt VOID rows are ignored
    tp = np.diag(labelled[:, :classes]).astype(np.float64)
    gt_pixels = labelled.sum(axis=1).astype(np.float64)  # includes predicted VOID: a miss
    pred_pixels = labelled[:, :classes].sum(axis=0).astype(np.float64)
    union = gt_pixels + pred_pixels - tp
    valid = gt_pixels > 0
    iou = np.divide(tp, union, out=np.zeros(classes), where=union > 0)
    accuracy = np.divide(tp, gt_pixels, out=np.zeros(classes), where=valid)
    total = gt_pixels.sum()
    names = {c.id: c.name for c in categories}
    per_class = {
        category_id: {"name": names.get(category_id, str(category_id)),
                      "iou": float(iou[i]) if valid[i] else None,
                      "accuracy": float(accuracy[i]) if valid[i] else None,
                      "gt_pixels": int(gt_pixels[i]), "pred_pixels": int(pred_pixels[i])}
        for i, category_id in enumerate(confusion.category_ids)
    }
    return {
        "miou": float(iou[valid].mean()) if valid.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_accuracy": float(accuracy[valid].mean()) if valid.any() else 0.0,
        "fwiou": float((gt_pixels[valid] / total * iou[valid]).sum()) if total else 0.0,
        "classes": int(valid.sum()),
        "pixels": int(total),
        "predicted_void_pixels": int(labelled[:, classes].sum()),
        "per_class": per_class,
    }


def format_scores(scores: Mapping) -> str:
    """A markdown table of the semantic scores (percent), classes present in the ground truth."""
    lines = [f"mIoU {100 * scores['miou']:.1f}, pixel accuracy {100 * scores['pixel_accuracy']:.1f}, mean accuracy "
             f"{100 * scores['mean_accuracy']:.1f}, fwIoU {100 * scores['fwiou']:.1f} over {scores['classes']} "
             f"classes and {scores['pixels']} labelled pixels.", "", "| class | IoU | accuracy |", "|---|---:|---:|"]
    for row in scores["per_class"].values():
        if row["iou"] is not None:
            lines.append(f"| {row['name']} | {100 * row['iou']:.1f} | {100 * row['accuracy']:.1f} |")
    return "\n".join(lines)
