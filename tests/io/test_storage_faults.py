"""Transient storage errors: the retry helper's classification and backoff, and commit_shard through a faulty S3.

The S3 tests put ``tests.faulty_s3.FaultyS3Proxy`` between s3fs and the local S3 server. With botocore's own
retries on (the default), a single 500/503/reset never reaches segcore; with them off (``total_max_attempts: 1``)
s3fs still retries SlowDown and dropped connections, and the whole-write retry of ``segcore.io.retry`` is what
saves the commit from an InternalError.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import uuid

import pytest
import s3fs
from aiohttp import ClientPayloadError
from botocore.exceptions import ClientError, EndpointConnectionError
from s3fs.errors import translate_boto_error

from segcore.io.commit import Output, commit_shard, committed_shards, read_marker
from segcore.io.retry import RetriesExhausted, RetryPolicy, call_with_retries, is_transient
from tests.faulty_s3 import Fault, FaultyS3Proxy

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
NO_BOTOCORE_RETRIES = {"retries": {"total_max_attempts": 1}}


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} says no"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


# ---- classification and backoff


@pytest.mark.parametrize("error", [
    client_error("InternalError", 500), client_error("SlowDown", 503), client_error("RequestTimeout", 400),
    client_error("Whatever", 502), translate_boto_error(client_error("InternalError", 500)),
    translate_boto_error(client_error("SlowDown", 503)), translate_boto_error(client_error("Odd", 504)),
    ConnectionResetError(errno.ECONNRESET, "reset"), TimeoutError("slow"), OSError(errno.ETIMEDOUT, "timed out"),
    EndpointConnectionError(endpoint_url="http://x"), ClientPayloadError("Response payload is not completed"),
], ids=lambda e: type(e).__name__ + ":" + str(e)[:30])
def test_transient_errors_are_recognised(error):
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    FileNotFoundError("gone"), PermissionError("no"), FileExistsError("there"), ValueError("bad"),
    client_error("AccessDenied", 403), translate_boto_error(client_error("AccessDenied", 403)),
    translate_boto_error(client_error("NoSuchBucket", 404)), OSError(errno.EINVAL, "bad request"),
    OSError(errno.ENOSPC, "disk full"),
], ids=lambda e: type(e).__name__ + ":" + str(e)[:30])
def test_permanent_errors_are_not_retried(error):
    assert not is_transient(error)


def test_backoff_doubles_with_equal_jitter_up_to_the_cap():
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0)
    assert [policy.delay(n, lambda: 0.0) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert [policy.delay(n, lambda: 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_transient_error_is_retried_with_growing_waits_then_succeeds():
    calls, waits = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise translate_boto_error(client_error("SlowDown", 503))
        return "done"

    policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=10.0)
    assert call_with_retries(flaky, "write x", policy, sleep=waits.append) == "done"
    assert len(calls) == 3 and len(waits) == 2 and 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0


def test_a_permanent_error_is_raised_at_once_and_a_lasting_one_after_every_attempt():
    waits = []
    with pytest.raises(PermissionError):
        call_with_retries(lambda: (_ for _ in ()).throw(PermissionError("no")), "write x", FAST, waits.append)
    assert waits == []

    def always():
        raise ConnectionResetError(errno.ECONNRESET, "reset by peer")

    with pytest.raises(RetriesExhausted, match=r"write x: gave up after 3 attempts: ConnectionResetError") as info:
        call_with_retries(always, "write x", FAST, waits.append)
    assert len(waits) == 2 and isinstance(info.value.__cause__, ConnectionResetError)
    assert isinstance(info.value, OSError)  # the worker's contract: storage failures are OSErrors


def test_the_policy_comes_from_the_environment(monkeypatch):
    assert RetryPolicy.from_env() == RetryPolicy()
    monkeypatch.setenv("SEGCORE_IO_RETRY_ATTEMPTS", "5")
    monkeypatch.setenv("SEGCORE_IO_RETRY_BASE_DELAY", "0.1")
    assert RetryPolicy.from_env() == RetryPolicy(attempts=5, base_delay=0.1)
    monkeypatch.setenv("SEGCORE_IO_RETRY_MAX_DELAY", "-1")
    with pytest.raises(ValueError, match="SEGCORE_IO_RETRY_MAX_DELAY"):
        RetryPolicy.from_env()


# ---- commit_shard through a faulty S3


@pytest.fixture(scope="module")
def proxy(s3_server):
    with FaultyS3Proxy(s3_server["client_kwargs"]["endpoint_url"]) as running:
        yield running


@pytest.fixture()
def faulty(proxy, s3_server):
    """``(opens the output behind the proxy, the same output reached directly, proxy)`` in a fresh bucket; the
    output's s3fs keeps botocore's retries unless the test asks otherwise."""
    bucket, direct_options = f"s3://faults-{uuid.uuid4().hex[:16]}", s3_server
    s3fs.S3FileSystem(**s3_server, skip_instance_cache=True).mkdir(bucket)
    proxy.reset()

    def open_output(**config_kwargs) -> Output:
        options = {**direct_options, "client_kwargs": {"endpoint_url": proxy.endpoint_url},
                   "config_kwargs": config_kwargs, "skip_instance_cache": True}
        return Output.open(f"{bucket}/out", options)

    yield open_output, Output.open(f"{bucket}/out", direct_options), proxy
    proxy.reset()


def commit(output: Output, shard_id: str = "shard-00001") -> dict:
    return commit_shard(output, shard_id, b"parquet bytes " * 1000, rows=7, errors=b'{"image_id": "x"}\n',
                        partials=b"{}", stats=b'{"version": 1}', retry=FAST)


def puts(proxy: FaultyS3Proxy, part: str) -> list[str]:
    """Outcomes of the PUTs whose path holds ``part``, in order."""
    return [outcome for method, path, outcome in proxy.requests if method == "PUT" and part in path]


@pytest.mark.parametrize("kind", ["503", "500", "reset"])
@pytest.mark.parametrize("botocore_retries", [True, False], ids=["botocore-retries", "no-botocore-retries"])
def test_a_data_put_failing_once_is_retried_and_the_shard_committed(faulty, kind, botocore_retries, caplog):
    open_output, direct, proxy = faulty
    output = open_output() if botocore_retries else open_output(**NO_BOTOCORE_RETRIES)
    proxy.add(Fault("PUT", r"/out/shards/shard-00001\.parquet$", kind))
    with caplog.at_level(logging.WARNING, logger="segcore.io.retry"):
        marker = commit(output)
    assert proxy.fired == [("PUT", proxy.fired[0][1], kind)]
    assert puts(proxy, "/shards/") == [kind, "200"] and puts(proxy, "/_done/") == ["200"]
    assert committed_shards(direct) == {"shard-00001"} and read_marker(direct, "shard-00001") == marker
    assert direct.fs.cat_file(direct.data_path("shard-00001")) == b"parquet bytes " * 1000
    retried_by_segcore = "shard-00001.parquet failed" in caplog.text
    # s3fs itself retries SlowDown and dropped connections, whatever botocore is told; InternalError it does not
    assert retried_by_segcore == (not botocore_retries and kind == "500")


def test_a_marker_put_whose_answer_is_lost_is_written_again_with_the_same_content(faulty):
    open_output, direct, proxy = faulty
    proxy.add(Fault("PUT", r"/out/_done/shard-00001$", "reset", after_upstream=True))
    marker = commit(open_output(**NO_BOTOCORE_RETRIES))
    assert puts(proxy, "/_done/") == ["reset", "200"]
    assert read_marker(direct, "shard-00001") == marker
    assert marker["data_sha256"] == hashlib.sha256(direct.fs.cat_file(direct.data_path("shard-00001"))).hexdigest()


@pytest.mark.parametrize("part", ["shards/shard-00001\\.parquet", "stats/shard-00001\\.json"])
def test_a_write_failing_for_good_raises_and_leaves_no_marker(faulty, part):
    open_output, direct, proxy = faulty
    proxy.add(Fault("PUT", rf"/out/{part}$", "500", times=None))
    with pytest.raises(RetriesExhausted, match=r"write s3://.*/out/.*shard-00001.* 3 attempts.*internal error"):
        commit(open_output(**NO_BOTOCORE_RETRIES))
    assert len(proxy.fired) == FAST.attempts
    assert puts(proxy, "/_done/") == []  # not even tried
    assert committed_shards(direct) == set() and not direct.fs.exists(direct.marker_path("shard-00001"))
    # a later run of the shard, with storage healthy again, commits it
    proxy.reset()
    marker = commit(open_output())
    assert json.loads(direct.fs.cat_file(direct.marker_path("shard-00001"))) == marker
