"""Every view of quality of one image with ground truth, from one PQ match, and their shard-wide sums.

One image gives: its PQ partial (panopticapi's rules), its semantic confusion, the PQ extras (by size, per image,
mislabelled segments) and its instance-view RLEs. The labeling worker and the importer of outside predictions
both call :func:`evaluate_image`, so a shard's partials mean the same whoever made them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from segcore.categories import Categories
from segcore.metrics.extras import PQExtras, image_extras
from segcore.metrics.instances import InstancePartial, image_instances
from segcore.metrics.pq import PQPartial, match_image_details
from segcore.metrics.semantic import Confusion


@dataclass
class ImageViews:
    """One image's partials of every view."""

    pq: PQPartial
    confusion: Confusion
    extras: PQExtras
    instances: InstancePartial


def evaluate_image(image_id: str, source: str, rank: int, gt_ids: np.ndarray, gt_segments: Sequence[Mapping],
                   pred_ids: np.ndarray, pred_segments: Sequence[Mapping], categories: Categories) -> ImageViews:
    """Matches a prediction to its ground truth and computes every view's partial.

    Args:
        image_id: the image's key (row ``image_id``), for messages and per-image records.
        source: where the image came from, for per-image records.
        rank: the image's position in gt-JSON order (PQ's summation order; instance-view image id).
        gt_ids, pred_ids: id maps  # (H, W) uint32
        gt_segments, pred_segments: COCO panoptic segments_info entries.

    Raises:
        segcore.metrics.pq.PQInputError: the ground truth or the prediction is inconsistent (see match_image).
    """
    match = match_image_details(image_id, gt_ids, gt_segments, pred_ids, pred_segments, categories, rank)
    confusion = Confusion.for_categories(categories)  # from the match's joint histogram: no pass over the maps
    confusion.add_pairs(match.counts, np.where(match.gt.listed, match.gt.category, -1),
                        np.where(match.pred.listed, match.pred.category, -1))
    return ImageViews(match.partial, confusion, image_extras(match, image_id, source, rank),
                      image_instances(rank, gt_ids, gt_segments, pred_ids, pred_segments, categories))


@dataclass
class ShardViews:
    """The sums of a shard's image views, and the count of images with ground truth left out."""

    categories: Categories
    pq: PQPartial = field(default_factory=PQPartial)
    confusion: Confusion | None = None
    extras: PQExtras = field(default_factory=PQExtras)
    instances: InstancePartial = field(default_factory=InstancePartial)
    unevaluated: int = 0

    def __post_init__(self) -> None:
        if self.confusion is None:
            self.confusion = Confusion.for_categories(self.categories)

    def add(self, views: ImageViews) -> None:
        self.pq += views.pq
        self.confusion += views.confusion
        self.extras += views.extras
        self.instances += views.instances

    @property
    def evaluated(self) -> int:
        return self.pq.images

    def stats_fields(self) -> dict:
        """The views' entries of a shard's statistics file (None where no image was evaluated)."""
        evaluated = self.pq.images > 0
        return {
            "truth_unevaluated": self.unevaluated,
            "semantic": self.confusion.to_json() if evaluated else None,
            "pq_extras": self.extras.to_json() if evaluated else None,
            "instances": self.instances.to_json() if evaluated else None,
        }
