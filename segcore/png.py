"""A fast PNG codec for panoptic id maps: 8-bit PNG <-> (H, W) uint32 segment ids in one pass.

Id maps are flat regions of a few colours, so inflating is cheap with libdeflate and the cost of a
general decoder lies in zlib and in the separate RGB -> id pass. This codec inflates with libdeflate
and undoes the scanline filters straight into segment ids (``id = R + 256*G + 256^2*B``) in one
compiled loop; it encodes ids into "up"-filtered scanlines in one loop and compresses with zlib-ng. PNGs it does not handle (palette, 16-bit, interlaced) are decoded by Pillow instead,
so every valid PNG decodes; the fast path is checked against Pillow in the tests.
"""

from __future__ import annotations

import io
import struct
import zlib

import deflate
import numba
import numpy as np
from PIL import Image
from zlib_ng import zlib_ng

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Channels per pixel of the 8-bit colour types handled by the fast path: grey, RGB, grey+alpha, RGBA.
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}
FILTERS = ("none", "sub", "up")
# Chosen by bench/png_codec.py (docs/benchmarks.md): the "up" filter with zlib-ng at level 6 gave the
# smallest files of the settings measured, at about 1 ms per 640x480 map (Pillow's default: 9 ms, larger).
DEFAULT_FILTER = "up"
DEFAULT_LEVEL = 6


class PNGError(ValueError):
    """A byte string is not a decodable PNG."""


def decode_ids(data: bytes) -> np.ndarray:
    """Decodes a PNG into segment ids.

    Args:
        data: the PNG file's bytes. Colour PNGs give ``R + 256*G + 256^2*B``; alpha is ignored;
            a grey value ``v`` counts as the colour ``(v, v, v)``.

    Returns:
        ids  # (H, W) uint32

    Raises:
        PNGError: the bytes are not a PNG, or are corrupt or truncated.
    """
    header, payload = _read_chunks(data)
    width, height, depth, colour, interlace = header
    if depth != 8 or interlace != 0 or colour not in _CHANNELS:
        return _decode_with_pillow(data)
    channels = _CHANNELS[colour]
    stride = width * channels
    try:
        raw = deflate.zlib_decompress(payload, height * (stride + 1))
    except deflate.DeflateError as error:
        raise PNGError(f"PNG image data is corrupt or truncated ({error})") from None
    raw = np.frombuffer(raw, dtype=np.uint8)
    if raw.size != height * (stride + 1):
        raise PNGError(f"PNG image data holds {raw.size} bytes, expected {height * (stride + 1)}")
    ids = np.empty((height, width), dtype=np.uint32)
    bad_row = _unfilter_to_ids(raw, height, width, channels, ids)
    if bad_row >= 0:
        raise PNGError(f"PNG row {bad_row} has an unknown filter type {raw[bad_row * (stride + 1)]}")
    return ids


def read_size(data: bytes) -> tuple[int, int]:
    """Returns ``(height, width)`` from a PNG header without decoding the pixels.

    Raises:
        PNGError: the bytes do not start with a PNG header.
    """
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        raise PNGError("not a PNG file (bad signature or missing IHDR)")
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def encode_ids(ids: np.ndarray, level: int = DEFAULT_LEVEL, filter: str = DEFAULT_FILTER) -> bytes:
    """Encodes segment ids as an 8-bit RGB PNG (``R + 256*G + 256^2*B = id``).

    Args:
        ids: segment ids in ``[0, 2^24)``  # (H, W) integer
        level: zlib compression level 1..9.
        filter: scanline filter for every row, one of FILTERS.

    Raises:
        ValueError: bad shape, ids out of range, or an unknown filter or level.
    """
    if ids.ndim != 2 or ids.size == 0:
        raise ValueError(f"Expected `ids` to be a non-empty (H, W) array, but got shape {ids.shape}")
    if filter not in FILTERS:
        raise ValueError(f"Expected `filter` to be one of {FILTERS}, but got {filter!r}")
    if not 1 <= level <= 9:
        raise ValueError(f"Expected `level` to be in 1..9, but got {level}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= 1 << 24):
        raise ValueError(f"Expected ids in [0, 2^24), but got values in [{ids.min()}, {ids.max()}]")
    height, width = ids.shape
    rows = np.empty((height, 1 + width * 3), dtype=np.uint8)
    _filter_id_rows(np.ascontiguousarray(ids), FILTERS.index(filter), rows)
    payload = zlib_ng.compress(rows, level)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", payload) + _chunk(b"IEND", b"")


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """Splits segment ids into colours: ``(R, G, B) = (id % 256, id // 256 % 256, id // 256^2)``.

    Args:
        ids: segment ids in ``[0, 2^24)``  # (...) integer

    Returns:
        rgb  # (..., 3) uint8

    Raises:
        ValueError: an id is negative or ``>= 2^24``.
    """
    ids = np.asarray(ids)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= 1 << 24):
        raise ValueError(f"Expected ids in [0, 2^24), but got values in [{ids.min()}, {ids.max()}]")
    little = np.ascontiguousarray(ids, dtype="<u4")
    return little.view(np.uint8).reshape(*ids.shape, 4)[..., :3]


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """Combines colours into segment ids: ``R + 256*G + 256^2*B``.

    Args:
        rgb: colours  # (..., 3) or (..., 4) uint8; a 4th (alpha) channel is ignored

    Returns:
        ids  # (...) uint32

    Raises:
        ValueError: the last axis is not 3 or 4 channels.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 1 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"Expected `rgb` to have 3 or 4 channels on its last axis, but got shape {rgb.shape}")
    rgb = rgb.astype(np.uint32, copy=False)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


def _read_chunks(data: bytes) -> tuple[tuple[int, int, int, int, int], bytes]:
    """Parses the chunk list; returns the IHDR fields and the concatenated IDAT payload."""
    if data[:8] != PNG_SIGNATURE:
        raise PNGError("not a PNG file (bad signature)")
    header = None
    payload: list[bytes] = []
    position = 8
    while position + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        crc = data[position + 8 + length : position + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise PNGError(f"PNG chunk {kind!r} is truncated")
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack(">I", crc)[0]:
            raise PNGError(f"PNG chunk {kind!r} fails its CRC check")
        if kind == b"IHDR":
            header = _parse_header(body)
        elif kind == b"IDAT":
            payload.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    else:
        raise PNGError("PNG file is truncated (no IEND chunk)")
    if header is None or not payload:
        raise PNGError("PNG file has no IHDR or no IDAT chunk")
    return header, b"".join(payload)


def _parse_header(body: bytes) -> tuple[int, int, int, int, int]:
    if len(body) != 13:
        raise PNGError(f"PNG IHDR chunk has {len(body)} bytes, expected 13")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
    if width == 0 or height == 0:
        raise PNGError(f"PNG has an empty size {width}x{height}")
    return width, height, depth, colour, interlace


def _decode_with_pillow(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise PNGError(f"PNG could not be decoded ({error})") from None
    return rgb2id(rgb)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


@numba.njit(cache=True, nogil=True)
def _unfilter_to_ids(raw, height, width, channels, ids):  # pragma: no cover - compiled
    """Undoes PNG scanline filters row by row and writes ids; returns the first bad row or -1."""
    stride = width * channels
    rows = np.zeros((2, stride), np.uint8)
    zero_row = np.zeros(width, np.uint32)
    for y in range(height):
        start = y * (stride + 1) + 1
        kind = raw[start - 1]
        line = raw[start : start + stride]
        current = rows[y & 1]
        previous = rows[(y + 1) & 1]
        if kind > 4:
            return y
        if channels == 3:
            _undo_rgb_row(kind, line, ids[y - 1] if y > 0 else zero_row, ids[y])
            continue
        if kind == 0:
            for i in range(stride):
                current[i] = line[i]
        elif kind == 1:
            _undo_sub(line, current, channels)
        elif kind == 2:
            for i in range(stride):
                current[i] = line[i] + previous[i]
        elif kind == 3:
            _undo_average(line, previous, current, channels)
        else:
            _undo_paeth(line, previous, current, channels)
        _write_id_row(current, width, channels, ids[y])
    return -1


@numba.njit(cache=True, nogil=True, inline="always")
def _paeth(left, up, upper_left):  # pragma: no cover - compiled
    if up == upper_left:  # flat above: the estimate is `left` itself (the common case in id maps)
        return left
    if left == upper_left:
        return up
    distance_left = abs(up - upper_left)
    distance_up = abs(left - upper_left)
    distance_upper_left = abs(left + up - 2 * upper_left)
    if distance_left <= distance_up and distance_left <= distance_upper_left:
        return left
    if distance_up <= distance_upper_left:
        return up
    return upper_left


@numba.njit(cache=True, nogil=True)
def _undo_rgb_row(kind, line, above, out):  # pragma: no cover - compiled
    """One RGB scanline: the pixel above comes from the previous id row, the left one stays in registers."""
    r = g = b = np.int64(0)
    if kind == 0:
        for x in range(out.size):
            i = 3 * x
            out[x] = np.int64(line[i]) | (np.int64(line[i + 1]) << 8) | (np.int64(line[i + 2]) << 16)
    elif kind == 1:
        for x in range(out.size):
            i = 3 * x
            r = (r + line[i]) & 255
            g = (g + line[i + 1]) & 255
            b = (b + line[i + 2]) & 255
            out[x] = r | (g << 8) | (b << 16)
    elif kind == 2:
        for x in range(out.size):
            i = 3 * x
            up = np.int64(above[x])
            r = ((up & 255) + line[i]) & 255
            g = (((up >> 8) & 255) + line[i + 1]) & 255
            b = ((up >> 16) + line[i + 2]) & 255
            out[x] = r | (g << 8) | (b << 16)
    elif kind == 3:
        for x in range(out.size):
            i = 3 * x
            up = np.int64(above[x])
            r = (((r + (up & 255)) >> 1) + line[i]) & 255
            g = (((g + ((up >> 8) & 255)) >> 1) + line[i + 1]) & 255
            b = (((b + (up >> 16)) >> 1) + line[i + 2]) & 255
            out[x] = r | (g << 8) | (b << 16)
    else:
        upper_left = np.int64(0)
        for x in range(out.size):
            i = 3 * x
            up = np.int64(above[x])
            if up == upper_left and line[i] == 0 and line[i + 1] == 0 and line[i + 2] == 0:
                out[x] = r | (g << 8) | (b << 16)  # flat: Paeth predicts the left pixel, unchanged
                continue
            r = (_paeth((r), (up & 255), (upper_left & 255)) + line[i]) & 255
            g = (_paeth((g), ((up >> 8) & 255), ((upper_left >> 8) & 255)) + line[i + 1]) & 255
            b = (_paeth((b), (up >> 16), (upper_left >> 16)) + line[i + 2]) & 255
            out[x] = r | (g << 8) | (b << 16)
            upper_left = up


@numba.njit(cache=True, nogil=True, inline="always")
def _undo_sub(line, current, channels):  # pragma: no cover - compiled
    current[:channels] = line[:channels]
    for i in range(channels, line.size):
        current[i] = line[i] + current[i - channels]


@numba.njit(cache=True, nogil=True, inline="always")
def _undo_average(line, previous, current, channels):  # pragma: no cover - compiled
    for i in range(line.size):
        left = np.int32(current[i - channels]) if i >= channels else np.int32(0)
        current[i] = line[i] + np.uint8((left + np.int32(previous[i])) >> 1)


@numba.njit(cache=True, nogil=True, inline="always")
def _undo_paeth(line, previous, current, channels):  # pragma: no cover - compiled
    for i in range(channels):
        current[i] = line[i] + previous[i]
    for i in range(channels, line.size):
        left = np.int32(current[i - channels])
        up = np.int32(previous[i])
        upper_left = np.int32(previous[i - channels])
        distance_left = abs(up - upper_left)
        distance_up = abs(left - upper_left)
        distance_upper_left = abs(left + up - 2 * upper_left)
        if distance_left <= distance_up and distance_left <= distance_upper_left:
            predicted = left
        elif distance_up <= distance_upper_left:
            predicted = up
        else:
            predicted = upper_left
        current[i] = line[i] + np.uint8(predicted)


@numba.njit(cache=True, nogil=True, inline="always")
def _write_id_row(row, width, channels, out):  # pragma: no cover - compiled
    for x in range(width):
        base = x * channels
        if channels <= 2:
            out[x] = row[base] * 65793  # grey v -> (v, v, v)
        else:
            out[x] = row[base] | (row[base + 1] << 8) | (row[base + 2] << 16)


@numba.njit(cache=True, nogil=True)
def _filter_id_rows(ids, kind, rows):  # pragma: no cover - compiled
    """Writes each id row as a PNG scanline: filter byte, then R, G, B filtered by `kind` (0 none, 1 sub, 2 up).

    Per channel the filtered byte is (this byte - reference byte) mod 256, which equals
    ((id >> shift) - (reference id >> shift)) mod 256, so the ids need not be split first.
    """
    height, width = ids.shape
    zero = np.zeros(width, ids.dtype)
    for y in range(height):
        current = ids[y]
        above = ids[y - 1] if y > 0 and kind == 2 else zero
        out = rows[y]
        out[0] = kind
        left = np.int64(0)
        for x in range(width):
            value = np.int64(current[x])
            reference = left if kind == 1 else np.int64(above[x])
            out[1 + 3 * x] = (value - reference) & 255
            out[2 + 3 * x] = ((value >> 8) - (reference >> 8)) & 255
            out[3 + 3 * x] = ((value >> 16) - (reference >> 16)) & 255
            left = value
