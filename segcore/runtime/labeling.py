"""The labeling job's plan, without Ray: validated configuration, shard listing, manifest, what is left to do."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from segcore.categories import Categories, coco_panoptic_categories
from segcore.io.commit import Output, claim_output, committed_shards
from segcore.io.images import DEFAULT_MAX_PIXELS
from segcore.io.shards import ShardSpec, list_shards
from segcore.models.registry import ModelOptions, check_spec
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
        actors: number of model actors; None: one per GPU, or one per two CPUs without GPUs.
        gpus_per_actor: GPUs each actor pins; None: 1 when the cluster has GPUs, else 0.
        cpus_per_actor: CPUs each actor reserves (small, so readers are not starved).
        batch_size, decode_threads, encode_threads, max_pixels: see WorkerConfig.
        shard_size: images per shard when the input is a folder.
        max_retries: attempts after the first for a shard whose actor died or whose read failed.
        max_shards: label only the first N pending shards (for trying things out).
        dry_run: plan and report, label nothing.
        overwrite: replace another job's output (its markers are removed).
        storage_options: fsspec options (credentials, endpoints); never logged or written.
    """

    input: str
    output: str
    model: str = "demo"
    model_options: ModelOptions = field(default_factory=ModelOptions)
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

    def worker_config(self) -> WorkerConfig:
        """The part every actor needs."""
        return WorkerConfig(
            output=self.output, model=self.model, model_options=self.model_options, batch_size=self.batch_size,
            decode_threads=self.decode_threads, encode_threads=self.encode_threads, max_pixels=self.max_pixels,
            storage_options=self.storage_options, torch_threads=max(1, int(self.cpus_per_actor)),
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
    if config.max_shards is not None and config.max_shards < 1:
        raise ValueError(f"Expected `max_shards` to be a positive integer or unset, but got {config.max_shards!r}")


def job_categories(config: LabelJobConfig) -> Categories:
    """The dataset categories the job's segments use: the demo's five, else COCO panoptic's 133."""
    from segcore.synthetic import demo_categories

    return demo_categories() if config.model == "demo" else coco_panoptic_categories()


def code_version() -> str:
    """The git commit of the code, or "unknown" outside a checkout (e.g. a Ray working-dir zip)."""
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def manifest_of(config: LabelJobConfig, shards: list[ShardSpec]) -> dict:
    """The manifest: what decides the output's content (never credentials), the ordered shards, code version."""
    options = dataclasses.asdict(config.model_options)
    options.pop("storage_options")
    return {
        "input": config.input,
        "model": config.model,
        "model_options": options,
        "max_pixels": config.max_pixels,
        "shard_size": config.shard_size,
        "categories": job_categories(config).to_coco(),
        "shards": [{"shard_id": s.shard_id, "kind": s.kind, "uri": s.uri, "images": len(s.members) or None}
                   for s in shards],
        "code_version": code_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class Plan:
    """What a run will do: every shard of the job, and the ones not committed yet (after ``max_shards``)."""

    shards: list[ShardSpec]
    pending: list[ShardSpec]
    claim: str


def plan(config: LabelJobConfig) -> Plan:
    """Validates, lists shards once, claims the output (manifest) and finds the shards left to do.

    A dry run claims nothing and writes nothing.

    Raises:
        ValueError: bad configuration or an input that matches nothing.
        segcore.io.commit.ManifestMismatch: the output holds another job and ``overwrite`` is False.
    """
    validate(config)
    shards = list_shards(config.input, config.shard_size, config.storage_options)
    output = Output.open(config.output, config.storage_options)
    claim = "dry-run" if config.dry_run else claim_output(output, manifest_of(config, shards), config.overwrite)
    done = committed_shards(output) if claim != "overwritten" else set()
    pending = [s for s in shards if s.shard_id not in done]
    if config.max_shards is not None:
        pending = pending[: config.max_shards]
    logger.info("%d shards, %d committed, %d to do (%s)", len(shards), len(shards) - len(pending), len(pending),
                claim)
    return Plan(shards, pending, claim)


def summary_lines(result: Mapping) -> list[str]:
    """Human-readable end-of-job summary."""
    lines = [
        f"shards: {result['done']} committed now, {result['skipped']} already committed, "
        f"{len(result['failed'])} failed",
        f"images: {result['images']} ({result['errors']} error rows) in {result['seconds']:.1f} s "
        f"= {result['images'] / max(result['seconds'], 1e-9):.1f} img/s",
    ]
    lines += [f"FAILED {shard_id}: {error}" for shard_id, error in sorted(result["failed"].items())]
    return lines

