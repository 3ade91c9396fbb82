"""The contract between the training loop and what it optimises.

The loop knows nothing about detection or distillation: it calls an *objective* with the model
and a batch and gets back the raw, named loss terms. Terms are weighted in exactly one place,
:func:`weigh`, from the ``weights`` mapping the objective carries (built from config).
A teacher, when there is one, lives inside the objective, so it is never part of the student's
``state_dict`` and never handed to the optimizer.

**Diagnostics** (optional). An objective may also carry ``diagnostics_interval`` (every that many
optimizer steps, 0: never), ``diagnostics_kind`` (the ``log.jsonl`` row kind) and a method
``diagnostics(model, weighted) -> {name: float}``, called with the *weighted, undetached* terms
of the first micro-batch of those steps. What it returns is logged as its own row and never
enters the loss. :func:`gradient_norms` is the usual content: each term's gradient norm on the
model's trainable parameters and its share of the sum, so an imbalance between terms is visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import torch
from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.models.output import DetectorOutput


@dataclass
class StepResult:
    loss: Tensor  # scalar, the weighted sum that is back-propagated
    terms: dict[str, Tensor]  # weighted terms, detached, for logging (sum == loss)
    output: DetectorOutput
    diagnostics: dict[str, float] = field(default_factory=dict)  # logged, never part of the loss


class Objective(Protocol):
    weights: Mapping[str, float]

    def terms(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], DetectorOutput]:
        """Raw (unweighted) named loss terms and the model's output for one batch."""
        ...


def weighted_terms(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> dict[str, Tensor]:
    """Each term times its weight (undetached). A term without a weight has weight 1; weight 0 drops it."""
    out: dict[str, Tensor] = {}
    for name, value in terms.items():
        w = float(weights.get(name, 1.0))
        if w != 0.0:
            out[name] = value * w
    return out


def weigh(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of named terms and the detached weighted terms (see :func:`weighted_terms`)."""
    return _total(weighted_terms(terms, weights))


def _total(weighted: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    total: Tensor | None = None
    for v in weighted.values():
        total = v if total is None else total + v
    if total is None:
        raise ValueError("no loss terms to optimise (all weights are zero)")
    return total, {k: v.detach() for k, v in weighted.items()}


def gradient_norms(weighted: Mapping[str, Tensor], params: Sequence[Tensor]) -> dict[str, float]:
    """L2 norm of each weighted term's gradient on ``params``, and its share of their sum.

    Returns ``grad_norm/<term>``, ``grad_share/<term>`` (norm / sum of the norms, so the shares
    add up to 1) and ``grad_norm/total`` (norm of the summed loss's gradient: smaller than the
    sum of the norms where terms pull in different directions). One backward pass per term with
    the graph retained, so the caller's own backward still works; nothing is accumulated into
    ``.grad``. A term that does not reach ``params`` has norm 0.
    """
    params = [p for p in params if p.requires_grad]
    norms: dict[str, Tensor] = {}
    total: list[Tensor | None] = [None] * len(params)
    for name, value in weighted.items():
        if not value.requires_grad or not params:
            norms[name] = torch.zeros((), device=value.device)
            continue
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        sq = [g.float().square().sum() for g in grads if g is not None]
        norms[name] = torch.stack(sq).sum().sqrt() if sq else torch.zeros((), device=value.device)
        for i, g in enumerate(grads):
            if g is not None:
                total[i] = g.float() if total[i] is None else total[i] + g.float()
    out = {f"grad_norm/{k}": float(v) for k, v in norms.items()}
    denom = sum(out.values())
    out.update({f"grad_share/{k}": (float(v) / denom if denom > 0 else 0.0) for k, v in norms.items()})
    sq_total = [t.square().sum() for t in total if t is not None]
    out["grad_norm/total"] = float(torch.stack(sq_total).sum().sqrt()) if sq_total else 0.0
    return out


def diagnostics_interval(objective: Objective) -> int:
    """Every how many optimizer steps ``objective`` wants :meth:`diagnostics` (0: never)."""
    if not callable(getattr(objective, "diagnostics", None)):
        return 0
    return max(int(getattr(objective, "diagnostics_interval", 0) or 0), 0)


def run_objective(objective: Objective, model: nn.Module, batch: Batch, *, diagnose: bool = False) -> StepResult:
    """One forward pass: raw terms -> weighted loss. With ``diagnose`` (and an objective that has
    ``diagnostics``), also its diagnostics of this batch."""
    raw, output = objective.terms(model, batch)
    weighted = weighted_terms(raw, objective.weights)
    loss, logged = _total(weighted)
    diagnostics = dict(objective.diagnostics(model, weighted)) if diagnose and diagnostics_interval(objective) else {}
    return StepResult(loss=loss, terms=logged, output=output, diagnostics=diagnostics)


class DetectionObjective:
    """Plain supervised detection: the model's criterion against ground truth."""

    def __init__(self, criterion: nn.Module, weights: Mapping[str, float] | None = None):
        self.criterion = criterion
        self.weights = dict(weights or {})

    def terms(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], DetectorOutput]:
        from bevsimdet.models.detectors import model_input

        # a camera model trains on a batch without LiDAR too; the criterion keeps the full batch
        # (the depth term's LiDAR targets are supervision, not input)
        output = model(model_input(model, batch))
        return self.criterion(output, batch), output


__all__ = ["Objective", "StepResult", "weigh", "weighted_terms", "gradient_norms", "diagnostics_interval", "run_objective", "DetectionObjective"]
