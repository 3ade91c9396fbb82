"""The distill: / model.student: schemas, the student and ablation configs, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from bevsimdet.config import load_config
from bevsimdet.distill.criterion import enabled_terms
from bevsimdet.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
INIT = ["fuser", "decoder", "head"]  # demo_student.yaml: these start from the teacher
ABLATIONS = {
    # leaf -> (enabled distillation terms, GCM, parts initialised from the teacher);
    # demo_student.yaml adds the LiDAR depth term
    "no_distill": ([], True, []),
    "depth_only": (["depth"], True, []),
    "init_only": ([], True, INIT),
    "init_depth": (["depth"], True, INIT),
    "imd": (["imd", "depth"], True, INIT),
    "imd_cmd": (["imd", "cmd", "depth"], True, INIT),
    "imd_cmd_mmdf": (["imd", "cmd", "mmd_f", "depth"], True, INIT),
    "full": (["imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box", "depth"], True, INIT),
    "full_no_init": (["imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box", "depth"], True, []),
    "full_no_depth": (["imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box"], True, INIT),
    "full_no_gcm": (["imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box", "depth"], False, INIT),
    "full_released": (["imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box"], True, []),
    "imd_no_gcm": (["imd", "depth"], False, INIT),
    "no_distill_no_gcm": ([], False, []),
}
DIAGNOSTICS = {"camera_oracle"}  # not student rows: camera models with a diagnostic switch
needs_base = pytest.mark.skipif(not (CONFIGS / "demo_camera.yaml").is_file(), reason="demo_camera.yaml not in the tree yet")


def test_defaults_are_the_released_weights_on_scale_free_normalisers():
    cfg = load_config(None)
    # released 1 / 100 / 1 / 0.25 / 0.25 times the paper's typical factors (docs/distill.md)
    assert vars(cfg.distill.weights) == dict(imd=1.0, cmd=100 * 0.002, mmd_f=1.0, mmd_p_cls=0.25 * 0.1, mmd_p_box=0.25 * 0.03, depth=0.0)
    assert vars(cfg.distill.normalize) == dict(imd="elements", cmd="mask", mmd_f="elements", mmd_p_cls="gt_centres", mmd_p_box="objects")
    assert cfg.distill.box_code_weights == [1.0] * 8 + [0.2, 0.2]
    assert vars(cfg.distill.box_groups) == dict(offset=1.0, z=1.0, size=1.0, rot=1.0, vel=1.0)
    assert cfg.distill.grad_log_interval == 0 and cfg.distill.depth_branch == "both"
    assert cfg.model.student.gcm and cfg.model.student.gcm_points == 20


@needs_base
def test_student_configs_weights():
    """The paper-scale student keeps the paper-equivalent defaults; the demo raises the feature and
    prediction terms 3-4x (they were 1-3 % of its gradient) and adds the LiDAR depth term."""
    demo, paper = load_config(CONFIGS / "demo_student.yaml"), load_config(CONFIGS / "nuscenes_student.yaml")
    assert vars(paper.distill.weights) == vars(load_config(None).distill.weights)
    assert vars(demo.distill.weights) == dict(imd=4.0, cmd=0.8, mmd_f=3.0, mmd_p_cls=0.1, mmd_p_box=0.03, depth=3.0)
    assert demo.distill.box_groups.rot == demo.distill.box_groups.vel == 0.0
    assert vars(demo.distill.normalize) == vars(paper.distill.normalize)
    assert demo.distill.grad_log_interval > 0 and paper.distill.grad_log_interval > 0
    assert demo.distill.init_from_teacher == INIT and paper.distill.init_from_teacher == []


@needs_base
def test_released_ablation_row_uses_the_released_normalisers():
    cfg = load_config(CONFIGS / "ablations" / "full_released.yaml")
    assert vars(cfg.distill.weights) == dict(imd=1.0, cmd=100.0, mmd_f=1.0, mmd_p_cls=0.25, mmd_p_box=0.25, depth=0.0)
    assert vars(cfg.distill.normalize) == dict(imd="elements", cmd="elements", mmd_f="elements", mmd_p_cls="teacher_pos", mmd_p_box="objects")


def test_unknown_normaliser_is_a_config_error(tmp_path):
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text("distill:\n  normalize: {cmd: pixels}\n")
    with pytest.raises(ConfigError, match="distill.normalize.cmd"):
        load_config(leaf)
    leaf.write_text("distill:\n  box_groups: {heading: 0}\n")
    with pytest.raises(ConfigError, match="distill.box_groups.heading"):
        load_config(leaf)


def test_override_one_weight_keeps_the_others(tmp_path):
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text("distill:\n  weights: {cmd: 50}\n")
    cfg = load_config(leaf, ["distill.weights.depth=1"])
    assert cfg.distill.weights.cmd == 50.0 and cfg.distill.weights.imd == 1.0 and cfg.distill.weights.depth == 1.0


def test_unknown_term_is_a_config_error(tmp_path):
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text("distill:\n  weights: {kd: 1}\n")
    with pytest.raises(ConfigError, match="distill.weights.kd"):
        load_config(leaf)


@needs_base
@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_configs_load(name):
    cfg = load_config(CONFIGS / "ablations" / f"{name}.yaml")
    terms, gcm, init = ABLATIONS[name]
    assert cfg.model.type == "student" and cfg.name == name
    assert enabled_terms(vars(cfg.distill.weights)) == terms
    assert cfg.model.student.gcm is gcm
    assert cfg.distill.init_from_teacher == init


def test_every_ablation_file_is_listed():
    assert {p.stem for p in (CONFIGS / "ablations").glob("*.yaml")} == set(ABLATIONS) | DIAGNOSTICS


def test_camera_oracle_is_the_baseline_with_oracle_depth():
    base, oracle = load_config(CONFIGS / "demo_camera.yaml"), load_config(CONFIGS / "ablations" / "camera_oracle.yaml")
    assert oracle.model.type == "camera" and oracle.model.camera.oracle_depth and not base.model.camera.oracle_depth


def test_distill_cli_rejects_a_non_student_config(tmp_path):
    from typer.testing import CliRunner

    from bevsimdet.cli import app

    cfg = tmp_path / "fusion.yaml"
    cfg.write_text("model: {type: fusion}\n")
    res = CliRunner().invoke(app, ["distill", str(cfg), "--work-dir", str(tmp_path / "w")])
    assert res.exit_code != 0 and "model.type is 'fusion'" in str(res.exception)


def test_distill_cli_needs_a_teacher_unless_no_term_uses_it(tmp_path):
    from typer.testing import CliRunner

    from bevsimdet.cli import app

    cfg = tmp_path / "student.yaml"
    cfg.write_text("model: {type: student}\n")
    runner = CliRunner()
    res = runner.invoke(app, ["distill", str(cfg), "--work-dir", str(tmp_path / "w")])
    assert "need a teacher" in str(res.exception) and "--teacher" in str(res.exception)
    res = runner.invoke(app, ["distill", str(cfg), "--teacher", str(tmp_path / "nope.safetensors"), "--work-dir", str(tmp_path / "w")])
    assert "teacher checkpoint not found" in str(res.exception)
    assert not (tmp_path / "w").exists()
