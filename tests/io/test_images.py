"""Image decoding: every mode converted, EXIF rotation applied, broken and oversized files refused with a status."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from segcore.io.images import ImageDecodeError, decode_rgb


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_rgb_round_trips_losslessly(fmt):
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    assert np.array_equal(decode_rgb(encoded(Image.fromarray(RGB), fmt, **kwargs), "x"), RGB)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb_uint8(mode):
    if mode == "I;16":
        image = Image.fromarray(RGB[..., 0].astype(np.uint16) * 257)  # a 16-bit grey PNG
    else:
        image = Image.fromarray(RGB).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_rgb(encoded(image, fmt), f"img.{fmt.lower()}")
    assert decoded.dtype == np.uint8 and decoded.shape == (12, 20, 3)
    if mode == "I;16":  # 16-bit is scaled, not clipped
        assert np.array_equal(decoded[..., 0], RGB[..., 0]) and np.array_equal(decoded[..., 1], RGB[..., 0])


def test_exif_orientation_is_applied():
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_rgb(encoded(image, "PNG", exif=exif.tobytes()), "rotated.png")
    assert decoded.shape == (20, 12, 3)
    assert np.array_equal(decoded, np.rot90(RGB, k=-1))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size, with a tiny (wrong) body: a few hundred bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, status",
    [
        (b"", "empty"),
        (b"this is text, not a JPEG", "not_an_image"),
        (png_header_only(50_000, 50_000), "too_large"),
    ],
)
def test_bad_bytes_get_a_status_and_name_the_image(data, status):
    with pytest.raises(ImageDecodeError) as error:
        decode_rgb(data, "shard-7.tar#bad.jpg")
    assert error.value.status == status and "shard-7.tar#bad.jpg" in str(error.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_truncated_file_is_a_decode_error(fmt):
    data = encoded(Image.fromarray(np.tile(RGB, (10, 10, 1))), fmt)
    with pytest.raises(ImageDecodeError) as error:
        decode_rgb(data[: len(data) // 2], "cut." + fmt.lower())
    assert error.value.status == "decode_error"


def test_the_pixel_limit_is_configurable():
    data = encoded(Image.fromarray(RGB), "PNG")
    with pytest.raises(ImageDecodeError, match="240 pixels exceeds the limit of 100"):
        decode_rgb(data, "small.png", max_pixels=100)


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    """A small valid PNG with one extra chunk inserted before IDAT."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    idat = data.index(b"IDAT") - 4
    return data[:idat] + chunk + data[idat:]


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP"])
def test_a_text_or_icc_chunk_over_pillows_limit_is_this_images_decode_error(kind):
    # 2 MB of zeros compress to a few KB: Pillow refuses to inflate past MAX_TEXT_CHUNK with a ValueError
    payload = b"comment\0\0" + zlib.compress(b"\0" * 2_000_000)
    with pytest.raises(ImageDecodeError, match="shard.tar#big.png") as error:
        decode_rgb(png_with_chunk(kind, payload), "shard.tar#big.png")
    assert error.value.status == "decode_error"
