"""train_stage: a finished or half-finished run in a stage's folder is reused only for the config it was trained with."""

import pytest
import yaml

from bevsimdet.config import load_config
from bevsimdet.engine.train import stage_config_diff, train_stage
from bevsimdet.errors import UserError
from bevsimdet.io import plain

CONFIG = "configs/demo_fusion.yaml"


def _finished_run(run_dir, overrides):
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = run_dir / "checkpoints" / "latest.safetensors"
    ckpt.write_bytes(b"weights")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(plain(load_config(CONFIG, overrides)), sort_keys=False))
    (run_dir / "DONE").write_text(str(ckpt))
    return ckpt


def _never_trains(resume):
    raise AssertionError("a finished run of the same config must be reused, not trained again")


def test_finished_run_of_the_same_config_is_reused(tmp_path):
    ckpt = _finished_run(tmp_path / "teacher", ["seed=23", "data.dataroot=/a"])
    logged = []
    # the dataroot may move; the run is the same
    cfg = load_config(CONFIG, ["seed=23", "data.dataroot=/b"])
    assert train_stage(tmp_path / "teacher", _never_trains, logged.append, cfg) == ckpt
    assert logged == [f"reusing {ckpt}"]


def test_run_of_another_split_is_refused_with_the_keys_and_the_fix(tmp_path):
    # an older demo's folder (v1.0-mini, mini_val) must not be reported as this demo's result
    _finished_run(tmp_path / "teacher", ["seed=23"])
    cfg = load_config(CONFIG, ["seed=23", "data.version=v1.0-trainval", "data.train_split=train", "data.val_split=val"])
    with pytest.raises(UserError) as err:
        train_stage(tmp_path / "teacher", _never_trains, lambda m: None, cfg)
    message = str(err.value)
    assert "data.version, data.train_split, data.val_split differ" in message and "config.yaml" in message
    assert "delete" in err.value.fix and "teacher" in err.value.fix


def test_half_finished_run_of_another_seed_is_refused(tmp_path):
    run = tmp_path / "camera"
    _finished_run(run, ["seed=1"])
    (run / "DONE").unlink()  # stopped part-way: it would be resumed
    with pytest.raises(UserError, match="seed differ"):
        train_stage(run, _never_trains, lambda m: None, load_config(CONFIG, ["seed=2"]))


def test_without_a_config_the_folder_is_trusted_and_an_empty_folder_trains(tmp_path):
    ckpt = _finished_run(tmp_path / "old", ["seed=1"])
    assert train_stage(tmp_path / "old", _never_trains, lambda m: None) == ckpt
    new_ckpt = tmp_path / "new" / "w.safetensors"

    def train(resume):
        assert resume is False
        new_ckpt.parent.mkdir(parents=True, exist_ok=True)
        new_ckpt.write_bytes(b"w")
        return new_ckpt

    assert train_stage(tmp_path / "new", train, lambda m: None, load_config(CONFIG, ["seed=1"])) == new_ckpt
    assert (tmp_path / "new" / "DONE").read_text() == str(new_ckpt)


def test_stage_config_diff_names_leaves():
    a = {"seed": 1, "model": {"head": {"classes": 10}}, "data": {"version": "v1.0-mini", "dataroot": "/a"}, "train": {"max_steps": 720}}
    b = {"seed": 1, "model": {"head": {"classes": 5}}, "data": {"version": "v1.0-mini", "dataroot": "/b"}, "train": {"max_steps": 1440}}
    assert stage_config_diff(a, b) == ["model.head.classes", "train.max_steps"]


def test_a_stopped_stage_says_to_run_the_same_command_again(tmp_path):
    # demo / ablate / claim resume their stages themselves: the hint is theirs, not train's --resume
    from bevsimdet.engine.train import TrainingInterrupted

    def stopped(resume):
        raise TrainingInterrupted("stopped by signal at step 3/10; ...; continue with --resume", 2, 3, 10, tmp_path / "c")

    with pytest.raises(TrainingInterrupted) as err:
        train_stage(tmp_path / "camera", stopped, lambda m: None, load_config(CONFIG, ["seed=1"]))
    message = str(err.value)
    assert "step 3/10" in message and str(tmp_path / "camera") in message
    assert "run the same command again" in message and "--resume" not in message
    assert err.value.signum == 2 and not (tmp_path / "camera" / "DONE").exists()
