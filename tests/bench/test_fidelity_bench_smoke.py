"""bench/postprocess.py and bench/parity.py, smoke runs: every family reported, the agreement complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_postprocess_times_every_family(tmp_path):
    out = tmp_path / "postprocess.json"
    result = run("postprocess.py", "--kept", "5", "--repeats", "1", "--threads", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["family"] for r in rows] == ["eomt", "mask2former", "oneformer", "maskformer", "detr"]
    assert all(r["ms"] > 0 and r["segments"] > 0 for r in rows)


def test_parity_reports_full_agreement(tmp_path):
    out = tmp_path / "parity.json"
    result = run("parity.py", "--seeds", "1", "--threads", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {"detr", "maskformer", "mask2former", "oneformer", "eomt", "eomt_dinov3", "demo, photos"} <= set(rows)
    assert all(row["lowest"] >= 0.999 for row in rows.values())
