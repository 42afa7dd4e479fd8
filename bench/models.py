"""Per-model time per image, split into pre-processing, forward pass and post-processing.

    python bench/models.py --models demo,eomt-large-640,mask2former-swin-large --images 4 --batch 2

``demo`` is the shipped model; the published names are the real architectures with random weights
(segcore/models/zoo.py), whose class scores are meaningless: ``--score-threshold 0`` (their default here) keeps
every query, the worst case for post-processing. Images are synthetic scenes at ``--size`` (COCO-like 480x640).
Results go to stdout and, with ``--out``, to a JSON file; docs/benchmarks.md records them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from segcore.models.registry import ModelOptions, load_segmenter
from segcore.models.zoo import PROCESSORS, published_segmenter
from segcore.synthetic import make_demo_sample

STAGES = ("preprocess", "forward", "postprocess")


def build(name: str, args) -> object:
    """The segmenter named ``name`` with the benchmark's options."""
    random_weights = name in PROCESSORS
    threshold = args.score_threshold if args.score_threshold is not None else (0.0 if random_weights else None)
    options = ModelOptions(device=args.device, dtype=args.dtype, score_threshold=threshold)
    return published_segmenter(name, options) if random_weights else load_segmenter(name, options)


def measure(segmenter, images: list, batch: int, warmup: int = 1) -> dict:
    """Seconds per image of each stage, and segments per image, after ``warmup`` batches."""
    for _ in range(warmup):
        segmenter.segment(images[:batch])
    timings: dict[str, float] = {}
    segments = 0
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        results = segmenter.segment(images[start : start + batch], timings)
        segments += sum(len(r.segments) for r in results)
    wall = time.perf_counter() - started
    per_image = {stage: timings.get(stage, 0.0) / len(images) for stage in STAGES}
    return {**per_image, "wall": wall / len(images), "segments_per_image": segments / len(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,eomt-large-640,mask2former-swin-large")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of the synthetic images")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--score-threshold", type=float, default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    images = [make_demo_sample(3, i, (height, width))[0] for i in range(args.images)]
    rows = {}
    for name in args.models.split(","):
        segmenter = build(name, args)
        rows[name] = measure(segmenter, images, args.batch)
        row = rows[name]
        share = row["postprocess"] / max(1e-12, sum(row[s] for s in STAGES))
        print(
            f"{name:24s} pre {row['preprocess'] * 1e3:8.1f} ms  forward {row['forward'] * 1e3:9.1f} ms  "
            f"post {row['postprocess'] * 1e3:8.1f} ms  (post {share:5.1%})  {row['segments_per_image']:.1f} seg/img",
            flush=True,
        )
        del segmenter
    machine = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu")}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "machine": machine, "per_image_seconds": rows}, f, indent=2)


if __name__ == "__main__":
    main()
