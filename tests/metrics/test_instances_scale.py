"""The instance view's compact partials give COCOeval's numbers bit for bit on a synthetic corpus of 500 images
with crowds, ties in score, more than 100 detections per image and category, every area range; and a partial of
the first version (RLE masks) reads as the same numbers."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segcore.categories import Categories, Category
from segcore.metrics.instances import (SUMMARY_NAMES, InstancePartial, accumulate, image_instances,
                                       instance_scores, rle_counts)

CATEGORIES = Categories([Category(1, "person", True), Category(2, "car", True), Category(3, "dog", True),
                         Category(9, "sky", False)])


def synthetic_image(rng: np.random.Generator, crowded: bool):
    """A ground-truth and a predicted map (ids), their segments_info; predictions of one category may number
    more than 100 (one-pixel segments), scores drawn from a few values so ties are common."""
    height, width = (40, 48) if crowded else tuple(int(v) for v in rng.integers(12, 130, size=2))
    gt_ids = np.zeros((height, width), np.uint32)
    gt_segments = []
    for number in range(1, int(rng.integers(0, 7)) + 1):  # boxes of random size: small, medium and large areas
        top, left = rng.integers(0, height), rng.integers(0, width)
        gt_ids[top:top + rng.integers(1, height), left:left + rng.integers(1, width)] = number
    for number in np.unique(gt_ids)[1:]:
        category = int(rng.choice([1, 2, 3, 9]))
        gt_segments.append({"id": int(number), "category_id": category, "iscrowd": int(rng.random() < 0.15),
                            "area": int((gt_ids == number).sum())})
    pred_ids = np.where(rng.random(gt_ids.shape) < 0.85, gt_ids, 0).astype(np.uint32)
    pred_ids = np.roll(pred_ids, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
    if crowded:  # 120 one-pixel people on the last rows, beyond COCOeval's 100 per image and category
        flat = pred_ids.reshape(-1)
        flat[-120:] = np.arange(1000, 1120)
    pred_segments = []
    for number in np.unique(pred_ids)[1:]:
        category = int(rng.choice([1, 2, 3])) if number < 1000 else 1
        pred_segments.append({"id": int(number), "category_id": category, "score": float(rng.integers(1, 6)) / 5})
    return gt_ids, gt_segments, pred_ids, pred_segments


def corpus(n: int = 500, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [synthetic_image(rng, crowded=index % 50 == 7) for index in range(n)]


def reference(images) -> COCOeval:
    """COCOeval run directly on every image's masks (loadRes, as a user of pycocotools would)."""
    things = {c.id for c in CATEGORIES if c.isthing}
    coco_images, annotations, results = [], [], []
    for rank, (gt_ids, gt_segments, pred_ids, pred_segments) in enumerate(images):
        coco_images.append({"id": rank, "height": gt_ids.shape[0], "width": gt_ids.shape[1]})
        for s in gt_segments:
            if s["category_id"] in things:
                rle = mask_utils.encode(np.asfortranarray((gt_ids == s["id"]).astype(np.uint8)))
                annotations.append({"id": len(annotations) + 1, "image_id": rank, "category_id": s["category_id"],
                                    "iscrowd": s["iscrowd"], "area": s["area"], "segmentation": rle,
                                    "bbox": mask_utils.toBbox(rle).tolist()})
        for s in pred_segments:
            rle = mask_utils.encode(np.asfortranarray((pred_ids == s["id"]).astype(np.uint8)))
            results.append({"image_id": rank, "category_id": s["category_id"], "segmentation": rle,
                            "score": s["score"]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": coco_images, "annotations": annotations,
                      "categories": [{"id": c} for c in sorted(things)]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="segm")
        evaluator.params.imgIds = list(range(len(images)))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.fixture(scope="module")
def images():
    return corpus()


@pytest.fixture(scope="module")
def evaluator(images):
    return reference(images)


def partial_of(images, shards: int = 7) -> InstancePartial:
    """Per-image partials summed shard by shard (in shard order), through JSON as the reduce reads them."""
    total = InstancePartial()
    for shard in np.array_split(np.arange(len(images)), shards):
        part = InstancePartial()
        for rank in shard:
            part += image_instances(int(rank), *images[rank], CATEGORIES)
        total += InstancePartial.from_json(json.loads(json.dumps(part.to_json())))
    return total


def test_the_corpus_exercises_crowds_ties_and_the_100_detection_cap(images):
    detections = [len(pred) for _, _, _, pred in images]
    assert max(detections) > 100 and len(images) >= 500
    assert any(s["iscrowd"] for _, gt, _, _ in images for s in gt)
    scores = [s["score"] for _, _, _, pred in images for s in pred]
    assert len(set(scores)) <= 5 < len(scores)


def test_precision_recall_and_summary_equal_cocoeval_bit_for_bit(images, evaluator):
    partial = partial_of(images)
    precision, recall = accumulate(partial, [c.id for c in CATEGORIES if c.isthing])
    assert np.array_equal(precision, evaluator.eval["precision"])
    assert np.array_equal(recall, evaluator.eval["recall"])
    scores = instance_scores(partial, CATEGORIES)
    assert [scores[name] for name in SUMMARY_NAMES] == [float(v) for v in evaluator.stats]
    assert 0 < scores["AP"] < 1 and scores["images"] == len(images)


def test_shard_order_and_grouping_do_not_change_the_numbers(images):
    expected = instance_scores(partial_of(images, shards=1), CATEGORIES)
    reordered = InstancePartial()
    for shard in reversed(np.array_split(np.arange(len(images)), 11)):  # later images first
        for rank in shard:
            reordered += image_instances(int(rank), *images[rank], CATEGORIES)
    assert instance_scores(reordered, CATEGORIES) == expected


def test_a_first_version_partial_with_rle_masks_reads_as_the_same_numbers(images):
    subset = images[:60]
    things = {c.id for c in CATEGORIES if c.isthing}
    document = {"version": 1, "images": [], "gt": [], "dt": []}
    for rank, (gt_ids, gt_segments, pred_ids, pred_segments) in enumerate(subset):
        document["images"].append({"rank": rank, "height": gt_ids.shape[0], "width": gt_ids.shape[1]})
        gt_things = [s for s in gt_segments if s["category_id"] in things]
        for s, counts in zip(gt_things, rle_counts(gt_ids, [s["id"] for s in gt_things])):
            document["gt"].append({"rank": rank, "category_id": s["category_id"], "iscrowd": s["iscrowd"],
                                   "area": s["area"], "counts": counts})
        for s, counts in zip(pred_segments, rle_counts(pred_ids, [s["id"] for s in pred_segments])):
            document["dt"].append({"rank": rank, "category_id": s["category_id"], "score": s["score"],
                                   "counts": counts})
    old = instance_scores(InstancePartial.from_json(document), CATEGORIES)
    assert old == instance_scores(partial_of(subset, shards=1), CATEGORIES)
    assert [old[name] for name in SUMMARY_NAMES] == [float(v) for v in reference(subset).stats]


def test_an_unknown_version_is_refused_by_name():
    with pytest.raises(ValueError, match="version 1 or 2, but got 7"):
        InstancePartial.from_json({"version": 7})
