"""``run_training``: config -> dataset, model, objective, optimizer -> a trained run directory.

Run directory layout::

    <work_dir>/config.yaml                   resolved config of the run
    <work_dir>/checkpoints/latest.safetensors  newest checkpoint (+ step_NNNNNNN, best)
    <work_dir>/log.jsonl                     one JSON row per log interval / validation
    <work_dir>/tensorboard/                  TensorBoard scalars
    <work_dir>/metrics.json                  metrics of the last validation
    <work_dir>/curves.png                    validation metrics against steps (redrawn at every validation)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from bevsimdet.engine import dist
from bevsimdet.engine.build import build_optimizer, build_scheduler
from bevsimdet.engine.checkpoint import CheckpointError, CheckpointManager, check_config_compatible, read_checkpoint
from bevsimdet.engine.config import TrainConfig
from bevsimdet.engine.objective import DetectionObjective, Objective
from bevsimdet.engine.precision import to_channels_last
from bevsimdet.engine.trainer import Trainer, seed_all
from bevsimdet.errors import UserError

ObjectiveFactory = Callable[[Any, nn.Module], Objective]


class TrainingInterrupted(Exception):
    """Training stopped early on SIGTERM/SIGINT after saving a checkpoint (``--resume`` continues)."""

    def __init__(self, message: str, signum: int | None):
        super().__init__(message)
        self.signum = signum


def total_steps(train: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the whole run: ``max_steps``, or ``epochs`` worth of accumulated batches."""
    if train.max_steps:
        return int(train.max_steps)
    return max(train.epochs * batches_per_epoch // train.accum_steps, 1)


def detection_objective(cfg: Any, model: nn.Module) -> Objective:
    """The default objective: the model config's criterion against ground truth."""
    from bevsimdet.models.build import build_criterion

    device = next(model.parameters()).device
    return DetectionObjective(build_criterion(cfg.model).to(device), cfg.model.loss_weights)


def run_training(
    cfg: Any,
    work_dir: str | Path,
    *,
    resume: bool = False,
    objective_factory: ObjectiveFactory | None = None,
    progress: bool = True,
) -> Path:
    """Train ``build_detector(cfg.model)`` on ``cfg.data.train_split``; returns the path of the
    final checkpoint (``<work_dir>/checkpoints/latest.safetensors``).

    ``objective_factory(cfg, model)`` replaces the default detection objective (distillation
    passes one holding its frozen teacher). Under torchrun every rank calls this; only the main
    rank writes files. Raises :class:`TrainingInterrupted` when stopped by a signal.
    """
    from bevsimdet.config import config_to_dict, save_config

    work_dir = Path(work_dir)
    tc: TrainConfig = cfg.train
    ckpts = CheckpointManager(work_dir / "checkpoints", tc.keep_checkpoints)
    if resume and not ckpts.latest.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {ckpts.latest}", fix="drop --resume to start a new run in this --work-dir")
    if not resume and ckpts.latest.is_file():
        raise UserError(f"{work_dir} already holds a training run", fix="pass --resume to continue it, or choose another --work-dir")
    config_dict = config_to_dict(cfg)
    if resume:
        check_config_compatible(read_checkpoint(ckpts.latest)[1].get("config"), config_dict, ckpts.latest)

    device = dist.select_device(tc.device)
    dist.init_distributed(device, tc.dist_timeout_s)
    if dist.is_main():
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, work_dir / "config.yaml")
    seed_all(cfg.seed)

    from bevsimdet.data.dataset import build_dataset
    from bevsimdet.data.loader import build_dataloader
    from bevsimdet.engine.evaluate import build_evaluator
    from bevsimdet.models.build import build_detector

    dataset = build_dataset(cfg.data, cfg.data.train_split, train=True)
    loader = build_dataloader(dataset, tc.batch_size, shuffle=True, seed=cfg.seed, num_workers=tc.num_workers, distributed=dist.is_dist())
    model = build_detector(cfg.model).to(device)
    if tc.channels_last:
        to_channels_last(model)
    objective = (objective_factory or detection_objective)(cfg, model)
    optimizer = build_optimizer(tc, model)
    steps = total_steps(tc, len(loader))
    scheduler = build_scheduler(tc, optimizer, steps)
    validate = build_evaluator(cfg, tc.val_split or cfg.data.val_split, device, progress=progress) if tc.validate else None

    trainer = Trainer(
        model, objective, loader, optimizer, scheduler,
        work_dir=work_dir, max_steps=steps, accum_steps=tc.accum_steps, grad_clip=tc.grad_clip,
        amp=tc.amp, amp_dtype=getattr(torch, tc.amp_dtype), ema_decay=tc.ema_decay,
        validate=validate, val_interval=tc.val_interval, best_metric=tc.best_metric,
        log_interval=tc.log_interval, checkpoint_interval=tc.checkpoint_interval, keep_checkpoints=tc.keep_checkpoints,
        device=device, seed=cfg.seed, config=config_dict, find_unused_parameters=tc.find_unused_parameters,
        progress=progress, barrier_timeout_s=tc.dist_timeout_s,
    )
    if resume:
        trainer.resume(ckpts.latest)
    result = trainer.fit()
    if result.interrupted:
        raise TrainingInterrupted(
            f"stopped by signal at step {trainer.step}/{steps}; checkpoint saved to {ckpts.latest}; continue with --resume",
            trainer.stop_signal,
        )
    return ckpts.latest


__all__ = ["run_training", "total_steps", "detection_objective", "TrainingInterrupted", "ObjectiveFactory"]
