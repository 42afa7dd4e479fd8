"""Make golden Panoptic Quality test data from the reference, cocodataset/panopticapi, on the COCO sample.

Two steps, one command (``/work/refvenv/bin/python tests/data/golden/make_golden.py``):

1. ``cases`` (numpy + pillow, any Python): hand-built perturbations of the real COCO ground truth in
   ``../coco_panoptic_sample`` are written as COCO panoptic predictions under ``cases/<case>/pred.json`` +
   ``cases/<case>/pred/*.png`` (and a modified ground truth under ``cases/<case>/gt.json`` + ``gt/`` where a
   case needs one). Every case is then read back and checked to exercise what it claims to.
2. ``expected`` (needs ``panopticapi``): ``pq_compute_single_core`` over all images in gt-JSON order, then
   ``pq_average`` for All / Things / Stuff exactly as ``pq_compute`` does; the result, the per-category
   PQStat sums, and ``float.hex()`` of every float go to ``expected.json``.

Randomness uses ``np.random.RandomState`` (numpy's frozen legacy stream), so the cases are identical under
numpy 1 and numpy 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLE_DIR = HERE.parent / "coco_panoptic_sample"
GT_JSON = SAMPLE_DIR / "panoptic_examples.json"
GT_FOLDER = SAMPLE_DIR / "panoptic_examples"
CASES_DIR = HERE / "cases"
EXPECTED_JSON = HERE / "expected.json"

VOID = 0
IMAGE_A = 142238  # 427 x 640, football players; crowd of persons 3153362
IMAGE_B = 439180  # 360 x 640, riders and horses; crowd of persons 5120499 and of horses 16175517
PERSON, BICYCLE, CAR, TRUCK, HORSE, BOTTLE = 1, 2, 3, 8, 19, 44
TREE, GRASS = 184, 193
MIXED_SEED = 20261121
GENERATED_ON = "2026-11-21"
METRICS = (("All", None), ("Things", True), ("Stuff", False))


# ----------------------------------------------------------------------------------------------------------
# Id maps and segments
# ----------------------------------------------------------------------------------------------------------


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """Decodes an (H, W, 3) uint8 RGB image into (H, W) int64 ids, ``R + 256*G + 256^2*B``."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def ids_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """Encodes (H, W) integer ids below 2**24 as an (H, W, 3) uint8 RGB image."""
    return np.stack([id_map % 256, id_map // 256 % 256, id_map // 65536 % 256], axis=-1).astype(np.uint8)


def read_id_map(path: Path) -> np.ndarray:
    """Reads an RGB-encoded panoptic PNG as an (H, W) int64 id map."""
    with Image.open(path) as image:
        return rgb_to_ids(np.asarray(image.convert("RGB")))


def write_id_map(path: Path, id_map: np.ndarray) -> None:
    """Writes an (H, W) id map as an RGB-encoded PNG with Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids_to_rgb(id_map)).save(path)


def nearest_pixels(mask: np.ndarray, seed: tuple[int, int], n: int) -> np.ndarray:
    """Selects the ``n`` pixels of ``mask`` (H, W) bool nearest to ``seed`` (row, col); ties in raster order.

    Raises:
        ValueError: if ``mask`` has fewer than ``n`` pixels.
    """
    flat = np.flatnonzero(mask)
    if flat.size < n:
        raise ValueError(f"Expected at least {n} pixels near {seed}, but got {flat.size}")
    rows, cols = np.divmod(flat, mask.shape[1])
    order = np.argsort((rows - seed[0]) ** 2 + (cols - seed[1]) ** 2, kind="stable")
    out = np.zeros(mask.size, dtype=bool)
    out[flat[order[:n]]] = True
    return out.reshape(mask.shape)


def first_pixels(mask: np.ndarray, n: int) -> np.ndarray:
    """Selects the first ``n`` pixels of ``mask`` (H, W) bool in raster order (top rows first)."""
    out = np.zeros(mask.size, dtype=bool)
    out[np.flatnonzero(mask)[:n]] = True
    return out.reshape(mask.shape)


def shift(array: np.ndarray, dy: int, dx: int, fill: int = 0) -> np.ndarray:
    """Moves a 2-D array by (dy, dx) pixels; what leaves the frame is lost, what enters it is ``fill``."""
    out = np.full_like(array, fill)
    height, width = array.shape
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = array[
        max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Grows a (H, W) bool mask by ``steps`` pixels (4-neighbourhood)."""
    for _ in range(steps):
        mask = mask | shift(mask, 1, 0) | shift(mask, -1, 0) | shift(mask, 0, 1) | shift(mask, 0, -1)
    return mask


def bbox(mask: np.ndarray) -> list[int]:
    """COCO ``[x, y, width, height]`` of a non-empty (H, W) bool mask."""
    rows, cols = np.nonzero(mask)
    return [
        int(cols.min()),
        int(rows.min()),
        int(cols.max() - cols.min() + 1),
        int(rows.max() - rows.min() + 1),
    ]


@dataclass
class Panoptic:
    """One image's panoptic segmentation: an id map and its ``segments_info``."""

    id_map: np.ndarray  # (H, W) int64 segment ids, 0 = VOID
    segments: list[dict]  # segments_info entries, in file order
    painted: np.ndarray = field(default=None)  # (H, W) bool: pixels given to segments this case added

    def __post_init__(self) -> None:
        if self.painted is None:
            self.painted = np.zeros(self.id_map.shape, dtype=bool)

    def copy(self) -> Panoptic:
        """A deep copy."""
        return Panoptic(self.id_map.copy(), [dict(s) for s in self.segments], self.painted.copy())

    def mask(self, segment_id: int) -> np.ndarray:
        """(H, W) bool pixels of one segment id (0 gives VOID)."""
        return self.id_map == segment_id

    def segment(self, segment_id: int) -> dict:
        """The segments_info entry of ``segment_id``."""
        return next(s for s in self.segments if s["id"] == segment_id)

    def erase(self, mask: np.ndarray) -> None:
        """Turns the pixels of ``mask`` into VOID."""
        self.id_map[mask] = VOID

    def new_id(self) -> int:
        """An id used neither in the map nor in segments_info."""
        return int(max(self.id_map.max(), max(s["id"] for s in self.segments))) + 1

    def add(self, mask: np.ndarray, category_id: int, segment_id: int | None = None) -> int:
        """Paints ``mask`` with a new segment (a fresh id unless given) and lists it; returns its id."""
        segment_id = self.new_id() if segment_id is None else segment_id
        self.id_map[mask] = segment_id
        self.painted |= mask
        self.segments.append({"id": segment_id, "category_id": category_id, "iscrowd": 0})
        return segment_id

    def blob(self, parts: list[tuple[np.ndarray, int]], seed: tuple[int, int]) -> np.ndarray:
        """Pixels near ``seed``: for each (mask, n), the n nearest pixels of mask not painted by this case."""
        out = np.zeros(self.id_map.shape, dtype=bool)
        for mask, n in parts:
            out |= nearest_pixels(mask & ~self.painted & ~out, seed, n)
        return out

    def prune(self) -> None:
        """Drops listed segments that no longer have pixels, so the PNG and the JSON agree.

        Raises:
            ValueError: if the map holds a non-VOID id that segments_info does not list.
        """
        present = set(np.unique(self.id_map).tolist())
        self.segments = [s for s in self.segments if s["id"] in present]
        unlisted = present - {s["id"] for s in self.segments} - {VOID}
        if unlisted:
            raise ValueError(
                f"Expected every id in the map to be listed, but got unlisted ids {sorted(unlisted)}"
            )


@dataclass
class Dataset:
    """A panoptic JSON (images, annotations, categories) with the id map of every image.

    The segments of ``images`` are the truth: ``write_dataset`` rebuilds the JSON's annotations from them.
    """

    json: dict
    images: dict[int, Panoptic]  # image_id -> segmentation, in the JSON's annotation order

    def copy(self) -> Dataset:
        """A deep copy."""
        return Dataset(json.loads(json.dumps(self.json)), {k: v.copy() for k, v in self.images.items()})


def load_dataset(json_path: Path, folder: Path) -> Dataset:
    """Reads a COCO panoptic JSON and the PNGs its annotations name."""
    data = json.loads(json_path.read_text())
    images = {
        ann["image_id"]: Panoptic(
            read_id_map(folder / ann["file_name"]), [dict(s) for s in ann["segments_info"]]
        )
        for ann in data["annotations"]
    }
    return Dataset(data, images)


def file_names(dataset: Dataset) -> dict[int, str]:
    """image_id -> PNG file name, from the dataset's annotations."""
    return {ann["image_id"]: ann["file_name"] for ann in dataset.json["annotations"]}


def format_json(value, level: int = 0) -> str:
    """JSON text with one line per innermost dict (floats as repr, so they round-trip)."""
    if not (isinstance(value, dict) and any(isinstance(v, dict) for v in value.values())):
        return json.dumps(value)
    pad = " " * (level + 1)
    items = [f"{pad}{json.dumps(key)}: {format_json(item, level + 1)}" for key, item in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"


def write_dataset(dataset: Dataset, json_path: Path, folder: Path | None, full: bool) -> None:
    """Writes annotations (with the rest of the gt JSON when ``full``) and, unless ``folder`` is None,
    one PNG per image.
    """
    names = file_names(dataset)
    annotations = [
        {"image_id": image_id, "file_name": names[image_id], "segments_info": pan.segments}
        for image_id, pan in dataset.images.items()
    ]
    data = dict(dataset.json, annotations=annotations) if full else {"annotations": annotations}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    if folder is None:
        return
    for image_id, pan in dataset.images.items():
        write_id_map(folder / names[image_id], pan.id_map)


# ----------------------------------------------------------------------------------------------------------
# Cases: each builder turns the sample gt into (pred, modified gt or None)
# ----------------------------------------------------------------------------------------------------------


def start_pred(gt: Dataset) -> Dataset:
    """The gt as a prediction, with segments_info cut down to id, category_id and iscrowd."""
    pred = gt.copy()
    for pan in pred.images.values():
        pan.segments = [
            {"id": s["id"], "category_id": s["category_id"], "iscrowd": s["iscrowd"]} for s in pan.segments
        ]
    return pred


def make_identity(gt: Dataset) -> tuple[Dataset, None]:
    """The gt, segments_info verbatim (crowd segments included), as the prediction."""
    return gt.copy(), None


def make_dropped(gt: Dataset) -> tuple[Dataset, None]:
    """Segments removed from the prediction; their pixels become VOID."""
    pred = start_pred(gt)
    dropped = {
        IMAGE_A: [3937500, 4917453, 16757838, 11829830, 3153362],
        IMAGE_B: [16762012, 15714220, 11881084],
    }
    for image_id, segment_ids in dropped.items():
        pan = pred.images[image_id]
        pan.erase(np.isin(pan.id_map, segment_ids))
        pan.prune()
    return pred, None


def merge(pan: Panoptic, segment_ids: list[int]) -> None:
    """Gives all pixels of ``segment_ids`` to the first of them."""
    pan.id_map[np.isin(pan.id_map, segment_ids[1:])] = segment_ids[0]
    pan.prune()


def make_merged(gt: Dataset) -> tuple[Dataset, None]:
    """Same-category thing segments merged into one id: in A two persons (the merge still matches the
    larger one, IoU 4076/7604), in B three horses (no match).
    """
    pred = start_pred(gt)
    merge(pred.images[IMAGE_A], [3937500, 4325578])
    merge(pred.images[IMAGE_B], [16758454, 16761532, 16306338])
    return pred, None


def pair_counts(gt: Panoptic, pred: Panoptic, gt_id: int, pred_id: int) -> tuple[int, int]:
    """(intersection, union) of one gt/pred pair as panopticapi computes them (pred ∩ gt VOID left out)."""
    gt_mask, pred_mask = gt.mask(gt_id), pred.mask(pred_id)
    inter = int((gt_mask & pred_mask).sum())
    void = int((gt.mask(VOID) & pred_mask).sum())
    area = next(s["area"] for s in gt.segments if s["id"] == gt_id)
    return inter, int(pred_mask.sum()) + area - inter - void


def tune_iou(gt: Panoptic, pred: Panoptic, segment_id: int, extra: int) -> None:
    """Erases pixels of the pred segment with the gt segment's id until intersection == union / 2 + ``extra``
    (IoU exactly 0.5 for extra=0): erasing an intersection pixel lowers the intersection and keeps the
    union; erasing a pixel outside the gt segment and gt VOID lowers the union by one.

    Raises:
        ValueError: if the pair's IoU is not above the target to begin with.
    """
    inter, union = pair_counts(gt, pred, segment_id, segment_id)
    pred_mask = pred.mask(segment_id)
    if union % 2:
        outside = pred_mask & ~gt.mask(segment_id) & ~gt.mask(VOID)
        pred.erase(first_pixels(outside[::-1], 1)[::-1])  # one pixel of the lowest such row
        union -= 1
    surplus = inter - (union // 2 + extra)
    if surplus <= 0:
        raise ValueError(
            f"Expected segment {segment_id} to start above the target IoU, but got {inter}/{union}"
        )
    inside = pred.mask(segment_id) & gt.mask(segment_id)
    pred.erase(first_pixels(inside[::-1], surplus)[::-1])  # bottom rows first


def make_shifted(gt: Dataset) -> tuple[Dataset, None]:
    """Whole id maps shifted (A by (3, 6), B by (-3, 5) pixels), so many IoUs land near 0.5; then pixels
    trimmed to make exact pairs: A person 2035955 at IoU exactly 0.5 (not matched), A person 3937500 at
    0.5 + 1/union (matched), B horse 16762578 at exactly 0.5. All three overlap gt VOID, so the union
    formula's VOID term matters.
    """
    pred = start_pred(gt)
    for image_id, (dy, dx) in {IMAGE_A: (3, 6), IMAGE_B: (-3, 5)}.items():
        pred.images[image_id].id_map = shift(pred.images[image_id].id_map, dy, dx)
    for image_id, segment_id, extra in [(IMAGE_A, 2035955, 0), (IMAGE_A, 3937500, 1), (IMAGE_B, 16762578, 0)]:
        tune_iou(gt.images[image_id], pred.images[image_id], segment_id, extra)
    for pan in pred.images.values():
        pan.prune()
    return pred, None


def make_mislabelled(gt: Dataset) -> tuple[Dataset, None]:
    """Segments given another category: thing -> absent thing, stuff -> present stuff, thing -> person,
    stuff -> stuff, thing -> stuff.
    """
    pred = start_pred(gt)
    relabels = {
        IMAGE_A: {2098642: BICYCLE, 11829830: TREE},
        IMAGE_B: {15444403: PERSON, 11881084: GRASS, 4587520: TREE},
    }
    for image_id, categories in relabels.items():
        for segment_id, category_id in categories.items():
            pred.images[image_id].segment(segment_id)["category_id"] = category_id
    return pred, None


def make_void_overlap(gt: Dataset) -> tuple[Dataset, None]:
    """New car/bottle segments over gt VOID: 3/4 VOID (ignored), exactly 1/2 VOID (FP: the rule is > 0.5),
    1/4 VOID (FP), all VOID (ignored); and B person 2626802 grown into the VOID around it (IoU stays 1.0).
    """
    pred = start_pred(gt)
    for image_id, blobs in {
        IMAGE_A: [(CAR, (280, 291), 300, 100), (CAR, (170, 307), 150, 150)],
        IMAGE_B: [(CAR, (239, 321), 100, 300), (BOTTLE, (233, 264), 200, 0)],
    }.items():
        pan, void = pred.images[image_id], gt.images[image_id].mask(VOID)
        for category_id, seed, n_void, n_other in blobs:
            pan.add(pan.blob([(void, n_void), (~void, n_other)], seed), category_id)
    pan, gt_b = pred.images[IMAGE_B], gt.images[IMAGE_B]
    grown = dilate(gt_b.mask(2626802), 3) & gt_b.mask(VOID) & ~pan.painted
    pan.id_map[grown] = 2626802
    for pan in pred.images.values():
        pan.prune()
    return pred, None


def make_crowd_overlap(gt: Dataset) -> tuple[Dataset, None]:
    """New segments over crowd regions (crowd preds themselves removed): in A a person 3/4 on the person
    crowd (ignored), a person 1/4 on it (FP), a bicycle inside it (FP: crowd of another category), a person
    3/10 VOID + 3/10 crowd (ignored only by the sum), person 4260062 grown into the crowd (IoU < 1: crowd
    is not left out of the union); in B a horse inside the person crowd (FP) and a horse 3/4 on the horse
    crowd (ignored).
    """
    pred = start_pred(gt)
    for image_id, crowd_ids in {IMAGE_A: [3153362], IMAGE_B: [5120499, 16175517]}.items():
        pred.images[image_id].erase(np.isin(pred.images[image_id].id_map, crowd_ids))
    gt_a, pan = gt.images[IMAGE_A], pred.images[IMAGE_A]
    crowd, void = gt_a.mask(3153362), gt_a.mask(VOID)
    other = ~crowd & ~void
    pan.add(pan.blob([(crowd, 300), (other, 100)], (300, 240)), PERSON)
    pan.add(pan.blob([(crowd, 100), (other, 300)], (250, 410)), PERSON)
    pan.add(pan.blob([(crowd, 300)], (300, 120)), BICYCLE)
    pan.add(pan.blob([(void, 150), (crowd, 150), (other, 200)], (176, 330)), PERSON)
    grown = dilate(gt_a.mask(4260062), 3) & crowd & ~pan.painted
    pan.id_map[grown] = 4260062
    gt_b, pan = gt.images[IMAGE_B], pred.images[IMAGE_B]
    person_crowd, horse_crowd = gt_b.mask(5120499), gt_b.mask(16175517)
    other = ~person_crowd & ~horse_crowd & ~gt_b.mask(VOID)
    pan.add(pan.blob([(person_crowd, 300)], (260, 630)), HORSE)
    pan.add(pan.blob([(horse_crowd, 300), (other, 100)], (200, 612)), HORSE)
    for pan in pred.images.values():
        pan.prune()
    return pred, None


def split(pan: Panoptic, segment_id: int, fraction: float, by_column: bool = False) -> int:
    """Gives the first ``fraction`` of a segment's pixels (raster order, or column order) to a new id."""
    mask = pan.mask(segment_id)
    n = round(fraction * int(mask.sum()))
    part = first_pixels(mask.T, n).T if by_column else first_pixels(mask, n)
    return pan.add(part, pan.segment(segment_id)["category_id"])


def make_split(gt: Dataset) -> tuple[Dataset, None]:
    """Segments split into two ids: A grass 40 % (left) / 60 % (TP + FP), A person top 1/3 / rest (TP + FP),
    B horse 16306338 (4160 px) into halves of 2080 px (both IoU exactly 0.5: FN + 2 FP).
    """
    pred = start_pred(gt)
    split(pred.images[IMAGE_A], 10025880, 0.4, by_column=True)
    split(pred.images[IMAGE_A], 4260062, 1 / 3)
    split(pred.images[IMAGE_B], 16306338, 0.5)
    return pred, None


def make_two_crowds(gt: Dataset) -> tuple[Dataset, Dataset]:
    """Modified gt: A's person crowd 3153362 split at column 320 into a right part with the new, larger id
    3153363 listed where the crowd was and a left part keeping 3153362 listed last. panopticapi's FP filter
    uses the last-listed crowd only: a person blob on the right crowd is an FP, one on the left is ignored.
    """
    new_gt = gt.copy()
    gt_a = new_gt.images[IMAGE_A]
    crowd = gt_a.mask(3153362)
    right = crowd.copy()
    right[:, :320] = False
    gt_a.id_map[right] = 3153363
    original = gt_a.segment(3153362)
    gt_a.segments = [
        dict(s, id=3153363, area=int(right.sum()), bbox=bbox(right)) if s["id"] == 3153362 else s
        for s in gt_a.segments
    ] + [dict(original, area=int((crowd & ~right).sum()), bbox=bbox(crowd & ~right))]
    pred = start_pred(new_gt)
    pan = pred.images[IMAGE_A]
    pan.erase(np.isin(pan.id_map, [3153362, 3153363]))
    other = ~crowd & ~gt_a.mask(VOID)
    pan.add(pan.blob([(gt_a.mask(3153363), 300), (other, 100)], (250, 410)), PERSON)
    pan.add(pan.blob([(gt_a.mask(3153362), 300), (other, 100)], (300, 240)), PERSON)
    pan.prune()
    return pred, new_gt


def make_gt_area_from_json(gt: Dataset) -> tuple[Dataset, Dataset]:
    """Modified gt JSON only (PNGs unchanged): A person 2035955 listed with 3x its pixel area (an exact
    prediction gets IoU 1/3: FN + FP) and B horse 16756904 with area + 100 (IoU 1904/2004). panopticapi
    takes gt areas from the JSON and recomputes pred areas from the PNG.
    """
    new_gt = gt.copy()
    new_gt.images[IMAGE_A].segment(2035955)["area"] *= 3
    new_gt.images[IMAGE_B].segment(16756904)["area"] += 100
    return start_pred(gt), new_gt


def make_listed_id_zero(gt: Dataset) -> tuple[Dataset, None]:
    """Segment id 0 listed as a real segment; it then owns every 0 pixel of the PNG. A: grass 10025880
    painted 0 and listed as {id 0, grass}: its area includes the 2712 VOID pixels, which the union leaves
    out again, so IoU is 1.0. B: truck 4587520 and horse 16758454 painted 0 and listed as {id 0, truck}:
    IoU with the truck 1680/6043 (FN truck, FN horse) and the segment is > 1/2 gt VOID, so ignored.
    """
    pred = start_pred(gt)
    for image_id, segment_ids, category_id in [
        (IMAGE_A, [10025880], GRASS),
        (IMAGE_B, [4587520, 16758454], TRUCK),
    ]:
        pan = pred.images[image_id]
        pan.erase(np.isin(pan.id_map, segment_ids))
        pan.prune()
        pan.segments.append({"id": 0, "category_id": category_id, "iscrowd": 0})
    return pred, None


def perturb_segment(
    pan: Panoptic, segment_id: int, rng: np.random.RandomState, category_ids: list[int]
) -> None:
    """Applies one random operation to a segment: keep, drop, relabel, split, shift or trim."""
    op = ("keep", "keep", "drop", "relabel", "split", "shift", "trim")[rng.randint(7)]
    mask = pan.mask(segment_id)
    if op == "drop":
        pan.erase(mask)
    elif op == "relabel":
        pan.segment(segment_id)["category_id"] = category_ids[rng.randint(len(category_ids))]
    elif op == "split":
        split(pan, segment_id, 0.2 + 0.6 * rng.rand())
    elif op == "shift":
        dy, dx = (int(v) for v in rng.randint(-8, 9, size=2))
        pan.erase(mask)
        pan.id_map[shift(mask, dy, dx)] = segment_id
    elif op == "trim":
        n = int((0.1 + 0.4 * rng.rand()) * mask.sum())
        pan.erase(first_pixels(mask[::-1], n)[::-1])


def add_random_boxes(pan: Panoptic, rng: np.random.RandomState, category_ids: list[int], count: int) -> None:
    """Paints ``count`` random rectangles (8 to 60 px a side) of random categories over the map."""
    height, width = pan.id_map.shape
    for _ in range(count):
        h, w = (int(v) for v in rng.randint(8, 61, size=2))
        y, x = int(rng.randint(0, height - h)), int(rng.randint(0, width - w))
        box = np.zeros(pan.id_map.shape, dtype=bool)
        box[y : y + h, x : x + w] = True
        pan.add(box, category_ids[rng.randint(len(category_ids))])


def make_mixed(gt: Dataset) -> tuple[Dataset, None]:
    """A seeded random mix over both images: every segment kept, dropped, relabelled, split, shifted or
    trimmed, then 4 random boxes per image (``np.random.RandomState(MIXED_SEED)``).
    """
    rng = np.random.RandomState(MIXED_SEED)
    category_ids = [c["id"] for c in gt.json["categories"]]
    pred = start_pred(gt)
    for pan in pred.images.values():
        for segment_id in [s["id"] for s in pan.segments]:
            if pan.mask(segment_id).any():
                perturb_segment(pan, segment_id, rng, category_ids)
        add_random_boxes(pan, rng, category_ids, 4)
        pan.prune()
    return pred, None


# ----------------------------------------------------------------------------------------------------------
# Checks: a per-segment account of each image by panopticapi's rules, to prove each case does what it says
# ----------------------------------------------------------------------------------------------------------


class Pair(NamedTuple):
    """A gt segment and a same-category pred segment that overlap."""

    gt_id: int
    pred_id: int
    inter: int
    union: int
    matched: bool

    @property
    def exact_half(self) -> bool:
        """Whether the IoU is exactly 0.5."""
        return 2 * self.inter == self.union


@dataclass
class PredRecord:
    """How panopticapi treats one predicted segment."""

    segment_id: int
    category_id: int
    area: int
    void: int  # pixels on gt VOID
    crowd: int  # pixels on the last-listed gt crowd of its category
    any_crowd: int  # pixels on any gt crowd segment
    status: str  # "tp", "fp" or "ignored"
    added: bool  # its id is not a gt id of the image (a segment the case painted)


@dataclass
class Account:
    """Pairs, gt and pred outcomes of one image (or of several, concatenated)."""

    pairs: list[Pair] = field(default_factory=list)
    fn: list[int] = field(default_factory=list)  # unmatched non-crowd gt ids
    preds: list[PredRecord] = field(default_factory=list)

    def extend(self, other: Account) -> None:
        """Appends another account's records."""
        self.pairs += other.pairs
        self.fn += other.fn
        self.preds += other.preds

    def count(self, status: str) -> int:
        """Number of preds with a status."""
        return sum(p.status == status for p in self.preds)

    def pair(self, gt_id: int, pred_id: int | None = None) -> Pair:
        """The pair of a gt segment and a pred segment (by default the pred with the same id)."""
        pred_id = gt_id if pred_id is None else pred_id
        return next(p for p in self.pairs if p.gt_id == gt_id and p.pred_id == pred_id)

    def pred(self, segment_id: int) -> PredRecord:
        """The record of a pred segment."""
        return next(p for p in self.preds if p.segment_id == segment_id)


def match_pairs(gt: Panoptic, pred: Panoptic) -> tuple[list[Pair], list[int]]:
    """All overlapping same-category (non-crowd gt, pred) pairs, and the unmatched non-crowd gt ids."""
    pred_category = {s["id"]: s["category_id"] for s in pred.segments}
    pairs = []
    for info in gt.segments:
        if info["iscrowd"] == 1:
            continue
        for pred_id in np.unique(pred.id_map[gt.mask(info["id"])]).tolist():
            if pred_category.get(pred_id) == info["category_id"]:
                inter, union = pair_counts(gt, pred, info["id"], pred_id)
                pairs.append(Pair(info["id"], pred_id, inter, union, inter / union > 0.5))
    matched = {p.gt_id for p in pairs if p.matched}
    fn = [s["id"] for s in gt.segments if s["iscrowd"] != 1 and s["id"] not in matched]
    return pairs, fn


def account_image(gt: Panoptic, pred: Panoptic) -> Account:
    """Re-derives, pixel by pixel, what panopticapi decides for each segment of one image."""
    pairs, fn = match_pairs(gt, pred)
    matched = {p.pred_id for p in pairs if p.matched}
    crowd_of = {s["category_id"]: s["id"] for s in gt.segments if s["iscrowd"] == 1}  # the last one wins
    crowd_any = np.isin(gt.id_map, [s["id"] for s in gt.segments if s["iscrowd"] == 1])
    gt_ids = {s["id"] for s in gt.segments}
    account = Account(pairs, fn)
    for info in pred.segments:
        mask = pred.mask(info["id"])
        crowd_id = crowd_of.get(info["category_id"])
        area, void = int(mask.sum()), int((mask & gt.mask(VOID)).sum())
        crowd = 0 if crowd_id is None else int((mask & gt.mask(crowd_id)).sum())
        status = "tp" if info["id"] in matched else "ignored" if (void + crowd) / area > 0.5 else "fp"
        any_crowd = int((mask & crowd_any).sum())
        added = info["id"] not in gt_ids
        account.preds.append(
            PredRecord(info["id"], info["category_id"], area, void, crowd, any_crowd, status, added)
        )
    return account


def account_case(gt: Dataset, pred: Dataset, image_ids: list[int] | None = None) -> Account:
    """Accounts for the given images (all, in gt order, by default)."""
    total = Account()
    for image_id in image_ids or list(gt.images):
        total.extend(account_image(gt.images[image_id], pred.images[image_id]))
    return total


def require(condition: bool, message: str) -> None:
    """Raises AssertionError with ``message`` unless ``condition`` (unlike ``assert``, kept under -O)."""
    if not condition:
        raise AssertionError(message)


def check_identity(gt: Dataset, pred: Dataset) -> None:
    """Every match at IoU 1.0; the listed crowd segments are ignored."""
    acc = account_case(gt, pred)
    require(not acc.fn and acc.count("fp") == 0, "identity: no FN, no FP")
    require(all(p.inter == p.union for p in acc.pairs), "identity: every pair has IoU 1.0")
    require(acc.count("ignored") == 3, "identity: the three listed crowd segments are ignored, not FP")


def check_dropped(gt: Dataset, pred: Dataset) -> None:
    """Only FNs (dropping the crowd pred changes nothing)."""
    acc = account_case(gt, pred)
    require(len(acc.fn) == 7 and acc.count("fp") == 0, "dropped: 7 FN, no FP")


def check_merged(gt: Dataset, pred: Dataset) -> None:
    """A: the merge matches the larger person; B: the merge matches none."""
    acc_a, acc_b = account_case(gt, pred, [IMAGE_A]), account_case(gt, pred, [IMAGE_B])
    require(Pair(4325578, 3937500, 4076, 7604, True) in acc_a.pairs, "merged: A merge matches the larger")
    require(
        acc_a.fn == [3937500] and len(acc_b.fn) == 3 and acc_b.count("fp") == 1, "merged: FN/FP as planned"
    )


def check_shifted(gt: Dataset, pred: Dataset) -> None:
    """Exact IoU 0.5 pairs unmatched, 0.5 + 1/union matched, and many IoUs near 0.5."""
    acc_a, acc_b = account_case(gt, pred, [IMAGE_A]), account_case(gt, pred, [IMAGE_B])
    half_a = [p for p in acc_a.pairs if p.exact_half]
    require([p.gt_id for p in half_a] == [2035955] and not half_a[0].matched, "shifted: A IoU 0.5 unmatched")
    above = acc_a.pair(3937500)
    require(above.matched and above.inter == above.union // 2 + 1, "shifted: A IoU 0.5 + 1/union matched")
    half_b = acc_b.pair(16762578)
    require(half_b.exact_half and acc_b.pred(16762578).status == "fp", "shifted: B IoU 0.5 is an FP")
    require(all(acc_a.pred(i).void > 0 for i in (2035955, 3937500)), "shifted: the pairs overlap gt VOID")
    ious = [p.inter / p.union for p in acc_a.pairs + acc_b.pairs]
    require(sum(0.4 < iou < 0.6 for iou in ious) >= 10, "shifted: many IoUs near 0.5")


def check_mislabelled(gt: Dataset, pred: Dataset) -> None:
    """Every relabel is one FN and one FP."""
    acc = account_case(gt, pred)
    require(len(acc.fn) == 5 and acc.count("fp") == 5, "mislabelled: 5 FN + 5 FP")


def check_void_overlap(gt: Dataset, pred: Dataset) -> None:
    """VOID share 3/4 and 1 ignored, 1/2 and 1/4 FP; a pred grown into VOID keeps IoU 1.0."""
    acc = account_case(gt, pred)
    added = sorted((p.void, p.area, p.status) for p in acc.preds if p.added)
    planned = [(100, 400, "fp"), (150, 300, "fp"), (200, 200, "ignored"), (300, 400, "ignored")]
    require(added == planned, f"void_overlap: painted segments as planned, got {added}")
    grown = acc.pair(2626802)
    require(acc.pred(2626802).void > 0 and grown.inter == grown.union, "void_overlap: grown keeps IoU 1.0")


def check_crowd_overlap(gt: Dataset, pred: Dataset) -> None:
    """Crowd share above / below 1/2, another category on the crowd, VOID + crowd, a pred grown into it."""
    acc_a, acc_b = account_case(gt, pred, [IMAGE_A]), account_case(gt, pred, [IMAGE_B])
    added_a = [(p.category_id, p.void, p.crowd, p.any_crowd, p.status) for p in acc_a.preds if p.added]
    planned_a = [
        (PERSON, 0, 300, 300, "ignored"),
        (PERSON, 0, 100, 100, "fp"),
        (BICYCLE, 0, 0, 300, "fp"),
        (PERSON, 150, 150, 150, "ignored"),
    ]
    require(added_a == planned_a, f"crowd_overlap: A blobs as planned, got {added_a}")
    grown = acc_a.pair(4260062)
    require(grown.matched and grown.inter < grown.union, "crowd_overlap: grown into the crowd, IoU < 1")
    added_b = [(p.category_id, p.crowd, p.any_crowd, p.status) for p in acc_b.preds if p.added]
    planned_b = [(HORSE, 0, 300, "fp"), (HORSE, 300, 300, "ignored")]
    require(added_b == planned_b, f"crowd_overlap: B blobs as planned, got {added_b}")


def check_split(gt: Dataset, pred: Dataset) -> None:
    """A: the larger parts still match; B: two halves at IoU exactly 0.5 match nothing."""
    acc_a, acc_b = account_case(gt, pred, [IMAGE_A]), account_case(gt, pred, [IMAGE_B])
    require(not acc_a.fn and acc_a.count("fp") == 2, "split: A both splits keep a match, 2 FP")
    halves = [p for p in acc_b.pairs if p.gt_id == 16306338]
    require(len(halves) == 2 and all(p.exact_half and not p.matched for p in halves), "split: B at IoU 0.5")
    require(acc_b.fn == [16306338] and acc_b.count("fp") == 2, "split: B FN + 2 FP")


def check_two_crowds(gt: Dataset, pred: Dataset) -> None:
    """Only the last-listed crowd (the smaller id) filters FPs."""
    acc = account_case(gt, pred, [IMAGE_A])
    blobs = [(p.any_crowd, p.crowd, p.status) for p in acc.preds if p.added]
    require(blobs == [(300, 0, "fp"), (300, 300, "ignored")], f"two_crowds: last crowd wins, got {blobs}")
    crowds = [s["id"] for s in gt.images[IMAGE_A].segments if s["iscrowd"]]
    require(crowds == [3153363, 3153362], "two_crowds: the larger id is listed first")


def check_gt_area_from_json(gt: Dataset, pred: Dataset) -> None:
    """IoUs computed with the JSON's gt areas."""
    acc = account_case(gt, pred)
    require(
        Pair(2035955, 2035955, 2301, 6903, False) in acc.pairs, "gt_area_from_json: exact pred at IoU 1/3"
    )
    require(Pair(16756904, 16756904, 1904, 2004, True) in acc.pairs, "gt_area_from_json: IoU 1904/2004")


def check_listed_id_zero(gt: Dataset, pred: Dataset) -> None:
    """A: id 0 matches grass at IoU 1.0; B: id 0 is mostly VOID and ignored."""
    acc_a, acc_b = account_case(gt, pred, [IMAGE_A]), account_case(gt, pred, [IMAGE_B])
    require(Pair(10025880, 0, 75100, 75100, True) in acc_a.pairs, "listed_id_zero: A id 0 matches grass")
    require(acc_b.pred(0).status == "ignored", "listed_id_zero: B id 0 ignored")
    require(sorted(acc_b.fn) == [4587520, 16758454], "listed_id_zero: B truck and horse FN")


def check_mixed(gt: Dataset, pred: Dataset) -> None:
    """Every outcome occurs."""
    acc = account_case(gt, pred)
    require(acc.fn and acc.count("fp") and acc.count("ignored") and acc.count("tp"), "mixed: all outcomes")


@dataclass(frozen=True)
class CaseSpec:
    """A named golden case: how to build it and how to prove it exercises what it claims."""

    name: str
    make: Callable[[Dataset], tuple[Dataset, Dataset | None]]
    check: Callable[[Dataset, Dataset], None]


CASES = (
    CaseSpec("identity", make_identity, check_identity),
    CaseSpec("dropped", make_dropped, check_dropped),
    CaseSpec("merged", make_merged, check_merged),
    CaseSpec("shifted", make_shifted, check_shifted),
    CaseSpec("mislabelled", make_mislabelled, check_mislabelled),
    CaseSpec("void_overlap", make_void_overlap, check_void_overlap),
    CaseSpec("crowd_overlap", make_crowd_overlap, check_crowd_overlap),
    CaseSpec("split", make_split, check_split),
    CaseSpec("mixed", make_mixed, check_mixed),
    CaseSpec("listed_id_zero", make_listed_id_zero, check_listed_id_zero),
    CaseSpec("two_crowds", make_two_crowds, check_two_crowds),
    CaseSpec("gt_area_from_json", make_gt_area_from_json, check_gt_area_from_json),
)


# ----------------------------------------------------------------------------------------------------------
# Files of a case
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CasePaths:
    """Where a case's gt and pred live."""

    gt_json: Path
    gt_folder: Path
    pred_json: Path
    pred_folder: Path

    def relative(self) -> dict[str, str]:
        """The four paths relative to this folder (tests/data/golden), as POSIX strings."""
        names = ("gt_json", "gt_folder", "pred_json", "pred_folder")
        return {name: Path(os.path.relpath(getattr(self, name), HERE)).as_posix() for name in names}


def case_paths(name: str) -> CasePaths:
    """The files of case ``name``: its own ``gt.json`` and ``gt/`` where it has them, else the sample's."""
    folder = CASES_DIR / name
    return CasePaths(
        gt_json=folder / "gt.json" if (folder / "gt.json").exists() else GT_JSON,
        gt_folder=folder / "gt" if (folder / "gt").exists() else GT_FOLDER,
        pred_json=folder / "pred.json",
        pred_folder=folder / "pred",
    )


def write_cases() -> None:
    """Builds every case from the sample gt and writes it under cases/ (the old cases/ is removed first)."""
    gt = load_dataset(GT_JSON, GT_FOLDER)
    shutil.rmtree(CASES_DIR, ignore_errors=True)
    for spec in CASES:
        pred, own_gt = spec.make(gt)
        folder = CASES_DIR / spec.name
        if own_gt is not None:
            pngs_changed = any((own_gt.images[i].id_map != gt.images[i].id_map).any() for i in gt.images)
            write_dataset(own_gt, folder / "gt.json", folder / "gt" if pngs_changed else None, full=True)
        write_dataset(pred, folder / "pred.json", folder / "pred", full=False)


def check_cases() -> dict[str, Account]:
    """Reads every case back from disk and runs its check; returns the per-case accounts."""
    accounts = {}
    for spec in CASES:
        paths = case_paths(spec.name)
        gt = load_dataset(paths.gt_json, paths.gt_folder)
        pred = load_dataset(paths.pred_json, paths.pred_folder)
        spec.check(gt, pred)
        accounts[spec.name] = account_case(gt, pred)
    return accounts


# ----------------------------------------------------------------------------------------------------------
# Expected numbers from panopticapi
# ----------------------------------------------------------------------------------------------------------


def to_python(value):
    """numpy scalars -> Python int/float, recursively through dicts."""
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    return float(value)


def to_hex(value):
    """Every float -> ``float.hex()`` string, recursively through dicts; ints stay ints."""
    if isinstance(value, dict):
        return {k: to_hex(v) for k, v in value.items()}
    return value.hex() if isinstance(value, float) else value


def reference_pq(paths: CasePaths) -> dict:
    """Runs panopticapi single-core over all images in gt-JSON order and averages as ``pq_compute`` does.

    Returns:
        ``{"All", "Things", "Stuff": {pq, sq, rq, n}, "per_class": {category id str: {pq, sq, rq}},
        "stats": {category id str: {tp, fp, fn, iou}}}``; pq, sq, rq, iou as floats (panopticapi's int 0
        for sq with tp == 0 becomes 0.0), stats only for categories with tp + fp + fn > 0.
    """
    from panopticapi.evaluation import pq_compute_single_core

    gt_json = json.loads(paths.gt_json.read_text())
    pred_json = json.loads(paths.pred_json.read_text())
    categories = {el["id"]: el for el in gt_json["categories"]}
    pred_annotations = {el["image_id"]: el for el in pred_json["annotations"]}
    matched = [(gt_ann, pred_annotations[gt_ann["image_id"]]) for gt_ann in gt_json["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        pq_stat = pq_compute_single_core(0, matched, str(paths.gt_folder), str(paths.pred_folder), categories)
    results = {}
    for name, isthing in METRICS:
        results[name], per_class = pq_stat.pq_average(categories, isthing=isthing)
        if name == "All":
            results["per_class"] = {str(k): v for k, v in per_class.items()}
    stats = {}
    for label, cat in pq_stat.pq_per_cat.items():
        if cat.tp + cat.fp + cat.fn:
            require(label in categories, f"PQStat has counts for unknown category {label}")
            stats[label] = {"tp": cat.tp, "fp": cat.fp, "fn": cat.fn, "iou": cat.iou}
    results["stats"] = {str(k): stats[k] for k in categories if k in stats}
    return to_python(results)


def totals(result: dict) -> tuple[int, int, int]:
    """(tp, fp, fn) summed over categories."""
    return tuple(sum(s[k] for s in result["stats"].values()) for k in ("tp", "fp", "fn"))


def write_expected(accounts: dict[str, Account]) -> dict:
    """Computes every case with panopticapi, cross-checks counts with the accounts, writes expected.json."""
    cases = {}
    for spec in CASES:
        paths = case_paths(spec.name)
        result = reference_pq(paths)
        acc = accounts[spec.name]
        mine = (acc.count("tp"), acc.count("fp"), len(acc.fn))
        require(totals(result) == mine, f"{spec.name}: panopticapi {totals(result)} != account {mine}")
        require(all(result[name]["n"] > 0 for name, _ in METRICS), f"{spec.name}: a class group is empty")
        hex_part = {k: to_hex(result[k]) for k in ("All", "Things", "Stuff", "per_class", "stats")}
        cases[spec.name] = dict(paths=paths.relative(), **result, hex=hex_part)
    expected = {
        "provenance": {
            "tool": f"panopticapi-lite {importlib.metadata.version('panopticapi-lite')} "
            "(a copy of cocodataset/panopticapi), panopticapi.evaluation.pq_compute_single_core",
            "method": "pq_compute_single_core(0, all images in gt-JSON order, ...), then "
            "PQStat.pq_average for All/Things/Stuff as pq_compute does (not its multi-core path)",
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "generated_on": GENERATED_ON,
            "command": "python tests/data/golden/make_golden.py  (with panopticapi installed)",
            "notes": "paths are relative to tests/data/golden; per_class lists every gt category in "
            "gt-JSON order; stats lists only categories with tp + fp + fn > 0; 'hex' repeats the numbers "
            "with float.hex() strings for floats (ints unchanged)",
        },
        "cases": cases,
    }
    EXPECTED_JSON.write_text(format_json(expected) + "\n")
    return expected


def print_summary(expected: dict, accounts: dict[str, Account]) -> None:
    """One line per case: All PQ/SQ/RQ, tp/fp/fn totals and the number of ignored preds."""
    print(f"{'case':18s} {'PQ':>8s} {'SQ':>8s} {'RQ':>8s} {'tp':>4s} {'fp':>4s} {'fn':>4s} {'ign':>4s}")
    for name, result in expected["cases"].items():
        tp, fp, fn = totals(result)
        pq, sq, rq = (result["All"][k] for k in ("pq", "sq", "rq"))
        ignored = accounts[name].count("ignored")
        print(f"{name:18s} {pq:8.5f} {sq:8.5f} {rq:8.5f} {tp:4d} {fp:4d} {fn:4d} {ignored:4d}")


def main(argv: list[str] | None = None) -> int:
    """Builds and checks the cases, then (unless ``--step cases``) writes expected.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", choices=("all", "cases", "expected"), default="all")
    args = parser.parse_args(argv)
    if args.step in ("all", "cases"):
        write_cases()
    accounts = check_cases()
    print(f"{len(accounts)} cases checked")
    if args.step in ("all", "expected"):
        print_summary(write_expected(accounts), accounts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
