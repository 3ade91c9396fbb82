"""Schemas of the ``distill:`` config section and of the student's own model settings.

Only dataclasses here (no torch), so loading a config stays cheap.

* :class:`DistillConfig` (``distill:``): which distillation terms run, with what weights, and how
  the frozen teacher is run. A weight of 0 switches a term off entirely (it is not computed).
* :class:`StudentConfig` (``model.student:``, referenced from ``ModelConfig``): what the
  BEVSimDet student adds to the camera-only detector (second view transform, GCM blocks, the
  projection to the teacher's LiDAR-BEV width, width adapters for distilled features).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DistillWeights:
    """Weight of each distillation term (method.md 2.3 defaults); 0 turns a term off.

    The student's supervised detection terms keep the weights of the model's criterion.
    """

    imd: float = 1.0  # teacher camera BEV -> student camera BEV (MSE)
    cmd: float = 100.0  # teacher LiDAR BEV -> student sim-LiDAR BEV (MSE under the object mask)
    mmd_f: float = 1.0  # teacher fused BEV -> student fused BEV (MSE)
    mmd_p_cls: float = 0.25  # heatmaps: quality focal loss against teacher probabilities
    mmd_p_box: float = 0.25  # box codes at GT centres: SmoothL1 against the teacher's
    depth: float = 0.0  # LiDAR depth supervision of the student's depth distributions (BCE)


@dataclass
class DistillConfig:
    weights: DistillWeights = field(default_factory=DistillWeights)
    # object-aware CMD mask (CenterPoint heatmap style, summed over classes, clamped to 1)
    mask_min_overlap: float = 0.1
    mask_min_radius: int = 2
    # MMD-P
    qfl_beta: float = 2.0
    pos_threshold: float = 0.1  # teacher probability above which a cell counts as positive
    box_code_weights: list[float] = field(default_factory=lambda: [1.0] * 8 + [0.2, 0.2])
    smooth_l1_beta: float = 1.0 / 9.0
    # which student view transform the depth term supervises: 'camera' or 'sim_lidar' branch
    depth_branch: Literal["camera", "sim_lidar", "both"] = "both"
    # teacher: its model config is read from the checkpoint; a YAML path here overrides it
    teacher_config: str | None = None
    teacher_amp: Literal["none", "float16", "bfloat16"] = "none"  # teacher autocast (CUDA only)


@dataclass
class StudentConfig:
    """BEVSimDet student settings (used when ``model.type: student``)."""

    sim_lidar_channels: int = 256  # must equal the teacher's LiDAR-BEV width (CMD pairs them)
    gcm: bool = True  # residual deformable attention on the sim-LiDAR BEV
    gcm_heads: int = 8
    gcm_points: int = 20
    image_gcm: bool = False  # a second GCM block on the image features of the sim-LiDAR branch
    image_gcm_heads: int = 8
    image_gcm_points: int = 10
    # student feature name -> teacher width, for paired features whose widths differ:
    # a 1x1 conv (part of the student, trained with it, unused at test time) adapts them
    adapters: dict[str, int] = field(default_factory=dict)


__all__ = ["DistillConfig", "DistillWeights", "StudentConfig"]
