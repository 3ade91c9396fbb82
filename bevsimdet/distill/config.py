"""Schema of the ``distill:`` config section.

Only dataclasses here (no torch), so loading a config stays cheap.

:class:`DistillConfig` (``distill:``): which distillation terms run, with what weights, and how
the frozen teacher is run. A weight of 0 switches a term off entirely (it is not computed). The
student's own model settings (``model.student:``) are a model config:
:class:`bevsimdet.models.config.StudentConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DistillWeights:
    """Weight of each distillation term; 0 turns a term off.

    Defaults are the released code's weights (method.md 2.3: IMD 1, CMD 100, MMD-F 1, MMD-P
    0.25 / 0.25) converted to the default normalisers with the paper's typical factors on its
    180 x 180 grid (docs/distill.md, "Normalisers"): CMD 100 x 0.002 (object-mask mass per
    cell), MMD-P cls 0.25 x 0.1 (GT centres per teacher cell with p > 0.1), MMD-P box
    0.25 x 0.03 (objects per task and batch / 500). The student's supervised detection terms
    keep the weights of the model's criterion (``model.loss_weights``).
    """

    imd: float = 1.0  # teacher camera BEV -> student camera BEV (MSE)
    cmd: float = 0.2  # teacher LiDAR BEV -> student sim-LiDAR BEV (MSE under the object mask)
    mmd_f: float = 1.0  # teacher fused BEV -> student fused BEV (MSE)
    mmd_p_cls: float = 0.025  # heatmaps: quality focal loss against teacher probabilities
    mmd_p_box: float = 0.0075  # box codes at GT centres: SmoothL1 against the teacher's
    depth: float = 0.0  # LiDAR depth supervision of the student's depth distributions (BCE)


@dataclass
class DistillNormalize:
    """Denominator of each term (docs/distill.md, "Normalisers"); the released code's in [].

    ``elements``: mean over B·C·H·W [IMD, CMD, MMD-F]; ``mask``: C x the mass of the object
    mask (ΣM²), a mean over object regions. ``teacher_pos``: teacher cells with p >
    ``pos_threshold`` [MMD-P cls]; ``gt_centres``: GT centre cells (CenterPoint's own heatmap
    normaliser); ``teacher_peaks``: the teacher's local maxima above ``pos_threshold``.
    ``objects``: real GT objects; ``max_objs``: ``model.head.max_objs`` per batch [MMD-P box].
    Heatmap and box terms are normalised per head task and summed over tasks.
    """

    imd: Literal["elements", "mask"] = "elements"
    cmd: Literal["elements", "mask"] = "mask"
    mmd_f: Literal["elements", "mask"] = "elements"
    mmd_p_cls: Literal["teacher_pos", "gt_centres", "teacher_peaks"] = "gt_centres"
    mmd_p_box: Literal["objects", "max_objs"] = "objects"


@dataclass
class BoxGroupWeights:
    """Per-component multipliers of the MMD-P box term, on top of ``box_code_weights``:
    offset (dx, dy), z, size (log w, l, h), rot (sin, cos), vel (vx, vy). 0 switches a component
    off, e.g. heading and velocity when the teacher's are poor."""

    offset: float = 1.0
    z: float = 1.0
    size: float = 1.0
    rot: float = 1.0
    vel: float = 1.0


@dataclass
class DistillConfig:
    weights: DistillWeights = field(default_factory=DistillWeights)
    normalize: DistillNormalize = field(default_factory=DistillNormalize)
    # object-aware mask (CenterPoint heatmap style, summed over classes, clamped to 1): CMD, and
    # IMD / MMD-F with normalize 'mask'
    mask_min_overlap: float = 0.1
    mask_min_radius: int = 2
    # MMD-P
    qfl_beta: float = 2.0
    pos_threshold: float = 0.1  # teacher probability above which a cell counts as positive
    box_code_weights: list[float] = field(default_factory=lambda: [1.0] * 8 + [0.2, 0.2])
    box_groups: BoxGroupWeights = field(default_factory=BoxGroupWeights)
    smooth_l1_beta: float = 1.0 / 9.0
    # which of the student's depth distributions the depth term supervises (both: the sum)
    depth_branch: Literal["camera", "sim_lidar", "both"] = "both"
    # extra weight of feature cells whose nearest LiDAR return lies on an annotated object (a cell
    # weighs 1 + this): the ground is cheap for a camera-aware depth net, objects are what matter
    depth_object_weight: float = 0.0
    # far objects (0: off): the object mask's cells (CMD) weigh 1 + this x distance / 50 m; the
    # student's gain over camera-only training sits in the near objects (docs/results.md)
    mask_range_weight: float = 0.0
    # depth cells beyond 15 m weigh (return depth / 15 m) ** this, nearer ones 1: far objects fill
    # few image cells (their area falls as 1 / d^2), so the plain average hardly sees them
    depth_range_power: float = 0.0
    # every this many steps, log each weighted term's gradient norm on the student and its share
    # (a 'distill' row in log.jsonl; costs one extra backward per term at those steps; 0: off)
    grad_log_interval: int = 0
    # student parts that start from the frozen teacher's weights (training time only, like every
    # term here): ``fuser``, ``decoder``, ``head`` (the student then has to produce teacher-like
    # fused BEV features, which MMD-F asks for anyway), ``image_encoder``, ``camera_vt`` /
    # ``sim_lidar_vt`` (both from the teacher's camera LSS). Shapes must match (a one-line error).
    init_from_teacher: list[str] = field(default_factory=list)
    # copy those parts from this checkpoint's model instead of the teacher's (its config is read
    # from the checkpoint; the parts' shapes must match): e.g. a LiDAR-free model of the teacher's
    # fuser / decoder / head shape, the warm-start control of ``bevsimdet claim``
    init_checkpoint: str | None = None
    # teacher: its model config is read from the checkpoint; a YAML path here overrides it
    teacher_config: str | None = None
    teacher_amp: Literal["none", "float16", "bfloat16"] = "none"  # teacher autocast (CPU: bfloat16 only, where native)


__all__ = ["DistillConfig", "DistillWeights", "DistillNormalize", "BoxGroupWeights"]
