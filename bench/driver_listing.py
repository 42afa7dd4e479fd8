"""Benchmark: the driver's own cost per shard as the shard count grows (issue 7, goal 3, second half).

    python bench/driver_listing.py [--counts 1000 10000 100000] [--repeats 3] [--root DIR]
        [--json bench/out/driver_listing.json] [--smoke]

Shard names are never opened. Two inputs per count N, both as a job names them:

- ``brace``: ``<dir>/corpus-{000000..N-1}.tar``, expanded without touching storage (the files need not exist);
- ``glob``: ``<dir>/N/*.tar`` over a local folder of N empty ``.tar`` files (made once, 0 bytes each), so the
  listing is one real directory listing through fsspec, as a bucket prefix would be.

For each, timed with ``time.perf_counter`` (repeats interleaved over the counts and inputs, best and median kept),
then once more under ``tracemalloc`` for the peak of Python allocations:

- ``list_shards``: ``segcore.io.shards.list_shards`` alone;
- ``plan (new)``: ``segcore.runtime.labeling.plan`` on a fresh local output: validation, the demo model's label map,
  listing, the manifest (which lists every shard), the output lock, the create-only manifest write, the marker
  scan; the lock is released afterwards;
- ``plan (resume)``: ``plan`` again on that output after every shard was made to look committed (a one-byte
  ``shards/<id>.parquet`` and a marker ``_done/<id>`` naming it): the manifest is read back and compared, both
  folders are listed and all N markers read and checked, nothing is pending;
- ``committed_shards``: ``segcore.io.commit.committed_shards`` alone on that output (two listings, no reads).

RSS: the process's resident set after each step and its peak (``ru_maxrss``); counts run in ascending order, so a
growth of the peak belongs to the larger count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from segcore.io.commit import Output, committed_shards
from segcore.io.shards import list_shards
from segcore.models.registry import ModelOptions
from segcore.runtime.labeling import LabelJobConfig, plan

STEPS = ("list_shards", "plan (new)", "plan (resume)", "committed_shards")
INPUTS = ("brace", "glob")


def rss_mib() -> float:
    """The resident set now, MiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_folder(folder: Path, count: int) -> None:
    """``count`` empty ``corpus-NNNNNN.tar`` files (kept between runs; a ``complete`` file marks a finished one)."""
    if (folder / "complete").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        os.close(os.open(folder / f"corpus-{index:06d}.tar", os.O_CREAT | os.O_WRONLY, 0o644))
    (folder / "complete").touch()


def input_uri(root: Path, kind: str, count: int) -> str:
    if kind == "brace":
        return str(root / "brace" / f"corpus-{{000000..{count - 1:06d}}}.tar")
    return str(root / f"files-{count}" / "*.tar")


def mark_all(output: str, shard_ids: list[str]) -> None:
    """A committed-looking shard per id, as if every shard had been committed: a one-byte data file
    ``shards/<id>.parquet`` and a marker ``_done/<id>`` naming it (shard id, rows, data size), which is what a
    resume lists and reads."""
    data_folder, marker_folder = Path(output) / "shards", Path(output) / "_done"
    data_folder.mkdir(parents=True, exist_ok=True)
    marker_folder.mkdir(parents=True, exist_ok=True)
    for shard_id in shard_ids:
        (data_folder / f"{shard_id}.parquet").write_bytes(b"\0")
        marker = {"shard_id": shard_id, "rows": 0, "data_bytes": 1}
        (marker_folder / shard_id).write_text(json.dumps(marker, sort_keys=True))


def run_steps(uri: str, output: str, count: int) -> dict[str, float]:
    """The four steps once, in order, on a fresh output; seconds of each."""
    shutil.rmtree(output, ignore_errors=True)
    config = LabelJobConfig(input=uri, output=output, model="demo", model_options=ModelOptions(device="cpu"))
    seconds = {}
    started = time.perf_counter()
    shards = list_shards(uri)
    seconds["list_shards"] = time.perf_counter() - started
    if len(shards) != count:
        raise RuntimeError(f"Expected {count} shards from {uri}, but listed {len(shards)}")
    for step, prepare in (("plan (new)", None), ("plan (resume)", lambda: mark_all(output, [s.shard_id
                                                                                              for s in shards]))):
        if prepare:
            prepare()
        started = time.perf_counter()
        job = plan(config)
        seconds[step] = time.perf_counter() - started
        job.lock.release()
        expected = 0 if step == "plan (resume)" else count
        if len(job.shards) != count or len(job.pending) != expected:
            raise RuntimeError(f"Expected {count} shards, {expected} pending, but got {len(job.shards)}, "
                               f"{len(job.pending)}")
    started = time.perf_counter()
    done = committed_shards(Output.open(output))
    seconds["committed_shards"] = time.perf_counter() - started
    if len(done) != count:
        raise RuntimeError(f"Expected {count} markers, but found {len(done)}")
    return seconds


def run_memory(uri: str, output: str, count: int) -> dict[str, dict]:
    """The steps once more, each under tracemalloc: peak Python allocations (MiB) and RSS after (MiB)."""
    shutil.rmtree(output, ignore_errors=True)
    config = LabelJobConfig(input=uri, output=output, model="demo", model_options=ModelOptions(device="cpu"))
    memory = {}

    def traced(step: str, work):
        tracemalloc.start()
        value = work()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        memory[step] = {"tracemalloc_peak_mib": peak / 2**20, "rss_after_mib": rss_mib(),
                        "peak_rss_mib": peak_rss_mib()}
        return value

    shards = traced("list_shards", lambda: list_shards(uri))
    traced("plan (new)", lambda: plan(config)).lock.release()
    mark_all(output, [s.shard_id for s in shards])
    traced("plan (resume)", lambda: plan(config)).lock.release()
    traced("committed_shards", lambda: committed_shards(Output.open(output)))
    return memory


def marginal(rows: list[dict], row: dict, step: str) -> str:
    """Microseconds per added shard from the next smaller count of the same input (best times), or "-"."""
    smaller = [r for r in rows if r["input"] == row["input"] and r["count"] < row["count"]]
    if not smaller:
        return "-"
    previous = max(smaller, key=lambda r: r["count"])
    added = min(row["seconds"][step]) - min(previous["seconds"][step])
    return f"{added / (row['count'] - previous['count']) * 1e6:.1f}"


def table(rows: list[dict]) -> str:
    """Markdown: per input, count and step, best and median seconds, microseconds and bytes per shard."""
    lines = ["| input | shards | step | best s | median s | best µs/shard | marginal µs/shard | tracemalloc peak MiB | "
             "bytes/shard | RSS after MiB |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        for step in STEPS:
            times, memory = row["seconds"][step], row["memory"][step]
            lines.append(f"| {row['input']} | {row['count']:,} | {step} | {min(times):.3f} | "
                         f"{statistics.median(times):.3f} | {min(times) / row['count'] * 1e6:.1f} | "
                         f"{marginal(rows, row, step)} | "
                         f"{memory['tracemalloc_peak_mib']:.1f} | "
                         f"{memory['tracemalloc_peak_mib'] * 2**20 / row['count']:.0f} | "
                         f"{memory['rss_after_mib']:.0f} |")
    return "\n".join(lines)


def manifest_encoding(count: int, repeats: int) -> dict[str, float]:
    """Seconds (best of ``repeats``, interleaved) to encode a ``count``-shard manifest as ``claim_output`` did
    (``indent=1``: Python's pure-Python encoder) and does (no indent: the C encoder)."""
    from segcore.categories import coco_panoptic_categories

    manifest = {"input": "corpus", "categories": coco_panoptic_categories().to_coco(),
                "shards": [{"shard_id": f"corpus-{i:06d}", "kind": "tar", "uri": f"s3://bucket/corpus-{i:06d}.tar",
                            "images": None} for i in range(count)]}
    best = {"indent=1": math.inf, "compact": math.inf}
    for _ in range(repeats):
        for name, options in (("indent=1", {"indent": 1}), ("compact", {})):
            started = time.perf_counter()
            json.dumps(manifest, sort_keys=True, **options).encode()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", default=None, help="where the empty shard files and outputs go (default: a "
                                                     "temporary folder, removed at the end)")
    parser.add_argument("--json", default="bench/out/driver_listing.json")
    parser.add_argument("--smoke", action="store_true", help="counts 10 and 100, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.counts, args.repeats = [10, 100], 1
    load_before = os.getloadavg()
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="driver_listing-"))
    try:
        started = time.perf_counter()
        for count in args.counts:
            make_folder(root / f"files-{count}", count)
        made = time.perf_counter() - started
        cases = [(kind, count) for count in sorted(args.counts) for kind in INPUTS]
        for kind in INPUTS:  # imports, the model's label map, the page cache: not part of any count
            run_steps(input_uri(root, kind, min(args.counts)), str(root / "out"), min(args.counts))
        seconds = {case: {step: [] for step in STEPS} for case in cases}
        for repeat in range(args.repeats):
            for kind, count in cases:
                for step, value in run_steps(input_uri(root, kind, count), str(root / "out"), count).items():
                    seconds[(kind, count)][step].append(value)
            print(f"repeat {repeat + 1}/{args.repeats} done, load {os.getloadavg()[0]:.2f}", flush=True)
        rows = [{"input": kind, "count": count, "seconds": seconds[(kind, count)],
                 "memory": run_memory(input_uri(root, kind, count), str(root / "out"), count)}
                for kind, count in cases]
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    print(table(rows))
    encoding = manifest_encoding(max(args.counts), max(args.repeats, 2))
    print(f"manifest of {max(args.counts)} shards: json.dumps {encoding['indent=1']:.3f} s with indent=1, "
          f"{encoding['compact']:.3f} s without")
    load = {"before": load_before, "after": os.getloadavg()}
    print(f"empty files made in {made:.1f} s; load average (1, 5, 15 min): before {load['before']}, "
          f"after {load['after']}")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    document = {"args": vars(args), "machine": machine, "load": load, "files_seconds": made, "rows": rows,
                "manifest_encoding": encoding}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
