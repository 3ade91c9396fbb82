"""Config -> distillation run: the student trained by the engine with a distillation objective.

``run_distillation`` is what ``bevsimdet distill`` and ``bevsimdet demo`` call; it is
``engine.train.run_training`` with an objective factory that loads the frozen teacher once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from bevsimdet.errors import ConfigError, UserError

if TYPE_CHECKING:
    from bevsimdet.weights import InitReport


def check_same_grid(student_model: Any, teacher_model: Any, student_name: str = "student", teacher_name: str = "teacher") -> None:
    """One-line ConfigError unless student and teacher BEV maps share grid shape and metric range
    (the feature terms compare them cell by cell, and the object mask is drawn on that grid)."""
    from bevsimdet.models.build import bev_grid

    s_shape, s_range = bev_grid(student_model)
    t_shape, t_range = bev_grid(teacher_model)
    if tuple(s_shape) != tuple(t_shape) or any(abs(a - b) > 1e-6 for a, b in zip(s_range, t_range)):
        def show(shape: Any, rng: Any) -> str:
            return f"{shape[0]}x{shape[1]} over x [{rng[0]:g}, {rng[2]:g}] y [{rng[1]:g}, {rng[3]:g}] m"

        raise ConfigError(
            f"the student '{student_name}' has a BEV grid of {show(s_shape, s_range)} but the teacher '{teacher_name}' has {show(t_shape, t_range)}",
            fix="give the student the teacher's model.camera xbound / ybound / downsample (distillation compares the maps cell by cell)",
        )


LIDAR_INPUT_KEYS = ("sweeps", "sweep_stride", "load_dim")


def check_same_lidar_input(student_data: Any, teacher_data: Any, student_name: str = "student", teacher_name: str = "teacher") -> None:
    """One-line ConfigError unless the student's data config loads the LiDAR input the teacher was
    trained on: the student never reads the points, but its batches feed the teacher, and a teacher
    trained on sweeps 3 apart (time slices) silently degrades on consecutive sweeps."""
    differ = [k for k in LIDAR_INPUT_KEYS if getattr(student_data, k) != getattr(teacher_data, k)]
    if differ:
        raise ConfigError(
            f"the student '{student_name}' loads LiDAR with " + ", ".join(f"{k}={getattr(student_data, k)}" for k in differ)
            + f" but the teacher '{teacher_name}' was trained with " + ", ".join(f"{k}={getattr(teacher_data, k)}" for k in differ),
            fix="set the same data." + " / data.".join(differ) + " in the student config (its batches feed the teacher)",
        )


def check_teacher_fits(cfg: Any, teacher_cfg: Any) -> None:
    """Both checks a teacher config must pass against the student's: same BEV grid, same LiDAR input."""
    check_same_grid(cfg.model, teacher_cfg.model, cfg.name, teacher_cfg.name)
    check_same_lidar_input(cfg.data, teacher_cfg.data, cfg.name, teacher_cfg.name)


def build_distillation_objective(cfg: Any, model: nn.Module, teacher: nn.Module | None, teacher_cfg: Any | None = None):
    """The :class:`DistillationObjective` of ``cfg`` for a built student ``model`` (its criterion on
    the model's device). With the teacher's config, first checks that the two share a BEV grid and
    LiDAR input (:func:`check_teacher_fits`)."""
    from bevsimdet.distill.criterion import DistillationCriterion, enabled_terms, head_targets_fn
    from bevsimdet.distill.losses import grouped_code_weights
    from bevsimdet.distill.objective import DistillationObjective
    from bevsimdet.models.build import bev_range, build_criterion, depth_bound

    if teacher_cfg is not None:
        check_teacher_fits(cfg, teacher_cfg)
    dc = cfg.distill
    weights = dict(vars(dc.weights))
    enabled = enabled_terms(weights)
    # the supervised criterion holds buffers (code weights): it must live where the student does
    device = next(model.parameters()).device
    criterion = build_criterion(cfg.model).to(device)
    distill = DistillationCriterion(
        enabled,
        bev_range=bev_range(cfg.model),
        targets=head_targets_fn(criterion),
        dbound=depth_bound(cfg.model),
        normalize=dict(vars(dc.normalize)),
        mask_min_overlap=dc.mask_min_overlap,
        mask_min_radius=dc.mask_min_radius,
        qfl_beta=dc.qfl_beta,
        pos_threshold=dc.pos_threshold,
        box_code_weights=grouped_code_weights(dc.box_code_weights, vars(dc.box_groups)),
        smooth_l1_beta=dc.smooth_l1_beta,
        max_objs=cfg.model.head.max_objs,
        depth_branch=dc.depth_branch,
        depth_object_weight=dc.depth_object_weight,
        mask_range_weight=dc.mask_range_weight,
        depth_range_power=dc.depth_range_power,
    ).to(device)
    all_weights = {**(getattr(cfg.model, "loss_weights", None) or {}), **weights}
    amp = None if dc.teacher_amp == "none" else getattr(torch, dc.teacher_amp)
    return DistillationObjective(
        teacher if distill.needs_teacher else None, criterion, distill, all_weights, teacher_amp=amp, grad_log_interval=dc.grad_log_interval,
    )


# student part -> the teacher detector's module it can start from
TEACHER_PARTS = {
    "image_encoder": "image_encoder",
    "camera_vt": "view_transform",
    "sim_lidar_vt": "view_transform",
    "fuser": "fuser",
    "decoder": "decoder",
    "head": "head",
}


def teacher_init(student: nn.Module, teacher: nn.Module, parts: list[str]) -> "InitReport":
    """Copy the frozen teacher's weights (and BatchNorm statistics) into the student's ``parts``
    (names of :data:`TEACHER_PARTS`) through :func:`bevsimdet.weights.init_model`, the mechanism
    of ``train.init_from``, with the prefix map ``{part: teacher module}``. A part whose keys or
    shapes differ from the teacher's raises a one-line ``ConfigError`` naming the first mismatch."""
    from bevsimdet.weights import init_model, map_weights

    detector = getattr(teacher, "detector", teacher)
    for part in parts:
        if part not in TEACHER_PARTS:
            raise ConfigError(f"distill.init_from_teacher: unknown part '{part}'", fix="choose from " + ", ".join(TEACHER_PARTS))
        source = getattr(detector, TEACHER_PARTS[part], None)
        target = getattr(student, part, None)
        if source is None or target is None:
            raise ConfigError(
                f"distill.init_from_teacher: the {'teacher has no ' + TEACHER_PARTS[part] if source is None else 'student has no ' + part}",
                fix=f"drop '{part}' from distill.init_from_teacher",
            )
    src, own = detector.state_dict(), student.state_dict()
    for part in parts:  # per part, so that the error names the part and the teacher's module
        _, report = map_weights(src, own, {part: TEACHER_PARTS[part]})
        wrong = sorted(report.missing + report.shape_mismatched + report.unexpected)
        if wrong:
            key = wrong[0]
            tkey = key if key in report.unexpected else TEACHER_PARTS[part] + key[len(part):]
            skey = part + key[len(TEACHER_PARTS[part]):] if key in report.unexpected else key
            have = lambda sd, k: tuple(sd[k].shape) if k in sd else "missing"  # noqa: E731
            raise ConfigError(
                f"distill.init_from_teacher: student {skey} {have(own, skey)} does not match the teacher's {tkey} {have(src, tkey)}",
                fix=f"give the student's {part} the teacher's architecture, or drop '{part}' from distill.init_from_teacher",
            )
    return init_model(student, src, {p: TEACHER_PARTS[p] for p in parts}, strict=True, name="the frozen teacher")


def init_from_teacher(student: nn.Module, teacher: nn.Module, parts: list[str]) -> int:
    """:func:`teacher_init`; returns the number of tensors copied."""
    return len(teacher_init(student, teacher, parts).loaded)


def share_teacher_frozen_stages(student: nn.Module, teacher: nn.Module) -> bool:
    """Let the student reuse the teacher's frozen image-encoder stages on each batch when they are
    the same weights (both frozen at ImageNet's: the demo's case), instead of computing them twice
    per step; exact, since the same weights see the same images. Returns whether they are shared."""
    from bevsimdet.models.image.efficientnet import share_frozen_stages

    detector = getattr(teacher, "detector", teacher)
    s, t = getattr(student, "image_encoder", None), getattr(detector, "image_encoder", None)
    return s is not None and t is not None and share_frozen_stages(getattr(s, "backbone", None), getattr(t, "backbone", None))


def load_frozen_teacher(teacher_cfg: Any, checkpoint: str | Path, device: torch.device) -> nn.Module:
    from bevsimdet.distill.objective import freeze
    from bevsimdet.models.teacher import load_teacher

    return freeze(load_teacher(checkpoint, teacher_cfg.model).to(device))


def teacher_terms(cfg: Any) -> list[str]:
    """The enabled distillation terms of ``cfg`` that need the teacher's output."""
    from bevsimdet.distill.criterion import enabled_terms

    return [t for t in enabled_terms(vars(cfg.distill.weights)) if t != "depth"]


def needs_teacher(cfg: Any) -> list[str]:
    """What in ``cfg`` needs the teacher: its enabled teacher terms and ``init_from_teacher``
    (unless ``distill.init_checkpoint`` names another source for those parts)."""
    from_teacher = cfg.distill.init_from_teacher and not cfg.distill.init_checkpoint
    return teacher_terms(cfg) + (["init_from_teacher"] if from_teacher else [])


def init_parts_from_checkpoint(model: nn.Module, checkpoint: str | Path, parts: list[str], config_of: Callable[[str | Path], Any]) -> "InitReport":
    """:func:`teacher_init` with the model stored in ``checkpoint`` as the source (its config read
    by ``config_of``, e.g. ``bevsimdet.config.teacher_config_from``), loaded frozen on the
    student's device and dropped afterwards."""
    device = next(model.parameters()).device
    source = load_frozen_teacher(config_of(checkpoint), checkpoint, device)
    return teacher_init(model, source, parts)


def distillation_objective_factory(teacher_cfg: Any | Callable[[], Any] | None, teacher_checkpoint: str | Path | None,
                                   config_of: Callable[[str | Path], Any] | None = None):
    """``objective_factory`` for :func:`run_training`; loads the teacher only if a term needs it.
    ``teacher_cfg`` is the teacher's config or a function returning it (called only then, e.g.
    ``lambda: bevsimdet.config.teacher_config_from(checkpoint)``; the combined config schema sits
    above this package, so its callers load it). ``config_of(checkpoint)`` reads the stored config
    of ``distill.init_checkpoint``'s model (needed only when that key is set)."""

    def make(cfg: Any, model: nn.Module):
        teacher = None
        reports = []
        if cfg.distill.init_from_teacher and cfg.distill.init_checkpoint:
            # before the trainer copies the model into its EMA; --resume then overwrites it all
            if config_of is None:
                raise ValueError("distill.init_checkpoint needs config_of (a function reading a checkpoint's stored config)")
            reports.append(init_parts_from_checkpoint(model, cfg.distill.init_checkpoint, cfg.distill.init_from_teacher, config_of))
        if needs_teacher(cfg):
            device = next(model.parameters()).device
            tcfg = teacher_cfg() if callable(teacher_cfg) else teacher_cfg
            if tcfg is None:
                raise ValueError("the distillation objective needs the teacher's config (pass it, or a function loading it)")
            check_teacher_fits(cfg, tcfg)  # before loading its weights
            teacher = load_frozen_teacher(tcfg, teacher_checkpoint, device)
            if cfg.train.channels_last:  # the student's layout, so both run the same kernels
                from bevsimdet.engine.precision import to_channels_last

                to_channels_last(teacher)
            # before the trainer copies the model into its EMA; --resume then overwrites it all
            if cfg.distill.init_from_teacher and not cfg.distill.init_checkpoint:
                reports.append(teacher_init(model, teacher, cfg.distill.init_from_teacher))
            share_teacher_frozen_stages(model, teacher)
        objective = build_distillation_objective(cfg, model, teacher)
        objective.init_reports = reports  # run_training writes them into the run directory
        return objective

    return make


def check_inputs(cfg: Any, teacher_checkpoint: str | Path | None) -> None:
    """Fail fast, before any data is read, on a wrong model type or a missing teacher."""

    if cfg.model.type != "student":
        raise ConfigError(
            f"distillation trains a BEVSimDet student, but model.type is '{cfg.model.type}'",
            fix="use a student config such as configs/demo_student.yaml",
        )
    init = cfg.distill.init_checkpoint
    if init and not Path(init).is_file():
        raise UserError(f"distill.init_checkpoint not found: {init}", fix="train that model first, or unset distill.init_checkpoint")
    needs = needs_teacher(cfg)
    if needs and teacher_checkpoint is None:
        raise ConfigError(f"distillation settings {needs} need a teacher", fix="pass --teacher CHECKPOINT (or set their weights to 0 and distill.init_from_teacher to [])")
    if needs and not Path(teacher_checkpoint).is_file():
        raise UserError(f"teacher checkpoint not found: {teacher_checkpoint}", fix="train the fusion teacher first (bevsimdet train configs/demo_fusion.yaml ...)")


def run_distillation(
    cfg: Any,
    teacher_cfg: Any | Callable[[], Any] | None,
    teacher_checkpoint: str | Path | None,
    work_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    config_of: Callable[[str | Path], Any] | None = None,
) -> Path:
    """Distil ``cfg``'s student from the teacher in ``teacher_checkpoint``; returns the student's
    final checkpoint. ``teacher_cfg`` is the teacher's config or a function loading it (see
    :func:`distillation_objective_factory`); it may be ``None`` when no term needs the teacher."""
    from bevsimdet.engine.train import run_training

    check_inputs(cfg, teacher_checkpoint)
    factory = distillation_objective_factory(teacher_cfg, teacher_checkpoint, config_of)
    return run_training(cfg, work_dir, resume=resume, objective_factory=factory, progress=progress)


__all__ = ["run_distillation", "distillation_objective_factory", "check_inputs", "check_same_grid", "check_same_lidar_input", "check_teacher_fits", "teacher_terms", "needs_teacher", "init_from_teacher", "teacher_init", "init_parts_from_checkpoint", "TEACHER_PARTS", "build_distillation_objective", "load_frozen_teacher", "share_teacher_frozen_stages"]
