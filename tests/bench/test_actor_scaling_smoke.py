"""bench/actor_scaling.py --smoke: 1 and 2 worker processes behind one barrier, summed rates and ratios in its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_reports_both_actor_counts_with_and_without_truth(tmp_path):
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "actor_scaling.py"), "--smoke", "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(out.read_text())
    rows = {(row["actors"], row["truth"]): row for row in document["rows"]}
    assert set(rows) == {(1, "no gt"), (1, "with gt"), (2, "no gt"), (2, "with gt")}
    assert rows[(1, "no gt")]["ratio_to_n_times_one"] == 1.0
    for (actors, truth), row in rows.items():
        assert len(document["runs"][str(actors)]) == actors
        single = rows[(1, truth)]["img_s"]
        assert row["ratio_to_n_times_one"] == pytest.approx(row["img_s"] / (actors * single))
        assert 0 < row["device_utilisation_mean"] <= 1
