"""The ``hf:`` backend: transformers universal segmentation models (DETR, MaskFormer, Mask2Former, OneFormer, EoMT,
EoMT-DINOv3).

Only the model's forward pass comes from transformers. Pre- and post-processing are each family's original
repository's, on the device: :mod:`segcore.models.preprocess` (resize rule, Pillow's bilinear resize, pad and
normalise in the reference's order, with the sizes and statistics of the model's image-processor config),
:mod:`segcore.models.postprocess` (Mask2Former, OneFormer, MaskFormer, EoMT) and
:mod:`segcore.models.detr_postprocess` (DETR). A batch of mixed sizes is run in groups of one input size, so an
image gets the labels it gets alone.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import fsspec
import numpy as np
import torch

from segcore.categories import (
    Categories,
    LabelMap,
    coco_panoptic_categories,
    dataset_categories,
    label_map_by_name,
    label_map_of_dataset,
)
from segcore.models.base import (
    PanopticResult,
    StageClock,
    autocast,
    category_lookup,
    finish_batch,
    images_to_device,
    resolve_dtype,
    select_device,
)
from segcore.models.detr_postprocess import detr_panoptic
from segcore.models.postprocess import Geometry, LabelTables, Thresholds, panoptic_from_queries
from segcore.models.preprocess import Preprocessing, prepare_batch
from segcore.models.registry import ModelOptions
from segcore.models.weights import fetch, is_remote

logger = logging.getLogger(__name__)

# model_type -> (transformers class, class-logits output, mask-logits output, image-processor class)
FAMILIES = {
    "detr": ("DetrForSegmentation", "logits", "pred_masks", "DetrImageProcessor"),
    "maskformer": (
        "MaskFormerForInstanceSegmentation", "class_queries_logits", "masks_queries_logits", "MaskFormerImageProcessor"
    ),
    "mask2former": (
        "Mask2FormerForUniversalSegmentation", "class_queries_logits", "masks_queries_logits",
        "Mask2FormerImageProcessor",
    ),
    "oneformer": (
        "OneFormerForUniversalSegmentation", "class_queries_logits", "masks_queries_logits", "OneFormerImageProcessor"
    ),
    "eomt": ("EomtForUniversalSegmentation", "class_queries_logits", "masks_queries_logits", "EomtImageProcessor"),
    "eomt_dinov3": (
        "EomtDinov3ForUniversalSegmentation", "class_queries_logits", "masks_queries_logits", "EomtImageProcessor"
    ),
}


@dataclass(frozen=True)
class FamilyRule:
    """A family's reference post-processing.

    Attributes:
        postprocess: ``mask`` (:mod:`segcore.models.postprocess`) or ``detr`` (:mod:`segcore.models.detr_postprocess`).
        segment_threshold: a segment keeps only its pixels at or above the mask threshold (all but MaskFormer).
        score_threshold: the reference's evaluation score threshold (default of ``ModelOptions.score_threshold``).
        reference: the original code the rule follows.
    """

    postprocess: str
    segment_threshold: bool
    score_threshold: float
    reference: str


RULES = {
    "detr": FamilyRule("detr", False, 0.85, "facebookresearch/detr models/segmentation.py PostProcessPanoptic"),
    "maskformer": FamilyRule("mask", False, 0.8, "facebookresearch/MaskFormer mask_former_model.py panoptic_inference"),
    "mask2former": FamilyRule("mask", True, 0.8, "facebookresearch/Mask2Former maskformer_model.py panoptic_inference"),
    "oneformer": FamilyRule("mask", True, 0.8, "SHI-Labs/OneFormer oneformer_model.py panoptic_inference"),
    "eomt": FamilyRule("mask", True, 0.8, "tue-mps/eomt lightning_module.py to_per_pixel_preds_panoptic"),
    "eomt_dinov3": FamilyRule("mask", True, 0.8, "tue-mps/eomt lightning_module.py to_per_pixel_preds_panoptic"),
}
DEFAULT_OVERLAP_THRESHOLD = 0.8
PLACEHOLDER_LABELS = ("N/A", "__background__", "background")  # label names allowed to map to no category
ONEFORMER_TASK = "the task is panoptic"


class HFSegmenter:
    """A transformers universal-segmentation model behind the Segmenter contract."""

    def __init__(
        self,
        model: torch.nn.Module,
        family: str,
        preprocessing: Preprocessing,
        label_map: LabelMap,
        categories: Categories,
        options: ModelOptions,
        spec: str,
        source: str,
        task_inputs: torch.Tensor | None = None,
    ):
        self.model = model
        self.family = family
        self.preprocessing = preprocessing
        self.label_map = label_map
        self.categories = categories
        self.spec = spec
        self.source = source
        self.device = next(model.parameters()).device
        self.dtype = resolve_dtype(options.dtype)
        self.rule = RULES[family]
        score = options.score_threshold if options.score_threshold is not None else self.rule.score_threshold
        overlap = options.overlap_threshold if options.overlap_threshold is not None else DEFAULT_OVERLAP_THRESHOLD
        self.thresholds = Thresholds(score, options.mask_threshold, overlap)
        self.labels = LabelTables(*category_lookup(label_map, categories, self.device))
        self.task_inputs = task_inputs
        self._takes_pixel_mask = "pixel_mask" in inspect.signature(model.forward).parameters
        self._class_output, self._mask_output = FAMILIES[family][1:3]
        self.pixels = [0, 0]  # image pixels, and pixels of the padded batches, fed to the model so far

    def batch_key(self, height: int, width: int) -> tuple[int, int]:
        """Images of one key share a model input size and get exactly the input they would get alone (the padded
        size; DETR, whose batch is padded to its largest image: the resized size)."""
        return self.preprocessing.batch_key(height, width)

    def segment(
        self, images: Sequence[np.ndarray | torch.Tensor], timings: dict[str, float] | None = None
    ) -> list[PanopticResult]:
        """Segments RGB uint8 images ``(H, W, 3)`` of mixed sizes; see :class:`segcore.models.base.Segmenter`.

        Images are run in groups of one :meth:`batch_key` (in first-seen order), so each image's result is the
        one it gets alone, whatever else is in the batch.

        Args:
            images: the batch.
            timings: when given, seconds spent in ``preprocess``, ``forward`` and ``postprocess`` are added to
                it (the device is synchronised between stages, which costs a little).
        """
        if len(images) == 0:
            return []
        results: list = [None] * len(images)
        with torch.inference_mode():
            tensors = images_to_device(images, self.device)
            groups: dict[tuple[int, int], list[int]] = {}
            for position, tensor in enumerate(tensors):
                groups.setdefault(self.batch_key(*tensor.shape[1:]), []).append(position)
            for positions in groups.values():
                group = self._segment_group([tensors[p] for p in positions], StageClock(self.device, timings))
                for position, result in zip(positions, group):
                    results[position] = result
        return results

    def _segment_group(self, tensors: list[torch.Tensor], clock: StageClock) -> list[PanopticResult]:
        """Pre-processing, forward pass and post-processing of images of one batch key."""
        pixel_values, pixel_mask, resized_sizes = prepare_batch(tensors, self.preprocessing)
        self.pixels[0] += sum(h * w for h, w in resized_sizes)
        self.pixels[1] += pixel_mask.numel()
        clock.lap("preprocess")
        class_logits, mask_logits = self.forward(pixel_values, pixel_mask)
        clock.lap("forward")
        padded = tuple(pixel_values.shape[2:])
        geometries = [Geometry(padded, resized, tuple(t.shape[1:])) for resized, t in zip(resized_sizes, tensors)]
        if self.rule.postprocess == "detr":
            id_maps, tables = detr_panoptic(class_logits, mask_logits, geometries, self.labels, self.thresholds.score)
        else:
            id_maps, tables = panoptic_from_queries(class_logits, mask_logits, geometries, self.labels,
                                                    self.thresholds, self.rule.segment_threshold)
        results = finish_batch(id_maps, tables)
        clock.lap("postprocess")
        return results

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs the model under autocast; returns float32 ``(class_logits (B, Q, L+1), mask_logits (B, Q, h, w))``."""
        inputs = {"pixel_values": pixel_values}
        if self._takes_pixel_mask:
            inputs["pixel_mask"] = pixel_mask
        if self.task_inputs is not None:
            inputs["task_inputs"] = self.task_inputs.expand(pixel_values.shape[0], -1)
        with autocast(self.device, self.dtype):
            outputs = self.model(**inputs)
        return getattr(outputs, self._class_output).float(), getattr(outputs, self._mask_output).float()

    def describe(self) -> dict:
        """Spec, source, family, label map, thresholds, dtype and preprocessing, for the manifest."""
        return {
            "spec": self.spec,
            "backend": "hf",
            "source": self.source,
            "family": self.family,
            "label_map": self.label_map.to_json(),
            "thresholds": self.thresholds.__dict__,
            "rule": {"postprocess": self.rule.reference, "preprocess": self.preprocessing.rule.reference},
            "dtype": str(self.dtype).removeprefix("torch."),
            "preprocessing": {k: v for k, v in self.preprocessing.__dict__.items() if k != "rule"},
        }


def load_hf(
    source: str, options: ModelOptions, categories: Categories | None = None, spec: str | None = None
) -> HFSegmenter:
    """Loads a transformers segmentation model from a hub id, a local folder or any fsspec URI.

    Args:
        source: ``facebook/detr-resnet-101-panoptic``, ``/models/run7``, ``s3://models/run7/``.
        options: device, dtype, thresholds, label map, revision, storage options, cache.
        categories: dataset categories the labels map to; default COCO panoptic.
        spec: the spec string recorded by :meth:`HFSegmenter.describe`; default ``hf:<source>``.

    Raises:
        ValueError: the model type is not supported (the supported ones are listed), or its labels do not map
            to ``categories``.
    """
    import transformers

    categories = categories or (dataset_categories(options.dataset) if options.dataset else coco_panoptic_categories())
    device = select_device(options.device)
    transformers.utils.logging.disable_progress_bar()
    location = str(fetch(source, options.storage_options, options.cache_dir)) if _is_path(source) else source
    config = transformers.AutoConfig.from_pretrained(location, revision=options.revision)
    family = config.model_type
    if family not in FAMILIES:
        raise ValueError(f"Expected a model of type {sorted(FAMILIES)} at {source!r}, but got {family!r}")
    model_class = getattr(transformers, FAMILIES[family][0])
    model = model_class.from_pretrained(location, revision=options.revision, dtype=torch.float32)
    task_inputs = _oneformer_task_inputs(location, config, device, options.revision) if family == "oneformer" else None
    processor_config = _processor_config(location, family, options.revision)
    logger.info("loaded %s model from %s on %s (%d labels)", family, source, device, config.num_labels)
    return segmenter_from_model(
        model, processor_config, options, categories, spec or f"hf:{source}", source, task_inputs
    )


def segmenter_from_model(
    model: torch.nn.Module,
    processor_config: Mapping,
    options: ModelOptions,
    categories: Categories,
    spec: str,
    source: str,
    task_inputs: torch.Tensor | None = None,
) -> HFSegmenter:
    """Wraps an already built transformers model (e.g. random weights from a published config, for benchmarks).

    Raises:
        ValueError: unsupported model type, or labels that do not map to ``categories``.
    """
    config = model.config
    if config.model_type not in FAMILIES:
        raise ValueError(f"Expected a model of type {sorted(FAMILIES)}, but got {config.model_type!r}")
    model.to(select_device(options.device)).eval()
    names = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    label_map = _label_map(names, categories, options, config.model_type)
    preprocessing = Preprocessing.from_config(processor_config, config.model_type, options.input_size)
    side = getattr(config, "image_size", None)
    if preprocessing.rule.pad == "square" and isinstance(side, int) and side != preprocessing.longest_edge:
        raise ValueError(f"Expected the {config.model_type} model's image_size ({side}) to equal its processor's "
                         f"square side ({preprocessing.longest_edge}) at {source!r}")
    return HFSegmenter(
        model, config.model_type, preprocessing, label_map, categories, options, spec, source, task_inputs
    )


def config_labels(source: str, options: ModelOptions) -> tuple[str, list[str]]:
    """The model's family and label names (in label order) from its ``config.json`` alone (no weights are read).

    Raises:
        ValueError: the config cannot be read, or the model type has no reference rule here (the supported ones
            are listed); the message names the source.
    """
    try:
        if _is_path(source):
            with fsspec.open(source.rstrip("/") + "/config.json", "r", **dict(options.storage_options)) as f:
                document = json.load(f)
        else:
            document = _hub_config(source, options.revision)
    except (OSError, ValueError) as error:
        raise ValueError(f"Expected a readable model config at {source!r}, but: {error}") from None
    if document.get("model_type") not in FAMILIES:
        raise ValueError(f"Expected a model of type {sorted(FAMILIES)} at {source!r}, "
                         f"but got {document.get('model_type')!r}")
    id2label = {int(k): str(v) for k, v in (document.get("id2label") or {}).items()}
    count = max(len(id2label), int(document.get("num_labels", 0) or 0))
    return document["model_type"], [id2label.get(i, f"LABEL_{i}") for i in range(count)]


def _hub_config(source: str, revision: str | None) -> dict:
    """A hub model's config: from the local cache, else from the hub when it answers.

    Raises:
        ValueError: neither cached nor reachable (offline), named.
    """
    import transformers

    from segcore.models.registry import hub_reachable

    try:
        return transformers.AutoConfig.from_pretrained(source, revision=revision, local_files_only=True).to_dict()
    except OSError:
        if not hub_reachable():
            raise ValueError(f"Expected the config of hub model {source!r} in the local cache or a reachable hub, "
                             "but it is not cached and the hub does not answer; pass a local folder or a URI "
                             "(hf:/path/to/model, hf:s3://bucket/model)") from None
    return transformers.AutoConfig.from_pretrained(source, revision=revision).to_dict()


def config_label_map(source: str, options: ModelOptions, categories: Categories) -> LabelMap:
    """The label map a model would get, from its config and the label-map file (checked before any weights load).

    Raises:
        ValueError: unreadable config, unsupported type, or labels that do not map onto ``categories``.
    """
    location = source
    if _is_path(source) and not is_remote(source):
        location = str(Path(source).expanduser())
    family, names = config_labels(location, options)
    return _label_map(names, categories, options, family)


def _is_path(source: str) -> bool:
    """A local path or fsspec URI rather than a hub id (``org/name``)."""
    return is_remote(source) or source.startswith(("file://", "/", ".", "~")) or Path(source).exists()


def _processor_config(location: str, family: str, revision: str | None) -> dict:
    """The model's image-processor config; transformers' defaults for the family when the model has none."""
    import transformers

    try:
        processor = transformers.AutoImageProcessor.from_pretrained(location, revision=revision)
    except (OSError, ValueError):
        logger.info("no image-processor config at %s: using %s defaults", location, FAMILIES[family][3])
        processor = getattr(transformers, FAMILIES[family][3])()
    return processor.to_dict()


def _label_map(names: list[str], categories: Categories, options: ModelOptions, family: str) -> LabelMap:
    """From a label-map file when given, else by the dataset the model was trained on (DETR's labels are the
    dataset's category ids, other families' the dataset's categories in order), else by the config's label names."""
    if options.label_map is None and options.dataset is not None:
        return label_map_of_dataset(options.dataset, names, categories, by_id=family == "detr")
    if options.label_map is None:
        placeholders = [n for n in names if n in PLACEHOLDER_LABELS or n.startswith("LABEL_")]
        return label_map_by_name(names, categories, allow_unmapped=placeholders)
    with fsspec.open(options.label_map, "r", **dict(options.storage_options)) as f:
        document = json.load(f)
    return label_map_from_json(document, names, categories, options.label_map)


def label_map_from_json(document: Mapping, names: Sequence[str], categories: Categories, where: str) -> LabelMap:
    """Reads a label-map file: ``{"category_ids": [...]}`` or ``{"<label index or name>": category_id | null}``.

    Labels the file does not mention map to no category (the model's queries of those labels are dropped).

    Raises:
        ValueError: a key names no model label, or a value is not a category of ``categories``; the message
            names the file.
    """
    if "category_ids" in document:
        mapped = list(document["category_ids"])
        if len(mapped) != len(names):
            raise ValueError(f"Expected {len(names)} entries in `category_ids` of {where}, but got {len(mapped)}")
    else:
        mapped = [None] * len(names)
        index_of = {name: i for i, name in enumerate(names)}
        for key, category_id in document.items():
            label = int(key) if str(key).isdigit() else index_of.get(key)
            if label is None or not 0 <= label < len(names):
                raise ValueError(f"Expected label-map keys of {where} to be model labels, but got {key!r}")
            mapped[label] = category_id
    unknown = [c for c in mapped if c is not None and c not in categories]
    if unknown:
        raise ValueError(f"Expected the category ids in {where} to be dataset categories, but got {unknown}")
    return LabelMap(tuple(mapped), tuple(names))


def _oneformer_task_inputs(location: str, config, device: torch.device, revision: str | None) -> torch.Tensor:
    """Token ids of "the task is panoptic", padded with zeros to the model's task length, from the model's own
    tokenizer (OneFormer's own ``Tokenize`` pads with 0, whatever the tokenizer's pad token is).

    Raises:
        ValueError: the model folder or hub repo has no tokenizer (OneFormer needs one).
    """
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(location, revision=revision)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"Expected a tokenizer with the OneFormer model at {location!r}, but found none") from error
    tokens = tokenizer(ONEFORMER_TASK, padding="max_length", max_length=config.task_seq_len, truncation=True)
    ids = [token if attended else 0 for token, attended in zip(tokens["input_ids"], tokens["attention_mask"])]
    return torch.tensor([ids], dtype=torch.int64, device=device)
