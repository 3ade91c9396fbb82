"""The distillation objective: supervised detection terms + distillation terms, one teacher pass.

The frozen teacher lives here, never inside the student: it is not in the student's
``state_dict``, not in the optimizer, and not wrapped by DDP. It runs once per step under
``torch.no_grad()`` in ``eval()`` mode (BatchNorm statistics frozen), in float32 unless
``teacher_amp`` asks for bf16/fp16 (on CUDA as asked; on the CPU bf16 where the CPU has it
natively, else float32: :func:`bevsimdet.engine.precision.plan_amp`). The student sees the batch *without* LiDAR.

Every ``grad_log_interval`` steps the trainer asks for :meth:`DistillationObjective.diagnostics`
and logs them as a ``distill`` row of ``log.jsonl``: each weighted term's gradient norm on the
student and its share (supervised terms included), the weighted values, and how each term's
normaliser compares with the released code's (``released_factor/<term>``).
"""

from __future__ import annotations

import contextlib
from typing import Mapping

import torch
from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.distill.criterion import DistillationCriterion
from bevsimdet.engine.objective import gradient_norms
from bevsimdet.engine.precision import AmpPlan, plan_amp, say
from bevsimdet.models.output import DetectorOutput


def freeze(teacher: nn.Module) -> nn.Module:
    """Put a teacher in eval mode with no trainable parameters (in place; returns it)."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


class DistillationObjective:
    """``terms(model, batch)`` -> (raw named terms, student output), for :func:`engine.objective.weigh`.

    Args:
        teacher: the frozen teacher (``None`` when no enabled term needs it, e.g. the
            "no distillation" ablation row).
        criterion: the student's supervised CenterPoint criterion, ``(output, batch) -> terms``.
        distill: the distillation terms.
        weights: weight of every term (supervised and distillation) by name.
        teacher_amp: autocast dtype for the teacher (CPU: bf16 where native), or ``None`` for float32.
        grad_log_interval: every this many steps, :meth:`diagnostics` (0: never).
    """

    diagnostics_kind = "distill"  # the log.jsonl row kind of the diagnostics

    def __init__(
        self,
        teacher: nn.Module | None,
        criterion: nn.Module,
        distill: DistillationCriterion,
        weights: Mapping[str, float],
        teacher_amp: torch.dtype | None = None,
        grad_log_interval: int = 0,
    ):
        if teacher is None and distill.needs_teacher:
            raise ValueError(f"distillation terms {distill.enabled} need a teacher")
        self.teacher = freeze(teacher) if teacher is not None else None
        self.criterion = criterion
        self.distill = distill
        self.weights = dict(weights)
        self.teacher_amp = teacher_amp
        self._teacher_plans: dict[str, AmpPlan] = {}
        self.diagnostics_interval = max(int(grad_log_interval), 0)

    def _teacher_precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        # explicit either way, so the student's autocast never decides the teacher's precision;
        # on the CPU bf16 only where it is native (engine.precision), said once per device
        if device.type not in self._teacher_plans:
            plan = plan_amp(device, self.teacher_amp is not None, self.teacher_amp or torch.float32, what="distill.teacher_amp")
            say(plan.note)
            self._teacher_plans[device.type] = plan
        return self._teacher_plans[device.type].autocast()

    @torch.no_grad()
    def teacher_output(self, batch: Batch) -> DetectorOutput | None:
        if self.teacher is None or not self.distill.needs_teacher:
            return None
        self.teacher.eval()  # in case someone called .train() on it
        with self._teacher_precision(batch.images.device):
            return self.teacher(batch)

    def terms(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], DetectorOutput]:
        teacher_out = self.teacher_output(batch)
        output = model(batch.without_lidar())
        terms = dict(self.criterion(output, batch))
        terms.update(self.distill(output, teacher_out, batch))
        return terms, output

    def diagnostics(self, model: nn.Module, weighted: Mapping[str, Tensor]) -> dict[str, float]:
        """``grad_norm/<term>``, ``grad_share/<term>``, ``grad_norm/total`` on the student's trainable
        parameters (:func:`~bevsimdet.engine.objective.gradient_norms`), ``loss/<term>`` (weighted)
        and ``released_factor/<term>`` of the batch the terms came from."""
        out = gradient_norms(weighted, [p for p in model.parameters() if p.requires_grad])
        out.update({f"loss/{k}": float(v.detach()) for k, v in weighted.items()})
        out.update(self.distill.released_factors())
        return out


__all__ = ["DistillationObjective", "freeze"]
