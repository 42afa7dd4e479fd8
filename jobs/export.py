"""Exports a labeling job's predictions: ``python -m jobs.export --output URI --coco-json DEST.json``.

Writes COCO panoptic predictions (DEST.json and the PNG folder DEST/ beside it, panopticapi's convention) that
``python -m jobs.evaluate``, panopticapi's ``pq_compute`` and detectron2's COCO panoptic loader read.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from segcore.export import export_coco_panoptic


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.export", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="a jobs.label output (local path or fsspec URI)")
    parser.add_argument("--coco-json", required=True, help="where to write the COCO panoptic JSON (PNGs beside it)")
    parser.add_argument("--storage-options", type=json.loads, default={}, help="fsspec options as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """0 when exported, 2 on bad input."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        summary = export_coco_panoptic(args.output, args.coco_json, args.storage_options)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {summary.images} images to {summary.json_uri} and {summary.png_folder}/"
          + (f" ({summary.skipped} rows without a map left out)" if summary.skipped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
