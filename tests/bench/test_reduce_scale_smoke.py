"""bench/reduce_scale.py --smoke: a real output replicated to a few shards reduces to the same PQ at every count,
locally and behind the slow local S3 store, with nothing left out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_reduces_every_replicated_output_to_the_same_pq(tmp_path):
    pytest.importorskip("moto")
    out = tmp_path / "result.json"
    command = [sys.executable, str(ROOT / "bench" / "reduce_scale.py"), "--smoke", "--root", str(tmp_path),
               "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(row["store"], row["shards"]) for row in rows] == [("local", 2), ("local", 6), ("s3 + 30 ms", 4)]
    for row in rows:
        assert row["left_out"] == 0 and row["images"] == 2 * row["shards"]
        # the two source shards, each replicated as often: the same PQ (up to the rounding of longer sums)
        assert row["pq"] == pytest.approx(rows[0]["pq"], rel=1e-12)
        assert row["peak_rss_mib"] > 0 and row["cpu_s"] > 0
    assert rows[-1]["requests_per_shard"] > 0
