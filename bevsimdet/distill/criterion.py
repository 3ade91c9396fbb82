"""The distillation terms between a student's and a teacher's :class:`DetectorOutput`.

Feature pairs are matched by name (student feature -> teacher feature):

* ``imd``:   ``camera_bev``    -> ``camera_bev``
* ``cmd``:   ``sim_lidar_bev`` -> ``lidar_bev``, under the object-aware mask (:mod:`.masks`)
* ``mmd_f``: ``fused_bev``     -> ``fused_bev``

A student feature that went through a declared width adapter is read from
``feats["adapted/<name>"]`` (see :class:`bevsimdet.models.student.Student`). Prediction terms
(``mmd_p_cls``, ``mmd_p_box``) are normalised per head task and summed over the tasks;
``depth`` supervises the student's depth distributions (``depth_branch``) with LiDAR. Terms
whose weight is 0 are not computed at all.

Each term's denominator is chosen per term (``normalize``, see :mod:`.losses`). Alongside each
term the criterion keeps, detached, what the term would be under the released code's
normaliser, so :meth:`DistillationCriterion.released_factors` can say how a released weight
converts to the configured normaliser on the data actually seen.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.distill.losses import (
    box_kd_sum,
    box_normalizer,
    cls_normalizer,
    feature_normalizer,
    feature_sq_error_sum,
    gather_cells,
    qfl_sum,
    regression_code,
)
from bevsimdet.distill.masks import BevRange, object_mask, range_weight
from bevsimdet.errors import ConfigError
from bevsimdet.models.depth import bin_centre_depth, depth_bce, lidar_depth_targets
from bevsimdet.models.output import DetectorOutput
from bevsimdet.models.student import ADAPTED

FEATURE_PAIRS: dict[str, tuple[str, str]] = {
    "imd": ("camera_bev", "camera_bev"),
    "cmd": ("sim_lidar_bev", "lidar_bev"),
    "mmd_f": ("fused_bev", "fused_bev"),
}
TERMS: tuple[str, ...] = ("imd", "cmd", "mmd_f", "mmd_p_cls", "mmd_p_box", "depth")
# the released code's normaliser of each term (method.md 2.3) and its weight there
RELEASED_NORMALIZE: dict[str, str] = {"imd": "elements", "cmd": "elements", "mmd_f": "elements", "mmd_p_cls": "teacher_pos", "mmd_p_box": "max_objs"}
RELEASED_WEIGHTS: dict[str, float] = {"imd": 1.0, "cmd": 100.0, "mmd_f": 1.0, "mmd_p_cls": 0.25, "mmd_p_box": 0.25}
DEFAULT_NORMALIZE: dict[str, str] = {"imd": "elements", "cmd": "mask", "mmd_f": "elements", "mmd_p_cls": "gt_centres", "mmd_p_box": "objects"}
DEPTH_BRANCHES: dict[str, tuple[str, ...]] = {"camera": ("camera",), "sim_lidar": ("sim_lidar",), "both": ("camera", "sim_lidar")}


class TaskTargets(NamedTuple):
    """GT targets of one head task, from the student's CenterPoint criterion."""

    indices: Tensor  # B x K long, flat GT-centre cells iy * Nx + ix
    slots: Tensor  # B x K, 1 for a real object, 0 for padding
    heatmap: Tensor  # B x K_t x Ny x Nx GT heatmap (exactly 1 at each centre cell)


# batch -> one TaskTargets per head task, so the prediction terms read exactly the cells (and the
# centre count) the supervised loss reads
HeadTargets = Callable[[Batch], Sequence[TaskTargets]]


def head_targets_fn(criterion: nn.Module) -> HeadTargets:
    """:data:`HeadTargets` from a criterion with ``targets(batch)`` (CenterPointCriterion)."""

    def targets(batch: Batch) -> list[TaskTargets]:
        tg = criterion.targets(batch)
        return [TaskTargets(i, m, h) for i, m, h in zip(tg.indices, tg.masks, tg.heatmaps)]

    return targets


def paired_feature(out: DetectorOutput, name: str) -> Tensor:
    return out.feats.get(ADAPTED + name, out.feats[name])


def student_depths(out: DetectorOutput) -> dict[str, Tensor]:
    """The student's depth distributions by branch; a detector that fills only ``depth`` has one
    (its sim-LiDAR branch, as the student's ``depth`` is)."""
    if out.depths:
        return dict(out.depths)
    return {"sim_lidar": out.depth} if out.depth is not None else {}


DEPTH_RANGE_START = 15.0  # m: depth cells beyond it weigh more with ``depth_range_power``


class DistillationCriterion(nn.Module):
    """Raw (unweighted) distillation terms; ``enabled`` names the terms to compute.

    Args:
        enabled: subset of :data:`TERMS`.
        bev_range: (xmin, ymin, xmax, ymax) of the BEV feature maps, for the object mask.
        targets: GT targets per head task (needed by ``mmd_p_box`` and ``gt_centres``).
        dbound: (dmin, dmax, step) of the student's depth bins (needed by ``depth``).
        normalize: term -> normaliser (see :mod:`.losses`); missing terms take
            :data:`DEFAULT_NORMALIZE`.
        box_code_weights: 10 weights of the box code channels (group multipliers already applied,
            see :func:`.losses.grouped_code_weights`).
        max_objs: the ``max_objs`` box normaliser (the head's slot count; released: 500).
        depth_branch: which of the student's depth distributions ``depth`` supervises; ``both``
            sums the two branches' losses.
        depth_object_weight: extra weight of cells whose nearest LiDAR return lies on a GT object
            (each cell weighs ``1 + depth_object_weight``; 0: plain BEVDepth average).
        mask_range_weight: the object mask's cells weigh ``1 + mask_range_weight * r / 50 m`` more
            (``r``: the cell's distance from the ego origin), so far objects count more in CMD (and
            in IMD / MMD-F under the ``mask`` normaliser, which divides by the weighted mass).
        depth_range_power: each depth cell beyond 15 m also weighs ``(d / 15 m) ** depth_range_power``
            (``d``: its LiDAR return's depth, bin centre; nearer cells weigh 1; 0: off). An object's
            image area falls as 1 / d^2, so at 2 a far object weighs about what it would at 15 m.
    """

    def __init__(
        self,
        enabled: Sequence[str],
        *,
        bev_range: BevRange,
        targets: HeadTargets | None = None,
        dbound: tuple[float, float, float] | None = None,
        normalize: Mapping[str, str] | None = None,
        mask_min_overlap: float = 0.1,
        mask_min_radius: int = 2,
        qfl_beta: float = 2.0,
        pos_threshold: float = 0.1,
        box_code_weights: Sequence[float] = (1.0,) * 8 + (0.2, 0.2),
        smooth_l1_beta: float = 1.0 / 9.0,
        max_objs: int = 500,
        depth_branch: str = "both",
        depth_object_weight: float = 0.0,
        mask_range_weight: float = 0.0,
        depth_range_power: float = 0.0,
    ):
        super().__init__()
        unknown = set(enabled) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown distillation terms {sorted(unknown)}; known: {list(TERMS)}")
        self.normalize = {**DEFAULT_NORMALIZE, **dict(normalize or {})}
        if set(self.normalize) - set(DEFAULT_NORMALIZE):
            raise ValueError(f"normalisers for unknown terms {sorted(set(self.normalize) - set(DEFAULT_NORMALIZE))}")
        if depth_branch not in DEPTH_BRANCHES:
            raise ValueError(f"depth_branch must be one of {list(DEPTH_BRANCHES)}, got {depth_branch!r}")
        needs_targets = "mmd_p_box" in enabled or ("mmd_p_cls" in enabled and self.normalize["mmd_p_cls"] == "gt_centres")
        if needs_targets and targets is None:
            raise ValueError("mmd_p_box and the gt_centres normaliser need the head's GT targets")
        if "depth" in enabled and dbound is None:
            raise ValueError("depth supervision needs the depth bins (dbound)")
        self.enabled = tuple(t for t in TERMS if t in enabled)
        self.bev_range = tuple(float(v) for v in bev_range)
        self.targets = targets
        self.dbound = dbound
        self.mask_min_overlap, self.mask_min_radius = mask_min_overlap, mask_min_radius
        self.qfl_beta, self.pos_threshold = qfl_beta, pos_threshold
        self.box_code_weights = tuple(float(w) for w in box_code_weights)
        self.smooth_l1_beta = smooth_l1_beta
        self.max_objs = int(max_objs)
        self.depth_branch = depth_branch
        self.depth_object_weight = float(depth_object_weight)
        self.mask_range_weight, self.depth_range_power = float(mask_range_weight), float(depth_range_power)
        for key in ("depth_object_weight", "mask_range_weight", "depth_range_power"):
            if getattr(self, key) < 0:
                raise ConfigError(f"distill.{key} is {getattr(self, key):g}; it must be >= 0", fix=f"set distill.{key}: 0 to turn it off")
        self._released: dict[str, Tensor] = {}
        self._values: dict[str, Tensor] = {}

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

    def object_mask(self, batch: Batch, shape: tuple[int, int], device: torch.device) -> Tensor:
        """B x 1 x Ny x Nx object-aware mask of the batch's GT boxes on a ``shape`` grid (times the
        range weight when ``mask_range_weight`` is set)."""
        mask = object_mask(
            [b.to(device) for b in batch.gt_boxes], [l.to(device) for l in batch.gt_labels], self.bev_range, shape,
            min_overlap=self.mask_min_overlap, min_radius=self.mask_min_radius,
        )
        if self.mask_range_weight:
            mask = mask * range_weight(self.bev_range, shape, self.mask_range_weight, device=device)
        return mask

    def _record(self, term: str, total: Tensor, released: Tensor | None) -> Tensor:
        self._values[term] = total.detach()
        if released is not None:
            self._released[term] = released.detach()
        else:
            self._released.pop(term, None)
        return total

    def forward(self, student: DetectorOutput, teacher: DetectorOutput | None, batch: Batch) -> dict[str, Tensor]:
        if teacher is None and self.needs_teacher:
            raise ValueError(f"terms {self.enabled} need the teacher's output")
        self._released, self._values = {}, {}
        terms: dict[str, Tensor] = {}
        masks: dict[tuple[int, int], Tensor] = {}
        for term in ("imd", "cmd", "mmd_f"):
            if term not in self.enabled:
                continue
            s, t = self._pair(term, student, teacher)
            # CMD always compares under the mask; IMD / MMD-F only when normalised by it
            mask = None
            if term == "cmd" or self.normalize[term] == "mask":
                hw = tuple(s.shape[-2:])
                if hw not in masks:
                    masks[hw] = self.object_mask(batch, hw, s.device)
                mask = masks[hw]
            err = feature_sq_error_sum(s, t, mask)
            value = err / feature_normalizer(s.shape, mask, self.normalize[term])
            released = None
            if self.normalize[term] != RELEASED_NORMALIZE[term]:
                # the released IMD / MMD-F compare the whole map; CMD compares under the mask
                full = err if term == "cmd" else feature_sq_error_sum(s.detach(), t, None)
                released = full / feature_normalizer(s.shape, None, "elements")
            terms[term] = self._record(term, value, released)
        targets = None
        if "mmd_p_box" in self.enabled or ("mmd_p_cls" in self.enabled and self.normalize["mmd_p_cls"] == "gt_centres"):
            targets = self.targets(batch)
        if "mmd_p_cls" in self.enabled:
            mode = self.normalize["mmd_p_cls"]
            total, released = None, None
            for i, (sp, tp) in enumerate(zip(student.preds, teacher.preds)):
                probs = tp["heatmap"].float().sigmoid()
                qfl = qfl_sum(sp["heatmap"], probs, beta=self.qfl_beta)
                gt = targets[i].heatmap.to(probs.device) if targets is not None else None
                v = qfl / cls_normalizer(probs, mode, pos_threshold=self.pos_threshold, gt_heatmap=gt)
                r = qfl.detach() / cls_normalizer(probs, "teacher_pos", pos_threshold=self.pos_threshold)
                total = v if total is None else total + v
                released = r if released is None else released + r
            terms["mmd_p_cls"] = self._record("mmd_p_cls", total, released if mode != "teacher_pos" else None)
        if "mmd_p_box" in self.enabled:
            mode = self.normalize["mmd_p_box"]
            total, released = None, None
            for tt, sp, tp in zip(targets, student.preds, teacher.preds):
                idx, slots = tt.indices.to(sp["heatmap"].device), tt.slots.to(sp["heatmap"].device)
                err = box_kd_sum(
                    gather_cells(regression_code(sp), idx), gather_cells(regression_code(tp), idx), slots,
                    code_weights=self.box_code_weights, beta=self.smooth_l1_beta,
                )
                v = err / box_normalizer(slots, mode, self.max_objs)
                r = err.detach() / box_normalizer(slots, "max_objs", self.max_objs)
                total = v if total is None else total + v
                released = r if released is None else released + r
            terms["mmd_p_box"] = self._record("mmd_p_box", total, released if mode != "max_objs" else None)
        if "depth" in self.enabled:
            terms["depth"] = self._depth(student, batch)
        return terms

    def _depth(self, student: DetectorOutput, batch: Batch) -> Tensor:
        depths = student_depths(student)
        wanted = DEPTH_BRANCHES[self.depth_branch]
        missing = [b for b in wanted if b not in depths]
        if missing:
            raise ConfigError(
                f"distill.depth_branch '{self.depth_branch}': the student has no {' / '.join(missing)} depth distribution (it has {sorted(depths) or 'none'})",
                fix=f"set distill.depth_branch to one of {sorted(depths)}" if depths else "set distill.weights.depth: 0",
            )
        total = None
        bins = None
        for name in wanted:
            d = depths[name]
            if bins is None or bins.shape[-2:] != d.shape[-2:]:
                bins, on_object = (t.to(d.device) for t in lidar_depth_targets(batch, tuple(d.shape[-2:]), self.dbound))
                weights = self._depth_weights(bins, on_object)
            v = depth_bce(d, bins, weights)
            total = v if total is None else total + v
        return total

    def _depth_weights(self, bins: Tensor, on_object: Tensor) -> Tensor | None:
        """(B*N) x h x w weight of each depth cell, None for the plain average."""
        weights = None
        if self.depth_object_weight:
            weights = 1.0 + self.depth_object_weight * on_object.float()
        if self.depth_range_power:
            depth = bin_centre_depth(bins.clamp(min=0), self.dbound)  # cells without a return are ignored by depth_bce
            # only upweight: an earlier (d / 50 m)^p on every cell starved the near depth (docs/results.md)
            far = (depth.clamp(min=DEPTH_RANGE_START) / DEPTH_RANGE_START) ** self.depth_range_power
            weights = far if weights is None else weights * far
        return weights

    def released_factors(self) -> dict[str, float]:
        """For each term of the last forward whose normaliser is not the released one:
        ``released_factor/<term>`` = (term under the released normaliser) / (term as configured),
        i.e. the configured weight equivalent to a released weight ``w`` is ``w`` x the factor.
        Terms that were 0 are left out."""
        out = {}
        for term, rel in self._released.items():
            v = float(self._values[term])
            if v > 0:
                out[f"released_factor/{term}"] = float(rel) / v
        return out


def enabled_terms(weights: Mapping[str, float]) -> list[str]:
    """The distillation terms with a non-zero weight."""
    return [t for t in TERMS if float(weights.get(t, 0.0)) != 0.0]


__all__ = [
    "DistillationCriterion", "FEATURE_PAIRS", "TERMS", "ADAPTED", "DEFAULT_NORMALIZE", "RELEASED_NORMALIZE", "RELEASED_WEIGHTS",
    "DEPTH_BRANCHES", "TaskTargets", "HeadTargets", "head_targets_fn", "enabled_terms", "paired_feature", "student_depths",
]
