"""The jobs.evaluate command line: table, metrics file, errors and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from jobs import evaluate as job

GOLDEN = Path(__file__).parents[1] / "data" / "golden"


def test_writes_panopticapis_dict_under_pq(tmp_path, capsys):
    case = json.loads((GOLDEN / "expected.json").read_text())["cases"]["mixed"]
    paths = {k: str(GOLDEN / v) for k, v in case["paths"].items()}
    out = tmp_path / "m.json"
    code = job.main(
        ["--gt-json", paths["gt_json"], "--gt-dir", paths["gt_folder"], "--pred-json", paths["pred_json"],
         "--out", str(out), "--per-class"]
    )
    assert code == 0
    metrics = json.loads(out.read_text())
    assert metrics["pq"]["All"] == case["All"] and metrics["pq"]["per_class"] == case["per_class"]
    printed = capsys.readouterr().out
    assert "All       |  {:4.1f}".format(100 * case["All"]["pq"]) in printed and "person" in printed


def test_bad_input_exits_2_with_the_image_named(tmp_path, coco_sample, capsys):
    shutil.copy(coco_sample / "panoptic_examples.json", tmp_path / "gt.json")
    document = json.loads((tmp_path / "gt.json").read_text())
    document["annotations"] = document["annotations"][:1]
    (tmp_path / "pred.json").write_text(json.dumps(document))
    code = job.main(["--gt-json", str(tmp_path / "gt.json"), "--gt-dir", str(coco_sample / "panoptic_examples"),
                     "--pred-json", str(tmp_path / "pred.json")])
    assert code == 2
    assert "Image 439180: no prediction" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jobs.evaluate", "--help"], capture_output=True, text=True, check=True
    )
    assert "--gt-json" in result.stdout and "--workers" in result.stdout
