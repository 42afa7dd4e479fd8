"""Draws a jobs.label output's predictions over their images: ``python -m jobs.render --output URI --dest DIR``.

    python -m jobs.render --output URI --images ID1,ID2 --dest DIR    # these image ids
    python -m jobs.render --output URI --sample 8 --dest DIR          # a seeded sample (the default: 8 images)

Writes DEST/<image_id>.png: the prediction's overlay, beside the ground truth's when the job had ground truth.
Exit 0: written; 2: not a jobs.label output, unknown image ids, or bad flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from segcore.io import storage
from segcore.render import render_images

DEFAULT_SAMPLE = 8


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.render", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="the jobs.label output (local path or fsspec URI)")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--images", default=None, help="comma-separated image ids (the rows' image_id)")
    chosen.add_argument("--sample", type=int, default=None, help=f"this many images (default {DEFAULT_SAMPLE})")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--dest", required=True, help="folder for <image_id>.png (local path or fsspec URI)")
    parser.add_argument("--storage-options", type=json.loads, default={}, help="fsspec options as JSON")
    args = parser.parse_args(argv)
    if not isinstance(args.storage_options, dict):
        parser.error(f"Expected --storage-options to be a JSON object, but got {args.storage_options!r}")
    if args.sample is not None and args.sample < 1:
        parser.error(f"Expected --sample to be a positive int, but got {args.sample}")
    if args.images is not None and not [i for i in args.images.split(",") if i]:
        parser.error("Expected --images to name at least one image id")
    return args


def main(argv: list[str] | None = None) -> int:
    """Parses flags, renders, writes one PNG per image; 0 when written, 2 on bad input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    image_ids = [i for i in args.images.split(",") if i] if args.images is not None else None
    sample = None if image_ids else (args.sample or DEFAULT_SAMPLE)
    try:
        rendered = render_images(args.output, image_ids, sample, args.storage_options, args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folder = storage.Folder(args.dest, args.storage_options)
    folder.fs.makedirs(folder.path, exist_ok=True)
    for item in rendered:
        path = storage.join(folder.path, f"{item.image_id}.png")
        if "/" in item.image_id:  # keys of images in sub-folders
            folder.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        folder.fs.pipe_file(path, item.png)
    print(f"{len(rendered)} images written to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
