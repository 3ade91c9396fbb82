"""``run_training``: config -> dataset, model, objective, optimizer -> a trained run directory.

Run directory layout::

    <work_dir>/config.yaml                   resolved config of the run
    <work_dir>/checkpoints/latest.safetensors  newest checkpoint (+ step_NNNNNNN, best)
    <work_dir>/log.jsonl                     one JSON row per log interval / validation
    <work_dir>/tensorboard/                  TensorBoard scalars
    <work_dir>/metrics.json                  metrics of the last validation
    <work_dir>/curves.png                    validation metrics against steps (redrawn at every validation)
    <work_dir>/init_report.json              what train.init_from / distill.init_from_teacher loaded (if used)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from bevsimdet.engine import dist
from bevsimdet.engine.build import build_optimizer, build_scheduler
from bevsimdet.engine.checkpoint import CheckpointError, CheckpointManager, check_config_compatible, config_diff, read_checkpoint
from bevsimdet.engine.config import InitFromConfig, TrainConfig
from bevsimdet.engine.objective import DetectionObjective, Objective
from bevsimdet.engine.precision import to_channels_last
from bevsimdet.engine.trainer import Trainer, seed_all
from bevsimdet.errors import ConfigError, UserError

if TYPE_CHECKING:
    from bevsimdet.weights import InitReport

ObjectiveFactory = Callable[[Any, nn.Module], Objective]


class TrainingInterrupted(Exception):
    """Training stopped early on SIGTERM/SIGINT after saving a checkpoint (``--resume`` continues).

    ``step`` / ``total`` and ``checkpoint`` let a caller that resumes on its own (:func:`train_stage`)
    say how to continue in its own words."""

    def __init__(self, message: str, signum: int | None, step: int = 0, total: int = 0, checkpoint: Path | None = None):
        super().__init__(message)
        self.signum = signum
        self.step = step
        self.total = total
        self.checkpoint = checkpoint

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by the signal: 128 + its number (SIGTERM if unknown)."""
        return 128 + (self.signum or 15)


def total_steps(train: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the whole run: ``max_steps``, or ``epochs`` worth of accumulated batches."""
    if train.max_steps:
        return int(train.max_steps)
    return max(train.epochs * batches_per_epoch // train.accum_steps, 1)


def check_init_from(init: InitFromConfig, resume: bool) -> None:
    """Fail before any data is read when ``train.init_from.path`` does not exist (fresh runs)."""
    if init.path and not resume and not Path(init.path).is_file():
        raise UserError(f"train.init_from.path: checkpoint not found: {init.path}",
                        fix="train the earlier stage first (lidar -> fusion -> student) or set train.init_from.path to its checkpoint (null: start from scratch)")


def init_from(init: InitFromConfig, model: nn.Module) -> list[InitReport]:
    """Apply ``train.init_from`` to ``model`` (no-op without a path); returns the reports."""
    if not init.path:
        return []
    check_init_from(init, resume=False)
    from bevsimdet.weights import init_from_checkpoint

    return [init_from_checkpoint(model, init.path, dict(init.prefix_map), strict=init.strict)]


def write_init_reports(work_dir: Path, reports: list[InitReport]) -> None:
    """Print each report's summary and write them all to ``<work_dir>/init_report.json`` (main rank)."""
    if not reports or not dist.is_main():
        return
    from bevsimdet.io import atomic_write_json

    for r in reports:
        print(r.summary() + (f" ({r.problems})" if r.problems else ""), file=sys.stderr)
    atomic_write_json(work_dir / "init_report.json", [r.to_json() for r in reports], indent=1)


def save_run_config(config: dict, path: Path) -> None:
    """The resolved config as YAML, as ``bevsimdet.config.dump_config`` writes it: the engine takes
    any config object and never imports the combined schema, which sits above it."""
    import yaml

    from bevsimdet.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))


# What makes a finished or half-finished run in a stage's folder the run the stage asks for: the
# weights' shape, the world's splits, the schedule's length and the seed. Paths (dataroot, work
# dir) may move; everything else about a reused run is the caller's to change.
STAGE_KEYS = ("seed", "model", "data.version", "data.train_split", "data.val_split", "train.max_steps")


def stage_config_diff(stored: dict, current: dict, keys: tuple[str, ...] = STAGE_KEYS) -> list[str]:
    """Dotted names under ``keys`` whose values differ between two plain configs (leaves named)."""

    def get(cfg: Any, dotted: str) -> Any:
        for part in dotted.split("."):
            cfg = cfg.get(part) if isinstance(cfg, dict) else None
        return cfg

    return [name for key in keys for name in config_diff(get(stored, key), get(current, key), key)]


def train_stage(run_dir: Path, train: Callable[[bool], Path], log: Callable[[str], None], config: Any = None) -> Path:
    """Run ``train(resume)`` unless ``run_dir`` already holds a finished run (``DONE`` marker);
    resumes a run that stopped part-way. The stages of ``demo``, ``ablate`` and ``claim`` use it.

    With ``config`` (the run's config object), a run already in ``run_dir`` is reused or resumed
    only if its ``config.yaml`` agrees on :data:`STAGE_KEYS`; otherwise a one-line error, so that an
    older demo's folder is never reported as this one's result."""
    from bevsimdet.io import atomic_write_text

    done = run_dir / "DONE"
    stored_path = run_dir / "config.yaml"
    if config is not None and stored_path.is_file() and (done.is_file() or (run_dir / "checkpoints").is_dir()):
        import yaml

        from bevsimdet.errors import UserError
        from bevsimdet.io import plain
        from bevsimdet.weights import names

        stored = yaml.safe_load(stored_path.read_text()) or {}
        diff = stage_config_diff(stored, plain(config))
        if diff:
            raise UserError(f"{run_dir} holds a run of another config ({names(diff)} differ from this run's; see {stored_path})",
                            fix=f"pass another output folder (--out), or delete {run_dir} to train it again")
    if done.is_file():
        ckpt = Path(done.read_text().strip())
        if ckpt.is_file():
            log(f"reusing {ckpt}")
            return ckpt
    resume = (run_dir / "checkpoints" / "latest.safetensors").is_file()
    if resume:
        log(f"resuming {run_dir}")
    try:
        ckpt = train(resume)
    except TrainingInterrupted as e:
        # the commands built on stages resume by themselves: "--resume" is not theirs to take
        raise TrainingInterrupted(
            f"stopped by signal at step {e.step}/{e.total} of {run_dir}; checkpoint saved to {e.checkpoint}; "
            "run the same command again to continue (finished stages are reused, this one resumes)",
            e.signum, e.step, e.total, e.checkpoint,
        ) from None
    atomic_write_text(done, str(ckpt))
    return ckpt


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
    passes one holding its frozen teacher); an objective's ``init_reports`` (weights it copied
    into the model, e.g. ``distill.init_from_teacher``) join ``train.init_from``'s report in
    ``init_report.json``. On ``resume`` neither is written and ``train.init_from`` is skipped.
    Under torchrun every rank calls this; only the main rank writes files. Raises :class:`TrainingInterrupted` when stopped by a signal.
    """
    from bevsimdet.io import plain

    work_dir = Path(work_dir)
    tc: TrainConfig = cfg.train
    ckpts = CheckpointManager(work_dir / "checkpoints", tc.keep_checkpoints)
    if resume and not ckpts.latest.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {ckpts.latest}", fix="drop --resume to start a new run in this --work-dir")
    if not resume and ckpts.latest.is_file():
        raise UserError(f"{work_dir} already holds a training run", fix="pass --resume to continue it, or choose another --work-dir")
    from bevsimdet.models.build import HAS_LIDAR

    if cfg.data.gt_paste.enabled and cfg.model.type not in HAS_LIDAR:
        # pasted objects exist only in the points: a camera model never sees them, and a student's
        # teacher would teach objects that the student's images do not show (bevsimdet.data.gt_paste)
        raise ConfigError(f"data.gt_paste is for LiDAR and fusion models, not model.type '{cfg.model.type}'", fix="set data.gt_paste.enabled: false")
    config_dict = plain(cfg)
    if resume:
        check_config_compatible(read_checkpoint(ckpts.latest)[1].get("config"), config_dict, ckpts.latest)
    check_init_from(tc.init_from, resume)

    device = dist.select_device(tc.device)
    # info files first, before any process group exists: no rank waits in a collective
    # (under the process-group timeout) while another builds them
    from bevsimdet.data.dataset import ensure_infos

    for split in dict.fromkeys([cfg.data.train_split, *([tc.val_split or cfg.data.val_split] if tc.validate else [])]):
        ensure_infos(cfg.data, split, progress=progress, wait_s=tc.dist_timeout_s)
    dist.init_distributed(device, tc.dist_timeout_s)
    if dist.is_main():
        work_dir.mkdir(parents=True, exist_ok=True)
        save_run_config(config_dict, work_dir / "config.yaml")
    seed_all(cfg.seed)

    from bevsimdet.data.dataset import build_dataset, report_skipped
    from bevsimdet.data.loader import build_dataloader
    from bevsimdet.engine.evaluate import build_evaluator
    from bevsimdet.models.build import build_detector

    dataset = build_dataset(cfg.data, cfg.data.train_split, train=True)
    loader = build_dataloader(dataset, tc.batch_size, shuffle=True, seed=cfg.seed, num_workers=tc.num_workers, distributed=dist.is_dist(), sampler=cfg.data.sampler)
    model = build_detector(cfg.model).to(device)
    reports = [] if resume else init_from(tc.init_from, model)  # the resumed state wins
    if tc.channels_last:
        to_channels_last(model)
    objective = (objective_factory or detection_objective)(cfg, model)
    if not resume:
        write_init_reports(work_dir, reports + list(getattr(objective, "init_reports", [])))
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
    report_skipped(dataset, "training")
    if result.interrupted:
        raise TrainingInterrupted(
            f"stopped by signal at step {trainer.step}/{steps}; checkpoint saved to {ckpts.latest}; continue with --resume",
            trainer.stop_signal, trainer.step, steps, ckpts.latest,
        )
    return ckpts.latest


__all__ = ["run_training", "init_from", "write_init_reports", "check_init_from", "total_steps", "detection_objective", "TrainingInterrupted", "ObjectiveFactory"]
