import pickle

import pytest
import torch
from test_engine_toy import ToyModel, make_trainer, state_equal

from bevsimdet.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_config_compatible,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from bevsimdet.engine.ema import ModelEMA
from bevsimdet.errors import UserError


def trained(tmp_path, steps=3):
    t = make_trainer(tmp_path, max_steps=steps, checkpoint_interval=1)
    t.fit()
    return t


def test_roundtrip_restores_model_optimizer_scheduler(tmp_path):
    t = trained(tmp_path / "run")
    path = save_checkpoint(tmp_path / "c.safetensors", model=t.model, optimizer=t.optimizer, scheduler=t.scheduler, step=3, config={"model": {"a": 1}})
    fresh = make_trainer(tmp_path / "other", max_steps=3)
    meta = load_checkpoint(path, model=fresh.model, optimizer=fresh.optimizer, scheduler=fresh.scheduler)
    assert meta["step"] == 3 and meta["config"] == {"model": {"a": 1}}
    assert state_equal(fresh.model.state_dict(), t.model.state_dict())
    a, b = fresh.optimizer.state_dict(), t.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert all(state_equal(a["state"][i], b["state"][i]) for i in b["state"])
    assert fresh.scheduler.state_dict() == t.scheduler.state_dict()


def test_load_uses_no_pickle(tmp_path, monkeypatch):
    t = trained(tmp_path)

    def forbidden(*a, **k):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    fresh = make_trainer(tmp_path / "x", max_steps=3)
    fresh.resume(tmp_path / "checkpoints" / "latest.safetensors")
    assert state_equal(fresh.model.state_dict(), t.model.state_dict())


def test_torch_weights_file_is_loaded_with_weights_only(tmp_path):
    model = ToyModel(8)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pth")
    other = ToyModel(8)
    load_checkpoint(tmp_path / "w.pth", model=other)
    assert state_equal(other.state_dict(), model.state_dict())
    torch.save({"weights": model.state_dict(), "evil": ToyModel}, tmp_path / "evil.pth")  # a pickled class
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_checkpoint(tmp_path / "evil.pth", model=other)


def test_incompatible_checkpoint_names_keys(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", model=ToyModel(8))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "c.safetensors", model=ToyModel(16))
    msg = str(e.value)
    assert "does not fit this model" in msg and "backbone.0.weight: checkpoint [8, 4] vs model [16, 4]" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match=r"unexpected 2 keys \(backbone.0.bias, backbone.0.weight\)"):
        load_checkpoint(tmp_path / "c.safetensors", model=ToyModel(0))


def test_missing_and_corrupt_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors", model=ToyModel())
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, model=ToyModel())
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(bad)


def test_config_mismatch_names_keys(tmp_path):
    stored = {"model": {"type": "fusion", "bev": {"channels": 80}}, "train": {"lr": 1.0}}
    check_config_compatible(stored, {**stored, "train": {"lr": 2.0}}, "c")  # training keys may change
    with pytest.raises(CheckpointError, match="model.bev.channels"):
        check_config_compatible(stored, {**stored, "model": {"type": "fusion", "bev": {"channels": 64}}}, "c")


def test_manager_keeps_latest_best_and_last_k(tmp_path):
    model = ToyModel()
    m = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3):
        with torch.no_grad():
            model.head.bias.fill_(step)
        m.save(step, model=model)
        if step == 2:
            m.mark_best()
    assert [p.name for p in m.step_files()] == ["step_0000002.safetensors", "step_0000003.safetensors"]
    assert read_checkpoint(m.latest)[1]["step"] == 3
    assert read_checkpoint(m.best)[1]["step"] == 2
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_tied_weights_roundtrip(tmp_path):
    tied = torch.nn.Module()
    tied.a = torch.nn.Linear(3, 3)
    tied.b = tied.a  # the same parameters appear under two names
    save_checkpoint(tmp_path / "t.safetensors", model=tied)
    other = torch.nn.Module()
    other.a = torch.nn.Linear(3, 3)
    other.b = other.a
    load_checkpoint(tmp_path / "t.safetensors", model=other)
    assert state_equal(other.state_dict(), tied.state_dict())


def test_prefer_ema_loads_ema_weights(tmp_path):
    model = ToyModel(4)
    ema = ModelEMA(model, 0.9)
    with torch.no_grad():
        ema.shadow["head.bias"].fill_(7.0)
    save_checkpoint(tmp_path / "e.safetensors", model=model, ema=ema)
    live, averaged = ToyModel(4), ToyModel(4)
    load_checkpoint(tmp_path / "e.safetensors", model=live)
    load_checkpoint(tmp_path / "e.safetensors", model=averaged, prefer_ema=True)
    assert state_equal(live.state_dict(), model.state_dict())
    assert state_equal(averaged.state_dict(), ema.state_dict())


def test_missing_keys_are_named(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", model=ToyModel(0))
    with pytest.raises(CheckpointError, match=r"missing 2 keys \(backbone.0.bias, backbone.0.weight\)"):
        load_checkpoint(tmp_path / "c.safetensors", model=ToyModel(4))
