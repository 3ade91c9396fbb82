"""Mixed precision: the real demo models and their objectives under bfloat16 autocast.

`train.amp` and `distill.teacher_amp` only act on CUDA, but CPU autocast casts the same kinds of ops
(convolutions, matmuls, einsums), so dtype mismatches show up here without a GPU. Two of them were
first found on an H200 (the LiDAR encoder's scatter into a float32 grid, and the LiDAR depth
targets computed in bf16).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bevsimdet.config import load_config
from bevsimdet.data.dataset import build_dataset
from bevsimdet.data.loader import build_dataloader
from bevsimdet.engine.objective import run_objective
from bevsimdet.engine.train import detection_objective
from bevsimdet.models.build import build_detector
from bevsimdet.models.depth import lidar_depth_targets

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _setup(name, tiny_world, tiny_infos):
    info_dir = Path(tiny_infos["mini_train"]).parent
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.dataroot={tiny_world}", f"data.info_dir={info_dir}",
                                                 "model.image.pretrained=null"])
    loader = build_dataloader(build_dataset(cfg.data, cfg.data.train_split, train=True), 2, shuffle=False, seed=0, num_workers=0)
    return cfg, next(iter(loader))


def _step(objective, model, batch):
    with torch.autocast(**BF16):
        result = run_objective(objective, model, batch)
    assert torch.isfinite(result.loss), result.terms
    result.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    return result


@pytest.mark.parametrize("name", ["demo_fusion", "demo_camera"])
def test_detectors_train_under_bf16_autocast(name, tiny_world, tiny_infos):
    torch.manual_seed(0)
    cfg, batch = _setup(name, tiny_world, tiny_infos)
    model = build_detector(cfg.model).train()
    result = _step(detection_objective(cfg, model), model, batch)
    assert set(result.terms) >= {"det_heatmap", "det_bbox"} or len(result.terms) >= 2


def test_student_distils_under_bf16_autocast_with_a_bf16_teacher(tiny_world, tiny_infos, tmp_path):
    from bevsimdet.distill.run import distillation_objective_factory
    from bevsimdet.engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg, batch = _setup("demo_student", tiny_world, tiny_infos)
    tcfg = load_config(CONFIGS / "demo_fusion.yaml", ["model.image.pretrained=null"])
    ckpt = save_checkpoint(tmp_path / "teacher.safetensors", model=build_detector(tcfg.model))
    student = build_detector(cfg.model).train()
    objective = distillation_objective_factory(tcfg, ckpt)(cfg, student)
    objective.teacher_amp = torch.bfloat16
    objective._teacher_precision = lambda device: torch.autocast(**BF16)  # CUDA-only switch, forced on the CPU
    result = _step(objective, student, batch)
    assert result.terms["depth"] > 0 and result.terms["cmd"] >= 0


def test_lidar_depth_targets_ignore_autocast(tiny_world, tiny_infos):
    _, batch = _setup("demo_student", tiny_world, tiny_infos)
    plain = lidar_depth_targets(batch, (16, 44), (1.0, 60.0, 0.5))
    with torch.autocast(**BF16):
        cast = lidar_depth_targets(batch, (16, 44), (1.0, 60.0, 0.5))
    assert (plain[0] >= 0).any()
    assert torch.equal(plain[0], cast[0]) and torch.equal(plain[1], cast[1])


def test_lidar_encoder_keeps_the_dtype_of_its_point_features(tiny_world, tiny_infos):
    # CUDA autocast leaves the pillar net's BatchNorm output in bf16 (the CPU's casts it back to fp32)
    cfg, batch = _setup("demo_fusion", tiny_world, tiny_infos)
    encoder = build_detector(cfg.model).lidar_encoder.eval()
    forward = encoder.pfn.forward
    encoder.pfn.forward = lambda *a: forward(*a).bfloat16()
    seen = []
    encoder.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with torch.no_grad(), torch.autocast(**BF16):
        bev = encoder(batch.points)
    # the scattered grid keeps the features' dtype (CUDA's index_copy refuses a float32 grid)
    assert seen == [torch.bfloat16] and torch.isfinite(bev.float()).all()
