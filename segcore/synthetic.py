"""Seeded synthetic COCO-panoptic corpora: ground-truth scenes, imperfect predictions, and a corpus writer.

A scene is stuff regions (warped Voronoi bands) under thing instances (ellipses and star polygons, clustered by
class, overlapping, some cut by the border), with VOID rims and unlabeled blobs, and now and then crowd regions.
A prediction is derived from a scene with the errors real models make: jittered boundaries, missed, merged, split
and mislabelled segments, false-positive blobs, and labels painted over VOID and crowd regions.

Everything is a pure function of a ``numpy.random.Generator``; :func:`write_corpus` seeds one generator per image,
so a corpus is byte-identical for a given seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from segcore.categories import Categories, coco_panoptic_categories

logger = logging.getLogger(__name__)

MAX_SEGMENT_ID = 256**3 - 1  # ids are stored in 24-bit RGB
_SCENE_STREAM, _PREDICTION_STREAM = 0, 1  # per-image generator streams, so edits to one keep the other


@dataclass(frozen=True)
class SegmentPlan:
    """What one index of an index map stands for while a scene or prediction is built.

    Attributes:
        category_id: dataset category id.
        iscrowd: 1 for a crowd region (ground truth only), else 0.
    """

    category_id: int
    iscrowd: int = 0


@dataclass(frozen=True)
class CorpusPaths:
    """Where :func:`write_corpus` put a corpus (COCO panoptic layout)."""

    gt_json: Path
    gt_folder: Path
    pred_json: Path
    pred_folder: Path


# ----------------------------------------------------------------------------------------------------------------
# Index maps: (H, W) int32 arrays whose values index a list of SegmentPlan (value v -> plans[v - 1], 0 is VOID).
# ----------------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Returns smooth noise in [-1, 1], bilinearly upsampled from a coarse random grid.  # (H, W) float32"""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR))


def _stuff_layer(rng: np.random.Generator, height: int, width: int, n_stuff: int) -> np.ndarray:
    """Paints stuff regions 1..n_stuff as a warped, anisotropic Voronoi partition (bands when flattened).

    Every index gets at least one cell; extra cells reuse indices, so a stuff segment can be disconnected.
    Returns an index map.  # (H, W) int32
    """
    n_cells = n_stuff + int(rng.integers(0, n_stuff + 1))
    cell_index = np.concatenate([np.arange(1, n_stuff + 1), rng.integers(1, n_stuff + 1, n_cells - n_stuff)])
    seeds_y = rng.uniform(0, height, n_cells).astype(np.float32)
    seeds_x = rng.uniform(0, width, n_cells).astype(np.float32)
    x_scale = np.float32(rng.uniform(0.1, 1.0))  # small: horizontal bands (sky, wall, floor)
    warp = np.float32(rng.uniform(0.05, 0.25) * height)
    yy = np.arange(height, dtype=np.float32)[:, None] + warp * _smooth_noise(rng, height, width, 3)
    xx = np.arange(width, dtype=np.float32)[None, :] + warp * _smooth_noise(rng, height, width, 3)
    best = np.full((height, width), np.inf, dtype=np.float32)
    layer = np.zeros((height, width), dtype=np.int32)
    for sy, sx, index in zip(seeds_y, seeds_x, cell_index):
        distance = (yy - sy) ** 2 + (x_scale * (xx - sx)) ** 2
        closer = distance < best
        best[closer] = distance[closer]
        layer[closer] = index
    return layer


def _star_polygon(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]]:
    """Returns the vertices of a random star-shaped polygon inscribed in the (rx, ry) ellipse around (cx, cy)."""
    n_vertices = int(rng.integers(5, 12))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    radii = rng.uniform(0.55, 1.0, n_vertices)
    return [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radii)]


def _draw_shape(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, radius: float, fill: int
) -> None:
    """Draws an ellipse or a star polygon of about ``radius`` pixels around (cx, cy) with value ``fill``."""
    aspect = float(np.exp(rng.uniform(-0.9, 0.9)))
    rx, ry = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    if rng.random() < 0.5:
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
    else:
        draw.polygon(_star_polygon(rng, cx, cy, rx, ry), fill=fill)


def _random_radius(rng: np.random.Generator, low: float, high: float) -> float:
    """Log-uniform radius: many small objects, a few large ones, as in COCO."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _random_center(rng: np.random.Generator, height: int, width: int) -> tuple[float, float]:
    """A point in the image; one time in five on the border, so the shape is cut by it."""
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    if rng.random() < 0.2:
        if rng.random() < 0.5:
            cx = float(rng.choice([0.0, width - 1.0]))
        else:
            cy = float(rng.choice([0.0, height - 1.0]))
    return cx, cy


def _draw_things(
    rng: np.random.Generator,
    canvas: Image.Image,
    plans: list[SegmentPlan],
    thing_ids: Sequence[int],
    n_things: int,
    min_thing_radius: float = 3.0,
) -> None:
    """Draws crowd regions, then instances grouped in clusters of one class, onto a mode-"I" canvas.

    Appends one plan per drawn shape; the shape's fill is its index.
    """
    height, width = canvas.height, canvas.width
    draw = ImageDraw.Draw(canvas)
    short_side = min(height, width)
    n_crowd = 0 if rng.random() < 0.7 else (2 if rng.random() < 0.2 else 1)
    crowd_category = int(rng.choice(thing_ids))
    for _ in range(min(n_crowd, n_things)):
        plans.append(SegmentPlan(crowd_category, iscrowd=1))
        cx, cy = _random_center(rng, height, width)
        _draw_shape(draw, rng, cx, cy, _random_radius(rng, short_side / 10, short_side / 4), len(plans))
    n_groups = int(rng.integers(1, 5))
    group_categories = rng.choice(thing_ids, n_groups)
    group_centers = [_random_center(rng, height, width) for _ in range(n_groups)]
    group_spread = rng.uniform(short_side / 20, short_side / 3, n_groups)
    for _ in range(n_things - min(n_crowd, n_things)):
        group = int(rng.integers(n_groups))
        plans.append(SegmentPlan(int(group_categories[group])))
        cx = group_centers[group][0] + rng.normal(0, group_spread[group])
        cy = group_centers[group][1] + rng.normal(0, group_spread[group])
        _draw_shape(draw, rng, cx, cy, _random_radius(rng, min_thing_radius, short_side / 4), len(plans))


def _void_rims(rng: np.random.Generator, index_map: np.ndarray, n_plans: int) -> None:
    """Blanks the 1-pixel boundary of a random subset of segments to VOID, in place (as COCO's annotators left)."""
    rimmed = np.zeros(n_plans + 1, dtype=bool)
    rimmed[1:] = rng.random(n_plans) < rng.uniform(0.2, 0.8)
    edge = np.zeros(index_map.shape, dtype=bool)
    edge[:, :-1] |= index_map[:, :-1] != index_map[:, 1:]
    edge[:-1, :] |= index_map[:-1, :] != index_map[1:, :]
    index_map[edge & rimmed[index_map]] = 0


def _draw_void_blobs(rng: np.random.Generator, canvas: Image.Image, n_blobs: int) -> None:
    """Draws unlabeled (VOID) blobs onto a mode-"I" canvas."""
    draw = ImageDraw.Draw(canvas)
    short_side = min(canvas.height, canvas.width)
    for _ in range(n_blobs):
        cx, cy = _random_center(rng, canvas.height, canvas.width)
        _draw_shape(draw, rng, cx, cy, _random_radius(rng, 4, short_side / 8), 0)


# ----------------------------------------------------------------------------------------------------------------
# From index maps to COCO panoptic id maps and segments_info.
# ----------------------------------------------------------------------------------------------------------------


def index_areas_and_bboxes(index_map: np.ndarray, n_indices: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts pixels and finds the bounding box of every index 0..n_indices-1 of an index map.

    Args:
        index_map: values in [0, n_indices).  # (H, W) integer
        n_indices: number of distinct index values to report.

    Returns:
        ``(areas, bboxes)``: ``areas`` # (n_indices,) int64; ``bboxes`` # (n_indices, 4) int64, COCO
        ``[x, y, w, h]`` with ``w = x_max - x_min + 1`` as panopticapi's converters compute it; zero where the
        index is absent.
    """
    height, width = index_map.shape
    flat = index_map.astype(np.int64)
    areas = np.bincount(flat.ravel(), minlength=n_indices)
    rows = np.bincount((np.arange(height)[:, None] * n_indices + flat).ravel(), minlength=height * n_indices)
    cols = np.bincount((np.arange(width)[None, :] * n_indices + flat).ravel(), minlength=width * n_indices)
    rows = rows.reshape(height, n_indices) > 0
    cols = cols.reshape(width, n_indices) > 0
    y0, y1 = rows.argmax(0), height - 1 - rows[::-1].argmax(0)
    x0, x1 = cols.argmax(0), width - 1 - cols[::-1].argmax(0)
    bboxes = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)
    bboxes[areas == 0] = 0
    return areas, bboxes


def _random_segment_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draws ``n`` distinct non-zero 24-bit segment ids, as COCO's (colour-derived) ids look.  # (n,) int64"""
    return rng.choice(MAX_SEGMENT_ID, size=n, replace=False).astype(np.int64) + 1


def _to_id_map(
    rng: np.random.Generator,
    index_map: np.ndarray,
    plans: Sequence[SegmentPlan],
    extra_fields: Sequence[dict] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Turns an index map into a COCO panoptic id map and segments_info, dropping indices with no pixel left.

    Args:
        rng: draws the random segment ids.
        index_map: value v > 0 stands for ``plans[v - 1]``; 0 is VOID.  # (H, W) int32
        plans: category and crowd flag of every index.
        extra_fields: per-plan dict merged into the entry (e.g. a score), or None.

    Returns:
        ``(id_map, segments_info)``: ``id_map`` # (H, W) uint32; one entry per present index, in index order.
    """
    areas, bboxes = index_areas_and_bboxes(index_map, len(plans) + 1)
    present = np.flatnonzero(areas[1:]) + 1
    ids = _random_segment_ids(rng, len(present))
    lookup = np.zeros(len(plans) + 1, dtype=np.uint32)
    lookup[present] = ids
    segments_info = []
    for index, segment_id in zip(present, ids):
        plan = plans[index - 1]
        entry = {
            "id": int(segment_id),
            "category_id": plan.category_id,
            "iscrowd": plan.iscrowd,
            "area": int(areas[index]),
            "bbox": [int(v) for v in bboxes[index]],
        }
        if extra_fields is not None:
            entry.update(extra_fields[index - 1])
        segments_info.append(entry)
    return lookup[index_map], segments_info


def _category_ids(categories: Categories, isthing: bool) -> np.ndarray:
    """Ids of the thing (or stuff) categories.

    Raises:
        ValueError: there are none, so no scene can be drawn.
    """
    ids = np.array([c.id for c in categories if c.isthing == isthing], dtype=np.int64)
    if ids.size == 0:
        kind = "thing" if isthing else "stuff"
        raise ValueError(f"Expected `categories` to hold at least one {kind} category, but got {categories!r}")
    return ids


def make_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    categories: Categories,
    n_segments: tuple[int, int] = (8, 25),
    min_thing_radius: float = 3.0,
) -> tuple[np.ndarray, list[dict]]:
    """Draws one ground-truth panoptic scene.

    Args:
        rng: the only source of randomness.
        height, width: image size in pixels.
        categories: dataset categories; at least one thing and one stuff category.
        n_segments: inclusive range of segments to draw (occluded ones vanish, so a few less may remain).
        min_thing_radius: smallest radius of a thing instance in pixels (radii are log-uniform up to a quarter
            of the short side).

    Returns:
        ``(id_map, segments_info)``: ``id_map`` # (H, W) uint32 with 0 = VOID; ``segments_info`` entries
        ``{id, category_id, iscrowd, area, bbox}`` with area and bbox exact for the map.

    Raises:
        ValueError: ``n_segments`` is not an increasing pair >= 3, or a kind of category is missing.
    """
    if not (3 <= n_segments[0] <= n_segments[1]):
        raise ValueError(f"Expected `n_segments` to be (low, high) with 3 <= low <= high, but got {n_segments!r}")
    stuff_ids, thing_ids = _category_ids(categories, False), _category_ids(categories, True)
    n_total = int(rng.integers(n_segments[0], n_segments[1] + 1))
    n_stuff = int(rng.integers(1, min(6, n_total - 2, stuff_ids.size) + 1))
    plans = [SegmentPlan(int(c)) for c in rng.choice(stuff_ids, n_stuff, replace=False)]
    canvas = Image.fromarray(_stuff_layer(rng, height, width, n_stuff))
    _draw_things(rng, canvas, plans, thing_ids, n_total - n_stuff, min_thing_radius)
    if rng.random() < 0.4:
        _draw_void_blobs(rng, canvas, int(rng.integers(1, 4)))
    index_map = np.array(canvas, dtype=np.int32)
    if rng.random() < 0.7:
        _void_rims(rng, index_map, len(plans))
    return _to_id_map(rng, index_map, plans)


# ----------------------------------------------------------------------------------------------------------------
# Predictions: errors applied to the ground truth's index map.
# ----------------------------------------------------------------------------------------------------------------


def _to_index_map(id_map: np.ndarray, segments_info: Sequence[dict]) -> np.ndarray:
    """Maps segment ids to their position + 1 in segments_info; VOID and unlisted ids become 0.  # (H, W) int32"""
    if not segments_info:
        return np.zeros(id_map.shape, dtype=np.int32)
    ids = np.array([s["id"] for s in segments_info], dtype=np.int64)
    order = np.argsort(ids)
    sorted_ids = ids[order]
    flat = id_map.astype(np.int64)
    position = np.clip(np.searchsorted(sorted_ids, flat), 0, len(ids) - 1)
    found = sorted_ids[position] == flat
    return np.where(found, order[position] + 1, 0).astype(np.int32)


def _warp(rng: np.random.Generator, index_map: np.ndarray, amplitude: float) -> np.ndarray:
    """Jitters every boundary by a smooth random displacement of up to ``amplitude`` pixels.  # (H, W) int32"""
    height, width = index_map.shape
    dy = np.rint(amplitude * _smooth_noise(rng, height, width, 8)).astype(np.int32)
    dx = np.rint(amplitude * _smooth_noise(rng, height, width, 8)).astype(np.int32)
    dy += np.arange(height, dtype=np.int32)[:, None]
    dx += np.arange(width, dtype=np.int32)[None, :]
    np.clip(dy, 0, height - 1, out=dy)
    np.clip(dx, 0, width - 1, out=dx)
    dy *= width
    dy += dx
    return np.take(index_map, dy)


def _shifted(array: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """Returns ``array`` moved by (dy, dx) pixels, new pixels set to ``fill``."""
    out = np.full_like(array, fill)
    height, width = array.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = array[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def _fill_void(index_map: np.ndarray, passes: int) -> np.ndarray:
    """Paints VOID pixels with a neighbour's label, reaching up to 2**passes pixels away (models label everything)."""
    filled = index_map.copy()
    for step in (2**k for k in range(passes)):
        for dy, dx in ((0, step), (step, 0), (0, -step), (-step, 0)):
            void = filled == 0
            if not void.any():
                return filled
            filled[void] = _shifted(filled, dy, dx, 0)[void]
    return filled


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square dilation by ``radius`` pixels, separably.  # same shape, bool"""
    out = mask.copy()
    for r in range(1, radius + 1):
        out |= _shifted(mask, 0, r, False) | _shifted(mask, 0, -r, False)
    rows = out.copy()
    for r in range(1, radius + 1):
        out |= _shifted(rows, r, 0, False) | _shifted(rows, -r, 0, False)
    return out


def _crop(bbox: Sequence[int], margin: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Slices of a COCO ``[x, y, w, h]`` box grown by ``margin`` and clipped to the image."""
    x, y, w, h = bbox
    return (
        slice(max(y - margin, 0), min(y + h + margin, shape[0])),
        slice(max(x - margin, 0), min(x + w + margin, shape[1])),
    )


def _neighbour(window: np.ndarray, label: int) -> int:
    """The label most common just outside ``label``'s pixels in ``window`` (0 when there is none)."""
    mask = window == label
    ring = window[_dilate(mask, 2) & ~mask]
    ring = ring[ring != label]
    return int(np.bincount(ring).argmax()) if ring.size else 0


def _same_kind_category(rng: np.random.Generator, categories: Categories, category_id: int) -> int:
    """A wrong category: usually of the same supercategory, always of the same kind (thing or stuff)."""
    category = categories.by_id(category_id)
    same_kind = [c for c in categories if c.isthing == category.isthing and c.id != category_id]
    siblings = [c for c in same_kind if c.supercategory == category.supercategory]
    pool = siblings if siblings and rng.random() < 0.7 else same_kind
    return int(pool[int(rng.integers(len(pool)))].id) if pool else category_id


def _plan_labels(
    rng: np.random.Generator, gt_plans: Sequence[SegmentPlan], gt_info: Sequence[dict], categories: Categories
) -> tuple[np.ndarray, list[SegmentPlan]]:
    """Decides which gt segments are merged or relabelled: returns ``(relabel, pred_plans)``.

    ``relabel[g]`` is the prediction index for gt index g (identity unless merged); ``pred_plans`` holds the
    prediction's categories (crowd becomes an ordinary segment).
    """
    relabel = np.arange(len(gt_plans) + 1)
    pred_plans = []
    for plan in gt_plans:
        category_id = plan.category_id
        if rng.random() < 0.08:
            category_id = _same_kind_category(rng, categories, category_id)
        pred_plans.append(SegmentPlan(category_id))
    for a, b in _touching_same_class_pairs(gt_plans, gt_info):
        if rng.random() < 0.3 and relabel[b] == b:
            relabel[b] = relabel[a]
    return relabel, pred_plans


def _touching_same_class_pairs(plans: Sequence[SegmentPlan], info: Sequence[dict]) -> list[tuple[int, int]]:
    """Index pairs (a < b) of non-crowd segments of one category whose boxes overlap."""
    pairs = []
    for a in range(1, len(plans) + 1):
        for b in range(a + 1, len(plans) + 1):
            pa, pb = plans[a - 1], plans[b - 1]
            if pa.category_id != pb.category_id or pa.iscrowd or pb.iscrowd:
                continue
            (xa, ya, wa, ha), (xb, yb, wb, hb) = info[a - 1]["bbox"], info[b - 1]["bbox"]
            if xa <= xb + wb and xb <= xa + wa and ya <= yb + hb and yb <= ya + ha:
                pairs.append((a, b))
    return pairs


def _erode_rim(window: np.ndarray, label: int, radius: int, replacement: int) -> None:
    """Gives the outer ``radius`` pixels of ``label`` to ``replacement``, in place."""
    mask = window == label
    core = ~_dilate(~mask, radius)
    window[mask & ~core] = replacement


def _move(window: np.ndarray, label: int, dy: int, dx: int, replacement: int) -> None:
    """Shifts ``label``'s pixels by (dy, dx); uncovered pixels go to ``replacement``, in place."""
    mask = window == label
    moved = _shifted(mask, dy, dx, False)
    window[mask & ~moved] = replacement
    window[moved] = label


def _split(window: np.ndarray, label: int, new_label: int, rng: np.random.Generator) -> None:
    """Gives the pixels of ``label`` on one side of a random line through its centroid to ``new_label``."""
    ys, xs = np.nonzero(window == label)
    angle = rng.uniform(0, np.pi)
    side = (xs - xs.mean()) * np.cos(angle) + (ys - ys.mean()) * np.sin(angle) > 0
    window[ys[side], xs[side]] = new_label


def _degrade_segment(
    rng: np.random.Generator,
    pred_map: np.ndarray,
    label: int,
    bbox: Sequence[int],
    plans: list[SegmentPlan],
    is_crowd: bool,
) -> None:
    """Applies at most one shape error to one predicted thing segment, in place.

    Errors: missed (painted with the neighbour or VOID), dilated, eroded, shifted, split in two (crowds: often
    split, as a model predicts instances inside a crowd). A split appends a plan.
    """
    window = pred_map[_crop(bbox, 6, pred_map.shape)]
    if not (window == label).any():
        return
    roll = rng.random()
    if is_crowd and roll < 0.5 or not is_crowd and roll < 0.08:
        plans.append(plans[label - 1])
        _split(window, label, len(plans), rng)
    elif roll < 0.20:
        replacement = 0 if rng.random() < 0.35 else _neighbour(window, label)
        window[window == label] = replacement
    elif roll < 0.30:
        window[_dilate(window == label, int(rng.integers(1, 4)))] = label
    elif roll < 0.40:
        _erode_rim(window, label, int(rng.integers(1, 4)), _neighbour(window, label))
    elif roll < 0.50:
        dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
        _move(window, label, dy, dx, _neighbour(window, label))


def _drop_stuff(rng: np.random.Generator, pred_map: np.ndarray, label: int) -> None:
    """Now and then a stuff segment is missed: painted with its neighbour's label or left VOID, in place."""
    if rng.random() < 0.06:
        mask = pred_map == label
        pred_map[mask] = 0 if rng.random() < 0.35 else _neighbour(pred_map, label)


def _draw_false_positives(
    rng: np.random.Generator, pred_map: np.ndarray, plans: list[SegmentPlan], categories: Categories
) -> np.ndarray:
    """Draws 0-3 spurious blobs of random categories (mostly things); returns the new index map."""
    n_blobs = int(rng.integers(0, 4))
    if n_blobs == 0:
        return pred_map
    canvas = Image.fromarray(pred_map.astype(np.int32))
    draw = ImageDraw.Draw(canvas)
    short_side = min(pred_map.shape)
    for _ in range(n_blobs):
        isthing = rng.random() < 0.8
        plans.append(SegmentPlan(int(rng.choice(_category_ids(categories, isthing)))))
        cx, cy = _random_center(rng, pred_map.shape[0], pred_map.shape[1])
        _draw_shape(draw, rng, cx, cy, _random_radius(rng, 4, short_side / 6), len(plans))
    return np.array(canvas, dtype=np.int32)


def make_prediction(
    rng: np.random.Generator,
    id_map: np.ndarray,
    segments_info: Sequence[dict],
    categories: Categories,
) -> tuple[np.ndarray, list[dict]]:
    """Derives an imperfect panoptic prediction from a ground-truth scene.

    Roughly 60-80 % of the gt segments still match (IoU > 0.5); prediction ids are drawn afresh, independent of
    the gt's.

    Args:
        rng: the only source of randomness.
        id_map: ground-truth id map.  # (H, W) uint32
        segments_info: ground-truth segments (``id``, ``category_id``, ``iscrowd``, ``bbox``).
        categories: dataset categories, for wrong labels and false positives.

    Returns:
        ``(pred_id_map, pred_segments_info)``: ``pred_id_map`` # (H, W) uint32; entries
        ``{id, category_id, iscrowd: 0, area, bbox, score}``; every non-zero id of the map is listed.
    """
    gt_plans = [SegmentPlan(int(s["category_id"]), int(s.get("iscrowd", 0))) for s in segments_info]
    relabel, plans = _plan_labels(rng, gt_plans, segments_info, categories)
    pred_map = _warp(rng, _to_index_map(id_map, segments_info), float(rng.uniform(0.5, 3.5)))
    pred_map = relabel[_fill_void(pred_map, int(rng.integers(0, 8)))].astype(np.int32)
    for index, (plan, info) in enumerate(zip(gt_plans, segments_info), start=1):
        if categories.by_id(plan.category_id).isthing:
            _degrade_segment(rng, pred_map, index, info["bbox"], plans, bool(plan.iscrowd))
        else:
            _drop_stuff(rng, pred_map, index)
    pred_map = _draw_false_positives(rng, pred_map, plans, categories)
    scores = [{"score": round(float(rng.uniform(0.05, 1.0)), 4)} for _ in plans]
    return _to_id_map(rng, pred_map, plans, scores)


# ----------------------------------------------------------------------------------------------------------------
# Photos: an RGB rendering of a scene, so that a model can learn to segment it.
# ----------------------------------------------------------------------------------------------------------------

# The demo label space: three COCO things and two COCO stuff classes, with their real (sparse) COCO ids.
DEMO_CATEGORY_IDS = (1, 3, 18, 187, 193)  # person, car, dog, sky-other-merged, grass-merged
DEMO_SIZES = ((128, 128), (128, 160), (160, 128))  # (height, width) of demo images
_DEMO_STREAM = 2


def demo_categories() -> Categories:
    """The five COCO panoptic categories the demo model knows (3 things, 2 stuff), with their COCO ids."""
    coco = coco_panoptic_categories()
    return Categories(coco.by_id(category_id) for category_id in DEMO_CATEGORY_IDS)


def _category_look(category_id: int) -> np.ndarray:
    """A category's appearance, fixed by its id: ``[r, g, b, stripe frequency, stripe angle, stripe amplitude]``."""
    look_rng = np.random.default_rng([category_id, 7919])
    colour = look_rng.uniform(25, 230, 3)
    stripes = [look_rng.uniform(0.15, 0.9), look_rng.uniform(0, np.pi), look_rng.uniform(6, 28)]
    return np.concatenate([colour, stripes])


def render_image(
    rng: np.random.Generator, id_map: np.ndarray, segments_info: Sequence[dict], categories: Categories
) -> np.ndarray:
    """Paints a scene as a photo-like RGB image.

    Every category has its own colour and stripe texture (a function of its id); each thing instance gets its
    own brightness, a shading gradient and a dark outline, so instances of a class can be told apart. VOID is
    grey noise. Only the scene's segments are read; ``categories`` tells things from stuff.

    Args:
        rng: draws the per-instance variation and the sensor noise.
        id_map: the scene's segment ids, 0 = VOID.  # (H, W) uint32
        segments_info: the scene's segments, ``{id, category_id, ...}``.
        categories: dataset categories holding every ``category_id`` of the scene.

    Returns:
        the image.  # (H, W, 3) uint8
    """
    height, width = id_map.shape
    index_map = _to_index_map(id_map, segments_info)
    n = len(segments_info)
    looks = np.zeros((n + 1, 6), dtype=np.float32)
    looks[0] = [128, 128, 128, 0, 0, 0]
    isthing = np.zeros(n + 1, dtype=bool)
    shading = np.zeros((n + 1, 3), dtype=np.float32)  # per-instance gradient (d/dx, d/dy) and brightness
    for index, segment in enumerate(segments_info, start=1):
        looks[index] = _category_look(int(segment["category_id"]))
        isthing[index] = categories.by_id(int(segment["category_id"])).isthing
        if isthing[index]:
            shading[index] = [rng.normal(0, 0.6), rng.normal(0, 0.6), rng.normal(0, 22)]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    look = looks[index_map]  # (H, W, 6)
    phase = look[..., 3] * (xx * np.cos(look[..., 4]) + yy * np.sin(look[..., 4]))
    tone = look[..., 5] * np.sin(phase)
    shade = shading[index_map]
    tone += shade[..., 2] + shade[..., 0] * (xx - width / 2) + shade[..., 1] * (yy - height / 2)
    image = look[..., :3] + tone[..., None] + rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    image[_thing_outline(index_map, isthing)] *= 0.35
    return np.clip(image, 0, 255).astype(np.uint8)


def _thing_outline(index_map: np.ndarray, isthing: np.ndarray) -> np.ndarray:
    """Pixels on the boundary of a thing segment.  # (H, W) bool"""
    edge = np.zeros(index_map.shape, dtype=bool)
    horizontal = index_map[:, :-1] != index_map[:, 1:]
    vertical = index_map[:-1, :] != index_map[1:, :]
    thing = isthing[index_map]
    edge[:, :-1] |= horizontal & thing[:, :-1]
    edge[:, 1:] |= horizontal & thing[:, 1:]
    edge[:-1, :] |= vertical & thing[:-1, :]
    edge[1:, :] |= vertical & thing[1:, :]
    return edge


def make_demo_sample(
    seed: int, index: int, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Draws sample ``index`` of the demo data with ``seed``: ``(image, id_map, segments_info)``.

    The scene uses :func:`demo_categories`, 3 to 8 segments and things of at least 9 pixels radius; ``size``
    (height, width) defaults to one of :data:`DEMO_SIZES` drawn per sample. The result depends on
    (seed, index, size) only.

    Returns:
        ``image`` # (H, W, 3) uint8; ``id_map`` # (H, W) uint32, 0 = VOID; ``segments_info`` as
        :func:`make_scene` returns it.
    """
    rng = np.random.default_rng([seed, index, _DEMO_STREAM])
    if size is None:
        size = DEMO_SIZES[int(rng.integers(len(DEMO_SIZES)))]
    categories = demo_categories()
    id_map, segments_info = make_scene(rng, size[0], size[1], categories, n_segments=(3, 8), min_thing_radius=9.0)
    return render_image(rng, id_map, segments_info, categories), id_map, segments_info


# ----------------------------------------------------------------------------------------------------------------
# Writing a corpus in COCO panoptic format.
# ----------------------------------------------------------------------------------------------------------------


def id_map_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """Encodes ids as COCO panoptic colours, ``id = R + 256*G + 256**2*B``.  # (H, W, 3) uint8"""
    ids = id_map.astype(np.uint32)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def make_image_pair(
    seed: int, index: int, height: int, width: int, categories: Categories
) -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """Draws image ``index`` of the corpus with ``seed``: ``(gt_map, gt_segments, pred_map, pred_segments)``.

    Each image has its own generators, so the result depends on (seed, index) only.
    """
    gt_map, gt_segments = make_scene(np.random.default_rng([seed, index, _SCENE_STREAM]), height, width, categories)
    pred_rng = np.random.default_rng([seed, index, _PREDICTION_STREAM])
    pred_map, pred_segments = make_prediction(pred_rng, gt_map, gt_segments, categories)
    return gt_map, gt_segments, pred_map, pred_segments


def _write_image(task: tuple) -> tuple[dict, dict, dict]:
    """Pool worker: draws one image pair, writes both PNGs, returns its (image, gt annotation, pred annotation)."""
    paths, seed, index, height, width, categories = task
    gt_map, gt_segments, pred_map, pred_segments = make_image_pair(seed, index, height, width, categories)
    image_id = index + 1
    png_name = f"{image_id:012d}.png"
    Image.fromarray(id_map_to_rgb(gt_map)).save(paths.gt_folder / png_name)
    Image.fromarray(id_map_to_rgb(pred_map)).save(paths.pred_folder / png_name)
    image = {"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": height, "width": width}
    gt_ann = {"image_id": image_id, "file_name": png_name, "segments_info": gt_segments}
    pred_ann = {"image_id": image_id, "file_name": png_name, "segments_info": pred_segments}
    return image, gt_ann, pred_ann


def _corpus_paths(dest: Path) -> CorpusPaths:
    """The COCO panoptic layout under ``dest``."""
    return CorpusPaths(dest / "gt.json", dest / "gt", dest / "pred.json", dest / "pred")


def write_corpus(
    dest: str | os.PathLike,
    n_images: int,
    seed: int = 0,
    height: int = 480,
    width: int = 640,
    categories: Categories | None = None,
    processes: int | None = None,
) -> CorpusPaths:
    """Writes a synthetic COCO panoptic corpus: ``gt.json``, ``gt/*.png``, ``pred.json``, ``pred/*.png``.

    PNGs are RGB with ``id = R + 256*G + 256**2*B``, saved with PIL's defaults (as COCO's files are). The output
    is byte-identical for a given seed, size and categories, whatever ``processes``.

    Args:
        dest: folder to write into (created; existing files of the same names are overwritten).
        n_images: number of images; image ids are 1..n_images.
        seed: corpus seed.
        height, width: image size.
        categories: defaults to the 133 COCO panoptic categories.
        processes: worker processes; default ``min(2, cpu count)``; 1 draws in this process.

    Raises:
        ValueError: ``n_images`` is negative or the size is not positive.
    """
    if n_images < 0 or height <= 0 or width <= 0:
        raise ValueError(f"Expected n_images >= 0 and a positive size, but got {n_images}, {height}x{width}")
    categories = categories if categories is not None else coco_panoptic_categories()
    paths = _corpus_paths(Path(dest))
    paths.gt_folder.mkdir(parents=True, exist_ok=True)
    paths.pred_folder.mkdir(parents=True, exist_ok=True)
    tasks = [(paths, seed, index, height, width, categories) for index in range(n_images)]
    records = _run_tasks(tasks, processes if processes is not None else min(2, os.cpu_count() or 1))
    images, gt_anns, pred_anns = (list(column) for column in zip(*records)) if records else ([], [], [])
    category_list = categories.to_coco()
    _write_json(paths.gt_json, {"images": images, "annotations": gt_anns, "categories": category_list})
    _write_json(paths.pred_json, {"images": images, "annotations": pred_anns, "categories": category_list})
    logger.info("wrote %d synthetic images (seed %d, %dx%d) to %s", n_images, seed, width, height, dest)
    return paths


def _run_tasks(tasks: list[tuple], processes: int) -> list[tuple[dict, dict, dict]]:
    """Runs :func:`_write_image` over ``tasks`` in order, in a pool when that pays off."""
    if processes <= 1 or len(tasks) < 8:
        return [_write_image(task) for task in tasks]
    records = []
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for done, record in enumerate(pool.imap(_write_image, tasks, chunksize=8), start=1):
            records.append(record)
            if done % 500 == 0:
                logger.info("synthetic corpus: %d / %d images", done, len(tasks))
    return records


def _write_json(path: Path, document: dict) -> None:
    """Writes a JSON document deterministically."""
    with open(path, "w") as f:
        json.dump(document, f)


def write_demo_shards(
    dest: str | os.PathLike, n_shards: int, images_per_shard: int = 16, seed: int = 7, quality: int = 95
) -> str:
    """Writes a demo corpus as WebDataset tar shards ``corpus-00000.tar ...``; returns their brace-range path.

    Each sample is ``<key>.jpg`` (the rendered scene, JPEG), ``<key>.json`` (``{"image_id", "segments_info"}``,
    the ground truth) and ``<key>.panoptic.png`` (the ground-truth id map, COCO panoptic colours). Scenes are
    :func:`make_demo_sample` of ``seed``, held out from the demo model's training seed. Existing shards are
    rewritten identically (the output is a pure function of the arguments).
    """
    import io
    import tarfile

    if n_shards < 1 or images_per_shard < 1:
        raise ValueError(f"Expected positive counts, but got {n_shards} shards x {images_per_shard} images")
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(n_shards):
        with tarfile.open(folder / f"corpus-{shard:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as archive:
            for item in range(images_per_shard):
                index = shard * images_per_shard + item
                image, id_map, segments_info = make_demo_sample(seed, index)
                key = f"{index:08d}"
                members = {
                    f"{key}.jpg": _encode_image(Image.fromarray(image), "JPEG", quality=quality),
                    f"{key}.json": json.dumps({"image_id": key, "segments_info": segments_info}).encode(),
                    f"{key}.panoptic.png": _encode_image(Image.fromarray(id_map_to_rgb(id_map)), "PNG"),
                }
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 0
                    archive.addfile(info, io.BytesIO(data))
    return str(folder / f"corpus-{{00000..{n_shards - 1:05d}}}.tar")


def _encode_image(image: Image.Image, fmt: str, **kwargs) -> bytes:
    """Image bytes in ``fmt``."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()
