"""Exports a labeling job's predictions: ``python -m jobs.export --output URI`` with one or more of
``--coco-json DEST.json``, ``--semantic-dir DIR``, ``--instances-json DEST.json``.

``--coco-json`` writes COCO panoptic predictions (DEST.json and the PNG folder DEST/ beside it, panopticapi's
convention) that ``python -m jobs.evaluate``, panopticapi's ``pq_compute`` and detectron2's COCO panoptic loader
read; ``--semantic-dir`` one semantic label PNG per image (category id per pixel, 0 = VOID); ``--instances-json``
the thing segments as COCO instance predictions (RLE masks) for pycocotools' COCOeval. See docs/export.md.

The other way: ``python -m jobs.export --import-coco-json P.json --output URI [--gt GT.json]`` turns COCO panoptic
predictions made elsewhere (P.json and its PNG folder) into a labeling output, whose reduce gives every view of
quality (PQ, semantic, instance, extras) exactly as for the project's own predictions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Callable, Mapping

from segcore.export import ExportSummary, export_coco_panoptic, export_instances, export_semantic
from segcore.io.lock import JobLocked


@dataclass(frozen=True)
class Export:
    """One export the CLI offers: its flag (whose value is the destination), and the library call."""

    flag: str
    metavar: str
    help: str
    run: Callable[[str, str, Mapping], ExportSummary]
    counted: str | None = None  # what ExportSummary.annotations counts, when the summary line shows it

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


EXPORTS = (
    Export("--coco-json", "DEST.json", "COCO panoptic JSON (its PNG folder DEST/ beside it)", export_coco_panoptic),
    Export("--semantic-dir", "DIR", "folder of semantic label PNGs, one per image", export_semantic),
    Export("--instances-json", "DEST.json", "COCO instance predictions (thing segments, RLE masks)",
           export_instances, counted="instance annotations"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.export", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="a jobs.label output (local path or fsspec URI)")
    for export in EXPORTS:
        parser.add_argument(export.flag, metavar=export.metavar, help=export.help)
    parser.add_argument("--storage-options", type=json.loads, default={}, help="fsspec options as JSON")
    group = parser.add_argument_group("import", "COCO panoptic predictions made elsewhere -> a labeling output")
    group.add_argument("--import-coco-json", metavar="P.json", help="the predictions' COCO panoptic JSON")
    group.add_argument("--pred-dir", help="the predictions' PNG folder (default: P.json without .json)")
    group.add_argument("--gt", help="COCO panoptic ground-truth JSON: every view of quality in the reduce")
    group.add_argument("--gt-dir", help="the ground truth's PNG folder (default: the JSON without .json)")
    group.add_argument("--images-per-shard", type=int, default=1000, help="annotations per shard (default 1000)")
    group.add_argument("--workers", type=int, default=2, help="threads converting images (default 2)")
    group.add_argument("--overwrite", action="store_true", help="start over on an existing output")
    args = parser.parse_args(argv)
    exports = [e.flag for e in EXPORTS if getattr(args, e.dest)]
    if args.import_coco_json:
        if exports:
            parser.error(f"Expected either --import-coco-json or exports, but got both ({', '.join(exports)})")
    else:
        if not exports:
            parser.error(f"Expected at least one of {', '.join(e.flag for e in EXPORTS)} (or --import-coco-json), "
                         "but got none")
        given = [f"--{name.replace('_', '-')}" for name in ("pred_dir", "gt", "gt_dir") if getattr(args, name)]
        if given or args.overwrite:
            parser.error(f"Expected {', '.join(given + ['--overwrite'] * args.overwrite)} only with "
                         "--import-coco-json")
    return args


def summary_line(export: Export, summary: ExportSummary) -> str:
    where = " and ".join(filter(None, (summary.json_uri, summary.png_folder and f"{summary.png_folder}/")))
    counted = f" ({summary.annotations} {export.counted})" if export.counted else ""
    skipped = f" ({summary.skipped} rows without a map left out)" if summary.skipped else ""
    return f"exported {summary.images} images to {where}{counted}{skipped}"


def main(argv: list[str] | None = None) -> int:
    """0 when every export asked for was written, 2 on bad input (exports before the failing one are kept)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.import_coco_json:
        return import_main(args)
    for export in EXPORTS:
        dest = getattr(args, export.dest)
        if not dest:
            continue
        try:
            summary = export.run(args.output, dest, args.storage_options)
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(summary_line(export, summary))
    return 0


def import_main(args: argparse.Namespace) -> int:
    """Imports predictions and reduces the output; 0 when done, 2 on bad input or a busy or foreign output."""
    from segcore.importer import import_coco_panoptic

    try:
        summary = import_coco_panoptic(args.import_coco_json, args.output, pred_dir=args.pred_dir, gt=args.gt,
                                       gt_dir=args.gt_dir, images_per_shard=args.images_per_shard,
                                       workers=args.workers, storage_options=args.storage_options,
                                       overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, JobLocked) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"imported {summary.images} images into {summary.shards} shards ({summary.skipped} already committed, "
          f"{summary.errors} error rows) at {args.output}")
    if "pq" in summary.metrics:
        print(f"PQ {100 * summary.metrics['pq']['All']['pq']:.2f} over {summary.metrics['images']} images; "
              f"see {args.output}/metrics.json and report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
