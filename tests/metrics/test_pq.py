"""Panoptic Quality: golden numbers from panopticapi, hand-built rules, merge properties and input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.categories import Categories, Category
from segcore.metrics import pq
from segcore.panoptic import decode_id_map
from segcore.runtime.evaluation import EvaluationConfig, evaluate

GOLDEN = Path(__file__).parents[1] / "data" / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
CATS = Categories([Category(1, "person", True), Category(2, "car", True), Category(3, "sky", False)])


def hexed(value):
    """Floats as float.hex() strings, recursively, so comparisons are bit for bit."""
    if isinstance(value, dict):
        return {str(k): hexed(v) for k, v in value.items()}
    return float(value).hex() if isinstance(value, float) else value


@pytest.mark.parametrize("case", sorted(EXPECTED["cases"]))
def test_matches_panopticapi_bit_for_bit_on_the_coco_sample(case):
    expected = EXPECTED["cases"][case]
    paths = {k: str((GOLDEN / v).resolve()) for k, v in expected["paths"].items()}
    results = evaluate(
        EvaluationConfig(paths["gt_json"], paths["pred_json"], paths["gt_folder"], paths["pred_folder"])
    )
    got = results["pq"]
    for name in ("All", "Things", "Stuff", "per_class"):
        assert hexed(got[name]) == expected["hex"][name], name
    for category_id, stats in expected["hex"]["stats"].items():
        counts = results["per_class_counts"][int(category_id)]
        assert hexed({k: counts[k] for k in ("tp", "fp", "fn", "iou")}) == stats, category_id


def test_exact_sum_differs_from_reference_order_only_in_rounding():
    expected = EXPECTED["cases"]["mixed"]
    paths = {k: str((GOLDEN / v).resolve()) for k, v in expected["paths"].items()}
    results = evaluate(EvaluationConfig(paths["gt_json"], paths["pred_json"], paths["gt_folder"], paths["pred_folder"]))
    for counts in results["per_class_counts"].values():
        assert counts["iou_exact"] == pytest.approx(counts["iou"], rel=1e-14, abs=0)


def segments(*specs):
    """(id, category_id[, iscrowd]) tuples -> segments_info, areas filled from `ids` later."""
    return [{"id": s[0], "category_id": s[1], "iscrowd": s[2] if len(s) > 2 else 0} for s in specs]


def with_areas(ids, infos):
    for info in infos:
        info["area"] = int((ids == info["id"]).sum())
    return infos


def image(rows):
    return np.array([[int(v) for v in row.split()] for row in rows], np.uint32)


def test_iou_exactly_one_half_is_not_a_match():
    gt = image(["5 5 5 5", "0 0 0 0"])
    pred = image(["7 7 0 0", "0 0 0 0"])  # intersection 2, union 4
    pred2 = image(["7 7 7 7", "7 7 7 7"])  # intersection 4, union 8 - 4 void = 4... -> IoU 1
    part = pq.match_image(1, gt, with_areas(gt, segments((5, 1))), pred, segments((7, 1)), CATS)
    assert part.counts[1] == [0, 1, 1]
    part = pq.match_image(1, gt, with_areas(gt, segments((5, 1))), pred2, segments((7, 1)), CATS)
    assert part.counts[1] == [1, 0, 0] and part.matches == [(0, 5, 7, 1, 4, 4)]


def test_union_excludes_the_predictions_overlap_with_void_but_not_with_crowd():
    gt = image(["5 5 5 0", "9 9 9 9"])
    pred = image(["7 7 7 7", "7 7 0 0"])
    gt_info = with_areas(gt, segments((5, 1), (9, 1, 1)))
    part = pq.match_image(1, gt, gt_info, pred, segments((7, 1)), CATS)
    # intersection 3; union = 6 + 3 - 3 - 1 (void) = 5; crowd overlap (2) stays in the union.
    assert part.matches == [(0, 5, 7, 1, 3, 5)]


def test_unmatched_prediction_mostly_on_void_and_same_class_crowd_is_ignored():
    gt = image(["0 0 9 9", "1 1 1 1"])
    pred = image(["7 7 7 0", "0 0 0 0"])  # 2 void + 1 crowd of 3
    gt_info = with_areas(gt, segments((9, 2, 1), (1, 3)))
    assert pq.match_image(1, gt, gt_info, pred, segments((7, 2)), CATS).counts.get(2, [0, 0, 0]) == [0, 0, 0]
    # The same prediction labelled person: the car crowd does not count, 2/3 void still does.
    assert pq.match_image(1, gt, gt_info, pred, segments((7, 1)), CATS).counts.get(1, [0, 0, 0])[1] == 0
    pred = image(["7 7 7 7", "7 7 7 7"])  # 2 void + 2 crowd of 8: exactly 0.5 -> counted
    assert pq.match_image(1, gt, gt_info, pred, segments((7, 2)), CATS).counts[2] == [0, 1, 0]


def test_the_last_listed_crowd_of_a_category_is_the_one_used():
    gt = image(["8 8 9 9", "1 1 1 1"])
    pred = image(["7 7 0 0", "0 0 0 0"])
    first_last = with_areas(gt, segments((8, 2, 1), (9, 2, 1), (1, 3)))
    last_first = with_areas(gt, segments((9, 2, 1), (8, 2, 1), (1, 3)))
    assert pq.match_image(1, gt, first_last, pred, segments((7, 2)), CATS).counts[2] == [0, 1, 0]
    assert pq.match_image(1, gt, last_first, pred, segments((7, 2)), CATS).counts.get(2, [0, 0, 0]) == [0, 0, 0]


def test_gt_area_comes_from_the_json_and_pred_area_from_the_png():
    gt = image(["5 5 5 5"])
    pred = image(["7 7 7 0"])
    info = [{"id": 5, "category_id": 1, "iscrowd": 0, "area": 6}]  # JSON says 6, PNG has 4
    part = pq.match_image(1, gt, info, pred, [{"id": 7, "category_id": 1, "area": 99}], CATS)
    assert part.counts[1] == [0, 1, 1]  # union = 3 + 6 - 3 = 6: IoU 0.5, no match (with PNG areas: 0.75)
    info[0]["area"] = 5
    part = pq.match_image(1, gt, info, pred, [{"id": 7, "category_id": 1, "area": 1}], CATS)
    assert part.matches == [(0, 5, 7, 1, 3, 5)]


def test_a_listed_gt_id_zero_is_a_real_segment():
    gt = image(["0 0 0 0"])
    pred = image(["7 7 7 7"])
    part = pq.match_image(1, gt, [{"id": 0, "category_id": 3, "iscrowd": 0, "area": 4}], pred, segments((7, 3)), CATS)
    # Not VOID: nothing is taken off the union. (panopticapi also subtracts it as VOID, giving 4 / 0.)
    assert part.matches == [(0, 0, 7, 3, 4, 4)]
    unlisted = pq.match_image(1, gt, [], pred, segments((7, 3)), CATS)
    assert unlisted.counts == {} and unlisted.matches == []  # VOID: the prediction is ignored


@pytest.mark.parametrize(
    "gt_rows, gt_specs, pred_rows, pred_specs, message",
    [
        (["5 5"], [(5, 1)], ["7 8"], [(7, 1)], "segment id 8 is in the prediction PNG"),
        (["5 6"], [(5, 1)], ["7 7"], [(7, 1)], "segment id 6 is in the gt PNG"),
        (["5 5"], [(5, 1)], ["7 7"], [(7, 1), (8, 1)], r"prediction segment ids \[8\] are in segments_info but not in the PNG"),
        (["5 5"], [(5, 1)], ["7 7"], [(7, 42)], "unknown category_id 42"),
        (["5 5"], [(5, 42)], ["7 7"], [(7, 1)], "gt segment 5 has unknown category_id 42"),
        (["5 5"], [(5, 1)], ["7 7", "7 7"], [(7, 1)], "gt map is 2x1 but the prediction is 2x2"),
        (["5 5"], [(5, 1), (5, 2)], ["7 7"], [(7, 1)], "gt segment id 5 is listed twice in segments_info"),
    ],
)
def test_input_errors_name_the_image_and_the_id(gt_rows, gt_specs, pred_rows, pred_specs, message):
    gt, pred = image(gt_rows), image(pred_rows)
    with pytest.raises(pq.PQInputError, match=f"Image img-9: .*{message}"):
        pq.match_image("img-9", gt, with_areas(gt, segments(*gt_specs)), pred, segments(*pred_specs), CATS)


def test_listed_gt_segments_absent_from_the_png_are_malformed_ground_truth():
    gt, pred = image(["5 5"]), image(["7 7"])
    listed = [*with_areas(gt, segments((5, 1))), *({**info, "area": 3} for info in segments((6, 1), (9, 2)))]
    with pytest.raises(pq.PQInputError, match=r"Image img-9: 2 gt segments .* not in the gt PNG \(ids 6, 9\)"):
        pq.match_image("img-9", gt, listed, pred, with_areas(pred, segments((7, 1))), CATS)


# --- properties -------------------------------------------------------------------------------------------------

@st.composite
def image_pairs(draw):
    """A random gt/pred pair on a small grid: blocky maps with void, crowd and mislabels."""
    height, width = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    gt_labels = rng.integers(0, 5, (height, width)).repeat(1, 0)
    gt = np.where(gt_labels == 0, 0, gt_labels * 1000 + 17).astype(np.uint32)
    pred = gt.copy()
    noise = rng.random((height, width)) < draw(st.floats(0, 0.6))
    pred[noise] = rng.integers(1, 5, noise.sum()) * 1000 + 3
    gt_info = [
        {"id": int(i), "category_id": int(rng.integers(1, 4)), "iscrowd": int(rng.random() < 0.2), "area": int((gt == i).sum())}
        for i in np.unique(gt) if i
    ]
    pred_info = [{"id": int(i), "category_id": int(rng.integers(1, 4))} for i in np.unique(pred) if i]
    return gt, gt_info, pred, pred_info


@given(st.lists(image_pairs(), min_size=1, max_size=8), st.randoms(use_true_random=False), st.integers(1, 4))
@settings(max_examples=80, deadline=None)
def test_merging_partials_in_any_order_and_grouping_gives_the_same_result(images, shuffler, groups):
    partials = [pq.match_image(i, g, gi, p, pi, CATS, image_rank=i) for i, (g, gi, p, pi) in enumerate(images)]
    in_order = pq.PQPartial()
    for part in partials:
        in_order += part
    shuffled = partials[:]
    shuffler.shuffle(shuffled)
    buckets = [pq.PQPartial() for _ in range(groups)]
    for index, part in enumerate(shuffled):
        buckets[index % groups] += part
    regrouped = sum(reversed(buckets), pq.PQPartial())
    assert hexed(pq.summarize(regrouped, CATS)) == hexed(pq.summarize(in_order, CATS))
    assert pq.PQPartial.from_json(json.loads(json.dumps(regrouped.to_json()))).counts == in_order.counts


@given(image_pairs())
@settings(max_examples=60, deadline=None)
def test_identical_maps_give_pq_one(pair):
    gt, gt_info, _, _ = pair
    if not any(s["iscrowd"] == 0 for s in gt_info):
        return
    crowd = [s["id"] for s in gt_info if s["iscrowd"]]
    pred = np.where(np.isin(gt, crowd), 0, gt).astype(np.uint32)
    pred_info = [{"id": s["id"], "category_id": s["category_id"]} for s in gt_info if not s["iscrowd"]]
    result = pq.summarize(pq.match_image(0, gt, gt_info, pred, pred_info, CATS), CATS)
    assert result["All"]["pq"] == 1.0 and result["All"]["sq"] == 1.0 and result["All"]["rq"] == 1.0


def test_coco_sample_against_itself_is_exactly_one(coco_sample, coco_gt, coco_categories):
    total = pq.PQPartial()
    for rank, ann in enumerate(coco_gt["annotations"]):
        ids = decode_id_map((coco_sample / "panoptic_examples" / ann["file_name"]).read_bytes())
        pred_info = [{"id": s["id"], "category_id": s["category_id"]} for s in ann["segments_info"]]
        total += pq.match_image(ann["image_id"], ids, ann["segments_info"], ids, pred_info, coco_categories, rank)
    result = pq.summarize(total, coco_categories)
    assert {result[k]["pq"] for k in ("All", "Things", "Stuff")} == {1.0}
    assert sum(c[2] for c in total.counts.values()) == 0


def test_summary_of_nothing_has_zero_classes():
    result = pq.summarize(pq.PQPartial(), CATS)
    assert result["All"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert set(result["per_class"]) == {1, 2, 3}
