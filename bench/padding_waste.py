"""Benchmark: padding waste of batches of mixed aspect ratios, current batching vs bucketing (issue 7, goal 5).

    python bench/padding_waste.py [--images 20000] [--batch 8] [--shard-size 1000] [--seed 0]
        [--json bench/out/padding_waste.json] [--smoke]

A stream of ``--images`` COCO-like image sizes is drawn (seed ``--seed``) from ``SIZES`` with the weights stated
there (an assumption, not counted from COCO: no COCO annotations are in this checkout), cut into shards of
``--shard-size`` images as the labeling job reads them. Each shard is batched with ``--batch`` images per forward
pass by one of three strategies:

- ``current``: consecutive images in shard order, as ``ShardWorker`` batches them today;
- ``bucket by orientation``: one queue per orientation (landscape, portrait, square), a batch is emitted when a
  queue holds ``--batch`` images, queues are flushed at the end of the shard;
- ``bucket by model input size``: one queue per resized (height, width) the backend computes.

Each batch is then shaped as each backend shapes it (read from ``segcore/models``):

- ``hf`` backends (demo, Mask2Former, MaskFormer, DETR, OneFormer): ``Preprocessing.resized_size`` (each family's
  reference resize rule), then ``prepare_batch`` pads every image to the batch's largest height and width
  (rounded up to the size divisor for the detectron2 families); EoMT pads to its fixed square instead;
- ``torchvision``: Mask R-CNN's ``GeneralizedRCNNTransform`` (min 800, max 1333, scale floor) pads to the batch's
  largest size rounded up to 32; the semantic model runs each group of equal-sized images separately (no padding,
  smaller forward passes: reported as images per semantic forward pass).

Waste = padded pixels / pixels of the batch tensors (``B x Hp x Wp``). ``fill`` = images / (batches x batch size):
below 1 where a bucket's last batch of a shard is short. The padded shapes are checked once against the real
``prepare_batch``'s pixel mask (and, when torchvision is installed, its transform) on the first batches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
from pathlib import Path

import numpy as np
import torch

from segcore.models.demo import image_processor_config
from segcore.models.preprocess import Preprocessing, prepare_batch
from segcore.models.zoo import PROCESSORS

# (width, height) as COCO writes sizes, and the assumed share of each in COCO val2017 (most images have a long
# side of 640; 4:3 and 3:2 landscape dominate; the rest: portrait, 16:9, the 500-px 4:3 images, squares)
SIZES = {(640, 480): 0.35, (480, 640): 0.12, (640, 427): 0.20, (427, 640): 0.10, (640, 360): 0.08,
         (500, 375): 0.05, (640, 640): 0.10}
# backend -> (family, image-processor config): the demo's own, the random-weight zoo's published settings, DETR's
# hub processor (short side 800, long side 1333, padded to the batch's largest image)
HF_BACKENDS = {
    "demo (hf mask2former, 128/160, divisor 32)": ("mask2former", image_processor_config()),
    "mask2former-swin-large (800/1333, divisor 32)": ("mask2former", PROCESSORS["mask2former-swin-large"]),
    "detr (800/1333, no divisor)": ("detr", {"size": {"shortest_edge": 800, "longest_edge": 1333}}),
    "eomt-large-640 (640/640, fixed square pad)": ("eomt", PROCESSORS["eomt-large-640"]),
}
TORCHVISION = "torchvision Mask R-CNN (800/1333, pad to 32)"
STRATEGIES = ("current", "bucket by orientation", "bucket by model input size")


def draw_sizes(n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` (height, width) pairs drawn from SIZES' weights."""
    sizes = list(SIZES)
    weights = np.array([SIZES[s] for s in sizes], dtype=np.float64)
    picks = np.random.default_rng(seed).choice(len(sizes), size=n, p=weights / weights.sum())
    return [(sizes[i][1], sizes[i][0]) for i in picks]


def rcnn_size(height: int, width: int, min_size: int = 800, max_size: int = 1333) -> tuple[int, int]:
    """torchvision's ``GeneralizedRCNNTransform.resize``: one scale, sizes floored."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return math.floor(height * scale), math.floor(width * scale)


def orientation(size: tuple[int, int]) -> str:
    height, width = size
    return "square" if height == width else ("portrait" if height > width else "landscape")


def batches(shard: list[tuple[int, int]], strategy: str, batch: int, model_size) -> list[list[int]]:
    """Positions of the shard's images, grouped into forward passes by ``strategy``."""
    if strategy == "current":
        return [list(range(start, min(start + batch, len(shard)))) for start in range(0, len(shard), batch)]
    key = orientation if strategy == "bucket by orientation" else model_size
    queues: dict = {}
    out = []
    for position, size in enumerate(shard):
        queue = queues.setdefault(key(size), [])
        queue.append(position)
        if len(queue) == batch:
            out.append(queue[:])
            queue.clear()
    return out + [queue for queue in queues.values() if queue]


def waste_of(shards: list[list[tuple[int, int]]], strategy: str, batch: int, model_size, pad) -> dict:
    """Padding waste and batch fill over every shard: ``pad(resized sizes) -> (Hp, Wp)`` of one batch."""
    valid = padded = images = passes = 0
    for shard in shards:
        for group in batches(shard, strategy, batch, model_size):
            resized = [model_size(shard[p]) for p in group]
            height, width = pad(resized)
            valid += sum(h * w for h, w in resized)
            padded += len(group) * height * width
            images += len(group)
            passes += 1
    return {"waste": 1 - valid / padded, "fill": images / (passes * batch), "batches": passes}


def semantic_passes(shards: list[list[tuple[int, int]]], strategy: str, batch: int, model_size) -> float:
    """torchvision's semantic model: mean images per forward pass (it groups equal sizes within a batch)."""
    calls = images = 0
    for shard in shards:
        for group in batches(shard, strategy, batch, model_size):
            calls += len({model_size(shard[p]) for p in group})
            images += len(group)
    return images / calls


def check_against_prepare_batch(preprocessing: Preprocessing, sizes: list[tuple[int, int]], pad) -> None:
    """The real ``prepare_batch`` pads this batch as ``pad`` says and its mask covers the resized sizes.

    Raises:
        RuntimeError: it does not.
    """
    images = [torch.zeros((3, h, w), dtype=torch.uint8) for h, w in sizes]
    pixel_values, pixel_mask, valid = prepare_batch(images, preprocessing)
    expected = pad([preprocessing.resized_size(h, w) for h, w in sizes])
    if tuple(pixel_values.shape[2:]) != tuple(expected) or int(pixel_mask.sum()) != sum(h * w for h, w in valid):
        raise RuntimeError(f"Expected prepare_batch to pad {sizes} to {expected}, but got {tuple(pixel_values.shape)}")


def check_against_torchvision(sizes: list[tuple[int, int]], pad) -> bool:
    """The torchvision transform pads this batch as ``pad`` says; False when torchvision is absent."""
    try:
        from torchvision.models.detection.transform import GeneralizedRCNNTransform
    except ImportError:
        return False
    transform = GeneralizedRCNNTransform(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    with torch.inference_mode():
        image_list, _ = transform([torch.zeros((3, h, w)) for h, w in sizes])
    expected = pad([rcnn_size(h, w) for h, w in sizes])
    if tuple(image_list.tensors.shape[2:]) != tuple(expected) or \
            [tuple(s) for s in image_list.image_sizes] != [rcnn_size(h, w) for h, w in sizes]:
        raise RuntimeError(f"Expected torchvision to pad {sizes} to {expected}, but got {image_list.tensors.shape}")
    return True


def pad_to_max(sizes, divisor: int = 1) -> tuple[int, int]:
    height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def measure(shards: list[list[tuple[int, int]]], batch: int, check: list[tuple[int, int]]) -> tuple[dict, dict]:
    """Waste per backend and strategy; images per semantic pass of the torchvision backend."""
    results: dict = {}
    for name, (family, config) in HF_BACKENDS.items():
        preprocessing = Preprocessing.from_config(config, family)

        def pad(sizes, p=preprocessing):
            return p.padded_size(sizes)

        check_against_prepare_batch(preprocessing, check, pad)
        results[name] = {strategy: waste_of(shards, strategy, batch, lambda s, p=preprocessing: p.resized_size(*s),
                                            pad) for strategy in STRATEGIES}
    checked = check_against_torchvision(check, lambda sizes: pad_to_max(sizes, 32))
    results[TORCHVISION] = {strategy: waste_of(shards, strategy, batch, lambda s: rcnn_size(*s),
                                               lambda sizes: pad_to_max(sizes, 32)) for strategy in STRATEGIES}
    semantic = {strategy: semantic_passes(shards, strategy, batch, lambda s: s) for strategy in STRATEGIES}
    return results, {"semantic_images_per_pass": semantic, "torchvision_checked": checked}


def table(results: dict, extra: dict) -> str:
    """Markdown: waste % (and fill where below 1) per backend and strategy."""
    lines = ["| backend | " + " | ".join(STRATEGIES) + " |", "|---|" + "---:|" * len(STRATEGIES)]
    for name, row in results.items():
        cells = [f"{row[s]['waste']:.1%}" + (f" (fill {row[s]['fill']:.3f})" if row[s]["fill"] < 0.9995 else "")
                 for s in STRATEGIES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    semantic = extra["semantic_images_per_pass"]
    lines += ["", "torchvision semantic model, images per forward pass: " +
              ", ".join(f"{s} {semantic[s]:.2f}" for s in STRATEGIES)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--batch", type=int, nargs="+", default=[8], help="images per forward pass (several: each)")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="bench/out/padding_waste.json")
    parser.add_argument("--smoke", action="store_true", help="200 images, shards of 50")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.shard_size = 200, 50
    sizes = draw_sizes(args.images, args.seed)
    shards = [sizes[start:start + args.shard_size] for start in range(0, len(sizes), args.shard_size)]
    check = sizes[:8]
    by_batch = {}
    for batch in args.batch:
        results, extra = measure(shards, batch, check)
        print(f"batch {batch}:\n{table(results, extra)}\n")
        by_batch[batch] = {"waste": results, **extra}
    drawn = {f"{w}x{h}": sizes.count((h, w)) / len(sizes) for (w, h) in SIZES}
    print("drawn shares: " + ", ".join(f"{k} {v:.3f}" for k, v in drawn.items()))
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    document = {"args": vars(args), "machine": machine, "weights": {f"{w}x{h}": p for (w, h), p in SIZES.items()},
                "drawn": drawn, "strategies": list(STRATEGIES), "batches": by_batch,
                "mean_pixels": statistics.mean(h * w for h, w in sizes)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
