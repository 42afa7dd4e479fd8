"""Mask-classification panoptic post-processing of Mask2Former, OneFormer, MaskFormer and EoMT, on the device.

The rule is the originals' ``panoptic_inference`` (facebookresearch/Mask2Former ``maskformer_model.py``,
SHI-Labs/OneFormer ``oneformer_model.py``, facebookresearch/MaskFormer ``mask_former_model.py``) and EoMT's
``to_per_pixel_preds_panoptic`` (tue-mps/eomt), which agree but for one line:

1. mask logits are upsampled (bilinear) to the padded input size, cropped to the resized image, and resized
   (bilinear) to the original size; only then comes the sigmoid;
2. each query's class is the arg-max of the softmax over labels plus "no object"; a query is kept when its class
   is a real label with a dataset category and its score is strictly above ``score_threshold``;
3. every pixel goes to the kept query with the largest ``score * probability`` (first query on ties);
4. a query becomes a segment when it wins some pixel, its mask (probability >= ``mask_threshold``) is not empty,
   and (pixels won) / (mask pixels) is at least ``overlap_threshold``; its segment is the pixels it won where its
   probability is at least ``mask_threshold`` (Mask2Former, OneFormer, EoMT: it must keep one such pixel), or every
   pixel it won (MaskFormer);
5. queries of a stuff class are fused into one segment per class (score: the highest of them).

Ids are 1..S (0 = VOID); there is no Python loop over queries and one host sync per batch. Queries are resized
in chunks, so memory stays bounded for any image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from segcore.models.base import SegmentTable

CHUNK_ELEMENTS = 2**27  # full-size query logits are made in chunks of queries of at most this many floats (512 MiB)


@dataclass(frozen=True)
class Thresholds:
    """Post-processing thresholds (the originals' evaluation settings).

    Attributes:
        score: a query is kept when its class score is strictly above this.
        mask: a pixel is in a query's mask when its probability is at least this.
        overlap: a kept query becomes a segment when it keeps at least this fraction of its mask.
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


@dataclass(frozen=True)
class Geometry:
    """Where one image sits in the model's input and what size its result has.

    Attributes:
        padded: (height, width) of the padded batch fed to the model.
        resized: (height, width) of the image inside it (top-left).
        output: (height, width) of the original image.
    """

    padded: tuple[int, int]
    resized: tuple[int, int]
    output: tuple[int, int]


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


def resize_to_image(mask_logits: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Mask logits on the model's grid to the original image, as the originals do it: bilinear to the padded
    input size, crop to the resized image, bilinear to the output size (``align_corners=False`` both times).

    Args:
        mask_logits: # (K, h, w) float32

    Returns:
        # (K, H, W) float32
    """
    upsampled = F.interpolate(mask_logits[None], size=geometry.padded, mode="bilinear", align_corners=False)
    height, width = geometry.resized
    cropped = upsampled[:, :, :height, :width]
    return F.interpolate(cropped, size=geometry.output, mode="bilinear", align_corners=False)[0]


def panoptic_from_queries(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    geometries: Sequence[Geometry],
    labels: LabelTables,
    thresholds: Thresholds = Thresholds(),
    segment_threshold: bool = True,
) -> tuple[list[torch.Tensor], list[SegmentTable]]:
    """Turns a batch of query predictions into panoptic id maps and segment tables, on their device.

    Args:
        class_logits: per-query class logits, last entry "no object".  # (B, Q, L + 1)
        mask_logits: per-query mask logits on the model's mask grid for the padded batch.  # (B, Q, h, w)
        geometries: per image, its padded, resized and original sizes.
        labels: model label -> dataset category tables.
        thresholds: score, mask and overlap thresholds.
        segment_threshold: a segment is only the won pixels at or above the mask threshold (Mask2Former,
            OneFormer, EoMT); False: every won pixel (MaskFormer).

    Returns:
        ``(id_maps, tables)``: per image an id map # (H, W) int32 with ids 1..S (0 = VOID) and a
        :class:`SegmentTable` indexed by id.
    """
    def image_rule(masks, scores, query_labels, geometry):
        return _image_segments(masks, scores, query_labels, geometry, labels, thresholds, segment_threshold)

    return per_image(class_logits, mask_logits, geometries, labels, thresholds.score, image_rule)


def per_image(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    geometries: Sequence[Geometry],
    labels: LabelTables,
    score_threshold: float,
    image_rule,
) -> tuple[list[torch.Tensor], list[SegmentTable]]:
    """Keeps queries (:func:`keep_queries`, one host sync for the batch) and runs ``image_rule(mask_logits,
    scores, query_labels, geometry)`` on each image's kept queries, in query order; returns the id maps and
    segment tables it gives."""
    scores, query_labels, keep = keep_queries(class_logits, labels, score_threshold)
    kept = keep.cpu()  # the host sync: which queries to resize
    id_maps, tables = [], []
    for image, geometry in enumerate(geometries):
        index = kept[image].nonzero().flatten().to(mask_logits.device)
        id_map, table = image_rule(mask_logits[image, index].float(), scores[image, index],
                                   query_labels[image, index], geometry)
        id_maps.append(id_map)
        tables.append(table)
    return id_maps, tables


def empty_result(size: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, SegmentTable]:
    """An all-VOID int32 map of ``size`` and a segment table with only the VOID row."""
    empty = torch.zeros(1, device=device)
    return torch.zeros(size, dtype=torch.int32, device=device), SegmentTable(empty.long(), empty.bool(), empty.float())


def _image_segments(
    mask_logits: torch.Tensor,
    scores: torch.Tensor,
    query_labels: torch.Tensor,
    geometry: Geometry,
    labels: LabelTables,
    thresholds: Thresholds,
    segment_threshold: bool,
) -> tuple[torch.Tensor, SegmentTable]:
    """One image's kept queries (K of them, in query order) to an id map and a segment table."""
    device = mask_logits.device
    if mask_logits.shape[0] == 0:
        return empty_result(geometry.output, device)
    winner, strong, won_area, kept_area, mask_area = assign_pixels(mask_logits, scores, geometry, thresholds.mask)
    ratio = won_area.double() / mask_area.clamp(min=1).double()  # Python's int / int, as the originals divide
    valid_query = (won_area > 0) & (mask_area > 0) & (ratio >= thresholds.overlap)
    if segment_threshold:
        valid_query &= kept_area > 0
    segment_ids = _segment_ids(valid_query, query_labels, ~labels.isthing[query_labels])
    lookup = segment_ids.to(torch.int32)
    id_map = lookup[winner]
    if segment_threshold:
        id_map = torch.where(strong, id_map, torch.zeros((), dtype=torch.int32, device=device))
    return id_map, _segment_table(segment_ids, scores, labels.category_ids[query_labels], labels.isthing[query_labels])


def assign_pixels(
    mask_logits: torch.Tensor,
    scores: torch.Tensor,
    geometry: Geometry,
    mask_threshold: float,
    budget: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Gives each pixel to the kept query with the largest ``score * probability``, in chunks of queries.

    The full-size logits of all K queries would take K * H * W floats (and the padded-size ones as many again);
    above ``budget`` elements (default :data:`CHUNK_ELEMENTS`) the queries are resized a chunk at a time and the
    best query so far is kept per pixel (an earlier query wins ties, as ``argmax`` gives the first).

    Returns:
        ``(winner, strong, won_area, kept_area, mask_area)``: the winning query per pixel # (H, W) int64; whether
        its probability passes ``mask_threshold`` # (H, W) bool; pixels won, pixels won and strong, and pixels at or
        above the threshold, per query # (K,) int64 each.
    """
    n_kept = mask_logits.shape[0]
    device = mask_logits.device
    per_query = geometry.padded[0] * geometry.padded[1] + 2 * geometry.output[0] * geometry.output[1]
    chunk = max(1, (budget or CHUNK_ELEMENTS) // per_query)
    best = torch.full(geometry.output, -1.0, device=device)
    winner = torch.zeros(geometry.output, dtype=torch.int64, device=device)
    winner_probability = torch.zeros(geometry.output, device=device)
    mask_area = torch.zeros(n_kept, dtype=torch.int64, device=device)
    for start in range(0, n_kept, chunk):
        end = min(n_kept, start + chunk)
        probabilities = resize_to_image(mask_logits[start:end], geometry).sigmoid_()  # (k, H, W)
        # max(0) returns the first maximal index like argmax(0), and is several times faster on CPUs
        value, index = (scores[start:end, None, None] * probabilities).max(0)
        better = value > best
        best = torch.where(better, value, best)
        winner = torch.where(better, index + start, winner)
        winner_probability = torch.where(better, probabilities.gather(0, index[None])[0], winner_probability)
        mask_area[start:end] = (probabilities >= mask_threshold).flatten(1).sum(1)
    strong = winner_probability >= mask_threshold
    flat_winner = winner.flatten()
    won_area = torch.bincount(flat_winner, minlength=n_kept)
    kept_area = torch.bincount(flat_winner, weights=strong.flatten(), minlength=n_kept).long()  # no nonzero()
    return winner, strong, won_area, kept_area, mask_area


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
