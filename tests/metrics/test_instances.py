"""The instance view: RLEs from one pass over a map equal pycocotools' own encoding; mask AP from the partials
equals COCOeval run directly on the same masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segcore.metrics.instances import InstancePartial, image_instances, instance_scores, rle_counts
from segcore.png import decode_ids


def encoded(id_map: np.ndarray, segment_id: int) -> str:
    return mask_utils.encode(np.asfortranarray((id_map == segment_id).astype(np.uint8)))["counts"].decode()


@pytest.mark.parametrize("seed", range(8))
def test_rle_counts_equal_pycocotools_encode(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 40, size=2)
    id_map = rng.integers(0, 5, size=(height, width)).astype(np.uint32)
    if seed % 2:
        id_map = np.kron(id_map, np.ones((3, 2), np.uint32))  # long runs, across columns
    ids = [0, 1, 2, 3, 4, 77]  # 77: absent, an empty mask
    assert rle_counts(id_map, ids) == [encoded(id_map, i) for i in ids]


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (1, 1), (6, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint32])
def test_rle_counts_of_thin_maps_and_runs_across_columns(shape, dtype):
    id_map = np.zeros(shape, dtype)
    flat = id_map.reshape(-1, order="F")  # column-major view
    flat[2:5] = 3  # crosses from one column's bottom to the next one's top where the height is small
    flat[-1] = 4
    id_map = np.asarray(flat.reshape(shape, order="F"), dtype)
    ids = [0, 3, 4, 9]
    assert rle_counts(id_map, ids) == [encoded(id_map, i) for i in ids]


def test_rle_counts_of_whole_and_single_pixel_masks():
    full = np.full((4, 3), 9, np.uint32)
    assert rle_counts(full, [9, 1]) == [encoded(full, 9), encoded(full, 1)]
    single = np.zeros((5, 5), np.uint32)
    single[4, 4] = 2
    assert rle_counts(single, [2]) == [encoded(single, 2)]
    assert rle_counts(single, []) == []


def test_ap_of_the_coco_sample_against_itself_is_one(coco_sample, coco_gt, coco_categories):
    partial = InstancePartial()
    for rank, annotation in enumerate(coco_gt["annotations"]):
        ids = decode_ids((coco_sample / "panoptic_examples" / annotation["file_name"]).read_bytes())
        predictions = [dict(s, score=1.0) for s in annotation["segments_info"] if not s["iscrowd"]]
        partial += image_instances(rank, ids, annotation["segments_info"], ids, predictions, coco_categories)
    scores = instance_scores(InstancePartial.from_json(json.loads(json.dumps(partial.to_json()))), coco_categories)
    assert scores["AP"] == 1.0 and scores["AP50"] == 1.0 and scores["AP75"] == 1.0
    things = {c.id for c in coco_categories if c.isthing}
    listed = [s for a in coco_gt["annotations"] for s in a["segments_info"] if s["category_id"] in things]
    crowds = sum(s["iscrowd"] for s in listed)
    assert crowds > 0  # the sample's crowd regions are ground truth that COCOeval ignores, not counts
    assert sum(counts[0] for counts in partial.gt.values()) == len(listed) - crowds
    present = {s["category_id"] for a in coco_gt["annotations"] for s in a["segments_info"] if not s["iscrowd"]}
    assert {k for k, v in scores["per_class"].items() if v != -1} == present & {c.id for c in coco_categories
                                                                                if c.isthing}
    assert all(v == pytest.approx(1.0) for k, v in scores["per_class"].items() if k in present)


def test_ap_with_perturbed_predictions_equals_cocoeval_on_the_same_masks(coco_sample, coco_gt, coco_categories):
    rng = np.random.default_rng(5)
    things = {c.id for c in coco_categories if c.isthing}
    partial = InstancePartial()
    gt_annotations, results, images = [], [], []
    for rank, annotation in enumerate(coco_gt["annotations"]):
        gt_ids = decode_ids((coco_sample / "panoptic_examples" / annotation["file_name"]).read_bytes())
        pred_ids = np.roll(gt_ids, 3, axis=1)  # every prediction shifted: IoUs below 1
        pred_ids[rng.random(pred_ids.shape) < 0.1] = 0
        segments = [s for s in annotation["segments_info"] if not s["iscrowd"]][1:]  # one missed
        predictions = [dict(s, score=float(rng.random())) for s in segments]
        partial += image_instances(rank, gt_ids, annotation["segments_info"], pred_ids, predictions,
                                   coco_categories)
        height, width = gt_ids.shape
        images.append({"id": rank, "height": height, "width": width})
        for s in annotation["segments_info"]:
            if s["category_id"] in things:
                rle = mask_utils.encode(np.asfortranarray((gt_ids == s["id"]).astype(np.uint8)))
                gt_annotations.append({"id": len(gt_annotations) + 1, "image_id": rank, "iscrowd": s["iscrowd"],
                                       "category_id": s["category_id"], "area": s["area"], "segmentation": rle,
                                       "bbox": list(s["bbox"])})
        for s in predictions:
            if s["category_id"] in things:
                rle = mask_utils.encode(np.asfortranarray((pred_ids == s["id"]).astype(np.uint8)))
                results.append({"image_id": rank, "category_id": s["category_id"], "segmentation": rle,
                                "score": s["score"]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": gt_annotations,
                  "categories": [{"id": c} for c in sorted(things)]}
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(results), iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    scores = instance_scores(partial, coco_categories)
    assert 0 < scores["AP"] < 1
    assert [scores[name] for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")] == list(evaluator.stats[:6])
    assert scores["AR100"] == evaluator.stats[8]


def test_adding_many_shards_keeps_every_record_in_order():
    """Chunks are joined into blocks as shards are added (more than one block's worth here)."""
    from segcore.metrics.instances import DETECTION_FIELDS

    rng = np.random.default_rng(2)
    parts = []
    for rank in range(700):
        n = int(rng.integers(0, 4))  # some shards without detections
        dt = {"category_id": rng.integers(1, 4, n), "rank": np.full(n, rank), "order": np.arange(n),
              "score": rng.random(n), "matched": rng.integers(0, 2**40, n, dtype=np.uint64),
              "ignored": rng.integers(0, 2**40, n, dtype=np.uint64)}
        parts.append(InstancePartial([rank], {1: [n, 0, n, 0]}, dt))
    total = InstancePartial()
    for part in parts:
        total += part
    assert total.images.tolist() == list(range(700))
    assert total.gt[1][0] == total.detections == sum(part.detections for part in parts)
    for name in DETECTION_FIELDS:
        assert np.array_equal(total.dt[name], np.concatenate([part.dt[name] for part in parts]))
