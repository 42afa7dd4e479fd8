"""Benchmark: the reduce of a job output as the shard count grows, on local files and behind a slow object store.

    python bench/reduce_scale.py [--counts 100 1000 10000 100000] [--baseline-code DIR] [--baseline-counts ...]
        [--s3-shards 10000] [--s3-latency 0.03] [--images-per-shard 16] [--source demo|coco] [--root DIR]
        [--json bench/out/reduce_scale.json] [--smoke]

1. A real job output: the demo model labels a generated corpus of 2 tar shards x ``--images-per-shard`` images
   with embedded ground truth (segcore's worker, no Ray, as tests/runtime/test_verify.py does), no reduce; or
   (``--source coco``) the two COCO val photos of tests/data with their ground truth imported as predictions
   (``segcore.importer``: one shard of 2 images, every view's partials).
2. Replication to N shards, as the worker would have written them: each new shard hard-links a source shard's
   data file, gets that shard's statistics and PQ partial with every image rank moved to its own index
   (``index * RANK_STRIDE + position``), its errors file and a marker naming it; the manifest lists the N shards.
3. The reduce (``segcore.runtime.reduce.reduce_output``: metrics.json, report.md, report.html) in a fresh
   subprocess; measured: wall, CPU (user + system of the child) and peak RSS (the child's ``VmHWM``).
4. ``--s3-shards``: an output of that many shards uploaded to a local S3 server (moto, threaded) and reduced
   through tests/faulty_s3.py's proxy, which adds ``--s3-latency`` seconds to every request; the proxy counts the
   requests. s3fs gets ``max_pool_connections`` = the reduce's read window, so the window is not capped at 10.

``--baseline-code DIR`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/before <commit>``) runs
steps 1-4 with that code as well (for ``--baseline-counts``), so ratios come from one run on one machine. The
source output is made by each code version itself, as its partials' formats may differ.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRIDE = 1_000_000_000  # segcore.runtime.truth_use.RANK_STRIDE (kept literal: the baseline code may predate it)

MAKE_SOURCE = """
import sys
from segcore.runtime.labeling import shard_truth
from segcore.models.registry import ModelOptions
from segcore.runtime.labeling import LabelJobConfig, plan
from segcore.runtime.worker import ShardWorker
from segcore.synthetic import write_demo_shards
root, images = sys.argv[1], int(sys.argv[2])
pattern = write_demo_shards(root + "/corpus", n_shards=2, images_per_shard=images)
config = LabelJobConfig(input=pattern, output=root + "/labels", model="demo",
                        model_options=ModelOptions(device="cpu"), batch_size=8, decode_threads=2, encode_threads=1)
job = plan(config)
worker = ShardWorker(config.worker_config(job.categories))
try:
    for index, spec in enumerate(job.shards):
        worker.label_shard(spec, index, shard_truth(job.truth, spec))
finally:
    worker.close()
    job.lock.release()
"""

MAKE_COCO_SOURCE = """
import sys
from segcore.importer import import_coco_panoptic
gt, gt_dir, out = sys.argv[1:4]
import_coco_panoptic(gt, out, pred_dir=gt_dir, gt=gt, images_per_shard=2)
"""

REDUCE = """
import json, resource, sys, time
from segcore.io.commit import Output
from segcore.runtime.reduce import reduce_output
options = json.loads(sys.argv[2])
start = time.perf_counter()
document = reduce_output(Output.open(sys.argv[1], options or None), options or None)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM: this process's own peak (ru_maxrss would keep the peak of the parent it was forked from)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
print(json.dumps({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": peak,
                  "shards": document["shards"], "images": document["stats"]["images"],
                  "pq": document.get("pq", {}).get("All"), "ap": document.get("instances", {}).get("AP"),
                  "left_out": len(document.get("shards_left_out", []))}))
"""


def run_python(code_dir: Path, script: str, *args: str, env: dict | None = None) -> str:
    environment = dict(os.environ, PYTHONPATH=str(code_dir), RAY_AUTH_MODE="disabled", **(env or {}))
    # cwd: with -c, the current folder comes first on sys.path; it must be the code measured
    result = subprocess.run([sys.executable, "-c", script, *args], env=environment, capture_output=True, text=True,
                            cwd=code_dir)
    if result.returncode:
        raise RuntimeError(f"{script.splitlines()[1:3]}... failed:\n{result.stderr[-3000:]}")
    return result.stdout


def make_source(code_dir: Path, root: Path, images: int, kind: str = "demo") -> Path:
    if kind == "coco":  # the two COCO val photos, their ground truth imported as predictions: one shard
        sample = ROOT / "tests" / "data" / "coco_panoptic_sample"
        run_python(code_dir, MAKE_COCO_SOURCE, str(sample / "panoptic_examples.json"),
                   str(sample / "panoptic_examples"), str(root / "labels"))
    else:
        run_python(code_dir, MAKE_SOURCE, str(root), str(images))
    return root / "labels"


def moved_ranks(document, index: int):
    """The document with every image rank moved to shard ``index`` (PQ partials, extras, instance partials of
    both versions)."""
    def move(rank: int) -> int:
        return index * STRIDE + rank % STRIDE

    if "matches" in document:  # a PQ partial
        matches = dict(document["matches"], image_rank=[move(r) for r in document["matches"]["image_rank"]])
        return dict(document, matches=matches)
    document = dict(document)
    if document.get("pq_extras"):
        document["pq_extras"] = dict(document["pq_extras"], images=[
            dict(record, rank=move(record["rank"])) for record in document["pq_extras"]["images"]])
    instances = document.get("instances")
    if instances:
        if instances.get("version", 1) == 1:
            instances = {key: [dict(item, rank=move(item["rank"])) for item in value] if key in ("images", "gt", "dt")
                         else value for key, value in instances.items()}
        else:
            instances = dict(instances, images=[move(r) for r in instances["images"]],
                             dt=dict(instances["dt"], rank=[move(r) for r in instances["dt"]["rank"]]))
        document["instances"] = instances
    return document


def replicate(source: Path, dest: Path, count: int) -> dict:
    """Writes an output of ``count`` shards made from the source's; returns bytes per shard by folder."""
    manifest = json.loads((source / "manifest.json").read_text())
    sources = sorted(p.name for p in (source / "_done").iterdir())
    for folder in ("shards", "errors", "stats", "pq", "_done"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    templates = {}
    for shard_id in sources:
        templates[shard_id] = {
            "marker": json.loads((source / "_done" / shard_id).read_text()),
            "stats": json.loads((source / "stats" / f"{shard_id}.json").read_text()),
            "pq": json.loads((source / "pq" / f"{shard_id}.json").read_text())
            if (source / "pq" / f"{shard_id}.json").exists() else None,
            "errors": (source / "errors" / f"{shard_id}.jsonl").read_bytes()
            if (source / "errors" / f"{shard_id}.jsonl").exists() else None,
        }
    sizes = {"stats": 0, "pq": 0, "marker": 0}
    shards = []
    for index in range(count):
        origin = sources[index % len(sources)]
        template = templates[origin]
        shard_id = f"rep-{index:07d}"
        os.link(source / "shards" / f"{origin}.parquet", dest / "shards" / f"{shard_id}.parquet")
        stats = json.dumps(moved_ranks(template["stats"], index)).encode()
        (dest / "stats" / f"{shard_id}.json").write_bytes(stats)
        sizes["stats"] += len(stats)
        if template["pq"] is not None:
            partial = json.dumps(moved_ranks(template["pq"], index)).encode()
            (dest / "pq" / f"{shard_id}.json").write_bytes(partial)
            sizes["pq"] += len(partial)
        if template["errors"] is not None:
            (dest / "errors" / f"{shard_id}.jsonl").write_bytes(template["errors"])
        marker = json.dumps(dict(template["marker"], shard_id=shard_id), sort_keys=True).encode()
        (dest / "_done" / shard_id).write_bytes(marker)
        sizes["marker"] += len(marker)
        spec = dict(next(s for s in manifest["shards"] if s["shard_id"] == origin), shard_id=shard_id)
        shards.append(spec)
    (dest / "manifest.json").write_text(json.dumps(dict(manifest, shards=shards)))
    return {name: total / count for name, total in sizes.items()}


def reduce_local(code_dir: Path, output: Path) -> dict:
    return json.loads(run_python(code_dir, REDUCE, str(output), "{}").strip().splitlines()[-1])


def reduce_behind_latency(code_dir: Path, output: Path, latency: float, window: int) -> dict:
    """Uploads ``output`` to a local S3 server and reduces it through a proxy adding ``latency`` per request."""
    sys.path.insert(0, str(ROOT / "tests"))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    import s3fs
    from faulty_s3 import FaultyS3Proxy
    from moto.server import ThreadedMotoServer

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(name, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        direct = s3fs.S3FileSystem(key="testing", secret="testing", skip_instance_cache=True,
                                   client_kwargs={"endpoint_url": f"http://{host}:{port}"},
                                   config_kwargs={"max_pool_connections": 64})
        bucket = f"bench-{uuid.uuid4().hex[:12]}"  # moto's state outlives its server within a process
        direct.mkdir(bucket)
        files = {f"{bucket}/out/{path.relative_to(output)}": path.read_bytes()
                 for path in output.rglob("*") if path.is_file() and path.name not in ("metrics.json", "report.md",
                                                                                      "report.html")}
        names = list(files)
        for start in range(0, len(names), 2000):
            direct.pipe({name: files[name] for name in names[start:start + 2000]})
        with FaultyS3Proxy(f"http://{host}:{port}", delay=latency) as proxy:
            options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": proxy.endpoint_url},
                       "config_kwargs": {"max_pool_connections": window}}
            result = json.loads(run_python(code_dir, REDUCE, f"s3://{bucket}/out", json.dumps(options))
                                .strip().splitlines()[-1])
            result["requests"] = len(proxy.requests)
        return result
    finally:
        server.stop()


def measure(code_dir: Path, label: str, counts: list[int], s3_shards: int, latency: float, images: int,
            root: Path, kind: str = "demo") -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix=f"reduce-{label}-", dir=root))
    source = make_source(code_dir, work / "source", images, kind)
    rows = []
    for count in counts:
        dest = work / f"n{count}"
        started = time.perf_counter()
        sizes = replicate(source, dest, count)
        made = time.perf_counter() - started
        result = reduce_local(code_dir, dest)
        rows.append({**result, "code": label, "source": kind, "store": "local", "shards": count,
                     "bytes_per_shard": sizes, "replicate_s": made})
        print(json.dumps(rows[-1]), flush=True)
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    if s3_shards:
        dest = work / f"s3-{s3_shards}"
        replicate(source, dest, s3_shards)
        result = reduce_behind_latency(code_dir, dest, latency, 64)
        rows.append({**result, "code": label, "source": kind, "store": f"s3 + {latency * 1000:.0f} ms",
                     "shards": s3_shards, "requests_per_shard": result["requests"] / s3_shards})
        print(json.dumps(rows[-1]), flush=True)
        subprocess.run(["rm", "-rf", str(dest)], check=True)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="*", default=[100, 1000, 10000, 100000],
                        help="shard counts reduced from local files (default: %(default)s)")
    parser.add_argument("--baseline-code", type=Path, help="a checkout of earlier code to measure as well")
    parser.add_argument("--baseline-counts", type=int, nargs="*", default=[100, 1000, 10000],
                        help="shard counts for the baseline (default: %(default)s)")
    parser.add_argument("--s3-shards", type=int, default=10000, help="shards behind the slow store (0: skip)")
    parser.add_argument("--baseline-s3-shards", type=int, default=1000, help="the same for the baseline")
    parser.add_argument("--s3-latency", type=float, default=0.03, help="seconds added to each request")
    parser.add_argument("--images-per-shard", type=int, default=16, help="images per shard of the demo source")
    parser.add_argument("--source", choices=("demo", "coco"), default="demo",
                        help="demo: the demo model on a generated corpus with ground truth; coco: the two COCO val "
                             "photos (640x480, 20-40 segments), ground truth imported as predictions, 2 per shard")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "reduce_scale.json")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, to check the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.counts, args.baseline_counts, args.s3_shards, args.baseline_s3_shards = [2, 6], [2], 4, 0
        args.images_per_shard = 2
    rows = measure(ROOT, "this", args.counts, args.s3_shards, args.s3_latency, args.images_per_shard, args.root,
                   args.source)
    if args.baseline_code:
        rows += measure(args.baseline_code.resolve(), "baseline", args.baseline_counts, args.baseline_s3_shards,
                        args.s3_latency, args.images_per_shard, args.root, args.source)
    document = {"machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.machine()})",
                "date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:], "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1))
    return rows


if __name__ == "__main__":
    main()
