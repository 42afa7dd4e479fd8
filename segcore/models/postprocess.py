"""Mask-classification panoptic post-processing (DETR, MaskFormer, Mask2Former, OneFormer, EoMT), on the device.

The rules are Mask2Former's ``panoptic_inference``, which transformers' EoMT post-processing also follows:

1. each query's class is the arg-max of the softmax over labels plus "no object"; a query is kept when its class
   is a real label with a dataset category and its score is strictly above ``score_threshold``;
2. every pixel goes to the kept query with the largest ``score * sigmoid(mask logit)`` (first query on ties);
3. a query becomes a segment when it wins some pixel, its mask (probability >= ``mask_threshold``) is not empty,
   it keeps some pixel at or above the threshold, and (pixels won) / (mask pixels) > ``overlap_threshold``;
   its segment is the pixels it won where its probability is at least ``mask_threshold``;
4. queries of a stuff class are fused into one segment per class (score: the highest of them).

Unlike transformers' ``post_process_panoptic_segmentation``, mask logits are cropped to each image's valid (unpadded)
area before resizing, so a padded batch gives the same result as images one by one; fused classes get one id; an
empty result is an int32 map of zeros on the device; ids are 1..S and 0 is VOID; there is no Python loop over
queries and there are two host syncs per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from segcore.models.base import SegmentTable


BAND_ELEMENTS = 2**27  # full-size query probabilities are made in bands of at most this many floats (512 MiB)


@dataclass(frozen=True)
class Thresholds:
    """Post-processing thresholds (transformers' and Mask2Former's defaults).

    Attributes:
        score: a query is kept when its class score is strictly above this.
        mask: a pixel is in a query's mask when its probability is at least this.
        overlap: a kept query becomes a segment when it keeps strictly more than this fraction of its mask.
    """

    score: float = 0.8
    mask: float = 0.5
    overlap: float = 0.8


@dataclass(frozen=True)
class LabelTables:
    """Device tables indexed by model label (no "no object" entry).

    Attributes:
        category_ids: dataset category id, -1 where the label maps to none.  # (L,) int64
        isthing: thing flag.  # (L,) bool
        known: the label has a dataset category.  # (L,) bool
    """

    category_ids: torch.Tensor
    isthing: torch.Tensor
    known: torch.Tensor


def resize_valid_region(
    masks: torch.Tensor, valid: tuple[float, float], size: tuple[int, int]
) -> torch.Tensor:
    """Bilinearly resizes the top-left ``valid`` region (in grid cells, may be fractional) of masks to ``size``.

    Matches ``F.interpolate(mode="bilinear", align_corners=False)`` of the cropped region: exactly that call when
    the region is a whole number of cells, ``grid_sample`` with the same sampling positions otherwise.

    Args:
        masks: logits on the model's mask grid.  # (K, h, w) float32
        valid: (height, width) of the image's region on that grid.
        size: (H, W) output size.

    Returns:
        the resized masks.  # (K, H, W) float32
    """
    valid_h, valid_w = valid
    if float(valid_h).is_integer() and float(valid_w).is_integer():
        cropped = masks[:, : int(valid_h), : int(valid_w)]
        return F.interpolate(cropped[None], size=size, mode="bilinear", align_corners=False)[0]
    return _sample_region(masks, (float(valid_h), float(valid_w)), size)


def _sample_region(
    masks: torch.Tensor, valid: tuple[float, float], size: tuple[int, int], rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """``grid_sample`` at the positions ``F.interpolate`` would sample the ``valid`` region from.

    ``rows`` = (first, end) makes only those output rows.  # (K, end - first, W), default (K, H, W)
    """
    valid_h, valid_w = valid
    grid_h, grid_w = masks.shape[1:]
    height, width = size
    device = masks.device
    # Source position of output pixel x: (x + 0.5) * valid_w / W - 0.5 cells, in grid_sample's [-1, 1] units.
    gx = (torch.arange(width, device=device, dtype=torch.float64) + 0.5) * (2 * valid_w / (width * grid_w)) - 1
    first, end = rows or (0, height)
    gy = (torch.arange(first, end, device=device, dtype=torch.float64) + 0.5) * (2 * valid_h / (height * grid_h)) - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).float()  # (H, W, 2) as (x, y)
    return F.grid_sample(masks[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]


def keep_queries(
    class_logits: torch.Tensor, labels: LabelTables, score_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores, labels and the keep flag of every query.

    Args:
        class_logits: ``(B, Q, L + 1)``; the last entry is "no object".

    Returns:
        ``(scores, labels, keep)``: # (B, Q) float32, (B, Q) int64, (B, Q) bool
    """
    probabilities = class_logits.float().softmax(-1)
    scores, query_labels = probabilities.max(-1)
    n_labels = class_logits.shape[-1] - 1
    real = query_labels < n_labels
    known = labels.known[query_labels.clamp(max=n_labels - 1)] & real
    return scores, query_labels, known & (scores > score_threshold)


def panoptic_from_queries(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    valid_sizes: Sequence[tuple[float, float]],
    output_sizes: Sequence[tuple[int, int]],
    labels: LabelTables,
    thresholds: Thresholds = Thresholds(),
) -> tuple[list[torch.Tensor], list[SegmentTable]]:
    """Turns a batch of query predictions into panoptic id maps and segment tables, on their device.

    Args:
        class_logits: per-query class logits, last entry "no object".  # (B, Q, L + 1)
        mask_logits: per-query mask logits on the model's mask grid for the padded batch.  # (B, Q, h, w)
        valid_sizes: per image, the (height, width) of its unpadded region in mask-grid cells (fractional when
            the grid's stride does not divide the image's size).
        output_sizes: per image, (H, W) of the returned id map (the original image size).
        labels: model label -> dataset category tables.
        thresholds: score, mask and overlap thresholds.

    Returns:
        ``(id_maps, tables)``: per image an id map # (H, W) int32 with ids 1..S (0 = VOID) and a
        :class:`SegmentTable` indexed by id.
    """
    scores, query_labels, keep = keep_queries(class_logits, labels, thresholds.score)
    kept = keep.cpu()  # host sync 1: which queries to resize
    id_maps, tables = [], []
    for image in range(class_logits.shape[0]):
        index = kept[image].nonzero().flatten().to(mask_logits.device)
        id_map, table = _image_segments(
            mask_logits[image, index].float(),
            scores[image, index],
            query_labels[image, index],
            valid_sizes[image],
            output_sizes[image],
            labels,
            thresholds,
        )
        id_maps.append(id_map)
        tables.append(table)
    return id_maps, tables


def _image_segments(
    mask_logits: torch.Tensor,
    scores: torch.Tensor,
    query_labels: torch.Tensor,
    valid: tuple[float, float],
    size: tuple[int, int],
    labels: LabelTables,
    thresholds: Thresholds,
) -> tuple[torch.Tensor, SegmentTable]:
    """One image's kept queries (K of them, in query order) to an id map and a segment table."""
    n_kept = mask_logits.shape[0]
    device = mask_logits.device
    if n_kept == 0:
        empty = torch.zeros(1, device=device)
        return torch.zeros(size, dtype=torch.int32, device=device), SegmentTable(
            empty.long(), empty.bool(), empty.float()
        )
    winner, strong, won_area, kept_area, mask_area = _assign_pixels(mask_logits, scores, valid, size, thresholds.mask)
    ratio = (won_area / mask_area.clamp(min=1)).double()  # float32 ratio compared as a double, as transformers
    valid_query = (won_area > 0) & (mask_area > 0) & (kept_area > 0) & (ratio > thresholds.overlap)
    segment_ids = _segment_ids(valid_query, query_labels, ~labels.isthing[query_labels])
    lookup = segment_ids.to(torch.int32)
    id_map = torch.where(strong, lookup[winner], torch.zeros((), dtype=torch.int32, device=device))
    return id_map, _segment_table(segment_ids, scores, labels.category_ids[query_labels], labels.isthing[query_labels])


def _assign_pixels(
    mask_logits: torch.Tensor,
    scores: torch.Tensor,
    valid: tuple[float, float],
    size: tuple[int, int],
    mask_threshold: float,
    budget: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gives each pixel to the kept query with the largest ``score * probability``, in bands of rows.

    The full-size probabilities of all K queries would take K * H * W floats; above ``budget`` elements
    (default :data:`BAND_ELEMENTS`) the output is made in bands of rows by ``grid_sample`` at the same sampling
    positions, so memory stays bounded for any image size.

    Returns:
        ``(winner, strong, won_area, kept_area, mask_area)``: the winning query per pixel # (H, W) int64; whether
        its probability passes ``mask_threshold`` # (H, W) bool; pixels won, pixels won and strong, and pixels at or
        above the threshold, per query # (K,) int64 each.
    """
    n_kept = mask_logits.shape[0]
    height, width = size
    rows_per_band = max(1, (budget or BAND_ELEMENTS) // max(1, n_kept * width))
    winner = torch.empty(size, dtype=torch.int64, device=mask_logits.device)
    strong = torch.empty(size, dtype=torch.bool, device=mask_logits.device)
    areas = torch.zeros((3, n_kept), dtype=torch.int64, device=mask_logits.device)  # won, kept, mask
    for top in range(0, height, rows_per_band):
        rows = (top, min(height, top + rows_per_band))
        if rows_per_band >= height:
            logits = resize_valid_region(mask_logits, valid, size)
        else:
            logits = _sample_region(mask_logits, (float(valid[0]), float(valid[1])), size, rows)
        probabilities = logits.sigmoid_()  # (K, band, W)
        # max(0) returns the first maximal index like argmax(0), and is several times faster on CPUs
        band_winner = (probabilities * scores[:, None, None]).max(0).indices
        band_strong = probabilities.gather(0, band_winner[None])[0] >= mask_threshold
        winner[rows[0] : rows[1]] = band_winner
        strong[rows[0] : rows[1]] = band_strong
        areas[0] += torch.bincount(band_winner.flatten(), minlength=n_kept)
        flat_winner = band_winner.flatten()
        areas[1] += torch.bincount(flat_winner, weights=band_strong.flatten(), minlength=n_kept).long()  # no nonzero()
        areas[2] += (probabilities >= mask_threshold).flatten(1).sum(1)
    return winner, strong, areas[0], areas[1], areas[2]


def _segment_ids(valid: torch.Tensor, query_labels: torch.Tensor, fuse: torch.Tensor) -> torch.Tensor:
    """Segment id of each kept query: 1, 2, ... in query order, 0 if invalid; fused queries share the first id.

    Args:
        valid: the query becomes (part of) a segment.  # (K,) bool
        query_labels: model label of each query.  # (K,) int64
        fuse: the query's class is fused (stuff).  # (K,) bool

    Returns:
        # (K,) int64
    """
    n = valid.shape[0]
    order = torch.arange(n, device=valid.device)
    same_class = (query_labels[:, None] == query_labels[None, :]) & valid[None, :] & fuse[:, None]
    earlier = same_class & (order[None, :] <= order[:, None])
    first = torch.where(fuse, earlier.long().argmax(1), order)  # first valid query of the same fused class
    is_new = valid & (first == order)
    number = torch.cumsum(is_new.long(), 0)
    return torch.where(valid, number[first], torch.zeros_like(number))


def _segment_table(
    segment_ids: torch.Tensor, scores: torch.Tensor, category_ids: torch.Tensor, isthing: torch.Tensor
) -> SegmentTable:
    """Per segment id: category, isthing and score (the highest score of the queries fused into it)."""
    n = segment_ids.shape[0] + 1  # ids are at most K
    device = segment_ids.device
    table_categories = torch.zeros(n, dtype=torch.int64, device=device).scatter(0, segment_ids, category_ids)
    table_things = torch.zeros(n, dtype=torch.bool, device=device).scatter(0, segment_ids, isthing)
    table_scores = torch.zeros(n, dtype=torch.float32, device=device).scatter_reduce(
        0, segment_ids, scores.float(), "amax"
    )
    return SegmentTable(table_categories, table_things, table_scores)
