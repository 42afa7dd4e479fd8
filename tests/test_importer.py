"""Importing COCO panoptic predictions made elsewhere: the same shards, partials and reduce as a labeling job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from segcore.io.commit import ManifestMismatch, Output, committed_shards
from segcore.importer import BAD_PREDICTION, import_coco_panoptic
from segcore.metrics.instances import InstancePartial, image_instances, instance_scores
from segcore.png import decode_ids, encode_ids
from segcore.runtime.evaluation import EvaluationConfig, evaluate
from segcore.runtime.verify import verify_output


def rows_of(out: Path) -> list[dict]:
    rows = []
    for shard_id in sorted(committed_shards(Output.open(str(out)))):
        rows += pq.read_table(out / "shards" / f"{shard_id}.parquet").to_pylist()
    return rows


def perturbed_predictions(coco_sample: Path, coco_gt: dict, dest: Path, seed: int = 3) -> Path:
    """Predictions made from the ground truth: shifted maps, noise to VOID, one segment dropped per image,
    one thing relabelled, random scores; written as pred.json + pred/."""
    rng = np.random.default_rng(seed)
    (dest / "pred").mkdir(parents=True)
    annotations = []
    for annotation in coco_gt["annotations"]:
        ids = decode_ids((coco_sample / "panoptic_examples" / annotation["file_name"]).read_bytes())
        ids = np.roll(ids, 4, axis=0)
        ids[rng.random(ids.shape) < 0.08] = 0
        kept = [s for s in annotation["segments_info"] if not s["iscrowd"]]
        dropped = kept.pop(int(rng.integers(len(kept))))
        ids[ids == dropped["id"]] = 0
        for s in annotation["segments_info"]:
            if s["iscrowd"]:
                ids[ids == s["id"]] = 0
        segments = [{"id": s["id"], "category_id": s["category_id"], "score": round(float(rng.random()), 4)}
                    for s in kept]
        things = [s for s in segments if s["category_id"] <= 80]
        things[0]["category_id"] = 1 if things[0]["category_id"] != 1 else 2  # mislabelled
        present = set(np.unique(ids).tolist())
        segments = [s for s in segments if s["id"] in present]
        (dest / "pred" / annotation["file_name"]).write_bytes(encode_ids(ids))
        annotations.append({"image_id": annotation["image_id"], "file_name": annotation["file_name"],
                            "segments_info": segments})
    document = {"images": coco_gt["images"], "annotations": annotations, "categories": coco_gt["categories"]}
    (dest / "pred.json").write_text(json.dumps(document))
    return dest / "pred.json"


def test_ground_truth_imported_as_predictions_scores_one_in_every_view(coco_sample, tmp_path):
    gt = coco_sample / "panoptic_examples.json"
    summary = import_coco_panoptic(str(gt), str(tmp_path / "out"), pred_dir=str(coco_sample / "panoptic_examples"),
                                   gt=str(gt))
    metrics = summary.metrics
    assert (summary.images, summary.errors, metrics["images"]) == (2, 0, 2)
    assert metrics["pq"]["All"]["pq"] == 1.0 and metrics["semantic"]["miou"] == 1.0
    assert metrics["instances"]["AP"] == 1.0 and metrics["category_confusion"] == []
    assert all(r["pq"] == 1.0 for r in metrics["per_image"]["worst"])
    assert not verify_output(str(tmp_path / "out")).problems


def test_perturbed_predictions_give_the_standalone_pq_and_cocoevals_ap(coco_sample, coco_gt, coco_categories, tmp_path):
    pred_json = perturbed_predictions(coco_sample, coco_gt, tmp_path)
    gt = coco_sample / "panoptic_examples.json"
    summary = import_coco_panoptic(str(pred_json), str(tmp_path / "out"), gt=str(gt), images_per_shard=1)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary.shards == 2 and metrics["images"] == 2
    standalone = evaluate(EvaluationConfig(gt_json=str(gt), pred_json=str(pred_json)))
    for key in ("pq", "pq_exact", "per_class_counts", "images"):
        assert json.loads(json.dumps(standalone[key])) == metrics[key], key
    assert sum(r["count"] for r in metrics["category_confusion"]) >= 1  # the relabelled things
    # AP: pycocotools on the same masks, built here from the PNGs directly
    prediction = json.loads(pred_json.read_text())
    direct = InstancePartial()
    for rank, (g, p) in enumerate(zip(coco_gt["annotations"], prediction["annotations"])):
        gt_ids = decode_ids((coco_sample / "panoptic_examples" / g["file_name"]).read_bytes())
        pred_ids = decode_ids((tmp_path / "pred" / p["file_name"]).read_bytes())
        direct += image_instances(rank, gt_ids, g["segments_info"], pred_ids, p["segments_info"], coco_categories)
    expected = json.loads(json.dumps(instance_scores(direct, coco_categories)))
    assert 0 < metrics["instances"]["AP"] < 1 and metrics["instances"] == expected
    assert not verify_output(str(tmp_path / "out")).problems


def test_bad_predictions_become_rows_and_the_rest_is_imported(coco_sample, coco_gt, tmp_path):
    pred_json = perturbed_predictions(coco_sample, coco_gt, tmp_path)
    document = json.loads(pred_json.read_text())
    first, second = document["annotations"]
    faults = {
        "missing": dict(first, file_name="missing.png"),
        "unlisted": dict(first, file_name="unlisted.png", segments_info=first["segments_info"][1:]),
        "unknown_category": dict(first, file_name="unknown_category.png",
                                 segments_info=[dict(first["segments_info"][0], category_id=999),
                                                *first["segments_info"][1:]]),
        "absent_id": dict(first, file_name="absent_id.png",
                          segments_info=[*first["segments_info"], {"id": 123456789, "category_id": 1}]),
    }
    for name, annotation in faults.items():
        if name != "missing":
            shutil.copy(tmp_path / "pred" / first["file_name"], tmp_path / "pred" / f"{name}.png")
        document["annotations"].append(annotation)
    pred_json.write_text(json.dumps(document))
    summary = import_coco_panoptic(str(pred_json), str(tmp_path / "out"), images_per_shard=4)
    assert (summary.images, summary.errors, summary.shards) == (6, 4, 2)
    rows = {row["image_id"]: row for row in rows_of(tmp_path / "out")}
    for name, needle in (("missing", "does not exist"), ("unlisted", "not in segments_info"),
                         ("unknown_category", "unknown category_id 999"), ("absent_id", "123456789")):
        assert rows[name]["status"] == BAD_PREDICTION and needle in rows[name]["error"], name
        assert f"{name}.png" in rows[name]["error"]
    assert rows[second["file_name"][:-4]]["status"] == "ok"
    errors = [json.loads(line) for path in sorted((tmp_path / "out" / "errors").iterdir())
              for line in path.read_text().splitlines()]
    assert sorted(e["image_id"] for e in errors) == sorted(faults)
    assert "pq" not in summary.metrics and summary.metrics["stats"]["images"] == 6  # no ground truth: statistics


def test_an_import_resumes_and_refuses_another_jobs_output(coco_sample, coco_gt, tmp_path):
    pred_json = perturbed_predictions(coco_sample, coco_gt, tmp_path)
    out = tmp_path / "out"
    first = import_coco_panoptic(str(pred_json), str(out), images_per_shard=1)
    marker = out / "_done" / "import-00000"
    (out / "_done" / "import-00001").unlink()
    stamp = marker.stat().st_mtime_ns
    again = import_coco_panoptic(str(pred_json), str(out), images_per_shard=1)
    assert (first.shards, again.shards, again.skipped) == (2, 1, 1)
    assert marker.stat().st_mtime_ns == stamp
    with pytest.raises(ManifestMismatch):
        import_coco_panoptic(str(pred_json), str(out), images_per_shard=2)
    with pytest.raises(ValueError, match="categories"):
        document = json.loads(pred_json.read_text())
        del document["categories"]
        (tmp_path / "nocat.json").write_text(json.dumps(document))
        import_coco_panoptic(str(tmp_path / "nocat.json"), str(tmp_path / "other"), pred_dir=str(tmp_path / "pred"))


def test_the_cli_imports_and_refuses_mixed_or_bad_requests(coco_sample, coco_gt, tmp_path, capsys):
    from jobs import export

    pred_json = perturbed_predictions(coco_sample, coco_gt, tmp_path)
    gt = str(coco_sample / "panoptic_examples.json")
    out = str(tmp_path / "out")
    assert export.main(["--import-coco-json", str(pred_json), "--output", out, "--gt", gt]) == 0
    assert "imported 2 images into 1 shards" in capsys.readouterr().out
    assert export.main(["--import-coco-json", str(pred_json), "--output", out, "--images-per-shard", "1"]) == 2
    assert "differ" in capsys.readouterr().err  # another job's output: refused, nothing lost
    assert export.main(["--import-coco-json", str(tmp_path / "none.json"), "--output", str(tmp_path / "o2")]) == 2
    assert "none.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main(["--import-coco-json", str(pred_json), "--output", out, "--coco-json", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit):
        export.main(["--output", out, "--coco-json", str(tmp_path / "x.json"), "--gt", gt])
    assert "only with --import-coco-json" in capsys.readouterr().err


def test_a_score_that_is_not_a_number_is_a_bad_prediction_row(coco_sample, coco_gt, tmp_path):
    pred_json = perturbed_predictions(coco_sample, coco_gt, tmp_path)
    document = json.loads(pred_json.read_text())
    document["annotations"][0]["segments_info"][0]["score"] = "high"
    pred_json.write_text(json.dumps(document))
    summary = import_coco_panoptic(str(pred_json), str(tmp_path / "out"))
    assert (summary.images, summary.errors) == (2, 1)
    (bad,) = [r for r in rows_of(tmp_path / "out") if r["status"] != "ok"]
    assert bad["status"] == BAD_PREDICTION and "'high'" in bad["error"] and "is not a number" in bad["error"]
