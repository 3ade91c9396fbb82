"""`bevsimdet ablate`: mean and spread over seeds, reuse of finished runs, bad input."""

import json
import statistics
import subprocess
import sys

import pytest

from bevsimdet.distill.ablate import DEFAULT_CONFIGS, METRIC_KEYS, AblationRow, render_ablation, run_ablation
from bevsimdet.errors import UserError

# What is tested is ablate's bookkeeping (seeds, reuse, the report), so the runs are as small as they
# go: train.validate=false (ablate evaluates every run itself; validating at the end of training too
# would evaluate each run twice), the from-scratch tiny backbone instead of the demo's EfficientNet
# (most of a run's time), and score_threshold=0.3 (untrained heads score ~0.1 everywhere, and
# decoding ~1000 such candidates per task through rotated NMS dominates an evaluation).
QUICK = ["train.max_steps=2", "train.checkpoint_interval=2", "train.log_interval=1", "train.validate=false",
         "model.head.score_threshold=0.3", "model.image.arch=tiny", "model.image.pretrained=null",
         "model.image.frozen_stages=-1"]


def _row(name, maps):
    values = {k: [0.5] * len(maps) for k in METRIC_KEYS}
    values["mAP"] = list(maps)
    return AblationRow(name, list(range(len(maps))), values)


def test_mean_and_spread_are_over_seeds():
    row = _row("full", [0.1, 0.2, 0.6])
    assert row.mean("mAP") == pytest.approx(0.3)
    assert row.spread("mAP") == pytest.approx(statistics.stdev([0.1, 0.2, 0.6]))
    assert _row("one", [0.4]).spread("mAP") == 0.0
    table = render_ablation([_row("baseline", [0.1, 0.1, 0.1]), row])
    assert "| full | 0,1,2 | 0.3000 ± 0.2646 |" in table
    assert "Per seed" in table and "0.6000 / 0.5000 / 0.500" in table


def test_default_configs_exist_and_bad_input_is_one_line(tmp_path):
    from bevsimdet.config import load_config

    names = [load_config(p).name for p in DEFAULT_CONFIGS]
    assert names[0] == "demo_camera" and names[-1] == "full" and len(set(names)) == len(names)
    with pytest.raises(UserError, match="not found"):
        run_ablation([str(tmp_path / "nope.yaml")], [0], tmp_path)
    with pytest.raises(UserError, match="--teacher"):
        run_ablation([DEFAULT_CONFIGS[-1]], [0], tmp_path, teacher=tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="share a name"):
        run_ablation([DEFAULT_CONFIGS[0], DEFAULT_CONFIGS[0]], [0], tmp_path)
    with pytest.raises(UserError, match="--seed 0 --seed 1"):
        run_ablation([DEFAULT_CONFIGS[0]], [], tmp_path)


@pytest.mark.slow
def test_ablate_cli_end_to_end(tiny_world, tmp_path):
    from bevsimdet.config import load_config
    from bevsimdet.engine.train import run_training

    teacher_cfg = load_config(DEFAULT_CONFIGS[0].replace("demo_camera", "demo_fusion"), [f"data.dataroot={tiny_world}", *QUICK])
    teacher = run_training(teacher_cfg, tmp_path / "teacher", progress=False)
    out = tmp_path / "ablation"
    cmd = [sys.executable, "-m", "bevsimdet", "ablate", DEFAULT_CONFIGS[0], DEFAULT_CONFIGS[2], "--teacher", str(teacher),
           "--seed", "0", "--seed", "1", "--out", str(out), "--dataroot", str(tiny_world), "--no-progress",
           *[a for s in QUICK for a in ("--set", s)]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "ablation.json").read_text())
    assert doc["seeds"] == [0, 1] and [row["name"] for row in doc["rows"]] == ["demo_camera", "depth_only"]
    for row in doc["rows"]:
        assert all(len(row["values"][k]) == 2 for k in METRIC_KEYS)
    # the two seeds really are different runs
    logs = [(out / "depth_only" / f"seed{s}" / "log.jsonl").read_text() for s in (0, 1)]
    assert logs[0] != logs[1]
    assert "± " in (out / "ablation.md").read_text()
    # a rerun reuses every finished run and its evaluation
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r2.returncode == 0 and r2.stderr.count("reusing") == 4
