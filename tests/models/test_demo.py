"""The shipped demo model: small, loads offline through the hf: path, and segments held-out scenes well."""

from __future__ import annotations

import json

import torch

from segcore.models.demo import HELDOUT_SEED, demo_model_dir, heldout_pq
from segcore.models.registry import ModelOptions, load_segmenter
from segcore.synthetic import DEMO_CATEGORY_IDS, make_demo_sample


def test_the_shipped_weights_are_a_few_megabytes():
    files = list(demo_model_dir().iterdir())
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {f.name for f in files}
    assert sum(f.stat().st_size for f in files) < 4 * 2**20


def test_the_demo_loads_through_the_hf_path_with_sparse_coco_ids():
    segmenter = load_segmenter("demo", ModelOptions(device="cpu"))
    described = segmenter.describe()
    assert described["backend"] == "hf" and described["family"] == "mask2former" and described["spec"] == "demo"
    assert segmenter.label_map.category_ids == DEMO_CATEGORY_IDS
    assert next(segmenter.model.parameters()).dtype == torch.float32  # stored as float16, computed in float32


def test_the_demo_model_reaches_pq_0_70_on_a_held_out_split():
    torch.set_num_threads(1)
    segmenter = load_segmenter("demo", ModelOptions(device="cpu"))
    summary = heldout_pq(segmenter, n_images=64, seed=HELDOUT_SEED)
    assert summary["All"]["n"] == 5
    assert summary["All"]["pq"] >= 0.70, summary


def test_a_batch_of_demo_sizes_gives_maps_at_each_image_size():
    segmenter = load_segmenter("demo", ModelOptions(device="cpu"))
    images = [make_demo_sample(HELDOUT_SEED, i, size)[0] for i, size in enumerate([(128, 160), (90, 200), (240, 320)])]
    for image, result in zip(images, segmenter.segment(images)):
        assert result.id_map.shape == image.shape[:2] and len(result.segments) > 0


def test_the_recorded_training_run_says_how_it_was_made():
    provenance = json.loads((demo_model_dir() / "training.json").read_text())
    assert provenance["train"]["steps"] > 0 and provenance["seconds"] > 0
    assert provenance["heldout"]["All"]["pq"] >= 0.70
