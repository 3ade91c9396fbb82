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


__all__ = ["DistillConfig", "DistillWeights"]
