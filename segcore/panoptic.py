"""The COCO panoptic format: ids <-> colours, id-map PNGs, segments of an id map, and the 2-channel form.

An id map is an (H, W) array of segment ids; in a PNG the id is stored as the colour
``id = R + 256*G + 256^2*B``. Id 0 is VOID unless segments_info lists it.
"""

from __future__ import annotations

import numba
import numpy as np

from segcore.categories import Categories
from segcore.png import PNGError, decode_ids, encode_ids, id2rgb, read_size, rgb2id

__all__ = [
    "OFFSET",
    "VOID",
    "PNGError",
    "decode_id_map",
    "encode_id_map",
    "id2rgb",
    "rgb2id",
    "read_size",
    "segment_stats",
    "segments_from_id_map",
    "split_label_divisor",
    "id_map_from_category_instance",
]

OFFSET = 256 * 256 * 256  # ids are below OFFSET: 24 bits, three 8-bit colour channels
VOID = 0


def decode_id_map(data: bytes) -> np.ndarray:
    """Decodes an id-map PNG: ``id = R + 256*G + 256^2*B``.

    Returns:
        ids  # (H, W) uint32

    Raises:
        PNGError: the bytes are not a decodable PNG.
    """
    return decode_ids(data)


def encode_id_map(ids: np.ndarray) -> bytes:
    """Encodes an id map as an RGB PNG with the project's measured default settings (see segcore.png).

    Args:
        ids: segment ids in ``[0, 2^24)``  # (H, W) integer

    Raises:
        ValueError: bad shape or ids out of range.
    """
    return encode_ids(ids)


def segment_stats(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Area and bounding box of every id present in an id map, in one pass over the pixels.

    Args:
        ids: an id map  # (H, W) integer, values in [0, 2^31)

    Returns:
        ``{"id": (K,) int64 ascending, "area": (K,) int64, "bbox": (K, 4) int64 [x, y, w, h]}``,
        VOID (0) included when present.

    Raises:
        ValueError: ``ids`` is not a non-empty 2-D array.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.size == 0:
        raise ValueError(f"Expected `ids` to be a non-empty (H, W) array, but got shape {ids.shape}")
    if ids.dtype.kind not in "ui" or (ids.dtype.kind == "i" and ids.min() < 0):
        raise ValueError(f"Expected `ids` to hold non-negative integers, but got dtype {ids.dtype}")
    flat = np.ascontiguousarray(ids).reshape(-1)
    keys, area, box = _scan_segments(flat, ids.shape[1])
    order = np.argsort(keys)
    box = box[order]
    bbox = np.stack([box[:, 0], box[:, 1], box[:, 2] - box[:, 0] + 1, box[:, 3] - box[:, 1] + 1], axis=1)
    return {"id": keys[order].astype(np.int64), "area": area[order], "bbox": bbox}


def segments_from_id_map(
    ids: np.ndarray,
    category_ids: dict[int, int],
    categories: Categories,
    scores: dict[int, float] | None = None,
) -> list[dict]:
    """Builds COCO ``segments_info`` for an id map whose segments' categories are known.

    Args:
        ids: an id map  # (H, W) integer
        category_ids: segment id -> dataset category id, for every non-VOID id in the map.
        categories: the dataset categories (for isthing).
        scores: optional segment id -> score (predictions).

    Returns:
        ``[{id, category_id, iscrowd, isthing, area, bbox[, score]}]`` in ascending id order, VOID left out.

    Raises:
        KeyError: an id in the map has no category, or a category is unknown.
    """
    stats = segment_stats(ids)
    segments = []
    for segment_id, area, bbox in zip(stats["id"].tolist(), stats["area"].tolist(), stats["bbox"].tolist()):
        if segment_id == VOID and VOID not in category_ids:
            continue
        if segment_id not in category_ids:
            raise KeyError(f"Segment id {segment_id} is in the id map but has no category")
        category = categories.by_id(category_ids[segment_id])
        segment = {
            "id": segment_id,
            "category_id": category.id,
            "iscrowd": 0,
            "isthing": category.isthing,
            "area": area,
            "bbox": bbox,
        }
        if scores is not None:
            segment["score"] = float(scores[segment_id])
        segments.append(segment)
    return segments


def split_label_divisor(label: np.ndarray, label_divisor: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits the 1-channel ``category * label_divisor + instance`` form into its two channels.

    Args:
        label: the combined map  # (H, W) integer, non-negative
        label_divisor: e.g. 1000 (Cityscapes, detectron2) or 256 (DeepLab2 COCO).

    Returns:
        ``(category, instance)``  # (H, W) int64 each
    """
    if label_divisor <= 0:
        raise ValueError(f"Expected `label_divisor` to be positive, but got {label_divisor}")
    label = np.asarray(label, dtype=np.int64)
    return label // label_divisor, label % label_divisor


def id_map_from_category_instance(
    category: np.ndarray,
    instance: np.ndarray,
    categories: Categories,
    void_category_ids: tuple[int, ...] = (0,),
) -> tuple[np.ndarray, list[dict]]:
    """Converts the 2-channel (category, instance) form into a COCO id map and segments_info.

    Every distinct (category, instance) pair becomes one segment; for stuff categories the instance is
    ignored (all pixels of a stuff category form one segment). Segment ids are 1, 2, ... in ascending
    (category, instance) order; pixels of a void category become VOID (0).

    Args:
        category: dataset category id per pixel  # (H, W) integer
        instance: instance number per pixel  # (H, W) integer
        categories: the dataset categories; a category id not in them (and not void) is an error.
        void_category_ids: category values meaning "no label".

    Returns:
        ``(ids, segments_info)``: ids  # (H, W) uint32, segments as in segments_from_id_map.

    Raises:
        ValueError: shapes differ, or a category id is unknown.
    """
    category = np.asarray(category, dtype=np.int64)
    instance = np.asarray(instance, dtype=np.int64)
    if category.shape != instance.shape or category.ndim != 2:
        raise ValueError(
            f"Expected `category` and `instance` to be (H, W) maps of one shape, but got {category.shape} and {instance.shape}"
        )
    present = np.unique(category)
    unknown = [int(c) for c in present if c not in categories and c not in void_category_ids]
    if unknown:
        raise ValueError(f"Expected category ids from the dataset, but got unknown ids {unknown}")
    thing_ids = np.array([c.id for c in categories if c.isthing], dtype=np.int64)
    instance = np.where(np.isin(category, thing_ids), instance, 0)
    void = np.isin(category, np.asarray(void_category_ids, dtype=np.int64))
    combined = np.where(void, -1, category * (int(instance.max(initial=0)) + 1) + instance)
    values, inverse = np.unique(combined, return_inverse=True)
    first = 1 if values.size and values[0] == -1 else 0
    ids = (inverse.reshape(category.shape) + 1 - first).astype(np.uint32)
    segment_category = {}
    for index in range(first, values.size):
        pixel = np.flatnonzero(inverse == index)[0]
        segment_category[index + 1 - first] = int(category.reshape(-1)[pixel])
    return ids, segments_from_id_map(ids, segment_category, categories)


@numba.njit(cache=True, nogil=True)
def _scan_segments(flat, width):  # pragma: no cover - compiled
    """One pass over runs of equal ids: open-addressing hash of ids -> area and [xmin, ymin, xmax, ymax]."""
    capacity = 64
    slots = np.full(capacity, -1, np.int64)
    index = np.zeros(capacity, np.int64)
    count = 0
    keys = np.empty(capacity // 2, np.int64)
    area = np.zeros(capacity // 2, np.int64)
    box = np.empty((capacity // 2, 4), np.int64)
    for y in range(flat.size // width):
        row = flat[y * width : (y + 1) * width]
        start = 0
        while start < width:
            key = np.int64(row[start])
            end = start + 1
            while end < width and row[end] == row[start]:
                end += 1
            if count * 2 >= capacity:
                capacity *= 2
                slots, index = _rehash(keys, count, capacity)
                keys = _grow(keys, capacity // 2)
                area = _grow(area, capacity // 2)
                box = _grow(box, capacity // 2)
            slot = (key * 2654435761) & (capacity - 1)
            while slots[slot] != -1 and slots[slot] != key:
                slot = (slot + 1) & (capacity - 1)
            if slots[slot] == -1:
                slots[slot] = key
                index[slot] = count
                keys[count] = key
                box[count, 0] = start
                box[count, 1] = y
                box[count, 2] = end - 1
                count += 1
            i = index[slot]
            area[i] += end - start
            box[i, 0] = min(box[i, 0], start)
            box[i, 2] = max(box[i, 2], end - 1)
            box[i, 3] = y
            start = end
    return keys[:count].copy(), area[:count].copy(), box[:count].copy()


@numba.njit(cache=True, nogil=True)
def _rehash(keys, count, capacity):  # pragma: no cover - compiled
    slots = np.full(capacity, -1, np.int64)
    index = np.zeros(capacity, np.int64)
    for i in range(count):
        slot = (keys[i] * 2654435761) & (capacity - 1)
        while slots[slot] != -1:
            slot = (slot + 1) & (capacity - 1)
        slots[slot] = keys[i]
        index[slot] = i
    return slots, index


@numba.njit(cache=True, nogil=True)
def _grow(array, size):  # pragma: no cover - compiled
    shape = (size,) + array.shape[1:]
    grown = np.zeros(shape, array.dtype)
    grown[: array.shape[0]] = array
    return grown
