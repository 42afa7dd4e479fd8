"""The reduce of a labeling job: sums the committed shards' PQ partials into metrics.json and report.md."""

from __future__ import annotations

import json
import logging

from segcore.categories import categories_from_json
from segcore.io.commit import MANIFEST, Output, committed_shards, read_marker, write_whole
from segcore.metrics.pq import PQPartial
from segcore.runtime.evaluation import format_table, results_document

logger = logging.getLogger(__name__)


def merged_partial(output: Output) -> PQPartial:
    """The sum of the partials of every committed shard that has one (markers say which); reads no pixels."""
    total = PQPartial()
    for shard_id in sorted(committed_shards(output)):
        if read_marker(output, shard_id).get("partials"):
            total += PQPartial.from_json(json.loads(output.fs.cat_file(output.partials_path(shard_id))))
    return total


def reduce_output(output: Output) -> dict | None:
    """Writes ``metrics.json`` (panopticapi's dict under ``"pq"``) and ``report.md``; None without ground truth.

    The categories (and their order, which fixes the averaging order) are the manifest's.
    """
    manifest = json.loads(output.fs.cat_file(output.path(MANIFEST)))
    categories = categories_from_json(manifest["categories"])
    partial = merged_partial(output)
    if partial.images == 0:
        return None
    document = results_document(partial, categories)
    write_whole(output, output.path("metrics.json"), json.dumps(document, indent=1).encode())
    report = ["# Panoptic Quality", "", f"{partial.images} images with ground truth.", "", "```",
              format_table(document["pq"], categories, per_class=True), "```", ""]
    write_whole(output, output.path("report.md"), "\n".join(report).encode())
    logger.info("reduce: PQ %.4f over %d images", document["pq"]["All"]["pq"], partial.images)
    return document
