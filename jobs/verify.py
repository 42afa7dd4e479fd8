"""Verifies a jobs.label output: ``python -m jobs.verify --output URI [--storage-options JSON] [--json REPORT]``.

Checks every committed shard (data file against its marker, schema, rows, PNGs against segments, categories,
errors, statistics and PQ partials) and prints what is wrong. Exit 0: no errors (warnings allowed); 1: errors
found; 2: not a jobs.label output, or bad flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from segcore.io import storage
from segcore.runtime.verify import NotAnOutput, verify_output

MAX_PRINTED = 50  # problems printed; --json holds all of them


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.verify", description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="the jobs.label output (local path or fsspec URI)")
    parser.add_argument("--storage-options", type=json.loads, default={}, help="fsspec options as JSON")
    parser.add_argument("--json", default=None, help="write the full report (per shard: state, problems) here")
    args = parser.parse_args(argv)
    if not isinstance(args.storage_options, dict):
        parser.error(f"Expected --storage-options to be a JSON object, but got {args.storage_options!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Parses flags, verifies the output, prints a summary; 0 when all is well, 1 with errors, 2 on bad input."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")  # a line per shard
    try:
        report = verify_output(args.output, args.storage_options)
    except NotAnOutput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in (report.errors + report.warnings)[:MAX_PRINTED]:
        print(problem)
    if len(report.problems) > MAX_PRINTED:
        print(f"... and {len(report.problems) - MAX_PRINTED} more" + (" (see the --json report)" if args.json else ""))
    print(f"{args.output}: {report.summary_line()}")
    if args.json:
        storage.write_json(args.json, report.to_json())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
