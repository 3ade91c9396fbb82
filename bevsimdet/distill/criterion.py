"""The distillation terms between a student's and a teacher's :class:`DetectorOutput`.

Feature pairs are matched by name (student feature -> teacher feature):

* ``imd``:   ``camera_bev``    -> ``camera_bev``
* ``cmd``:   ``sim_lidar_bev`` -> ``lidar_bev``, under the object-aware mask (:mod:`.masks`)
* ``mmd_f``: ``fused_bev``     -> ``fused_bev``

A student feature that went through a declared width adapter is read from
``feats["adapted/<name>"]`` (see :class:`bevsimdet.models.student.Student`). Prediction terms
(``mmd_p_cls``, ``mmd_p_box``) are summed over the head's tasks; ``depth`` supervises the
student's depth distributions with LiDAR. Terms whose weight is 0 are not computed at all.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.distill.losses import (
    box_regression_kd,
    feature_mse,
    gather_cells,
    quality_focal_kd,
    regression_code,
)
from bevsimdet.distill.masks import BevRange, object_mask
from bevsimdet.errors import ConfigError
from bevsimdet.models.depth import depth_bce, lidar_depth_bins
from bevsimdet.models.output import DetectorOutput
from bevsimdet.models.student import ADAPTED

FEATURE_PAIRS: dict[str, tuple[str, str]] = {
    "imd": ("camera_bev", "camera_bev"),
    "cmd": ("sim_lidar_bev", "lidar_bev"),
    "mmd_f": ("fused_bev", "fused_bev"),
}
TERMS: tuple[str, ...] = ("imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box", "depth")

# batch -> per task (flat GT-centre cell indices B x K, slot mask B x K); from the student's
# CenterPoint criterion, so the box term reads exactly the cells the supervised loss reads
CentreTargets = Callable[[Batch], Sequence[tuple[Tensor, Tensor]]]


def paired_feature(out: DetectorOutput, name: str) -> Tensor:
    return out.feats.get(ADAPTED + name, out.feats[name])


class DistillationCriterion(nn.Module):
    """Raw (unweighted) distillation terms; ``enabled`` names the terms to compute.

    Args:
        enabled: subset of :data:`TERMS`.
        bev_range: (xmin, ymin, xmax, ymax) of the BEV feature maps, for the CMD mask.
        centre_targets: GT-centre indices and slot masks per head task (needed by ``mmd_p_box``).
        dbound: (dmin, dmax, step) of the student's depth bins (needed by ``depth``).
    """

    def __init__(
        self,
        enabled: Sequence[str],
        *,
        bev_range: BevRange,
        centre_targets: CentreTargets | None = None,
        dbound: tuple[float, float, float] | None = None,
        mask_min_overlap: float = 0.1,
        mask_min_radius: int = 2,
        qfl_beta: float = 2.0,
        pos_threshold: float = 0.1,
        box_code_weights: Sequence[float] = (1.0,) * 8 + (0.2, 0.2),
        smooth_l1_beta: float = 1.0 / 9.0,
    ):
        super().__init__()
        unknown = set(enabled) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown distillation terms {sorted(unknown)}; known: {list(TERMS)}")
        if "mmd_p_box" in enabled and centre_targets is None:
            raise ValueError("mmd_p_box needs centre_targets")
        if "depth" in enabled and dbound is None:
            raise ValueError("depth supervision needs the depth bins (dbound)")
        self.enabled = tuple(t for t in TERMS if t in enabled)
        self.bev_range = tuple(float(v) for v in bev_range)
        self.centre_targets = centre_targets
        self.dbound = dbound
        self.mask_min_overlap, self.mask_min_radius = mask_min_overlap, mask_min_radius
        self.qfl_beta, self.pos_threshold = qfl_beta, pos_threshold
        self.box_code_weights = tuple(box_code_weights)
        self.smooth_l1_beta = smooth_l1_beta

    @property
    def needs_teacher(self) -> bool:
        return any(t != "depth" for t in self.enabled)

    def _pair(self, term: str, student: DetectorOutput, teacher: DetectorOutput) -> tuple[Tensor, Tensor]:
        s_name, t_name = FEATURE_PAIRS[term]
        for who, out, name in (("student", student, s_name), ("teacher", teacher, t_name)):
            if name not in out.feats:
                raise ConfigError(f"{term}: the {who} has no '{name}' feature (it has {sorted(out.feats)})")
        s, t = paired_feature(student, s_name), teacher.feats[t_name]
        if s.shape != t.shape:
            raise ConfigError(
                f"{term}: student '{s_name}' is {tuple(s.shape[1:])} but teacher '{t_name}' is {tuple(t.shape[1:])} (C x Ny x Nx)",
                fix=(f"set model.student.adapters.{s_name}: {t.shape[1]} (a 1x1 conv) or match the widths"
                     if s.shape[2:] == t.shape[2:] else "use the same BEV grid for student and teacher"),
            )
        return s, t

    def forward(self, student: DetectorOutput, teacher: DetectorOutput | None, batch: Batch) -> dict[str, Tensor]:
        if teacher is None and self.needs_teacher:
            raise ValueError(f"terms {self.enabled} need the teacher's output")
        terms: dict[str, Tensor] = {}
        for term in ("imd", "mmd_f"):
            if term in self.enabled:
                terms[term] = feature_mse(*self._pair(term, student, teacher))
        if "cmd" in self.enabled:
            s, t = self._pair("cmd", student, teacher)
            mask = object_mask(
                [b.to(s.device) for b in batch.gt_boxes], [l.to(s.device) for l in batch.gt_labels],
                self.bev_range, tuple(s.shape[-2:]),
                min_overlap=self.mask_min_overlap, min_radius=self.mask_min_radius,
            )
            terms["cmd"] = feature_mse(s, t, mask)
        if "mmd_p_cls" in self.enabled:
            terms["mmd_p_cls"] = sum(
                quality_focal_kd(sp["heatmap"], tp["heatmap"].float().sigmoid(), beta=self.qfl_beta, pos_threshold=self.pos_threshold)
                for sp, tp in zip(student.preds, teacher.preds)
            )
        if "mmd_p_box" in self.enabled:
            total = None
            for (idx, slots), sp, tp in zip(self.centre_targets(batch), student.preds, teacher.preds):
                v = box_regression_kd(
                    gather_cells(regression_code(sp), idx), gather_cells(regression_code(tp), idx), slots,
                    code_weights=self.box_code_weights, beta=self.smooth_l1_beta,
                )
                total = v if total is None else total + v
            terms["mmd_p_box"] = total
        if "depth" in self.enabled:
            if student.depth is None:
                raise ConfigError("depth supervision: the student returns no depth distribution", fix="set distill.weights.depth: 0")
            bins = lidar_depth_bins(batch, tuple(student.depth.shape[-2:]), self.dbound).to(student.depth.device)
            terms["depth"] = depth_bce(student.depth, bins)
        return terms


def enabled_terms(weights: Mapping[str, float]) -> list[str]:
    """The distillation terms with a non-zero weight."""
    return [t for t in TERMS if float(weights.get(t, 0.0)) != 0.0]


__all__ = ["DistillationCriterion", "FEATURE_PAIRS", "TERMS", "ADAPTED", "enabled_terms", "paired_feature"]
