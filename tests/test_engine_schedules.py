import math

import pytest
import torch
from test_engine_toy import ToyModel

from bevsimdet.engine.build import build_optimizer, build_scheduler
from bevsimdet.engine.config import ScheduleConfig, TrainConfig
from bevsimdet.engine.schedules import CosineSchedule, CyclicSchedule, StepScheduler


def test_cyclic_matches_mmcv_shape():
    s = CyclicSchedule(100, target_ratio=(5.0, 1e-4), step_ratio_up=0.4)
    assert s(0) == (1.0, 1.0)
    lr_peak, m_low = s(40)
    assert lr_peak == pytest.approx(5.0) and m_low == pytest.approx(0.85 / 0.95)
    assert s(20)[0] == pytest.approx(3.0)  # cosine midpoint of 1 -> 5
    assert s(100) == (pytest.approx(1e-4), pytest.approx(1.0))
    lrs = [s(i)[0] for i in range(101)]
    assert all(a <= b for a, b in zip(lrs[:40], lrs[1:41])) and all(a >= b for a, b in zip(lrs[40:], lrs[41:]))


def test_cosine_with_linear_warmup():
    s = CosineSchedule(1000, warmup_steps=100, warmup_ratio=1 / 3, min_lr_ratio=1e-3)
    assert s(0)[0] == pytest.approx(1 / 3)
    cos100 = 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 0.1))
    assert s(100)[0] == pytest.approx(cos100)
    assert s(50)[0] == pytest.approx((1 - 0.5 * (2 / 3)) * (1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 0.05))))
    assert s(1000)[0] == pytest.approx(1e-3) and s(5000)[0] == pytest.approx(1e-3)


def test_lr_mult_groups_and_scheduler_applies_to_each():
    model = ToyModel(8)
    cfg = TrainConfig(lr=1e-3, lr_mult={"backbone": 0.1}, betas=(0.9, 0.999), schedule=ScheduleConfig(type="cyclic"))
    opt = build_optimizer(cfg, model)
    assert [(g["name"], len(g["params"])) for g in opt.param_groups] == [("default", 2), ("backbone", 2)]
    sched = build_scheduler(cfg, opt, total_steps=10)
    for _ in range(4):
        sched.step()
    lrs = sched.get_last_lr()
    assert lrs[0] == pytest.approx(5e-3) and lrs[1] == pytest.approx(5e-4)
    assert opt.param_groups[0]["betas"] == (pytest.approx(0.9 * 0.85 / 0.95), 0.999)


def test_unmatched_lr_mult_prefix_warns():
    with pytest.warns(UserWarning, match="'camera.backbone' matches no trainable parameter"):
        build_optimizer(TrainConfig(lr_mult={"camera.backbone": 0.1}), ToyModel(8))


def test_prefix_matches_module_boundaries_only():
    model = torch.nn.Module()
    model.head = torch.nn.Linear(2, 2)
    model.header = torch.nn.Linear(2, 2)
    opt = build_optimizer(TrainConfig(lr_mult={"head": 0.5}), model)
    assert [(g["name"], len(g["params"])) for g in opt.param_groups] == [("default", 2), ("head", 2)]


def test_scheduler_state_roundtrip():
    opt = torch.optim.AdamW(ToyModel().parameters(), lr=1.0)
    a = StepScheduler(opt, CyclicSchedule(10))
    for _ in range(3):
        a.step()
    opt2 = torch.optim.AdamW(ToyModel().parameters(), lr=1.0)
    b = StepScheduler(opt2, CyclicSchedule(10))
    b.load_state_dict(a.state_dict())
    assert b.get_last_lr() == a.get_last_lr() and opt2.param_groups[0]["betas"] == opt.param_groups[0]["betas"]
