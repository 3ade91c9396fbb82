"""A multi-process run from a cold start: info files built once before the process group, and
validation gathered on rank 0 only (2 CPU processes, gloo, under torchrun)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bevsimdet.config import load_config
from bevsimdet.data.dataset import ensure_infos
from bevsimdet.errors import DataError
from bevsimdet.io import LockTimeout, file_lock

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo_lidar.yaml")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_file_lock_times_out_while_another_holder_has_it(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    with file_lock(lock, 1.0):
        with pytest.raises(LockTimeout, match="waited 0.2 s"):
            with file_lock(lock, 0.2, poll_s=0.05):
                pass
    with file_lock(lock, 0.2):  # released on leaving the block
        pass


def test_waiting_too_long_for_a_builder_names_the_prepare_command(tmp_path):
    cfg = load_config(None, [f"data.dataroot={tmp_path / 'world'}", f"data.info_dir={tmp_path / 'infos'}"]).data
    with file_lock(tmp_path / "infos" / ".prepare.lock", 5.0):  # another process is building
        with pytest.raises(DataError) as err:
            ensure_infos(cfg, cfg.train_split, progress=False, wait_s=0.2)
        with pytest.raises(DataError, match="split 'nope' does not exist in v1.0-mini"):
            ensure_infos(cfg, "nope", progress=False, wait_s=0.2)  # at once: no process builds for it
    msg = str(err.value)
    assert "\n" not in msg and "waited 0.2 s" in msg
    assert f"bevsimdet prepare --dataroot {tmp_path / 'world'} --version {cfg.version} --max-sweeps {cfg.max_sweeps} --out {tmp_path / 'infos'}" in msg


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_process_run_from_missing_infos(tiny_world, tmp_path):
    """Both ranks find the infos missing: exactly one builds them (the other waits on the lock,
    not in a collective), training and validation finish, and rank 0 alone writes the metrics."""
    infos = tmp_path / "infos"
    work = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bevsimdet", "train", CONFIG, "--dataroot", str(tiny_world), "--work-dir", str(work), "--no-progress",
           "--set", f"data.info_dir={infos}", "--set", "data.prepare_workers=1", "--set", "train.max_steps=2",
           "--set", "train.num_workers=0", "--set", "train.device=cpu", "--set", "train.dist_timeout_s=120"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=230)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert out.count("building the info files") == 1, out[-4000:]
    assert {p.name for p in infos.glob("infos_*")} == {"infos_mini_train.cols", "infos_mini_val.cols"}
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["step"] == 2 and 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["NDS"] <= 1.0
    val = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines() if '"val"' in line]
    assert val and val[-1]["NDS"] == pytest.approx(metrics["NDS"])
