"""Model input as each family's reference makes it: the resize rule, Pillow's bilinear resize, normalisation, padding.

The rules are the original repositories' evaluation paths (facts, re-implemented on the device):

- DETR (facebookresearch/detr, ``T.RandomResize([800], max_size=1333)``): short side 800 unless the long side
  would pass 1333 (the short side is then rounded, the long side truncated from it); ``(x / 255 - mean) / std``;
  padded after normalising, with 0, to the batch's largest image, with a pixel mask.
- MaskFormer, Mask2Former, OneFormer (detectron2 ``ResizeShortestEdge(800, 1333)``): both sides scaled by one
  factor, each rounded with ``int(x + 0.5)``; ``(x - 255 mean) / (255 std)``; padded after normalising, with 0,
  to a multiple of 32 (never stretched).
- EoMT, EoMT-DINOv3 (tue-mps/eomt, ``resize_and_pad_imgs_instance_panoptic``): the long side to the square's side
  (Python ``round``); the uint8 image padded with black to the square **before** ``(x / 255 - mean) / std``.

Every reference resizes the uint8 image with Pillow's bilinear filter, which :mod:`segcore.models.resize`
reproduces bit for bit, so the tensor fed to the model equals the reference's exactly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from segcore.models.resize import resize_bilinear_uint8

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputRule:
    """A family's reference pre-processing.

    Attributes:
        resize: ``detr``, ``detectron2`` or ``eomt``: how the resized size is computed (see the module table).
        normalize: ``unit`` (``(x / 255 - mean) / std``) or ``pixel`` (``(x - 255 mean) / (255 std)``).
        pad: ``batch`` (to the batch's largest, 0 after normalising, pixel mask), ``divisor`` (to a multiple of
            the size divisor, 0 after normalising) or ``square`` (to the square, black before normalising).
        default_size: (shortest edge, longest edge) of the reference's evaluation, used when the model's
            processor config names none.
        default_divisor: the size divisor when the config names none (``divisor`` padding).
        reference: where the rule comes from.
    """

    resize: str
    normalize: str
    pad: str
    default_size: tuple[int, int]
    default_divisor: int = 0
    reference: str = ""


DETECTRON2 = InputRule(
    "detectron2", "pixel", "divisor", (800, 1333), 32,
    "detectron2 ResizeShortestEdge + ImageList.from_tensors(size_divisibility=32), as Mask2Former, MaskFormer and "
    "OneFormer evaluate",
)
EOMT = InputRule("eomt", "unit", "square", (640, 640), 0,
                 "tue-mps/eomt resize_and_pad_imgs_instance_panoptic; normalisation inside the network")
FAMILY_RULES: dict[str, InputRule] = {
    "detr": InputRule("detr", "unit", "batch", (800, 1333), 0,
                      "facebookresearch/detr make_coco_transforms('val') + nested_tensor_from_tensor_list"),
    "maskformer": DETECTRON2,
    "mask2former": DETECTRON2,
    "oneformer": DETECTRON2,
    "eomt": EOMT,
    "eomt_dinov3": EOMT,
}


@dataclass(frozen=True)
class Preprocessing:
    """How one model's images become its input: its family's rule with its config's sizes and statistics.

    Attributes:
        rule: the family's reference rule.
        shortest_edge, longest_edge: the resize target (EoMT: the square's side is ``longest_edge``).
        size_divisor: ``divisor`` padding pads to a multiple of this.
        mean, std: per-channel statistics of images scaled to [0, 1].
    """

    rule: InputRule
    shortest_edge: int
    longest_edge: int
    size_divisor: int = 0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_config(
        cls, config: Mapping, family: str, input_size: tuple[int, int] | None = None
    ) -> "Preprocessing":
        """Reads a transformers image-processor config (``preprocessor_config.json`` as a dict) for a family.

        Sizes come from ``input_size`` (shortest, longest edge) when given, else ``size.shortest_edge`` /
        ``size.longest_edge``; a config without them (transformers' Mask2Former conversions say
        ``{"height": 384, "width": 384}``, a stretch no reference makes) gets the reference's evaluation size.

        Raises:
            ValueError: the family has no reference rule; the supported families are listed.
        """
        if family not in FAMILY_RULES:
            raise ValueError(f"Expected a model family with a reference rule ({sorted(FAMILY_RULES)}), "
                             f"but got {family!r}")
        rule = FAMILY_RULES[family]
        size = config.get("size") if isinstance(config.get("size"), Mapping) else {}
        shortest, longest = input_size or (size.get("shortest_edge"), size.get("longest_edge"))
        if not shortest:
            if size:
                logger.info("processor size %s is not the %s reference's: using %s", dict(size), family,
                            rule.default_size)
            shortest, longest = rule.default_size
        longest = longest or (shortest if rule.resize == "eomt" else rule.default_size[1])
        divisor = int(config.get("size_divisor") or rule.default_divisor) if rule.pad == "divisor" else 0
        normalize = config.get("do_normalize", True)
        mean = tuple(config.get("image_mean") or IMAGENET_MEAN) if normalize else (0.0, 0.0, 0.0)
        std = tuple(config.get("image_std") or IMAGENET_STD) if normalize else (1.0, 1.0, 1.0)
        return cls(rule, int(shortest), int(longest), divisor, mean, std)  # type: ignore[arg-type]

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the family's reference resizes an image of this size to; a side the reference
        would round to 0 (an extreme aspect ratio, where the original fails) is one pixel."""
        if self.rule.resize == "eomt":
            size = eomt_size(height, width, self.longest_edge)
        elif self.rule.resize == "detr":
            size = detr_size(height, width, self.shortest_edge, self.longest_edge)
        else:
            size = detectron2_size(height, width, self.shortest_edge, self.longest_edge)
        return max(1, size[0]), max(1, size[1])

    def padded_size(self, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
        """The input size of a batch of resized images of these sizes."""
        if self.rule.pad == "square":
            return self.longest_edge, self.longest_edge
        height, width = max(h for h, _ in sizes), max(w for _, w in sizes)
        if self.rule.pad == "divisor" and self.size_divisor > 1:
            step = self.size_divisor
            height, width = math.ceil(height / step) * step, math.ceil(width / step) * step
        return height, width

    def batch_key(self, height: int, width: int) -> tuple[int, int]:
        """Images with one key are batched together and each gets exactly the input it would get alone: the
        padded size where padding is fixed by the image (divisor, square); the resized size where the batch's
        largest image sets it (DETR)."""
        resized = self.resized_size(height, width)
        return resized if self.rule.pad == "batch" else self.padded_size([resized])


def detectron2_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ``ResizeShortestEdge.get_output_shape``: one scale for both sides, each ``int(x + 0.5)``."""
    scale = short * 1.0 / min(height, width)
    new_height, new_width = (short * 1.0, scale * width) if height < width else (scale * height, short * 1.0)
    if max(new_height, new_width) > max_size:
        scale = max_size * 1.0 / max(new_height, new_width)
        new_height, new_width = new_height * scale, new_width * scale
    return int(new_height + 0.5), int(new_width + 0.5)


def detr_size(height: int, width: int, size: int, max_size: int | None) -> tuple[int, int]:
    """DETR's ``get_size_with_aspect_ratio``: short side ``size`` (rounded when the long side caps it), the long
    side truncated from that rounded size."""
    if max_size is not None:
        short, long = float(min(height, width)), float(max(height, width))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def eomt_size(height: int, width: int, side: int) -> tuple[int, int]:
    """EoMT's ``scale_img_size_instance_panoptic``: the long side to ``side``, both sides ``round``-ed."""
    factor = min(side / height, side / width)
    return round(height * factor), round(width * factor)


def prepare_batch(
    images: Sequence[torch.Tensor], preprocessing: Preprocessing
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Resizes, normalises and pads a batch on its device, as the family's reference does.

    Args:
        images: uint8 ``(3, H, W)`` tensors on the device.

    Returns:
        ``(pixel_values, pixel_mask, resized_sizes)``: # (B, 3, Hp, Wp) float32, # (B, Hp, Wp) int64 with 1 on
        image pixels, and each image's resized (height, width) inside the padded batch.

    Raises:
        ValueError: a resized image does not fit the padded size (an EoMT square smaller than the image).
    """
    resized = [resize_bilinear_uint8(image, preprocessing.resized_size(*image.shape[1:])) for image in images]
    sizes = [(int(r.shape[1]), int(r.shape[2])) for r in resized]
    padded = preprocessing.padded_size(sizes)
    if any(h > padded[0] or w > padded[1] for h, w in sizes):
        raise ValueError(f"Expected resized images to fit the pad size {padded}, but got {sizes}")
    device = images[0].device
    pixel_mask = torch.zeros((len(images), *padded), dtype=torch.int64, device=device)
    if preprocessing.rule.pad == "square":  # black uint8 padding, then normalised with the image
        canvas = torch.zeros((len(images), 3, *padded), dtype=torch.uint8, device=device)
        for index, (pixels, (height, width)) in enumerate(zip(resized, sizes)):
            canvas[index, :, :height, :width] = pixels
            pixel_mask[index, :height, :width] = 1
        return normalize(canvas, preprocessing), pixel_mask, sizes
    pixel_values = torch.zeros((len(images), 3, *padded), device=device)
    for index, (pixels, (height, width)) in enumerate(zip(resized, sizes)):
        pixel_values[index, :, :height, :width] = normalize(pixels, preprocessing)
        pixel_mask[index, :height, :width] = 1
    return pixel_values, pixel_mask, sizes


def normalize(pixels: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 ``(..., 3, H, W)`` to the model's float32 input, in the reference's float operations."""
    shape = (3, 1, 1)
    if preprocessing.rule.normalize == "pixel":  # detectron2: pixel_mean / pixel_std are given in 0..255
        mean = torch.tensor([m * 255 for m in preprocessing.mean], dtype=torch.float64).float()
        std = torch.tensor([s * 255 for s in preprocessing.std], dtype=torch.float64).float()
        return (pixels.float() - mean.to(pixels.device).view(shape)) / std.to(pixels.device).view(shape)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=pixels.device).view(shape)
    std = torch.tensor(preprocessing.std, dtype=torch.float32, device=pixels.device).view(shape)
    return (pixels.float() / 255 - mean) / std
