"""Panoptic maps drawn for people: segments tinted in their category colour over the image, outlined and labelled.

``overlay`` and ``side_by_side`` are pure (numpy, Pillow); ``render_images`` reads an output's committed rows, their
source images and, when the job had any, their ground truth, and draws prediction | ground truth panels.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from segcore.categories import Categories, categories_from_json
from segcore.io import storage
from segcore.io.commit import MANIFEST, Output, committed_shards
from segcore.io.images import ImageDecodeError, decode_rgb
from segcore.io.shards import GROUND_TRUTH_EXTENSION, split_member_name
from segcore.io.sources import read_sources, split_source
from segcore.io.truth import load_ground_truth
from segcore.png import decode_ids

logger = logging.getLogger(__name__)

GREY = 128  # the canvas when the source image cannot be read
JITTER = 60  # thing instances: each channel moves up to this far from the category colour
BOUNDARY_COLOR = (255, 255, 255)
LABEL_BACKGROUND = (0, 0, 0, 150)  # RGBA: a dark translucent box keeps labels readable on any colour
UNKNOWN_COLOR = (160, 160, 160)  # segments of a category the job does not know
PANEL_TITLES = ("prediction", "ground truth")
MIN_SIDE = 320  # render_images enlarges smaller images by a whole factor, so labels stay legible


@dataclass(frozen=True)
class Rendered:
    """One rendered image: its output row's ``image_id`` and ``source``, and the drawing as PNG bytes."""

    image_id: str
    source: str
    png: bytes


# ----------------------------------------------------------------------------------------------- colours


def _mix(value: int) -> int:
    """A 32-bit integer hash (murmur3's finaliser): nearby segment ids get unrelated jitters."""
    value &= 0xFFFFFFFF
    value = ((value ^ (value >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    value = ((value ^ (value >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return value ^ (value >> 16)


def segment_color(segment_id: int, color: Sequence[int], isthing: bool) -> tuple[int, int, int]:
    """The fill colour of a segment: its category colour, moved per instance for things.

    The jitter is a hash of the segment id, so the same map always renders the same and instances of one
    class differ.
    """
    if not isthing:
        return tuple(int(c) for c in color)  # type: ignore[return-value]
    bits = _mix(int(segment_id) + 0x9E3779B9)
    offsets = [((bits >> shift) & 0xFF) % (2 * JITTER + 1) - JITTER for shift in (0, 8, 16)]
    return tuple(int(np.clip(c + o, 0, 255)) for c, o in zip(color, offsets))  # type: ignore[return-value]


def _describe(segment: Mapping, categories: Categories) -> tuple[tuple[int, int, int], str]:
    """A segment's fill colour and label text ("person 0.93"; the category id when the job does not know it)."""
    category_id = int(segment["category_id"])
    if category_id in categories:
        category = categories.by_id(category_id)
        isthing = bool(segment.get("isthing", category.isthing))
        color, name = segment_color(segment["id"], category.color, isthing), category.name
    else:
        color, name = UNKNOWN_COLOR, str(category_id)
    score = segment.get("score")
    if score is not None and not math.isnan(score):
        name = f"{name} {score:.2f}"
    return color, name


# ----------------------------------------------------------------------------------------------- drawing


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def font_size(height: int, width: int) -> int:
    """Label text height in pixels for an image: readable on thumbnails, in proportion on large images."""
    return max(11, round(min(height, width) / 28))


def _boundaries(id_map: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels on a segment boundary, ``thickness`` pixels wide.  # (H, W) bool"""
    edge = np.zeros(id_map.shape, dtype=bool)
    edge[:, 1:] |= id_map[:, 1:] != id_map[:, :-1]
    edge[1:, :] |= id_map[1:, :] != id_map[:-1, :]
    if thickness > 1:
        edge = ndimage.binary_dilation(edge, iterations=thickness - 1)
    return edge


def _fill(id_map: np.ndarray, colors: Mapping[int, tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's segment colour and whether it belongs to a listed segment.  # (H, W, 3) float32, (H, W) bool"""
    ids, inverse = np.unique(id_map, return_inverse=True)
    palette = np.zeros((len(ids), 3), dtype=np.float32)
    listed = np.zeros(len(ids), dtype=bool)
    for index, segment_id in enumerate(ids.tolist()):
        if segment_id in colors:
            palette[index], listed[index] = colors[segment_id], True
    inverse = inverse.reshape(id_map.shape)
    return palette[inverse], listed[inverse]


def _label_anchor(id_map: np.ndarray, segment: Mapping) -> tuple[int, int] | None:
    """The (x, y) of the segment pixel farthest from its border, searched inside its bbox; None when absent."""
    height, width = id_map.shape
    x, y, w, h = (int(v) for v in segment.get("bbox") or (0, 0, width, height))
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + max(w, 1), width), min(y + max(h, 1), height)
    mask = id_map[y0:y1, x0:x1] == segment["id"]
    if not mask.any():  # a bbox that does not hold the segment: search the whole map
        x0 = y0 = 0
        mask = id_map == segment["id"]
        if not mask.any():
            return None
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return x0 + int(col), y0 + int(row)


def _draw_labels(canvas: Image.Image, id_map: np.ndarray, labels: list[tuple[Mapping, str]]) -> Image.Image:
    """Draws each label centred on its segment, clamped inside the image; small segments' labels on top."""
    font = _font(font_size(canvas.height, canvas.width))
    layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    pad = max(1, font.size // 6)
    for segment, text in sorted(labels, key=lambda item: -int(item[0].get("area", 0))):
        anchor = _label_anchor(id_map, segment)
        if anchor is None:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        box_w, box_h = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(max(anchor[0] - box_w // 2, 0), max(canvas.width - box_w, 0))
        y = min(max(anchor[1] - box_h // 2, 0), max(canvas.height - box_h, 0))
        draw.rectangle((x, y, x + box_w - 1, y + box_h - 1), fill=LABEL_BACKGROUND)
        draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, 255))
    return Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")


def _canvas(image: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """The image under the overlay, resized to the map if needed, or plain grey.  # (H, W, 3) float32"""
    height, width = shape
    if image is None:
        return np.full((height, width, 3), GREY, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"Expected `image` to be (H, W, 3) uint8, but got shape {image.shape}")
    if image.shape[:2] != shape:
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return image.astype(np.float32)


def overlay(
    image: np.ndarray | None,
    id_map: np.ndarray,
    segments: Sequence[Mapping],
    categories: Categories,
    alpha: float = 0.55,
    labels: bool = True,
) -> np.ndarray:
    """Draws a panoptic map over its image: fills, boundaries, and a label per segment.

    Each segment is tinted toward its category colour (thing instances jittered per segment id, so instances
    differ and the same map always renders the same); boundaries are white; each segment gets its category name,
    with its score when it has one ("person 0.93"), at its most interior pixel. Ids of the map that no segment
    lists (0, VOID) are left untinted.

    Args:
        image: the photo, or None (unreadable source): drawn on grey.  # (H, W, 3) uint8; resized if not the map's size
        id_map: segment ids.  # (H, W) uint32
        segments: dicts with ``id``, ``category_id``, optional ``isthing``, ``bbox`` [x, y, w, h], ``area``,
            ``score`` (output rows' segments or COCO ``segments_info``).
        categories: the job's categories (colours and names).
        alpha: opacity of the fill, in [0, 1].
        labels: draw the labels (the fills and boundaries alone otherwise).

    Returns:
        The drawing.  # (H, W, 3) uint8

    Raises:
        ValueError: ``id_map`` is not 2-D, ``image`` is not (H, W, 3), or ``alpha`` is outside [0, 1].
    """
    if id_map.ndim != 2:
        raise ValueError(f"Expected `id_map` to be (H, W), but got shape {id_map.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected `alpha` to be in [0, 1], but got {alpha}")
    described = [(segment, *_describe(segment, categories)) for segment in segments]
    fill, listed = _fill(id_map, {int(s["id"]): color for s, color, _ in described})
    drawing = _canvas(image, id_map.shape)
    drawing[listed] = drawing[listed] * (1.0 - alpha) + fill[listed] * alpha
    thickness = max(1, round(max(id_map.shape) / 400))
    drawing[_boundaries(id_map, thickness)] = BOUNDARY_COLOR
    drawing = np.clip(np.rint(drawing), 0, 255).astype(np.uint8)
    if not labels:
        return drawing
    return np.asarray(_draw_labels(Image.fromarray(drawing), id_map, [(s, text) for s, _, text in described]))


def side_by_side(
    pred: np.ndarray, gt: np.ndarray | None, titles: Sequence[str] = PANEL_TITLES
) -> np.ndarray:
    """Panels left to right (prediction | ground truth), each under its title, on white.

    Args:
        pred: the prediction's drawing.  # (H, W, 3) uint8
        gt: the ground truth's drawing, or None for the prediction alone.  # (H2, W2, 3) uint8
        titles: one title per panel.

    Returns:
        The panels: width ``W + gap + W2`` (``gap = max(4, W // 50)``), height ``title strip + max(H, H2)``.
        # (H', W', 3) uint8
    """
    panels = [pred] if gt is None else [pred, gt]
    if len(titles) < len(panels):
        raise ValueError(f"Expected a title per panel ({len(panels)}), but got {list(titles)}")
    font = _font(font_size(pred.shape[0], pred.shape[1]))
    strip = font.size + 2 * max(2, font.size // 3)
    gap = max(4, pred.shape[1] // 50)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    sheet = Image.new("RGB", (width, strip + max(p.shape[0] for p in panels)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    x = 0
    for panel, title in zip(panels, titles):
        sheet.paste(Image.fromarray(panel), (x, strip))
        draw.text((x + 2, strip // 2), title, font=font, fill=(40, 40, 40), anchor="lm")
        x += panel.shape[1] + gap
    return np.asarray(sheet)


def encode_png(drawing: np.ndarray) -> bytes:
    """PNG bytes of an RGB drawing.  # (H, W, 3) uint8"""
    buffer = io.BytesIO()
    Image.fromarray(drawing).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- an output's images


def render_images(
    output_uri: str,
    image_ids: Sequence[str] | None = None,
    sample: int | None = None,
    storage_options: Mapping | None = None,
    seed: int = 0,
) -> list[Rendered]:
    """Renders images of a jobs.label output: prediction overlays, beside the ground truth when the job had one.

    Rows come from committed shards only. Ground truth is the manifest's ``ground_truth`` (JSON + PNG folder),
    else a tar sample's own ``<key>.panoptic.png`` with ``segments_info`` in its ``.json`` member. An image whose
    source cannot be read is drawn on grey.

    Args:
        output_uri: the output (local path or fsspec URI).
        image_ids: the rows to render, in this order; with ``sample`` None and this None: every row with a map.
        sample: render this many rows with a map, drawn with ``seed`` (sorted by image id).
        storage_options: fsspec options for the output, the sources and the ground truth.
        seed: the sample's seed.

    Returns:
        One ``Rendered`` per image, as PNG.

    Raises:
        ValueError: no manifest at ``output_uri``; both ``image_ids`` and ``sample``; ``sample`` < 1; image ids
            the committed shards do not hold, or rows without a map (the message lists them).
    """
    if image_ids is not None and sample is not None:
        raise ValueError("Expected `image_ids` or `sample`, but got both")
    if sample is not None and sample < 1:
        raise ValueError(f"Expected `sample` to be a positive int, but got {sample!r}")
    output = Output.open(output_uri, storage_options)
    manifest = read_manifest(output, output_uri)
    index = index_rows(output)
    chosen = choose_images(index, image_ids, sample, seed)
    rows = read_rows(output, index, chosen)
    return draw_rows([rows[image_id] for image_id in chosen], manifest, storage_options)


def read_manifest(output: Output, output_uri: str) -> dict:
    """The manifest of an output.

    Raises:
        ValueError: there is none (not a jobs.label output).
    """
    path = output.path(MANIFEST)
    if not output.fs.exists(path):
        raise ValueError(f"Expected a jobs.label output with {MANIFEST} at {output_uri}, but found none")
    return json.loads(output.fs.cat_file(path))


def index_rows(output: Output, shard_ids: Sequence[str] | None = None) -> dict[str, tuple[str, bool]]:
    """image_id -> (shard id, has a map) over ``shard_ids`` (None: every committed shard), reading two small
    columns only."""
    index: dict[str, tuple[str, bool]] = {}
    for shard_id in sorted(committed_shards(output)) if shard_ids is None else shard_ids:
        with output.fs.open(output.data_path(shard_id), "rb") as file:
            table = pq.read_table(file, columns=["image_id", "width"])
        for image_id, width in zip(table["image_id"].to_pylist(), table["width"].to_pylist()):
            index.setdefault(image_id, (shard_id, width is not None))
    return index


def choose_images(
    index: Mapping[str, tuple[str, bool]], image_ids: Sequence[str] | None, sample: int | None, seed: int
) -> list[str]:
    """The image ids to render: those asked for (checked), a seeded sample, or every row with a map.

    Raises:
        ValueError: asked-for ids that are unknown or have no map (listed).
    """
    if image_ids is None:
        mapped = sorted(image_id for image_id, (_, has_map) in index.items() if has_map)
        if sample is None or sample >= len(mapped):
            return mapped
        return sorted(random.Random(seed).sample(mapped, sample))
    unknown = [image_id for image_id in image_ids if image_id not in index]
    if unknown:
        raise ValueError(f"Expected image ids of the output's committed shards, but these are unknown: "
                         f"{_listed(unknown)}")
    unmapped = [image_id for image_id in image_ids if not index[image_id][1]]
    if unmapped:
        raise ValueError(f"Expected labelled images, but these have no map (see errors/): {_listed(unmapped)}")
    return list(dict.fromkeys(image_ids))


def _listed(ids: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def read_rows(output: Output, index: Mapping[str, tuple[str, bool]], image_ids: Sequence[str]) -> dict[str, dict]:
    """The output rows of ``image_ids``, reading each shard that holds some of them once."""
    by_shard: dict[str, list[str]] = {}
    for image_id in image_ids:
        by_shard.setdefault(index[image_id][0], []).append(image_id)
    rows: dict[str, dict] = {}
    for shard_id, wanted in by_shard.items():
        with output.fs.open(output.data_path(shard_id), "rb") as file:
            table = pq.read_table(file)
        table = table.filter(pc.is_in(table["image_id"], value_set=pa.array(wanted, pa.string())))
        for row in table.to_pylist():
            rows.setdefault(row["image_id"], row)
    return rows


def draw_rows(rows: Sequence[Mapping], manifest: Mapping, storage_options: Mapping | None = None) -> list[Rendered]:
    """Draws output rows (with maps) as PNG: see :func:`drawings`."""
    return [Rendered(row["image_id"], row["source"], encode_png(drawing))
            for row, drawing in zip(rows, drawings(rows, manifest, storage_options))]


def drawings(rows: Sequence[Mapping], manifest: Mapping, storage_options: Mapping | None = None) -> list[np.ndarray]:
    """Each row's overlay over its source image, beside its ground truth's when it has one.

    Images whose shorter side is below ``MIN_SIDE`` are enlarged by a whole factor first.

    Returns:
        One drawing per row.  # (H, W, 3) uint8 each
    """
    categories = categories_from_json(manifest["categories"])
    images = read_images([row["source"] for row in rows], storage_options)
    truths = read_truths(rows, manifest, storage_options)
    drawn = []
    for row in rows:
        id_map = decode_ids(row["panoptic_png"])
        factor = max(1, math.ceil(MIN_SIDE / min(id_map.shape)))
        image = enlarge_image(images.get(row["source"]), id_map.shape, factor)
        drawing = overlay(image, *enlarge_map(id_map, row["segments"], factor), categories)
        truth = truths.get(row["image_id"])
        if truth is not None:
            drawing = side_by_side(drawing, overlay(image, *enlarge_map(*truth, factor), categories))
        drawn.append(drawing)
    return drawn


def enlarge_image(image: np.ndarray | None, shape: tuple[int, int], factor: int) -> np.ndarray | None:
    """The image at ``factor`` times the map's ``shape`` (bilinear), or None.  # (H * f, W * f, 3) uint8"""
    if image is None or (factor == 1 and image.shape[:2] == shape):
        return image
    size = (shape[1] * factor, shape[0] * factor)
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def enlarge_map(id_map: np.ndarray, segments: Sequence[Mapping], factor: int) -> tuple[np.ndarray, list]:
    """An id map repeated ``factor`` times along both axes, and its segments with bboxes and areas to match."""
    if factor == 1:
        return id_map, list(segments)
    enlarged = [{**s, "bbox": [int(v) * factor for v in s["bbox"]] if s.get("bbox") else None,
                 "area": int(s.get("area") or 0) * factor * factor} for s in segments]
    return np.repeat(np.repeat(id_map, factor, axis=0), factor, axis=1), enlarged


def read_images(sources: Sequence[str], storage_options: Mapping | None = None) -> dict[str, np.ndarray]:
    """source -> decoded RGB image, for the sources that can be read and decoded (the others are logged)."""
    found = read_sources(sources, storage_options, missing_ok=True)
    images = {}
    for source in dict.fromkeys(sources):
        if source not in found:
            logger.warning("drawing %s on grey: the source image is not there", source)
            continue
        try:
            images[source] = decode_rgb(found[source], source)
        except ImageDecodeError as error:
            logger.warning("drawing %s on grey: %s", source, error)
    return images


def read_truths(
    rows: Sequence[Mapping], manifest: Mapping, storage_options: Mapping | None = None
) -> dict[str, tuple[np.ndarray, list]]:
    """image_id -> (ground-truth id map, segments_info) for the rows that have ground truth.

    From the manifest's ``ground_truth`` when the job had one, else from tar samples' embedded members.
    """
    spec = manifest.get("ground_truth")
    if spec:
        truth = load_ground_truth(spec["json"], spec.get("dir"), storage_options)
        found = {}
        for row in rows:
            ref = truth.lookup(row["image_id"])
            if ref is not None:
                found[row["image_id"]] = (decode_ids(storage.read_bytes(ref.png_uri, storage_options)),
                                          list(ref.segments_info))
        return found
    tar_rows = [row for row in rows if split_source(row["source"])[0] == "tar"]
    return read_embedded_truths(tar_rows, storage_options)


def read_embedded_truths(rows: Sequence[Mapping], storage_options: Mapping | None = None) -> dict:
    """image_id -> (id map, segments_info) from tar samples' ``<key>.panoptic.png`` and ``<key>.json`` members."""
    wanted = {}
    for row in rows:
        _, uri, member = split_source(row["source"])
        key = split_member_name(member)[0]
        wanted[row["image_id"]] = (f"{uri}#{key}.{GROUND_TRUTH_EXTENSION}", f"{uri}#{key}.json")
    members = read_sources([name for pair in wanted.values() for name in pair], storage_options, missing_ok=True)
    found = {}
    for image_id, (png_source, json_source) in wanted.items():
        if png_source in members and json_source in members:
            segments = json.loads(members[json_source]).get("segments_info")
            if segments is not None:
                found[image_id] = (decode_ids(members[png_source]), list(segments))
    return found
