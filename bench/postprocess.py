"""Post-processing cost per family, on model outputs of the published architectures' shapes.

    python bench/postprocess.py [--device cpu] [--kept 30 all] [--repeats 5] [--threads 2] [--json FILE]

For each family, class and mask logits of its published COCO configuration are drawn once (seed 0): ``--kept``
queries confidently above the family's score threshold, the others "no object"; each query's mask is high in its
own cell of a random Voronoi partition of the mask grid, plus noise, so the assignment, the overlap rule and DETR's
small-segment rounds behave as on real outputs. Output size 480 x 640 (a COCO photo). The time is the family's
post-processing plus areas and boxes (``finish_batch``), milliseconds per image, best of ``--repeats``.

| family | queries | model input (padded) | mask grid |
|---|---:|---|---|
| EoMT-L 640 | 200 | 640 x 640 | 160 x 160 |
| Mask2Former Swin-L, OneFormer Swin-L, MaskFormer Swin-L | 200, 150, 100 | 800 x 1088 | 200 x 272 |
| DETR R101 | 100 (251 classes) | 800 x 1066 | 200 x 267 |

Before/after: run it once with the current tree and once with ``PYTHONPATH`` set to a checkout of an older commit
(``git worktree add /tmp/before <commit>``); the older code (a single post-processing for every family, one
grid_sample resize per query) is driven through its own API, detected on import.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

OUTPUT = (480, 640)
FAMILIES = {  # family -> (queries, labels + 1, padded input, resized image, mask grid, score threshold)
    "eomt": (200, 134, (640, 640), (480, 640), (160, 160), 0.8),
    "mask2former": (200, 134, (800, 1088), (800, 1067), (200, 272), 0.8),
    "oneformer": (150, 134, (800, 1088), (800, 1067), (200, 272), 0.8),
    "maskformer": (100, 134, (800, 1088), (800, 1067), (200, 272), 0.8),
    "detr": (100, 251, (800, 1066), (800, 1066), (200, 267), 0.85),
}


def outputs(family: str, kept: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded class logits (1, Q, L + 1) and mask logits (1, Q, h, w) with ``kept`` confident queries."""
    n_queries, n_classes, _, _, grid, _ = FAMILIES[family]
    generator = torch.Generator().manual_seed(0)
    class_logits = torch.randn(1, n_queries, n_classes, generator=generator)
    labels = torch.randint(0, 133, (n_queries,), generator=generator)
    labels[kept:] = n_classes - 1  # "no object"
    class_logits[0, torch.arange(n_queries), labels] += 12.0
    centers = torch.rand(n_queries, 2, generator=generator)
    ys, xs = torch.linspace(0, 1, grid[0]), torch.linspace(0, 1, grid[1])
    points = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)
    distance = (points[None] - centers[:, None, None]).norm(dim=-1)
    masks = 8 * (1 - (distance - distance.min(0).values) / 0.05) + torch.randn(distance.shape, generator=generator)
    return class_logits.to(device), masks[None].to(device)


def postprocessor(family: str, device: torch.device):
    """A callable (class_logits, mask_logits) -> results with this tree's code, or the older API's."""
    from segcore.models.base import finish_batch
    from segcore.models.postprocess import LabelTables, Thresholds, panoptic_from_queries

    n_queries, n_classes, padded, resized, grid, threshold = FAMILIES[family]
    labels = LabelTables(torch.arange(n_classes - 1, device=device), torch.arange(n_classes - 1, device=device) < 80,
                         torch.ones(n_classes - 1, dtype=torch.bool, device=device))
    thresholds = Thresholds(score=threshold)
    try:
        from segcore.models.postprocess import Geometry
    except ImportError:  # the code before the reference rules: one rule, one resize from the fractional grid
        valid = [(resized[0] * grid[0] / padded[0], resized[1] * grid[1] / padded[1])]
        return lambda c, m: finish_batch(*panoptic_from_queries(c, m, valid, [OUTPUT], labels, thresholds))
    geometry = [Geometry(padded, resized, OUTPUT)]
    if family == "detr":
        from segcore.models.detr_postprocess import detr_panoptic

        return lambda c, m: finish_batch(*detr_panoptic(c, m, geometry, labels, threshold))
    rule = family != "maskformer"
    return lambda c, m: finish_batch(*panoptic_from_queries(c, m, geometry, labels, thresholds, rule))


def measure(family: str, kept: int, device: torch.device, repeats: int) -> dict:
    """Best milliseconds per image over ``repeats`` runs, and the segments found."""
    class_logits, mask_logits = outputs(family, kept, device)
    run = postprocessor(family, device)
    results = run(class_logits, mask_logits)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        run(class_logits, mask_logits)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return {"ms": best * 1000, "segments": len(results[0].segments)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kept", nargs="+", default=["30", "all"], help="kept queries per image (or 'all')")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    with torch.inference_mode():
        for family in args.families.split(","):
            for kept in args.kept:
                count = FAMILIES[family][0] if kept == "all" else int(kept)
                row = {"family": family, "kept": count, **measure(family, count, device, args.repeats)}
                print(f"{family:12s} kept {count:4d}: {row['ms']:9.1f} ms/image, {row['segments']} segments")
                rows.append(row)
    if args.json:
        machine = {"platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads(),
                   "torch": torch.__version__}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
