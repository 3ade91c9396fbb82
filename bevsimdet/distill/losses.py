"""Distillation losses as pure tensor functions (no modules, no config).

Each loss is a *sum* divided by a *normaliser*, and the two are separate functions, so a term's
weight can be made to mean the same thing on any BEV grid (docs/distill.md, "Normalisers"):

* feature terms (IMD, CMD, MMD-F): :func:`feature_sq_error_sum` over :func:`feature_normalizer`,
  ``elements`` (B·C·H·W, the released code's mean) or ``mask`` (C·ΣM², the mass of the object
  mask: a weighted mean over object regions);
* heatmap term (MMD-P cls): :func:`qfl_sum` over :func:`teacher_positives` (released),
  :func:`gt_centres` (as CenterPoint normalises its own heatmap loss) or :func:`teacher_peaks`;
* box term (MMD-P box): :func:`box_kd_sum` over the number of objects or the released ``max_objs``.

All are computed in float32 whatever the autocast dtype of their inputs, and every one is
exactly zero when the student's tensors equal the teacher's.
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# CenterPoint regression channels, in the order of the 10-d box code [dx, dy, z, log w, log l,
# log h, sin, cos, vx, vy] that ``box_code_weights`` refer to.
REG_KEYS: tuple[str, ...] = ("reg", "height", "dim", "rot", "vel")
# named groups of box-code channels, for per-component weights of the box term
BOX_GROUPS: dict[str, tuple[int, ...]] = {"offset": (0, 1), "z": (2,), "size": (3, 4, 5), "rot": (6, 7), "vel": (8, 9)}

FeatureNormalizer = Literal["elements", "mask"]
ClsNormalizer = Literal["teacher_pos", "gt_centres", "teacher_peaks"]
BoxNormalizer = Literal["objects", "max_objs"]


# --------------------------------------------------------------------------------------------
# feature terms


def feature_sq_error_sum(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """``sum((S - T)^2 * M^2)`` over B x C x H x W (``mask`` B x 1 x H x W broadcasts over C).

    The mask multiplies the *difference*, as the released code's ``MSE(S·M, T·M)`` does, so a
    cell counts with weight M².
    """
    if student.shape != teacher.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    diff = student.float() - teacher.float()
    if mask is not None:
        diff = diff * mask.float()
    return diff.square().sum()


def feature_normalizer(shape: Sequence[int], mask: Tensor | None, normalizer: FeatureNormalizer) -> Tensor:
    """Denominator of a feature term on B x C x H x W maps.

    ``elements``: B·C·H·W (the released mean, zeros outside the mask included). ``mask``: C·ΣM²
    over the batch, so the term is the mean squared error per channel *weighted by M²*: a
    constant difference d gives d² on any grid and for any number of objects. A batch without
    objects has ΣM² = 0 and a zero sum; the denominator is then clamped to keep the term 0.
    """
    b, c, h, w = shape
    if normalizer == "elements":
        return torch.tensor(float(b * c * h * w), device=mask.device if mask is not None else None)
    if normalizer == "mask":
        if mask is None:
            raise ValueError("the 'mask' normaliser needs the object mask")
        return (mask.float().square().sum() * c).clamp(min=1e-6)
    raise ValueError(f"unknown feature normaliser '{normalizer}' (elements, mask)")


def feature_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None, *, normalizer: FeatureNormalizer = "elements") -> Tensor:
    """``sum(((S - T) * M)^2)`` over :func:`feature_normalizer` (``elements``: the released mean)."""
    return feature_sq_error_sum(student, teacher, mask) / feature_normalizer(student.shape, mask, normalizer)


# --------------------------------------------------------------------------------------------
# heatmap term


def qfl_sum(student_logits: Tensor, teacher_probs: Tensor, *, beta: float = 2.0) -> Tensor:
    """Quality focal loss ``sum(BCEWithLogits(s, t) * |sigmoid(s) - t|^beta)`` over B x K x H x W."""
    s, t = student_logits.float(), teacher_probs.float()
    bce = F.binary_cross_entropy_with_logits(s, t, reduction="none")
    return (bce * (s.sigmoid() - t).abs().pow(beta)).sum()


def teacher_positives(teacher_probs: Tensor, threshold: float = 0.1) -> Tensor:
    """Number of cells (over B x K x H x W) where the teacher's probability exceeds ``threshold``."""
    return (teacher_probs > threshold).sum()


def gt_centres(gt_heatmap: Tensor) -> Tensor:
    """Number of GT centre cells (heatmap == 1) in a B x K x H x W GT heatmap, CenterPoint's ``num_pos``."""
    return gt_heatmap.eq(1).sum()


def teacher_peaks(teacher_probs: Tensor, threshold: float = 0.1, kernel: int = 3) -> Tensor:
    """Number of the teacher's local maxima (per class, ``kernel`` x ``kernel``) above ``threshold``:
    its detections before NMS, as CenterPoint decodes them."""
    t = teacher_probs.float()
    peak = F.max_pool2d(t, kernel, stride=1, padding=kernel // 2) == t
    return (peak & (t > threshold)).sum()


def cls_normalizer(
    teacher_probs: Tensor, normalizer: ClsNormalizer, *, pos_threshold: float = 0.1, gt_heatmap: Tensor | None = None
) -> Tensor:
    """Denominator of the heatmap term (at least 1, as CenterPoint clamps ``num_pos``)."""
    if normalizer == "teacher_pos":
        n = teacher_positives(teacher_probs, pos_threshold)
    elif normalizer == "teacher_peaks":
        n = teacher_peaks(teacher_probs, pos_threshold)
    elif normalizer == "gt_centres":
        if gt_heatmap is None:
            raise ValueError("the 'gt_centres' normaliser needs the GT heatmap")
        n = gt_centres(gt_heatmap)
    else:
        raise ValueError(f"unknown heatmap normaliser '{normalizer}' (teacher_pos, gt_centres, teacher_peaks)")
    return n.clamp(min=1).float()


def quality_focal_kd(
    student_logits: Tensor,
    teacher_probs: Tensor,
    *,
    beta: float = 2.0,
    pos_threshold: float = 0.1,
    normalizer: ClsNormalizer = "teacher_pos",
    gt_heatmap: Tensor | None = None,
) -> Tensor:
    """Quality focal loss of student heatmap logits against teacher probabilities, one head task.

    :func:`qfl_sum` over :func:`cls_normalizer`; ``teacher_pos`` (the released normaliser)
    counts the teacher's cells with p > ``pos_threshold`` over the whole batch.
    """
    return qfl_sum(student_logits, teacher_probs, beta=beta) / cls_normalizer(
        teacher_probs, normalizer, pos_threshold=pos_threshold, gt_heatmap=gt_heatmap
    )


# --------------------------------------------------------------------------------------------
# box term


def gather_cells(maps: Tensor, indices: Tensor) -> Tensor:
    """Values of B x C x H x W ``maps`` at flat cell indices B x K (``iy * W + ix``): B x K x C."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return flat.gather(2, indices.long()[:, None, :].expand(b, c, indices.shape[1])).transpose(1, 2)


def regression_code(pred: dict[str, Tensor]) -> Tensor:
    """B x 10 x H x W box code of a CenterHead task, channels in :data:`REG_KEYS` order."""
    return torch.cat([pred[k] for k in REG_KEYS if k in pred], 1)


def grouped_code_weights(code_weights: Sequence[float], groups: Mapping[str, float]) -> list[float]:
    """``code_weights`` (10) times the weight of each channel's group in :data:`BOX_GROUPS`
    (groups not named keep 1), e.g. ``{"rot": 0, "vel": 0}`` switches heading and velocity off."""
    unknown = set(groups) - set(BOX_GROUPS)
    if unknown:
        raise ValueError(f"unknown box groups {sorted(unknown)}; known: {list(BOX_GROUPS)}")
    if len(code_weights) != 10:
        raise ValueError(f"{len(code_weights)} code weights for a 10-d box code")
    out = [float(w) for w in code_weights]
    for name, idx in BOX_GROUPS.items():
        for i in idx:
            out[i] *= float(groups.get(name, 1.0))
    return out


def box_kd_sum(student: Tensor, teacher: Tensor, slot_mask: Tensor, *, code_weights: Sequence[float], beta: float = 1.0 / 9.0) -> Tensor:
    """Code-weighted SmoothL1 between gathered student and teacher box codes B x K x D, summed
    over the real GT slots (``slot_mask`` B x K: 1 real object, 0 padding)."""
    w = student.new_tensor(list(code_weights), dtype=torch.float32)
    if w.numel() != student.shape[-1]:
        raise ValueError(f"{w.numel()} code weights for a {student.shape[-1]}-d box code")
    loss = F.smooth_l1_loss(student.float(), teacher.float(), reduction="none", beta=beta) * w
    return (loss * slot_mask.float()[..., None]).sum()


def box_normalizer(slot_mask: Tensor, normalizer: BoxNormalizer, max_objs: int = 500) -> Tensor:
    """``objects``: the number of real objects in the batch (at least 1); ``max_objs``: the
    released code's constant (500), one per batch, so the term grows with objects and batch size."""
    if normalizer == "objects":
        return slot_mask.float().sum().clamp(min=1)
    if normalizer == "max_objs":
        return torch.tensor(float(max_objs), device=slot_mask.device)
    raise ValueError(f"unknown box normaliser '{normalizer}' (objects, max_objs)")


def box_regression_kd(
    student: Tensor,
    teacher: Tensor,
    slot_mask: Tensor,
    *,
    code_weights: Sequence[float],
    beta: float = 1.0 / 9.0,
    normalizer: BoxNormalizer = "objects",
    max_objs: int = 500,
) -> Tensor:
    """:func:`box_kd_sum` over :func:`box_normalizer` (default: per real object)."""
    return box_kd_sum(student, teacher, slot_mask, code_weights=code_weights, beta=beta) / box_normalizer(slot_mask, normalizer, max_objs)


__all__ = [
    "REG_KEYS",
    "BOX_GROUPS",
    "feature_sq_error_sum",
    "feature_normalizer",
    "feature_mse",
    "qfl_sum",
    "teacher_positives",
    "gt_centres",
    "teacher_peaks",
    "cls_normalizer",
    "quality_focal_kd",
    "gather_cells",
    "regression_code",
    "grouped_code_weights",
    "box_kd_sum",
    "box_normalizer",
    "box_regression_kd",
]
