"""Published model architectures with random weights, for benchmarks where no weights can be downloaded.

The hyper-parameters are those of the published COCO panoptic checkpoints (EoMT paper, Mask2Former paper);
the weights are random, so only speed and memory mean anything.
"""

from __future__ import annotations

import torch

from segcore.categories import coco_panoptic_categories
from segcore.models.hf import HFSegmenter, segmenter_from_model
from segcore.models.registry import ModelOptions

# name -> image-processor config of the published checkpoint's evaluation setting
PROCESSORS = {
    "eomt-large-640": {"size": {"shortest_edge": 640, "longest_edge": 640}, "do_pad": True},
    "mask2former-swin-large": {"size": {"shortest_edge": 800, "longest_edge": 1333}, "size_divisor": 32},
}


def _coco_labels() -> dict:
    names = [c.name for c in coco_panoptic_categories()]
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def published_model(name: str) -> torch.nn.Module:
    """Builds ``eomt-large-640`` or ``mask2former-swin-large`` with random weights (133 COCO panoptic labels).

    Raises:
        ValueError: an unknown name; the known ones are listed.
    """
    import transformers as T

    if name == "eomt-large-640":
        return T.EomtForUniversalSegmentation(T.EomtConfig(num_queries=200, **_coco_labels()))
    if name == "mask2former-swin-large":
        backbone = T.SwinConfig(
            embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, image_size=384,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
        config = T.Mask2FormerConfig(
            backbone_config=backbone, use_pretrained_backbone=False, num_queries=200, **_coco_labels()
        )
        return T.Mask2FormerForUniversalSegmentation(config)
    raise ValueError(f"Expected a published model name in {sorted(PROCESSORS)}, but got {name!r}")


def published_segmenter(name: str, options: ModelOptions) -> HFSegmenter:
    """A :class:`HFSegmenter` around :func:`published_model` with its evaluation pre-processing."""
    return segmenter_from_model(
        published_model(name), PROCESSORS[name], options, coco_panoptic_categories(), f"random:{name}", name
    )
