"""Shared fixtures: the real COCO sample, categories, synthetic corpora, and a module-scoped local Ray."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from segcore.categories import categories_from_json

DATA = Path(__file__).parent / "data"
COCO_SAMPLE = DATA / "coco_panoptic_sample"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def coco_sample() -> Path:
    """The real COCO panoptic sample: two val images, their gt JSON and PNGs."""
    return COCO_SAMPLE


@pytest.fixture(scope="session")
def coco_gt() -> dict:
    return json.loads((COCO_SAMPLE / "panoptic_examples.json").read_text())


@pytest.fixture(scope="session")
def coco_categories(coco_gt):
    return categories_from_json(coco_gt)


@pytest.fixture()
def coco_copy(tmp_path) -> Path:
    """A writable copy of the COCO sample's gt JSON and PNG folder (gt.json + gt/)."""
    shutil.copy(COCO_SAMPLE / "panoptic_examples.json", tmp_path / "gt.json")
    shutil.copytree(COCO_SAMPLE / "panoptic_examples", tmp_path / "gt")
    return tmp_path


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
    """A small seeded synthetic corpus (gt.json, gt/, pred.json, pred/)."""
    from segcore.synthetic import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"), 24, seed=7, height=120, width=160, processes=1)


@pytest.fixture()
def small_disk(tmp_path):
    """A real, small file system: a tmpfs of 4 MiB mounted under tmp_path (skipped where mounting is not allowed,
    e.g. without root). Yields its path; unmounted afterwards."""
    import subprocess

    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs, shut down after the module."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 server (moto in server mode, over HTTP); yields fsspec storage options for s3fs."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://{host}:{port}",
}}
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A fresh bucket on the local S3 server: ``(bucket URI, storage options)``."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server, skip_instance_cache=True)
    name = "test-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    fs.mkdir(name)
    return f"s3://{name}", s3_server
