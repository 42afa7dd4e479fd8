"""Pillow's bilinear resize of uint8 images reproduced on the device: equal to Pillow itself on every pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segcore.models.resize import resize_bilinear_uint8, resize_on_device


def pillow(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Photo-like content (smooth gradients with noise): the values where rounding decides are common."""
    coarse = rng.integers(0, 256, (max(2, height // 7), max(2, width // 7), 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)).astype(np.int16)
    return np.clip(image + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)


SIZE_PAIRS = [
    ((480, 640), (800, 1067)),  # COCO photo to detectron2's 800 (enlarge both)
    ((427, 640), (640, 959)),
    ((3000, 4000), (480, 640)),  # a camera photo down to EoMT's square (shrink 6x)
    ((640, 480), (640, 480)),  # no resize
    ((375, 500), (800, 1067)),
    ((113, 54), (57, 305)),  # shrink rows, enlarge columns: Pillow 13 goes vertically first
    ((60, 133), (21, 49)),  # both shrink, horizontally first
    ((1, 7), (3, 2)),
]


@pytest.mark.parametrize("in_size, out_size", SIZE_PAIRS)
def test_the_device_resize_equals_pillow_on_every_pixel(in_size, out_size):
    rng = np.random.default_rng(sum(in_size) + sum(out_size))
    image = smooth_image(rng, *in_size)
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    ours = resize_on_device(tensor, out_size).permute(1, 2, 0).numpy()
    assert np.array_equal(ours, pillow(image, out_size))


def test_random_sizes_and_noise_equal_pillow():
    rng = np.random.default_rng(0)
    for _ in range(60):
        height, width, out_height, out_width = (int(v) for v in rng.integers(1, 160, 4))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
        ours = resize_on_device(tensor, (out_height, out_width)).permute(1, 2, 0).numpy()
        assert np.array_equal(ours, pillow(image, (out_height, out_width))), (height, width, out_height, out_width)


def test_the_public_resize_on_cpu_and_a_batch_dimension():
    rng = np.random.default_rng(3)
    images = [smooth_image(rng, 37, 51) for _ in range(2)]
    batch = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images])  # (2, 3, H, W): the device path
    resized = resize_bilinear_uint8(batch, (80, 33))
    for index, image in enumerate(images):
        single = resize_bilinear_uint8(torch.from_numpy(image).permute(2, 0, 1), (80, 33))  # Pillow itself on CPU
        assert torch.equal(resized[index], single)
        assert np.array_equal(single.permute(1, 2, 0).numpy(), pillow(image, (80, 33)))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        resize_bilinear_uint8(torch.zeros((3, 4, 4)), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        resize_bilinear_uint8(torch.zeros((3, 4, 4), dtype=torch.uint8), (0, 2))
