"""The shipped demo model: a tiny transformers Mask2Former trained on the project's synthetic scenes.

The weights live in ``segcore/data/demo_model`` (``save_pretrained`` layout, float16 to stay small) and load
through the same ``hf:`` code path as any hub model. :func:`train` reproduces them:
``python -m jobs.train_demo --out segcore/data/demo_model`` (see docs/models.md for the time it takes).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from segcore.synthetic import DEMO_SIZES, demo_categories, make_demo_sample

logger = logging.getLogger(__name__)

IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as transformers' image processors default to
IMAGE_STD = (0.229, 0.224, 0.225)
TRAIN_SEED = 1  # synthetic seed of the training stream; evaluation uses other seeds (HELDOUT_SEED)
HELDOUT_SEED = 2


def demo_model_dir() -> Path:
    """The folder of the shipped demo weights (inside the installed package)."""
    return Path(str(resources.files("segcore") / "data" / "demo_model"))


def demo_config():
    """The tiny Mask2Former configuration of the demo model (about 1.1 M parameters, random weights)."""
    from transformers import Mask2FormerConfig, SwinConfig

    names = [c.name for c in demo_categories()]
    backbone = SwinConfig(
        embed_dim=24,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 3, 6],
        window_size=4,
        image_size=128,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone,
        use_pretrained_backbone=False,
        hidden_dim=64,
        mask_feature_size=64,
        feature_size=64,
        encoder_feedforward_dim=128,
        dim_feedforward=128,
        num_attention_heads=4,
        encoder_layers=2,
        decoder_layers=4,
        num_queries=24,
        train_num_points=2048,
        id2label=dict(enumerate(names)),
        label2id={name: index for index, name in enumerate(names)},
    )


def image_processor_config() -> dict:
    """``preprocessor_config.json`` of the demo model: short side 128, long side at most 160, multiples of 32."""
    return {
        "image_processor_type": "Mask2FormerImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 128, "longest_edge": 160},
        "size_divisor": 32,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
    }


@dataclass(frozen=True)
class TrainConfig:
    """Training settings of the demo model.

    Attributes:
        out: folder to write the model into (``save_pretrained`` layout).
        steps: optimiser steps.
        batch_size: images per step (all of one size from DEMO_SIZES).
        lr: peak AdamW learning rate (linear warm-up, cosine decay).
        threads: torch intra-op threads (set to the CPUs this process may use).
        seed: torch seed of the initial weights.
    """

    out: str
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    threads: int = 1
    seed: int = 0


def training_batch(step: int, batch_size: int) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Draws training batch ``step``: normalised pixels and per-image mask and class targets.

    Returns:
        ``(pixel_values, mask_labels, class_labels)``: ``pixel_values`` # (B, 3, H, W) float32; per image
        ``mask_labels`` # (N, H, W) float32 and ``class_labels`` # (N,) int64 model labels.
    """
    size = DEMO_SIZES[step % len(DEMO_SIZES)]
    label_of = {c.id: index for index, c in enumerate(demo_categories())}
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    pixels, masks, classes = [], [], []
    for item in range(batch_size):
        image, id_map, segments = make_demo_sample(TRAIN_SEED, step * batch_size + item, size)
        pixels.append((torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std)
        ids = np.array([s["id"] for s in segments], dtype=np.uint32)
        masks.append(torch.from_numpy(id_map[None] == ids[:, None, None]).float())
        classes.append(torch.tensor([label_of[s["category_id"]] for s in segments], dtype=torch.int64))
    return torch.stack(pixels), masks, classes


def _learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up over 100 steps, then cosine decay to 5 % of the peak."""
    if step < 100:
        return config.lr * (step + 1) / 100
    progress = (step - 100) / max(1, config.steps - 100)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(config: TrainConfig) -> Path:
    """Trains the demo model from scratch and saves it (float16 weights, config, image-processor config).

    Returns:
        the output folder.
    """
    from transformers import Mask2FormerForUniversalSegmentation

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = Mask2FormerForUniversalSegmentation(demo_config())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.05)
    started = time.monotonic()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        pixel_values, mask_labels, class_labels = training_batch(step, config.batch_size)
        loss = model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == config.steps - 1:
            logger.info("step %d/%d loss %.3f (%.0f s)", step, config.steps, loss.item(), time.monotonic() - started)
    out = save(model, Path(config.out), {"train": config.__dict__, "seconds": round(time.monotonic() - started)})
    logger.info("held-out PQ: %s", record_evaluation(out)["All"])
    return out


def save(model: torch.nn.Module, out: Path, provenance: dict) -> Path:
    """Writes ``model`` in float16 with its image-processor config and how it was trained."""
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.half().save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(image_processor_config(), indent=2) + "\n")
    (out / "training.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out


def heldout_pq(segmenter, n_images: int = 64, seed: int = HELDOUT_SEED, batch_size: int = 8) -> dict:
    """PQ of a segmenter on ``n_images`` held-out demo samples (panopticapi's rules, segcore.metrics.pq).

    Returns:
        the summary dict of :func:`segcore.metrics.pq.summarize` (``All``, ``Things``, ``Stuff``, ``per_class``).
    """
    from segcore.metrics.pq import PQPartial, match_image, summarize

    categories = demo_categories()
    total = PQPartial()
    for start in range(0, n_images, batch_size):
        samples = [make_demo_sample(seed, index) for index in range(start, min(n_images, start + batch_size))]
        results = segmenter.segment([image for image, _, _ in samples])
        for rank, ((_, gt_map, gt_segments), result) in enumerate(zip(samples, results), start=start):
            pred_map = result.id_map_numpy().astype(np.uint32)
            total += match_image(rank, gt_map, gt_segments, pred_map, result.segments, categories, rank)
    return summarize(total, categories)


def record_evaluation(model_dir: Path, n_images: int = 200) -> dict:
    """Evaluates a saved demo model on the held-out split and adds the result to its ``training.json``."""
    from segcore.models.hf import load_hf
    from segcore.models.registry import ModelOptions

    segmenter = load_hf(str(model_dir), ModelOptions(device="cpu"), demo_categories(), spec="demo")
    summary = heldout_pq(segmenter, n_images)
    provenance_file = Path(model_dir) / "training.json"
    provenance = json.loads(provenance_file.read_text()) if provenance_file.exists() else {}
    provenance["heldout"] = {"seed": HELDOUT_SEED, "images": n_images, **{k: summary[k] for k in ("All", "Things", "Stuff")}}
    provenance_file.write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance["heldout"]
