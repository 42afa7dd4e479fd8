"""bench/padding_waste.py --smoke: waste and fill for every backend and batching strategy end up in its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_reports_every_backend_and_strategy(tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "padding_waste.py"), "--smoke", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert {"args", "machine", "weights", "drawn", "strategies", "batches"} <= set(document)
    (batch,) = document["batches"].values()
    assert len(batch["waste"]) == 5
    for row in batch["waste"].values():
        assert set(row) == set(document["strategies"])
        assert all({"waste", "fill", "batches"} <= set(cell) and 0 <= cell["waste"] < 1 for cell in row.values())
    assert set(batch["semantic_images_per_pass"]) == set(document["strategies"])
