"""Secrets in URLs: a presigned http(s) input (a local HTTP server) is read with its query, and neither the
signature nor user:password reach the logs, the manifest, the rows, the errors or the reports."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from segcore.io.commit import Output
from segcore.io.shards import expand_input, list_shards, read_shard
from segcore.io.storage import redact_uri
from segcore.models.registry import ModelOptions
from segcore.runtime.labeling import LabelJobConfig, plan
from segcore.runtime.reduce import reduce_output
from segcore.runtime.worker import ShardWorker
from segcore.synthetic import write_demo_shards

SECRET, KEY_ID = "t0pS3cr3tSignature", "AKIAEXAMPLEKEYID"


@pytest.mark.parametrize("uri, shown", [
    ("https://b.s3.amazonaws.com/x.tar?X-Amz-Signature=s&X-Amz-Credential=c", "https://b.s3.amazonaws.com/x.tar?REDACTED"),
    ("https://user:pw@host:8080/a/x.tar", "https://host:8080/a/x.tar"),
    ("abfs://container@account.dfs.core.windows.net/x.tar?sv=1&sig=s",
     "abfs://container@account.dfs.core.windows.net/x.tar?REDACTED"),
    ("tar://a.jpg::https://u:p@h/s.tar?sig=s", "tar://a.jpg::https://h/s.tar?REDACTED"),
    ("s3://bucket/x.tar", "s3://bucket/x.tar"), ("/data/x?.tar", "/data/x?.tar"),
])
def test_redaction_drops_queries_and_passwords_only(uri, shown):
    assert redact_uri(uri) == shown


@pytest.fixture()
def http_corpus(tmp_path):
    """A demo tar served over HTTP on 127.0.0.1 (the server ignores query strings, as a presigned URL's host
    checks them)."""
    write_demo_shards(tmp_path / "corpus", n_shards=1, images_per_shard=3)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "corpus"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/corpus-00000.tar"
    server.shutdown()


def test_http_inputs_with_and_without_a_query_are_read(http_corpus):
    signed = f"{http_corpus}?X-Amz-Signature={SECRET}"
    assert expand_input(signed) == [signed]  # "?" starts the query, not a glob
    for uri in (http_corpus, signed):
        (spec,) = list_shards(uri)
        assert spec.kind == "tar" and spec.shard_id == "corpus-00000"
        assert len([s for s in read_shard(spec) if s.image_bytes]) == 3


def test_a_presigned_input_leaves_no_secret_in_the_output_or_the_logs(http_corpus, tmp_path, caplog):
    host = http_corpus.split("//", 1)[1]
    signed = f"http://user:{KEY_ID}@{host}?X-Amz-Signature={SECRET}&X-Amz-Credential={KEY_ID}"
    config = LabelJobConfig(input=signed, output=str(tmp_path / "labels"), model="demo",
                            model_options=ModelOptions(device="cpu"), batch_size=3, decode_threads=1,
                            encode_threads=1)
    with caplog.at_level("INFO"):  # the job logs at INFO (fsspec's own DEBUG lines print the URLs it fetches)
        job = plan(config)
        worker = ShardWorker(config.worker_config(job.categories))
        try:
            summary = worker.label_shard(job.shards[0], 0)
        finally:
            worker.close()
            job.lock.release()
        reduce_output(Output.open(config.output))
    assert summary["images"] == 3
    written = b"".join(path.read_bytes() for path in (tmp_path / "labels").rglob("*") if path.is_file())
    for secret in (SECRET, KEY_ID):
        assert secret.encode() not in written
        assert secret not in caplog.text
    assert f"http://{host}?REDACTED#".encode() in written  # rows name their source, without the secret
