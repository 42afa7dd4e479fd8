"""Benchmark: jobs.evaluate's Ray fan-out, 1 vs 2 workers on one local Ray (start-up excluded).

    python bench/pq_workers.py [--corpus bench/corpus/seed0-n5000-640x480] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

from segcore.runtime.driver import init_ray
from segcore.runtime.evaluation import EvaluationConfig, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="bench/corpus/seed0-n5000-640x480")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    init_ray(num_cpus=2)
    gt, pred = f"{args.corpus}/gt.json", f"{args.corpus}/pred.json"
    evaluate(EvaluationConfig(gt, pred, workers=2))  # warm the worker processes and their compiled kernels
    best: dict[int, float] = {}
    for _ in range(args.repeats):
        for workers in (1, 2):
            start = time.perf_counter()
            result = evaluate(EvaluationConfig(gt, pred, workers=workers))
            elapsed = time.perf_counter() - start
            best[workers] = min(best.get(workers, elapsed), elapsed)
    images = result["images"]
    for workers, seconds in best.items():
        print(f"workers {workers}: {images / seconds:.0f} img/s ({seconds:.2f} s for {images} images)")
    print(f"speed-up 2 vs 1: {best[1] / best[2]:.2f}x")


if __name__ == "__main__":
    main()
