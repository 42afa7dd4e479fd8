"""Commit protocol: whole writes, marker last, markers are the only truth, create-only manifest (local and S3)."""

from __future__ import annotations

import hashlib
import json

import pytest

from segcore.io.commit import (
    ManifestMismatch,
    Output,
    claim_output,
    commit_shard,
    committed_shards,
    create_only,
    read_marker,
    write_whole,
)


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return Output.open(str(tmp_path / "out"))
    bucket, storage_options = request.getfixturevalue("s3_bucket")
    return Output.open(f"{bucket}/out", storage_options)


def test_a_committed_shard_has_data_partials_errors_and_a_marker_vouching_for_them(output):
    data = b"parquet bytes"
    marker = commit_shard(output, "shard-00001", data, rows=3, errors=b'{"image_id": "x"}\n', partials=b"{}")
    assert output.fs.cat_file(output.data_path("shard-00001")) == data
    assert output.fs.cat_file(output.partials_path("shard-00001")) == b"{}"
    assert read_marker(output, "shard-00001") == marker
    assert marker["rows"] == 3 and marker["data_sha256"] == hashlib.sha256(data).hexdigest()
    assert committed_shards(output) == {"shard-00001"}


def test_data_without_a_marker_is_not_committed(output):
    assert committed_shards(output) == set()
    write_whole(output, output.data_path("shard-00002"), b"half written")
    commit_shard(output, "shard-00003", b"x", rows=1)
    assert committed_shards(output) == {"shard-00003"}
    assert not output.fs.exists(output.errors_path("shard-00003"))  # no errors: no file


def test_create_only_refuses_a_second_writer(output):
    create_only(output, output.path("lock"), b"first")
    with pytest.raises(FileExistsError):
        create_only(output, output.path("lock"), b"second")
    assert output.fs.cat_file(output.path("lock")) == b"first"


def test_a_rerun_resumes_a_matching_manifest_and_refuses_another_job(output):
    manifest = {"model": "demo", "shards": ["a", "b"], "created": "2026-11-21T10:00:00"}
    assert claim_output(output, manifest) == "created"
    assert claim_output(output, {**manifest, "created": "2026-11-21T11:00:00"}) == "resumed"
    with pytest.raises(ManifestMismatch, match="model"):
        claim_output(output, {**manifest, "model": "hf:x/y"})
    assert json.loads(output.fs.cat_file(output.path("manifest.json")))["model"] == "demo"


def test_overwrite_replaces_the_manifest_and_drops_the_old_markers(output):
    claim_output(output, {"model": "demo"})
    commit_shard(output, "a", b"x", rows=1)
    assert claim_output(output, {"model": "other"}, overwrite=True) == "overwritten"
    assert committed_shards(output) == set()
    assert claim_output(output, {"model": "other"}) == "resumed"
    commit_shard(output, "a", b"x", rows=1)
    assert claim_output(output, {"model": "other"}, overwrite=True) == "overwritten"  # the same job, started over
    assert committed_shards(output) == set()


def test_a_recommit_removes_files_it_does_not_write(output):
    commit_shard(output, "a", b"x", rows=1, errors=b'{"image_id": "bad"}\n', partials=b"{}", stats=b"{}")
    marker = commit_shard(output, "a", b"y", rows=1, stats=b"{}")  # the shard redone: no errors, no ground truth
    assert not output.fs.exists(output.errors_path("a")) and not output.fs.exists(output.partials_path("a"))
    assert output.fs.exists(output.stats_path("a")) and not marker["errors"] and not marker["partials"]


def test_an_empty_marker_or_one_without_its_data_file_does_not_count(output):
    commit_shard(output, "shard-a", b"aaaa", rows=1)
    commit_shard(output, "shard-b", b"bbbb", rows=1)
    commit_shard(output, "shard-c", b"cccc", rows=1)
    output.fs.pipe_file(output.marker_path("shard-a"), b"")  # as a full disk left it under the old protocol
    output.fs.rm(output.data_path("shard-b"))  # the data file deleted, its marker kept
    assert committed_shards(output) == {"shard-c"}


def test_a_resume_reads_the_markers_and_drops_those_that_do_not_vouch_for_their_shard(output):
    for name in ("shard-a", "shard-b", "shard-c", "shard-d"):
        commit_shard(output, name, name.encode() * 3, rows=1)
    output.fs.pipe_file(output.marker_path("shard-a"), b'{"shard_id": "shard-a", "ro')  # cut short
    output.fs.pipe_file(output.marker_path("shard-b"), output.fs.cat_file(output.marker_path("shard-c")))
    output.fs.pipe_file(output.data_path("shard-c"), b"other content")  # not the size the marker vouches for
    assert committed_shards(output) == {"shard-a", "shard-b", "shard-c", "shard-d"}  # listings alone
    assert committed_shards(output, validate=True) == {"shard-d"}
    with pytest.raises(ValueError, match="_done/shard-a"):
        read_marker(output, "shard-a")


def test_an_unreadable_manifest_is_named_and_overwrite_recovers(output):
    output.fs.makedirs(output.root, exist_ok=True)
    output.fs.pipe_file(output.path("manifest.json"), b"")
    with pytest.raises(ManifestMismatch, match=r"manifest.json.*--overwrite"):
        claim_output(output, {"model": "demo"})
    commit_shard(output, "shard-a", b"a", rows=1)
    assert claim_output(output, {"model": "demo"}, overwrite=True) == "overwritten"
    assert json.loads(output.fs.cat_file(output.path("manifest.json"))) == {"model": "demo"}
    assert committed_shards(output) == set()
    assert claim_output(output, {"model": "demo"}) == "resumed"


def test_local_writes_leave_no_temporary_file_and_replace_whole(tmp_path):
    output = Output.open(str(tmp_path / "out"))
    write_whole(output, output.path("a.json"), b"one")
    write_whole(output, output.path("a.json"), b"two")
    create_only(output, output.path("b.json"), b"three")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "b.json"]
    assert (tmp_path / "out" / "a.json").read_bytes() == b"two"


def test_an_s3_output_pools_as_many_connections_as_the_reduce_reads_at_once(s3_bucket):
    from segcore.io.parallel import READ_WINDOW

    bucket, options = s3_bucket
    output = Output.open(f"{bucket}/labels", options)
    assert output.fs.config_kwargs["max_pool_connections"] == READ_WINDOW  # botocore's own default is 10
    output.fs.pipe_file(output.path("x"), b"1")
    assert output.fs.cat_file(output.path("x")) == b"1"
    mine = Output.open(f"{bucket}/labels", {**options, "config_kwargs": {"max_pool_connections": 7}})
    assert mine.fs.config_kwargs["max_pool_connections"] == 7
