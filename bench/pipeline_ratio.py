"""Benchmark: the whole shard pipeline vs the model's forward pass alone, same batch and precision (issue 7, goal 1).

    python bench/pipeline_ratio.py [--model demo|eomt-large-640|mask2former-swin-large] [--device cpu|cuda]
        [--dtype float32|bfloat16] [--images 64] [--batch 8] [--repeats 3] [--json bench/out/pipeline_ratio.json]
        [--smoke]

A tar shard of ``--images`` JPEGs (synthetic demo scenes resized to 640x480, quality 90) is written to a local
temporary folder. Per repeat, interleaved:

- **pipeline**: ``ShardWorker.label_shard`` on the shard (read, decode threads, size buckets, pre-processing,
  forward, post-processing, PNG encode threads, Parquet, commit), wall time; img/s = images / wall.
- **forward only**: the same images, already decoded, resized and padded by the segmenter's own ``prepare_batch``
  into batches of ``--batch`` beforehand, through ``segmenter.forward`` alone (device synchronised), wall time.

On a CUDA device, the GPU's utilisation (NVML, sampled every 20 ms) is recorded for both runs.

The ratio pipeline img/s / forward-only img/s is goal 1's number (target ≥ 0.90 on one GPU). The published names
are the real architectures with random weights (segcore/models/zoo.py) and ``--score-threshold 0``, the worst case
for post-processing. On a CPU the decode and encode threads compete with torch's for the same cores, so the CPU
ratio is a lower bound of what a GPU node with spare cores gives.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segcore.io.shards import list_shards
from segcore.models.preprocess import prepare_batch
from segcore.models.registry import ModelOptions
from segcore.models.zoo import PROCESSORS, published_segmenter
from segcore.runtime.worker import ShardWorker, WorkerConfig
from segcore.synthetic import make_demo_sample

HEIGHT, WIDTH = 480, 640


def write_shard(folder: Path, images: int) -> str:
    """A tar of ``images`` 640x480 JPEGs; returns its path."""
    path = folder / "bench-00000.tar"
    with tarfile.open(path, "w") as archive:
        for index in range(images):
            image = Image.fromarray(make_demo_sample(11, index)[0]).resize((WIDTH, HEIGHT))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            info = tarfile.TarInfo(f"{index:06d}.jpg")
            info.size = buffer.tell()
            buffer.seek(0)
            archive.addfile(info, buffer)
    return str(path)


def make_worker(args, output: str) -> ShardWorker:
    options = ModelOptions(device=args.device, dtype=args.dtype,
                           score_threshold=0.0 if args.model in PROCESSORS else None)
    worker = ShardWorker(WorkerConfig(output=output, model="demo", model_options=options, batch_size=args.batch,
                                      decode_threads=args.decode_threads, encode_threads=args.encode_threads))
    if args.model in PROCESSORS:
        worker.segmenter = published_segmenter(args.model, options)
    return worker


class UtilisationSampler:
    """Samples the GPU's utilisation (NVML: the share of time a kernel ran) every ``interval`` seconds in a thread,
    between ``start`` and ``stop``; ``None`` off a CUDA device or without NVML (``pynvml``, from nvidia-ml-py)."""

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.interval, self.samples, self.handle = interval, [], None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
                self.read = lambda: pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            except Exception as error:  # noqa: BLE001 - the benchmark goes on without it
                print(f"no GPU utilisation samples: {error}")
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> None:
        if self.handle is None:
            return
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.read())

    def stop(self) -> float | None:
        """Mean utilisation in percent over the samples since ``start``."""
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        return statistics.mean(self.samples) if self.samples else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_only(segmenter, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Wall seconds of the forward passes alone over prepared batches."""
    synchronize(segmenter.device)
    started = time.perf_counter()
    with torch.inference_mode():
        for pixel_values, pixel_mask in batches:
            segmenter.forward(pixel_values, pixel_mask)
    synchronize(segmenter.device)
    return time.perf_counter() - started


def prepared_batches(segmenter, shard: str, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The shard's images decoded, resized and padded as the segmenter does, in batches, on its device."""
    with tarfile.open(shard) as archive:
        images = [np.array(Image.open(archive.extractfile(m)).convert("RGB")) for m in archive.getmembers()]
    batches = []
    for start in range(0, len(images), batch):
        tensors = [torch.from_numpy(i).permute(2, 0, 1).contiguous().to(segmenter.device)
                   for i in images[start:start + batch]]
        pixel_values, pixel_mask, _ = prepare_batch(tensors, segmenter.preprocessing)
        batches.append((pixel_values, pixel_mask))
    return batches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", choices=["demo", *PROCESSORS])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--decode-threads", type=int, default=4)
    parser.add_argument("--encode-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="bench/out/pipeline_ratio.json")
    parser.add_argument("--smoke", action="store_true", help="8 images, batch 4, 1 repeat")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.batch, args.repeats = 8, 4, 1
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pipeline_ratio-") as tmp:
        shard = write_shard(Path(tmp), args.images)
        (spec,) = list_shards(shard)
        worker = make_worker(args, str(Path(tmp) / "labels"))
        try:
            batches = prepared_batches(worker.segmenter, shard, args.batch)
            worker.label_shard(spec)  # warm-up: kernels, caches, thread pools
            forward_only(worker.segmenter, batches)
            pipeline, forward, summaries = [], [], []
            sampler = UtilisationSampler(worker.segmenter.device)
            utilisation: dict[str, list] = {"pipeline": [], "forward_only": []}
            for repeat in range(args.repeats):
                sampler.start()
                started = time.perf_counter()
                summaries.append(worker.label_shard(spec))
                pipeline.append(time.perf_counter() - started)
                utilisation["pipeline"].append(sampler.stop())
                sampler.start()
                forward.append(forward_only(worker.segmenter, batches))
                utilisation["forward_only"].append(sampler.stop())
                print(f"repeat {repeat + 1}/{args.repeats}: pipeline {args.images / pipeline[-1]:.1f} img/s, "
                      f"forward only {args.images / forward[-1]:.1f} img/s, load {os.getloadavg()[0]:.2f}",
                      flush=True)
        finally:
            worker.close()
    best_pipeline, best_forward = args.images / min(pipeline), args.images / min(forward)
    ratios = [f / p for p, f in zip(pipeline, forward)]
    stages = {stage: statistics.median(s["stages"].get(stage, 0.0) for s in summaries) / args.images * 1e3
              for stage in summaries[0]["stages"]}
    pixels = summaries[-1].get("batch_pixels")
    result = {
        "args": vars(args),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"},
        "load": {"before": load_before, "after": os.getloadavg()},
        "pipeline_img_s": best_pipeline, "forward_only_img_s": best_forward,
        "ratio_of_bests": best_pipeline / best_forward, "ratio_per_repeat": ratios,
        "stages_ms_per_image": stages,
        "gpu_utilisation_percent": utilisation,
        "padding_waste": 1 - pixels[0] / pixels[1] if pixels and pixels[1] else None,
    }
    print(f"pipeline {best_pipeline:.1f} img/s, forward only {best_forward:.1f} img/s, ratio "
          f"{result['ratio_of_bests']:.2f} (per repeat {', '.join(f'{r:.2f}' for r in ratios)})")
    if utilisation["pipeline"][0] is not None:
        print("GPU utilisation, %: pipeline " + ", ".join(f"{u:.0f}" for u in utilisation["pipeline"])
              + "; forward only " + ", ".join(f"{u:.0f}" for u in utilisation["forward_only"]))
    print("stages, ms/image (median): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
