"""The reduce of a labeling job: sums the committed shards' partials into metrics.json and report.md.

It reads partials only, never pixels: label statistics always, and PQ when the shards had ground truth.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from segcore.categories import Categories, categories_from_json
from segcore.io.commit import MANIFEST, Output, committed_shards, read_marker, write_whole
from segcore.metrics.pq import PQPartial
from segcore.metrics.semantic import Confusion, format_scores, semantic_scores
from segcore.metrics.stats import LabelStats, format_summary, summary
from segcore.runtime.evaluation import format_table, results_document

logger = logging.getLogger(__name__)


@dataclass
class Merged:
    """The sum of the committed shards' partials."""

    shards: int = 0
    stats: LabelStats = field(default_factory=LabelStats)
    pq: PQPartial = field(default_factory=PQPartial)
    truth_unevaluated: int = 0
    semantic: Confusion | None = None


def merged_partials(output: Output) -> Merged:
    """Sums the statistics and PQ partials of every committed shard (markers say which shards count and which
    files they vouch for)."""
    merged = Merged()
    for shard_id in sorted(committed_shards(output)):
        marker = read_marker(output, shard_id)
        merged.shards += 1
        if marker.get("stats"):
            document = json.loads(output.fs.cat_file(output.stats_path(shard_id)))
            merged.stats += LabelStats.from_json(document["stats"])
            merged.truth_unevaluated += document["truth_unevaluated"]
            if document.get("semantic") is not None:
                confusion = Confusion.from_json(document["semantic"])
                if merged.semantic is None:
                    merged.semantic = confusion
                else:
                    merged.semantic += confusion
        if marker.get("partials"):
            merged.pq += PQPartial.from_json(json.loads(output.fs.cat_file(output.partials_path(shard_id))))
    return merged


def job_categories_of(output: Output) -> Categories:
    """The categories in the output's manifest (their order fixes PQ's averaging order)."""
    manifest = json.loads(output.fs.cat_file(output.path(MANIFEST)))
    return categories_from_json(manifest["categories"])


def reduce_output(output: Output) -> dict:
    """Writes ``metrics.json`` and ``report.md`` for the committed shards and returns the metrics.

    ``metrics.json`` holds ``"stats"`` (label statistics) always; with ground truth also panopticapi's dict
    under ``"pq"`` (plus ``pq_exact``, ``per_class_counts``, ``images``) and ``truth_unevaluated``, the count
    of images with ground truth left out because the image or its ground truth was unusable (see errors/), and
    ``"semantic"``: mIoU, pixel accuracy, mean accuracy, fwIoU and per-class IoU from the summed confusion.
    """
    categories = job_categories_of(output)
    merged = merged_partials(output)
    document: dict = {"shards": merged.shards, "stats": summary(merged.stats, categories)}
    if merged.pq.images:
        document.update(results_document(merged.pq, categories))
        document["truth_unevaluated"] = merged.truth_unevaluated
    if merged.semantic is not None:
        document["semantic"] = semantic_scores(merged.semantic, categories)
    write_whole(output, output.path("metrics.json"), json.dumps(document, indent=1).encode())
    write_whole(output, output.path("report.md"), report_markdown(document, categories).encode())
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
    if "semantic" in document:
        lines += ["## Semantic segmentation", "", format_scores(document["semantic"]), ""]
    lines += ["## Label statistics", "", format_summary(document["stats"]), ""]
    return "\n".join(lines)
