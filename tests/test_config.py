from pathlib import Path

import pytest

from bevsimdet.config import Config, dump_config, load_config, load_raw
from bevsimdet.errors import ConfigError


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_inheritance_leaf_overrides_parent(tmp_path):
    write(tmp_path / "base.yaml", "name: base\nseed: 1\ntrain:\n  lr: 0.1\n  batch_size: 4\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: base.yaml\nname: leaf\ntrain:\n  lr: 0.5\n")
    cfg = load_config(leaf)
    assert cfg.name == "leaf" and cfg.seed == 1
    assert cfg.train.lr == 0.5 and cfg.train.batch_size == 4


def test_unknown_key_names_key_and_file(tmp_path):
    write(tmp_path / "base.yaml", "seed: 1\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: base.yaml\ntrain:\n  lrr: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(leaf)
    msg = str(e.value)
    assert "train.lrr" in msg and str(leaf) in msg and "\n" not in msg


def test_wrong_type_is_an_error(tmp_path):
    leaf = write(tmp_path / "c.yaml", "seed: abc\n")
    with pytest.raises(ConfigError, match="seed"):
        load_config(leaf)


def test_overrides_and_roundtrip(tmp_path):
    leaf = write(tmp_path / "c.yaml", "seed: 3\n")
    cfg = load_config(leaf, ["train.lr=1e-3", "name=x"])
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.name == "x"
    dumped = write(tmp_path / "resolved.yaml", dump_config(cfg))
    assert load_config(dumped) == cfg


def test_cycle_and_missing_base(tmp_path):
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_raw(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "_base_: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "c.yaml")


def test_every_shipped_config_loads():
    root = Path(__file__).resolve().parents[1] / "configs"
    leaves = [p for p in root.glob("**/*.yaml") if "_base_" not in p.parts]
    for p in leaves:
        assert isinstance(load_config(p), Config), p


def test_the_engine_writes_config_yaml_as_dump_config(tmp_path):
    """engine.train writes config.yaml without importing this schema (it sits a floor above);
    the file must still be what dump_config gives, so `train <run>/config.yaml` reproduces a run."""
    from bevsimdet.engine.train import save_run_config
    from bevsimdet.io import plain

    cfg = load_config(None, ["model.type=lidar", "train.lr=3e-4", "data.image_size=[64, 176]"])
    save_run_config(plain(cfg), tmp_path / "config.yaml")
    assert (tmp_path / "config.yaml").read_text() == dump_config(cfg)
    assert load_config(tmp_path / "config.yaml") == cfg
