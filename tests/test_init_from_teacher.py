"""``distill.init_from_teacher``: student parts that start from the frozen teacher's weights.

Uses the real demo configs (random image weights, so no package file is read): the demo
student's fuser, decoder and head have the demo teacher's architecture.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bevsimdet.config import load_config
from bevsimdet.distill.run import check_inputs, init_from_teacher, needs_teacher
from bevsimdet.errors import ConfigError, UserError
from bevsimdet.models.build import build_detector
from bevsimdet.models.teacher import FrozenTeacher

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NO_WEIGHTS = ["model.image.pretrained=null"]


def _pair(student_overrides=()):
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_detector(load_config(CONFIGS / "demo_fusion.yaml", NO_WEIGHTS).model))
    # BatchNorm statistics are part of what is copied: make the teacher's non-default
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    student = build_detector(load_config(CONFIGS / "demo_student.yaml", NO_WEIGHTS + list(student_overrides)).model)
    return student, teacher


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_copies_the_named_parts_and_nothing_else():
    student, teacher = _pair()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    n = init_from_teacher(student, teacher, ["fuser", "decoder", "head"])
    t = teacher.detector
    assert n == sum(len(m.state_dict()) for m in (t.fuser, t.decoder, t.head))
    assert _same(student.fuser, t.fuser) and _same(student.decoder, t.decoder) and _same(student.head, t.head)
    assert not _same(student.camera_vt, t.view_transform)  # not asked for
    after = student.state_dict()
    untouched = [k for k in after if not k.startswith(("fuser.", "decoder.", "head."))]
    assert untouched and all(torch.equal(after[k], before[k]) for k in untouched)
    # copies, not shared storage: training the student leaves the frozen teacher as it was
    student.head.task_heads[0]["heatmap"][-1].bias.data.add_(1.0)
    assert not _same(student.head, t.head)


def test_camera_lss_of_the_teacher_fills_either_student_branch():
    student, teacher = _pair(["model.camera.depth_net=conv3x3", "model.camera.depth_grad_scale=1.0"])  # the teacher's depth net
    init_from_teacher(student, teacher, ["camera_vt", "sim_lidar_vt"])
    assert _same(student.camera_vt, teacher.detector.view_transform)
    assert _same(student.sim_lidar_vt, teacher.detector.view_transform)


def test_mismatched_or_unknown_parts_are_one_line_config_errors():
    student, teacher = _pair(["model.fuser_channels=48"])
    with pytest.raises(ConfigError) as e:
        init_from_teacher(student, teacher, ["fuser"])
    msg = str(e.value)
    assert "\n" not in msg and "fuser." in msg and "does not match" in msg
    with pytest.raises(ConfigError, match="unknown part 'neck'.*choose from image_encoder"):
        init_from_teacher(student, teacher, ["neck"])
    # the demo student's split depth net differs from the teacher's: named, not a shape traceback
    with pytest.raises(ConfigError, match="student camera_vt\\..*teacher's view_transform"):
        init_from_teacher(student, teacher, ["camera_vt"])


def test_init_from_teacher_alone_needs_a_teacher_checkpoint(tmp_path):
    cfg = load_config(CONFIGS / "demo_student.yaml", [
        "distill.weights={imd: 0, cmd: 0, mmd_f: 0, mmd_p_cls: 0, mmd_p_box: 0, depth: 3.0}",
        "distill.init_from_teacher=[head]",
    ])
    assert needs_teacher(cfg) == ["init_from_teacher"]
    with pytest.raises(ConfigError, match="need a teacher"):
        check_inputs(cfg, None)
    # no teacher term and nothing copied: no teacher needed
    check_inputs(load_config(CONFIGS / "ablations" / "depth_only.yaml"), None)


def test_init_checkpoint_copies_from_another_model_and_needs_no_teacher(tmp_path):
    """``distill.init_checkpoint``: the parts come from a stored LiDAR-free model of the teacher's
    fuser / decoder / head shape (here a student), and with no teacher term no teacher is needed."""
    from bevsimdet.config import config_to_dict, teacher_config_from
    from bevsimdet.distill.run import distillation_objective_factory
    from bevsimdet.engine.checkpoint import save_checkpoint

    torch.manual_seed(1)
    source_cfg = load_config(CONFIGS / "ablations" / "no_distill.yaml", NO_WEIGHTS)
    source = build_detector(source_cfg.model)
    path = save_checkpoint(tmp_path / "warm.safetensors", model=source, config=config_to_dict(source_cfg))
    cfg = load_config(CONFIGS / "ablations" / "init_only.yaml", NO_WEIGHTS + [f"distill.init_checkpoint={path}"])
    assert needs_teacher(cfg) == []
    check_inputs(cfg, None)
    student = build_detector(cfg.model)
    assert not _same(student.head, source.head)
    with pytest.raises(ValueError, match="config_of"):  # the source's config must be readable
        distillation_objective_factory(None, None)(cfg, build_detector(cfg.model))
    objective = distillation_objective_factory(None, None, config_of=teacher_config_from)(cfg, student)
    assert [len(r.loaded) > 0 for r in objective.init_reports] == [True]
    assert _same(student.fuser, source.fuser) and _same(student.decoder, source.decoder) and _same(student.head, source.head)
    assert not _same(student.camera_vt, source.camera_vt)
    missing = load_config(CONFIGS / "ablations" / "init_only.yaml", [f"distill.init_checkpoint={tmp_path / 'none.safetensors'}"])
    with pytest.raises(UserError, match="init_checkpoint not found"):
        check_inputs(missing, None)
