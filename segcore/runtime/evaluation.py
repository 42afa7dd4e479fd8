"""COCO-panoptic evaluation in one process: pair gt and predictions, read both PNGs, fold PQ partials."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from segcore.categories import Categories, categories_from_json
from segcore.io import storage
from segcore.io.truth import check_unique_image_ids
from segcore.metrics import pq
from segcore.panoptic import PNGError, decode_id_map

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate; the CLI flags of jobs.evaluate carry these names.

    Attributes:
        gt_json: COCO panoptic ground truth JSON (path or fsspec URI).
        pred_json: COCO panoptic predictions JSON.
        gt_dir: folder of gt PNGs; default: gt_json without ".json", as panopticapi does.
        pred_dir: folder of predicted PNGs; default: pred_json without ".json".
        workers: Ray workers; 0 evaluates in this process.
        storage_options: fsspec options (endpoint, credentials) for every URI.
    """

    gt_json: str
    pred_json: str
    gt_dir: str | None = None
    pred_dir: str | None = None
    workers: int = 0
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"Expected `workers` to be 0 (in process) or a positive count, but got {self.workers}")
        for name in ("gt_json", "pred_json"):
            if not getattr(self, name):
                raise ValueError(f"Expected `{name}` to be a path or URI, but got {getattr(self, name)!r}")

    @property
    def gt_folder(self) -> str:
        return self.gt_dir or _strip_json(self.gt_json)

    @property
    def pred_folder(self) -> str:
        return self.pred_dir or _strip_json(self.pred_json)


@dataclass(frozen=True)
class ImagePair:
    """One image's gt and prediction annotations; ``rank`` is its position in the gt JSON."""

    rank: int
    image_id: Any
    gt: Mapping
    pred: Mapping
    size: tuple[int, int] | None = None  # (height, width) from the gt images list, when given


def pair_annotations(gt_document: Mapping, pred_document: Mapping) -> list[ImagePair]:
    """Pairs every gt annotation with its prediction, in gt-JSON order.

    Raises:
        ValueError: a gt image has no prediction (named), or a document lacks 'annotations'.
    """
    for name, document in (("ground truth", gt_document), ("predictions", pred_document)):
        if "annotations" not in document:
            raise ValueError(f"Expected the {name} JSON to hold an 'annotations' list, but it has none")
    check_unique_image_ids(gt_document, "the ground truth JSON")
    predictions = {a["image_id"]: a for a in pred_document["annotations"]}
    sizes = {i["id"]: (i["height"], i["width"]) for i in gt_document.get("images", ()) if "height" in i and "width" in i}
    pairs = []
    for rank, gt in enumerate(gt_document["annotations"]):
        image_id = gt["image_id"]
        if image_id not in predictions:
            raise ValueError(f"Image {image_id}: no prediction for it in the predictions JSON")
        pairs.append(ImagePair(rank, image_id, gt, predictions[image_id], sizes.get(image_id)))
    return pairs


def evaluate_pairs(
    pairs: Iterable[ImagePair],
    gt_folder: str,
    pred_folder: str,
    categories: Categories,
    storage_options: Mapping[str, Any] | None = None,
) -> pq.PQPartial:
    """Reads, decodes and matches each pair; returns their summed partial (one image's maps in memory at a time).

    Raises:
        pq.PQInputError: a PNG is missing or unreadable, or gt and prediction disagree; the image is named.
    """
    total = pq.PQPartial()
    gt_fs = storage.Folder(gt_folder, storage_options)
    pred_fs = storage.Folder(pred_folder, storage_options)
    for pair in pairs:
        gt_ids = _read_map(pair, gt_fs, pair.gt, "gt")
        pred_ids = _read_map(pair, pred_fs, pair.pred, "prediction")
        if pair.size is not None and gt_ids.shape != tuple(pair.size):
            raise pq.PQInputError(
                f"Image {pair.image_id}: gt PNG is {gt_ids.shape[1]}x{gt_ids.shape[0]} but the images list says "
                f"{pair.size[1]}x{pair.size[0]} (width x height)"
            )
        total += pq.match_image(
            pair.image_id, gt_ids, pair.gt["segments_info"], pred_ids, pair.pred["segments_info"], categories, pair.rank
        )
    return total


def evaluate(config: EvaluationConfig) -> dict:
    """Evaluates predictions against ground truth; Ray fans out the images when ``config.workers > 0``.

    Returns:
        ``{"pq": panopticapi's pq_compute dict, "pq_exact": the same with correctly rounded IoU sums,
        "per_class_counts": {category id: {tp, fp, fn, iou, iou_exact}}, "images": count}``.
    """
    gt_document = storage.read_json(config.gt_json, config.storage_options)
    pred_document = storage.read_json(config.pred_json, config.storage_options)
    categories = categories_from_json(gt_document)
    pairs = pair_annotations(gt_document, pred_document)
    log.info("evaluating %d images (gt %s, predictions %s)", len(pairs), config.gt_folder, config.pred_folder)
    if config.workers:
        from segcore.runtime.driver import evaluate_on_ray

        partial = evaluate_on_ray(pairs, config, categories)
    else:
        partial = evaluate_pairs(pairs, config.gt_folder, config.pred_folder, categories, config.storage_options)
    return results_document(partial, categories)


def results_document(partial: pq.PQPartial, categories: Categories) -> dict:
    """The evaluation's JSON document from a merged partial."""
    stats = pq.class_stats(partial, categories)
    return {
        "pq": pq.summarize(partial, categories),
        "pq_exact": pq.summarize(partial, categories, exact=True),
        "per_class_counts": {
            category_id: {"tp": s.tp, "fp": s.fp, "fn": s.fn, "iou": s.iou, "iou_exact": s.iou_exact}
            for category_id, s in stats.items()
        },
        "images": partial.images,
    }


def format_table(results: Mapping, categories: Categories, per_class: bool = False) -> str:
    """panopticapi's printed table (PQ SQ RQ N for All / Things / Stuff), optionally one row per class."""
    lines = ["{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"), "-" * 38]
    for name in ("All", "Things", "Stuff"):
        row = results[name]
        lines.append(
            "{:10s}| {:5.1f}  {:5.1f}  {:5.1f} {:5d}".format(
                name, 100 * row["pq"], 100 * row["sq"], 100 * row["rq"], row["n"]
            )
        )
    if per_class:
        lines += ["", "{:24s}| {:>5s}  {:>5s}  {:>5s}".format("class", "PQ", "SQ", "RQ"), "-" * 45]
        for category in categories:
            row = results["per_class"][category.id]
            lines.append(
                "{:24s}| {:5.1f}  {:5.1f}  {:5.1f}".format(
                    category.name[:24], 100 * row["pq"], 100 * row["sq"], 100 * row["rq"]
                )
            )
    return "\n".join(lines)


def _read_map(pair: ImagePair, folder: storage.Folder, annotation: Mapping, role: str) -> Any:
    uri = folder.uri_of(annotation["file_name"])
    try:
        return decode_id_map(folder.read_bytes(annotation["file_name"]))
    except FileNotFoundError:
        raise pq.PQInputError(f"Image {pair.image_id}: {role} PNG {uri} does not exist") from None
    except PNGError as error:
        raise pq.PQInputError(f"Image {pair.image_id}: {role} PNG {uri} is unreadable: {error}") from None


def _strip_json(uri: str) -> str:
    return uri[: -len(".json")] if uri.endswith(".json") else uri


def chunk(pairs: Sequence[ImagePair], count: int) -> list[Sequence[ImagePair]]:
    """Cuts pairs into ``count`` contiguous, nearly equal chunks (empty ones dropped)."""
    size, extra = divmod(len(pairs), count)
    chunks, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        if end > start:
            chunks.append(pairs[start:end])
        start = end
    return chunks
