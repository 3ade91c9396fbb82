"""benchmarks/gpu_claim.py's bookkeeping on hand-written run logs (its trainings need a GPU's minutes)."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_claim.py"


@pytest.fixture(scope="module")
def claim():
    spec = importlib.util.spec_from_file_location("gpu_claim", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(run, train_steps, vals):
    run.dir.mkdir(parents=True)
    rows = [{"kind": "train", "step": s, "time": 100.0 + s / 2} for s in train_steps]  # 2 steps/s
    rows += [{"kind": "val", "step": s, "mAP": m, "NDS": m * 2, "mATE": 1.0} for s, m in vals]
    (run.dir / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"kind\": \"tr")  # a half-written line


def test_rates_and_summary_compare_seeds_at_a_common_step(claim, tmp_path):
    a, b, c = (claim.Run(n, k, s, tmp_path) for n, k, s in [("camera_s0", "camera", 0), ("camera_s1", "camera", 1), ("student_s0", "student", 0)])
    _write(a, [5, 10, 15, 20], [(10, 0.1), (20, 0.3)])
    _write(b, [5, 10, 15], [(10, 0.2)])  # cut off before its second validation
    _write(c, [5], [])
    assert a.rate() == pytest.approx(2.0) and c.rate() is None
    text, data = claim.summary([a, b, c], {"gpu": "test"})
    assert data["runs"]["camera_s0"]["last_step"] == 20 and data["runs"]["student_s0"]["val"] == []
    # camera_s0 reached step 20, camera_s1 only 10: both are compared at step 10
    assert "- camera (n=2, step 10): mAP 0.1500 ± 0.0707" in text
    assert "student (n=" not in text
    assert "| camera_s0 | 20 | 20 | 0.3000 | 0.6000 | 1.0000 |" in text

    out = tmp_path / "out"
    out.mkdir()
    claim.pack(out, tmp_path, [a, b, c], {"gpu": "test"})
    assert json.loads((out / "summary.json").read_text())["info"] == {"gpu": "test"}
    with tarfile.open(out / "runs.tar.gz") as tar:
        assert {"camera_s0/log.jsonl", "camera_s1/log.jsonl", "student_s0/log.jsonl"} <= set(tar.getnames())
    assert not list(out.glob(".*.tmp"))
