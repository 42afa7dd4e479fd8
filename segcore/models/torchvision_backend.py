"""The ``torchvision:`` backend: a torchvision Mask R-CNN plus a semantic model, fused as Panoptic FPN does.

A target is ``<instance>[@<checkpoint URI>]+<semantic>[@<checkpoint URI>]``, e.g.
``maskrcnn_resnet50_fpn_v2@s3://models/mrcnn.pth+deeplabv3_resnet50@/ckpt/sem.pth``. A checkpoint is a
``torch.save(model.state_dict(), path)`` file at any fsspec URI; without one, the builder's default torchvision
weights are used (torchvision downloads them).

The label map (``ModelOptions.label_map``, a JSON file at any fsspec URI) says which dataset category each model
label is: ``{"instance": [null, 1, 2, ...], "semantic": [null, 187, 193, ...]}``, lists indexed by model label,
``null`` for background or void (never emitted); a model's number of classes is the length of its list.
Instance labels map to thing categories, semantic labels to stuff categories. Without an ``"instance"`` list the
instance model keeps torchvision's COCO detection labels (mapped by name); the semantic list is always needed,
since torchvision's semantic weights (Pascal VOC classes) name no stuff.

Typical use::

    segmenter = load_segmenter("torchvision:maskrcnn_resnet50_fpn_v2+deeplabv3_resnet50@s3://m/sem.pth",
                               ModelOptions(label_map="s3://m/labels.json"))
    results = segmenter.segment([image_a, image_b])  # RGB uint8 (H, W, 3), mixed sizes
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import fsspec
import numpy as np
import torch

from segcore.categories import Categories, LabelMap, coco_panoptic_categories, label_map_by_name
from segcore.fusion import OVERLAP_THRESHOLD, STUFF_AREA_THRESHOLD, fuse_panoptic
from segcore.models.base import (
    PanopticResult,
    SegmentTable,
    StageClock,
    autocast,
    category_lookup,
    finish_batch,
    images_to_device,
    resolve_dtype,
    select_device,
)
from segcore.models.registry import ModelOptions
from segcore.models.weights import fetch

INSTANCE_BUILDERS = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
SEMANTIC_BUILDERS = (
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "fcn_resnet50",
    "fcn_resnet101",
    "lraspp_mobilenet_v3_large",
)
LABEL_MAP_KEYS = ("instance", "semantic")
DEFAULT_SCORE_THRESHOLD = 0.5
UNMAPPED_DETECTION_LABELS = ("__background__", "N/A")  # torchvision's COCO detection labels without a category
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, which torchvision's semantic weights expect
IMAGE_STD = (0.229, 0.224, 0.225)

logger = logging.getLogger(__name__)

_PART = re.compile(r"(?P<name>\w+)(?:@(?P<checkpoint>.+))?", re.DOTALL)


@dataclass(frozen=True)
class TorchvisionTarget:
    """A parsed ``torchvision:`` target.

    Attributes:
        instance: the instance builder, one of :data:`INSTANCE_BUILDERS`.
        semantic: the semantic builder, one of :data:`SEMANTIC_BUILDERS`.
        instance_checkpoint: state_dict URI of the instance model; None uses torchvision's default weights.
        semantic_checkpoint: state_dict URI of the semantic model; None uses torchvision's default weights.
    """

    instance: str
    semantic: str
    instance_checkpoint: str | None = None
    semantic_checkpoint: str | None = None


def parse_target(target: str) -> TorchvisionTarget:
    """Parses ``<instance>[@<checkpoint URI>]+<semantic>[@<checkpoint URI>]`` without importing torchvision.

    The split is made at the first ``+`` after which a known semantic builder name follows, so checkpoint
    URIs may themselves hold ``+`` and ``@``.

    Raises:
        ValueError: the target is malformed or names an unknown builder; the message lists the known ones.
    """
    for position, char in enumerate(target):
        if char != "+":
            continue
        instance, semantic = _PART.fullmatch(target[:position]), _PART.fullmatch(target[position + 1 :])
        if instance and semantic and instance["name"] in INSTANCE_BUILDERS and semantic["name"] in SEMANTIC_BUILDERS:
            return TorchvisionTarget(instance["name"], semantic["name"], instance["checkpoint"], semantic["checkpoint"])
    raise ValueError(
        f"Expected a torchvision target '<instance>[@<checkpoint URI>]+<semantic>[@<checkpoint URI>]' with "
        f"<instance> one of {list(INSTANCE_BUILDERS)} and <semantic> one of {list(SEMANTIC_BUILDERS)}, "
        f"but got {target!r}"
    )


# ---------------------------------------------------------------------------------------------- label maps


def read_label_map_file(uri: str | None, storage_options: Mapping | None = None) -> dict[str, list]:
    """Reads a label-map JSON ``{"instance": [...], "semantic": [...]}`` (either list may be absent).

    Returns:
        The lists by key; ``{}`` when ``uri`` is None.

    Raises:
        FileNotFoundError: nothing is at ``uri``.
        ValueError: not JSON, not an object with only those keys, or a list holds something other than
            integers and nulls; the message names the URI.
    """
    if uri is None:
        return {}
    with fsspec.open(uri, "rt", **dict(storage_options or {})) as handle:
        try:
            document = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"Expected `label_map` {uri!r} to be JSON, but reading it failed: {error}") from error
    if not isinstance(document, dict) or not document or set(document) - set(LABEL_MAP_KEYS):
        raise ValueError(
            f"Expected `label_map` {uri!r} to be a JSON object with keys among {list(LABEL_MAP_KEYS)}, "
            f"but got {_preview(document)}"
        )
    for key, ids in document.items():
        if not isinstance(ids, list) or not all(_is_label_value(v) for v in ids):
            raise ValueError(
                f"Expected {key!r} of `label_map` {uri!r} to be a list of category ids and nulls, "
                f"but got {_preview(ids)}"
            )
    return document


def _is_label_value(value: object) -> bool:
    """True for a JSON null or integer (not a boolean)."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def _preview(value: object, limit: int = 200) -> str:
    """A repr cut to ``limit`` characters, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def instance_label_map(ids: Sequence[int | None] | None, builder: str, categories: Categories) -> LabelMap:
    """The instance model's label map: the given ids, or torchvision's COCO detection labels mapped by name.

    Args:
        ids: dataset category id per model label, label 0 (background) null; None for the default labels.
        builder: the instance builder, whose default weights name the default labels.
        categories: the dataset categories.

    Raises:
        ValueError: label 0 is mapped, a label maps to no category of ``categories`` or to a stuff category,
            or (default labels) a COCO detection name matches no category.
    """
    if ids is None:
        return _detection_label_map(builder, categories)
    if ids and ids[0] is not None:
        raise ValueError(
            f"Expected instance label 0 (Mask R-CNN's background) to be null in `label_map`, but got {ids[0]}"
        )
    return label_map_from_ids(ids, categories, "instance", isthing=True)


def _detection_label_map(builder: str, categories: Categories) -> LabelMap:
    """torchvision's COCO detection labels (index = COCO category id) mapped onto ``categories`` by name."""
    from torchvision.models import get_model_weights

    names = get_model_weights(builder).DEFAULT.meta["categories"]
    try:
        label_map = label_map_by_name(names, categories, allow_unmapped=UNMAPPED_DETECTION_LABELS)
    except ValueError as error:
        raise ValueError(
            f"{error}. Pass `label_map` with an 'instance' list to map {builder}'s labels onto these categories"
        ) from None
    check_label_map(label_map, categories, "instance", isthing=True)
    return label_map


def semantic_label_map(ids: Sequence[int | None] | None, categories: Categories, uri: str | None) -> LabelMap:
    """The semantic model's label map, which the label-map file must give.

    Raises:
        ValueError: no ``"semantic"`` list was given, or a label maps to no category or to a thing category.
    """
    if ids is None:
        where = "no `label_map` was given" if uri is None else f"`label_map` {uri!r} has no 'semantic' list"
        raise ValueError(
            'Expected a semantic label map ({"semantic": [null, <stuff category id>, ...]}, one entry per '
            f"class of the semantic model) in `label_map`, but {where}; torchvision's semantic weights name "
            "no stuff categories, so this backend needs one"
        )
    return label_map_from_ids(ids, categories, "semantic", isthing=False)


def label_map_from_ids(ids: Sequence[int | None], categories: Categories, role: str, isthing: bool) -> LabelMap:
    """A label map from category ids (None = unmapped), named after the categories and checked.

    Raises:
        ValueError: see :func:`check_label_map`.
    """
    label_map = LabelMap(tuple(ids))
    check_label_map(label_map, categories, role, isthing)
    names = tuple("N/A" if c is None else categories.by_id(c).name for c in ids)
    return LabelMap(tuple(ids), names)


def check_label_map(label_map: LabelMap, categories: Categories, role: str, isthing: bool) -> None:
    """Checks that every mapped label names a category of ``categories`` of the right kind.

    Args:
        label_map: the model's label map.
        categories: the dataset categories.
        role: ``"instance"`` or ``"semantic"``, for messages.
        isthing: True when every mapped category must be a thing, False when every one must be stuff.

    Raises:
        ValueError: the map is empty, or a label maps to an unknown category or one of the wrong kind; the
            message names the label and the category.
    """
    if not label_map.category_ids:
        raise ValueError(f"Expected the {role} label map to have at least one label, but it is empty")
    kind = "thing" if isthing else "stuff"
    for label, category_id in enumerate(label_map.category_ids):
        if category_id is None:
            continue
        if category_id not in categories:
            raise ValueError(
                f"Expected {role} label {label} to map to a dataset category, but category id {category_id} is "
                f"not one; known ids: {categories.ids}"
            )
        category = categories.by_id(category_id)
        if category.isthing != isthing:
            raise ValueError(
                f"Expected {role} label {label} to map to a {kind} category, but it maps to {category.id} "
                f"({category.name!r}), a {'thing' if category.isthing else 'stuff'} category"
            )


# ------------------------------------------------------------------------------------------------ models


@dataclass
class ModelPart:
    """One of the two torchvision models of a segmenter.

    Attributes:
        name: the builder name, e.g. ``maskrcnn_resnet50_fpn_v2``.
        checkpoint: the state_dict URI it was loaded from, or None for torchvision's default weights.
        weights: what the weights are: the checkpoint URI, or the torchvision weights enum
            (e.g. ``MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1``).
        module: the model, in eval mode on the segmenter's device.
        label_map: its label index -> dataset category id.
        builder_kwargs: extra keyword arguments its builder was called with.
    """

    name: str
    checkpoint: str | None
    weights: str
    module: torch.nn.Module
    label_map: LabelMap
    builder_kwargs: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """The manifest entry: builder, checkpoint, weights, builder kwargs."""
        return {
            "model": self.name,
            "checkpoint": self.checkpoint,
            "weights": self.weights,
            "builder_kwargs": dict(self.builder_kwargs),
        }


def check_default_classes(name: str, checkpoint: str | None, label_map: LabelMap, role: str) -> None:
    """Checks that a model without checkpoint has a label map as long as its default weights' classes.

    Raises:
        ValueError: the lengths differ; the message says to pass a checkpoint for other classes.
    """
    if checkpoint is not None:
        return
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    expected = len(weights.meta["categories"])
    if len(label_map.category_ids) != expected:
        raise ValueError(
            f"Expected the {role} label map to have {expected} entries, one per class of {name}'s default "
            f"weights {weights}, but got {len(label_map.category_ids)}; pass a checkpoint "
            f"('{name}@<state_dict URI>') for a model with other classes"
        )


def load_part(
    name: str,
    checkpoint: str | None,
    label_map: LabelMap,
    options: ModelOptions,
    device: torch.device,
    builder_kwargs: Mapping | None = None,
) -> ModelPart:
    """Builds a torchvision model with ``len(label_map)`` classes, loads its weights and moves it to ``device``.

    Args:
        name: a builder of :data:`INSTANCE_BUILDERS` or :data:`SEMANTIC_BUILDERS`.
        checkpoint: state_dict URI (any fsspec URI, fetched with ``options.storage_options`` into
            ``options.cache_dir``); None downloads torchvision's default weights.
        label_map: the model's label map; its length is the number of classes.
        options: storage options and cache folder for the checkpoint.
        device: where the model runs.
        builder_kwargs: extra builder arguments, e.g. ``{"min_size": 512, "box_detections_per_img": 50}``.

    Raises:
        ValueError: the checkpoint is not a state_dict of this architecture with this many classes.
        FileNotFoundError: nothing is at ``checkpoint``.
    """
    from torchvision.models import get_model_builder, get_model_weights

    builder, kwargs = get_model_builder(name), dict(builder_kwargs or {})
    if checkpoint is None:
        weights = get_model_weights(name).DEFAULT
        module, source = builder(weights=weights, **kwargs), str(weights)
    else:
        module = builder(weights=None, weights_backbone=None, num_classes=len(label_map.category_ids), **kwargs)
        _load_checkpoint(module, name, checkpoint, options, device, len(label_map.category_ids))
        source = checkpoint
    if getattr(module, "aux_classifier", None) is not None:
        module.aux_classifier = None  # the training-only auxiliary head; inference reads "out" alone
    return ModelPart(name, checkpoint, source, module.to(device).eval(), label_map, kwargs)


def _load_checkpoint(
    module: torch.nn.Module, name: str, uri: str, options: ModelOptions, device: torch.device, classes: int
) -> None:
    """Loads a state_dict file into ``module`` (strictly, except for a DeepLab/FCN auxiliary head)."""
    path = fetch(uri, dict(options.storage_options), options.cache_dir)
    try:
        state = torch.load(path, weights_only=True, map_location=device)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f"Expected checkpoint {uri!r} to be a torch state_dict file, but: {error}") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"Expected checkpoint {uri!r} to hold a state_dict (torch.save(model.state_dict(), path)), "
            f"but got a {type(state).__name__}"
        )
    state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"Expected checkpoint {uri!r} to fit {name} with {classes} classes (the length of its label map), "
            f"but loading it failed: {error}"
        ) from error


# ------------------------------------------------------------------------------------------------ segmenter


@dataclass(frozen=True)
class FusionSettings:
    """Thresholds of the instance filtering and the Panoptic-FPN fusion.

    Attributes:
        score_threshold: smallest score of a kept instance.
        mask_threshold: mask probability above which a pixel belongs to an instance.
        max_covered_fraction: largest fraction of an instance's mask that higher-scored instances may already
            cover (detectron2's ``overlap_threshold``); ``1 - ModelOptions.overlap_threshold``.
        stuff_area_threshold: smallest pixel count of a stuff segment.
    """

    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    mask_threshold: float = 0.5
    max_covered_fraction: float = OVERLAP_THRESHOLD
    stuff_area_threshold: int = STUFF_AREA_THRESHOLD

    @classmethod
    def from_options(cls, options: ModelOptions, stuff_area_threshold: int = STUFF_AREA_THRESHOLD) -> FusionSettings:
        """Settings from model options: None thresholds mean Panoptic FPN's (score 0.5, at most half covered);
        the overlap option is the share an instance keeps, so the covered fraction is its complement."""
        score = DEFAULT_SCORE_THRESHOLD if options.score_threshold is None else options.score_threshold
        if options.overlap_threshold is None:
            covered = OVERLAP_THRESHOLD
        else:
            covered = round(1.0 - options.overlap_threshold, 12)  # 1 - 0.8 is 0.19999999999999996 in binary
        return cls(score, options.mask_threshold, covered, stuff_area_threshold)


class TorchvisionSegmenter:
    """A torchvision Mask R-CNN and semantic model, fused into panoptic segments (satisfies ``Segmenter``).

    Attributes:
        spec: the model spec string.
        device: where the models and results live.
        dtype: forward-pass precision (autocast).
        categories: the dataset categories.
        label_map: the instance model's label map.
        semantic_label_map: the semantic model's label map.
        instance: the instance model and its provenance.
        semantic: the semantic model and its provenance.
        settings: thresholds.
    """

    def __init__(
        self,
        instance: ModelPart,
        semantic: ModelPart,
        *,
        spec: str,
        categories: Categories,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        settings: FusionSettings = FusionSettings(),
    ):
        self.spec, self.device, self.dtype, self.categories = spec, device, dtype, categories
        self.instance, self.semantic, self.settings = instance, semantic, settings
        self.label_map, self.semantic_label_map = instance.label_map, semantic.label_map
        self._thing_ids, _, self._thing_known = category_lookup(self.label_map, categories, device)  # (L,) each
        stuff_ids, _, stuff_known = category_lookup(self.semantic_label_map, categories, device)
        self._stuff_ids = torch.where(stuff_known, stuff_ids, 0)  # (C,) int64, 0 = VOID
        self._mean = torch.tensor(IMAGE_MEAN, device=device)[:, None, None]  # (3, 1, 1) float32
        self._std = torch.tensor(IMAGE_STD, device=device)[:, None, None]

    def batch_key(self, height: int, width: int) -> tuple[int, int]:
        """The padded size Mask R-CNN's transform gives an image of this size alone: images of one key batch
        together and each gets the detections it gets alone (the semantic model runs at each image's own size).
        A side of 0: the image is too thin for Mask R-CNN."""
        transform = self.instance.module.transform
        scale = min(transform.min_size[-1] / min(height, width), transform.max_size / max(height, width))
        step = transform.size_divisible
        return (math.ceil(math.floor(height * scale) / step) * step, math.ceil(math.floor(width * scale) / step) * step)

    def segment(
        self, images: Sequence[np.ndarray | torch.Tensor], timings: dict[str, float] | None = None
    ) -> list[PanopticResult]:
        """Segments a batch of RGB uint8 images ``(H, W, 3)`` of mixed sizes; one result per image, in order.

        Mask R-CNN runs once per :meth:`batch_key` group, so an image's labels do not depend on the rest of the
        batch.

        Args:
            images: the batch.
            timings: when given, seconds spent in ``preprocess``, ``forward`` (both models, with their
                thresholding and arg-max on the device) and ``postprocess`` (fusion on the host, areas and boxes)
                are added to it.

        Raises:
            ValueError: an image is not RGB uint8 ``(H, W, 3)``; the message gives its batch position.
        """
        if len(images) == 0:
            return []
        clock = StageClock(self.device, timings)
        with torch.inference_mode():
            pixels = [image.float() / 255 for image in images_to_device(images, self.device)]  # (3, H, W) float32
            clock.lap("preprocess")
            instances, semantics = self.detect(pixels), self.classify_pixels(pixels)
            clock.lap("forward")
            fused = [self._fuse(i, s) for i, s in zip(instances, semantics)]
            results = finish_batch([f[0] for f in fused], [f[1] for f in fused])
            clock.lap("postprocess")
            return results

    @torch.inference_mode()
    def detect(self, pixels: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Runs Mask R-CNN (it resizes and normalises by itself) and keeps mapped instances above the score.

        Args:
            pixels: RGB in [0, 1], one per image.  # (3, H, W) float32 each

        Returns:
            Per image ``(masks, scores, category_ids)``: # (N, H, W) bool, (N,) float32, (N,) int64 dataset ids.
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for position, image in enumerate(pixels):
            groups.setdefault(self.batch_key(*image.shape[1:]), []).append(position)
        results: list = [None] * len(pixels)
        for key, positions in groups.items():
            if 0 in key:  # Mask R-CNN would resize a side to 0 pixels (and fail): no things, stuff only
                for position in positions:
                    results[position] = self._no_instances(pixels[position])
                continue
            with autocast(self.device, self.dtype):
                outputs = self.instance.module([pixels[p] for p in positions])
            for position, output in zip(positions, outputs):
                results[position] = self._instances(output)
        return results

    def _no_instances(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """No detections for an image of ``(3, H, W)``, logged: it is too thin for Mask R-CNN's resize."""
        logger.warning("image of %d x %d pixels is too thin for Mask R-CNN's resize: labelled with stuff only",
                       image.shape[1], image.shape[2])
        height, width = image.shape[1:]
        return (torch.zeros((0, height, width), dtype=torch.bool, device=self.device),
                torch.zeros(0, device=self.device), torch.zeros(0, dtype=torch.int64, device=self.device))

    def _instances(self, output: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks, scores and dataset category ids of one image's kept detections."""
        labels, scores = output["labels"], output["scores"].float()  # (N,) int64, (N,) float32
        keep = self._thing_known[labels] & (scores >= self.settings.score_threshold)
        masks = output["masks"][keep, 0].float() > self.settings.mask_threshold  # (N', H, W) bool
        return masks, scores[keep], self._thing_ids[labels[keep]]

    @torch.inference_mode()
    def classify_pixels(self, pixels: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Runs the semantic model at each image's own size, batching images of equal size.

        Args:
            pixels: RGB in [0, 1], one per image.  # (3, H, W) float32 each

        Returns:
            Per image ``(semantic_map, confidence)``: dataset category id of the arg-max class (0 = VOID for a
            null label) and its softmax probability.  # (H, W) int64, (H, W) float32
        """
        results: list = [None] * len(pixels)
        for positions in _positions_by_size(pixels):
            batch = torch.stack([(pixels[p] - self._mean) / self._std for p in positions])  # (B, 3, H, W)
            with autocast(self.device, self.dtype):
                logits = self.semantic.module(batch)["out"]  # (B, C, H, W)
            confidence, labels = logits.float().softmax(dim=1).max(dim=1)  # (B, H, W) float32, int64
            for index, position in enumerate(positions):
                results[position] = (self._stuff_ids[labels[index]], confidence[index])
        return results

    def _fuse(
        self, instances: tuple[torch.Tensor, ...], semantic: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, SegmentTable]:
        """Fuses one image on the host; returns its id map on the device and its segment table."""
        masks, scores, category_ids = (t.cpu().numpy() for t in instances)
        semantic_map, confidence = (t.cpu().numpy() for t in semantic)
        id_map, segments = fuse_panoptic(
            masks,
            scores,
            category_ids,
            semantic_map,
            semantic_confidence=confidence,
            overlap_threshold=self.settings.max_covered_fraction,
            stuff_area_threshold=self.settings.stuff_area_threshold,
            instance_score_threshold=self.settings.score_threshold,
        )
        return torch.from_numpy(id_map).to(self.device), self._segment_table(segments)

    def _segment_table(self, segments: Sequence[dict]) -> SegmentTable:
        """The device table of fused segments, row = segment id (fusion numbers them 1, 2, ...; row 0 VOID)."""
        rows = [(0, False, 0.0)] + [(s["category_id"], s["isthing"], s["score"]) for s in segments]
        category_ids, isthing, scores = zip(*rows)
        return SegmentTable(
            torch.tensor(category_ids, dtype=torch.int64, device=self.device),
            torch.tensor(isthing, dtype=torch.bool, device=self.device),
            torch.tensor(scores, dtype=torch.float32, device=self.device),
        )

    def describe(self) -> dict:
        """Spec, both models and their weights, both label maps, thresholds, dtype and device, for the manifest."""
        return {
            "spec": self.spec,
            "backend": "torchvision",
            "instance": self.instance.describe(),
            "semantic": self.semantic.describe(),
            "label_map": self.label_map.to_json(),
            "semantic_label_map": self.semantic_label_map.to_json(),
            "thresholds": asdict(self.settings),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }


def _positions_by_size(pixels: Sequence[torch.Tensor]) -> list[list[int]]:
    """Batch positions grouped by image size, in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(pixels):
        groups.setdefault(tuple(image.shape), []).append(position)
    return list(groups.values())


def load_torchvision(
    target: str,
    options: ModelOptions,
    categories: Categories | None = None,
    *,
    spec: str | None = None,
    instance_kwargs: Mapping | None = None,
    semantic_kwargs: Mapping | None = None,
    stuff_area_threshold: int = STUFF_AREA_THRESHOLD,
) -> TorchvisionSegmenter:
    """Loads a ``torchvision:`` segmenter: both models, their label maps and the fusion thresholds.

    Label maps are read and checked before any weights are built or downloaded.

    Args:
        target: ``<instance>[@<checkpoint URI>]+<semantic>[@<checkpoint URI>]``.
        options: device, dtype, label map URI, thresholds, storage options, cache folder.
        categories: dataset categories the labels map to; default COCO panoptic.
        spec: the spec recorded by :meth:`TorchvisionSegmenter.describe`; default ``torchvision:<target>``.
        instance_kwargs: extra Mask R-CNN builder arguments, e.g. ``{"min_size": 512, "max_size": 853,
            "box_detections_per_img": 50}``; ``box_score_thresh`` defaults to the score threshold.
        semantic_kwargs: extra semantic builder arguments.
        stuff_area_threshold: smallest pixel count of a stuff segment (detectron2's default 4096).

    Raises:
        ValueError: malformed target, bad label map, or a checkpoint that does not fit its model.
        FileNotFoundError: the label map or a checkpoint is missing.
    """
    parsed = parse_target(target)
    categories = categories if categories is not None else coco_panoptic_categories()
    device, dtype = select_device(options.device), resolve_dtype(options.dtype)
    settings = FusionSettings.from_options(options, stuff_area_threshold)
    lists = read_label_map_file(options.label_map, options.storage_options)
    instance_map = instance_label_map(lists.get("instance"), parsed.instance, categories)
    semantic_map = semantic_label_map(lists.get("semantic"), categories, options.label_map)
    check_default_classes(parsed.instance, parsed.instance_checkpoint, instance_map, "instance")
    check_default_classes(parsed.semantic, parsed.semantic_checkpoint, semantic_map, "semantic")
    instance_kwargs = {"box_score_thresh": settings.score_threshold, **dict(instance_kwargs or {})}
    instance = load_part(parsed.instance, parsed.instance_checkpoint, instance_map, options, device, instance_kwargs)
    semantic = load_part(parsed.semantic, parsed.semantic_checkpoint, semantic_map, options, device, semantic_kwargs)
    return TorchvisionSegmenter(
        instance,
        semantic,
        spec=spec or f"torchvision:{target}",
        categories=categories,
        device=device,
        dtype=dtype,
        settings=settings,
    )
