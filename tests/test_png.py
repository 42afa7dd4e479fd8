"""The id-map PNG codec against Pillow: every filter, colour type and corrupt input."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from segcore import png

id_maps = hnp.arrays(
    np.uint32,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
    elements=st.sampled_from([0, 1, 255, 256, 65535, 65536, 3937500, 16777215, 4260062]),
)


def pillow_png(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def pillow_ids(data: bytes) -> np.ndarray:
    return png.rgb2id(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@given(id_maps, st.sampled_from(png.FILTERS), st.integers(1, 9))
@settings(max_examples=60, deadline=None)
def test_encode_round_trips_and_pillow_reads_it(ids, filter, level):
    data = png.encode_ids(ids, level=level, filter=filter)
    np.testing.assert_array_equal(png.decode_ids(data), ids)
    np.testing.assert_array_equal(pillow_ids(data), ids)


@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 30), st.sampled_from([1, 3, 4]))))
@settings(max_examples=60, deadline=None)
def test_decode_matches_pillow_on_pillow_files_of_every_colour_type(pixels):
    # Pillow picks the scanline filters adaptively, so random pixels exercise sub, up, average and paeth.
    array = pixels[..., 0] if pixels.shape[2] == 1 else pixels
    data = pillow_png(array)
    np.testing.assert_array_equal(png.decode_ids(data), pillow_ids(data))


def test_decode_matches_pillow_on_real_coco_maps(coco_sample):
    for path in sorted((coco_sample / "panoptic_examples").glob("*.png")):
        data = path.read_bytes()
        np.testing.assert_array_equal(png.decode_ids(data), pillow_ids(data))


@pytest.mark.parametrize("mode", ["P", "I;16", "LA"])
def test_other_png_kinds_decode_through_pillow(mode):
    rgb = np.random.default_rng(0).integers(0, 4, (9, 7, 3), dtype=np.uint8) * 60
    image = Image.fromarray(rgb)
    image = image.convert(mode) if mode != "P" else image.quantize(8)
    data = pillow_png(np.asarray(image)) if mode == "LA" else _save(image)
    np.testing.assert_array_equal(png.decode_ids(data), pillow_ids(data))


def _save(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def test_read_size_reads_the_header_only():
    data = png.encode_ids(np.zeros((3, 5), np.uint32))
    assert png.read_size(data) == (3, 5)
    with pytest.raises(png.PNGError):
        png.read_size(b"GIF89a")


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda d: b"", "signature"),
        (lambda d: b"not a png at all", "signature"),
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[:40] + bytes([d[40] ^ 0xFF]) + d[41:], "CRC"),
    ],
)
def test_corrupt_files_raise_png_error(mangle, message):
    data = png.encode_ids(np.arange(400, dtype=np.uint32).reshape(20, 20))
    with pytest.raises(png.PNGError, match=message):
        png.decode_ids(mangle(data))


def test_corrupt_image_data_with_valid_crc_raises():
    ids = np.arange(400, dtype=np.uint32).reshape(20, 20)
    data = png.encode_ids(ids)
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    body = bytes(b ^ 0x5A for b in data[start : start + length])
    crc = zlib.crc32(body, zlib.crc32(b"IDAT")).to_bytes(4, "big")
    with pytest.raises(png.PNGError):
        png.decode_ids(data[:start] + body + crc + data[start + length + 4 :])


def test_unknown_filter_type_is_reported_with_its_row():
    ids = np.ones((4, 4), np.uint32)
    rows = np.zeros((4, 13), np.uint8)
    rows[2, 0] = 9
    body = zlib.compress(rows.tobytes())
    header = (4).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    data = png.PNG_SIGNATURE + png._chunk(b"IHDR", header) + png._chunk(b"IDAT", body) + png._chunk(b"IEND", b"")
    with pytest.raises(png.PNGError, match="row 2"):
        png.decode_ids(data)
    assert ids.shape == (4, 4)


@pytest.mark.parametrize(
    "ids, kwargs",
    [
        (np.zeros((2, 2, 2), np.uint32), {}),
        (np.full((2, 2), 1 << 24, np.int64), {}),
        (np.full((2, 2), -1, np.int64), {}),
        (np.zeros((2, 2), np.uint32), {"filter": "paeth"}),
        (np.zeros((2, 2), np.uint32), {"level": 0}),
    ],
)
def test_encode_rejects_bad_input(ids, kwargs):
    with pytest.raises(ValueError, match="Expected"):
        png.encode_ids(ids, **kwargs)


def test_rgb2id_and_id2rgb_are_inverse():
    ids = np.array([[0, 1, 256, 65536], [16777215, 3937500, 4260062, 255]], np.uint32)
    rgb = png.id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert tuple(rgb[1, 1]) == (3937500 % 256, 3937500 // 256 % 256, 3937500 // 65536)
    np.testing.assert_array_equal(png.rgb2id(rgb), ids)
