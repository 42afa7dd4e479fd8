"""bench/driver_listing.py --smoke: listing, planning and the marker scan are timed and traced for each count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_reports_every_step_for_both_inputs(tmp_path):
    out = tmp_path / "result.json"
    command = [sys.executable, str(ROOT / "bench" / "driver_listing.py"), "--smoke", "--root", str(tmp_path / "root"),
               "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert {"args", "machine", "load", "files_seconds", "rows", "manifest_encoding"} <= set(document)
    assert set(document["manifest_encoding"]) == {"indent=1", "compact"}
    assert {(row["input"], row["count"]) for row in document["rows"]} == {
        ("brace", 10), ("glob", 10), ("brace", 100), ("glob", 100)}
    for row in document["rows"]:
        assert set(row["seconds"]) == set(row["memory"]) == {
            "list_shards", "plan (new)", "plan (resume)", "committed_shards"}
        assert all(len(times) == 1 for times in row["seconds"].values())
        assert all({"tracemalloc_peak_mib", "rss_after_mib", "peak_rss_mib"} <= set(m) for m in row["memory"].values())
