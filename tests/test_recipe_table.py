"""benchmarks/recipe_table.py: the issue-24 recipe comparison's table from run folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

CLASSES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle", "traffic_cone", "barrier")


def _module():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "recipe_table.py"
    spec = importlib.util.spec_from_file_location("recipe_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_pairs_runs_by_seed(tmp_path):
    for name, base in (("lidar", 0.30), ("lidar_recipe", 0.35)):
        for seed in (0, 1):
            run = tmp_path / f"{name}_s{seed}"
            run.mkdir()
            metrics = {"mAP": base + 0.01 * seed, "NDS": 0.4, "mATE": 0.5, "mASE": 0.3, "mAOE": 0.6, "mAVE": 1.0, "mAAE": 0.5, **{f"AP/{c}": base for c in CLASSES}}
            (run / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "fusion_s0").mkdir()  # a run without metrics (unfinished) is left out
    text = _module().table(tmp_path)
    assert "### lidar_recipe vs lidar (seeds 0, 1)" in text
    assert "| mAP | 0.305 ± 0.007 | 0.355 ± 0.007 | +0.050 (+0.050, +0.050) | [+0.050, +0.050]* |" in text
    assert "| rare mean AP | 0.300 ± 0.000 | 0.350 ± 0.000 | +0.050" in text
    assert "### fusion_recipe vs fusion (seeds none)" in text and "| mAP | - | - | - | - |" in text


def test_interval_is_students_t_over_seeds():
    module = _module()
    # mean 0.02, stdev 0.01, 3 seeds: half width 4.303 * 0.01 / sqrt(3) = 0.0248
    assert module._interval([0.01, 0.02, 0.03]) == "[-0.005, +0.045]"
    assert module._interval([0.01]) == "-"
    assert module._interval([0.02, 0.03, 0.04]) == "[+0.005, +0.055]*"  # excludes zero
