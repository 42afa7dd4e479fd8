"""The labeling job with S3 behind a fault-injecting proxy (tests/faulty_s3.py): transient errors on reads and
writes are retried and change nothing; a write failing for good leaves its shard unmarked and listed as failed.

Tar shards and the output are in one bucket of the local S3 server; the job's s3fs goes through the proxy, the
checks read the bucket directly. Every run is compared with an uninterrupted one: same Parquet bytes per shard.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest
import s3fs

from segcore.io.commit import Output, committed_shards, read_marker
from segcore.models.registry import ModelOptions
from segcore.runtime.driver import run_label_job
from segcore.runtime.labeling import LabelJobConfig
from segcore.runtime.verify import verify_output
from segcore.synthetic import write_demo_shards
from tests.faulty_s3 import Fault, FaultyS3Proxy

SHARD_IDS = [f"corpus-{index:05d}" for index in range(3)]
# small whole-write retries (segcore.io.retry) and shard-retry backoff, set before Ray starts so actors see them
RETRY_ENV = {"SEGCORE_IO_RETRY_ATTEMPTS": "3", "SEGCORE_IO_RETRY_BASE_DELAY": "0.05",
             "SEGCORE_IO_RETRY_MAX_DELAY": "0.2"}
NO_BOTOCORE_RETRIES = {"retries": {"total_max_attempts": 1}}


@pytest.fixture(scope="module")
def ray_with_gpus():
    import ray

    saved = {name: os.environ.get(name) for name in RETRY_ENV}
    os.environ.update(RETRY_ENV)
    # address="local": a new instance even when another `ray start` cluster runs on the machine
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def proxy(s3_server):
    with FaultyS3Proxy(s3_server["client_kwargs"]["endpoint_url"]) as running:
        yield running


@pytest.fixture(scope="module")
def bucket(s3_server, tmp_path_factory) -> str:
    """A bucket holding the corpus under ``in/``."""
    name = f"s3://job-faults-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**s3_server, skip_instance_cache=True)
    fs.mkdir(name)
    corpus = write_demo_shards(tmp_path_factory.mktemp("corpus"), n_shards=3, images_per_shard=5)
    for shard_id in SHARD_IDS:
        fs.put(corpus.replace("corpus-{00000..00002}", shard_id), f"{name}/in/{shard_id}.tar")
    return name


def run(bucket: str, output: str, proxy: FaultyS3Proxy, s3_server: dict, config_kwargs=None, **changes) -> dict:
    """Runs the job from the bucket's corpus to ``<bucket>/<output>``, through the proxy."""
    options = {**s3_server, "client_kwargs": {"endpoint_url": proxy.endpoint_url},
               "config_kwargs": config_kwargs or {}}
    settings = dict(input=f"{bucket}/in/corpus-{{00000..00002}}.tar", output=f"{bucket}/{output}", model="demo",
                    model_options=ModelOptions(device="cpu"), actors=1, gpus_per_actor=1, cpus_per_actor=1,
                    batch_size=4, decode_threads=2, encode_threads=1, storage_options=options)
    return run_label_job(LabelJobConfig(**{**settings, **changes}), reduce=True)


def shard_files(bucket: str, output: str, s3_server: dict) -> dict[str, tuple[bytes, dict]]:
    """Committed shard id -> (Parquet bytes, marker), read straight from the server."""
    direct = Output.open(f"{bucket}/{output}", s3_server)
    return {shard_id: (direct.fs.cat_file(direct.data_path(shard_id)), read_marker(direct, shard_id))
            for shard_id in committed_shards(direct)}


def puts(proxy: FaultyS3Proxy, pattern: str) -> list[str]:
    return [outcome for method, path, outcome in proxy.requests if method == "PUT" and path.endswith(pattern)]


@pytest.fixture(scope="module")
def reference(ray_with_gpus, bucket, proxy, s3_server) -> dict[str, tuple[bytes, dict]]:
    """The shards of an uninterrupted run, through the proxy without faults."""
    proxy.reset()
    result = run(bucket, "reference", proxy, s3_server)
    assert result["done"] == 3 and result["failed"] == {}
    files = shard_files(bucket, "reference", s3_server)
    assert sorted(files) == SHARD_IDS
    return files


@pytest.mark.parametrize("config_kwargs", [None, NO_BOTOCORE_RETRIES], ids=["botocore-retries", "no-botocore-retries"])
def test_transient_read_and_write_errors_change_nothing(reference, bucket, proxy, s3_server, config_kwargs, caplog):
    output = f"transient-{'default' if config_kwargs is None else 'bare'}"
    proxy.reset()
    proxy.add(
        Fault("GET", r"/in/corpus-00000\.tar", "500"),  # the shard's first read
        Fault("GET", r"/in/corpus-00001\.tar", "truncate"),  # half the tar, then the connection is reset
        Fault("PUT", rf"/{output}/shards/corpus-00001\.parquet$", "503"),  # SlowDown
        Fault("PUT", rf"/{output}/_done/corpus-00002$", "reset", after_upstream=True),  # stored, answer lost
    )
    with caplog.at_level(logging.WARNING, logger="segcore.runtime.driver"):
        result = run(bucket, output, proxy, s3_server, config_kwargs)
    assert sorted(kind for _, _, kind in proxy.fired) == ["500", "503", "reset", "truncate"]
    # botocore retries the 500 itself; without its retries (s3fs does not retry InternalError) the read fails and
    # the driver runs the shard again after a backoff. Truncated bodies, SlowDown and resets are s3fs's.
    retried = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    if config_kwargs is None:
        assert retried == []
    else:
        assert len(retried) == 1 and retried[0].startswith("shard corpus-00000 failed (OSError: ")
        assert "internal error" in retried[0] and "retry 1 in" in retried[0]
    assert result["done"] == 3 and result["failed"] == {}
    assert sorted(shard["shard_id"] for shard in result["shards"]) == SHARD_IDS  # each labelled and committed once
    for shard_id in SHARD_IDS:  # one data file written per shard (a write is retried, the shard is not redone)
        assert puts(proxy, f"/shards/{shard_id}.parquet").count("200") == 1
    assert puts(proxy, "/_done/corpus-00002") == ["reset", "200"]
    assert shard_files(bucket, output, s3_server) == reference  # byte-identical Parquet, identical markers
    assert verify_output(f"{bucket}/{output}", s3_server).problems == []


def test_a_write_failing_for_good_leaves_its_shard_unmarked_and_failed(reference, bucket, proxy, s3_server):
    output = "lasting"
    proxy.reset()
    proxy.add(Fault("PUT", rf"/{output}/shards/corpus-00001\.parquet$", "500", times=None))
    result = run(bucket, output, proxy, s3_server, NO_BOTOCORE_RETRIES, max_retries=1)
    assert result["done"] == 2 and list(result["failed"]) == ["corpus-00001"]
    error = result["failed"]["corpus-00001"]
    assert error.startswith("RetriesExhausted: write s3://") and "corpus-00001.parquet: gave up after 3" in error
    assert len(proxy.fired) == 3 * 2  # 3 whole-write attempts in each of the 2 runs of the shard
    assert puts(proxy, "/_done/corpus-00001") == []
    files = shard_files(bucket, output, s3_server)
    assert sorted(files) == ["corpus-00000", "corpus-00002"]
    assert all(files[shard_id] == reference[shard_id] for shard_id in files)
    direct = Output.open(f"{bucket}/{output}", s3_server)
    assert not direct.fs.exists(direct.marker_path("corpus-00001"))
    assert not direct.fs.exists(direct.data_path("corpus-00001"))
    report = verify_output(f"{bucket}/{output}", s3_server)
    assert report.problems == []  # the committed shards are sound; the failed one is pending
