"""The semantic view: confusion matrices from panoptic maps, scores equal to hand-computed values, merged partials
equal to the whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.categories import Categories, Category
from segcore.metrics.semantic import Confusion, format_scores, semantic_scores

CATS = Categories([Category(1, "person", True), Category(2, "car", True), Category(3, "sky", False)])


def test_hand_built_maps_give_hand_computed_scores():
    # gt: 2 person instances (ids 1, 2), sky (3), one VOID pixel (0); prediction: one person, a car, sky, a VOID pixel
    gt = np.array([[1, 1, 2, 2],
                   [3, 3, 3, 0]], np.uint32)
    gt_segments = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 1}, {"id": 3, "category_id": 3}]
    pred = np.array([[7, 7, 7, 8],
                     [9, 9, 0, 9]], np.uint32)
    pred_segments = [{"id": 7, "category_id": 1}, {"id": 8, "category_id": 2}, {"id": 9, "category_id": 3}]
    confusion = Confusion.for_categories(CATS)
    confusion.add_image(gt, gt_segments, pred, pred_segments)
    # rows gt (person, car, sky, VOID), columns prediction
    expected = np.array([[3, 1, 0, 0],
                         [0, 0, 0, 0],
                         [0, 0, 2, 1],
                         [0, 0, 1, 0]])
    assert np.array_equal(confusion.matrix, expected)
    scores = semantic_scores(confusion, CATS)
    # person: tp 3, gt 4, pred 3 -> IoU 3/4; sky: tp 2, gt 3 (one predicted VOID), pred 2 -> IoU 2/3; car absent
    assert scores["per_class"][1]["iou"] == pytest.approx(3 / 4)
    assert scores["per_class"][3]["iou"] == pytest.approx(2 / 3)
    assert scores["per_class"][2]["iou"] is None and scores["classes"] == 2
    assert scores["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 7)
    assert scores["mean_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert scores["fwiou"] == pytest.approx(4 / 7 * 3 / 4 + 3 / 7 * 2 / 3)
    assert scores["predicted_void_pixels"] == 1 and scores["pixels"] == 7
    assert "| person | 75.0 | 75.0 |" in format_scores(scores)


def test_an_unknown_category_and_a_size_mismatch_are_named():
    confusion = Confusion.for_categories(CATS)
    ids = np.ones((2, 2), np.uint32)
    with pytest.raises(ValueError, match="img7 \\(prediction\\): segment 1 has unknown category_id 99"):
        confusion.add_image(ids, [{"id": 1, "category_id": 1}], ids, [{"id": 1, "category_id": 99}], "img7")
    with pytest.raises(ValueError, match="differ in size"):
        confusion.add_image(ids, [], np.ones((3, 2), np.uint32), [], "img8")




@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=6), st.integers(0, 6))
def test_merged_partials_equal_the_whole_and_survive_json(seeds, cut):
    def image(seed: int):
        rng = np.random.default_rng(seed)
        gt, pred = rng.integers(0, 4, (5, 6)).astype(np.uint32), rng.integers(0, 5, (5, 6)).astype(np.uint32)
        gt_segments = [{"id": i, "category_id": int(rng.integers(1, 4))} for i in range(1, 4)]
        pred_segments = [{"id": i, "category_id": int(rng.integers(1, 4))} for i in range(1, 5)]
        return gt, gt_segments, pred, pred_segments

    whole, first, second = (Confusion.for_categories(CATS) for _ in range(3))
    for index, seed in enumerate(seeds):
        whole.add_image(*image(seed))
        (first if index < cut else second).add_image(*image(seed))
    first += Confusion.from_json(json.loads(json.dumps(second.to_json())))
    assert np.array_equal(first.matrix, whole.matrix)
    assert semantic_scores(first, CATS) == semantic_scores(whole, CATS)


@pytest.mark.parametrize("seed", range(6))
def test_the_confusion_from_the_pq_matchs_histogram_equals_the_one_from_the_maps(seed):
    from test_extras import CATEGORIES, random_pair

    from segcore.metrics.pq import match_image_details

    gt, gt_segments, pred, pred_segments = random_pair(np.random.default_rng(seed))
    from_maps = Confusion.for_categories(CATEGORIES)
    from_maps.add_image(gt, gt_segments, pred, pred_segments)
    match = match_image_details("r", gt, gt_segments, pred, pred_segments, CATEGORIES)
    from_pairs = Confusion.for_categories(CATEGORIES)
    from_pairs.add_pairs(match.counts, np.where(match.gt.listed, match.gt.category, -1),
                         np.where(match.pred.listed, match.pred.category, -1))
    assert from_maps.matrix.sum() == gt.size and np.array_equal(from_pairs.matrix, from_maps.matrix)
