"""Benchmark: how much of the worker's CPU work hides behind a device's forward pass (issue 7, goals 1 and 4, on a CPU).

    python bench/device_overlap.py [--device-ms 2 4 8] [--images 64] [--shard-images 64 512] [--batch 8] [--repeats 3]
        [--launches 0] [--decode-threads 4] [--encode-threads 2] [--json bench/out/device_overlap.json] [--smoke]

Goal 1 asks for pipeline throughput ≥ 0.90 × forward-only throughput on one GPU. Without a GPU, this script stands a
device in for the model: ``DeviceStandIn.segment`` sleeps ``--device-ms`` per image of the batch (the host thread
waits on a device that computes; no CPU is used and the GIL is released, as in a CUDA synchronisation), then returns
the corpus' precomputed predictions. Everything else is the real ``ShardWorker.label_shard``: tar read, JPEG decode
threads, size buckets, id-map PNG encode threads, ground-truth decode and every view, Parquet, statistics, commit.
``--launches N`` makes the stand-in's host side launch-like as well: N tiny torch calls per batch (each takes the GIL
back, as a CUDA kernel launch from Python does) while the device time runs, so that threads holding the GIL and
delaying the launches show as lost device time.

Corpus: ``bench/cpu_per_image.py``'s (640x480 COCO photo crops as JPEGs, synthetic COCO-panoptic ground truth and
an imperfect prediction per image), ``--images`` distinct samples repeated (new keys) to fill shards of each
``--shard-images``, with and without ground truth. A shard's first batch waits for its decodes and its last
batch's rows and the Parquet file are made after the model's last batch, so a short shard shows that fixed cost.

Per shard size, device time and ground-truth setting, ``--repeats`` interleaved runs of ``label_shard``; reported:

- **device utilisation** = device-busy seconds (the stand-in's device time) / wall seconds: goal 1's ratio, since the
  forward-only run of the same batches takes exactly the device-busy time;
- images/s of the pipeline and of the device alone;
- process CPU seconds per image (every thread), and CPU cores kept busy per device (CPU seconds / wall seconds);
- the summary's stages (ms per image).

``--device-ms 7.8`` is EoMT-L's published 128 images/s on an H100; Mask2Former Swin-L is far slower (about 4 images/s
on a V100). The machine's cores are shared by the decode and encode threads and by nothing else here; on a GPU node
the same threads run beside the real model's launches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_per_image import HEIGHT, WIDTH, ReplaySegmenter, make_corpus, write_shard  # noqa: E402

from segcore.categories import coco_panoptic_categories  # noqa: E402
from segcore.models.base import PanopticResult  # noqa: E402
from segcore.models.registry import ModelOptions  # noqa: E402
from segcore.runtime.worker import ShardWorker, WorkerConfig  # noqa: E402


class DeviceStandIn(ReplaySegmenter):
    """The worker's segmenter with ``segment`` replaced: a device computing ``seconds_per_image`` per image of the
    batch while the host waits, then the precomputed predictions in order (``ReplaySegmenter``'s).

    With ``launches`` > 0 the host first makes that many tiny torch calls (each takes and gives back the GIL, as a
    CUDA kernel launch from Python does) while the device is taken to run from the first call, then waits for the
    rest of the device time: launches slowed down by other threads holding the GIL show as device time lost.
    """

    def __init__(self, real, predictions: list[tuple[np.ndarray, list[dict]]], seconds_per_image: float,
                 launches: int = 0):
        super().__init__(real, predictions)
        self.seconds_per_image = seconds_per_image
        self.launches = launches
        self.busy = 0.0
        self.launch_seconds = 0.0
        self._scalar = torch.zeros(1)

    def segment(self, images, timings=None) -> list[PanopticResult]:
        started = time.perf_counter()
        device = self.seconds_per_image * len(images)
        value = self._scalar
        for _ in range(self.launches):
            value = value + 1
        self.launch_seconds += time.perf_counter() - started
        time.sleep(max(0.0, started + device - time.perf_counter()))
        self.busy += device
        if timings is not None:
            timings["forward"] = timings.get("forward", 0.0) + time.perf_counter() - started
        return super().segment(images)


def repeated(samples: list[dict], count: int) -> list[dict]:
    """``count`` samples cycling through ``samples``, each under a new key."""
    return [{**samples[i % len(samples)], "key": f"{i:08d}"} for i in range(count)]


def make_worker(args, output: str, samples: list[dict]) -> ShardWorker:
    """A real ShardWorker (demo model, COCO categories) whose model is the device stand-in."""
    config = WorkerConfig(output=output, model="demo", model_options=ModelOptions(device="cpu"),
                          batch_size=args.batch, decode_threads=args.decode_threads,
                          encode_threads=args.encode_threads, torch_threads=1, categories=coco_panoptic_categories())
    worker = ShardWorker(config)
    worker.segmenter = DeviceStandIn(worker.segmenter, [(s["pred_ids"], s["pred_segments"]) for s in samples], 0.0,
                                     args.launches)
    return worker


def run_once(worker: ShardWorker, spec, images: int, seconds_per_image: float) -> dict:
    """One ``label_shard``: wall, device-busy and process CPU seconds, and the summary's stages."""
    segmenter = worker.segmenter
    segmenter.position, segmenter.busy, segmenter.launch_seconds = 0, 0.0, 0.0
    segmenter.seconds_per_image = seconds_per_image
    cpu_started, started = time.process_time(), time.perf_counter()
    summary = worker.label_shard(spec)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if summary["images"] != images or summary["errors"]:
        raise RuntimeError(f"Expected {images} images without errors, but got {summary}")
    return {"wall": wall, "busy": segmenter.busy, "cpu": cpu, "launch": segmenter.launch_seconds,
            "stages": summary["stages"]}


def summarise(runs: list[dict], images: int) -> dict:
    """Best and median of the repeats of one setting."""
    utilisation = [run["busy"] / run["wall"] for run in runs]
    best = min(runs, key=lambda run: run["wall"])
    return {
        "device_utilisation": {"best_run": best["busy"] / best["wall"], "median": statistics.median(utilisation),
                               "per_repeat": utilisation},
        "pipeline_img_s": images / best["wall"],
        "device_only_img_s": images / best["busy"],
        "cpu_ms_per_image": statistics.median(run["cpu"] for run in runs) / images * 1e3,
        "cpu_cores_busy": statistics.median(run["cpu"] / run["wall"] for run in runs),
        "launch_ms_per_batch_image": statistics.median(run["launch"] for run in runs) / images * 1e3,
        "stages_ms_per_image": {stage: statistics.median(run["stages"].get(stage, 0.0) for run in runs)
                                / images * 1e3 for stage in best["stages"]},
    }


def wait_for_peers(folder: Path, count: int, timeout: float = 600.0) -> None:
    """Marks this run ready in ``folder`` and waits until ``count`` runs are."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout
    while len(list(folder.glob("ready-*"))) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Expected {count} runs ready in {folder} within {timeout:.0f} s")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device-ms", type=float, nargs="+", default=[2.0, 4.0, 8.0],
                        help="device time per image of the stand-in model")
    parser.add_argument("--images", type=int, default=64, help="distinct samples")
    parser.add_argument("--shard-images", type=int, nargs="+", default=[64, 512], help="images per shard")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--launches", type=int, default=0, help="tiny torch calls per batch before the device wait")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="sys.setswitchinterval for the run, seconds (Python's default 0.005)")
    parser.add_argument("--decode-threads", type=int, default=4)
    parser.add_argument("--encode-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="bench/out/device_overlap.json")
    parser.add_argument("--barrier", default=None,
                        help="folder shared with other runs: after the warm-up, wait until --barrier-count runs "
                             "are ready (bench/actor_scaling.py starts several at once)")
    parser.add_argument("--barrier-count", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="8 images, batch 4, device 1 ms, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.shard_images, args.batch, args.device_ms, args.repeats = 8, [8], 4, [1.0], 1
    torch.set_num_threads(1)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    load_before = os.getloadavg()
    samples = make_corpus(args.images, coco_panoptic_categories())
    settings = [(n, ms, truth) for n in args.shard_images for ms in args.device_ms for truth in ("no gt", "with gt")]
    runs: dict[tuple, list[dict]] = {setting: [] for setting in settings}
    with tempfile.TemporaryDirectory(prefix="device_overlap-") as folder:
        worker = make_worker(args, str(Path(folder) / "out"), samples)
        try:
            specs = {(n, truth): write_shard(Path(folder) / f"{n}-{truth.replace(' ', '-')}.tar",
                                             repeated(samples, n), truth == "with gt")
                     for n in args.shard_images for truth in ("no gt", "with gt")}
            for (n, _), spec in specs.items():  # warm-up: thread pools, caches, compiled kernels
                run_once(worker, spec, n, 0.0)
            if args.barrier:
                wait_for_peers(Path(args.barrier), args.barrier_count)
            measuring_started = time.time()
            for repeat in range(args.repeats):
                for n, ms, truth in settings:
                    runs[(n, ms, truth)].append(run_once(worker, specs[(n, truth)], n, ms / 1e3))
                print(f"repeat {repeat + 1}/{args.repeats} done, load {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            worker.close()
    results = []
    for n, ms, truth in settings:
        found = summarise(runs[(n, ms, truth)], n)
        results.append({"shard_images": n, "device_ms": ms, "truth": truth, **found})
        print(f"shard {n}, device {ms:g} ms/img, {truth}: utilisation {found['device_utilisation']['best_run']:.3f} "
              f"(median {found['device_utilisation']['median']:.3f}), {found['pipeline_img_s']:.1f} vs "
              f"{found['device_only_img_s']:.1f} img/s, CPU {found['cpu_ms_per_image']:.2f} ms/img, "
              f"{found['cpu_cores_busy']:.2f} cores busy", flush=True)
    document = {
        "args": vars(args),
        "started_measuring": measuring_started,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "load": {"before": load_before, "after": os.getloadavg()},
        "corpus": {"distinct_images": args.images, "shard_images": args.shard_images, "size": [HEIGHT, WIDTH]},
        "results": results,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
