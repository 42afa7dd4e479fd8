"""Pixel agreement of the package's labels with the golden ports of each family's original inference code.

    python bench/parity.py [--seeds 4] [--json FILE]
    PYTHONPATH=/tmp/before python bench/parity.py   # an older checkout (git worktree add /tmp/before <commit>)

Tiny random-weight models of every ``hf:`` family (``tests/models/tiny_models.py``) with a fixed decisive forward
hook (``make_decisive``: confident classes and distinct masks, one hook per seed) label six crops of the two COCO
sample photos (landscape, portrait, square, a whole photo, a thin strip, the other whole photo) in one mixed-size
batch; each image's id map is compared with the port's (``tests/models/reference_ports``) up to renumbering. The
demo model is compared on 12 of its own scenes and the same photos. Prints, per family, the mean and the lowest
agreement and how many images are identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "models"))

from reference_ports.compare import agreement  # noqa: E402
from reference_ports.run import reference  # noqa: E402
from tiny_models import FAMILIES, make_decisive, save_tiny_model  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "coco_panoptic_sample" / "input_images"


def photos() -> list[np.ndarray]:
    first, second = (np.asarray(Image.open(SAMPLE / name).convert("RGB"))
                     for name in ("000000142238.jpg", "000000439180.jpg"))
    return [first[:300, :500], second[:400, 50:300], first[100:356, 200:456], second, first[:37, :101], first]


def agreements(segmenter, images: list[np.ndarray]) -> list[float]:
    """Per image: the fraction of pixels agreeing with the port, the package labelling all images as one batch."""
    values = []
    for result, image in zip(segmenter.segment(images), images):
        theirs, void, _, _ = reference(segmenter, image)
        values.append(agreement(result.id_map_numpy(), theirs, 0, void))
    return values


def summary(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "lowest": float(min(values)),
            "identical": sum(v == 1.0 for v in values), "images": len(values)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from segcore.models.hf import FAMILIES as SUPPORTED
    from segcore.models.registry import ModelOptions, load_segmenter
    from segcore.synthetic import DEMO_SIZES, demo_categories, make_demo_sample

    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for family in (f for f in FAMILIES if f in SUPPORTED):
            path = save_tiny_model(family, Path(folder) / family)
            values = []
            for seed in range(args.seeds):
                segmenter = load_segmenter(f"hf:{path}", ModelOptions(device="cpu"), demo_categories())
                make_decisive(segmenter.model, seed=seed)
                values += agreements(segmenter, photos())
            rows[family] = summary(values)
    demo = load_segmenter("demo", ModelOptions(device="cpu"))
    scenes = [make_demo_sample(5, index, size)[0] for index, size in enumerate(DEMO_SIZES * 4)]
    rows["demo, its scenes"] = summary(agreements(demo, scenes))
    rows["demo, photos"] = summary(agreements(demo, photos()))
    for name, row in rows.items():
        print(f"{name:18s} mean {row['mean']:.4f}  lowest {row['lowest']:.4f}  identical {row['identical']}"
              f"/{row['images']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
