"""Tests for the seeded synthetic COCO-panoptic corpus generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segcore.categories import coco_panoptic_categories
from segcore.synthetic import make_image_pair, make_prediction, make_scene, write_corpus

HEIGHT, WIDTH = 96, 128
OFFSET = 256**3


@pytest.fixture(scope="module")
def categories():
    return coco_panoptic_categories()


@pytest.fixture(scope="module")
def pairs(categories):
    """Twenty small (gt_map, gt_segments, pred_map, pred_segments) tuples."""
    return [make_image_pair(7, index, HEIGHT, WIDTH, categories) for index in range(20)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, categories):
    """A written 12-image corpus (two worker processes)."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), 12, seed=5, height=HEIGHT, width=WIDTH, processes=2)


def recomputed_segments(id_map):
    """id -> (area, [x, y, w, h]) straight from the map, the slow obvious way."""
    out = {}
    for segment_id in np.unique(id_map):
        if segment_id == 0:
            continue
        ys, xs = np.nonzero(id_map == segment_id)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        out[int(segment_id)] = (int(ys.size), bbox)
    return out


def rgb_png_to_ids(path):
    """panopticapi's rgb2id on a PNG."""
    rgb = np.array(Image.open(path), dtype=np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def test_same_seed_gives_the_same_scene_and_prediction(categories):
    first = make_image_pair(3, 11, HEIGHT, WIDTH, categories)
    second = make_image_pair(3, 11, HEIGHT, WIDTH, categories)
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]
    assert np.array_equal(first[2], second[2]) and first[3] == second[3]
    other = make_image_pair(4, 11, HEIGHT, WIDTH, categories)
    assert not np.array_equal(first[0], other[0])


def test_segments_info_is_exact_for_the_map(pairs):
    for gt_map, gt_segments, pred_map, pred_segments in pairs:
        for id_map, segments in ((gt_map, gt_segments), (pred_map, pred_segments)):
            assert id_map.dtype == np.uint32
            listed = {s["id"]: (s["area"], s["bbox"]) for s in segments}
            assert len(listed) == len(segments), "duplicate segment ids"
            assert all(0 < segment_id < OFFSET for segment_id in listed)
            assert listed == recomputed_segments(id_map)


def test_crowd_void_and_both_kinds_occur(pairs, categories):
    segments = [s for _, gt_segments, _, _ in pairs for s in gt_segments]
    assert any(s["iscrowd"] == 1 for s in segments)
    assert sum((gt_map == 0).any() for gt_map, *_ in pairs) >= 5
    assert {categories.by_id(s["category_id"]).isthing for s in segments} == {True, False}
    assert all(categories.by_id(s["category_id"]).isthing for s in segments if s["iscrowd"])


def test_predictions_look_like_model_output(pairs, categories):
    for gt_map, gt_segments, pred_map, pred_segments in pairs:
        assert all(s["iscrowd"] == 0 and 0 < s["score"] <= 1 for s in pred_segments)
        assert all(s["category_id"] in categories for s in pred_segments)
        assert not np.array_equal(gt_map, pred_map)


def test_most_but_not_all_gt_segments_are_matched(categories):
    matched = total = 0
    for index in range(10):
        gt_map, gt_segments, pred_map, pred_segments = make_image_pair(1, index, 240, 320, categories)
        matched += count_matches(gt_map, gt_segments, pred_map, pred_segments)
        total += sum(1 for s in gt_segments if not s["iscrowd"])
    assert 0.5 < matched / total < 0.9


def count_matches(gt_map, gt_segments, pred_map, pred_segments):
    """Non-crowd gt segments matched at IoU > 0.5 with panopticapi's union (VOID overlap not counted)."""
    keys, counts = np.unique(gt_map.astype(np.uint64) * OFFSET + pred_map, return_counts=True)
    overlap = {(int(k) // OFFSET, int(k) % OFFSET): int(c) for k, c in zip(keys, counts)}
    gt = {s["id"]: s for s in gt_segments}
    pred = {s["id"]: s for s in pred_segments}
    matched = 0
    for (gt_id, pred_id), intersection in overlap.items():
        g, p = gt.get(gt_id), pred.get(pred_id)
        if g is None or p is None or g["iscrowd"] or g["category_id"] != p["category_id"]:
            continue
        union = g["area"] + p["area"] - intersection - overlap.get((0, pred_id), 0)
        matched += intersection / union > 0.5
    return matched


def test_make_prediction_ids_are_independent_of_gt(categories):
    gt_map, gt_segments = make_scene(np.random.default_rng(0), HEIGHT, WIDTH, categories)
    pred_map, pred_segments = make_prediction(np.random.default_rng(1), gt_map, gt_segments, categories)
    assert not {s["id"] for s in gt_segments} & {s["id"] for s in pred_segments}


def test_make_scene_rejects_a_bad_segment_range(categories):
    with pytest.raises(ValueError, match="n_segments"):
        make_scene(np.random.default_rng(0), HEIGHT, WIDTH, categories, n_segments=(5, 2))


def test_written_corpus_follows_panopticapi_rules(corpus, categories):
    for json_path, folder in ((corpus.gt_json, corpus.gt_folder), (corpus.pred_json, corpus.pred_folder)):
        document = json.loads(json_path.read_text())
        assert [c["id"] for c in document["categories"]] == categories.ids
        assert [image["id"] for image in document["images"]] == list(range(1, 13))
        for annotation in document["annotations"]:
            ids = rgb_png_to_ids(folder / annotation["file_name"])
            listed = {s["id"]: (s["area"], s["bbox"]) for s in annotation["segments_info"]}
            assert listed == recomputed_segments(ids), annotation["file_name"]
            assert all(s["category_id"] in categories for s in annotation["segments_info"])


def test_written_corpus_is_byte_identical_whatever_the_pool(corpus, tmp_path):
    serial = write_corpus(tmp_path, 12, seed=5, height=HEIGHT, width=WIDTH, processes=1)
    assert serial.gt_json.read_bytes() == corpus.gt_json.read_bytes()
    assert serial.pred_json.read_bytes() == corpus.pred_json.read_bytes()
    for folder, expected in ((serial.gt_folder, corpus.gt_folder), (serial.pred_folder, corpus.pred_folder)):
        names = sorted(p.name for p in expected.iterdir())
        assert names == sorted(p.name for p in folder.iterdir()) and len(names) == 12
        assert all((folder / name).read_bytes() == (expected / name).read_bytes() for name in names)
