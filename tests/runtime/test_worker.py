"""The in-actor pipeline without Ray: a tar shard of demo images to a committed Parquet file with error rows."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from segcore.io.commit import committed_shards, read_marker
from segcore.io.shards import ShardError, list_shards
from segcore.models.registry import ModelOptions
from segcore.png import decode_ids
from segcore.runtime.worker import ShardWorker, WorkerConfig
from segcore.synthetic import DEMO_CATEGORY_IDS, index_areas_and_bboxes, make_demo_sample


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def image_bytes(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, quality=95) if fmt == "JPEG" else Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


def write_tar(path, n_images: int) -> None:
    with tarfile.open(path, "w") as archive:
        for index in range(n_images):
            image = make_demo_sample(9, index)[0]
            fmt = "PNG" if index % 2 else "JPEG"
            add_member(archive, f"{index:06d}.{'png' if index % 2 else 'jpg'}", image_bytes(image, fmt))
            add_member(archive, f"{index:06d}.json", json.dumps({"index": index}).encode())
        add_member(archive, "broken.jpg", b"not a jpeg at all")
        add_member(archive, "../escape.jpg", image_bytes(make_demo_sample(9, 0)[0], "JPEG"))


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("labels")
    worker = ShardWorker(WorkerConfig(output=str(out), model="demo", model_options=ModelOptions(device="cpu"),
                                      batch_size=4, decode_threads=2, encode_threads=2))
    yield worker
    worker.close()


def test_a_tar_shard_becomes_one_committed_parquet_with_error_rows(worker, tmp_path):
    shard = tmp_path / "corpus-00000.tar"
    write_tar(shard, 7)
    (spec,) = list_shards(str(shard))
    summary = worker.label_shard(spec)
    output = worker.output
    assert committed_shards(output) >= {spec.shard_id}
    assert summary["images"] == 9 and summary["errors"] == 2
    assert read_marker(output, spec.shard_id)["rows"] == 9
    table = pq.read_table(output.data_path(spec.shard_id))
    rows = table.to_pylist()
    assert [r["image_id"] for r in rows[:7]] == [f"{i:06d}" for i in range(7)]
    bad = {r["source"].rsplit("#", 1)[-1]: r for r in rows if r["status"] != "ok"}
    assert bad["broken.jpg"]["status"] == "not_an_image" and "broken.jpg" in bad["broken.jpg"]["error"]
    assert len(bad) == 2 and all(r["panoptic_png"] is None for r in bad.values())
    error_lines = output.fs.cat_file(output.errors_path(spec.shard_id)).decode().splitlines()
    assert len(error_lines) == 2
    assert not (tmp_path.parent / "escape.jpg").exists()
    for row in rows[:7]:
        assert row["status"] == "ok" and row["model"] == "demo"
        id_map = decode_ids(row["panoptic_png"])
        assert id_map.shape == (row["height"], row["width"])
        listed = {s["id"] for s in row["segments"]}
        assert set(np.unique(id_map).tolist()) - {0} == listed and listed
        areas, boxes = index_areas_and_bboxes(id_map.astype(np.int64), max(listed) + 1)
        for segment in row["segments"]:
            assert segment["area"] == areas[segment["id"]] and segment["bbox"] == boxes[segment["id"]].tolist()
            assert segment["category_id"] in DEMO_CATEGORY_IDS


def test_a_shard_that_is_not_a_tar_raises_and_commits_nothing(worker, tmp_path):
    shard = tmp_path / "corpus-00001.tar"
    shard.write_bytes(b"definitely not a tar archive" * 50)
    (spec,) = list_shards(str(shard))
    with pytest.raises(ShardError, match="corpus-00001.tar"):
        worker.label_shard(spec)
    assert spec.shard_id not in committed_shards(worker.output)
    assert not worker.output.fs.exists(worker.output.data_path(spec.shard_id))


class RecordingSegmenter:
    """The real segmenter, recording the image sizes of every batch it is given."""

    def __init__(self, real):
        self.real = real
        self.batches: list[list[tuple[int, int]]] = []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def segment(self, images, timings=None):
        self.batches.append([tuple(image.shape[:2]) for image in images])
        return self.real.segment(images, timings)


def write_mixed_tar(path, sizes: list[tuple[int, int]]) -> None:
    with tarfile.open(path, "w") as archive:
        for index, (height, width) in enumerate(sizes):
            image = np.asarray(Image.fromarray(make_demo_sample(9, index)[0]).resize((width, height)))
            add_member(archive, f"{index:06d}.png", image_bytes(image, "PNG"))


@pytest.mark.parametrize("distinct", [False, True])
def test_batches_hold_images_of_one_padded_size_and_rows_keep_the_shard_order(tmp_path, distinct):
    landscape, portrait, wide = (120, 160), (160, 120), (90, 200)
    if distinct:  # more sizes than the buckets may hold back: the fullest bucket goes early, short
        sizes = [(100 + 3 * i, 160) for i in range(14)]
    else:
        sizes = [landscape, portrait, wide, landscape, portrait, landscape, landscape, wide, portrait, landscape]
    write_mixed_tar(tmp_path / "mixed-00000.tar", sizes)
    worker = ShardWorker(WorkerConfig(output=str(tmp_path / "labels"), model="demo",
                                      model_options=ModelOptions(device="cpu"), batch_size=3, decode_threads=2,
                                      encode_threads=2))
    recording = worker.segmenter = RecordingSegmenter(worker.segmenter)
    try:
        (spec,) = list_shards(str(tmp_path / "mixed-00000.tar"))
        worker.label_shard(spec)
    finally:
        worker.close()
    rows = pq.read_table(worker.output.data_path(spec.shard_id)).to_pylist()
    assert [r["image_id"] for r in rows] == [f"{i:06d}" for i in range(len(sizes))]
    assert [(r["height"], r["width"]) for r in rows] == sizes
    assert sum(len(b) for b in recording.batches) == len(sizes)
    keys = [{recording.real.batch_key(*size) for size in batch} for batch in recording.batches]
    if distinct:
        assert len(recording.batches) < len(sizes)  # some buckets shared a key or went together
        assert all(len(batch) <= 3 for batch in recording.batches)
    else:
        assert all(len(k) == 1 for k in keys)  # no batch mixes padded sizes
        # the demo pads to (128, 160), (160, 128) and (96, 160): a bucket goes when it holds 3, the rest at the end
        assert recording.batches == [[landscape] * 3, [portrait] * 3, [wide] * 2, [landscape] * 2]


def test_the_shard_summary_reports_the_padding_fed_to_the_model(tmp_path):
    sizes = [(120, 160), (160, 120), (90, 200), (120, 160)]
    write_mixed_tar(tmp_path / "mixed-00000.tar", sizes)
    (spec,) = list_shards(str(tmp_path / "mixed-00000.tar"))
    worker = ShardWorker(WorkerConfig(output=str(tmp_path / "labels"), model="demo",
                                      model_options=ModelOptions(device="cpu"), batch_size=4, decode_threads=1,
                                      encode_threads=1))
    try:
        summary = worker.label_shard(spec)
    finally:
        worker.close()
    image_pixels, batch_pixels = summary["batch_pixels"]
    resized = [worker.segmenter.preprocessing.resized_size(*size) for size in sizes]  # (120, 160), (160, 120), ...
    assert image_pixels == sum(h * w for h, w in resized)
    # buckets: the two landscape images together, the others alone: only each image's own padding to a multiple
    # of 32 (Mask2Former's), none from another image of the batch
    padded = [worker.segmenter.batch_key(*size) for size in sizes]  # (128, 160) x2, (160, 128), (96, 160)
    assert batch_pixels == sum(h * w for h, w in padded) > image_pixels


class GatedSegmenter(RecordingSegmenter):
    """Counts its calls; ``second_call`` is set when the second batch reaches the model."""

    def __init__(self, real):
        super().__init__(real)
        self.second_call = threading.Event()

    def segment(self, images, timings=None):
        if self.batches:
            self.second_call.set()
        return super().segment(images, timings)


def test_a_batch_is_encoded_while_the_model_works_on_the_next(tmp_path):
    write_mixed_tar(tmp_path / "corpus-00000.tar", [(120, 160)] * 6)  # one size: batches 0-2, 3-5
    (spec,) = list_shards(str(tmp_path / "corpus-00000.tar"))
    worker = ShardWorker(WorkerConfig(output=str(tmp_path / "labels"), model="demo",
                                      model_options=ModelOptions(device="cpu"), batch_size=3, decode_threads=2,
                                      encode_threads=2))
    gated = worker.segmenter = GatedSegmenter(worker.segmenter)
    seen, encode = [], worker._image_row

    def image_row(item, segments, host_map, threads=None):  # the first batch's rows wait for the second batch
        if item.sample.key in ("000000", "000001", "000002"):
            seen.append(gated.second_call.wait(timeout=10))
        return encode(item, segments, host_map, threads)

    worker._image_row = image_row
    try:
        summary = worker.label_shard(spec)
    finally:
        worker.close()
    assert seen == [True, True, True]  # a worker that waited for them before the next batch would time out
    assert summary["images"] == 6 and len(gated.batches) == 2
    assert {"read", "decode", "decode_wait", "to_host", "encode", "encode_wait", "write"} <= set(summary["stages"])
    rows = pq.read_table(worker.output.data_path(spec.shard_id)).to_pylist()
    assert [r["image_id"] for r in rows] == [f"{i:06d}" for i in range(6)]


class FailingSegmenter(RecordingSegmenter):
    def segment(self, images, timings=None):
        raise RuntimeError("the device fell over")


def test_a_model_failure_stops_the_reader_and_commits_nothing(tmp_path):
    write_tar(tmp_path / "corpus-00000.tar", 40)  # more than the reader may queue ahead
    (spec,) = list_shards(str(tmp_path / "corpus-00000.tar"))
    worker = ShardWorker(WorkerConfig(output=str(tmp_path / "labels"), model="demo",
                                      model_options=ModelOptions(device="cpu"), batch_size=2, decode_threads=1,
                                      encode_threads=1))
    worker.segmenter = FailingSegmenter(worker.segmenter)
    try:
        with pytest.raises(RuntimeError, match="fell over"):
            worker.label_shard(spec)
        readers = [t for t in threading.enumerate() if t.name == f"read-{spec.shard_id}"]
        for reader in readers:  # it sees the stop after the sample it is reading
            reader.join(timeout=10)
        assert not any(reader.is_alive() for reader in readers)
        assert spec.shard_id not in committed_shards(worker.output)
    finally:
        worker.close()


def test_a_shard_truncated_after_good_samples_raises_from_the_reader_and_commits_nothing(worker, tmp_path):
    whole = tmp_path / "whole.tar"
    write_tar(whole, 12)
    shard = tmp_path / "corpus-00002.tar"
    data = whole.read_bytes()
    shard.write_bytes(data[: len(data) * 2 // 3])  # cut inside a member: the first samples read fine
    (spec,) = list_shards(str(shard))
    with pytest.raises(ShardError, match="corpus-00002.tar"):
        worker.label_shard(spec)
    assert spec.shard_id not in committed_shards(worker.output)
    assert not [t for t in threading.enumerate() if t.name.startswith("read-")]


class FailingOnSecondBatch(RecordingSegmenter):
    def segment(self, images, timings=None):
        if self.batches:
            raise RuntimeError("the device fell over on the second batch")
        return super().segment(images, timings)


def test_a_failed_shard_leaves_no_encode_or_decode_running_into_the_next(tmp_path):
    write_mixed_tar(tmp_path / "corpus-00000.tar", [(120, 160)] * 12)
    (spec,) = list_shards(str(tmp_path / "corpus-00000.tar"))
    worker = ShardWorker(WorkerConfig(output=str(tmp_path / "labels"), model="demo",
                                      model_options=ModelOptions(device="cpu"), batch_size=3, decode_threads=1,
                                      encode_threads=1))
    worker.segmenter = FailingOnSecondBatch(worker.segmenter)
    lock, state = threading.Lock(), {"active": 0, "started": 0}
    encode, decode = worker._image_row, worker._decode

    def tracked(work, delay):
        def call(*args):
            with lock:
                state["active"] += 1
                state["started"] += 1
            try:
                time.sleep(delay)
                return work(*args)
            finally:
                with lock:
                    state["active"] -= 1
        return call

    # encodes slow enough that the first batch's are still running when the second batch fails
    worker._image_row, worker._decode = tracked(encode, 0.2), tracked(decode, 0.0)
    try:
        with pytest.raises(RuntimeError, match="second batch"):
            worker.label_shard(spec)
        with lock:
            active, started = state["active"], state["started"]
        time.sleep(0.3)
        assert active == 0  # nothing of the failed shard was still running when it raised
        assert state["started"] == started  # and nothing started afterwards
        assert spec.shard_id not in committed_shards(worker.output)
    finally:
        worker.close()


def test_a_model_failure_does_not_wait_for_a_slow_read(tmp_path, monkeypatch):
    import segcore.runtime.worker as worker_module

    write_mixed_tar(tmp_path / "corpus-00000.tar", [(120, 160)] * 12)
    (spec,) = list_shards(str(tmp_path / "corpus-00000.tar"))
    release = threading.Event()
    real_read = worker_module.read_shard

    def slow_storage(spec, storage_options=None):  # the real reader, with storage stalling after 4 samples
        for position, sample in enumerate(real_read(spec, storage_options)):
            if position == 4:
                release.wait(timeout=30)
            yield sample

    monkeypatch.setattr(worker_module, "read_shard", slow_storage)
    worker = ShardWorker(WorkerConfig(output=str(tmp_path / "labels"), model="demo",
                                      model_options=ModelOptions(device="cpu"), batch_size=2, decode_threads=1,
                                      encode_threads=1))
    worker.segmenter = FailingOnSecondBatch(worker.segmenter)
    failed = threading.Event()

    def label():
        with pytest.raises(RuntimeError, match="second batch"):
            worker.label_shard(spec)
        failed.set()

    runner = threading.Thread(target=label)
    try:
        runner.start()
        assert failed.wait(timeout=20)  # raised while the read was still stalled
        assert not release.is_set()
    finally:
        release.set()
        runner.join(timeout=30)
        worker.close()
    reader = [t for t in threading.enumerate() if t.name == f"read-{spec.shard_id}"]
    for thread in reader:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in reader)  # the reader saw the stop once the read returned
