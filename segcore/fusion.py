"""Panoptic-FPN fusion: one instance prediction plus one semantic prediction make one panoptic id map."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# detectron2's PanopticFPN defaults (MODEL.PANOPTIC_FPN.COMBINE.*).
OVERLAP_THRESHOLD = 0.5
STUFF_AREA_THRESHOLD = 4096
INSTANCE_SCORE_THRESHOLD = 0.5


def fuse_panoptic(
    masks: np.ndarray,
    scores: np.ndarray,
    category_ids: np.ndarray,
    semantic_map: np.ndarray,
    *,
    ignored_semantic_ids: Iterable[int] = (0,),
    semantic_confidence: np.ndarray | None = None,
    overlap_threshold: float = OVERLAP_THRESHOLD,
    stuff_area_threshold: int = STUFF_AREA_THRESHOLD,
    instance_score_threshold: float = INSTANCE_SCORE_THRESHOLD,
) -> tuple[np.ndarray, list[dict]]:
    """Fuses instances and a semantic map into a COCO-panoptic id map, as Panoptic FPN does.

    The rules are those of detectron2's ``combine_semantic_and_instance_outputs``:

    1. Instances are visited by score, highest first (ties keep input order); those scoring below
       ``instance_score_threshold`` are dropped (a score equal to it is kept).
    2. An instance whose mask is empty, or whose mask lies on already-assigned pixels for more than
       ``overlap_threshold`` of its area (strictly more), is dropped. Otherwise its not-yet-assigned pixels
       become a new thing segment.
    3. For each semantic value present, in ascending order, except ``ignored_semantic_ids``: the still
       unassigned pixels of that value become one stuff segment if there are at least ``stuff_area_threshold``
       of them (a count equal to it is kept).

    Segment ids are 1, 2, 3, ... in the order segments are made; 0 is VOID. Pixels no segment took stay 0.
    One deviation from detectron2: with ``overlap_threshold >= 1`` a fully covered instance would become an
    empty segment there; here it is dropped, since a listed segment must appear in the id map.

    Args:
        masks: (N, H, W) bool instance masks; N may be 0.
        scores: (N,) float instance scores, finite.
        category_ids: (N,) int dataset category ids of the instances (not a model's label indices).
        semantic_map: (H, W) int dataset category id per pixel.
        ignored_semantic_ids: semantic values that never become stuff segments: VOID (0 by default) and, when
            the semantic model also predicts thing classes or a "things" placeholder, those values too (every
            semantic segment is listed with ``isthing=False``, so thing classes left in would be mislabelled).
        semantic_confidence: optional (H, W) float per-pixel probability of the semantic class; a stuff
            segment's score is its mean over the segment. Without it, stuff scores are 1.0.
        overlap_threshold: the largest allowed fraction of an instance already covered by earlier segments.
        stuff_area_threshold: the smallest pixel count of a stuff segment.
        instance_score_threshold: the smallest score of a kept instance.

    Returns:
        ``(id_map, segments)``: id_map is (H, W) int32 with 0 = VOID; segments lists, in id order, dicts
        ``{"id", "category_id", "isthing", "score", "area"}`` with Python int, int, bool, float, int values.
        Things come first, then stuff.

    Raises:
        ValueError: an input has the wrong type, dtype, rank or shape, a score is not finite, a threshold
            is negative or not finite, or ``ignored_semantic_ids`` is not an iterable of ints.
    """
    _check_instances(masks, scores, category_ids)
    _check_semantic(semantic_map, semantic_confidence, masks.shape[1:])
    _check_thresholds(overlap_threshold, stuff_area_threshold, instance_score_threshold)
    ignored = _ignored_set(ignored_semantic_ids)
    id_map = np.zeros(semantic_map.shape, dtype=np.int32)  # (H, W) int32
    segments = _paste_instances(id_map, masks, scores, category_ids, overlap_threshold, instance_score_threshold)
    segments += _paste_stuff(
        id_map, semantic_map, semantic_confidence, ignored, stuff_area_threshold, len(segments) + 1
    )
    return id_map, segments


def _paste_instances(
    id_map: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray,
    category_ids: np.ndarray,
    overlap_threshold: float,
    instance_score_threshold: float,
) -> list[dict]:
    """Writes the kept instances into ``id_map`` (in place) and returns their segments."""
    segments: list[dict] = []
    assigned = np.zeros(id_map.shape, dtype=bool)  # (H, W) bool
    for index in np.argsort(-scores, kind="stable"):
        score = float(scores[index])
        if score < instance_score_threshold:
            break  # sorted: every later instance scores lower
        free_mask = _free_part(masks[index], assigned, overlap_threshold)
        if free_mask is None:
            continue
        segment_id = len(segments) + 1
        id_map[free_mask] = segment_id
        assigned |= free_mask
        segments.append(_segment(segment_id, category_ids[index], True, score, np.count_nonzero(free_mask)))
    return segments


def _free_part(mask: np.ndarray, assigned: np.ndarray, overlap_threshold: float) -> np.ndarray | None:
    """Returns the unassigned pixels of ``mask`` (H, W) bool, or None when the instance must be dropped."""
    mask_area = np.count_nonzero(mask)
    if mask_area == 0:
        return None
    overlap_area = np.count_nonzero(mask & assigned)
    # Same float arithmetic as detectron2, so the boundary (exactly overlap_threshold) behaves identically.
    if overlap_area * 1.0 / mask_area > overlap_threshold or overlap_area == mask_area:
        return None
    return mask & ~assigned


def _paste_stuff(
    id_map: np.ndarray,
    semantic_map: np.ndarray,
    semantic_confidence: np.ndarray | None,
    ignored: set[int],
    stuff_area_threshold: int,
    first_id: int,
) -> list[dict]:
    """Writes stuff segments, ids from ``first_id`` on, into the unassigned pixels of ``id_map`` (in place)."""
    free = id_map == 0  # (H, W) bool
    labels, inverse, areas = np.unique(semantic_map[free], return_inverse=True, return_counts=True)
    keep = (areas >= stuff_area_threshold) & ~np.isin(labels, list(ignored))
    new_ids = np.zeros(len(labels), dtype=np.int32)  # (K,) int32, 0 where the label is not kept
    new_ids[keep] = np.arange(first_id, first_id + np.count_nonzero(keep), dtype=np.int32)
    id_map[free] = new_ids[inverse.reshape(-1)]
    stuff_scores = _mean_per_label(semantic_confidence, free, inverse, areas)
    return [
        _segment(int(new_ids[k]), labels[k], False, float(stuff_scores[k]), areas[k])
        for k in np.flatnonzero(keep)
    ]


def _mean_per_label(
    semantic_confidence: np.ndarray | None, free: np.ndarray, inverse: np.ndarray, areas: np.ndarray
) -> np.ndarray:
    """Returns (K,) float64: the mean confidence over the free pixels of each label, or 1.0 without one."""
    if semantic_confidence is None:
        return np.ones(len(areas), dtype=np.float64)
    sums = np.bincount(inverse.reshape(-1), weights=semantic_confidence[free], minlength=len(areas))
    return sums / np.maximum(areas, 1)


def _segment(segment_id: int, category_id, isthing: bool, score: float, area) -> dict:
    """Returns one ``segments`` entry with plain Python values."""
    return {
        "id": int(segment_id),
        "category_id": int(category_id),
        "isthing": bool(isthing),
        "score": float(score),
        "area": int(area),
    }


def _check_instances(masks: np.ndarray, scores: np.ndarray, category_ids: np.ndarray) -> None:
    """Raises ValueError unless masks (N, H, W) bool, scores (N,) finite float, category_ids (N,) int agree."""
    _check_array("masks", masks, ndim=3, kind="b", kind_name="bool")
    _check_array("scores", scores, ndim=1, kind="f", kind_name="floating")
    _check_array("category_ids", category_ids, ndim=1, kind="iu", kind_name="integer")
    count = masks.shape[0]
    if scores.shape[0] != count or category_ids.shape[0] != count:
        raise ValueError(
            f"Expected `masks`, `scores` and `category_ids` to hold the same number of instances, but got "
            f"{count}, {scores.shape[0]} and {category_ids.shape[0]}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"Expected `scores` to be finite, but got {scores[~np.isfinite(scores)][:5]}")


def _check_semantic(
    semantic_map: np.ndarray, semantic_confidence: np.ndarray | None, mask_shape: tuple[int, ...]
) -> None:
    """Raises ValueError unless semantic_map (and semantic_confidence) are (H, W) like the masks."""
    _check_array("semantic_map", semantic_map, ndim=2, kind="iu", kind_name="integer")
    if semantic_map.shape != tuple(mask_shape):
        raise ValueError(
            f"Expected `semantic_map` to have the masks' shape {tuple(mask_shape)}, but got {semantic_map.shape}"
        )
    if semantic_confidence is None:
        return
    _check_array("semantic_confidence", semantic_confidence, ndim=2, kind="f", kind_name="floating")
    if semantic_confidence.shape != semantic_map.shape:
        raise ValueError(
            f"Expected `semantic_confidence` to have the shape {semantic_map.shape} of `semantic_map`, "
            f"but got {semantic_confidence.shape}"
        )


def _check_thresholds(overlap: float, stuff_area: int, score: float) -> None:
    """Raises ValueError unless every threshold is a finite number, and the overlap and area ones are >= 0."""
    for name, value in (
        ("overlap_threshold", overlap),
        ("stuff_area_threshold", stuff_area),
        ("instance_score_threshold", score),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
            raise ValueError(f"Expected `{name}` to be a finite number, but got {value!r}")
    for name, value in (("overlap_threshold", overlap), ("stuff_area_threshold", stuff_area)):
        if value < 0:
            raise ValueError(f"Expected `{name}` to be >= 0, but got {value!r}")


def _ignored_set(ignored_semantic_ids: Iterable[int]) -> set[int]:
    """Returns the ignored semantic values as a set of ints.

    Raises:
        ValueError: ``ignored_semantic_ids`` is not an iterable of integers.
    """
    values = list(ignored_semantic_ids) if isinstance(ignored_semantic_ids, Iterable) else None
    if values is None or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"Expected `ignored_semantic_ids` to be an iterable of ints, but got {ignored_semantic_ids!r}")
    return {int(v) for v in values}


def _check_array(name: str, value: object, *, ndim: int, kind: str, kind_name: str) -> None:
    """Raises ValueError unless ``value`` is a numpy array of rank ``ndim`` whose dtype kind is in ``kind``."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"Expected `{name}` to be a numpy array, but got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"Expected `{name}` to be a {ndim}-D array, but got shape {value.shape}")
    if value.dtype.kind not in kind:
        raise ValueError(f"Expected `{name}` to be of {kind_name} dtype, but got {value.dtype}")
