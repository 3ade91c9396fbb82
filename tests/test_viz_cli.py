"""``bevsimdet visualize`` end to end on the tiny world (untrained weights: pictures, not accuracy)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("bevsimdet.models.build")

from test_infer_cli import cli  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# pictures, not accuracy: the from-scratch tiny backbone instead of the demo's EfficientNet (faster)
TINY = ["model.image.arch=tiny", "model.image.pretrained=null", "model.image.frozen_stages=-1"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from bevsimdet.config import config_to_dict, load_config
    from bevsimdet.engine.checkpoint import save_checkpoint
    from bevsimdet.models.build import build_detector

    root = tmp_path_factory.mktemp("viz_ckpt")
    out = {}
    for name in ("demo_student", "demo_fusion"):
        cfg = load_config(CONFIGS / f"{name}.yaml", TINY)
        out[name] = save_checkpoint(root / f"{name}.safetensors", model=build_detector(cfg.model), config=config_to_dict(cfg))
    return out


def _common(tiny_world, tiny_infos, ckpt, out):
    return [str(CONFIGS / "demo_student.yaml"), "--checkpoint", str(ckpt), "--dataroot", str(tiny_world), "--out", str(out),
            "--no-progress", "--set", f"data.info_dir={tiny_infos['mini_val'].parent}", "--set", "data.sweeps=1",
            *[a for s in TINY for a in ("--set", s)]]


def test_one_sample_with_teacher_features(capsys, tmp_path, tiny_world, tiny_infos, checkpoints):
    code, out, err = cli(capsys, "visualize", *_common(tiny_world, tiny_infos, checkpoints["demo_student"], tmp_path),
                         "--index", "1", "--teacher", str(checkpoints["demo_fusion"]))
    assert code == 0, err
    files = [Path(line) for line in out.split()]
    assert len(files) == 2 and files[1].name.startswith("features_")
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.width >= 800


@pytest.mark.slow
def test_scene_gif(capsys, tmp_path, tiny_world, tiny_infos, checkpoints):
    from bevsimdet.data.infos import load_infos

    samples = load_infos(tiny_infos["mini_val"]).samples
    scene = samples[0].scene_name
    n = sum(s.scene_name == scene for s in samples)
    code, out, err = cli(capsys, "visualize", *_common(tiny_world, tiny_infos, checkpoints["demo_student"], tmp_path), "--scene", scene, "--gif")
    assert code == 0, err
    assert len(list(tmp_path.glob("[0-9][0-9][0-9]_*.png"))) == n
    with Image.open(tmp_path / f"{scene}.gif") as im:
        assert im.n_frames == n


def test_user_errors(capsys, tmp_path, tiny_world, tiny_infos, checkpoints):
    args = _common(tiny_world, tiny_infos, checkpoints["demo_student"], tmp_path)
    for extra, message in ((["--gif"], "--gif needs --scene"), (["--scene", "scene-9999"], "scene 'scene-9999' is not in split"),
                           (["--sample", "nope"], "sample token nope is not in split"), (["--teacher-config", "x.yaml"], "--teacher-config needs --teacher")):
        code, _, err = cli(capsys, "visualize", *args, *extra)
        assert code == 2 and message in err and err.count("\n") == 1, err
