"""Overlays of real job outputs (the demo corpus and the COCO sample), ``jobs.render``, and reading sources back.

The two outputs are labelled once per test session (local Ray, 1 CPU actor) and shared with
tests/test_report_html.py through ``labelled_outputs``.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy import ndimage

from jobs import label
from jobs import render as render_job
from segcore.categories import Categories, Category, categories_from_json, coco_panoptic_categories
from segcore.io.commit import Output
from segcore.io.images import decode_rgb
from segcore.io.shards import list_shards, read_shard
from segcore.io.sources import SourceNotFound, read_source, read_sources, split_source
from segcore.png import decode_ids
from segcore.render import GREY, MIN_SIDE, draw_rows, font_size, index_rows, overlay, read_rows, render_images, \
    segment_color, side_by_side
from segcore.synthetic import write_demo_shards
from tiny_models import save_tiny_model

SAMPLE = Path(__file__).parent / "data" / "coco_panoptic_sample"
RUN_FLAGS = ["--actors", "1", "--gpus-per-actor", "1", "--cpus-per-actor", "1", "--device", "cpu",
             "--batch-size", "4"]


@dataclass(frozen=True)
class LabelledOutputs:
    """A demo job's output (tar shards, ground truth embedded) and a COCO sample job's (folder, ``--gt``)."""

    demo: Path
    coco: Path


def labelled_outputs(base: Path) -> LabelledOutputs:
    """Labels the demo corpus (2 shards x 4 images) and the COCO sample under ``base``, once per session."""
    outputs = LabelledOutputs(base / "demo" / "labels", base / "coco" / "labels")
    if (base / "complete").exists():
        return outputs
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        corpus = write_demo_shards(base / "demo" / "corpus", n_shards=2, images_per_shard=4)
        assert label.main(["--input", corpus, "--output", str(outputs.demo), *RUN_FLAGS]) == 0
        names = [c.name for c in coco_panoptic_categories()]
        model = save_tiny_model("mask2former", base / "coco" / "model", labels=names)
        assert label.main(["--input", str(SAMPLE / "input_images"), "--output", str(outputs.coco),
                           "--model", f"hf:{model}", "--gt", str(SAMPLE / "panoptic_examples.json"),
                           "--score-threshold", "0", *RUN_FLAGS]) == 0
    finally:
        if started:
            ray.shutdown()
    (base / "complete").touch()
    return outputs


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> LabelledOutputs:
    return labelled_outputs(tmp_path_factory.getbasetemp() / "labelled_outputs")


def rows_of(output_dir: Path) -> list[dict]:
    """Every row of an output's committed shards."""
    output = Output.open(str(output_dir))
    index = index_rows(output)
    return list(read_rows(output, index, sorted(index)).values())


def manifest_categories(output_dir: Path) -> Categories:
    return categories_from_json(json.loads((output_dir / "manifest.json").read_text())["categories"])


def interior(id_map: np.ndarray, segment_id: int) -> np.ndarray:
    """A segment's pixels at least 3 pixels from its border (away from the drawn boundary).  # (H, W) bool"""
    return ndimage.binary_erosion(id_map == segment_id, iterations=3)


# ----------------------------------------------------------------------------------------------- overlay


@pytest.mark.parametrize("which", ["demo", "coco"])
def test_segment_pixels_are_tinted_toward_their_colour(outputs, which):
    output_dir = getattr(outputs, which)
    categories = manifest_categories(output_dir)
    checked = 0
    for row in rows_of(output_dir):
        image = decode_rgb(read_source(row["source"]), row["source"])
        id_map = decode_ids(row["panoptic_png"])
        drawing = overlay(image, id_map, row["segments"], categories, labels=False).astype(int)
        for segment in row["segments"]:
            inside = interior(id_map, segment["id"])
            category = categories.by_id(segment["category_id"])
            color = np.array(segment_color(segment["id"], category.color, segment["isthing"]))
            before = np.abs(image[inside].astype(int) - color).sum(axis=1)
            after = np.abs(drawing[inside] - color).sum(axis=1)
            assert (after <= np.maximum(before - 1, 0) + 1).all(), (row["image_id"], category.name)  # rounding
            assert after.sum() <= 0.5 * before.sum() + inside.sum(), (row["image_id"], category.name)
            checked += inside.any()
        void = ndimage.binary_erosion(id_map == 0, iterations=3)
        assert (drawing[void] == image[void]).all()  # pixels of no segment are left as they are
        labelled = overlay(image, id_map, row["segments"], categories)
        changed = (labelled != drawing).any(axis=2)
        assert 0 < changed.mean() < 0.5  # the labels: boxes over part of the picture
    assert checked >= 2  # the tiny random model gives the COCO images one segment each


def test_two_instances_of_one_thing_class_get_different_colours(outputs):
    categories = manifest_categories(outputs.demo)
    for row in rows_of(outputs.demo):
        things = [s for s in row["segments"] if s["isthing"]]
        pairs = [(a, b) for a in things for b in things if a["id"] < b["id"] and a["category_id"] == b["category_id"]]
        pairs = [(a, b) for a, b in pairs if min(a["area"], b["area"]) > 150]
        if pairs:
            break
    else:
        pytest.fail("no demo image has two instances of one thing class")
    first, second = pairs[0]
    id_map = decode_ids(row["panoptic_png"])
    drawing = overlay(None, id_map, row["segments"], categories)  # on grey: only the fill colours differ
    color = categories.by_id(first["category_id"]).color
    assert segment_color(first["id"], color, True) != segment_color(second["id"], color, True)
    medians = [np.median(drawing[interior(id_map, s["id"])], axis=0) for s in (first, second)]
    assert np.abs(medians[0] - medians[1]).sum() >= 20
    assert np.array_equal(drawing, overlay(None, id_map, row["segments"], categories))  # deterministic


def test_without_an_image_the_overlay_is_drawn_on_grey():
    categories = Categories([Category(1, "person", True, (220, 20, 60)), Category(2, "sky", False, (70, 130, 180))])
    id_map = np.zeros((60, 80), np.uint32)
    id_map[10:50, 10:40] = 5
    id_map[:, 60:] = 7
    segments = [{"id": 5, "category_id": 1, "bbox": [10, 10, 30, 40], "area": 1200, "score": 0.93},
                {"id": 7, "category_id": 2, "bbox": [60, 0, 20, 60], "area": 1200}]
    drawing = overlay(None, id_map, segments, categories, alpha=1.0)
    assert (drawing[:5, 42:58] == GREY).all()  # VOID stays grey
    assert tuple(drawing[2, 62]) == (70, 130, 180)  # stuff: its category colour, not jittered (alpha 1)
    assert tuple(drawing[12, 12]) == segment_color(5, (220, 20, 60), True) != (220, 20, 60)
    assert (drawing[id_map == 5] == (255, 255, 255)).all(axis=1).any()  # the label text is drawn on it
    with pytest.raises(ValueError, match="alpha"):
        overlay(None, id_map, segments, categories, alpha=2)


def test_side_by_side_puts_the_panels_beside_each_other_under_titles():
    pred = np.full((90, 120, 3), 10, np.uint8)
    gt = np.full((90, 120, 3), 200, np.uint8)
    sheet = side_by_side(pred, gt, ("prediction", "ground truth"))
    gap = max(4, 120 // 50)
    assert sheet.shape[1] == 2 * 120 + gap and sheet.shape[0] > 90
    strip = sheet.shape[0] - 90
    assert (sheet[strip:, :120] == 10).all() and (sheet[strip:, 120 + gap:] == 200).all()
    assert (sheet[strip:, 120:120 + gap] == 255).all()
    assert (sheet[:strip] != 255).any()  # the titles
    assert side_by_side(pred, None, ("prediction",)).shape[1] == 120


# ----------------------------------------------------------------------------------------------- render_images


def panel_size(row: dict) -> tuple[int, int]:
    """(height, width) of one panel of a rendered row: enlarged by a whole factor below MIN_SIDE."""
    factor = max(1, -(-MIN_SIDE // min(row["height"], row["width"])))
    return row["height"] * factor, row["width"] * factor


@pytest.mark.parametrize("which", ["demo", "coco"])
def test_render_images_draws_prediction_beside_ground_truth_deterministically(outputs, which):
    output_dir = getattr(outputs, which)
    rows = {row["image_id"]: row for row in rows_of(output_dir)}
    rendered = render_images(str(output_dir), sample=2)
    assert len(rendered) == 2 and rendered == render_images(str(output_dir), sample=2)  # same bytes
    for item in rendered:
        row = rows[item.image_id]
        assert item.source == row["source"]
        height, width = panel_size(row)
        picture = np.asarray(Image.open(io.BytesIO(item.png)))
        strip = font_size(height, width) + 2 * max(2, font_size(height, width) // 3)
        assert picture.shape == (strip + height, 2 * width + max(4, width // 50), 3)  # both had ground truth
    assert [r.image_id for r in render_images(str(output_dir), sample=2, seed=1)] != [] and \
        render_images(str(output_dir), image_ids=[rendered[1].image_id])[0] == rendered[1]


def test_render_images_refuses_unknown_ids_and_non_outputs(outputs, tmp_path):
    with pytest.raises(ValueError, match="'nope-1', 'nope-2'"):
        render_images(str(outputs.demo), image_ids=["00000000", "nope-1", "nope-2"])
    with pytest.raises(ValueError, match="manifest.json"):
        render_images(str(tmp_path))
    with pytest.raises(ValueError, match="both"):
        render_images(str(outputs.demo), image_ids=["00000000"], sample=1)


def test_a_row_whose_source_is_gone_is_drawn_on_grey_without_ground_truth(outputs, tmp_path, caplog):
    row = next(r for r in rows_of(outputs.demo) if (decode_ids(r["panoptic_png"]) == 0).any())
    moved = {**row, "source": f"{tmp_path}/gone.tar#{row['image_id']}.jpg"}
    manifest = json.loads((outputs.demo / "manifest.json").read_text())
    [rendered] = draw_rows([moved], manifest)
    picture = np.asarray(Image.open(io.BytesIO(rendered.png)))
    height, width = panel_size(row)
    assert picture.shape == (height, width, 3)  # one panel: the embedded ground truth went with the tar
    factor = height // row["height"]
    void = ndimage.binary_erosion(np.kron(decode_ids(row["panoptic_png"]) == 0, np.ones((factor, factor), bool)),
                                  iterations=3)
    assert (picture[void] == GREY).all()
    assert "gone.tar" in caplog.text


def test_jobs_render_writes_one_png_per_image_and_exits_2_on_bad_input(outputs, tmp_path, capsys):
    dest = tmp_path / "drawn"
    assert render_job.main(["--output", str(outputs.demo), "--images", "00000001,00000006", "--dest", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["00000001.png", "00000006.png"]
    assert Image.open(dest / "00000001.png").format == "PNG"
    assert render_job.main(["--output", str(outputs.coco), "--sample", "1", "--dest", str(tmp_path / "one")]) == 0
    assert len(list((tmp_path / "one").iterdir())) == 1
    capsys.readouterr()
    assert render_job.main(["--output", str(outputs.demo), "--images", "00000001,missing", "--dest", str(dest)]) == 2
    assert "'missing'" in capsys.readouterr().err
    assert render_job.main(["--output", str(tmp_path / "nothing"), "--dest", str(dest)]) == 2
    assert "manifest.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        render_job.main(["--output", str(outputs.demo), "--images", "1", "--sample", "2", "--dest", str(dest)])
    assert exit_info.value.code == 2


# ----------------------------------------------------------------------------------------------- sources


def encoded(color: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (color, 0, 0)).save(buffer, fmt)
    return buffer.getvalue()


def write_shards(root: Path) -> dict[str, Path]:
    """One shard of each kind: a folder (with a sub-folder), a tar, a Parquet file in row groups of 2 rows."""
    (root / "folder" / "sub").mkdir(parents=True)
    for index, name in enumerate(["a.png", "sub/b.png", "sub/c#1.png"]):
        (root / "folder" / name).write_bytes(encoded(index))
    with tarfile.open(root / "shard.tar", "w") as archive:
        for index in range(3):
            for name, data in ((f"{index:04d}.png", encoded(10 + index)), (f"{index:04d}.json", b"{}")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    table = pa.table({"image": [encoded(20 + i) for i in range(5)], "key": [f"k{i}" for i in range(5)]})
    pq.write_table(table, root / "shard.parquet", row_group_size=2)
    return {"folder": root / "folder", "tar": root / "shard.tar", "parquet": root / "shard.parquet"}


def test_every_shard_kind_reads_back_the_bytes_its_reader_gave(tmp_path):
    shards = write_shards(tmp_path)
    samples = [s for uri in shards.values() for spec in list_shards(str(uri)) for s in read_shard(spec)]
    assert len(samples) == 11
    assert {split_source(s.source)[0] for s in samples} == {"folder", "tar", "parquet"}
    for sample in samples:
        assert read_source(sample.source) == sample.image_bytes, sample.source
    batch = read_sources([s.source for s in samples][::-1])
    assert batch == {s.source: s.image_bytes for s in samples}
    assert split_source(f"{shards['folder']}#sub/c#1.png") == ("folder", str(shards["folder"]), "sub/c#1.png")


def test_a_missing_source_is_named_in_the_error(tmp_path):
    shards = write_shards(tmp_path)
    for source in (f"{shards['tar']}#0007.png", f"{shards['parquet']}#5", f"{shards['folder']}#sub/z.png",
                   f"{tmp_path}/gone.tar#0000.png"):
        with pytest.raises(SourceNotFound, match="#"):
            read_source(source)
        with pytest.raises(SourceNotFound) as error:
            read_sources([f"{shards['tar']}#0000.png", source])
        assert source in str(error.value)
        assert read_sources([f"{shards['tar']}#0000.png", source], missing_ok=True) == {
            f"{shards['tar']}#0000.png": encoded(10)}
    with pytest.raises(ValueError, match="row index"):
        read_source(f"{shards['parquet']}#first")
    # a source without "#" (rows imported from COCO predictions) is a file of its own
    plain = tmp_path / "plain.png"
    plain.write_bytes(encoded(3))
    assert read_source(str(plain)) == encoded(3)
    with pytest.raises(SourceNotFound, match="gone.png"):
        read_source(str(tmp_path / "gone.png"))
