"""The ``hf:`` backend: transformers universal segmentation models (DETR, MaskFormer, Mask2Former, OneFormer, EoMT).

Only the model's forward pass comes from transformers. Pre-processing (resize, normalise, pad) runs on the
device from uint8 images, following the model's image-processor config; post-processing is
:mod:`segcore.models.postprocess`, correct for padded batches of mixed sizes.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import fsspec
import numpy as np
import torch
import torch.nn.functional as F

from segcore.categories import Categories, LabelMap, coco_panoptic_categories, label_map_by_name
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
from segcore.models.postprocess import LabelTables, Thresholds, panoptic_from_queries
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
}
DEFAULT_SCORE_THRESHOLD = 0.8
DEFAULT_OVERLAP_THRESHOLD = 0.8
PLACEHOLDER_LABELS = ("N/A", "__background__", "background")  # label names allowed to map to no category
ONEFORMER_TASK = "the task is panoptic"


@dataclass(frozen=True)
class Preprocessing:
    """How images become model input, read from the model's image-processor config.

    Attributes:
        shortest_edge, longest_edge: resize so the short side is ``shortest_edge`` unless the long side would
            exceed ``longest_edge`` (transformers' rule); None for no resize.
        size_divisor: the resized size is rounded up to a multiple of this (MaskFormer family), 0 for none.
        pad_size: pad every image to this (height, width) (EoMT), else to the largest in the batch.
        rescale: factor from uint8 to the model's range (1/255).
        mean, std: per-channel normalisation after rescaling.
    """

    shortest_edge: int | None
    longest_edge: int | None
    size_divisor: int
    pad_size: tuple[int, int] | None
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, config: Mapping, family: str = "mask2former") -> "Preprocessing":
        """Reads a transformers image-processor config dict (``preprocessor_config.json``) of a model family.

        EoMT's ``do_pad`` pads to the (shortest_edge, longest_edge) square; other families pad to the batch's
        largest image unless ``pad_size`` fixes a size.
        """
        size = config.get("size") or {}
        do_resize = config.get("do_resize", True)
        shortest = size.get("shortest_edge") if do_resize else None
        longest = size.get("longest_edge") if do_resize else None
        pad_size = None
        if family == "eomt" and config.get("do_pad") and shortest:
            pad_size = (int(shortest), int(longest or shortest))
        elif config.get("pad_size"):
            pad_size = (int(config["pad_size"]["height"]), int(config["pad_size"]["width"]))
        rescale = config.get("rescale_factor", 1 / 255) if config.get("do_rescale", True) else 1.0
        normalize = config.get("do_normalize", True)
        mean = tuple(config.get("image_mean", (0.485, 0.456, 0.406))) if normalize else (0.0, 0.0, 0.0)
        std = tuple(config.get("image_std", (0.229, 0.224, 0.225))) if normalize else (1.0, 1.0, 1.0)
        return cls(shortest, longest, int(config.get("size_divisor") or 0), pad_size, float(rescale), mean, std)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image is resized to, as transformers computes it."""
        if self.shortest_edge is None:
            new_height, new_width = height, width
        else:
            new_height, new_width = _size_with_aspect_ratio(height, width, self.shortest_edge, self.longest_edge)
        if self.size_divisor:
            new_height = math.ceil(new_height / self.size_divisor) * self.size_divisor
            new_width = math.ceil(new_width / self.size_divisor) * self.size_divisor
        return new_height, new_width


def _size_with_aspect_ratio(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    """transformers' ``get_size_with_aspect_ratio``: short side ``size``, long side at most ``max_size``."""
    raw_size = None
    if max_size is not None:
        short, long = float(min(height, width)), float(max(height, width))
        if long / short * size > max_size:
            raw_size = max_size * short / long
            size = int(round(raw_size))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    scale = raw_size if raw_size is not None else size
    if width < height:
        return int(scale * height / width), size
    return size, int(scale * width / height)


def prepare_batch(
    images: Sequence[torch.Tensor], preprocessing: Preprocessing
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Resizes, normalises and pads a batch on its device.

    Args:
        images: uint8 ``(3, H, W)`` tensors on the device.

    Returns:
        ``(pixel_values, pixel_mask, valid_sizes)``: # (B, 3, Hp, Wp) float32, # (B, Hp, Wp) int64 with 1 on
        image pixels, and each image's resized (height, width) inside the padded batch.
    """
    device = images[0].device
    mean = torch.tensor(preprocessing.mean, device=device).view(3, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(3, 1, 1)
    resized = []
    for image in images:
        size = preprocessing.resized_size(image.shape[1], image.shape[2])
        pixels = image.float()
        if size != tuple(image.shape[1:]):
            pixels = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        resized.append((pixels * preprocessing.rescale - mean) / std)
    valid_sizes = [tuple(r.shape[1:]) for r in resized]
    padded = preprocessing.pad_size or (max(s[0] for s in valid_sizes), max(s[1] for s in valid_sizes))
    if any(h > padded[0] or w > padded[1] for h, w in valid_sizes):
        raise ValueError(f"Expected resized images to fit the pad size {padded}, but got {valid_sizes}")
    pixel_values = torch.zeros((len(images), 3, *padded), device=device)
    pixel_mask = torch.zeros((len(images), *padded), dtype=torch.int64, device=device)
    for index, (pixels, (height, width)) in enumerate(zip(resized, valid_sizes)):
        pixel_values[index, :, :height, :width] = pixels
        pixel_mask[index, :height, :width] = 1
    return pixel_values, pixel_mask, valid_sizes


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
        score = options.score_threshold if options.score_threshold is not None else DEFAULT_SCORE_THRESHOLD
        overlap = options.overlap_threshold if options.overlap_threshold is not None else DEFAULT_OVERLAP_THRESHOLD
        self.thresholds = Thresholds(score, options.mask_threshold, overlap)
        self.labels = LabelTables(*category_lookup(label_map, categories, self.device))
        self.task_inputs = task_inputs
        self._takes_pixel_mask = "pixel_mask" in inspect.signature(model.forward).parameters
        self._class_output, self._mask_output = FAMILIES[family][1:3]
        self.pixels = [0, 0]  # image pixels, and pixels of the padded batches, fed to the model so far

    def batch_key(self, height: int, width: int) -> tuple[int, int]:
        """The padded input size an image of this size takes: images of one key batch without padding waste
        (EoMT's fixed square: one key for all)."""
        return self.preprocessing.pad_size or self.preprocessing.resized_size(height, width)

    def segment(
        self, images: Sequence[np.ndarray | torch.Tensor], timings: dict[str, float] | None = None
    ) -> list[PanopticResult]:
        """Segments RGB uint8 images ``(H, W, 3)`` of mixed sizes; see :class:`segcore.models.base.Segmenter`.

        Args:
            images: the batch.
            timings: when given, seconds spent in ``preprocess``, ``forward`` and ``postprocess`` are added to
                it (the device is synchronised between stages, which costs a little).
        """
        if len(images) == 0:
            return []
        clock = StageClock(self.device, timings)
        with torch.inference_mode():
            tensors = images_to_device(images, self.device)
            pixel_values, pixel_mask, valid_sizes = prepare_batch(tensors, self.preprocessing)
            self.pixels[0] += sum(h * w for h, w in valid_sizes)
            self.pixels[1] += pixel_mask.numel()
            clock.lap("preprocess")
            class_logits, mask_logits = self.forward(pixel_values, pixel_mask)
            clock.lap("forward")
            padded_h, padded_w = pixel_values.shape[2:]
            grid_h, grid_w = mask_logits.shape[2:]
            valid_grid = [(h * grid_h / padded_h, w * grid_w / padded_w) for h, w in valid_sizes]
            output_sizes = [tuple(t.shape[1:]) for t in tensors]
            id_maps, tables = panoptic_from_queries(
                class_logits, mask_logits, valid_grid, output_sizes, self.labels, self.thresholds
            )
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
            "dtype": str(self.dtype).removeprefix("torch."),
            "preprocessing": self.preprocessing.__dict__,
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

    categories = categories or coco_panoptic_categories()
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
    label_map = _label_map(names, categories, options)
    preprocessing = Preprocessing.from_config(processor_config, config.model_type)
    return HFSegmenter(
        model, config.model_type, preprocessing, label_map, categories, options, spec, source, task_inputs
    )


def config_label_names(source: str, options: ModelOptions) -> list[str]:
    """The model's label names from its ``config.json`` alone (no weights are read), in label order.

    Raises:
        ValueError: the config cannot be read, or the model type is not supported; the message names the source.
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
    return [id2label.get(i, f"LABEL_{i}") for i in range(count)]


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
    return _label_map(config_label_names(location, options), categories, options)


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


def _label_map(names: list[str], categories: Categories, options: ModelOptions) -> LabelMap:
    """From a label-map file when given, else by the config's label names."""
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
    """Token ids of "the task is panoptic", padded to the model's task length, from the model's own tokenizer.

    Raises:
        ValueError: the model folder or hub repo has no tokenizer (OneFormer needs one).
    """
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(location, revision=revision)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"Expected a tokenizer with the OneFormer model at {location!r}, but found none") from error
    tokens = tokenizer(ONEFORMER_TASK, padding="max_length", max_length=config.task_seq_len, truncation=True)
    return torch.tensor([tokens["input_ids"]], dtype=torch.int64, device=device)
