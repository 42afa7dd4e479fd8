"""The labeling job on a COCO panoptic dataset (the real COCO sample, ``--gt``), without ground truth (label
statistics), and with credentials that must never show up in logs or outputs. Local Ray, 2 CPUs, 2 fake GPUs."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs import evaluate as evaluate_job
from jobs import export, label
from segcore.categories import coco_panoptic_categories
from segcore.io.commit import MANIFEST, Output, committed_shards
from segcore.png import decode_ids
from segcore.synthetic import write_demo_shards
from tiny_models import save_tiny_model

SAMPLE = Path(__file__).parents[1] / "data" / "coco_panoptic_sample"
GT_JSON = SAMPLE / "panoptic_examples.json"
RUN_FLAGS = ["--actors", "2", "--gpus-per-actor", "1", "--cpus-per-actor", "0.5", "--device", "cpu",
             "--batch-size", "2"]


@pytest.fixture(scope="module")
def coco_model(tmp_path_factory) -> Path:
    """A tiny Mask2Former with random weights whose 133 labels are COCO panoptic's category names."""
    names = [c.name for c in coco_panoptic_categories()]
    return save_tiny_model("mask2former", tmp_path_factory.mktemp("models") / "coco", labels=names)


def test_a_coco_dataset_with_gt_gives_the_standalone_evaluators_metrics(ray_with_gpus, coco_model, tmp_path):
    out = tmp_path / "labels"
    code = label.main(["--input", str(SAMPLE / "input_images"), "--output", str(out), "--model", f"hf:{coco_model}",
                       "--gt", str(GT_JSON), "--score-threshold", "0", "--shard-size", "1", *RUN_FLAGS])
    assert code == 0
    output = Output.open(str(out))
    assert len(committed_shards(output)) == 2
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["ground_truth"] == {"json": str(GT_JSON), "dir": None}
    assert len(manifest["categories"]) == 133 and len(manifest["label_map"]["category_ids"]) == 133
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["truth_unevaluated"] == 0
    assert metrics["stats"]["segments"] > 0  # random weights, threshold 0: the maps are not empty
    pred_json = tmp_path / "export" / "predictions.json"
    assert export.main(["--output", str(out), "--coco-json", str(pred_json)]) == 0
    exported = json.loads(pred_json.read_text())
    assert sorted(a["image_id"] for a in exported["annotations"]) == [142238, 439180]  # the gt JSON's ids
    assert evaluate_job.main(["--gt-json", str(GT_JSON), "--gt-dir", str(SAMPLE / "panoptic_examples"),
                              "--pred-json", str(pred_json), "--out", str(tmp_path / "standalone.json")]) == 0
    standalone = json.loads((tmp_path / "standalone.json").read_text())
    for key in ("pq", "pq_exact", "per_class_counts", "images"):
        assert metrics[key] == standalone[key], key
    fp = sum(counts["fp"] for counts in metrics["per_class_counts"].values())
    fn = sum(counts["fn"] for counts in metrics["per_class_counts"].values())
    assert fn > 0 and fp > 0  # both sides of the matching were exercised
    assert {"semantic", "instances", "pq_by_size", "per_image", "category_confusion"} <= set(metrics)
    # the export imported again: the same maps and segments, and the same metrics in every view
    imported = tmp_path / "imported"
    assert export.main(["--import-coco-json", str(pred_json), "--output", str(imported), "--gt", str(GT_JSON)]) == 0
    job_rows, import_rows = table_rows(out), table_rows(imported)
    assert [r["image_id"] for r in job_rows] == [r["image_id"] for r in import_rows]
    for job_row, import_row in zip(job_rows, import_rows):
        for key in ("width", "height", "panoptic_png", "segments", "status"):
            assert job_row[key] == import_row[key], (job_row["image_id"], key)
    again = json.loads((imported / "metrics.json").read_text())
    for key in ("pq", "pq_exact", "per_class_counts", "images", "semantic", "instances", "pq_by_size",
                "category_confusion", "stats"):
        assert again[key] == metrics[key], key
    for worst_job, worst_import in zip(metrics["per_image"]["worst"], again["per_image"]["worst"]):
        assert worst_job["shard"] in {s["shard_id"] for s in manifest["shards"]}  # where the gallery finds it
        assert {**worst_job, "source": None, "shard": None} == {**worst_import, "source": None, "shard": None}


def table_rows(out: Path) -> list[dict]:
    """Every committed row of an output, in shard order."""
    output = Output.open(str(out))
    return [row for shard_id in sorted(committed_shards(output))
            for row in pq.read_table(out / "shards" / f"{shard_id}.parquet").to_pylist()]


def test_a_model_whose_labels_are_not_the_gt_categories_is_refused_at_start(tmp_path, capsys):
    model = save_tiny_model("eomt", tmp_path / "odd", labels=["person", "unicorn"])
    out = tmp_path / "labels"
    code = label.main(["--input", str(SAMPLE / "input_images"), "--output", str(out), "--model", f"hf:{model}",
                       "--gt", str(GT_JSON), *RUN_FLAGS])
    assert code == 2
    assert "'unicorn'" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written (and before Ray started)
    code = label.main(["--input", str(SAMPLE / "input_images"), "--output", str(out), "--gt-dir", str(tmp_path)])
    assert code == 2 and "`gt`" in capsys.readouterr().err
    code = label.main(["--input", str(SAMPLE / "input_images"), "--output", str(out), "--gt", str(tmp_path / "x.json")])
    assert code == 2 and "x.json" in capsys.readouterr().err


def test_without_ground_truth_the_reduce_writes_the_corpus_label_statistics(ray_with_gpus, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(SAMPLE / "input_images", images)
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "labels"
    assert label.main(["--input", str(images), "--output", str(out), "--shard-size", "2", *RUN_FLAGS]) == 0
    assert "things per image" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert "pq" not in metrics
    rows = pd.concat([pd.read_parquet(p) for p in sorted((out / "shards").glob("*.parquet"))])
    segments = [s for row in rows["segments"] if row is not None for s in row]
    stats = metrics["stats"]
    assert stats["images"] == 3 and stats["statuses"] == {"not_an_image": 1, "ok": 2}
    assert stats["segments"] == len(segments) > 0
    per_class = Counter(int(s["category_id"]) for s in segments)
    assert {int(k): v["segments"] for k, v in stats["per_class"].items() if v["segments"]} == dict(per_class)
    pixels = Counter()
    for s in segments:
        pixels[int(s["category_id"])] += int(s["area"])
    assert {int(k): v["pixels"] for k, v in stats["per_class"].items() if v["pixels"]} == dict(pixels)
    labelled = rows[rows["status"] == "ok"]
    unlabelled = sum(int((decode_ids(png) == 0).sum()) for png in labelled["panoptic_png"])
    total = int((labelled["width"] * labelled["height"]).sum())
    assert stats["pixels"] == total and stats["unlabelled_fraction"] == unlabelled / total
    assert "## Label statistics" in (out / "report.md").read_text()
    pred_json = tmp_path / "export" / "predictions.json"
    assert export.main(["--output", str(out), "--coco-json", str(pred_json)]) == 0
    assert "1 rows without a map left out" in capsys.readouterr().out
    exported = json.loads(pred_json.read_text())
    assert sorted(i["id"] for i in exported["images"]) == [142238, 439180]  # from the zero-padded keys
    for annotation in exported["annotations"]:
        ids = decode_ids((tmp_path / "export" / "predictions" / annotation["file_name"]).read_bytes())
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in annotation["segments_info"]}
    assert export.main(["--output", str(tmp_path / "nothing"), "--coco-json", str(pred_json)]) == 2


def test_credentials_never_appear_in_logs_or_outputs(ray_with_gpus, s3_server, tmp_path, caplog, capsys,
                                                     monkeypatch):
    import s3fs

    key, secret = "AKIASEGCORETESTKEY01", "never-log-this-secret-7f3a9c"
    env_secret = "environment-secret-also-never-logged-91b2"
    monkeypatch.setenv("AWS_SESSION_TOKEN", env_secret)  # credentials in the environment must not leak either
    options = {**s3_server, "key": key, "secret": secret}
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    fs.mkdir("secrets")
    corpus = write_demo_shards(tmp_path / "corpus", n_shards=2, images_per_shard=3)
    for shard in range(2):
        fs.put(corpus.replace("{00000..00001}", f"{shard:05d}"), f"secrets/in/corpus-{shard:05d}.tar")
    fs.pipe("secrets/in/corpus-00002.tar", b"not a tar")  # a failing shard: its error must not leak either
    caplog.set_level(logging.INFO)  # the level jobs.label logs at
    code = label.main(["--input", "s3://secrets/in/corpus-{00000..00002}.tar", "--output", "s3://secrets/labels",
                       "--storage-options", json.dumps(options), "--max-retries", "0", *RUN_FLAGS])
    assert code == 1  # the broken shard failed; the others committed
    captured = capsys.readouterr()
    texts = {"stdout": captured.out, "stderr": captured.err, "log": caplog.text}
    for path in fs.find("secrets/labels"):
        texts[path] = fs.cat_file(path).decode("latin-1")
    assert any(p.endswith("manifest.json") for p in texts) and any("/_done/" in p for p in texts)
    logs = Path(ray_with_gpus._private.worker._global_node.get_logs_dir_path())
    for path in logs.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    leaks = [name for name, text in texts.items() if secret in text or key in text or env_secret in text]
    assert leaks == []
    assert any("ShardWorker" in name or "worker" in name for name in texts)  # the actors' logs were read
