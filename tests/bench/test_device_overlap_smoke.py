"""bench/device_overlap.py --smoke: device utilisation, CPU per image and the stage split end up in its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_reports_utilisation_for_both_truth_settings(tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "device_overlap.py"), "--smoke", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert {(r["shard_images"], r["device_ms"], r["truth"]) for r in document["results"]} == {
        (8, 1.0, "no gt"), (8, 1.0, "with gt")}
    for row in document["results"]:
        utilisation = row["device_utilisation"]
        assert 0 < utilisation["best_run"] <= 1 and len(utilisation["per_repeat"]) == 1
        assert row["pipeline_img_s"] <= row["device_only_img_s"]
        assert row["cpu_ms_per_image"] > 0
        assert {"decode_wait", "forward", "to_host", "encode_wait", "write", "read", "decode", "encode"} <= set(
            row["stages_ms_per_image"])
