"""Corpus evaluation: same result in process and on Ray with any worker count; errors name image and file."""

from __future__ import annotations

import json
import shutil

import pytest

from segcore.metrics.pq import PQInputError
from segcore.runtime.evaluation import EvaluationConfig, chunk, evaluate, pair_annotations


def test_chunks_are_contiguous_and_cover_everything():
    items = list(range(10))
    for count in (1, 3, 4, 10, 12):
        parts = chunk(items, count)
        assert [x for part in parts for x in part] == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_ray_workers_give_identical_results_for_every_count(synthetic_corpus, local_ray):
    config = EvaluationConfig(str(synthetic_corpus.gt_json), str(synthetic_corpus.pred_json))
    local = evaluate(config)
    assert local["images"] == 24 and 0 < local["pq"]["All"]["pq"] < 1
    for workers in (1, 2, 3):
        on_ray = evaluate(EvaluationConfig(config.gt_json, config.pred_json, workers=workers))
        assert json.dumps(on_ray, sort_keys=True) == json.dumps(local, sort_keys=True)


def test_folders_default_to_the_json_path_without_extension():
    config = EvaluationConfig("s3://bucket/panoptic_val2017.json", "preds.json")
    assert (config.gt_folder, config.pred_folder) == ("s3://bucket/panoptic_val2017", "preds")
    assert EvaluationConfig("a.json", "b.json", gt_dir="x", pred_dir="y").gt_folder == "x"


def test_bad_configuration_fails_before_any_work():
    with pytest.raises(ValueError, match="workers"):
        EvaluationConfig("a.json", "b.json", workers=-1)
    with pytest.raises(ValueError, match="gt_json"):
        EvaluationConfig("", "b.json")


def make_prediction(coco_copy, drop_image=None):
    """Ground truth copied as predictions (gt.json -> pred.json, gt/ -> pred/)."""
    document = json.loads((coco_copy / "gt.json").read_text())
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] != drop_image]
    (coco_copy / "pred.json").write_text(json.dumps(document))
    shutil.copytree(coco_copy / "gt", coco_copy / "pred")
    return EvaluationConfig(str(coco_copy / "gt.json"), str(coco_copy / "pred.json"))


def test_gt_as_prediction_scores_one(coco_copy):
    results = evaluate(make_prediction(coco_copy))
    assert results["pq"]["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 8}


def test_a_missing_prediction_names_the_image(coco_copy):
    with pytest.raises(ValueError, match="Image 439180: no prediction"):
        evaluate(make_prediction(coco_copy, drop_image=439180))


def test_a_missing_png_names_the_image_and_file(coco_copy):
    config = make_prediction(coco_copy)
    (coco_copy / "pred" / "000000439180.png").unlink()
    with pytest.raises(PQInputError, match="Image 439180: prediction PNG .*000000439180.png does not exist"):
        evaluate(config)


def test_an_unreadable_png_names_the_image_and_file(coco_copy):
    config = make_prediction(coco_copy)
    (coco_copy / "pred" / "000000142238.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(PQInputError, match="Image 142238: prediction PNG .*000000142238.png is unreadable"):
        evaluate(config)


def test_gt_png_of_the_wrong_size_names_the_image(coco_copy):
    config = make_prediction(coco_copy)
    document = json.loads((coco_copy / "gt.json").read_text())
    document["images"][0]["height"] += 1
    (coco_copy / "gt.json").write_text(json.dumps(document))
    with pytest.raises(PQInputError, match="Image 142238: gt PNG is 640x427 but the images list says 640x428"):
        evaluate(config)


def test_pairs_follow_gt_order(coco_gt):
    reversed_pred = dict(coco_gt, annotations=coco_gt["annotations"][::-1])
    pairs = pair_annotations(coco_gt, reversed_pred)
    assert [p.image_id for p in pairs] == [142238, 439180] and [p.rank for p in pairs] == [0, 1]
