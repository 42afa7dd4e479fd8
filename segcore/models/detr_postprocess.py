"""DETR's own panoptic post-processing (facebookresearch/detr, models/segmentation.py, PostProcessPanoptic), on the
device.

The rule, from the original:

1. softmax over classes plus "no object"; a query is kept when its best class is a real label (here: one with a
   dataset category) and its score is strictly above the threshold (0.85 in every DETR panoptic evaluation);
2. the kept queries' mask logits are resized (bilinear, ``align_corners=False``) to the processed image size --
   the whole mask grid, not cropped (the reference evaluates one image per batch, where nothing is padded);
3. every pixel goes to the arg-max over kept queries of the softmax of their mask logits: no score weighting, no
   mask threshold, no VOID pixel (the softmax is only taken where it can change the logits' arg-max: ties);
4. in that first assignment, the pixels of every stuff query go to the first kept query of its class;
5. the id map is resized to the original size with nearest neighbour (Pillow's ``NEAREST``), and each query's
   area is counted there; queries of area <= 4 are dropped and the assignment (3, without 4) and the areas are
   redone, until no query is that small. A stuff query fused in 4 has area 0, so it is always dropped; its
   pixels then go to the best remaining query;
6. every remaining query is a segment (ids 1..S here; the original numbers them from 0).

Each round of 5 costs one host sync (the original makes one per round too); the rest stays on the device.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from segcore.models.base import SegmentTable
from segcore.models.postprocess import Geometry, LabelTables, empty_result, per_image

SMALL_AREA = 4  # a query whose final area is at most this many pixels is dropped (the original's constant)
BAND_ELEMENTS = 2**26  # the softmax over queries is taken in bands of rows of at most this many floats
TIE_MARGIN = 1e-6  # logits this close to a pixel's best may tie with it after the softmax's float rounding


def detr_panoptic(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    geometries: Sequence[Geometry],
    labels: LabelTables,
    score_threshold: float = 0.85,
) -> tuple[list[torch.Tensor], list[SegmentTable]]:
    """DETR's panoptic rule for a batch; see the module docstring.

    Args:
        class_logits: ``(B, Q, L + 1)``, last entry "no object".
        mask_logits: ``(B, Q, h, w)`` mask logits of the batch.
        geometries: per image, its resized (processed) size and original size; its padded size is not used:
            the whole grid is stretched to the processed size, as the original does.
        labels: model label -> dataset category tables.
        score_threshold: a query is kept when its class score is strictly above this.

    Returns:
        ``(id_maps, tables)``: per image an id map # (H, W) int32, ids 1..S (0 only when no query is kept) and
        a :class:`SegmentTable` indexed by id.
    """
    def image_rule(masks, scores, query_labels, geometry):
        return _image_segments(masks, scores, query_labels, geometry, labels)

    return per_image(class_logits, mask_logits, geometries, labels, score_threshold, image_rule)


def _image_segments(
    mask_logits: torch.Tensor,
    scores: torch.Tensor,
    query_labels: torch.Tensor,
    geometry: Geometry,
    labels: LabelTables,
) -> tuple[torch.Tensor, SegmentTable]:
    """One image's K kept queries (in query order) to an id map and a segment table."""
    device = mask_logits.device
    n_kept = mask_logits.shape[0]
    rows, columns = nearest_indices(geometry.resized, geometry.output, device)
    alive = torch.arange(n_kept, device=device)
    if n_kept:
        logits = F.interpolate(mask_logits[None], size=geometry.resized, mode="bilinear", align_corners=False)[0]
        first_of_class = _first_stuff_query(query_labels, ~labels.isthing[query_labels])
        assigned = first_of_class[_assign(logits, alive)]  # query index per processed pixel, stuff fused (step 4)
        while True:
            areas = torch.bincount(_resize_nearest(assigned, rows, columns).flatten(), minlength=n_kept)
            small = areas[alive] <= SMALL_AREA
            if not bool(small.any()):  # the host sync of this round
                break
            logits[alive[small]] = float("-inf")  # dropped queries win no pixel any more
            alive = alive[~small]
            if alive.numel() == 0:
                break
            assigned = _assign(logits, alive)
    if alive.numel() == 0:
        return empty_result(geometry.output, device)
    segment_of_query = torch.zeros(n_kept, dtype=torch.int32, device=device)
    segment_of_query[alive] = torch.arange(1, alive.numel() + 1, dtype=torch.int32, device=device)
    id_map = _resize_nearest(segment_of_query[assigned], rows, columns)
    category_ids = labels.category_ids[query_labels[alive]]
    isthing = labels.isthing[query_labels[alive]]
    table = SegmentTable(
        torch.cat([category_ids.new_zeros(1), category_ids]),
        torch.cat([isthing.new_zeros(1), isthing]),
        torch.cat([scores.new_zeros(1), scores[alive].float()]),
    )
    return id_map, table


def _assign(logits: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Per pixel, the arg-max over the ``alive`` queries of the softmax of their logits (the original's
    ``masks.transpose(0, 1).softmax(-1).argmax(-1)`` over the remaining queries); dropped queries' logits are
    -inf.  # (K, H, W) -> (H, W) int64, indices into all K

    The softmax is monotonic, so its arg-max is the logits' arg-max, except where an earlier query's logit is so
    close to the best that the softmax rounds both to one value (the original then takes the earlier query): those
    pixels, found with :data:`TIE_MARGIN`, get the softmax itself, over the alive queries as the original has them.
    """
    best, index = logits.max(0)  # max(0) gives the first maximal index, as argmax, and is faster on CPUs
    first_near = (logits >= best - TIE_MARGIN).to(torch.uint8).max(0).indices
    risky = first_near != index
    if bool(risky.any()):
        columns = logits[:, risky][alive].transpose(0, 1)  # (pixels, alive K)
        step = max(1, BAND_ELEMENTS // max(1, alive.numel()))
        chosen = torch.cat([columns[start : start + step].softmax(-1).argmax(-1)
                            for start in range(0, columns.shape[0], step)])
        index[risky] = alive[chosen]
    return index


def _resize_nearest(id_map: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """The map at the rows and columns :func:`nearest_indices` gives.  # (h, w) -> (H, W)"""
    return id_map.index_select(0, rows).index_select(1, columns)


def _first_stuff_query(query_labels: torch.Tensor, stuff: torch.Tensor) -> torch.Tensor:
    """Per kept query, the first kept query of its class if it is stuff, else itself.  # (K,) int64"""
    n = query_labels.shape[0]
    order = torch.arange(n, device=query_labels.device)
    same = (query_labels[:, None] == query_labels[None, :]) & stuff[:, None]
    return torch.where(stuff, same.long().argmax(1), order)


def nearest_indices(
    in_size: tuple[int, int], out_size: tuple[int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source rows and columns of Pillow's ``NEAREST`` resize from ``in_size`` to ``out_size``.

    Returns:
        ``(rows, columns)``: # (H_out,) int64, (W_out,) int64
    """
    rows = torch.from_numpy(_nearest_axis(in_size[0], out_size[0])).to(device)
    columns = torch.from_numpy(_nearest_axis(in_size[1], out_size[1])).to(device)
    return rows, columns


@functools.lru_cache(maxsize=512)
def _nearest_axis(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's nearest-neighbour source index along one axis: the position of output pixel x is
    ``(x + 0.5) * in / out``, accumulated step by step in float64 as Pillow's scaling loop does, truncated."""
    step = in_size / out_size
    positions = np.cumsum(np.concatenate([[step * 0.5], np.full(out_size - 1, step)]))
    return np.minimum(positions.astype(np.int64), in_size - 1)
