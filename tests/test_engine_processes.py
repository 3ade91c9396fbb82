"""Training in subprocesses: SIGKILL + resume, and a 2-process gloo DDP run under torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_engine_toy import ToyModel, make_trainer, state_equal

from bevsimdet.engine.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

SCRIPT = str(Path(__file__).with_name("test_engine_toy.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def checkpoint_step(path: Path) -> int:
    try:
        return read_checkpoint(path)[1]["step"]
    except CheckpointError:
        return -1


def test_sigkill_mid_run_then_resume_matches_straight_run(tmp_path):
    work = tmp_path / "run"
    latest = work / "checkpoints" / "latest.safetensors"
    args = [sys.executable, SCRIPT, "--work-dir", str(work), "--max-steps", "8"]
    proc = subprocess.Popen([*args, "--sleep", "0.1"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while checkpoint_step(latest) < 3:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    killed_at = checkpoint_step(latest)
    assert 3 <= killed_at < 8
    done = subprocess.run([*args, "--resume"], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((work / "result.json").read_text())["step"] == 8

    straight = make_trainer(tmp_path / "straight", max_steps=8, accum_steps=2, checkpoint_interval=1)
    straight.fit()
    resumed = ToyModel(8, 0.1)
    load_checkpoint(latest, model=resumed)
    assert state_equal(resumed.state_dict(), straight.model.state_dict())


@pytest.mark.timeout(120)
def test_ddp_two_cpu_processes(tmp_path):
    """gloo DDP for a few steps: identical weights on both ranks; a barrier one rank skips times out."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           SCRIPT, "--work-dir", str(tmp_path), "--max-steps", "3", "--gather-timeout", "1"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=110)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["step"] == 3
    rank0, rank1 = result["sums"]
    assert rank0 == rank1
    single = make_trainer(tmp_path / "single", max_steps=3, accum_steps=2)
    single.fit()
    assert rank0 != [float(p.detach().double().sum()) for p in single.model.parameters()]  # the ranks saw other data
    outcome = (tmp_path / "barrier.txt").read_text()
    assert outcome.startswith("error after") and float(outcome.split()[2][:-2]) < 10, outcome
    assert read_checkpoint(tmp_path / "checkpoints" / "latest.safetensors")[1]["step"] == 3
