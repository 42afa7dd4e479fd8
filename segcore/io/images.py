"""Image bytes to RGB uint8 arrays: any mode converted, EXIF orientation applied, pixel bombs refused before decoding."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000  # 10,000 x 10,000; a 50,000 x 50,000 PNG of a few KB is refused unread


class ImageDecodeError(ValueError):
    """Bytes that are not a decodable image; ``status`` is the row status to record."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def decode_rgb(data: bytes, where: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decodes image bytes to RGB, upright, whatever the file's mode.

    CMYK, 16-bit, palette, greyscale and alpha images are converted (alpha is dropped: composited on black would
    invent content, so it is simply ignored); the EXIF orientation tag is applied so the image is labelled
    upright. The size is read from the header first and images above ``max_pixels`` are refused before any
    pixel is decoded.

    Args:
        data: the file's bytes.
        where: the image's source, for messages.
        max_pixels: the largest width * height accepted (Pillow's own guard, ``2 * Image.MAX_IMAGE_PIXELS``,
            still refuses anything larger than that).

    Returns:
        the image, read-only (copy it to write into it).  # (H, W, 3) uint8

    Raises:
        ImageDecodeError: status ``empty``, ``not_an_image``, ``too_large`` or ``decode_error``; the message
            names ``where``.
    """
    if not data:
        raise ImageDecodeError("empty", f"{where}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise ImageDecodeError("not_an_image", f"{where}: not an image Pillow can identify") from error
    except Image.DecompressionBombError as error:  # Pillow's own guard (2 x MAX_IMAGE_PIXELS) fires in open()
        raise ImageDecodeError("too_large", f"{where}: refused before decoding, above the limit of {max_pixels} "
                                            f"pixels ({error})") from error
    except Exception as error:  # anything else one file can make Pillow raise (a text chunk over its limit
        # raises ValueError) is that image's problem, never the shard's
        raise ImageDecodeError("decode_error", f"{where}: cannot read the image header: "
                                               f"{type(error).__name__}: {error}") from error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_large", f"{where}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
        )
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        if image.mode != "RGB":
            image = _to_rgb(image)
        return np.asarray(image)  # read-only, over Pillow's bytes: no further copy
    except Exception as error:  # OSError, ValueError, SyntaxError, DecompressionBombError, or whatever else one
        # malformed file makes a decoder raise: the image's row says so and the shard goes on
        raise ImageDecodeError("decode_error", f"{where}: cannot decode the {image.format} image: "
                                               f"{type(error).__name__}: {error}") from error


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any mode to 8-bit RGB; 16-bit and float greys are scaled to 0..255 rather than clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")
