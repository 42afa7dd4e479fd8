"""Benchmark: the labeling job (``python -m jobs.label``) with the demo model, 1 vs 2 CPU actors on one local Ray.

    RAY_AUTH_MODE=disabled python bench/label_throughput.py [--shards 8] [--images-per-shard 16] [--batch 8]
        [--repeats 2] [--json bench/out/label_throughput.json] [--smoke]

The corpus is ``segcore.synthetic.write_demo_shards`` (demo scenes of 128-160 px, JPEG, with ground truth, so the
PQ match runs too), generated once under ``bench/corpus/``. Each run is a whole ``run_label_job`` (into an emptied
folder under ``bench/out/``) with ``actors=N``, no GPU, 1 CPU and so 1 torch thread per actor. Runs are interleaved
(1, 2, 1, 2, ...) after one unmeasured warm-up run; the best repeat of each actor count is reported:

- img/s (wall): images / wall time of ``run_label_job``: plan, actor start-up (process, imports, model load), work.
- img/s (after start-up): images / (wall - start-up); start-up is the time until the first shard began on an
  actor (from the job result's per-shard timeline).
- stages: the summary's ``stages`` summed over shards, per image and as a share of actor time (the sum of the
  shards' ``seconds``). In sequence on the actor's model side: decode_wait (waiting
  for the decode threads), the segmenter's StageClock (preprocess, forward, postprocess), to_host (the batch's id
  maps to the host), encode_wait (waiting for the previous batch's rows), write; "other" is the actor time left.
  ``read``, ``decode`` and ``encode`` are their threads' own time, which overlaps the sequential stages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import ray
import torch

from segcore.models.registry import ModelOptions
from segcore.runtime import driver
from segcore.runtime.labeling import LabelJobConfig
from segcore.synthetic import write_demo_shards

STAGES = ("decode_wait", "preprocess", "forward", "postprocess", "to_host", "encode_wait", "write")  # in sequence
OVERLAPPED = ("read", "decode", "encode")  # summed over their threads, running beside the stages above
ACTORS = (1, 2)


def corpus(root: str, shards: int, per_shard: int) -> str:
    """The demo corpus' brace-range path, written on the first call only (a ``complete`` file marks it)."""
    folder = Path(root) / f"label-demo-{shards}x{per_shard}"
    if not (folder / "complete").exists():
        write_demo_shards(folder, shards, per_shard)
        (folder / "complete").touch()
    return str(folder / f"corpus-{{00000..{shards - 1:05d}}}.tar")


def run(actors: int, source: str, output: str, args) -> dict:
    """One labeling job: wall, plan and start-up seconds, images, actor and stage seconds (sums over shards), and
    each shard's (start, seconds) from the job's start.

    ``output`` is removed first: ``overwrite`` only replaces a different job, the same job would resume.
    """
    shutil.rmtree(output, ignore_errors=True)
    config = LabelJobConfig(input=source, output=output, model="demo", model_options=ModelOptions(device="cpu"),
                            actors=actors, gpus_per_actor=0, cpus_per_actor=1, batch_size=args.batch, overwrite=True)
    started = time.perf_counter()
    result = driver.run_label_job(config)
    wall = time.perf_counter() - started
    expected = args.shards * args.images_per_shard
    if result["failed"] or result["errors"] or result["images"] != expected:
        raise RuntimeError(f"Expected {expected} images labelled without errors, but got {result}")
    plan = wall - result["seconds"]  # the timeline counts from the end of planning
    shards = sorted((plan + shard["started"], shard["seconds"]) for shard in result["shards"])
    return {"wall": wall, "plan": plan, "startup": shards[0][0], "images": result["images"],
            "actor_seconds": sum(seconds for _, seconds in shards), "stages": result["stages"], "shards": shards}


def stage_split(row: dict) -> dict:
    """Seconds per image and share of actor time of each stage, plus "other" (actor time not in a stage)."""
    seconds = {stage: row["stages"].get(stage, 0.0) for stage in STAGES}
    seconds["other"] = row["actor_seconds"] - sum(seconds.values())
    seconds["actor total"] = row["actor_seconds"]
    for stage in OVERLAPPED:
        seconds[f"{stage} (threads, overlapped)"] = row["stages"].get(stage, 0.0)
    return {stage: {"per_image": s / row["images"], "share": s / row["actor_seconds"]} for stage, s in seconds.items()}


def table(best: dict, medians: dict) -> str:
    """The markdown tables: throughput per actor count, the 2/1 ratio, and the stage split."""
    columns = ("actors", "images", "best wall s", "img/s (wall)", "median img/s (wall)", "start-up s",
               "img/s (after start-up)")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    for n, row in best.items():
        after = row["images"] / (row["wall"] - row["startup"])
        lines.append(f"| {n} | {row['images']} | {row['wall']:.2f} | {row['images'] / row['wall']:.1f} | "
                     f"{medians[n]:.1f} | {row['startup']:.2f} | {after:.1f} |")
    if len(best) == 2:
        one, two = best[1], best[2]
        after = (one["wall"] - one["startup"]) / (two["wall"] - two["startup"])
        lines += ["", f"2 actors / 1 actor: {one['wall'] / two['wall']:.2f}x (wall), {after:.2f}x (after start-up)"]
    splits = {n: stage_split(row) for n, row in best.items()}
    lines += ["", "| stage | " + " | ".join(f"{n} actor{'s' * (n > 1)} ms/img | %" for n in best) + " |",
              "|---|" + "---:|---:|" * len(best)]
    for stage in (*STAGES, "other", "actor total", *(f"{stage} (threads, overlapped)" for stage in OVERLAPPED)):
        cells = [f"{splits[n][stage]['per_image'] * 1e3:.2f} | {splits[n][stage]['share']:.1%}" for n in best]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--images-per-shard", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8, help="images per forward pass (batch_size)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--corpus-root", default="bench/corpus")
    parser.add_argument("--out-root", default="bench/out/label_throughput")
    parser.add_argument("--json", default=None, help="write the numbers as JSON here")
    parser.add_argument("--smoke", action="store_true", help="2 shards x 2 images, batch 2, 1 repeat, no warm-up")
    args = parser.parse_args(argv)
    if args.smoke:
        args.shards, args.images_per_shard, args.batch, args.repeats = 2, 2, 2, 1
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    source = corpus(args.corpus_root, args.shards, args.images_per_shard)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # driver.init_ray joins it
    try:
        if not args.smoke:  # page cache, Ray's worker pool; actors are new in every job, so start-up stays in
            run(2, source, f"{args.out_root}/warmup", args)
        runs: dict[int, list[dict]] = {n: [] for n in ACTORS}
        for _ in range(args.repeats):
            for n in ACTORS:
                runs[n].append(run(n, source, f"{args.out_root}/actors-{n}", args))
                print(f"actors {n}: {runs[n][-1]['images'] / runs[n][-1]['wall']:.1f} img/s (wall)", flush=True)
    finally:
        ray.shutdown()
    best = {n: min(rows, key=lambda row: row["wall"]) for n, rows in runs.items()}
    medians = {n: statistics.median(row["images"] / row["wall"] for row in rows) for n, rows in runs.items()}
    print(table(best, medians))
    if args.json:
        machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                   "ray": ray.__version__}
        document = {"args": vars(args), "machine": machine, "runs": runs,
                    "best": {n: {**row, "stage_split": stage_split(row)} for n, row in best.items()}}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
