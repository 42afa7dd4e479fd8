"""Shard listing and readers on real tar, folder and Parquet files built in tmp_path (and one local S3 bucket)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from segcore.io.shards import (
    Sample,
    ShardError,
    ShardSpec,
    expand_braces,
    expand_input,
    list_shards,
    read_shard,
    split_member_name,
)


def png_bytes(value: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (value, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def add_member(archive: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
               linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_tar(path: Path, members: list[tuple]) -> Path:
    """Writes a tar of ``(name, data)`` or ``(name, data, type, linkname)`` members, in order."""
    with tarfile.open(path, "w") as archive:
        for member in members:
            add_member(archive, *member)
    return path


def tar_spec(path: Path) -> ShardSpec:
    return ShardSpec(path.stem, "tar", str(path))


def webdataset_tar(path: Path, count: int) -> Path:
    members = []
    for index in range(count):
        members += [(f"d/{index:06d}.jpg", png_bytes(index)), (f"d/{index:06d}.json", b'{"i": %d}' % index)]
    return write_tar(path, members)


# ----------------------------------------------------------------------------------------------- listing


def test_expand_braces_keeps_padding_and_lists():
    assert expand_braces("c-{0008..0011}.tar") == ["c-0008.tar", "c-0009.tar", "c-0010.tar", "c-0011.tar"]
    assert expand_braces("{a,b}/{1..2}.tar") == ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"]
    assert expand_braces("x{lit}.tar") == ["x{lit}.tar"]


def test_expand_input_brace_range_does_not_list(tmp_path):
    uris = expand_input(str(tmp_path / "corpus-{00001..00000}.tar"))
    assert uris == [str(tmp_path / "corpus-00000.tar"), str(tmp_path / "corpus-00001.tar")]
    assert expand_input("s3://bucket/c-{000..002}.tar") == [f"s3://bucket/c-00{i}.tar" for i in range(3)]


def test_expand_input_local_glob_sorted_unique(tmp_path):
    for name in ("b.tar", "a.tar", "c.parquet"):
        (tmp_path / name).write_bytes(b"")
    assert expand_input(str(tmp_path / "{*,a}.tar")) == [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    with pytest.raises(ValueError, match="nothing|none") as caught:
        expand_input(str(tmp_path / "*.zip"))
    assert str(tmp_path) in str(caught.value)


def test_s3_glob_and_read(s3_bucket, tmp_path):
    bucket, options = s3_bucket
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    tar = webdataset_tar(tmp_path / "local.tar", 2)
    for name in ("shard-1.tar", "shard-0.tar"):
        fs.put_file(str(tar), f"{bucket}/in/{name}")
    fs.pipe_file(f"{bucket}/in/notes.txt", b"x")

    uris = expand_input(f"{bucket}/in/*.tar", options)
    assert uris == [f"{bucket}/in/shard-0.tar", f"{bucket}/in/shard-1.tar"]
    specs = list_shards(f"{bucket}/in/*.tar", storage_options=options)
    assert [spec.shard_id for spec in specs] == ["shard-0", "shard-1"]
    samples = list(read_shard(specs[0], options))
    assert [s.key for s in samples] == ["d/000000", "d/000001"]
    assert samples[1].source == f"{bucket}/in/shard-0.tar#d/000001.jpg"


def make_folder(root: Path, count: int) -> Path:
    for index in range(count):
        sub = root / ("sub" if index % 2 else "") / f"img{index:03d}.{'JPG' if index % 3 == 0 else 'png'}"
        sub.parent.mkdir(parents=True, exist_ok=True)
        sub.write_bytes(png_bytes(index))
    (root / "readme.txt").write_text("not an image")
    return root


def test_folder_sharding_is_deterministic(tmp_path):
    root = make_folder(tmp_path / "images", 7)
    first = list_shards(str(root), shard_size=3)
    assert first == list_shards(str(root) + "/", shard_size=3)
    assert [spec.shard_id for spec in first] == ["folder-00000", "folder-00001", "folder-00002"]
    assert [len(spec.members) for spec in first] == [3, 3, 1]
    members = [m for spec in first for m in spec.members]
    assert members == sorted(members) and len(members) == 7
    assert all(spec.kind == "folder" and spec.uri == str(root) for spec in first)


def test_folder_reader_keys_and_missing_member(tmp_path):
    root = make_folder(tmp_path / "images", 3)
    spec = list_shards(str(root), shard_size=10)[0]
    (root / "img000.JPG").unlink()
    samples = list(read_shard(spec))
    assert [s.key for s in samples] == ["img000", "img002", "sub/img001"]
    assert samples[0].error and "img000.JPG" in samples[0].error and samples[0].image_bytes is None
    assert samples[1].image_bytes == png_bytes(2) and samples[1].error is None
    assert samples[2].source == f"{root}#sub/img001.png"


def test_list_shards_tar_parquet_and_clashing_ids(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        webdataset_tar(tmp_path / folder / "x.tar", 1)
    specs = list_shards(str(tmp_path / "{a,b}/x.tar"))
    ids = [spec.shard_id for spec in specs]
    assert len(set(ids)) == 2 and all(i.startswith("x-") for i in ids)
    assert ids == [spec.shard_id for spec in list_shards(str(tmp_path / "{a,b}/x.tar"))]
    pq.write_table(pa.table({"image": [b"x"]}), tmp_path / "p.parquet")
    assert list_shards(str(tmp_path / "p.parquet")) == [ShardSpec("p", "parquet", str(tmp_path / "p.parquet"))]


def test_list_shards_errors_name_the_uri(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=str(tmp_path / "empty")):
        list_shards(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt"):
        list_shards(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="shard_size"):
        list_shards(str(tmp_path), shard_size=0)


# ----------------------------------------------------------------------------------------------- tar


def test_split_member_name_follows_webdataset():
    assert split_member_name("dir/000123.seg.PNG") == ("dir/000123", "seg.png")
    assert split_member_name("./a.jpg") == ("a", "jpg")


def test_tar_groups_members_with_metadata(tmp_path):
    path = webdataset_tar(tmp_path / "s.tar", 3)
    samples = list(read_shard(tar_spec(path)))
    assert [s.key for s in samples] == ["d/000000", "d/000001", "d/000002"]
    assert all(s.error is None for s in samples)
    assert samples[2].image_bytes == png_bytes(2) and samples[2].metadata == {"i": 2}
    assert samples[0].source == f"{path}#d/000000.jpg"


def test_tar_refuses_hostile_members_and_writes_nothing(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_tar(tmp_path / "hostile.tar", [
        ("a.jpg", png_bytes()),
        ("../x.jpg", png_bytes()),
        ("/etc/x.jpg", png_bytes()),
        ("link.jpg", b"", tarfile.SYMTYPE, "/etc/passwd"),
        ("hard.jpg", b"", tarfile.LNKTYPE, "a.jpg"),
        ("dev.jpg", b"", tarfile.CHRTYPE),
        ("b.jpg", png_bytes(1)),
    ])
    before = sorted(p for p in tmp_path.rglob("*"))
    samples = list(read_shard(tar_spec(path)))
    assert [s.key for s in samples if s.error is None] == ["a", "b"]
    refused = {s.key: s.error for s in samples if s.error}
    assert set(refused) == {"../x.jpg", "/etc/x.jpg", "link.jpg", "hard.jpg", "dev.jpg"}
    assert all("refused member" in error for error in refused.values())
    assert "absolute" in refused["/etc/x.jpg"] and ".." in refused["../x.jpg"] and "link" in refused["link.jpg"]
    assert sorted(p for p in tmp_path.rglob("*")) == before and not list(work.iterdir())


def test_tar_duplicate_key_and_key_without_image(tmp_path):
    path = write_tar(tmp_path / "s.tar", [
        ("k1.jpg", png_bytes(1)),
        ("k2.json", b"{}"),
        ("k3.png", png_bytes(3)),
        ("k3.json", b"{not json"),
        ("k1.jpg", png_bytes(9)),
        ("k4.jpg", png_bytes(4)),
        ("k4.png", png_bytes(4)),
    ])
    samples = list(read_shard(tar_spec(path)))
    assert [s.key for s in samples] == ["k1", "k2", "k3", "k1", "k4"]
    assert samples[0].image_bytes == png_bytes(1) and samples[0].error is None
    assert samples[1].error == "no image member"
    assert "bad JSON" in samples[2].error and "k3.json" in samples[2].error
    assert "duplicate key" in samples[3].error and samples[3].image_bytes is None
    assert "multiple image members" in samples[4].error


def test_not_a_tar_raises_naming_the_file(tmp_path):
    path = tmp_path / "fake.tar"
    path.write_bytes(b"this is not a tar archive at all\n" * 40)
    with pytest.raises(ShardError, match="fake.tar"):
        list(read_shard(tar_spec(path)))


def test_truncated_tar_raises_after_yielding(tmp_path):
    path = webdataset_tar(tmp_path / "full.tar", 20)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    samples = []
    with pytest.raises(ShardError, match="cut.tar"):
        for sample in read_shard(tar_spec(cut)):
            samples.append(sample)
    assert 0 < len(samples) < 20 and all(s.error is None for s in samples)


def test_tar_cut_at_member_boundary_raises(tmp_path):
    path = write_tar(tmp_path / "full.tar", [("a.jpg", b"x" * 512), ("b.jpg", b"y" * 512)])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[:2048])  # two whole members, no end-of-archive blocks
    with pytest.raises(ShardError, match="cut.tar"):
        list(read_shard(tar_spec(cut)))


def test_empty_tar_yields_nothing(tmp_path):
    path = write_tar(tmp_path / "empty.tar", [])
    assert list(read_shard(tar_spec(path))) == []


# ----------------------------------------------------------------------------------------------- parquet


def parquet_spec(path: Path, table: pa.Table) -> ShardSpec:
    pq.write_table(table, path, row_group_size=50)
    return ShardSpec(path.stem, "parquet", str(path))


def test_parquet_binary_column_with_keys(tmp_path):
    images = [png_bytes(i) for i in range(130)] + [None]
    keys = [f"img{i}" for i in range(131)]
    spec = parquet_spec(tmp_path / "p.parquet", pa.table({"__key__": keys, "jpg": pa.array(images, pa.binary()),
                                                          "label": list(range(131))}))
    samples = list(read_shard(spec))
    assert [s.key for s in samples] == keys
    assert samples[129].image_bytes == png_bytes(129) and samples[129].source == f"{spec.uri}#129"
    assert samples[130].error and samples[130].image_bytes is None


def test_parquet_hf_struct_column_and_row_index_keys(tmp_path):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    column = pa.array([{"bytes": png_bytes(i), "path": f"{i}.png"} for i in range(3)], image_type)
    spec = parquet_spec(tmp_path / "hf.parquet", pa.table({"image": column, "id": [1, 2, 3]}))
    samples = list(read_shard(spec))
    assert [s.key for s in samples] == ["0", "1", "2"]  # int `id` is not a string key column
    assert [s.image_bytes for s in samples] == [png_bytes(i) for i in range(3)]


def test_parquet_without_image_column_lists_columns(tmp_path):
    spec = parquet_spec(tmp_path / "bad.parquet", pa.table({"caption": ["a"], "image": ["not bytes"]}))
    with pytest.raises(ShardError, match=r"bad\.parquet.*caption.*image") as caught:
        list(read_shard(spec))
    assert "binary image column" in str(caught.value)


def test_not_parquet_raises_shard_error(tmp_path):
    path = tmp_path / "junk.parquet"
    path.write_bytes(b"junk" * 10)
    with pytest.raises(ShardError, match="junk.parquet"):
        list(read_shard(ShardSpec("junk", "parquet", str(path))))


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        read_shard(ShardSpec("x", "zip", "x.zip"))


def test_sample_defaults():
    assert Sample("k", "s") == Sample("k", "s", None, None, None)


FORMATS = {"gif": "GIF", "tif": "TIFF", "bmp": "BMP", "avif": "AVIF", "webp": "WEBP", "jpg": "JPEG", "ppm": "PPM"}


def encoded(fmt: str, value: int) -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (8, 6), (value, 10, 20)), Image.new("RGB", (8, 6), (0, 0, 0))]
    if fmt == "GIF":  # an animation: its first frame is the image
        frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:])
    else:
        frames[0].save(buffer, format=fmt)
    return buffer.getvalue()


def test_a_folder_and_a_tar_read_the_same_formats_and_skipped_files_are_named(tmp_path, caplog):
    from segcore.io.images import decode_rgb

    folder = tmp_path / "images"
    folder.mkdir()
    for extension, fmt in FORMATS.items():
        (folder / f"a-{extension}.{extension.upper() if extension == 'tif' else extension}").write_bytes(
            encoded(fmt, 200))
    (folder / "notes.txt").write_text("not an image")
    (folder / "README").write_text("no extension")
    with caplog.at_level("WARNING", logger="segcore.io.shards"):
        (spec,) = list_shards(str(folder), shard_size=100)
    assert len(spec.members) == len(FORMATS)
    assert "2 files skipped" in caplog.text and ".txt x1" in caplog.text and "README" in caplog.text
    from_folder = {sample.key: decode_rgb(sample.image_bytes, sample.source) for sample in read_shard(spec)}
    with tarfile.open(tmp_path / "same.tar", "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=path.name.replace("-", "_"))
    (tar_spec,) = list_shards(str(tmp_path / "same.tar"))
    from_tar = {sample.key: decode_rgb(sample.image_bytes, sample.source) for sample in read_shard(tar_spec)
                if sample.image_bytes is not None}
    assert len(from_folder) == len(from_tar) == len(FORMATS)
    for image in [*from_folder.values(), *from_tar.values()]:
        assert image.shape == (6, 8, 3)
    assert all(tuple(image[0, 0]) != (0, 0, 0) for image in from_folder.values())  # the GIF's first frame
