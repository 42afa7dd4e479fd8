"""The labeling job end to end on local Ray (2 CPUs, 2 fake GPUs): tar shards to committed Parquet, resume, S3."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from jobs import label
from segcore.io.commit import Output, committed_shards, read_marker
from segcore.png import decode_ids
from segcore.runtime.driver import run_label_job
from segcore.runtime.labeling import LabelJobConfig
from segcore.runtime.verify import verify_output
from segcore.models.registry import ModelOptions
from segcore.synthetic import write_demo_shards


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_demo_shards(tmp_path_factory.mktemp("corpus"), n_shards=3, images_per_shard=5)


def job(corpus: str, output: str, **changes) -> LabelJobConfig:
    settings = dict(input=corpus, output=output, model="demo", model_options=ModelOptions(device="cpu"), actors=2,
                    gpus_per_actor=1, cpus_per_actor=0.5, batch_size=4, decode_threads=2, encode_threads=1)
    return LabelJobConfig(**{**settings, **changes})


def check_rows(output: Output, shard_id: str, expected_rows: int) -> None:
    frame = pd.read_parquet(output.data_path(shard_id))
    assert len(frame) == expected_rows == read_marker(output, shard_id)["rows"]
    for _, row in frame.iterrows():
        assert row["status"] == "ok"
        id_map = decode_ids(row["panoptic_png"])
        assert id_map.shape == (row["height"], row["width"])
        assert set(np.unique(id_map).tolist()) - {0} == {s["id"] for s in row["segments"]}
        for segment in row["segments"]:
            assert segment["area"] == int((id_map == segment["id"]).sum())


def test_shards_are_labelled_once_and_a_rerun_does_nothing(ray_with_gpus, corpus, tmp_path, monkeypatch):
    import segcore.runtime.driver as driver

    config = job(corpus, str(tmp_path / "labels"))
    first = run_label_job(config)
    assert first["done"] == 3 and first["failed"] == {} and first["images"] == 15
    output = Output.open(config.output)
    assert committed_shards(output) == {"corpus-00000", "corpus-00001", "corpus-00002"}
    for shard_id in committed_shards(output):
        check_rows(output, shard_id, 5)
    locked_during_reduce = []
    real_reduce = driver.reduce_job
    monkeypatch.setattr(driver, "reduce_job", lambda c: locked_during_reduce.append(
        (tmp_path / "labels" / "_lock.json").exists()) or real_reduce(c))
    again = run_label_job(config, reduce=True)
    assert again["done"] == 0 and again["skipped"] == 3 and again["claim"] == "resumed"
    assert locked_during_reduce == [True] and again["metrics"]["shards"] == 3  # no other job can start meanwhile
    assert not (tmp_path / "labels" / "_lock.json").exists()
    report = verify_output(config.output)
    assert report.problems == [] and report.images == 15


def test_max_shards_then_resume_finishes_the_rest(ray_with_gpus, corpus, tmp_path):
    config = job(corpus, str(tmp_path / "labels"), max_shards=1)
    assert run_label_job(config)["done"] == 1
    rest = run_label_job(job(corpus, str(tmp_path / "labels")))
    assert rest["done"] == 2 and rest["skipped"] == 1


def test_a_broken_shard_is_listed_as_failed_at_once_and_the_others_commit(ray_with_gpus, tmp_path, caplog):
    folder = tmp_path / "mixed"
    write_demo_shards(folder, n_shards=2, images_per_shard=3)
    (folder / "corpus-00002.tar").write_bytes(b"not a tar" * 100)
    with caplog.at_level(logging.INFO, logger="segcore.runtime.driver"):
        result = run_label_job(job(str(folder / "corpus-{00000..00002}.tar"), str(tmp_path / "labels"),
                                   max_retries=2))
    assert result["done"] == 2 and list(result["failed"]) == ["corpus-00002"]
    assert "ShardError" in result["failed"]["corpus-00002"] and "corpus-00002.tar" in result["failed"]["corpus-00002"]
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if "retry" in m]  # the same bytes would fail the same way: no retry
    assert any(m.startswith("shard corpus-00002 failed (not retried") and "ShardError" in m for m in messages)
    assert committed_shards(Output.open(str(tmp_path / "labels"))) == {"corpus-00000", "corpus-00001"}


def test_s3_shards_to_s3_output(ray_with_gpus, corpus, s3_bucket):
    import s3fs

    bucket, storage_options = s3_bucket
    fs = s3fs.S3FileSystem(**storage_options)
    for shard in range(3):
        fs.put(corpus.replace("{00000..00002}", f"{shard:05d}"), f"{bucket}/in/corpus-{shard:05d}.tar")
    config = job(f"{bucket}/in/corpus-{{00000..00002}}.tar", f"{bucket}/labels", storage_options=storage_options)
    assert run_label_job(config, reduce=True)["done"] == 3
    output = Output.open(f"{bucket}/labels", storage_options)
    assert committed_shards(output) == {"corpus-00000", "corpus-00001", "corpus-00002"}
    table = pd.read_parquet(f"{bucket}/labels/shards/corpus-00001.parquet", storage_options=storage_options)
    assert len(table) == 5 and set(table["status"]) == {"ok"}
    report = verify_output(f"{bucket}/labels", storage_options)
    assert report.problems == [] and report.images == 15 and set(report.shards.values()) == {"committed"}


def test_the_cli_refuses_another_jobs_output_and_dry_runs_write_nothing(ray_with_gpus, corpus, tmp_path, capsys):
    output = str(tmp_path / "labels")
    assert label.main(["--input", corpus, "--output", output, "--dry-run"]) == 0
    assert not (tmp_path / "labels").exists()
    one_shard = ["--input", corpus, "--output", output, "--max-shards", "1", "--actors", "1",
                 "--gpus-per-actor", "0", "--cpus-per-actor", "0.5", "--device", "cpu"]
    assert label.main(one_shard) == 0
    (stats,) = (tmp_path / "labels" / "stats").glob("*.json")
    stats.write_text("{broken")  # a committed shard whose partials cannot be read: the next reduce leaves it out
    capsys.readouterr()
    assert label.main(one_shard) == 1
    error = capsys.readouterr().err
    assert "1 committed shards are left out" in error and f"stats/{stats.name}" in error
    assert label.main(["--input", corpus, "--output", output, "--score-threshold", "0.5"]) == 2
    assert "['model_options'] differ" in capsys.readouterr().err
    assert label.main(["--input", corpus, "--output", output, "--model", "hf:some/other"]) == 2
    assert "not cached and the hub does not answer" in capsys.readouterr().err
    assert label.main(["--input", corpus, "--output", output, "--model", "nonsense"]) == 2


def coco_files_from_job(corpus_folder, output: Output, shard_ids: list[str], dest):
    """The job's ground truth (from the tar shards) and predictions (from the Parquet) in COCO panoptic form."""
    import json
    import tarfile

    from segcore.synthetic import demo_categories

    (dest / "gt").mkdir(parents=True)
    (dest / "pred").mkdir()
    images, gt_annotations, pred_annotations = [], [], []
    for shard_id in shard_ids:
        with tarfile.open(corpus_folder / f"{shard_id}.tar") as archive:
            members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
        rows = pd.read_parquet(output.data_path(shard_id)).to_dict("records")
        for row in rows:
            key = row["image_id"]
            truth = json.loads(members[f"{key}.json"])
            (dest / "gt" / f"{key}.png").write_bytes(members[f"{key}.panoptic.png"])
            (dest / "pred" / f"{key}.png").write_bytes(row["panoptic_png"])
            images.append({"id": key, "file_name": f"{key}.jpg", "width": row["width"], "height": row["height"]})
            gt_annotations.append({"image_id": key, "file_name": f"{key}.png", "segments_info": truth["segments_info"]})
            segments = [{"id": int(s["id"]), "category_id": int(s["category_id"])} for s in row["segments"]]
            pred_annotations.append({"image_id": key, "file_name": f"{key}.png", "segments_info": segments})
    categories = demo_categories().to_coco()
    for name, listed in (("gt", gt_annotations), ("pred", pred_annotations)):
        (dest / f"{name}.json").write_text(json.dumps({"images": images, "annotations": listed,
                                                        "categories": categories}))
    return dest / "gt.json", dest / "pred.json"


def test_the_reduce_equals_the_standalone_evaluator_bit_for_bit(ray_with_gpus, corpus, tmp_path):
    import json
    from pathlib import Path

    from segcore.runtime.driver import reduce_job
    from segcore.runtime.evaluation import EvaluationConfig, evaluate

    config = job(corpus, str(tmp_path / "labels"))
    run_label_job(config)
    metrics = reduce_job(config)
    output = Output.open(config.output)
    assert json.loads(output.fs.cat_file(output.path("metrics.json")))["images"] == 15
    report = output.fs.cat_file(output.path("report.md")).decode()
    assert "person" in report and "15 images with ground truth" in report
    gt_json, pred_json = coco_files_from_job(Path(corpus).parent, output, sorted(committed_shards(output)),
                                             tmp_path / "coco")
    standalone = evaluate(EvaluationConfig(str(gt_json), str(pred_json)))
    assert metrics["pq"] == standalone["pq"] and metrics["pq_exact"] == standalone["pq_exact"]
    assert metrics["pq"]["All"]["pq"] > 0.6
    # the semantic view: the shards' summed confusion equals one computed from the same maps in COCO form
    from segcore.metrics.semantic import Confusion, semantic_scores
    from segcore.synthetic import demo_categories

    confusion = Confusion.for_categories(demo_categories())
    gt_document, pred_document = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    for gt, pred in zip(gt_document["annotations"], pred_document["annotations"]):
        confusion.add_image(decode_ids((gt_json.parent / "gt" / gt["file_name"]).read_bytes()), gt["segments_info"],
                            decode_ids((pred_json.parent / "pred" / pred["file_name"]).read_bytes()),
                            pred["segments_info"])
    expected = json.loads(json.dumps(semantic_scores(confusion, demo_categories())))
    assert json.loads(output.fs.cat_file(output.path("metrics.json")))["semantic"] == expected
    assert metrics["semantic"]["miou"] > 0.6 and "## Semantic segmentation" in report


def test_jobs_evaluate_reduces_an_output_alone(ray_with_gpus, corpus, tmp_path, capsys):
    import json

    from jobs import evaluate as evaluate_job
    from segcore.runtime.driver import reduce_job

    config = job(corpus, str(tmp_path / "labels"))
    run_label_job(config)
    expected = reduce_job(config)
    (tmp_path / "labels" / "metrics.json").unlink()
    assert evaluate_job.main(["--output", config.output]) == 0
    assert "All" in capsys.readouterr().out
    assert json.loads((tmp_path / "labels" / "metrics.json").read_text())["pq"]["All"] == expected["pq"]["All"]
    assert evaluate_job.main(["--output", str(tmp_path / "nothing")]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_a_second_job_on_a_running_jobs_output_is_refused(corpus, tmp_path, capsys):
    import os
    import subprocess
    import sys
    import time

    from segcore.io.lock import LOCK

    out = tmp_path / "labels"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    first = subprocess.Popen([sys.executable, "-m", "jobs.label", "--input", corpus, "--output", str(out),
                              "--actors", "1", "--gpus-per-actor", "0", "--device", "cpu"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / LOCK).exists(), "the first job never took the lock"
        assert label.main(["--input", corpus, "--output", str(out), "--overwrite"]) == 2
        assert "one is running there" in capsys.readouterr().err
        assert first.wait(timeout=300) == 0, first.stdout.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert not (out / LOCK).exists()
    assert committed_shards(Output.open(str(out))) == {"corpus-00000", "corpus-00001", "corpus-00002"}
