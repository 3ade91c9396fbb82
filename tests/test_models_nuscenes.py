"""Every nuscenes_* model config builds and runs one forward/backward at the paper's sizes
(batch 1, 6 cameras of 256 x 704, 180 x 180 BEV). Slow on CPU: tens of seconds each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bevsimdet.config import load_config
from bevsimdet.models import build
from bevsimdet.models.testing import random_batch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPECTED = {
    "camera": {"camera_bev": 80, "decoder_bev": 256},
    "lidar": {"lidar_bev": 256, "decoder_bev": 256},
    "fusion": {"camera_bev": 80, "lidar_bev": 256, "fused_bev": 256, "decoder_bev": 256},
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["camera", "lidar", "fusion"])
def test_nuscenes_config_forward_backward(kind):
    cfg = load_config(CONFIGS / f"nuscenes_{kind}.yaml")
    assert tuple(cfg.model.camera.image_size) == tuple(cfg.data.image_size) == (256, 704)
    torch.manual_seed(0)
    model = build.build_detector(cfg.model).train()
    batch = random_batch(cfg.model, batch_size=1, num_cams=6, num_points=2000, num_boxes=4)
    out = model(batch)
    assert {k: (v.shape[1], *v.shape[2:]) for k, v in out.feats.items()} == {k: (c, 180, 180) for k, c in EXPECTED[kind].items()}
    if kind != "lidar":
        assert out.depth.shape == (6, 118, 32, 88)
    loss = sum(build.build_criterion(cfg.model)(out, batch).values())
    assert torch.isfinite(loss)
    head = model.head.task_heads[0]["heatmap"][-1]
    if kind == "fusion":
        # the full backward of the fusion config runs through every camera and LiDAR module at
        # these sizes; the camera and LiDAR configs share them, so they only differentiate the head
        # (their full backward would double the test's time without reaching new code)
        loss.backward()
        grad = head.weight.grad
    else:
        (grad,) = torch.autograd.grad(loss, head.weight)
    assert grad is not None and torch.isfinite(grad).all()
