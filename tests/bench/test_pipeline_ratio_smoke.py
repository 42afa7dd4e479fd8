"""bench/pipeline_ratio.py --smoke: pipeline and forward-only rates, their ratio and the stage split in its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_run_reports_both_rates_and_their_ratio(tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "pipeline_ratio.py"), "--smoke", "--device", "cpu",
                             "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["pipeline_img_s"] > 0 and document["forward_only_img_s"] > 0
    assert document["ratio_of_bests"] == document["pipeline_img_s"] / document["forward_only_img_s"]
    assert len(document["ratio_per_repeat"]) == 1
    assert {"read", "decode_wait", "preprocess", "forward", "postprocess", "to_host", "encode_wait", "encode",
            "write"} <= set(
        document["stages_ms_per_image"])
    assert 0 <= document["padding_waste"] < 1
