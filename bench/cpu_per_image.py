"""Benchmark: CPU work per 640x480 image outside the model, stage by stage, on one thread (issue 7, goals 2 and 4).

    python bench/cpu_per_image.py [--images 32] [--repeats 5] [--profile 16] [--json bench/out/cpu_per_image.json]
        [--smoke]

Corpus (built in memory, seed 0): ``--images`` synthetic 640x480 COCO-panoptic scenes (``segcore.synthetic``:
ground truth over the 133 COCO categories, and an imperfect prediction with realistic errors, renumbered 1..S in id
order as the segmenters return it); the ground truth is saved as COCO's PNGs are (Pillow's defaults). The JPEG of
each sample is one of the two real COCO val2017 photos of ``tests/data/coco_panoptic_sample`` scaled to cover
640x480 and centre-cropped, saved at quality 90 (the synthetic scene rendered as a JPEG is decoded too, for
comparison). The image content does not match the maps: no model runs, so only the bytes' cost matters.

Every stage is timed on one thread (torch at 1 thread) over all images, stages interleaved, ``--repeats`` times;
best and median ms per image are reported, and each as a multiple of one JPEG decode (``decode_rgb`` of the COCO
crop). The worker's own code is called wherever it can be, so a rerun measures what it does then:

- ``ShardWorker._decode`` and ``ShardWorker._image_row`` on a real ``ShardWorker`` (demo model, COCO categories), with
  and without ground truth, after one ``label_shard`` has set up its per-shard state;
- ``ShardWorker.label_shard`` end to end on a tar shard with a zero-cost model (the demo segmenter's ``segment``
  replaced by one that returns the precomputed predictions), 1 decode and 1 encode thread; its process CPU time
  per image (all threads) is the worker's CPU cost outside the model, with and without ground truth;
- the library functions the worker calls, one by one, for the split; and the demo model's own pre-process,
  forward and post-process at 640x480 (StageClock, batch 8), since post-processing is model-specific.

``--profile N`` runs cProfile over N images of the worker's single-thread path (``_decode`` + ``_image_row`` + the
shard's Parquet and statistics) and records the functions with the most own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import decode_jpeg

from segcore.categories import coco_panoptic_categories
from segcore.io.images import decode_rgb
from segcore.io.shards import ShardSpec, read_shard
from segcore.io.table import image_row, rows_to_table, table_to_parquet
from segcore.metrics.instances import image_instances
from segcore.metrics.pq import match_image
from segcore.metrics.stats import LabelStats
from segcore.metrics.views import evaluate_image
from segcore.models.base import PanopticResult, SegmentTable, finish_batch
from segcore.models.registry import ModelOptions
from segcore.png import decode_ids, encode_ids
from segcore.runtime.worker import ShardWorker, WorkerConfig, shard_stats
from segcore.synthetic import id_map_to_rgb, make_image_pair, render_image

ROOT = Path(__file__).resolve().parents[1]
COCO_IMAGES = ROOT / "tests" / "data" / "coco_panoptic_sample" / "input_images"
HEIGHT, WIDTH = 480, 640
JPEG_QUALITY = 90
REFERENCE = "decode_rgb: JPEG (COCO crop)"  # the unit of goal 2
MODEL_BATCH = 8


# ------------------------------------------------------------------------------------------------------ corpus


def jpeg_bytes(image: np.ndarray) -> bytes:
    """JPEG at JPEG_QUALITY.  image # (H, W, 3) uint8"""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def coco_crops() -> list[bytes]:
    """The two real COCO photos scaled to cover 640x480, centre-cropped, as JPEGs."""
    crops = []
    for path in sorted(COCO_IMAGES.glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        scale = max(WIDTH / image.width, HEIGHT / image.height)
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.LANCZOS)
        left, top = (size[0] - WIDTH) // 2, (size[1] - HEIGHT) // 2
        crops.append(jpeg_bytes(np.asarray(image.crop((left, top, left + WIDTH, top + HEIGHT)))))
    return crops


def model_like(pred_map: np.ndarray, segments: list[dict], categories) -> tuple[np.ndarray, list[dict]]:
    """A prediction as a segmenter returns it: ids 1..S in id order, every field of a result segment.

    Returns: ``(id_map # (H, W) int32, segments)``.
    """
    keys = np.array([0] + sorted(int(s["id"]) for s in segments), dtype=np.int64)
    id_map = np.searchsorted(keys, pred_map).astype(np.int32)
    by_id = {int(s["id"]): s for s in segments}
    renumbered = [{"id": new, "category_id": int(by_id[old]["category_id"]),
                   "isthing": bool(categories.by_id(int(by_id[old]["category_id"])).isthing),
                   "score": float(by_id[old].get("score", 1.0)), "area": int(by_id[old]["area"]),
                   "bbox": [int(v) for v in by_id[old]["bbox"]]}
                  for new, old in enumerate(keys[1:].tolist(), start=1)]
    return id_map, renumbered


def make_corpus(n: int, categories) -> list[dict]:
    """``n`` samples: jpeg (COCO crop), synthetic_jpeg, gt_png, gt_ids, gt_segments, pred_ids, pred_segments."""
    crops = coco_crops()
    samples = []
    for index in range(n):
        gt_map, gt_segments, pred_map, pred_segments = make_image_pair(0, index, HEIGHT, WIDTH, categories)
        buffer = io.BytesIO()
        Image.fromarray(id_map_to_rgb(gt_map)).save(buffer, "PNG")  # as COCO's ground-truth PNGs are saved
        pred_ids, pred_segments = model_like(pred_map, pred_segments, categories)
        rendered = render_image(np.random.default_rng([0, index, 9]), gt_map, gt_segments, categories)
        samples.append({"key": f"{index:08d}", "jpeg": crops[index % len(crops)], "synthetic_jpeg": jpeg_bytes(rendered),
                        "gt_png": buffer.getvalue(), "gt_ids": gt_map, "gt_segments": gt_segments,
                        "pred_ids": pred_ids, "pred_segments": pred_segments})
    return samples


def write_shard(path: Path, samples: list[dict], with_truth: bool) -> ShardSpec:
    """A WebDataset tar: ``<key>.jpg``, and with ground truth ``<key>.json`` + ``<key>.panoptic.png``."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for sample in samples:
            members = {f"{sample['key']}.jpg": sample["jpeg"]}
            if with_truth:
                members[f"{sample['key']}.json"] = json.dumps(
                    {"image_id": sample["key"], "segments_info": sample["gt_segments"]}).encode()
                members[f"{sample['key']}.panoptic.png"] = sample["gt_png"]
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return ShardSpec(path.stem, "tar", str(path))


# ------------------------------------------------------------------------------------------------------ worker


class ReplaySegmenter:
    """The worker's segmenter with ``segment`` replaced by the precomputed predictions, in order: a model that
    costs nothing, so ``label_shard`` measures only the work around it."""

    def __init__(self, real, predictions: list[tuple[np.ndarray, list[dict]]]):
        self.real = real
        self.predictions = predictions
        self.position = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def segment(self, images, timings=None) -> list[PanopticResult]:
        results = []
        for _ in images:
            id_map, segments = self.predictions[self.position % len(self.predictions)]
            results.append(PanopticResult(torch.from_numpy(id_map), [dict(s) for s in segments]))
            self.position += 1
        return results


def make_worker(output: str, samples: list[dict]) -> ShardWorker:
    """A real ShardWorker (demo model, COCO categories, 1 thread per pool) whose model is replayed."""
    config = WorkerConfig(output=output, model="demo", model_options=ModelOptions(device="cpu"),
                          batch_size=MODEL_BATCH, decode_threads=1, encode_threads=1, torch_threads=1,
                          categories=coco_panoptic_categories())
    worker = ShardWorker(config)
    worker.segmenter = ReplaySegmenter(worker.segmenter, [(s["pred_ids"], s["pred_segments"]) for s in samples])
    return worker


def label_shard_cpu(worker: ShardWorker, spec: ShardSpec, images: int) -> float:
    """Process CPU seconds (every thread) per image of one ``label_shard`` with the replayed model."""
    worker.segmenter.position = 0
    started = time.process_time()
    summary = worker.label_shard(spec)
    seconds = time.process_time() - started
    if summary["images"] != images or summary["errors"]:
        raise RuntimeError(f"Expected {images} images without errors, but got {summary}")
    return seconds / images


# ------------------------------------------------------------------------------------------------------ stages


def segment_table(segments: list[dict]) -> SegmentTable:
    """The device-side table finish_batch takes, from result segments (ids 1..S)."""
    size = len(segments) + 1
    category_ids, isthing, scores = torch.zeros(size, dtype=torch.int64), torch.zeros(size, dtype=torch.bool), \
        torch.zeros(size, dtype=torch.float32)
    for s in segments:
        category_ids[s["id"]], isthing[s["id"]], scores[s["id"]] = s["category_id"], s["isthing"], s["score"]
    return SegmentTable(category_ids, isthing, scores)


def stage_functions(worker: ShardWorker, samples: list[dict], specs: dict[str, ShardSpec], categories) -> dict:
    """Stage name -> a function of the image index doing that stage's work for one image (per-shard work: the
    function of index 0 does the shard, the others nothing)."""
    gt_samples, plain_samples = list(read_shard(specs["with gt"])), list(read_shard(specs["no gt"]))
    results = [PanopticResult(torch.from_numpy(s["pred_ids"]), s["pred_segments"]) for s in samples]
    tables = [segment_table(s["pred_segments"]) for s in samples]
    host = [s["pred_ids"].astype(np.uint32) for s in samples]
    pngs = [encode_ids(ids) for ids in host]
    rows = [image_row(s["key"], s["key"], WIDTH, HEIGHT, png, s["pred_segments"], "demo")
            for s, png in zip(samples, pngs)]
    decoded_gt = [worker._decode(sample, i, None) for i, sample in enumerate(gt_samples)]
    decoded_plain = [worker._decode(sample, i, None) for i, sample in enumerate(plain_samples)]
    stats = LabelStats()
    image_row_call = worker._image_row

    def per_shard(work):
        return lambda i: work() if i == 0 else None

    def match(i: int):
        return (i, samples[i]["gt_ids"], samples[i]["gt_segments"], host[i], samples[i]["pred_segments"])

    stages = {
        "read_shard: tar stream (with gt)": per_shard(lambda: list(read_shard(specs["with gt"]))),
        REFERENCE: lambda i: decode_rgb(samples[i]["jpeg"], "bench"),
        "decode_rgb: JPEG (synthetic scene)": lambda i: decode_rgb(samples[i]["synthetic_jpeg"], "bench"),
        "Pillow open + load only (JPEG, COCO crop)": lambda i: Image.open(io.BytesIO(samples[i]["jpeg"])).load(),
        "decode_ids: gt PNG (Pillow default)": lambda i: decode_ids(samples[i]["gt_png"]),
        "finish_batch: areas, boxes, segment dicts (CPU)": lambda i: finish_batch(
            [results[i].id_map], [tables[i]]),
        "id_map_numpy + astype(uint32)": lambda i: results[i].id_map_numpy().astype(np.uint32),
        "encode_ids: PNG (level 6, default)": lambda i: encode_ids(host[i]),
        "encode_ids: PNG level 1 (option)": lambda i: encode_ids(host[i], level=1),
        "encode_ids: PNG level 3 (option)": lambda i: encode_ids(host[i], level=3),
        "encode_ids: PNG of uint16 ids (option)": lambda i: encode_ids(host[i].astype(np.uint16)),
        "image_row: row dict": lambda i: image_row(samples[i]["key"], samples[i]["key"], WIDTH, HEIGHT, pngs[i],
                                                   samples[i]["pred_segments"], "demo"),
        "rows_to_table + table_to_parquet (per image)": per_shard(lambda: table_to_parquet(rows_to_table(rows))),
        "match_image: PQ partial": lambda i: match_image(*match(i), categories, i),
        "LabelStats.add_image": lambda i: stats.add_image(WIDTH, HEIGHT, samples[i]["pred_segments"]),
        "shard_stats: label statistics of the rows (per image)": per_shard(lambda: json.dumps(shard_stats(rows))),
        "ShardWorker._decode: image only": lambda i: worker._decode(plain_samples[i], i, None),
        "ShardWorker._decode: image + gt": lambda i: worker._decode(gt_samples[i], i, None),
        "ShardWorker._image_row: no gt": lambda i: image_row_call(decoded_plain[i], results[i].segments,
                                                                  results[i].id_map_numpy()),
        "ShardWorker._image_row: with gt": lambda i: image_row_call(decoded_gt[i], results[i].segments,
                                                                    results[i].id_map_numpy()),
    }
    stages["torchvision decode_jpeg, CPU (option)"] = lambda i: decode_jpeg(
        torch.frombuffer(bytearray(samples[i]["jpeg"]), dtype=torch.uint8))
    stages["image_instances: instance RLEs"] = lambda i: image_instances(i, *match(i)[1:], categories)
    stages["evaluate_image: every gt view"] = lambda i: evaluate_image(
        samples[i]["key"], samples[i]["key"], i, *match(i)[1:], categories)
    return stages


def model_stages(segmenter, images: list[np.ndarray]) -> dict[str, float]:
    """The demo model's StageClock seconds per image at 640x480, batches of MODEL_BATCH."""
    timings: dict[str, float] = {}
    for start in range(0, len(images), MODEL_BATCH):
        segmenter.segment(images[start:start + MODEL_BATCH], timings)
    return {stage: seconds / len(images) for stage, seconds in timings.items()}


def measure(worker: ShardWorker, stages: dict, specs: dict[str, ShardSpec], n: int, repeats: int,
            images: list[np.ndarray]) -> dict:
    """Every stage ``repeats`` times, interleaved: seconds per image of each repeat."""
    times: dict[str, list[float]] = {name: [] for name in stages}
    for repeat in range(repeats):
        for name, work in stages.items():
            started = time.perf_counter()
            for i in range(n):
                work(i)
            times[name].append((time.perf_counter() - started) / n)
        for truth, spec in specs.items():
            times.setdefault(f"label_shard, zero-cost model, {truth} (process CPU)", []).append(
                label_shard_cpu(worker, spec, n))
        for stage, seconds in model_stages(worker.segmenter.real, images).items():
            times.setdefault(f"demo model {stage} (batch {MODEL_BATCH}, CPU)", []).append(seconds)
        print(f"repeat {repeat + 1}/{repeats} done, load {os.getloadavg()[0]:.2f}", flush=True)
    return times


# ------------------------------------------------------------------------------------------------------ report


def summarise(times: dict[str, list[float]]) -> tuple[dict, dict, dict]:
    """Per stage best/median ms and x decode; goal 2 and goal 4 figures from the best repeats."""
    decode = min(times[REFERENCE])
    rows = {name: {"best_ms": min(t) * 1e3, "median_ms": statistics.median(t) * 1e3, "x_decode": min(t) / decode}
            for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    with_gt = best["label_shard, zero-cost model, with gt (process CPU)"]
    no_gt = best["label_shard, zero-cost model, no gt (process CPU)"]
    model_cpu = sum(v for k, v in best.items() if k.startswith("demo model") and "forward" not in k)
    forward = sum(v for k, v in best.items() if k.startswith("demo model") and "forward" in k)
    goal2 = {
        "decode_ms": decode * 1e3,
        "worker_outside_model_ms": {"with_gt": with_gt * 1e3, "no_gt": no_gt * 1e3},
        "worker_outside_model_x_decode": {"with_gt": with_gt / decode, "no_gt": no_gt / decode},
        "demo_pre_post_ms": model_cpu * 1e3,
        "with_demo_pre_post_x_decode": {"with_gt": (with_gt + model_cpu) / decode,
                                        "no_gt": (no_gt + model_cpu) / decode},
        "target_x_decode": 2.0,
    }
    gt_work = with_gt - no_gt
    parts = {name: best[name] for name in ("decode_ids: gt PNG (Pillow default)", "match_image: PQ partial",
                                           "image_instances: instance RLEs",
                                           "evaluate_image: every gt view") if name in best}
    goal4 = {
        "gt_work_ms": gt_work * 1e3,
        "added_to_cpu_outside_model": gt_work / no_gt,
        "share_of_cpu_outside_model": gt_work / with_gt,
        "share_with_demo_pre_post": gt_work / (with_gt + model_cpu),
        "share_with_demo_model_on_cpu": gt_work / (with_gt + model_cpu + forward),
        "image_row_gt_minus_no_gt_ms": (best["ShardWorker._image_row: with gt"]
                                        - best["ShardWorker._image_row: no gt"]) * 1e3,
        "decode_gt_minus_image_only_ms": (best["ShardWorker._decode: image + gt"]
                                          - best["ShardWorker._decode: image only"]) * 1e3,
        "parts_ms": {name: seconds * 1e3 for name, seconds in parts.items()},
        "target_share": 0.10,
    }
    return rows, goal2, goal4


def table(rows: dict, goal2: dict, goal4: dict) -> str:
    """Markdown: the stage table, then goal 2 and goal 4 lines."""
    lines = ["| stage | best ms/img | median ms/img | x one JPEG decode |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {row['best_ms']:.3f} | {row['median_ms']:.3f} | {row['x_decode']:.2f} |"
              for name, row in rows.items()]
    out = goal2["worker_outside_model_x_decode"]
    demo = goal2["with_demo_pre_post_x_decode"]
    lines += ["", f"goal 2: worker CPU outside the model = {out['with_gt']:.2f}x decode with gt, "
                  f"{out['no_gt']:.2f}x without (target <= 2x); adding the demo's pre+post "
                  f"({goal2['demo_pre_post_ms']:.2f} ms): {demo['with_gt']:.2f}x / {demo['no_gt']:.2f}x",
              f"goal 4: ground-truth work {goal4['gt_work_ms']:.2f} ms/img adds "
              f"{goal4['added_to_cpu_outside_model']:.0%} to the worker's CPU outside the model; it is "
              f"{goal4['share_of_cpu_outside_model']:.1%} of it, "
              f"{goal4['share_with_demo_pre_post']:.1%} with the demo's pre+post, "
              f"{goal4['share_with_demo_model_on_cpu']:.1%} with the demo's forward on CPU (target <= 10 %)"]
    return "\n".join(lines)


def profile(worker: ShardWorker, spec: ShardSpec, samples: list[dict], n: int, top: int = 15) -> list[dict]:
    """cProfile of the worker's single-thread path over ``n`` images with ground truth: the ``top`` functions
    by own time, ms per image (own and cumulative)."""
    gt_samples = list(read_shard(spec))
    image_row_call = worker._image_row
    profiler = cProfile.Profile()
    profiler.enable()
    rows = []
    for i in range(n):
        decoded = worker._decode(gt_samples[i], i, None)
        result = PanopticResult(torch.from_numpy(samples[i]["pred_ids"]), samples[i]["pred_segments"])
        rows.append(image_row_call(decoded, result.segments, result.id_map_numpy())[0])
    table_to_parquet(rows_to_table(rows))
    json.dumps(shard_stats(rows))
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    found = [{"function": f"{Path(file).name}:{line}({name})", "calls_per_image": calls / n,
              "own_ms_per_image": own / n * 1e3, "cumulative_ms_per_image": cumulative / n * 1e3}
             for (file, line, name), (_, calls, own, cumulative, _) in entries]
    for entry in found:
        print(f"{entry['own_ms_per_image']:8.3f} ms own {entry['cumulative_ms_per_image']:8.3f} ms cum  "
              f"{entry['function']}")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", type=int, default=16, help="images under cProfile (0: no profile)")
    parser.add_argument("--json", default="bench/out/cpu_per_image.json")
    parser.add_argument("--smoke", action="store_true", help="4 images, 1 repeat, profile 2 images")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.repeats, args.profile = 4, 1, 2
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    categories = coco_panoptic_categories()
    samples = make_corpus(args.images, categories)
    with tempfile.TemporaryDirectory(prefix="cpu_per_image-") as folder:
        worker = make_worker(str(Path(folder) / "out"), samples)
        specs = {"with gt": write_shard(Path(folder) / "with-gt.tar", samples, True),
                 "no gt": write_shard(Path(folder) / "no-gt.tar", samples, False)}
        label_shard_cpu(worker, specs["with gt"], args.images)  # warm-up; sets the worker's per-shard state
        images = [decode_rgb(s["jpeg"], "bench") for s in samples]
        model_stages(worker.segmenter.real, images[:MODEL_BATCH])  # warm-up
        stages = stage_functions(worker, samples, specs, categories)
        times = measure(worker, stages, specs, args.images, args.repeats, images)
        found = profile(worker, specs["with gt"], samples, min(args.profile, args.images)) if args.profile else []
        worker.close()
    rows, goal2, goal4 = summarise(times)
    print(table(rows, goal2, goal4))
    load = {"before": load_before, "after": os.getloadavg()}
    print(f"load average (1, 5, 15 min): before {load['before']}, after {load['after']}")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "torch": torch.__version__,
               "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    corpus = {"images": args.images, "size": [HEIGHT, WIDTH], "jpeg_quality": JPEG_QUALITY,
              "jpeg_bytes_mean": statistics.mean(len(s["jpeg"]) for s in samples),
              "gt_png_bytes_mean": statistics.mean(len(s["gt_png"]) for s in samples),
              "pred_segments_mean": statistics.mean(len(s["pred_segments"]) for s in samples),
              "gt_segments_mean": statistics.mean(len(s["gt_segments"]) for s in samples),
              "pred_png_bytes_mean": {level: statistics.mean(len(encode_ids(s["pred_ids"].astype(np.uint32), level))
                                                             for s in samples) for level in (1, 3, 6)}}
    document = {"args": vars(args), "machine": machine, "load": load, "corpus": corpus, "stages": rows,
                "goal2": goal2, "goal4": goal4, "profile": found,
                "times": {name: t for name, t in times.items()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
