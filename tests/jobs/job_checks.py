"""Checks shared by the fault tests: waiting on a condition, a reference run, a corpus committed exactly once."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from segcore.io.commit import Output, committed_shards, read_marker
from segcore.runtime.driver import reduce_job, run_label_job


def wait_for(condition, timeout: float, what: str, interval: float = 0.02):
    """Polls ``condition()`` until it is truthy and returns its value; fails the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def shard_ids(n_shards: int) -> list[str]:
    """The shard ids of a ``write_demo_shards`` corpus."""
    return [f"corpus-{index:05d}" for index in range(n_shards)]


def reference_metrics(config, n_shards: int) -> dict:
    """metrics.json of an uninterrupted run (read back: JSON has string keys), plus each data file's sha256."""
    result = run_label_job(config)
    assert result["done"] == n_shards and result["failed"] == {}
    reduce_job(config)
    metrics = json.loads((Path(config.output) / "metrics.json").read_text())
    assert metrics["pq"]["All"]["n"] > 0
    output = Output.open(config.output)
    metrics["data_sha256"] = {s: read_marker(output, s)["data_sha256"] for s in committed_shards(output)}
    return metrics


def shard_files(output_dir: Path, shard_id: str) -> list[Path]:
    """Every file a shard's commit wrote (data, marker, errors, partials...): those named after the shard."""
    return sorted(p for p in output_dir.rglob(f"{shard_id}*") if p.is_file())


def check_committed_once(output_dir: Path, n_shards: int, images_per_shard: int) -> None:
    """Every shard: one data file and one marker, with its rows, and no folder holding two files of one shard;
    image ids unique and the corpus's own."""
    ids = shard_ids(n_shards)
    output = Output.open(str(output_dir))
    assert committed_shards(output) == set(ids)
    for name in (output.data_path, output.marker_path):
        expected = [Path(name(shard_id)) for shard_id in ids]
        assert sorted(expected[0].parent.iterdir()) == expected
    for shard_id in ids:
        folders = [path.parent for path in shard_files(output_dir, shard_id)]
        assert len(folders) == len(set(folders)), shard_files(output_dir, shard_id)
    image_ids = []
    for index, shard_id in enumerate(ids):
        frame = pd.read_parquet(output.data_path(shard_id))
        assert len(frame) == images_per_shard == read_marker(output, shard_id)["rows"]
        assert set(frame["status"]) == {"ok"}
        assert frame["image_id"].tolist() == [f"{index * images_per_shard + i:08d}" for i in range(images_per_shard)]
        image_ids += frame["image_id"].tolist()
    assert len(image_ids) == len(set(image_ids)) == n_shards * images_per_shard


def check_metrics_equal(output_dir: Path, reference: dict) -> None:
    """metrics.json's PQ (panopticapi's dict, and the exact sums) and the data files equal the reference run's."""
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["pq"] == reference["pq"]
    assert metrics.get("pq_exact") == reference.get("pq_exact")
    output = Output.open(str(output_dir))  # the data files are byte-identical to the uninterrupted run's
    assert {s: read_marker(output, s)["data_sha256"] for s in committed_shards(output)} == reference["data_sha256"]


# ---- processes, through /proc (Linux)


def command_line(pid: int) -> str:
    """The process's command line ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def shard_being_read(pid: int) -> str | None:
    """The id of the input shard whose tar the process has open, if any: the shard it is labelling right now."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for name in names:
        try:
            match = re.search(r"/(corpus-\d{5})\.tar$", os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
        if match:
            return match.group(1)
    return None
