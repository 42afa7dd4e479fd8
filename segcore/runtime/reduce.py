"""The reduce of a labeling job: sums the committed shards' partials into metrics.json and report.md.

It reads partials only, never pixels: label statistics always and, when the shards had ground truth, PQ, the
semantic confusion, the PQ extras (by size, per image, mislabelled segments) and the instance view's RLEs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Mapping

from segcore.categories import Categories, categories_from_json
from segcore.io.commit import Output, committed_shards, read_manifest, read_marker, write_whole
from segcore.io.parallel import READ_WINDOW, map_in_order
from segcore.metrics.extras import PQExtras, confusion_table, pq_by_size, worst_and_best
from segcore.metrics.instances import InstancePartial, format_instance_scores, instance_scores
from segcore.metrics.pq import PQFold, ShardPQ
from segcore.metrics.semantic import Confusion, format_scores, semantic_scores
from segcore.metrics.stats import LabelStats, format_summary, summary
from segcore.report import write_html_report
from segcore.runtime.evaluation import format_table, results_document
from segcore.runtime.truth_use import TruthUse

logger = logging.getLogger(__name__)
PER_IMAGE_KEPT = 20  # worst and best images by PQ listed in metrics.json


@dataclass
class Merged:
    """The sum of the committed shards' partials, in memory that does not grow with the images (but the instance
    view's records, one per predicted thing: see segcore.metrics.instances)."""

    shards: int = 0
    stats: LabelStats = field(default_factory=LabelStats)
    pq: PQFold = field(default_factory=PQFold)
    truth_unevaluated: int = 0
    semantic: Confusion | None = None
    extras: PQExtras | None = None  # per-image records trimmed to the worst and best PER_IMAGE_KEPT
    instances: InstancePartial | None = None
    without_views: int = 0  # shards with a PQ partial whose statistics predate the extras and instance views
    truth_use: TruthUse = field(default_factory=TruthUse)  # which sample scored each --gt image
    shard_ids: list[str] = field(default_factory=list)  # the shards summed, in order
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (shard id, why) of shards that could not be read


@dataclass
class ShardPartials:
    """One shard's partials, read and parsed whole before any is added (a shard counts entirely or not at all)."""

    shard_id: str
    stats: LabelStats | None = None
    truth_unevaluated: int = 0
    semantic: Confusion | None = None
    extras: PQExtras | None = None
    instances: InstancePartial | None = None
    pq: ShardPQ | None = None
    without_views: bool = False


def read_shard_partials(output: Output, shard_id: str) -> ShardPartials:
    """Reads and parses a committed shard's statistics and PQ partial (the files its marker vouches for).

    Raises:
        ValueError: a file that does not parse or is of an unknown version; the message names it.
        OSError: a file could not be read.
    """
    marker = read_marker(output, shard_id)
    shard = ShardPartials(shard_id)
    if marker.get("stats"):
        name = f"stats/{shard_id}.json"
        try:
            document = json.loads(output.fs.cat_file(output.stats_path(shard_id)))
            shard.stats = LabelStats.from_json(document["stats"])
            shard.truth_unevaluated = int(document["truth_unevaluated"])
            if document.get("semantic") is not None:
                shard.semantic = Confusion.from_json(document["semantic"])
            shard.without_views = "pq_extras" not in document and bool(marker.get("partials"))
            if document.get("pq_extras") is not None:
                shard.extras = PQExtras.from_json(document["pq_extras"])
                for record in shard.extras.images:
                    record["shard"] = shard_id  # where the report's gallery finds the image
            if document.get("instances") is not None:
                shard.instances = InstancePartial.from_json(document["instances"])
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
            raise ValueError(f"Expected the statistics {name} to be readable, but {_why(error)}") from None
    if marker.get("partials"):
        name = f"pq/{shard_id}.json"
        try:
            document = json.loads(output.fs.cat_file(output.partials_path(shard_id)))
        except ValueError as error:
            raise ValueError(f"Expected the PQ partial {name} to be JSON, but {_why(error)}") from None
        shard.pq = PQFold.parse(document, name)
    return shard


def _why(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"it has no entry {error}"
    return f"reading it failed: {error}"


def merged_partials(output: Output, window: int = READ_WINDOW) -> Merged:
    """Sums the partials of every committed shard, reading ``window`` shards at a time, folding in shard order.

    A shard whose marker or partials cannot be read or parsed is left out whole, named in ``left_out`` with why.
    """
    merged = Merged()

    def read(shard_id: str) -> ShardPartials | tuple[str, str]:
        try:
            return read_shard_partials(output, shard_id)
        except (OSError, ValueError) as error:
            return shard_id, str(error)

    for shard in map_in_order(read, sorted(committed_shards(output)), window):
        if isinstance(shard, tuple):
            logger.error("reduce: shard %s left out: %s", *shard)
            merged.left_out.append(shard)
        else:
            _add_shard(merged, shard)
    if not merged.pq.in_order:  # --gt ranks interleaved across shards: fold again in the reference's order
        def partial_of(shard_id: str) -> dict:
            return json.loads(output.fs.cat_file(output.partials_path(shard_id)))

        merged.pq.refold(lambda keys: map_in_order(partial_of, keys, window))
    return merged


def _add_shard(merged: Merged, shard: ShardPartials) -> None:
    merged.shards += 1
    merged.shard_ids.append(shard.shard_id)
    if shard.stats is not None:
        merged.stats += shard.stats
        merged.truth_unevaluated += shard.truth_unevaluated
        if shard.semantic is not None:
            if merged.semantic is None:
                merged.semantic = shard.semantic
            else:
                merged.semantic += shard.semantic
        merged.without_views += shard.without_views
        if shard.extras is not None:
            merged.truth_use.add(shard.shard_id, shard.extras.images)
            merged.extras = _merge_extras(merged.extras, shard.extras)
        if shard.instances is not None:
            merged.instances = merged.instances or InstancePartial()
            merged.instances += shard.instances
    if shard.pq is not None:
        merged.pq.add(shard.pq, shard.shard_id)


def _merge_extras(merged: PQExtras | None, shard: PQExtras) -> PQExtras:
    """Adds a shard's extras, keeping only the worst and best images so memory does not grow with the data."""
    if merged is None:
        merged = PQExtras()
    merged += shard
    worst, best = worst_and_best(merged.images, PER_IMAGE_KEPT)
    kept = {id(r): r for r in worst + best}
    merged.images = list(kept.values())
    return merged


def job_categories_of(output: Output) -> Categories:
    """The categories in the output's manifest (their order fixes PQ's averaging order)."""
    return categories_from_json(read_manifest(output)["categories"])


def reduce_output(output: Output, storage_options: Mapping | None = None) -> dict:
    """Writes ``metrics.json``, ``report.md`` and ``report.html`` for the committed shards; returns the metrics.

    ``report.html`` (segcore.report) adds plots and a gallery of overlays of the worst and best images (or a
    sample without ground truth), for which it reads those few images with ``storage_options``.

    ``metrics.json`` holds ``"stats"`` (label statistics) always; with ground truth also panopticapi's dict
    under ``"pq"`` (plus ``pq_exact``, ``per_class_counts``, ``images``) and ``truth_unevaluated``, the count
    of images with ground truth left out because the image or its ground truth was unusable (see errors/), and
    ``"semantic"``: mIoU, pixel accuracy, mean accuracy, fwIoU and per-class IoU from the summed confusion;
    ``"pq_by_size"`` (small / medium / large, each with All / Things / Stuff), ``"per_image"`` (the worst and
    best images by PQ), ``"category_confusion"`` (mislabelled matches, most frequent first) and
    ``"instances"`` (COCO mask AP of the thing classes); ``"shards_left_out"`` lists committed shards whose
    partials could not be read or parsed (shard and error), which no number counts.

    The shards' partials are read ``READ_WINDOW`` at a time (segcore.io.parallel) and folded in shard order; PQ
    needs no list of matches (segcore.metrics.pq.PQFold) unless ``--gt`` ranks interleave across shards.

    Raises:
        segcore.runtime.truth_use.DuplicateTruth: a ground-truth image was scored by samples of several shards
            (nothing is written).
    """
    categories = job_categories_of(output)
    merged = merged_partials(output)
    merged.truth_use.check()  # a ground-truth image scored twice would be counted twice: no metrics
    document: dict = {"shards": merged.shards, "stats": summary(merged.stats, categories)}
    if merged.pq.images:
        document.update(results_document(merged.pq, categories))
        document["truth_unevaluated"] = merged.truth_unevaluated
    if merged.semantic is not None:
        document["semantic"] = semantic_scores(merged.semantic, categories)
    if merged.extras is not None:
        document["pq_by_size"] = pq_by_size(merged.extras, categories)
        worst, best = worst_and_best(merged.extras.images, PER_IMAGE_KEPT)
        document["per_image"] = {"worst": worst, "best": best}
        document["category_confusion"] = confusion_table(merged.extras)
    if merged.instances is not None:
        document["instances"] = instance_scores(merged.instances, categories)
    if merged.without_views:
        document["shards_without_views"] = merged.without_views
    if merged.left_out:
        document["shards_left_out"] = [{"shard": shard_id, "error": why} for shard_id, why in merged.left_out]
    # each file whole; metrics.json last, so its presence means the reports of the same reduce are there too
    write_whole(output, output.path("report.md"), report_markdown(document, categories).encode())
    write_html_report(output, document, categories, storage_options, shard_ids=merged.shard_ids)
    write_whole(output, output.path("metrics.json"), json.dumps(document, indent=1).encode())
    if merged.pq.images:
        logger.info("reduce: PQ %.4f over %d images", document["pq"]["All"]["pq"], merged.pq.images)
    logger.info("reduce: %d shards, %d images", merged.shards, merged.stats.images)
    return document


def report_markdown(document: dict, categories: Categories) -> str:
    """report.md: the PQ table (with ground truth) and the label statistics."""
    lines = ["# Labeling report", ""]
    if "pq" in document:
        lines += ["## Panoptic Quality", "", f"{document['images']} images with ground truth."]
        if document["truth_unevaluated"]:
            lines.append(f"{document['truth_unevaluated']} images with ground truth were left out: the image or "
                         "its ground truth was unusable (see errors/).")
        lines += ["", "```", format_table(document["pq"], categories, per_class=True), "```", ""]
    if document.get("shards_left_out"):
        left_out = document["shards_left_out"]
        lines += [f"**{len(left_out)} committed shards are left out of every number below**: their partials could "
                  "not be read (rerun the job with --overwrite, or relabel those shards). The first of them:", ""]
        lines += [f"- {entry['shard']}: {entry['error']}" for entry in left_out[:10]]
        lines.append("")
    if document.get("shards_without_views"):
        lines += [f"{document['shards_without_views']} shards were labelled by an older version: PQ counts them, "
                  "but PQ by size, per-image PQ, mislabelled segments and mask AP leave them out "
                  "(relabel them with --overwrite to include them).", ""]
    if "pq_by_size" in document:
        lines += ["## PQ by segment size", "", "```", format_by_size(document["pq_by_size"]), "```", ""]
    if "per_image" in document:
        lines += ["## Worst images by PQ", "", "| image | PQ | TP | FP | FN |", "|---|---|---|---|---|"]
        lines += [f"| {r['image_id']} | {100 * r['pq']:.1f} | {r['tp']} | {r['fp']} | {r['fn']} |"
                  for r in document["per_image"]["worst"][:10]]
        lines.append("")
    if document.get("category_confusion"):
        names = {c.id: c.name for c in categories}
        lines += ["## Mislabelled segments (IoU > 0.5, other category)", "", "| ground truth | predicted | count |",
                  "|---|---|---|"]
        lines += [f"| {names.get(r['gt'], r['gt'])} | {names.get(r['pred'], r['pred'])} | {r['count']} |"
                  for r in document["category_confusion"][:20]]
        lines.append("")
    if "semantic" in document:
        lines += ["## Semantic segmentation", "", format_scores(document["semantic"]), ""]
    if "instances" in document:
        lines += ["## Instance segmentation (mask AP, thing classes)", "", "```",
                  format_instance_scores(document["instances"]), "```", ""]
    lines += ["## Label statistics", "", format_summary(document["stats"]), ""]
    return "\n".join(lines)


def format_by_size(by_size: dict) -> str:
    """A plain-text table of PQ, SQ, RQ per size bucket and group (percent)."""
    lines = [f"{'size':<8}{'group':<8}{'PQ':>7}{'SQ':>7}{'RQ':>7}{'N':>5}"]
    for size, groups in by_size.items():
        for name, values in groups.items():
            lines.append(f"{size:<8}{name:<8}{100 * values['pq']:7.1f}{100 * values['sq']:7.1f}"
                         f"{100 * values['rq']:7.1f}{values['n']:5d}")
    return "\n".join(lines)
