"""End to end on the tiny synthetic world: the real CLI, data layer, detector and evaluator."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("bevsimdet.data.dataset")
pytest.importorskip("bevsimdet.models.build")

from bevsimdet.engine.checkpoint import CheckpointError, read_checkpoint  # noqa: E402

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo_lidar.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
FAST = ["--set", "train.num_workers=0", "--set", "train.log_interval=1", "--no-progress"]


def bevsimdet(*args):
    return subprocess.run([sys.executable, "-m", "bevsimdet", *args], capture_output=True, text=True, timeout=300, env=ENV)


def step_of(path: Path) -> int:
    try:
        return read_checkpoint(path)[1]["step"]
    except CheckpointError:
        return -1


@pytest.mark.slow
def test_train_evaluate_infer(tiny_world, tmp_path):
    work = tmp_path / "run"
    r = bevsimdet("train", CONFIG, "--dataroot", str(tiny_world), "--work-dir", str(work),
                  "--set", "train.max_steps=2", "--set", "train.checkpoint_interval=1", *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {"config.yaml", "log.jsonl", "metrics.json", "checkpoints", "tensorboard"} <= {p.name for p in work.iterdir()}
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["step"] == 2 and 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["NDS"] <= 1.0
    ckpt = work / "checkpoints" / "latest.safetensors"
    r = bevsimdet("evaluate-model", str(work / "config.yaml"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.json"), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "m.json").read_text())["NDS"] == pytest.approx(metrics["NDS"])
    # a cap beyond every class range changes nothing; a short one says what it scored
    r = bevsimdet("evaluate-model", str(work / "config.yaml"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "far.json"),
                  "--max-range", "100", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    far = json.loads((tmp_path / "far.json").read_text())
    assert far["max_range"] == 100.0 and far["NDS"] == pytest.approx(metrics["NDS"]) and "capped at 100 m" in r.stdout
    r = bevsimdet("evaluate-model", str(work / "config.yaml"), "--checkpoint", str(ckpt), "--max-range", "-1", "--no-progress")
    assert r.returncode != 0 and "--max-range must be a positive" in r.stderr and "Traceback" not in r.stderr
    r = bevsimdet("infer", str(work / "config.yaml"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "res.json"), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "res.json").read_text())["meta"]["use_lidar"] is True


@pytest.mark.slow
def test_cli_sigterm_saves_and_resume_finishes(tiny_world, tmp_path):
    work = tmp_path / "run"
    latest = work / "checkpoints" / "latest.safetensors"
    args = ["train", CONFIG, "--dataroot", str(tiny_world), "--work-dir", str(work),
            "--set", "train.max_steps=200", "--set", "train.checkpoint_interval=1", "--set", "train.validate=false", *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "bevsimdet", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while step_of(latest) < 1:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "continue with --resume" in err and "Traceback" not in err
    stopped = step_of(latest)
    assert 1 <= stopped < 200
    r = bevsimdet(*[a if a != "train.max_steps=200" else f"train.max_steps={stopped + 1}" for a in args], "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert step_of(latest) == stopped + 1
