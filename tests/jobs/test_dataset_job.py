"""A model trained on another dataset (ADE20K panoptic, 150 categories with ids 0..149): the job labels with that
dataset's categories, and ``--gt`` in the dataset's COCO-panoptic form evaluates it. Local Ray, 2 fake GPUs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs import label, verify
from segcore.categories import dataset_categories
from segcore.models.registry import ModelOptions
from segcore.runtime.driver import reduce_job, run_label_job
from segcore.runtime.labeling import LabelJobConfig
from tiny_models import save_tiny_model

SAMPLE = Path(__file__).parents[1] / "data" / "coco_panoptic_sample"
COCO_TO_ADE20K = {1: 12, 8: 83, 19: 126, 37: 119, 125: 0, 184: 4, 187: 2, 193: 9}  # by name; gravel -> wall (id 0)
RUN_FLAGS = ["--actors", "1", "--gpus-per-actor", "1", "--cpus-per-actor", "0.5", "--device", "cpu",
             "--batch-size", "2", "--score-threshold", "0"]


@pytest.fixture(scope="module")
def ade20k_model(tmp_path_factory) -> Path:
    """A tiny EoMT with 150 labels named only LABEL_i (as the converted hub checkpoints may be)."""
    return save_tiny_model("eomt", tmp_path_factory.mktemp("models") / "ade", labels=[f"LABEL_{i}" for i in range(150)])


@pytest.fixture(scope="module")
def ade20k_truth(tmp_path_factory) -> Path:
    """The two COCO sample images' ground truth with its categories replaced by ADE20K panoptic ones."""
    folder = tmp_path_factory.mktemp("ade_gt")
    document = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    for annotation in document["annotations"]:
        for segment in annotation["segments_info"]:
            segment["category_id"] = COCO_TO_ADE20K[segment["category_id"]]
    document["categories"] = dataset_categories("ade20k-panoptic").to_coco()
    (folder / "ade.json").write_text(json.dumps(document))
    shutil.copytree(SAMPLE / "panoptic_examples", folder / "ade")
    return folder / "ade.json"


def test_an_ade20k_model_labels_with_ade20k_categories_and_is_evaluated_on_ade20k_truth(
        ray_with_gpus, ade20k_model, ade20k_truth, tmp_path):
    out = tmp_path / "labels"
    # thresholds 0: random weights still give segments (the CLI has no overlap flag, so the config is built here)
    options = ModelOptions(device="cpu", score_threshold=0.0, overlap_threshold=0.0, dataset="ade20k-panoptic")
    config = LabelJobConfig(input=str(SAMPLE / "input_images"), output=str(out), model=f"hf:{ade20k_model}",
                            model_options=options, gt=str(ade20k_truth), actors=1, gpus_per_actor=1,
                            cpus_per_actor=0.5, batch_size=2)
    assert not run_label_job(config)["failed"]
    reduce_job(config)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["categories"] == dataset_categories("ade20k-panoptic").to_coco()
    assert manifest["label_map"]["category_ids"] == list(range(150))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["truth_unevaluated"] == 0
    counts = metrics["per_class_counts"]
    assert sum(c["fn"] for c in counts.values()) > 0 and "0" in counts  # gravel -> wall: category id 0 is scored
    rows = pq.read_table(out / "shards").to_pylist()
    predicted = {s["category_id"] for row in rows for s in row["segments"]}
    assert predicted and predicted <= set(range(150))
    assert verify.main(["--output", str(out)]) == 0


def test_without_ground_truth_the_job_uses_the_datasets_categories(ray_with_gpus, ade20k_model, tmp_path):
    out = tmp_path / "labels"
    assert label.main(["--input", str(SAMPLE / "input_images"), "--output", str(out), "--model",
                       f"hf:{ade20k_model}", "--dataset", "ade20k-panoptic", *RUN_FLAGS]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["categories"]) == 150 and manifest["model_options"]["dataset"] == "ade20k-panoptic"
    assert label.main(["--input", str(SAMPLE / "input_images"), "--output", str(out), "--model",
                       f"hf:{ade20k_model}", "--dataset", "ade20k-panoptic", *RUN_FLAGS]) == 0  # a rerun resumes


def test_a_model_whose_labels_fit_no_convention_of_the_dataset_fails_at_start(ade20k_model, tmp_path, capsys):
    code = label.main(["--input", str(SAMPLE / "input_images"), "--output", str(tmp_path / "x"), "--model",
                       f"hf:{ade20k_model}", "--dataset", "cityscapes-panoptic", "--dry-run", *RUN_FLAGS])
    assert code == 2 and "19 labels" in capsys.readouterr().err
