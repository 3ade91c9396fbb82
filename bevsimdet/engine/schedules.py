"""Learning-rate (and Adam beta1) schedules as pure functions of the optimizer step.

A schedule maps ``step`` (0-based count of optimizer updates done so far) to
``(lr_factor, beta1_factor)``; :class:`StepScheduler` multiplies each param group's base LR and
base beta1 by them. Because the factors depend on the step alone, the scheduler's whole state is
the step counter, so resuming is exact and the state is plain JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Schedule = Callable[[int], tuple[float, float]]


def cosine_anneal(start: float, end: float, t: float) -> float:
    """Cosine interpolation from ``start`` (t=0) to ``end`` (t=1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def _warmup_factor(step: int, warmup_steps: int, warmup_ratio: float) -> float:
    """Linear ramp from ``warmup_ratio`` to 1 over ``warmup_steps`` (mmcv's 'linear' warm-up)."""
    if step >= warmup_steps:
        return 1.0
    return 1.0 - (1.0 - step / warmup_steps) * (1.0 - warmup_ratio)


@dataclass(frozen=True)
class CosineSchedule:
    total_steps: int
    warmup_steps: int = 0
    warmup_ratio: float = 1.0 / 3.0
    min_lr_ratio: float = 1e-3

    def __call__(self, step: int) -> tuple[float, float]:
        t = min(step / max(self.total_steps, 1), 1.0)
        lr = cosine_anneal(1.0, self.min_lr_ratio, t)
        return lr * _warmup_factor(step, self.warmup_steps, self.warmup_ratio), 1.0


@dataclass(frozen=True)
class ConstantSchedule:
    warmup_steps: int = 0
    warmup_ratio: float = 1.0 / 3.0

    def __call__(self, step: int) -> tuple[float, float]:
        return _warmup_factor(step, self.warmup_steps, self.warmup_ratio), 1.0


@dataclass(frozen=True)
class CyclicSchedule:
    """One cycle as mmcv's CyclicLrUpdater/CyclicMomentumUpdater with ``cyclic_times=1``.

    LR factor: cosine 1 -> ``target_ratio[0]`` over the first ``step_ratio_up`` of the run, then
    ``target_ratio[0]`` -> ``target_ratio[1]``. Beta1 factor (when ``cyclic_momentum``):
    1 -> 0.85/0.95 while the LR rises, back to 1 while it falls.
    """

    total_steps: int
    target_ratio: tuple[float, float] = (5.0, 1e-4)
    step_ratio_up: float = 0.4
    cyclic_momentum: bool = True
    warmup_steps: int = 0
    warmup_ratio: float = 1.0 / 3.0

    MOMENTUM_LOW = 0.85 / 0.95

    def __call__(self, step: int) -> tuple[float, float]:
        total = max(self.total_steps, 1)
        up = int(self.step_ratio_up * total)
        s = min(step, total)
        if s < up:
            t, lr0, lr1, m0, m1 = s / up, 1.0, self.target_ratio[0], 1.0, self.MOMENTUM_LOW
        else:
            t = (s - up) / max(total - up, 1)
            lr0, lr1, m0, m1 = self.target_ratio[0], self.target_ratio[1], self.MOMENTUM_LOW, 1.0
        lr = cosine_anneal(lr0, lr1, t) * _warmup_factor(step, self.warmup_steps, self.warmup_ratio)
        return lr, cosine_anneal(m0, m1, t) if self.cyclic_momentum else 1.0


class StepScheduler:
    """Applies a :data:`Schedule` to an optimizer's param groups; call :meth:`step` after each update."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule):
        self.optimizer = optimizer
        self.schedule = schedule
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.base_beta1 = [float(g["betas"][0]) if "betas" in g else None for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        lr_f, beta_f = self.schedule(self.last_step)
        for g, lr0, b0 in zip(self.optimizer.param_groups, self.base_lrs, self.base_beta1):
            g["lr"] = lr0 * lr_f
            if b0 is not None:
                g["betas"] = (b0 * beta_f, *tuple(g["betas"])[1:])

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "base_lrs": self.base_lrs, "base_beta1": self.base_beta1}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.base_beta1 = [None if v is None else float(v) for v in state["base_beta1"]]
        self._apply()
