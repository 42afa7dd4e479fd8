"""Benchmark: N worker processes sharing a node's cores, each feeding its own stood-in device (issue 7, goal 3).

    python bench/actor_scaling.py [--actors 1 2] [--device-ms 8] [--shard-images 512] [--repeats 3]
        [--decode-threads 4] [--encode-threads 2] [--json bench/out/actor_scaling.json] [--smoke]

Goal 3 asks for N actors ≥ 0.9 × N × one actor. An actor is one process holding a ``ShardWorker``; on a GPU node
each has its own GPU and all share the node's CPUs, which is what this measures without GPUs or Ray: for each N,
N processes of ``bench/device_overlap.py`` (the real worker, its model replaced by a device stand-in that sleeps
``--device-ms`` per image; see that script) start together after their warm-up (a file barrier) and label the same
512-image shards, with and without ground truth. Reported per N and ground-truth setting: the summed images/s of
the N processes (each process's best repeat), its ratio to N × the single process's, and the mean device
utilisation. Ray's own cost is not in it (the driver's cost per shard is ``bench/driver_listing.py``'s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_actors(n: int, args, folder: Path) -> list[dict]:
    """Starts ``n`` device_overlap processes behind one barrier; returns their JSON documents."""
    barrier = folder / f"barrier-{n}"
    outputs = [folder / f"actors-{n}-{i}.json" for i in range(n)]
    command = [sys.executable, str(ROOT / "bench" / "device_overlap.py"), "--device-ms", str(args.device_ms),
               "--shard-images", str(args.shard_images), "--images", str(args.images), "--repeats", str(args.repeats),
               "--batch", str(args.batch), "--decode-threads", str(args.decode_threads), "--encode-threads",
               str(args.encode_threads), "--barrier", str(barrier), "--barrier-count", str(n)]
    processes = [subprocess.Popen([*command, "--json", str(out)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for out in outputs]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode:
            raise RuntimeError(f"Expected device_overlap.py to succeed, but it exited {process.returncode}: "
                               f"{stderr[-2000:]}")
    return [json.loads(out.read_text()) for out in outputs]


def summarise(documents: dict[int, list[dict]]) -> list[dict]:
    """Per actor count and ground-truth setting: summed img/s, ratio to N x one, mean utilisation."""
    rows = []
    single = {r["truth"]: r["pipeline_img_s"] for r in documents[min(documents)][0]["results"]}
    for n, runs in documents.items():
        for truth in single:
            results = [next(r for r in run["results"] if r["truth"] == truth) for run in runs]
            total = sum(r["pipeline_img_s"] for r in results)
            rows.append({
                "actors": n, "truth": truth, "img_s": total,
                "ratio_to_n_times_one": total / (n * single[truth]) if min(documents) == 1 else None,
                "device_utilisation_mean": sum(r["device_utilisation"]["best_run"] for r in results) / n,
                "cpu_cores_busy": sum(r["cpu_cores_busy"] for r in results),
                "start_spread_s": max(run["started_measuring"] for run in runs)
                - min(run["started_measuring"] for run in runs),
            })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device-ms", type=float, default=8.0)
    parser.add_argument("--images", type=int, default=64, help="distinct samples of the corpus")
    parser.add_argument("--shard-images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--decode-threads", type=int, default=4)
    parser.add_argument("--encode-threads", type=int, default=2)
    parser.add_argument("--json", default="bench/out/actor_scaling.json")
    parser.add_argument("--smoke", action="store_true", help="1 and 2 actors, 8-image shards, 1 ms, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.actors, args.images, args.shard_images, args.device_ms, args.repeats = [1, 2], 8, 8, 1.0, 1
    load_before = os.getloadavg()
    documents = {}
    with tempfile.TemporaryDirectory(prefix="actor_scaling-") as folder:
        for n in args.actors:
            started = time.perf_counter()
            documents[n] = run_actors(n, args, Path(folder))
            print(f"{n} actor(s) done in {time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.2f}",
                  flush=True)
    rows = summarise(documents)
    for row in rows:
        ratio = row["ratio_to_n_times_one"]
        print(f"{row['actors']} actor(s), {row['truth']}: {row['img_s']:.1f} img/s"
              + (f" = {ratio:.2f} x N x one" if ratio is not None else "")
              + f", device utilisation {row['device_utilisation_mean']:.3f}, {row['cpu_cores_busy']:.2f} cores busy, "
              f"starts within {row['start_spread_s']:.2f} s")
    document = {"args": vars(args), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "load": {"before": load_before, "after": os.getloadavg()}, "rows": rows,
                "runs": {str(n): [d["results"] for d in docs] for n, docs in documents.items()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
