"""bench/cpu_per_image.py --smoke: every stage, goal 2 and goal 4 figures and a profile end up in its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_reports_every_stage_and_both_goals(tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_per_image.py"), "--smoke", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    assert {"args", "machine", "load", "corpus", "stages", "goal2", "goal4", "profile", "times"} <= set(document)
    for stage in ("decode_rgb: JPEG (COCO crop)", "encode_ids: PNG (level 6, default)", "match_image: PQ partial",
                  "rows_to_table + table_to_parquet (per image)",
                  "ShardWorker._image_row: no gt", "ShardWorker._image_row: with gt",
                  "label_shard, zero-cost model, with gt (process CPU)",
                  "label_shard, zero-cost model, no gt (process CPU)"):
        assert {"best_ms", "median_ms", "x_decode"} <= set(document["stages"][stage])
    assert document["stages"]["decode_rgb: JPEG (COCO crop)"]["x_decode"] == 1.0
    assert {"decode_ms", "worker_outside_model_x_decode", "with_demo_pre_post_x_decode"} <= set(document["goal2"])
    assert {"gt_work_ms", "share_of_cpu_outside_model", "parts_ms"} <= set(document["goal4"])
    assert document["profile"] and {"function", "own_ms_per_image"} <= set(document["profile"][0])
