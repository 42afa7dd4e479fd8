"""The labeling job's plan, without Ray: validated configuration, shard listing, manifest, what is left to do."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import posixpath
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from segcore.categories import Categories
from segcore.io.commit import Output, claim_output, committed_shards
from segcore.io.images import DEFAULT_MAX_PIXELS
from segcore.io.lock import JobLock, acquire
from segcore.io.shards import ShardSpec, list_shards
from segcore.io.storage import redact_uri
from segcore.io.truth import GroundTruth, load_ground_truth
from segcore.models.registry import ModelOptions, check_spec, model_categories, model_label_map
from segcore.runtime.worker import WorkerConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelJobConfig:
    """Everything ``python -m jobs.label`` is told; field names match the flags.

    Attributes:
        input: shards: tar / Parquet URIs with globs or brace ranges, or a folder of images.
        output: where shards, markers, errors and the manifest go (any fsspec URI).
        model: model spec (``demo``, ``hf:...``, ``torchvision:...``, a preset).
        model_options: device, dtype, thresholds, label map.
        gt: COCO panoptic ground-truth JSON: PQ of the images it lists (matched by file name without extension);
            its categories become the job's, and the model's labels must map onto them.
        gt_dir: the ground truth's PNG folder; default: ``gt`` without ``.json``.
        actors: number of model actors; None: one per GPU, or one per two CPUs without GPUs.
        gpus_per_actor: GPUs each actor pins; None: 1 when the cluster has GPUs, else 0.
        cpus_per_actor: CPUs each actor reserves (small, so readers are not starved).
        batch_size, decode_threads, encode_threads, max_pixels: see WorkerConfig.
        shard_size: images per shard when the input is a folder.
        max_retries: attempts after the first for a shard whose failure may not recur: its actor died, storage
            failed transiently, memory ran out (``segcore.runtime.driver.worth_retrying``); any other failure is
            reported at once.
        max_shards: label only the first N pending shards (for trying things out).
        dry_run: plan and report, label nothing.
        overwrite: start over: the output's markers are removed and every shard is redone (also for the same job).
        storage_options: fsspec options (credentials, endpoints); never logged or written.
    """

    input: str
    output: str
    model: str = "demo"
    model_options: ModelOptions = field(default_factory=ModelOptions)
    gt: str | None = None
    gt_dir: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    batch_size: int = 8
    decode_threads: int = 4
    encode_threads: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    shard_size: int = 1000
    max_retries: int = 2
    max_shards: int | None = None
    dry_run: bool = False
    overwrite: bool = False
    storage_options: Mapping = field(default_factory=dict)

    def worker_config(self, categories: Categories | None = None) -> WorkerConfig:
        """The part every actor needs; ``categories``: the job's (the ground truth's), None for the model's."""
        return WorkerConfig(
            output=self.output, model=self.model, model_options=self.model_options, batch_size=self.batch_size,
            decode_threads=self.decode_threads, encode_threads=self.encode_threads, max_pixels=self.max_pixels,
            storage_options=self.storage_options, torch_threads=max(1, int(self.cpus_per_actor)),
            categories=categories,
        )


def validate(config: LabelJobConfig) -> None:
    """Checks the configuration before any cluster resource is taken.

    Raises:
        ValueError: a bad model spec or option, or a non-positive count; the message lists allowed values.
    """
    check_spec(config.model, config.model_options)
    for name in ("batch_size", "decode_threads", "encode_threads", "max_pixels", "shard_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"Expected `{name}` to be a positive integer, but got {getattr(config, name)!r}")
    if config.actors is not None and config.actors < 1:
        raise ValueError(f"Expected `actors` to be a positive integer or unset, but got {config.actors!r}")
    if config.gpus_per_actor is not None and config.gpus_per_actor < 0:
        raise ValueError(f"Expected `gpus_per_actor` >= 0, but got {config.gpus_per_actor!r}")
    if config.cpus_per_actor <= 0 or config.max_retries < 0:
        raise ValueError(f"Expected `cpus_per_actor` > 0 and `max_retries` >= 0, but got "
                         f"{config.cpus_per_actor!r}, {config.max_retries!r}")
    if config.gt_dir is not None and config.gt is None:
        raise ValueError("Expected `gt` (the ground-truth JSON) when `gt_dir` is given, but got only `gt_dir`")
    if config.max_shards is not None and config.max_shards < 1:
        raise ValueError(f"Expected `max_shards` to be a positive integer or unset, but got {config.max_shards!r}")


def job_categories(config: LabelJobConfig, truth: GroundTruth | None = None) -> Categories:
    """The dataset categories the job's segments use: the ground truth's, else the model's (the demo's five, the
    dataset it was trained on, else COCO's 133)."""
    if truth is not None:
        return truth.categories
    return model_categories(config.model, config.model_options)


def code_version() -> str:
    """The git commit of the code, or "unknown" outside a checkout (e.g. a Ray working-dir zip)."""
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def manifest_of(config: LabelJobConfig, shards: list[ShardSpec], categories: Categories, label_map: dict) -> dict:
    """The manifest: what decides the output's content (never credentials), the model's label map, the
    categories, the ordered shards, the code version."""
    options = dataclasses.asdict(config.model_options)
    options.pop("storage_options")
    options = json.loads(json.dumps(options))  # as a rerun reads it back (tuples become lists)
    return {
        "input": redact_uri(config.input),
        "model": config.model,
        "model_options": options,
        "label_map": label_map,
        "ground_truth": {"json": redact_uri(config.gt), "dir": config.gt_dir and redact_uri(config.gt_dir)}
        if config.gt else None,
        "max_pixels": config.max_pixels,
        "shard_size": config.shard_size,
        "categories": categories.to_coco(),
        "shards": [{"shard_id": s.shard_id, "kind": s.kind, "uri": redact_uri(s.uri), "images": len(s.members) or None}
                   for s in shards],
        "code_version": code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class Plan:
    """What a run will do: every shard of the job, and the ones not committed yet (after ``max_shards``).

    Attributes:
        shards, pending: all shards, and those left to do.
        claim: "created", "resumed", "overwritten" or "dry-run".
        categories: the job's dataset categories (the ground truth's when given).
        truth: the ground truth, indexed by image key, or None.
        lock: the output's lock, held until the job calls ``release`` (None for a dry run).
    """

    shards: list[ShardSpec]
    pending: list[ShardSpec]
    claim: str
    categories: Categories
    truth: GroundTruth | None = None
    lock: JobLock | None = None


def plan(config: LabelJobConfig) -> Plan:
    """Validates, reads the ground truth, checks the model's labels, lists shards once, claims the output
    (manifest) and finds the shards left to do. A dry run claims nothing and writes nothing.

    Raises:
        ValueError: bad configuration, an input that matches nothing, an unreadable ground truth, or model
            labels that do not map onto the job's categories.
        FileNotFoundError: the ground-truth JSON does not exist.
        segcore.io.commit.ManifestMismatch: the output holds another job and ``overwrite`` is False.
        segcore.io.lock.JobLocked: another job is running on the output.
    """
    validate(config)
    truth = load_ground_truth(config.gt, config.gt_dir, config.storage_options) if config.gt else None
    categories = job_categories(config, truth)
    label_map = model_label_map(config.model, config.model_options, categories)
    shards = list_shards(config.input, config.shard_size, config.storage_options)
    if truth is not None:
        _report_coverage(truth, shards)
    output = Output.open(config.output, config.storage_options)
    manifest = manifest_of(config, shards, categories, label_map)
    if config.dry_run:
        claim, lock = "dry-run", None
    else:
        lock = acquire(output)
        try:
            claim = claim_output(output, manifest, config.overwrite)
        except BaseException:
            lock.release()
            raise
    done = committed_shards(output, validate=True) if claim != "overwritten" else set()
    pending = [s for s in shards if s.shard_id not in done]
    if config.max_shards is not None:
        pending = pending[: config.max_shards]
    logger.info("%d shards, %d committed, %d to do (%s)", len(shards), len(shards) - len(pending), len(pending),
                claim)
    return Plan(shards, pending, claim, categories, truth, lock)


def _report_coverage(truth: GroundTruth, shards: list[ShardSpec]) -> None:
    """Warns about ground-truth images that a folder input does not hold (their PQ would be missing), and refuses
    ground-truth images that several input images match (one image would be scored several times).

    Raises:
        ValueError: ambiguous matches; the message lists examples.
    """
    if not shards or any(s.kind != "folder" for s in shards):
        return  # tar and Parquet members are known only when read (the worker refuses a second match per shard)
    keys = [posixpath.splitext(m.removeprefix(s.uri.rstrip("/") + "/"))[0] for s in shards for m in s.members]
    matched = truth.for_keys(keys)
    claims: dict[int, list[str]] = {}
    for key, ref in matched.items():
        claims.setdefault(ref.rank, []).append(key)
    ambiguous = [sorted(claimants) for claimants in claims.values() if len(claimants) > 1]
    if ambiguous:
        examples = "; ".join(", ".join(group) for group in ambiguous[:3])
        raise ValueError(f"Expected each ground-truth image of {redact_uri(truth.uri)} to match one input image, but "
                         f"{len(ambiguous)} match several (by file name without folders), e.g. {examples}; "
                         "give the ground truth file names with their folders, or label the folders separately")
    covered = {ref.rank for ref in matched.values()}
    missing = [key for key, ref in truth.by_key.items() if ref.rank not in covered]
    if missing:
        logger.warning("%d of %d ground-truth images are not in the input (e.g. %s); PQ leaves them out",
                       len(missing), len(truth.by_key), ", ".join(missing[:3]))


def shard_truth(truth: GroundTruth | None, spec: ShardSpec) -> GroundTruth | None:
    """The ground truth a shard's actor needs: a folder shard's own images; all of it for tar and Parquet
    shards, whose keys are known only when read."""
    if truth is None or spec.kind != "folder":
        return truth
    root = spec.uri.rstrip("/") + "/"
    keys = [posixpath.splitext(member.removeprefix(root))[0] for member in spec.members]
    return dataclasses.replace(truth, by_key=truth.for_keys(keys))


def summary_lines(result: Mapping) -> list[str]:
    """Human-readable end-of-job summary."""
    lines = [
        f"shards: {result['done']} committed now, {result['skipped']} already committed, "
        f"{len(result['failed'])} failed",
        f"images: {result['images']} ({result['errors']} error rows) in {result['seconds']:.1f} s "
        f"= {result['images'] / max(result['seconds'], 1e-9):.1f} img/s",
    ]
    image_pixels, batch_pixels = result.get("batch_pixels") or (0, 0)
    if batch_pixels:
        lines.append(f"padding: {100 * (1 - image_pixels / batch_pixels):.1f} % of the pixels fed to the model "
                     "(images are batched by padded input size)")
    lines += [f"FAILED {shard_id}: {error}" for shard_id, error in sorted(result["failed"].items())]
    return lines
