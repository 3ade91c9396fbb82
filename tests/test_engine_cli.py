import subprocess
import sys

from test_engine_toy import ToyModel

from bevsimdet.config import config_to_dict, load_config
from bevsimdet.engine.checkpoint import save_checkpoint
from bevsimdet.engine.config import TrainConfig
from bevsimdet.engine.train import total_steps


def bevsimdet(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bevsimdet", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_train_evaluate_model_infer_help():
    r = bevsimdet("train", "--help")
    assert r.returncode == 0
    for opt in ("--dataroot", "--work-dir", "--resume", "--set"):
        assert opt in r.stdout
    for cmd in ("evaluate-model", "infer"):
        r = bevsimdet(cmd, "--help")
        assert r.returncode == 0
        for opt in ("--checkpoint", "--split", "--out"):
            assert opt in r.stdout


def test_train_user_errors_are_one_line(tmp_path, capsys):
    # in-process (the same main() as the console script): four interpreters importing torch cost ~10 s
    from test_infer_cli import cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {lr: 1.0e-3}\n")
    code, _, err = cli(capsys, "train", str(cfg), "--work-dir", str(tmp_path / "run"), "--resume")
    assert code == 2 and err.startswith("error: --resume: no checkpoint") and err.count("\n") == 1
    stored = config_to_dict(load_config(cfg, ["model.type=lidar"]))
    save_checkpoint(tmp_path / "run" / "checkpoints" / "latest.safetensors", model=ToyModel(), config=stored)
    code, _, err = cli(capsys, "train", str(cfg), "--work-dir", str(tmp_path / "run"))
    assert code == 2 and "already holds a training run" in err and "--resume" in err
    code, _, err = cli(capsys, "train", str(cfg), "--work-dir", str(tmp_path / "run"), "--resume", "--set", "model.type=camera")
    assert code == 2 and "different config: model.type differs" in err
    code, _, err = cli(capsys, "train", str(cfg), "--work-dir", str(tmp_path / "x"), "--set", "train.no_such_key=1")
    assert code == 2 and "unknown config key 'train.no_such_key'" in err


def test_total_steps():
    assert total_steps(TrainConfig(epochs=3, accum_steps=2), batches_per_epoch=5) == 7
    assert total_steps(TrainConfig(epochs=3, max_steps=11), batches_per_epoch=5) == 11
    assert total_steps(TrainConfig(epochs=1, accum_steps=4), batches_per_epoch=2) == 1
