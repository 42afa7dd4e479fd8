"""Labels an image corpus with panoptic segmentation: ``python -m jobs.label --input URI --output URI [options]``.

The same command runs on an embedded local Ray and on a cluster (``ray job submit --working-dir . -- python -m
jobs.label ...``). A rerun skips committed shards; ``--demo`` labels a generated synthetic corpus offline.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from segcore.categories import DATASETS
from segcore.io.commit import ManifestMismatch
from segcore.io.lock import JobLocked, LockLost
from segcore.runtime.truth_use import DuplicateTruth
from segcore.models.registry import ModelOptions, describe_specs
from segcore.runtime.labeling import LabelJobConfig, summary_lines

DEMO_DIR = "out/demo"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.label", description=__doc__,
                                     epilog="models:\n" + describe_specs(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="tar/Parquet shards (globs, {00000..00999} ranges) or an image folder")
    parser.add_argument("--output", help="output URI (local path or any fsspec URI)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--gt", default=None, help="COCO panoptic ground-truth JSON: PQ of the images it lists")
    parser.add_argument("--gt-dir", default=None, help="ground-truth PNG folder (default: --gt without .json)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--device", default=None)
    parser.add_argument("--score-threshold", type=float, default=None)
    parser.add_argument("--label-map", default=None, help="JSON file mapping model labels to dataset category ids")
    parser.add_argument("--dataset", default=None, choices=sorted(DATASETS),
                        help="the dataset an hf: model was trained on: its categories label the output (presets "
                             "set it)")
    parser.add_argument("--input-size", default=None, metavar="SHORT,LONG",
                        help="resize to this shortest/longest edge instead of the model's processor config")
    parser.add_argument("--actors", type=int, default=None)
    parser.add_argument("--gpus-per-actor", type=float, default=None)
    parser.add_argument("--cpus-per-actor", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--max-retries", type=int, default=2,
                        help="runs after the first of a shard whose failure may not recur (an actor died, a transient storage fault, out of memory); other failures are reported at once (default: 2)")
    parser.add_argument("--max-shards", type=int, default=None)
    parser.add_argument("--storage-options", default="{}", help="fsspec options as JSON (credentials, endpoint)")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--demo", action="store_true", help=f"generate a synthetic corpus under {DEMO_DIR} and label it")
    parser.add_argument("--demo-shards", type=int, default=4)
    args = parser.parse_args(argv)
    if not args.demo and (not args.input or not args.output):
        parser.error("Expected --input and --output (or --demo)")
    return args


def parse_input_size(text: str) -> tuple[int, int]:
    """``"800,1333"`` -> ``(800, 1333)``; raises ValueError naming the flag otherwise."""
    try:
        short, long = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"Expected --input-size as SHORT,LONG (e.g. 800,1333), but got {text!r}") from None
    return short, long


def config_from(args: argparse.Namespace) -> LabelJobConfig:
    storage_options = json.loads(args.storage_options)
    input_size = parse_input_size(args.input_size) if args.input_size else None
    options = ModelOptions(device=args.device, dtype=args.dtype, score_threshold=args.score_threshold,
                           label_map=args.label_map, storage_options=storage_options, dataset=args.dataset,
                           input_size=input_size)
    return LabelJobConfig(
        input=args.input, output=args.output, model=args.model, model_options=options, gt=args.gt,
        gt_dir=args.gt_dir, actors=args.actors,
        gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor, batch_size=args.batch_size,
        shard_size=args.shard_size, max_retries=args.max_retries, max_shards=args.max_shards, dry_run=args.dry_run,
        overwrite=args.overwrite, storage_options=storage_options,
    )


def main(argv: list[str] | None = None) -> int:
    """Parses flags, builds the config, runs the job; 0 when every shard is committed, 1 if some failed, 2 on bad input."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.demo:
        from segcore.synthetic import write_demo_shards

        args.input = write_demo_shards(f"{DEMO_DIR}/corpus", args.demo_shards)
        if not args.output:  # the demo's own folder: a rerun with other settings replaces it
            args.output, args.overwrite = f"{DEMO_DIR}/labels", True
    from segcore.runtime.driver import run_label_job

    try:
        config = config_from(args)
        result = run_label_job(config, reduce=True)
    except DuplicateTruth as error:  # after the labelling: the labels are committed, the metrics are refused
        print(f"error: {error} (the labels are committed; no metrics were written)", file=sys.stderr)
        return 1
    except (ValueError, ManifestMismatch, FileNotFoundError, JobLocked) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except LockLost as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(summary_lines(result)))
    if not config.dry_run:
        from segcore.metrics.stats import format_summary
        from segcore.runtime.evaluation import format_table

        metrics = result["metrics"]
        if "pq" in metrics:
            print(format_table(metrics["pq"], result["categories"], per_class=True))
        else:
            print(format_summary(metrics["stats"]))
        left_out = metrics.get("shards_left_out") or []
        if left_out:  # committed, but their partials could not be read: no number above counts them
            named = "; ".join(f"{entry['shard']}: {entry['error']}" for entry in left_out[:5])
            print(f"error: {len(left_out)} committed shards are left out of the metrics, as their partials could not "
                  f"be read: {named}. Relabel them (rerun with --overwrite)", file=sys.stderr)
            return 1
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
