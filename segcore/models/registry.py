"""Model specs: a string picks a backend (``hf:``, ``torchvision:``, ``demo``) or a named preset.

``check_spec`` validates a spec without loading anything (the job calls it before taking a GPU);
``load_segmenter`` builds the backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from segcore.categories import DATASETS, Categories, coco_panoptic_categories, dataset_categories

BACKENDS = ("hf", "torchvision", "demo")
DEMO_SPEC = "demo"


@dataclass(frozen=True)
class ModelOptions:
    """How a model is loaded and its raw output turned into segments.

    Attributes:
        device: ``cpu``, ``cuda``, ``cuda:N``; None picks ``cuda`` when present.
        dtype: forward-pass precision (autocast): float32, bfloat16 or float16; post-processing is float32.
        label_map: URI of a JSON file mapping model labels to dataset category ids (overrides label names).
        score_threshold: a query or instance is kept when its class score passes this (``hf:`` strictly above,
            as transformers; ``torchvision:`` at or above, as detectron2); None uses the backend's default
            (``hf:`` 0.8, ``torchvision:`` 0.5).
        mask_threshold: mask probability at or above which a pixel belongs to a query's or instance's mask.
        overlap_threshold: the fraction of its mask a query or instance must keep once overlaps are resolved;
            None uses the backend's default (``hf:`` more than 0.8, ``torchvision:`` at least 0.5 as Panoptic FPN).
        revision: hub revision (commit, tag or branch) of an ``hf:`` hub id.
        storage_options: fsspec options for weight and label-map URIs (credentials, endpoints).
        cache_dir: local cache for fetched weights; None uses ``$SEGCORE_CACHE`` or ``~/.cache/segcore``.
        dataset: the dataset an ``hf:`` model was trained on (``coco-panoptic``, ``ade20k-panoptic``,
            ``cityscapes-panoptic``): its categories become the job's (without ground truth), and model label i
            maps to its i-th category (labels = category ids for DETR's 250 labels). None: labels map by the
            config's label names onto COCO panoptic (or the ground truth's categories).
        input_size: ``(shortest edge, longest edge)`` of the resize, overriding the model's processor config
            (the evaluation size of the checkpoint's original config; EoMT: the square's side twice).
    """

    device: str | None = None
    dtype: str = "float32"
    label_map: str | None = None
    score_threshold: float | None = None
    mask_threshold: float = 0.5
    overlap_threshold: float | None = None
    revision: str | None = None
    storage_options: Mapping = field(default_factory=dict)
    cache_dir: str | None = None
    dataset: str | None = None
    input_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Preset:
    """A named model: a spec plus the options that go with it.

    Attributes:
        spec: the backend spec it expands to.
        description: one line for ``--help`` and docs.
        options: ModelOptions fields it sets (a user's explicit option wins).
    """

    spec: str
    description: str
    options: Mapping = field(default_factory=dict)


COCO = {"dataset": "coco-panoptic"}
ADE20K = {"dataset": "ade20k-panoptic"}
# Hub revisions are not pinned: this project's machines cannot reach the hub to look the commits up
# (``ModelOptions.revision`` pins one). PQ and speed are the model zoos' (EoMT: H100; DINOv3 speed: torch.compile).
PRESETS: dict[str, Preset] = {
    "eomt-large-640": Preset(
        "hf:tue-mps/coco_panoptic_eomt_large_640",
        "EoMT ViT-L (DINOv2) at 640 px: COCO PQ 56.0, 128 img/s on an H100 (the default for real corpora)", COCO,
    ),
    "eomt-large-1280": Preset(
        "hf:tue-mps/coco_panoptic_eomt_large_1280", "EoMT ViT-L at 1280 px: COCO PQ 58.3, 30 img/s (quality)", COCO
    ),
    "eomt-base-640": Preset(
        "hf:tue-mps/coco_panoptic_eomt_base_640_2x", "EoMT ViT-B at 640 px, 2x schedule: COCO PQ 51.6, 261 img/s",
        COCO,
    ),
    "eomt-dinov3-large-640": Preset(
        "hf:tue-mps/eomt-dinov3-coco-panoptic-large-640",
        "EoMT ViT-L on DINOv3 at 640 px: COCO PQ 56.8, 137 img/s on an H100", COCO,
    ),
    "eomt-dinov3-large-1280": Preset(
        "hf:tue-mps/eomt-dinov3-coco-panoptic-large-1280", "EoMT ViT-L on DINOv3 at 1280 px: COCO PQ 58.9, 33 img/s",
        COCO,
    ),
    "eomt-dinov3-base-640": Preset(
        "hf:tue-mps/eomt-dinov3-coco-panoptic-base-640", "EoMT ViT-B on DINOv3 at 640 px: COCO PQ 53.1, 240 img/s",
        COCO,
    ),
    "eomt-dinov3-small-640": Preset(
        "hf:tue-mps/eomt-dinov3-coco-panoptic-small-640", "EoMT ViT-S on DINOv3 at 640 px: COCO PQ 47.2, 246 img/s",
        COCO,
    ),
    "eomt-large-640-ade20k": Preset(
        "hf:tue-mps/ade20k_panoptic_eomt_large_640",
        "EoMT ViT-L at 640 px on ADE20K panoptic (150 categories): PQ 50.6, 128 img/s", ADE20K,
    ),
    "eomt-large-1280-ade20k": Preset(
        "hf:tue-mps/ade20k_panoptic_eomt_large_1280", "EoMT ViT-L at 1280 px on ADE20K panoptic: PQ 51.7, 30 img/s",
        ADE20K,
    ),
    "eomt-giant-640-ade20k": Preset(
        "hf:tue-mps/ade20k_panoptic_eomt_giant_640", "EoMT ViT-g at 640 px on ADE20K panoptic: PQ 51.3, 55 img/s",
        ADE20K,
    ),
    "mask2former-swin-large": Preset(
        "hf:facebook/mask2former-swin-large-coco-panoptic",
        "Mask2Former Swin-L: COCO PQ 57.8 (quality); evaluated at short side 800, long side 1333",
        {**COCO, "input_size": (800, 1333)},
    ),
    "detr-r101": Preset(
        "hf:facebook/detr-resnet-101-panoptic",
        "DETR R101 panoptic, the seed article's model: COCO PQ 45.1, with DETR's own post-processing (0.85)", COCO,
    ),
    "detr-r50": Preset(
        "hf:facebook/detr-resnet-50-panoptic", "DETR R50 panoptic: COCO PQ 43.4, DETR's own post-processing", COCO
    ),
}
DEFAULT_PRESET = "eomt-large-640"


def split_spec(spec: str) -> tuple[str, str]:
    """Splits ``backend:target`` (``demo`` has no target; a preset name expands first).

    Raises:
        ValueError: unknown backend or preset, or a missing target; the message lists what is known.
    """
    if spec in PRESETS:
        return split_spec(PRESETS[spec].spec)
    backend, _, target = spec.partition(":")
    if backend == DEMO_SPEC and not target:
        return backend, ""
    if backend not in BACKENDS or backend == DEMO_SPEC or not target:
        raise ValueError(
            f"Expected `model` to be 'demo', 'hf:<hub id | dir | URI>', 'torchvision:<instance>+<semantic>' "
            f"or a preset ({', '.join(sorted(PRESETS))}), but got {spec!r}"
        )
    return backend, target


def resolve_options(spec: str, options: ModelOptions) -> ModelOptions:
    """Applies a preset's options to the fields the user left at their defaults (a user's value wins)."""
    preset = PRESETS.get(spec)
    if preset is None:
        return options
    defaults = ModelOptions()
    changes = {k: v for k, v in preset.options.items() if getattr(options, k) == getattr(defaults, k)}
    return dataclasses.replace(options, **changes)


def check_spec(spec: str, options: ModelOptions | None = None) -> None:
    """Validates a spec and options without loading weights or touching a GPU.

    Raises:
        ValueError: unknown backend or preset, malformed torchvision spec, bad dtype or threshold.
    """
    from segcore.models.base import resolve_dtype

    backend, target = split_spec(spec)
    options = options or ModelOptions()
    resolve_dtype(options.dtype)
    for name in ("score_threshold", "mask_threshold", "overlap_threshold"):
        value = getattr(options, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"Expected `{name}` to be in [0, 1], but got {value!r}")
    if options.dataset is not None and options.dataset not in DATASETS:
        raise ValueError(f"Expected `dataset` to be one of {sorted(DATASETS)}, but got {options.dataset!r}")
    size = options.input_size
    if size is not None and (len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)
                             or size[0] > size[1]):
        raise ValueError(f"Expected `input_size` to be (shortest edge, longest edge), positive integers with "
                         f"shortest <= longest, but got {size!r}")
    if backend == "torchvision":
        from segcore.models.torchvision_backend import parse_target

        parse_target(target)


def load_segmenter(spec: str, options: ModelOptions | None = None, categories: Categories | None = None):
    """Builds the segmenter a spec names, loaded once on its device.

    Args:
        spec: ``demo``, ``hf:<source>``, ``torchvision:<instance>+<semantic>`` or a preset name.
        options: loading and post-processing options; a preset's options apply where these are defaults.
        categories: the dataset categories to map labels onto; default COCO panoptic (demo: its 5 classes).

    Raises:
        ValueError: the spec or options are invalid, or the model's labels do not map to ``categories``.
    """
    options = resolve_options(spec, options or ModelOptions())
    check_spec(spec, options)
    backend, target = split_spec(spec)
    categories = categories or model_categories(spec, options)
    if backend == DEMO_SPEC:
        from segcore.models.demo import demo_model_dir
        from segcore.models.hf import load_hf

        return load_hf(str(demo_model_dir()), options, categories, spec=spec)
    if backend == "hf":
        from segcore.models.hf import load_hf

        return load_hf(target, options, categories, spec=spec)
    from segcore.models.torchvision_backend import load_torchvision

    return load_torchvision(target, options, categories, spec=spec)


def model_categories(spec: str, options: ModelOptions | None = None) -> Categories:
    """The categories a model labels with when no ground truth says otherwise: the demo's five, the dataset it
    was trained on (``ModelOptions.dataset``, presets set it), else COCO panoptic's 133.

    Raises:
        ValueError: an invalid spec or dataset name.
    """
    options = resolve_options(spec, options or ModelOptions())
    check_spec(spec, options)
    if split_spec(spec)[0] == DEMO_SPEC:
        from segcore.synthetic import demo_categories

        return demo_categories()
    return dataset_categories(options.dataset) if options.dataset else coco_panoptic_categories()


def model_label_map(spec: str, options: ModelOptions | None, categories: Categories) -> dict:
    """The model's labels and the dataset categories they map to, from configs and label maps only (no weights).

    Returns a JSON-ready document for the job manifest: ``{"names": [...], "category_ids": [...]}``, or for the
    torchvision backend ``{"instance": {...}, "semantic": {...}}``.

    Raises:
        ValueError: the spec is invalid, the model config cannot be read, or labels do not map onto
            ``categories`` (the message lists them and the known names).
    """
    options = resolve_options(spec, options or ModelOptions())
    check_spec(spec, options)
    backend, target = split_spec(spec)
    if backend in (DEMO_SPEC, "hf"):
        from segcore.models.hf import config_label_map

        if backend == DEMO_SPEC:
            from segcore.models.demo import demo_model_dir

            target = str(demo_model_dir())
        return config_label_map(target, options, categories).to_json()
    from segcore.models.torchvision_backend import (
        check_default_classes, instance_label_map, parse_target, read_label_map_file, semantic_label_map,
    )

    parsed = parse_target(target)
    lists = read_label_map_file(options.label_map, options.storage_options)
    instance = instance_label_map(lists.get("instance"), parsed.instance, categories)
    semantic = semantic_label_map(lists.get("semantic"), categories, options.label_map)
    check_default_classes(parsed.instance, parsed.instance_checkpoint, instance, "instance")
    check_default_classes(parsed.semantic, parsed.semantic_checkpoint, semantic, "semantic")
    return {"instance": instance.to_json(), "semantic": semantic.to_json()}


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers (False when ``HF_HUB_OFFLINE`` is set or the network is closed)."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://", 1)[-1].split("/")[0]
    host, _, port = endpoint.partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def default_spec(reachable: bool | None = None) -> str:
    """The model used when none is named: the default preset when the hub is reachable, else the demo model."""
    reachable = hub_reachable() if reachable is None else reachable
    return DEFAULT_PRESET if reachable else DEMO_SPEC


def describe_specs() -> str:
    """One line per backend and preset, for ``--help`` and error messages."""
    lines = [
        "demo: the shipped demo model (5 synthetic classes; offline)",
        "hf:<hub id | local dir | fsspec URI>: transformers DETR, MaskFormer, Mask2Former, OneFormer, EoMT, "
        "EoMT-DINOv3",
        "torchvision:<instance>[@ckpt]+<semantic>[@ckpt]: Mask R-CNN + a semantic model, fused",
    ]
    return "\n".join(lines + [f"{name}: {preset.description}" for name, preset in PRESETS.items()])
