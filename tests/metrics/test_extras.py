"""PQ extras: by segment size, per image, mislabelled matches; on a hand-built image and on random maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcore.categories import Categories, Category
from segcore.metrics.extras import PQExtras, image_extras, pq_by_size, size_of, worst_and_best
from segcore.metrics.pq import match_image_details, summarize

PERSON, DOG, SKY = 1, 18, 187
CATEGORIES = Categories([Category(PERSON, "person", True), Category(DOG, "dog", True),
                         Category(SKY, "sky", False)])


def hand_built() -> tuple[np.ndarray, list, np.ndarray, list]:
    """100x100: sky matched exactly, a small person matched at IoU 0.8, a medium person predicted as a dog, a
    small dog predicted as a person; the rest is VOID on both sides."""
    gt = np.zeros((100, 100), np.uint32)
    gt[0:50, :] = 1
    gt[60:70, 0:10] = 2
    gt[50:90, 40:80] = 3
    gt[60:80, 10:30] = 4
    gt_segments = [{"id": 1, "category_id": SKY, "iscrowd": 0, "area": 5000},
                   {"id": 2, "category_id": PERSON, "iscrowd": 0, "area": 100},
                   {"id": 3, "category_id": PERSON, "iscrowd": 0, "area": 1600},
                   {"id": 4, "category_id": DOG, "iscrowd": 0, "area": 400}]
    pred = np.zeros((100, 100), np.uint32)
    pred[0:50, :] = 10
    pred[60:68, 0:10] = 11
    pred[50:90, 40:80] = 12
    pred[60:80, 10:30] = 13
    pred_segments = [{"id": 10, "category_id": SKY}, {"id": 11, "category_id": PERSON},
                     {"id": 12, "category_id": DOG}, {"id": 13, "category_id": PERSON}]
    return gt, gt_segments, pred, pred_segments


def test_size_buckets_follow_cocos_area_ranges():
    assert [size_of(a) for a in (1, 1023, 1024, 9215, 9216, 10 ** 7)] == [
        "small", "small", "medium", "medium", "large", "large"]


def test_a_hand_built_image_gives_hand_counted_extras():
    gt, gt_segments, pred, pred_segments = hand_built()
    match = match_image_details("img", gt, gt_segments, pred, pred_segments, CATEGORIES, image_rank=3)
    extras = image_extras(match, "img", "src#img.jpg", 3)
    assert extras.by_size == {
        "small": {PERSON: [1, 1, 0, pytest.approx(0.8)], DOG: [0, 0, 1, 0.0]},
        "medium": {SKY: [1, 0, 0, 1.0], PERSON: [0, 0, 1, 0.0], DOG: [0, 1, 0, 0.0]},
    }
    assert extras.confusion == {(PERSON, DOG): 1, (DOG, PERSON): 1}
    (record,) = extras.images
    assert (record["tp"], record["fp"], record["fn"], record["rank"]) == (2, 2, 2, 3)
    assert record["pq"] == pytest.approx((1.0 + 0.8 / 2 + 0.0) / 3)  # sky 1, person 0.8 / (1 + 1/2 + 1/2), dog 0
    by_size = pq_by_size(extras, CATEGORIES)
    assert by_size["small"]["Stuff"]["n"] == 0 and by_size["large"]["All"]["n"] == 0
    assert by_size["medium"]["All"]["pq"] == pytest.approx(1.0 / 3)  # sky 1, person 0, dog 0
    assert by_size["small"]["Things"]["pq"] == pytest.approx((0.8 / 1.5 + 0.0) / 2)  # person: tp 1, fp 1; dog: fn 1


def random_pair(rng: np.random.Generator) -> tuple[np.ndarray, list, np.ndarray, list]:
    """A blocky ground truth (some crowd, some VOID) and a prediction made from it by shifting, relabelling and
    dropping segments."""
    cells = rng.integers(0, 7, size=(6, 8))
    gt = np.kron(cells, np.ones((12, 15), np.int64)).astype(np.uint32)
    ids = [int(i) for i in np.unique(gt) if i]
    categories = [c.id for c in CATEGORIES]
    gt_segments = [{"id": i, "category_id": int(rng.choice(categories)), "iscrowd": int(rng.random() < 0.15),
                    "area": int((gt == i).sum())} for i in ids]
    pred = np.roll(gt, int(rng.integers(-6, 7)), axis=int(rng.integers(0, 2))) * 3
    pred[rng.random(pred.shape) < 0.05] = 0
    pred_ids = [int(i) for i in np.unique(pred) if i]
    pred_segments = [{"id": i, "category_id": int(rng.choice(categories))} for i in pred_ids]
    return gt, gt_segments, pred, pred_segments


@pytest.mark.parametrize("seed", range(12))
def test_extras_agree_with_the_pq_match_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    gt, gt_segments, pred, pred_segments = random_pair(rng)
    match = match_image_details("r", gt, gt_segments, pred, pred_segments, CATEGORIES)
    extras = PQExtras.from_json(json.loads(json.dumps(image_extras(match, "r", "s", 0).to_json())))
    summed: dict[int, list] = {}
    for per_class in extras.by_size.values():
        for category_id, (tp, fp, fn, _) in per_class.items():
            totals = summed.setdefault(category_id, [0, 0, 0])
            totals[0] += tp
            totals[1] += fp
            totals[2] += fn
    assert summed == {k: v for k, v in match.partial.counts.items() if any(v)}
    expected = summarize(match.partial, CATEGORIES)["All"]
    record = extras.images[0]
    if expected["n"]:
        assert record["pq"] == pytest.approx(expected["pq"]) and record["rq"] == pytest.approx(expected["rq"])
    else:
        assert record["pq"] is None
    mislabelled = sum(extras.confusion.values())
    assert mislabelled <= min(sum(v[1] for v in summed.values()), sum(v[2] for v in summed.values()))


def test_merged_extras_equal_the_whole_and_the_worst_images_come_first():
    rng = np.random.default_rng(99)
    whole, parts = PQExtras(), []
    for n in range(6):
        gt, gt_segments, pred, pred_segments = random_pair(rng)
        match = match_image_details(f"i{n}", gt, gt_segments, pred, pred_segments, CATEGORIES, n)
        part = image_extras(match, f"i{n}", "s", n)
        whole += part
        parts.append(part)
    merged = PQExtras()
    for part in reversed(parts):
        merged += PQExtras.from_json(part.to_json())
    assert merged.confusion == whole.confusion
    for size in whole.by_size:
        for category_id, values in whole.by_size[size].items():
            assert merged.by_size[size][category_id][:3] == values[:3]
            assert merged.by_size[size][category_id][3] == pytest.approx(values[3])
    worst, best = worst_and_best(merged.images, 2)
    scored = sorted(r["pq"] for r in whole.images if r["pq"] is not None)
    assert [r["pq"] for r in worst] == scored[:2] and [r["pq"] for r in best] == scored[::-1][:2]
