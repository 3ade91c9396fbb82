"""The real student built from configs, and one distillation step against a real (random) teacher.

Skipped until the shared model builders (bevsimdet.models.build, models.testing) are in the tree.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

build = pytest.importorskip("bevsimdet.models.build")
testing = pytest.importorskip("bevsimdet.models.testing")

from bevsimdet.config import load_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def cfgs():
    return load_config(CONFIGS / "demo_student.yaml"), load_config(CONFIGS / "demo_fusion.yaml")


def _batch(cfg):
    torch.manual_seed(0)
    return testing.random_batch(cfg.model, batch_size=2)


def test_student_builds_and_runs_without_lidar(cfgs):
    from bevsimdet.models.student import Student

    scfg, _ = cfgs
    student = build.build_detector(scfg.model).eval()
    assert isinstance(student, Student)
    out = student(_batch(scfg).without_lidar())
    assert set(out.feats) == {"camera_bev", "sim_lidar_bev", "fused_bev", "decoder_bev"}
    assert out.feats["sim_lidar_bev"].shape[1] == scfg.model.student.sim_lidar_channels


@pytest.mark.parametrize("leaf", ["full_no_gcm", "no_distill"])
def test_ablation_students_build(leaf):
    cfg = load_config(CONFIGS / "ablations" / f"{leaf}.yaml")
    student = build.build_detector(cfg.model)
    assert (student.gcm is None) is (not cfg.model.student.gcm)


def test_one_distillation_step_end_to_end(cfgs):
    from bevsimdet.distill.run import build_distillation_objective
    from bevsimdet.engine.objective import run_objective

    scfg, tcfg = cfgs
    torch.manual_seed(0)
    student = build.build_detector(scfg.model).train()
    teacher = build.build_detector(tcfg.model)
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    objective = build_distillation_objective(scfg, student, teacher)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    res = run_objective(objective, student, _batch(scfg))
    assert {"imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box"} <= set(res.terms)
    assert torch.isfinite(res.loss)
    res.loss.backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, t_before[k]) for k, v in teacher.state_dict().items())
    keys = set(student.state_dict())
    assert not any(k.startswith(("teacher", "lidar")) for k in keys)
