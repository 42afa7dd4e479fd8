"""Benchmark: Panoptic Quality evaluation speed on one core, and exactness against panopticapi.

Tools, each run in its own subprocess pinned with ``taskset -c 0`` and single-threaded by environment:

- ``project``: this project's evaluator, ``python -m jobs.evaluate --gt-json G --pred-json P --out M.json
  --workers 0`` (in process, no Ray);
- ``hotcoco``: ``hotcoco.panoptic.PanopticEval(...).run()``;
- ``vernier``: ``vernier.panoptic.Evaluator(parity_mode="strict").background(...)`` fed with ``submit_png``
  (PNG bytes decoded in Rust, streaming, so memory stays flat);
- ``panopticapi``: the reference, ``pq_compute_single_core`` over the gt-ordered matched list, then
  ``pq_average`` as ``pq_compute`` does, from a separate venv (it pins numpy<2). About 15 images/s, so it runs on
  the first ``--reference-images`` images only, and every other tool runs on that subset too to compare results.

The corpus is synthetic (``segcore.synthetic.write_corpus``), cached under ``bench/corpus/`` by seed and size.
Results: a markdown table printed and written to ``bench/out/pq_speed.md``.

    python bench/pq_speed.py                       # 5,000 images, 3 repeats, 300-image reference subset
    python bench/pq_speed.py --smoke               # 20 images, 1 repeat: under a minute

This file is also the tool runner: ``--worker TOOL`` evaluates once and writes normalised results as JSON. It
imports only the standard library at module level, so the reference venv can run it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_REFERENCE_PYTHON = "/work/refvenv/bin/python"
DEFAULT_PROJECT_COMMAND = (
    "{python} -m jobs.evaluate --gt-json {gt_json} --pred-json {pred_json} --out {out} --workers 0"
)
TOOLS = ("project", "hotcoco", "vernier", "panopticapi")
GROUPS = ("All", "Things", "Stuff")
METRICS = ("pq", "sq", "rq")
SINGLE_THREAD_ENV = {
    name: "1"
    for name in (
        "RAYON_NUM_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "VERNIER_NUM_THREADS",
        "POLARS_MAX_THREADS",
        "TORCH_NUM_THREADS",
    )
}
SKIPPED_EXIT_CODE = 3  # a worker's way of saying "this tool is not installed"


# ----------------------------------------------------------------------------------------------------------------
# Workers: run one tool once and write {"All", "Things", "Stuff", "per_class", "seconds"} as JSON.
# per_class: category id (string) -> {pq, sq, rq, tp, fp, fn, iou}.
# ----------------------------------------------------------------------------------------------------------------


class ToolMissing(Exception):
    """The tool's package is not importable in this interpreter."""


def run_hotcoco(gt_json: str, pred_json: str, gt_folder: str, pred_folder: str) -> dict:
    """Evaluates with hotcoco's PanopticEval; ``results()`` holds panopticapi's dict plus per-class counts."""
    try:
        from hotcoco.panoptic import PanopticEval
    except ImportError as error:
        raise ToolMissing(f"hotcoco is not installed ({error})") from None
    evaluator = PanopticEval(gt_json, pred_json, gt_folder=gt_folder, pred_folder=pred_folder)
    evaluator.run()
    results = evaluator.results()
    summary = {group: _summary_entry(results[group]) for group in GROUPS}
    per_class = {
        str(cid): _class_entry(c, c["tp"], c["fp"], c["fn"], c["iou"]) for cid, c in results["per_class"].items()
    }
    return {**summary, "per_class": per_class}


def run_vernier(gt_json: str, pred_json: str, gt_folder: str, pred_folder: str) -> dict:
    """Evaluates with vernier's streaming panoptic evaluator in panopticapi-parity ("strict") mode.

    vernier has no COCO-panoptic file loader: the background evaluator takes each image's PNG bytes and
    segments_info JSON (``submit_png``), decodes in Rust and folds as it goes, single-threaded here.
    """
    try:
        from vernier import panoptic as vernier_panoptic
    except ImportError as error:
        raise ToolMissing(f"vernier is not installed ({error})") from None
    gt, pred = _load_json(gt_json), _load_json(pred_json)
    categories = json.dumps([{"id": c["id"], "isthing": c["isthing"]} for c in gt["categories"]]).encode()
    evaluator = vernier_panoptic.Evaluator(parity_mode="strict")
    with evaluator.background(categories, num_threads=1) as background:
        for gt_ann, pred_ann in _matched_annotations(gt, pred):
            background.submit_png(
                gt_ann["image_id"],
                Path(gt_folder, gt_ann["file_name"]).read_bytes(),
                json.dumps(gt_ann["segments_info"]).encode(),
                Path(pred_folder, pred_ann["file_name"]).read_bytes(),
                json.dumps(pred_ann["segments_info"]).encode(),
            )
        summary = background.finalize()
    return _normalise_vernier(summary)


def _normalise_vernier(summary) -> dict:
    """Turns a vernier PanopticSummary into the common result shape."""
    out = {
        "All": {"pq": summary.pq, "sq": summary.sq, "rq": summary.rq, "n": summary.n},
        "Things": {"pq": summary.pq_things, "sq": summary.sq_things, "rq": summary.rq_things, "n": summary.n_things},
        "Stuff": {"pq": summary.pq_stuff, "sq": summary.sq_stuff, "rq": summary.rq_stuff, "n": summary.n_stuff},
    }
    out["per_class"] = {
        str(cid): _class_entry({"pq": c.pq, "sq": c.sq, "rq": c.rq}, c.n_tp, c.n_fp, c.n_fn, c.iou_sum)
        for cid, c in summary.per_class().items()
    }
    return out


def run_panopticapi(gt_json: str, pred_json: str, gt_folder: str, pred_folder: str) -> dict:
    """The reference: ``pq_compute_single_core`` over all images in gt order, then ``pq_average`` per group.

    This is ``pq_compute`` on one core, whose float sums do not depend on the machine's CPU count.
    """
    try:
        from panopticapi.evaluation import pq_compute_single_core
    except ImportError as error:
        raise ToolMissing(f"panopticapi is not installed ({error})") from None
    gt, pred = _load_json(gt_json), _load_json(pred_json)
    categories = {c["id"]: c for c in gt["categories"]}
    matched = _matched_annotations(gt, pred)
    pq_stat = pq_compute_single_core(0, matched, gt_folder, pred_folder, categories)
    out: dict = {}
    for group, isthing in zip(GROUPS, (None, True, False)):
        out[group], per_class = pq_stat.pq_average(categories, isthing=isthing)
        out[group] = _summary_entry(out[group])
        if group == "All":
            counts = pq_stat.pq_per_cat
            out["per_class"] = {
                str(cid): _class_entry(per_class[cid], counts[cid].tp, counts[cid].fp, counts[cid].fn, counts[cid].iou)
                for cid in per_class
            }
    return out


def _matched_annotations(gt: dict, pred: dict) -> list[tuple[dict, dict]]:
    """(gt annotation, pred annotation) pairs in gt order, as panopticapi's pq_compute builds them.

    Raises:
        KeyError: an image has no prediction.
    """
    pred_by_image = {ann["image_id"]: ann for ann in pred["annotations"]}
    missing = [ann["image_id"] for ann in gt["annotations"] if ann["image_id"] not in pred_by_image]
    if missing:
        raise KeyError(f"no prediction for the images with ids {missing[:10]}")
    return [(ann, pred_by_image[ann["image_id"]]) for ann in gt["annotations"]]


def _summary_entry(entry: dict) -> dict:
    """pq, sq, rq (as Python floats, bits kept) and n of one group."""
    return {key: float(entry[key]) for key in METRICS} | {"n": int(entry["n"])}


def _class_entry(metrics: dict, tp, fp, fn, iou) -> dict:
    """One category's pq, sq, rq, counts and IoU sum, as plain Python numbers."""
    counts = {"tp": int(tp), "fp": int(fp), "fn": int(fn), "iou": float(iou)}
    return {key: float(metrics[key]) for key in METRICS} | counts


def _load_json(path: str) -> dict:
    """Reads a JSON file."""
    with open(path) as f:
        return json.load(f)


WORKERS = {"hotcoco": run_hotcoco, "vernier": run_vernier, "panopticapi": run_panopticapi}
WORKER_MODULES = {"hotcoco": "hotcoco.panoptic", "vernier": "vernier.panoptic", "panopticapi": "panopticapi.evaluation"}


def run_worker(args: argparse.Namespace) -> int:
    """Worker mode: evaluate once with ``args.worker`` and write the normalised result to ``args.result``.

    The tool is imported before the clock starts, so ``seconds`` is evaluation only (JSON, PNGs, matching).
    """
    try:
        importlib.import_module(WORKER_MODULES[args.worker])
        started = time.perf_counter()
        result = WORKERS[args.worker](args.gt_json, args.pred_json, args.gt_folder, args.pred_folder)
    except (ImportError, ToolMissing) as error:
        print(f"{args.worker} is not installed ({error})", file=sys.stderr)
        return SKIPPED_EXIT_CODE
    result["seconds"] = time.perf_counter() - started
    Path(args.result).write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# The corpus.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    """A COCO panoptic corpus on disk: ``gt.json``, ``gt/``, ``pred.json``, ``pred/`` under ``root``."""

    root: Path
    n_images: int

    @property
    def gt_json(self) -> Path:
        return self.root / "gt.json"

    @property
    def pred_json(self) -> Path:
        return self.root / "pred.json"

    @property
    def gt_folder(self) -> Path:
        return self.root / "gt"

    @property
    def pred_folder(self) -> Path:
        return self.root / "pred"


def ensure_corpus(n_images: int, seed: int, height: int, width: int) -> tuple[Corpus, float]:
    """Builds the synthetic corpus, or reuses the cached one; returns it and the seconds its generation took."""
    root = BENCH_DIR / "corpus" / f"seed{seed}-n{n_images}-{width}x{height}"
    marker = root / "generation.json"
    if marker.exists():
        return Corpus(root, n_images), json.loads(marker.read_text())["seconds"]
    sys.path.insert(0, str(REPO_ROOT))
    from segcore.synthetic import write_corpus

    print(f"generating {n_images} synthetic images ({width}x{height}, seed {seed}) in {root} ...", flush=True)
    started = time.perf_counter()
    write_corpus(root, n_images, seed=seed, height=height, width=width)
    seconds = time.perf_counter() - started
    marker.write_text(json.dumps({"seconds": seconds, "nproc": os.cpu_count()}))
    print(f"generated in {seconds:.1f} s", flush=True)
    return Corpus(root, n_images), seconds


def subset_corpus(corpus: Corpus, n_images: int) -> Corpus:
    """The first ``n_images`` images (gt order) as a corpus of its own; PNG folders are symlinks to the full one."""
    if n_images >= corpus.n_images:
        return corpus
    root = corpus.root / f"first{n_images}"
    subset = Corpus(root, n_images)
    if (root / "pred.json").exists():
        return subset
    root.mkdir(exist_ok=True)
    for name in ("gt", "pred"):
        link = root / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
        document = _load_json(str(corpus.root / f"{name}.json"))
        document["annotations"] = document["annotations"][:n_images]
        image_ids = {ann["image_id"] for ann in document["annotations"]}
        document["images"] = [image for image in document["images"] if image["id"] in image_ids]
        (root / f"{name}.json").write_text(json.dumps(document))
    return subset


def warm_page_cache(corpus: Corpus) -> None:
    """Reads every file of the corpus once, so the first tool timed does not pay for the disk."""
    for folder in (corpus.gt_folder, corpus.pred_folder):
        for path in folder.iterdir():
            path.read_bytes()


# ----------------------------------------------------------------------------------------------------------------
# Running tools.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed run of one tool on one corpus."""

    tool: str
    n_images: int
    wall_s: float = 0.0
    eval_s: float | None = None  # in-process evaluation time, where the tool reports it
    max_rss_mib: float = 0.0
    result: dict | None = None
    skipped: str | None = None  # why there is no result


@dataclass
class Settings:
    """How to launch the tools."""

    python: str
    reference_python: str
    project_command: str
    pin: list[str] = field(default_factory=list)


def tool_command(tool: str, corpus: Corpus, result_path: Path, settings: Settings) -> list[str]:
    """The command line that evaluates ``corpus`` with ``tool`` and leaves its result at ``result_path``."""
    if tool == "project":
        return shlex.split(
            settings.project_command.format(
                python=settings.python, gt_json=corpus.gt_json, pred_json=corpus.pred_json, out=result_path
            )
        )
    python = settings.reference_python if tool == "panopticapi" else settings.python
    return [
        python, str(Path(__file__).resolve()), "--worker", tool,
        "--gt-json", str(corpus.gt_json), "--pred-json", str(corpus.pred_json),
        "--gt-folder", str(corpus.gt_folder), "--pred-folder", str(corpus.pred_folder),
        "--result", str(result_path),
    ]  # fmt: skip


def run_tool(tool: str, corpus: Corpus, settings: Settings, scratch: Path) -> Run:
    """Runs ``tool`` once in a pinned, single-threaded subprocess; times it and records its peak RSS."""
    run = Run(tool, corpus.n_images)
    result_path = scratch / f"{tool}-{corpus.n_images}-{time.monotonic_ns()}.json"
    log_path = result_path.with_suffix(".log")
    command = settings.pin + tool_command(tool, corpus, result_path, settings)
    env = os.environ | SINGLE_THREAD_ENV | {"PYTHONPATH": str(REPO_ROOT)}
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        try:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        except OSError as error:  # e.g. no reference interpreter
            run.skipped = f"cannot start `{shlex.join(command[:4])} ...`: {error}"
            return run
        _, status, usage = os.wait4(process.pid, 0)
        run.wall_s = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    run.max_rss_mib = usage.ru_maxrss / 1024  # KiB on Linux
    if process.returncode != 0 or not result_path.exists():
        run.skipped = _skip_reason(tool, process.returncode, log_path, command)
        return run
    run.result = _read_result(tool, result_path)
    run.eval_s = run.result.pop("seconds", None)
    return run


def _skip_reason(tool: str, returncode: int, log_path: Path, command: list[str]) -> str:
    """A one-line reason why a tool gave no result, with the tail of its output."""
    tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
    if returncode == SKIPPED_EXIT_CODE:
        return f"not installed: {tail}"
    return f"`{shlex.join(command[-12:])}` exited with {returncode}: {tail[-300:]}"


def _read_result(tool: str, path: Path) -> dict:
    """Reads a tool's result; the project's metrics file is reshaped into the common form."""
    document = json.loads(path.read_text())
    if tool != "project":
        return document
    pq, counts = document["pq"], document["per_class_counts"]
    out = {group: _summary_entry(pq[group]) for group in GROUPS}
    absent = {key: 0.0 for key in METRICS}
    out["per_class"] = {
        str(cid): _class_entry(pq["per_class"].get(str(cid), absent), c["tp"], c["fp"], c["fn"], c["iou"])
        for cid, c in counts.items()
    }
    return out


# ----------------------------------------------------------------------------------------------------------------
# Comparing with panopticapi and reporting.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exactness:
    """How one tool's result differs from panopticapi's on the same images."""

    summary_identical: int  # of the 9 All/Things/Stuff x PQ/SQ/RQ values, how many are bit-identical
    summary_total: int
    counts_differ: int  # categories whose tp, fp or fn differ
    iou_differ: int  # categories whose IoU sum differs in any bit
    per_class_differ: int  # categories with tp+fp+fn > 0 whose pq, sq or rq differ in any bit
    absent_differ: int  # categories with tp+fp+fn == 0 not reported as panopticapi's 0.0 (or left out)
    max_abs_pq_delta: float  # largest |PQ - reference PQ| over All/Things/Stuff


def compare(result: dict, reference: dict) -> Exactness:
    """Compares a normalised result with panopticapi's, bit for bit (``float.hex``)."""
    identical, deltas = 0, []
    for group in GROUPS:
        for metric in METRICS:
            value, expected = result[group][metric], reference[group][metric]
            identical += value is not None and float(value).hex() == float(expected).hex()
            deltas.append(abs(float(value) - float(expected)) if value is not None else float("inf"))
    empty = {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0, "pq": 0.0, "sq": 0.0, "rq": 0.0}
    counts = iou = per_class = absent = 0
    for cid in set(result["per_class"]) | set(reference["per_class"]):
        got, want = result["per_class"].get(cid, empty), reference["per_class"].get(cid, empty)
        counts += any(got[k] != want[k] for k in ("tp", "fp", "fn"))
        iou += float(got["iou"]).hex() != float(want["iou"]).hex()
        metrics_differ = any(float(got[k]).hex() != float(want[k]).hex() for k in METRICS)
        if want["tp"] + want["fp"] + want["fn"] > 0:
            per_class += metrics_differ
        else:
            absent += metrics_differ
    return Exactness(identical, 3 * len(GROUPS), counts, iou, per_class, absent, max(deltas))


def machine_description() -> str:
    """nproc, the CPU model from /proc/cpuinfo, the OS and Python."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    return f"nproc {os.cpu_count()}, {model}, {system}"


def tool_versions(settings: Settings) -> str:
    """Installed versions of the compared packages (best effort)."""
    script = (
        "import importlib.metadata as m\n"
        "for p in {packages!r}:\n"
        "    try: print(p, m.version(p))\n"
        "    except Exception: print(p, 'not installed')\n"
    )
    lines = []
    interpreters = (
        (settings.python, ["hotcoco", "vernier", "numpy"]),
        (settings.reference_python, ["panopticapi-lite", "numpy"]),
    )
    for python, packages in interpreters:
        if shutil.which(python) or Path(python).exists():
            command = [python, "-c", script.format(packages=packages)]
            output = subprocess.run(command, capture_output=True, text=True).stdout
            lines.append(", ".join(output.splitlines()))
    return "; ".join(lines)


def _fmt_rate(n_images: int, seconds: float | None) -> str:
    return f"{n_images / seconds:,.1f}" if seconds else "—"


def speed_table(runs: dict[str, list[Run]], n_images: int) -> list[str]:
    """Markdown rows of images/s (best and median over repeats) and peak RSS per tool on the full corpus."""
    rows = [
        "| tool | best img/s (wall) | median img/s (wall) | best img/s (evaluation only) | best wall s "
        "| peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tool, tool_runs in runs.items():
        done = [run for run in tool_runs if run.skipped is None]
        if not done:
            rows.append(f"| {tool} | skipped | | | | |")
            continue
        walls = [run.wall_s for run in done]
        evals = [run.eval_s for run in done if run.eval_s]
        rows.append(
            f"| {tool} | {_fmt_rate(n_images, min(walls))} | {_fmt_rate(n_images, statistics.median(walls))} | "
            f"{_fmt_rate(n_images, min(evals) if evals else None)} | {min(walls):.2f} | "
            f"{max(run.max_rss_mib for run in done):,.0f} |"
        )
    return rows


def exactness_table(subset_runs: dict[str, Run], reference: Run | None) -> list[str]:
    """Markdown rows comparing each tool's result on the subset with panopticapi's."""
    rows = [
        "| tool | img/s (wall) | All/Things/Stuff PQ/SQ/RQ bit-identical | classes with tp/fp/fn ≠ | "
        "classes with IoU sum ≠ (any bit) | present classes with pq/sq/rq ≠ | absent classes not 0.0 | "
        "max abs ΔPQ | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool, run in subset_runs.items():
        if run.skipped is not None:
            rows.append(f"| {tool} | skipped | | | | | | | |")
            continue
        rate = _fmt_rate(run.n_images, run.wall_s)
        if reference is None or reference.result is None:
            rows.append(f"| {tool} | {rate} | no reference | | | | | | {run.max_rss_mib:,.0f} |")
            continue
        e = compare(run.result, reference.result)
        rows.append(
            f"| {tool} | {rate} | {e.summary_identical}/{e.summary_total} | {e.counts_differ} | {e.iou_differ} | "
            f"{e.per_class_differ} | {e.absent_differ} | {e.max_abs_pq_delta:.3g} | {run.max_rss_mib:,.0f} |"
        )
    return rows


def report(args: argparse.Namespace, settings: Settings, corpus: Corpus, generation_s: float,
           runs: dict[str, list[Run]], subset_runs: dict[str, Run], argv: list[str]) -> str:  # fmt: skip
    """The whole markdown report."""
    reference = subset_runs.get("panopticapi")
    n_classes = len(reference.result["per_class"]) if reference and reference.result else None
    lines = [
        "# PQ evaluation speed on one core, and exactness against panopticapi",
        "",
        f"- command: `{shlex.join(['python', 'bench/pq_speed.py', *argv])}`",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {machine_description()}",
        f"- versions: {tool_versions(settings)}",
        f"- corpus: {corpus.n_images} synthetic images {args.width}x{args.height}, seed {args.seed} "
        f"(`segcore.synthetic.write_corpus`, {corpus.root.relative_to(REPO_ROOT)}), "
        f"generated in {generation_s:.1f} s with {os.cpu_count()} cores",
        f"- each tool in its own process: `{shlex.join(settings.pin) or 'no pinning (taskset missing)'}`, "
        f"{', '.join(f'{k}=1' for k in SINGLE_THREAD_ENV)}; wall time includes interpreter start-up and imports",
        "",
        f"## Speed: {corpus.n_images} images, {args.repeats} interleaved repeat(s)",
        "",
        *speed_table(runs, corpus.n_images),
        "",
        f"## Exactness: first {args.reference_images} images against panopticapi `pq_compute_single_core`"
        + (f" ({n_classes} classes)" if n_classes else ""),
        "",
        *exactness_table(subset_runs, reference),
        "",
        "img/s (wall): images / seconds of the whole subprocess, interpreter start-up and imports included; "
        "evaluation only: the time the tool itself takes after import (tools run through this script's workers). "
        "Bit-identical means equal `float.hex`. Peak RSS: `ru_maxrss` of the tool's process (`os.wait4`).",
    ]
    notes = [f"- {tool}: {run.skipped}" for tool, run in subset_runs.items() if run.skipped]
    notes += [f"- {tool} (full corpus): {r.skipped}" for tool, rs in runs.items() for r in rs[:1] if r.skipped]
    if notes:
        lines += ["", "## Skipped", "", *notes]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Entry point.
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags; ``--smoke`` shrinks the run to well under a minute."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="corpus size")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed runs per tool on the full corpus")
    parser.add_argument("--reference-images", type=int, default=300, help="subset size for panopticapi")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--reference-python", default=DEFAULT_REFERENCE_PYTHON, help="a Python with panopticapi")
    parser.add_argument("--project-command", default=DEFAULT_PROJECT_COMMAND, help="template for the project tool")
    parser.add_argument("--out", type=Path, default=None, help="markdown report (default bench/out/pq_speed.md)")
    parser.add_argument("--smoke", action="store_true", help="20 images, 1 repeat, 20 reference images")
    worker = parser.add_argument_group("worker mode (internal)")
    worker.add_argument("--worker", choices=sorted(WORKERS))
    for flag in ("--gt-json", "--pred-json", "--gt-folder", "--pred-folder", "--result"):
        worker.add_argument(flag)
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.repeats, args.reference_images = 20, 1, 20
    if args.out is None:
        args.out = BENCH_DIR / "out" / ("pq_speed_smoke.md" if args.smoke else "pq_speed.md")
    unknown = set(args.tools.split(",")) - set(TOOLS)
    if unknown:
        parser.error(f"Expected --tools from {', '.join(TOOLS)}, but got {', '.join(sorted(unknown))}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    """How tools are launched: this interpreter, the reference one, and taskset pinning when available."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    return Settings(sys.executable, args.reference_python, args.project_command, pin)


def time_full_corpus(
    tools: list[str], corpus: Corpus, settings: Settings, repeats: int, scratch: Path
) -> dict[str, list[Run]]:
    """Runs every fast tool ``repeats`` times on the whole corpus, interleaved; a tool that fails is not retried."""
    runs: dict[str, list[Run]] = {tool: [] for tool in tools}
    for repeat in range(repeats):
        for tool in tools:
            if runs[tool] and runs[tool][0].skipped:
                continue
            run = run_tool(tool, corpus, settings, scratch)
            runs[tool].append(run)
            status = run.skipped or f"{corpus.n_images / run.wall_s:,.1f} img/s, {run.max_rss_mib:,.0f} MiB"
            print(f"[{repeat + 1}/{repeats}] {tool}: {status}", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    """Builds or reuses the corpus, times the tools, compares them with panopticapi, writes the report."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    tools = [tool for tool in TOOLS if tool in args.tools.split(",")]
    settings = settings_from(args)
    corpus, generation_s = ensure_corpus(args.images, args.seed, args.height, args.width)
    subset = subset_corpus(corpus, args.reference_images)
    warm_page_cache(corpus)
    with tempfile.TemporaryDirectory(prefix="pq_speed-") as scratch:
        fast_tools = [tool for tool in tools if tool != "panopticapi"]
        runs = time_full_corpus(fast_tools, corpus, settings, args.repeats, Path(scratch))
        subset_runs = {tool: run_tool(tool, subset, settings, Path(scratch)) for tool in tools}
    for tool, run in subset_runs.items():
        print(f"subset {tool}: {run.skipped or f'{subset.n_images / run.wall_s:,.1f} img/s'}", flush=True)
    text = report(args, settings, corpus, generation_s, runs, subset_runs, argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
