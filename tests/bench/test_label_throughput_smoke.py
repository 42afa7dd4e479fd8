"""bench/label_throughput.py --smoke: the labeling job benchmark runs end to end on its own local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_reports_both_actor_counts_and_every_stage(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "label_throughput.py"), "--smoke", "--corpus-root",
               str(tmp_path / "corpus"), "--out-root", str(tmp_path / "out"), "--json", str(tmp_path / "result.json")]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("|")}
    assert {"1", "2"} <= rows
    assert {"decode_wait", "preprocess", "forward", "postprocess", "to_host", "encode_wait", "write", "other",
            "actor total", "read (threads, overlapped)", "decode (threads, overlapped)",
            "encode (threads, overlapped)"} <= rows
    assert "2 actors / 1 actor" in result.stdout
    document = json.loads((tmp_path / "result.json").read_text())
    assert {n: row["images"] for n, row in document["best"].items()} == {"1": 4, "2": 4}
