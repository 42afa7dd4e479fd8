"""A real full disk (a small tmpfs): no write leaves an empty or partial file under its final name, no marker
vouches for a shard that was not written, and the output recovers once there is space again."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from segcore.io.commit import Output, commit_shard, committed_shards, create_only, write_whole
from segcore.models.registry import ModelOptions
from segcore.runtime.labeling import LabelJobConfig, plan
from segcore.runtime.reduce import reduce_output
from segcore.runtime.verify import verify_output
from segcore.runtime.worker import ShardWorker
from segcore.synthetic import write_demo_shards

PAGE = 4096


def fill_disk(folder: Path, leave: int) -> Path:
    """Fills the file system of ``folder`` with one file until about ``leave`` bytes are free; returns the file."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_write_that_hits_a_full_disk_leaves_nothing_under_its_name(small_disk):
    output = Output.open(str(small_disk / "out"))
    write_whole(output, output.path("kept.json"), b"old content")
    fill_disk(small_disk, leave=0)
    with pytest.raises(OSError) as error:
        write_whole(output, output.path("kept.json"), b"x" * 3 * PAGE)
    assert error.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        create_only(output, output.path("new.json"), b"y" * 3 * PAGE)
    assert (small_disk / "out" / "kept.json").read_bytes() == b"old content"  # the old file, whole
    assert files_under(small_disk / "out") == ["kept.json"]  # no new file, no temporary left


def test_a_marker_that_cannot_be_written_leaves_the_shard_uncommitted(small_disk):
    output = Output.open(str(small_disk / "out"))
    filler = fill_disk(small_disk, leave=PAGE)  # room for the data file, none for the marker
    with pytest.raises(OSError):
        commit_shard(output, "shard-1", b"d" * 1000, rows=1)
    assert (small_disk / "out" / "shards" / "shard-1.parquet").exists()
    assert not (small_disk / "out" / "_done").exists() or not any((small_disk / "out" / "_done").iterdir())
    assert committed_shards(output, validate=True) == set()
    filler.unlink()
    commit_shard(output, "shard-1", b"d" * 1000, rows=1)
    assert committed_shards(output, validate=True) == {"shard-1"}


def test_a_job_on_a_full_disk_commits_nothing_and_completes_once_space_is_freed(small_disk, tmp_path):
    pattern = write_demo_shards(tmp_path / "corpus", n_shards=2, images_per_shard=3)
    config = LabelJobConfig(input=pattern, output=str(small_disk / "labels"), model="demo",
                            model_options=ModelOptions(device="cpu"), batch_size=3, decode_threads=1,
                            encode_threads=1)
    job = plan(config)
    filler = fill_disk(small_disk, leave=2 * PAGE)
    worker = ShardWorker(config.worker_config(job.categories))
    try:
        for index, spec in enumerate(job.shards):
            with pytest.raises(OSError):
                worker.label_shard(spec, index)
        job.lock.release()
        assert committed_shards(Output.open(config.output), validate=True) == set()
        filler.unlink()
        again = plan(config)
        assert [s.shard_id for s in again.pending] == [s.shard_id for s in job.shards]  # nothing counted as done
        for index, spec in enumerate(again.pending):
            worker.label_shard(spec, index)
        again.lock.release()
    finally:
        worker.close()
    output = Output.open(config.output)
    assert committed_shards(output, validate=True) == {s.shard_id for s in job.shards}
    metrics = reduce_output(output)
    assert metrics["shards"] == 2 and json.loads((small_disk / "labels" / "metrics.json").read_text())["shards"] == 2
    assert verify_output(config.output).ok
