"""Config -> optimizer and LR scheduler."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from bevsimdet.engine.checkpoint import unwrap
from bevsimdet.engine.config import TrainConfig
from bevsimdet.engine.schedules import ConstantSchedule, CosineSchedule, CyclicSchedule, StepScheduler

DEFAULT_GROUP = "default"


def _match(name: str, prefixes: list[str]) -> str | None:
    """Longest prefix in ``prefixes`` that ``name`` starts with at a module boundary."""
    hits = [p for p in prefixes if name == p or name.startswith(p.rstrip(".") + ".")]
    return max(hits, key=len) if hits else None


def param_groups(model: nn.Module, lr: float, lr_mult: dict[str, float]) -> list[dict]:
    """Trainable parameters grouped by the longest ``lr_mult`` prefix of their name.

    Each group carries ``name`` (the prefix, or ``default``), ``lr_mult`` and ``lr = lr * lr_mult``.
    Groups come out in a fixed order (default first, then prefixes sorted), so optimizer state maps
    to the same groups on every run.
    """
    prefixes = sorted(lr_mult)
    groups: dict[str, list[nn.Parameter]] = {DEFAULT_GROUP: []}
    for p in prefixes:
        groups[p] = []
    for name, param in unwrap(model).named_parameters():
        if param.requires_grad:
            groups[_match(name, prefixes) or DEFAULT_GROUP].append(param)
    for p in prefixes:
        if not groups[p]:
            warnings.warn(f"train.lr_mult prefix '{p}' matches no trainable parameter of {type(unwrap(model)).__name__}", stacklevel=2)
    out = []
    for key, params in groups.items():
        if params:
            mult = float(lr_mult.get(key, 1.0))
            out.append({"params": params, "name": key, "lr_mult": mult, "lr": lr * mult})
    return out


def build_optimizer(train_cfg: TrainConfig, model: nn.Module) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters, with per-prefix LR multipliers."""
    groups = param_groups(model, train_cfg.lr, dict(train_cfg.lr_mult))
    if not groups:
        raise ValueError(f"{type(unwrap(model)).__name__} has no trainable parameters")
    return torch.optim.AdamW(groups, lr=train_cfg.lr, betas=tuple(train_cfg.betas), weight_decay=train_cfg.weight_decay)


def build_scheduler(train_cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> StepScheduler:
    s = train_cfg.schedule
    if s.type == "cosine":
        schedule = CosineSchedule(total_steps, s.warmup_steps, s.warmup_ratio, s.min_lr_ratio)
    elif s.type == "cyclic":
        schedule = CyclicSchedule(total_steps, tuple(s.target_ratio), s.step_ratio_up, s.cyclic_momentum, s.warmup_steps, s.warmup_ratio)
    else:
        schedule = ConstantSchedule(s.warmup_steps, s.warmup_ratio)
    return StepScheduler(optimizer, schedule)


__all__ = ["build_optimizer", "build_scheduler", "param_groups"]
