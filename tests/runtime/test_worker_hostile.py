"""One tar shard holding every kind of hostile or awkward member: each becomes a row (labelled or refused with a
reason), the shard is committed, and nothing is written outside the output."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from segcore.io.commit import Output, committed_shards, read_marker
from segcore.io.shards import list_shards
from segcore.models.registry import ModelOptions
from segcore.png import decode_ids
from segcore.runtime.worker import ShardWorker, WorkerConfig
from segcore.synthetic import make_demo_sample

SCENE = make_demo_sample(4, 0, size=(96, 128))[0]


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims ``width x height`` pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def rotated_jpeg() -> bytes:
    image = Image.fromarray(SCENE)
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=95)


def members() -> dict[str, bytes]:
    scene = Image.fromarray(SCENE)
    jpeg, png = encoded(scene, "JPEG", quality=95), encoded(scene, "PNG")
    return {
        "zero.jpg": b"",
        "cut-jpeg.jpg": jpeg[: len(jpeg) // 2],
        "cut-png.png": png[: len(png) // 2],
        "text.jpg": b"this is not a JPEG at all",
        "cmyk.jpg": encoded(scene.convert("CMYK"), "JPEG", quality=95),
        "grey16.png": encoded(Image.fromarray(SCENE[..., 0].astype(np.uint16) * 257), "PNG"),
        "palette.png": encoded(scene.convert("P"), "PNG"),
        "alpha.png": encoded(scene.convert("RGBA"), "PNG"),
        "grey.png": encoded(scene.convert("L"), "PNG"),
        "rotated.jpg": rotated_jpeg(),
        "bomb.png": png_bomb(50_000, 50_000),
        "large.jpg": encoded(scene.resize((1536, 1152)), "JPEG", quality=90),
        "../escape.jpg": jpeg,
        "/etc/absolute.jpg": jpeg,
        "dup.jpg": jpeg,
    }


def write_shard(path) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        for name, data in (("spacer.jpg", members()["dup.jpg"]), ("dup.jpg", b"abc")):  # dup's key again, later
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "in").mkdir()
    write_shard(root / "in" / "hostile-00000.tar")
    (root / "in" / "empty-00000.tar").write_bytes(encoded_empty_tar())
    worker = ShardWorker(WorkerConfig(output=str(root / "out"), model="demo", model_options=ModelOptions(device="cpu"),
                                      batch_size=4, decode_threads=2, encode_threads=2, max_pixels=20_000_000))
    try:
        for spec in list_shards(str(root / "in" / "*.tar"), shard_size=100):
            worker.label_shard(spec)
    finally:
        worker.close()
    return root


def encoded_empty_tar() -> bytes:
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w").close()
    return buffer.getvalue()


def test_every_member_becomes_a_row_with_the_right_status(labelled):
    output = Output.open(str(labelled / "out"))
    assert committed_shards(output) == {"hostile-00000", "empty-00000"}
    rows = pq.read_table(output.data_path("hostile-00000")).to_pylist()
    by_source = {row["source"].rsplit("#", 1)[1]: row for row in rows}
    expected = {
        "zero.jpg": "empty", "cut-jpeg.jpg": "decode_error", "cut-png.png": "decode_error",
        "text.jpg": "not_an_image", "bomb.png": "too_large", "../escape.jpg": "bad_member",
        "/etc/absolute.jpg": "bad_member", "link.jpg": "bad_member",
        "cmyk.jpg": "ok", "grey16.png": "ok", "palette.png": "ok", "alpha.png": "ok", "grey.png": "ok",
        "rotated.jpg": "ok", "large.jpg": "ok",
    }
    for name, status in expected.items():
        row = by_source[name]
        assert row["status"] == status, (name, row["error"])
        assert (row["error"] is None) == (status == "ok"), name
        if status != "ok":
            assert row["error"] and row["panoptic_png"] is None
    assert [row["status"] for row in rows if row["image_id"] == "dup"] == ["ok", "bad_member"]
    assert "duplicate key" in [row for row in rows if row["image_id"] == "dup"][1]["error"]
    assert read_marker(output, "hostile-00000")["rows"] == len(rows) == len(expected) + 3  # dup twice, spacer
    assert "above the limit of 20000000 pixels" in by_source["bomb.png"]["error"]
    errors = (labelled / "out" / "errors" / "hostile-00000.jsonl").read_text().splitlines()
    assert len(errors) == sum(row["status"] != "ok" for row in rows)


def test_awkward_images_are_labelled_upright_and_at_full_size(labelled):
    output = Output.open(str(labelled / "out"))
    rows = {row["source"].rsplit("#", 1)[1]: row for row in pq.read_table(output.data_path("hostile-00000")).to_pylist()}
    for name in ("cmyk.jpg", "grey16.png", "palette.png", "alpha.png", "grey.png"):
        assert (rows[name]["width"], rows[name]["height"]) == (128, 96), name
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (96, 128)  # EXIF applied: upright
    large = rows["large.jpg"]
    assert (large["width"], large["height"]) == (1536, 1152)
    assert decode_ids(large["panoptic_png"]).shape == (1152, 1536)  # the map comes back at the image's size
    same = [rows[n]["segments"] for n in ("alpha.png", "palette.png")]
    assert {s["category_id"] for s in same[0]} and {s["category_id"] for s in same[1]}  # labelled, not blank


def test_nothing_is_written_outside_the_output_and_an_empty_shard_commits_no_rows(labelled):
    written = {p.relative_to(labelled).as_posix() for p in labelled.rglob("*") if p.is_file()}
    assert all(p.startswith(("in/", "out/")) for p in written), written
    assert not any("escape" in p or "absolute" in p or "passwd" in p for p in written)
    output = Output.open(str(labelled / "out"))
    assert read_marker(output, "empty-00000")["rows"] == 0
    assert pq.read_table(output.data_path("empty-00000")).num_rows == 0
    assert json.loads((labelled / "out" / "stats" / "empty-00000.json").read_text())["stats"]["statuses"] == {}
