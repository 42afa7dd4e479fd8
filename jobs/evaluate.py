"""Evaluate COCO-panoptic predictions: PQ / SQ / RQ exactly as panopticapi computes them.

    python -m jobs.evaluate --gt-json G.json --pred-json P.json [--gt-dir GD] [--pred-dir PD] --out M.json
    python -m jobs.evaluate --output URI    # the reduce of a jobs.label output: its committed PQ partials
    python -m jobs.evaluate --demo          # a seeded synthetic corpus, evaluated end to end
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from segcore.categories import categories_from_json
from segcore.io import storage
from segcore.metrics.pq import PQInputError
from segcore.runtime.evaluation import EvaluationConfig, evaluate, format_table

DEMO_DIR = "out/demo_evaluate"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--gt-json", help="ground truth COCO panoptic JSON (path or fsspec URI)")
    parser.add_argument("--pred-json", help="predictions COCO panoptic JSON")
    parser.add_argument("--gt-dir", help="gt PNG folder (default: --gt-json without .json)")
    parser.add_argument("--pred-dir", help="predicted PNG folder (default: --pred-json without .json)")
    parser.add_argument("--out", help="write metrics JSON here")
    parser.add_argument("--per-class", action="store_true", help="print one row per class")
    parser.add_argument("--workers", type=int, default=0, help="Ray workers (0: evaluate in this process)")
    parser.add_argument("--storage-options", type=json.loads, default={}, help="fsspec options as JSON")
    parser.add_argument("--output", help="a jobs.label output: sum its partials into metrics.json and report.md")
    parser.add_argument("--demo", action="store_true", help=f"evaluate a synthetic corpus written to {DEMO_DIR}")
    parser.add_argument("--demo-images", type=int, default=200, help="images in the demo corpus")
    args = parser.parse_args(argv)
    if not args.demo and not args.output and not (args.gt_json and args.pred_json):
        parser.error("--gt-json and --pred-json are required (or --output, or --demo)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.output:
        return reduce_output_job(args.output, args.storage_options, args.per_class)
    if args.demo:
        from segcore.synthetic import write_corpus

        paths = write_corpus(DEMO_DIR, args.demo_images, seed=0)
        args.gt_json, args.pred_json = str(paths.gt_json), str(paths.pred_json)
        args.out = args.out or f"{DEMO_DIR}/metrics.json"
    try:
        config = EvaluationConfig(
            gt_json=args.gt_json, pred_json=args.pred_json, gt_dir=args.gt_dir, pred_dir=args.pred_dir,
            workers=args.workers, storage_options=args.storage_options,
        )
        results = evaluate(config)
    except (PQInputError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    categories = categories_from_json(storage.read_json(config.gt_json, config.storage_options))
    print(format_table(results["pq"], categories, per_class=args.per_class))
    if args.out:
        storage.write_json(args.out, results, config.storage_options)
        print(f"wrote {args.out}")
    return 0


def reduce_output_job(uri: str, storage_options: dict, per_class: bool) -> int:
    """Reduces a labeling job's output (label statistics; PQ with ground truth); exit 2 when it is not one."""
    from segcore.io.commit import MANIFEST, Output
    from segcore.metrics.stats import format_summary
    from segcore.runtime.reduce import job_categories_of, reduce_output

    output = Output.open(uri, storage_options)
    if not output.fs.exists(output.path(MANIFEST)):
        print(f"error: Expected a jobs.label output with {MANIFEST} at {uri}, but found none", file=sys.stderr)
        return 2
    results = reduce_output(output, storage_options)
    if "pq" in results:
        print(format_table(results["pq"], job_categories_of(output), per_class=per_class))
    else:
        print(f"no ground truth under {uri}: label statistics only\n")
        print(format_summary(results["stats"]))
    print(f"wrote {output.path('metrics.json')} and report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
