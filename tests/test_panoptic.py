"""The panoptic format: segment statistics in one pass, segments_info, and the 2-channel form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcore import panoptic
from segcore.categories import Categories, Category

CATS = Categories([Category(1, "person", True), Category(7, "road", False), Category(9, "car", True)])


def reference_stats(ids):
    rows = []
    for value in np.unique(ids):
        ys, xs = np.nonzero(ids == value)
        rows.append((int(value), len(xs), [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]))
    return rows


@given(
    hnp.arrays(np.uint32, st.tuples(st.integers(1, 25), st.integers(1, 25)), elements=st.integers(0, 2**24 - 1))
    | hnp.arrays(np.uint32, st.tuples(st.integers(1, 25), st.integers(1, 25)), elements=st.integers(0, 3))
)
@settings(max_examples=80, deadline=None)
def test_segment_stats_equal_a_per_segment_reference(ids):
    stats = panoptic.segment_stats(ids)
    got = list(zip(stats["id"].tolist(), stats["area"].tolist(), stats["bbox"].tolist()))
    assert got == [(i, a, [int(v) for v in b]) for i, a, b in reference_stats(ids)]


def test_segment_stats_grow_past_many_segments():
    ids = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100) * 7
    stats = panoptic.segment_stats(ids)
    assert len(stats["id"]) == 10000 and (stats["area"] == 1).all()


def test_segment_stats_on_the_coco_sample_equal_the_json(coco_sample, coco_gt):
    for ann in coco_gt["annotations"]:
        ids = panoptic.decode_id_map((coco_sample / "panoptic_examples" / ann["file_name"]).read_bytes())
        stats = panoptic.segment_stats(ids)
        found = {i: (a, b) for i, a, b in zip(stats["id"].tolist(), stats["area"].tolist(), stats["bbox"].tolist())}
        for segment in ann["segments_info"]:
            assert found[segment["id"]] == (segment["area"], segment["bbox"]), segment["id"]


def test_segment_stats_reject_bad_input():
    with pytest.raises(ValueError, match="Expected"):
        panoptic.segment_stats(np.zeros((2, 2, 3), np.uint32))
    with pytest.raises(ValueError, match="non-negative"):
        panoptic.segment_stats(np.full((2, 2), -1))


def test_segments_from_id_map_lists_every_segment_but_void():
    ids = np.array([[0, 5, 5], [8, 8, 0]], np.uint32)
    segments = panoptic.segments_from_id_map(ids, {5: 1, 8: 7}, CATS, scores={5: 0.9, 8: 1.0})
    assert segments == [
        {"id": 5, "category_id": 1, "iscrowd": 0, "isthing": True, "area": 2, "bbox": [1, 0, 2, 1], "score": 0.9},
        {"id": 8, "category_id": 7, "iscrowd": 0, "isthing": False, "area": 2, "bbox": [0, 1, 2, 1], "score": 1.0},
    ]
    with pytest.raises(KeyError, match="Segment id 8"):
        panoptic.segments_from_id_map(ids, {5: 1}, CATS)


def test_encode_decode_id_map_round_trip(coco_sample):
    data = (coco_sample / "panoptic_examples" / "000000142238.png").read_bytes()
    ids = panoptic.decode_id_map(data)
    assert ids.shape == (427, 640) and ids.dtype == np.uint32
    np.testing.assert_array_equal(panoptic.decode_id_map(panoptic.encode_id_map(ids)), ids)


def test_two_channel_form_becomes_segments():
    label = np.array([[1 * 1000 + 1, 1 * 1000 + 2, 7 * 1000 + 3], [7 * 1000 + 4, 0, 9 * 1000 + 1]])
    category, instance = panoptic.split_label_divisor(label, 1000)
    np.testing.assert_array_equal(category, [[1, 1, 7], [7, 0, 9]])
    ids, segments = panoptic.id_map_from_category_instance(category, instance, CATS)
    # Two person instances, one road (its instance numbers ignored: stuff), one car; category 0 is VOID.
    assert [(s["category_id"], s["area"]) for s in segments] == [(1, 1), (1, 1), (7, 2), (9, 1)]
    assert ids[1, 1] == 0 and ids[0, 2] == ids[1, 0] and ids[0, 0] != ids[0, 1]


def test_two_channel_form_rejects_unknown_categories():
    with pytest.raises(ValueError, match=r"unknown ids \[4\]"):
        panoptic.id_map_from_category_instance(np.array([[4]]), np.array([[0]]), CATS)
    with pytest.raises(ValueError, match="label_divisor"):
        panoptic.split_label_divisor(np.zeros((1, 1)), 0)
