"""``bevsimdet infer`` through the real CLI: both inputs, results format, and user errors."""

from __future__ import annotations

import json

import pytest

from bevsimdet.cli import main

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_both_inputs(capsys):
    code, out, _ = cli(capsys, "infer", "--help")
    assert code == 0
    for opt in ("--checkpoint", "--dataroot", "--split", "--images", "--calib", "--resize", "--out"):
        assert opt in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--images", "x"], "--images and --calib go together"),
        (["--images", "x", "--calib", "c.json", "--dataroot", "d"], "cannot be combined with --dataroot"),
        (["--resize", "0.5"], "--resize needs --images"),
    ],
)
def test_argument_errors_are_one_line(capsys, tmp_path, extra, message):
    code, _, err = cli(capsys, "infer", str(tmp_path / "c.yaml"), "--checkpoint", "c.safetensors", "--out", str(tmp_path / "r.json"), *extra)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_images_refuse_models_that_need_lidar(capsys, tmp_path):
    cfg = tmp_path / "fusion.yaml"
    cfg.write_text("model: {type: fusion}\n")
    code, _, err = cli(capsys, "infer", str(cfg), "--checkpoint", "c.safetensors", "--out", str(tmp_path / "r.json"),
                       "--images", str(tmp_path), "--calib", str(ROOT / "configs" / "calib_template.json"))
    assert code == 2 and "model.type is 'fusion', which needs LiDAR" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


# --------------------------------------------------------------------------------------------
# with the real models (tiny student)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """(config path, checkpoint of a randomly initialised demo student) — inference needs no training."""
    pytest.importorskip("bevsimdet.models.build")
    from bevsimdet.config import load_config
    from bevsimdet.engine.checkpoint import save_checkpoint
    from bevsimdet.models.build import build_detector

    config = ROOT / "configs" / "demo_student.yaml"
    cfg = load_config(config)
    ckpt = tmp_path_factory.mktemp("student") / "student.safetensors"
    save_checkpoint(ckpt, model=build_detector(cfg.model))
    return config, ckpt


@pytest.fixture(scope="module")
def custom_frame(tiny_world, tiny_infos, tmp_path_factory):
    from test_infer_custom import write_custom_frame

    from bevsimdet.data.config import DataConfig
    from bevsimdet.data.dataset import build_dataset

    dataset = build_dataset(DataConfig(dataroot=str(tiny_world), info_dir=str(tiny_infos["mini_val"].parent), load_points=False), "mini_val", train=False)
    root = tmp_path_factory.mktemp("custom")
    write_custom_frame(dataset, 0, root / "frame0", root / "calib.json")
    return root / "frame0", root / "calib.json"


def test_images_to_results(capsys, tmp_path, student, custom_frame):
    from bevsimdet.eval.results import load_results

    config, ckpt = student
    images, calib = custom_frame
    out = tmp_path / "results.json"
    code, stdout, err = cli(capsys, "infer", str(config), "--checkpoint", str(ckpt), "--images", str(images), "--calib", str(calib),
                            "--out", str(out), "--no-progress", "--set", "train.num_workers=0")
    assert code == 0, err
    data = load_results(out, sample_tokens=["frame0"])
    assert data["meta"]["use_camera"] is True and data["meta"]["use_lidar"] is False
    assert "for 1 samples written" in stdout


def test_checkpoint_of_another_config_names_the_mismatched_keys(capsys, tmp_path, student, custom_frame):
    from bevsimdet.config import load_config
    from bevsimdet.engine.checkpoint import save_checkpoint
    from bevsimdet.models.build import build_detector

    config, _ = student
    other = load_config(config, ["model.student.sim_lidar_channels=32"])
    ckpt = tmp_path / "other.safetensors"
    save_checkpoint(ckpt, model=build_detector(other.model))
    images, calib = custom_frame
    code, _, err = cli(capsys, "infer", str(config), "--checkpoint", str(ckpt), "--images", str(images), "--calib", str(calib),
                       "--out", str(tmp_path / "r.json"), "--no-progress", "--set", "train.num_workers=0")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "does not fit this model" in err and "shape mismatches" in err and "projection." in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_dataroot_split_to_results(capsys, tmp_path, student, tiny_world, tiny_infos):
    from bevsimdet.data.infos import load_infos
    from bevsimdet.eval.results import load_results

    config, ckpt = student
    out = tmp_path / "results.json"
    code, _, err = cli(capsys, "infer", str(config), "--checkpoint", str(ckpt), "--dataroot", str(tiny_world), "--split", "mini_val",
                       "--out", str(out), "--no-progress", "--set", "train.num_workers=0", "--set", f"data.info_dir={tiny_infos['mini_val'].parent}")
    assert code == 0, err
    tokens = [s.token for s in load_infos(tiny_infos["mini_val"]).samples]
    assert load_results(out, sample_tokens=tokens)["meta"]["use_lidar"] is False
