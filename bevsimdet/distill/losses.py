"""Distillation losses as pure tensor functions (no modules, no config).

All are computed in float32 whatever the autocast dtype of their inputs, and every one is
exactly zero when the student's tensors equal the teacher's.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# CenterPoint regression channels, in the order of the 10-d box code [dx, dy, z, log w, log l,
# log h, sin, cos, vx, vy] that ``box_code_weights`` refer to.
REG_KEYS: tuple[str, ...] = ("reg", "height", "dim", "rot", "vel")


def feature_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over all B x C x H x W elements of ``((S - T) * M)^2``.

    ``mask`` B x 1 x H x W broadcasts over channels (cells outside it count as zeros, so the
    normaliser is the full element count, as in the released code).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"feature shapes differ: student {tuple(student.shape)} vs teacher {tuple(teacher.shape)}")
    diff = student.float() - teacher.float()
    if mask is not None:
        diff = diff * mask.float()
    return diff.square().mean()


def quality_focal_kd(student_logits: Tensor, teacher_probs: Tensor, *, beta: float = 2.0, pos_threshold: float = 0.1) -> Tensor:
    """Quality focal loss of student heatmap logits against teacher probabilities.

    ``sum(BCEWithLogits(s, t) * |sigmoid(s) - t|^beta) / max(#{t > pos_threshold}, 1)`` over
    B x K x H x W; the normaliser counts the teacher's positive cells over the whole batch.
    """
    s, t = student_logits.float(), teacher_probs.float()
    bce = F.binary_cross_entropy_with_logits(s, t, reduction="none")
    loss = bce * (s.sigmoid() - t).abs().pow(beta)
    return loss.sum() / (t > pos_threshold).sum().clamp(min=1)


def gather_cells(maps: Tensor, indices: Tensor) -> Tensor:
    """Values of B x C x H x W ``maps`` at flat cell indices B x K (``iy * W + ix``): B x K x C."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return flat.gather(2, indices.long()[:, None, :].expand(b, c, indices.shape[1])).transpose(1, 2)


def regression_code(pred: dict[str, Tensor]) -> Tensor:
    """B x 10 x H x W box code of a CenterHead task, channels in :data:`REG_KEYS` order."""
    return torch.cat([pred[k] for k in REG_KEYS if k in pred], 1)


def box_regression_kd(
    student: Tensor,
    teacher: Tensor,
    slot_mask: Tensor,
    *,
    code_weights: Sequence[float],
    beta: float = 1.0 / 9.0,
) -> Tensor:
    """SmoothL1 between gathered student and teacher box codes B x K x D at real GT slots.

    ``slot_mask`` B x K is 1 for real objects, 0 for padding; the sum is divided by the number
    of real objects (at least 1). ``code_weights`` has D entries.
    """
    w = student.new_tensor(list(code_weights), dtype=torch.float32)
    if w.numel() != student.shape[-1]:
        raise ValueError(f"{w.numel()} code weights for a {student.shape[-1]}-d box code")
    loss = F.smooth_l1_loss(student.float(), teacher.float(), reduction="none", beta=beta) * w
    m = slot_mask.float()
    return (loss * m[..., None]).sum() / m.sum().clamp(min=1)


__all__ = [
    "REG_KEYS",
    "feature_mse",
    "quality_focal_kd",
    "gather_cells",
    "regression_code",
    "box_regression_kd",
]
