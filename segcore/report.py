"""report.html: a labeling job's metrics as one self-contained page (tables, plots and overlays inlined).

Every image is a base64 ``data:`` URI and the CSS is inline, so the file can be mailed, archived or opened from a
bucket with nothing else. Each section appears only when its key is in the metrics document; the label
statistics always do. Plots are drawn with matplotlib's Agg canvas on ``Figure`` objects of their own (no pyplot
state, nothing left open).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from segcore.categories import Categories
from segcore.io.commit import Output, committed_shards, write_whole
from segcore.render import choose_images, drawings, index_rows, read_manifest, read_rows

logger = logging.getLogger(__name__)

DPI = 80
THING_COLOR, STUFF_COLOR = "#4c72b0", "#dd8452"
TOP_CLASSES = 20  # the label-statistics plots show the classes with most pixels
SIZES = ("small", "medium", "large")
GROUPS = ("All", "Things", "Stuff")
JPEG_QUALITY = 85  # gallery overlays


@dataclass(frozen=True)
class GalleryItem:
    """One gallery picture.

    Attributes:
        image_id: the output row's image id.
        image: encoded picture (PNG or JPEG bytes).
        caption: a line under the picture.
        group: the gallery row it belongs to: "worst", "best" or "sample".
        mime: the picture's type, for its data URI.
    """

    image_id: str
    image: bytes
    caption: str = ""
    group: str = "sample"
    mime: str = "image/png"


CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; background: #f6f7f9;
       margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 20px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 18px 0 8px; color: #444; }
.meta { color: #666; font-size: 13px; margin-bottom: 18px; word-break: break-all; }
section { background: #fff; border: 1px solid #e3e5e8; border-radius: 8px; padding: 18px 22px; margin: 18px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #e3e5e8; border-radius: 8px; padding: 10px 16px; min-width: 120px; }
.card b { display: block; font-size: 22px; } .card span { color: #666; font-size: 12px; text-transform: uppercase; }
table { border-collapse: collapse; font-size: 13.5px; margin: 4px 0 10px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eceef1; text-align: right; white-space: nowrap; }
th { background: #f0f2f5; font-weight: 600; } .name { text-align: left; }
td.src { text-align: left; white-space: normal; word-break: break-all; font-size: 12.5px; color: #555; }
tr:nth-child(even) td { background: #fafbfc; }
.scroll { max-height: 420px; overflow: auto; display: inline-block; border: 1px solid #eceef1; }
.scroll table { margin: 0; } .scroll th { position: sticky; top: 0; }
.plot { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.row { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.note { color: #666; font-size: 13px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
figure { margin: 0; } figure img { width: 100%; height: auto; border: 1px solid #ddd; border-radius: 4px; }
figcaption { font-size: 12.5px; color: #555; margin-top: 4px; word-break: break-all; }
"""


# ----------------------------------------------------------------------------------------------- small helpers


def _number(value, digits: int = 1) -> str:
    """A fraction as percent with ``digits`` decimals; "–" for None, NaN and COCO's -1 (undefined)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == -1:
        return "–"
    return f"{100 * value:.{digits}f}"


def _count(value) -> str:
    return "–" if value is None else f"{int(value):,}"


def _name(categories: Categories, category_id) -> str:
    """A category's name; its id when the job's categories do not hold it."""
    category_id = int(category_id)
    return categories.by_id(category_id).name if category_id in categories else str(category_id)


def _by_int_key(mapping: Mapping) -> dict[int, object]:
    """A mapping with int keys (metrics.json read back has string keys)."""
    return {int(key): value for key, value in mapping.items()}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], scroll: bool = False, names: int = 1,
           source: int | None = None) -> str:
    """An HTML table of escaped cells: the first ``names`` columns left-aligned, column ``source`` as a path."""
    def cell(index: int, value) -> str:
        css = " class=src" if index == source else " class=name" if index < names else ""
        return f"<td{css}>{html.escape(str(value))}</td>"

    head = "".join(f'<th{" class=name" if i < names or i == source else ""}>{html.escape(h)}</th>'
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>' if scroll and len(rows) > 14 else table


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(data: bytes, alt: str, mime: str = "image/png", css: str = "plot") -> str:
    return f'<img class="{css}" alt="{html.escape(alt)}" src="{_data_uri(data, mime)}">'


def _figure(height_in: float, width_in: float = 11.0) -> Figure:
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _png(figure: Figure) -> bytes:
    """The figure as PNG bytes; the figure is cleared afterwards (it was never registered with pyplot)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    figure.clear()
    return buffer.getvalue()


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>{body}</section>'


# ----------------------------------------------------------------------------------------------- panoptic quality


def _classes_with_data(document: Mapping) -> list[int]:
    """The categories PQ counted (tp + fp + fn > 0), from per_class_counts when present, else non-zero values."""
    per_class = _by_int_key(document["pq"].get("per_class", {}))
    counts = _by_int_key(document.get("per_class_counts", {}))
    if counts:
        return [c for c in per_class if c in counts and counts[c]["tp"] + counts[c]["fp"] + counts[c]["fn"] > 0]
    return [c for c, row in per_class.items() if any(row[k] for k in ("pq", "sq", "rq"))]


def per_class_pq_plot(document: Mapping, categories: Categories) -> bytes | None:
    """Horizontal bars of PQ, SQ and RQ per class (percent), best PQ on top; None without counted classes."""
    per_class = _by_int_key(document["pq"].get("per_class", {}))
    classes = sorted(_classes_with_data(document), key=lambda c: (per_class[c]["pq"], -c))
    if not classes:
        return None
    figure = _figure(1.2 + 0.22 * len(classes), 9.5)
    axes = figure.subplots(1, 3, sharey=True)
    positions = np.arange(len(classes))
    colors = [THING_COLOR if c in categories and categories.by_id(c).isthing else STUFF_COLOR for c in classes]
    for ax, metric in zip(axes, ("pq", "sq", "rq")):
        ax.barh(positions, [100 * per_class[c][metric] for c in classes], color=colors, height=0.75)
        ax.set_title(metric.upper())
        ax.set_xlim(0, 100)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, [_name(categories, c) for c in classes], fontsize=9)
    axes[0].set_ylim(-0.6, len(classes) - 0.4)
    return _png(figure)


def pq_section(document: Mapping, categories: Categories) -> str:
    """PQ / SQ / RQ for All, Things and Stuff, images counted, and the per-class chart and table."""
    pq = document["pq"]
    rows = [[g, _number(pq[g]["pq"]), _number(pq[g]["sq"]), _number(pq[g]["rq"]), _count(pq[g]["n"])]
            for g in GROUPS if g in pq]
    body = _table(["", "PQ", "SQ", "RQ", "classes"], rows)
    notes = []
    if "images" in document:
        notes.append(f"{document['images']:,} images with ground truth evaluated.")
    if document.get("truth_unevaluated"):
        notes.append(f"{document['truth_unevaluated']:,} images with ground truth were left out: the image or its "
                     "ground truth was unusable (see errors/).")
    body += "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    plot = per_class_pq_plot(document, categories)
    if plot is not None:
        per_class = _by_int_key(pq["per_class"])
        classes = sorted(_classes_with_data(document), key=lambda c: -per_class[c]["pq"])
        table = _table(["class", "PQ", "SQ", "RQ"], [
            [_name(categories, c), _number(per_class[c]["pq"]), _number(per_class[c]["sq"]),
             _number(per_class[c]["rq"])] for c in classes], scroll=True)
        body += (f"<h3>Per class (things blue, stuff orange)</h3><div class=row>"
                 f"{_img(plot, 'per-class PQ, SQ and RQ')}<div>{table}</div></div>")
    return _section("pq", "Panoptic Quality", body)


def pq_by_size_plot(by_size: Mapping) -> bytes:
    """Grouped bars: PQ of All, Things and Stuff per segment size."""
    sizes = [s for s in SIZES if s in by_size]
    figure = _figure(2.8, 7.0)
    ax = figure.subplots()
    width = 0.26
    for offset, (group, color) in enumerate(zip(GROUPS, ("#55a868", THING_COLOR, STUFF_COLOR))):
        values = [100 * by_size[s].get(group, {}).get("pq", 0.0) for s in sizes]
        ax.bar(np.arange(len(sizes)) + (offset - 1) * width, values, width, label=group, color=color)
    ax.set_xticks(np.arange(len(sizes)), sizes)
    ax.set_ylabel("PQ")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", ncols=3, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def pq_by_size_section(document: Mapping) -> str:
    """PQ, SQ, RQ and classes counted per segment size (COCO's small / medium / large)."""
    by_size = document["pq_by_size"]
    rows = []
    for size in (s for s in SIZES if s in by_size):
        for group in (g for g in GROUPS if g in by_size[size]):
            row = by_size[size][group]
            counted = row.get("n") != 0  # no class of the group has segments of this size
            rows.append([f"{size} · {group}", *(_number(row.get(k)) if counted else "–" for k in ("pq", "sq", "rq")),
                         _count(row.get("n"))])
    body = _table(["size · group", "PQ", "SQ", "RQ", "classes"], rows)
    plot = _img(pq_by_size_plot(by_size), "PQ by size")
    return _section("pq-by-size", "PQ by segment size", f'<div class="row"><div>{body}</div>{plot}</div>')


# ----------------------------------------------------------------------------------------------- other metrics


def semantic_section(document: Mapping, categories: Categories) -> str:
    """mIoU, pixel accuracy, mean accuracy, fwIoU, and IoU / accuracy of each class with ground-truth pixels."""
    scores = document["semantic"]
    body = _table(["mIoU", "pixel accuracy", "mean accuracy", "fwIoU", "classes", "pixels"], names=0, rows=[[
        _number(scores["miou"]), _number(scores["pixel_accuracy"]), _number(scores["mean_accuracy"]),
        _number(scores["fwiou"]), _count(scores.get("classes")), _count(scores.get("pixels"))]])
    per_class = _by_int_key(scores.get("per_class", {}))
    rows = [[row.get("name") or _name(categories, c), _number(row["iou"]), _number(row["accuracy"]),
             _count(row.get("gt_pixels")), _count(row.get("pred_pixels"))]
            for c, row in per_class.items() if row.get("iou") is not None]
    if rows:
        body += "<h3>Per class</h3>" + _table(["class", "IoU", "accuracy", "gt pixels", "predicted pixels"], rows,
                                              scroll=True)
    return _section("semantic", "Semantic segmentation", body)


def instances_section(document: Mapping, categories: Categories) -> str:
    """COCO instance AP of the thing segments (AP, AP50, AP75, by size) and AP per class."""
    scores = document["instances"]
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    body = _table(list(names), [[_number(scores.get(n)) for n in names]], names=0)
    recalls = [name for name in ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl") if name in scores]
    if recalls:
        body += _table(recalls, [[_number(scores[n]) for n in recalls]], names=0)
    counts = [f"{scores[k]:,} {label}" for k, label in (("images", "images"), ("gt", "ground-truth instances"),
                                                        ("dt", "detections")) if k in scores]
    if counts:
        body += f'<p class="note">{html.escape(", ".join(counts))}; – where AP is undefined.</p>'
    per_class = _by_int_key(scores.get("per_class", {}))
    rows = [[_name(categories, c), _number(ap)] for c, ap in sorted(per_class.items(), key=lambda kv: -kv[1])]
    if rows:
        body += "<h3>Per class</h3>" + _table(["class", "AP"], rows, scroll=True)
    return _section("instances", "Instance segmentation (things)", body)


def per_image_section(document: Mapping) -> str:
    """The images with the lowest and the highest PQ."""
    body = ""
    for key, title in (("worst", "Lowest PQ"), ("best", "Highest PQ")):
        entries = document["per_image"].get(key) or []
        rows = [[e.get("image_id", ""), _number(e.get("pq")), _number(e.get("sq")), _number(e.get("rq")),
                 _count(e.get("tp")), _count(e.get("fp")), _count(e.get("fn")), e.get("source", "")]
                for e in entries]
        if rows:
            body += f"<h3>{title}</h3>" + _table(["image", "PQ", "SQ", "RQ", "tp", "fp", "fn", "source"], rows,
                                                 scroll=True, source=7)
    return _section("per-image", "Images", body or '<p class="note">No images.</p>')


def confusion_section(document: Mapping, categories: Categories) -> str:
    """Which categories the ground truth's segments were predicted as, most frequent first."""
    pairs = sorted(document["category_confusion"], key=lambda p: (-p["count"], p["gt"], p["pred"]))
    rows = [[_name(categories, p["gt"]), _name(categories, p["pred"]), _count(p["count"])] for p in pairs]
    body = _table(["ground truth", "predicted as", "count"], rows, scroll=True, names=2) if rows else ""
    return _section("confusion", "Category confusion", body or '<p class="note">No confusions.</p>')


# ----------------------------------------------------------------------------------------------- label statistics


def class_frequency_plot(stats: Mapping, categories: Categories) -> bytes | None:
    """Images, segments and pixel share of the classes with most pixels (top ``TOP_CLASSES``)."""
    per_class = _by_int_key(stats.get("per_class", {}))
    present = [c for c, row in per_class.items() if row["segments"]]
    top = sorted(present, key=lambda c: (-per_class[c]["pixels"], c))[:TOP_CLASSES][::-1]
    if not top:
        return None
    figure = _figure(1.2 + 0.24 * len(top))
    axes = figure.subplots(1, 3, sharey=True)
    positions = np.arange(len(top))
    colors = [THING_COLOR if per_class[c].get("isthing") else STUFF_COLOR for c in top]
    for ax, (key, title, scale) in zip(axes, (("pixel_fraction", "pixels %", 100), ("segments", "segments", 1),
                                              ("images", "images", 1))):
        ax.barh(positions, [scale * per_class[c][key] for c in top], color=colors, height=0.75)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, [per_class[c].get("name") or _name(categories, c) for c in top], fontsize=9)
    axes[0].set_ylim(-0.6, len(top) - 0.4)
    return _png(figure)


def histograms_plot(stats: Mapping) -> bytes | None:
    """Segments per area bin (powers of two) and images per number of things."""
    sizes, things = stats.get("size_histogram") or {}, stats.get("things_per_image") or {}
    if not sizes and not things:
        return None
    figure = _figure(3.0)
    left, right = figure.subplots(1, 2, width_ratios=(3, 2))
    labels = [key.replace("[2^", "2^").split(",")[0] for key in sizes]
    left.bar(np.arange(len(sizes)), list(sizes.values()), color=THING_COLOR)
    left.set_xticks(np.arange(len(sizes)), labels, rotation=45, fontsize=8)
    left.set_title("segments by area (pixels, from)")
    counts = sorted((int(k), v) for k, v in things.items())
    right.bar([k for k, _ in counts], [v for _, v in counts], color=STUFF_COLOR)
    right.set_title("images by number of things")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    return _png(figure)


def stats_section(document: Mapping, categories: Categories) -> str:
    """Totals and statuses, class frequencies, segment areas and things per image."""
    stats = document["stats"]
    body = _table(["images", "labelled", "segments", "pixels", "unlabelled pixels %"], names=0, rows=[[
        _count(stats["images"]), _count(stats.get("labelled_images")), _count(stats.get("segments")),
        _count(stats.get("pixels")), _number(stats.get("unlabelled_fraction"))]])
    statuses = stats.get("statuses") or {}
    body += "<h3>Images by status</h3>" + _table(["status", "images"], [[k, _count(v)] for k, v in statuses.items()])
    frequency = class_frequency_plot(stats, categories)
    if frequency is not None:
        body += (f"<h3>Classes with most pixels (top {TOP_CLASSES}; things blue, stuff orange)</h3>"
                 + _img(frequency, "class frequencies"))
    histograms = histograms_plot(stats)
    if histograms is not None:
        body += "<h3>Segment areas and things per image</h3>" + _img(histograms, "histograms")
    return _section("stats", "Label statistics", body)


# ----------------------------------------------------------------------------------------------- the page


def gallery_section(gallery: Sequence[GalleryItem], note: str = "") -> str:
    """The overlays, grouped: worst and best PQ with ground truth, else a sample."""
    titles = {"worst": "Lowest PQ", "best": "Highest PQ", "sample": "Sample"}
    body = f'<p class="note">{html.escape(note)}</p>' if note else ""
    for group in dict.fromkeys([*titles, *(item.group for item in gallery)]):
        items = [item for item in gallery if item.group == group]
        if not items:
            continue
        figures = "".join(
            f"<figure>{_img(item.image, f'overlay of {item.image_id}', item.mime, css='overlay')}"
            f"<figcaption>{html.escape(item.caption or item.image_id)}</figcaption></figure>" for item in items)
        body += f'<h3>{html.escape(titles.get(group, group))}</h3><div class="gallery">{figures}</div>'
    return _section("gallery", "Gallery", body or '<p class="note">No images to show.</p>')


def summary_cards(document: Mapping) -> str:
    """The headline numbers: images, segments, and PQ, mIoU and AP when present."""
    stats = document["stats"]
    cards = [("images", _count(stats["images"])), ("segments", _count(stats.get("segments")))]
    if "pq" in document:
        cards.append(("PQ", _number(document["pq"]["All"]["pq"])))
    if "semantic" in document:
        cards.append(("mIoU", _number(document["semantic"]["miou"])))
    if "instances" in document:
        cards.append(("AP", _number(document["instances"].get("AP"))))
    return '<div class="cards">' + "".join(
        f"<div class=card><b>{html.escape(v)}</b><span>{html.escape(k)}</span></div>" for k, v in cards) + "</div>"


def report_html(
    document: Mapping,
    categories: Categories,
    gallery: Sequence[GalleryItem] = (),
    title: str = "Labeling report",
    meta: Mapping[str, object] | None = None,
    gallery_note: str = "",
) -> str:
    """The report page: headline numbers, then a section per metric in ``document``, the gallery, statistics.

    Args:
        document: metrics.json's content; ``"stats"`` is required, every other section appears when its key
            (``pq``, ``pq_by_size``, ``semantic``, ``instances``, ``per_image``, ``category_confusion``) does.
        categories: the job's categories (names; things and stuff).
        gallery: overlays to show.
        title: the page's heading.
        meta: lines under the heading (e.g. output, model, input), shown as ``key: value``.
        gallery_note: a line above the gallery (e.g. why it is empty).

    Returns:
        A complete HTML document with no external resources.

    Raises:
        ValueError: ``document`` has no ``"stats"``.
    """
    if "stats" not in document:
        raise ValueError(f"Expected a metrics document with 'stats', but got keys {sorted(document)}")
    sections = [summary_cards(document)]
    if "pq" in document:
        sections.append(pq_section(document, categories))
    if "pq_by_size" in document:
        sections.append(pq_by_size_section(document))
    if "instances" in document:
        sections.append(instances_section(document, categories))
    if "semantic" in document:
        sections.append(semantic_section(document, categories))
    if "category_confusion" in document:
        sections.append(confusion_section(document, categories))
    if "per_image" in document:
        sections.append(per_image_section(document))
    sections.append(gallery_section(gallery, gallery_note))
    sections.append(stats_section(document, categories))
    lines = "<br>".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in (meta or {}).items())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body><main>"
            f"<h1>{html.escape(title)}</h1><div class=meta>{lines}</div>\n" + "\n".join(sections)
            + "\n</main></body></html>\n")


# ----------------------------------------------------------------------------------------------- an output's report


def gallery_choice(document: Mapping, gallery_size: int) -> list[tuple[str, str, str]]:
    """(image_id, group, caption) of the gallery: the worst and best PQ images, or [] to show a sample."""
    chosen: dict[str, tuple[str, str, str]] = {}
    for group in ("worst", "best"):
        for entry in (document.get("per_image") or {}).get(group, [])[:gallery_size]:
            caption = (f"{entry['image_id']} · PQ {_number(entry.get('pq'))} · tp {_count(entry.get('tp'))} "
                       f"fp {_count(entry.get('fp'))} fn {_count(entry.get('fn'))}")
            chosen.setdefault(entry["image_id"], (entry["image_id"], group, caption))
    return list(chosen.values())


def encode_jpeg(drawing: np.ndarray) -> bytes:
    """JPEG bytes of a drawing: a photo with overlays is several times smaller than as PNG.  # (H, W, 3) uint8"""
    buffer = io.BytesIO()
    Image.fromarray(drawing).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def build_gallery(output: Output, document: Mapping, manifest: Mapping, storage_options: Mapping | None,
                  gallery_size: int, seed: int = 0, shard_ids: Sequence[str] | None = None) -> list[GalleryItem]:
    """Overlays of the worst and best PQ images (``per_image``), else of a seeded sample of ``gallery_size``.

    Only the data files of the shards that hold the chosen images are opened: the per-image records name their
    shard; a sample is drawn from ``gallery_size`` seeded shards of ``shard_ids`` (None: the committed shards).
    Records of an older reduce, without shards, fall back to an index of every shard's image ids.
    """
    if gallery_size < 1:
        return []
    if "per_image" in document:
        chosen = gallery_choice(document, gallery_size)
        shards = {entry["image_id"]: entry.get("shard") for group in ("worst", "best")
                  for entry in document["per_image"].get(group, [])}
        if all(shards.get(image_id) for image_id, _, _ in chosen):
            index = {image_id: (shards[image_id], True) for image_id, _, _ in chosen}
        else:
            index = index_rows(output)
        chosen = [c for c in chosen if index.get(c[0], ("", False))[1]]  # ids no committed shard holds: left out
    else:
        shard_ids = sorted(committed_shards(output) if shard_ids is None else shard_ids)
        picked = random.Random(seed).sample(shard_ids, min(gallery_size, len(shard_ids)))
        index = index_rows(output, sorted(picked))
        chosen = [(image_id, "sample", image_id) for image_id in choose_images(index, None, gallery_size, seed)]
    rows = read_rows(output, index, [image_id for image_id, _, _ in chosen])
    chosen = [c for c in chosen if c[0] in rows and rows[c[0]].get("panoptic_png") is not None]
    drawn = drawings([rows[image_id] for image_id, _, _ in chosen], manifest, storage_options)
    return [GalleryItem(image_id, encode_jpeg(drawing), caption, group, "image/jpeg")
            for (image_id, group, caption), drawing in zip(chosen, drawn)]


def write_html_report(
    output: Output, document: Mapping, categories: Categories, storage_options: Mapping | None = None,
    gallery_size: int = 4, shard_ids: Sequence[str] | None = None,
) -> None:
    """Writes ``<output>/report.html``: the metrics document and a gallery of overlays.

    With ``per_image`` in the document the gallery shows the ``gallery_size`` worst and best images by PQ, else a
    seeded sample of ``gallery_size`` images. A gallery that cannot be drawn (a source or ground truth that
    cannot be read) leaves the page without it, with a note saying why, rather than failing the reduce.

    Raises:
        ValueError: the output has no manifest.
        segcore.io.retry.RetriesExhausted, OSError: the page could not be written.
    """
    uri = output.fs.unstrip_protocol(output.root)
    manifest = read_manifest(output, uri)
    meta = {"output": uri, **{key: manifest[key] for key in ("model", "input", "created") if manifest.get(key)}}
    note = ""
    try:
        gallery = build_gallery(output, document, manifest, storage_options, gallery_size, shard_ids=shard_ids)
    except (OSError, ValueError) as error:
        logger.warning("report.html without a gallery: %s", error)
        gallery, note = [], f"The gallery could not be drawn: {error}"
    page = report_html(document, categories, gallery, meta=meta, gallery_note=note)
    write_whole(output, output.path("report.html"), page.encode())
    logger.info("report: %s (%d gallery images)", output.path("report.html"), len(gallery))
