"""report.html of real outputs (demo corpus, COCO sample), opened in headless Chromium: every section there, every
image and plot loaded, nothing fetched from outside the file."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from segcore.categories import categories_from_json
from segcore.io.commit import Output
from segcore.report import GalleryItem, report_html, write_html_report
from test_render import labelled_outputs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
# Marks every <img> once the page has loaded: complete and decoded to a real size, or not.
PROBE = ("<script>window.addEventListener('load', () => { for (const img of document.images) "
         "img.dataset.loaded = String(img.complete && img.naturalWidth > 0); document.body.dataset.probed = 'yes'; "
         "});</script>")
NEW_SECTIONS = ("pq-by-size", "instances", "confusion", "per-image")


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium (.ci/setup installs it); its absence fails the tests on CI and skips them elsewhere."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (.ci/setup does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return labelled_outputs(tmp_path_factory.getbasetemp() / "labelled_outputs")


class PageParts(HTMLParser):
    """The section ids, images (their attributes) and figures of a page."""

    def __init__(self, page: str):
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict] = []
        self.body: dict = {}
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "img":
            self.images.append(attrs)
        elif tag == "body":
            self.body = attrs


def loaded_in_chromium(browser: Path, page: Path, tmp_path: Path) -> PageParts:
    """The page's DOM after Chromium loaded it (with ``PROBE`` added), parsed."""
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [str(browser), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    parts = PageParts(result.stdout)
    assert parts.body.get("data-probed") == "yes", result.stderr[-2000:]
    return parts


def check_self_contained(page: str) -> None:
    """Nothing the page would fetch: every image inline, no scripts, links, fonts or imports."""
    assert re.findall(r'\bsrc="(?!data:image/(png|jpeg);base64,)', page) == []
    for pattern in (r"<script", r"<link", r"\bhref=", r"url\(", r"@import", r"https?://"):
        assert re.search(pattern, page) is None, pattern


SECTIONS = {"pq": "pq", "pq_by_size": "pq-by-size", "instances": "instances", "semantic": "semantic",
            "category_confusion": "confusion", "per_image": "per-image"}  # metrics key -> section id, page order


def expected_sections(document: dict) -> list[str]:
    return [section for key, section in SECTIONS.items() if key in document] + ["gallery", "stats"]


def build_report(output_dir: Path, document: dict, gallery_size: int = 2) -> str:
    manifest = json.loads((output_dir / "manifest.json").read_text())
    write_html_report(Output.open(str(output_dir)), document, categories_from_json(manifest["categories"]),
                      gallery_size=gallery_size)
    return (output_dir / "report.html").read_text()


def test_the_demo_report_shows_every_section_and_loads_every_image(chromium, outputs, tmp_path):
    metrics = json.loads((outputs.demo / "metrics.json").read_text())
    assert set(SECTIONS) <= set(metrics)  # the demo has ground truth: every view is there
    page = build_report(outputs.demo, metrics)
    check_self_contained(page)
    parts = loaded_in_chromium(chromium, outputs.demo / "report.html", tmp_path)
    assert parts.sections == expected_sections(metrics)
    assert [image["data-loaded"] for image in parts.images] == ["true"] * len(parts.images)
    overlays = [image for image in parts.images if image.get("class") == "overlay"]
    worst = [entry["image_id"] for entry in metrics["per_image"]["worst"][:2]]
    best = [entry["image_id"] for entry in metrics["per_image"]["best"][:2]]
    assert [image["alt"] for image in overlays] == [f"overlay of {i}" for i in dict.fromkeys(worst + best)]
    assert len(parts.images) == len(overlays) + 4  # per-class PQ, PQ by size, class frequencies, histograms
    for text in ("Lowest PQ", "Highest PQ", "sky-other-merged", "grass-merged",
                 f"{100 * metrics['pq']['All']['pq']:.1f}", f"{100 * metrics['semantic']['miou']:.1f}"):
        assert text in page


def test_the_coco_report_has_the_sections_of_its_metrics_and_loads_every_image(chromium, outputs, tmp_path):
    metrics = json.loads((outputs.coco / "metrics.json").read_text())
    page = build_report(outputs.coco, metrics)
    check_self_contained(page)
    parts = loaded_in_chromium(chromium, outputs.coco / "report.html", tmp_path)
    assert parts.sections == expected_sections(metrics)
    assert [image["data-loaded"] for image in parts.images] == ["true"] * len(parts.images)
    overlays = [image for image in parts.images if image.get("class") == "overlay"]
    assert len(overlays) == 2  # two images, each both among the worst and the best: shown once
    assert "person" in page and "000000142238" in page


def decoded_images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data)))
            for data in re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', page)]


def test_without_ground_truth_the_report_shows_statistics_and_a_sample(outputs, tmp_path):
    metrics = json.loads((outputs.demo / "metrics.json").read_text())
    page = build_report(outputs.demo, {"shards": metrics["shards"], "stats": metrics["stats"]}, gallery_size=3)
    assert PageParts(page).sections == ["gallery", "stats"]
    check_self_contained(page)
    images = decoded_images(page)
    assert len(images) == 3 + 2 and all(image.width > 0 for image in images)
    assert "Sample" in page and "Lowest PQ" not in page


def test_json_keys_and_in_memory_keys_give_the_same_page(outputs):
    document = json.loads((outputs.demo / "metrics.json").read_text())
    categories = categories_from_json(json.loads((outputs.demo / "manifest.json").read_text())["categories"])
    in_memory = json.loads(json.dumps(document))  # the reduce's own dicts have int category ids before JSON
    for mapping in (in_memory["pq"], in_memory, in_memory["stats"], in_memory["semantic"], in_memory["instances"]):
        key = "per_class_counts" if mapping is in_memory else "per_class"
        mapping[key] = {int(k): v for k, v in mapping[key].items()}
    gallery = [GalleryItem("x", tiny_png(), "x <b>", "worst")]
    page = report_html(document, categories, gallery)
    assert page == report_html(in_memory, categories, gallery)
    assert "x &lt;b&gt;" in page  # captions are escaped
    with pytest.raises(ValueError, match="stats"):
        report_html({"pq": document["pq"]}, categories, [])


def test_undefined_metrics_show_as_a_dash_and_numbers_as_percent():
    categories = categories_from_json({"categories": [{"id": 1, "name": "person", "isthing": 1, "color": [1, 2, 3]}]})
    stats = {"images": 1, "labelled_images": 1, "statuses": {"ok": 1}, "segments": 0, "pixels": 4,
             "unlabelled_fraction": 1.0, "per_class": {}, "things_per_image": {}, "size_histogram": {}}
    document = {"stats": stats, "instances": {"AP": 0.412, "AP50": -1.0, "AP75": 0.5, "APs": -1, "APm": 0.25,
                                              "APl": 0.125, "per_class": {"1": -1.0}, "images": 1, "gt": 0, "dt": 2}}
    page = report_html(document, categories, [])
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert cells[:6] == ["41.2", "–", "50.0", "–", "25.0", "12.5"]
    assert PageParts(page).sections == ["instances", "gallery", "stats"]
    assert "No images to show." in page


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()
