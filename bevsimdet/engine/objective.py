"""The contract between the training loop and what it optimises.

The loop knows nothing about detection or distillation: it calls an *objective* with the model
and a batch and gets back the raw, named loss terms. Terms are weighted in exactly one place,
:func:`weigh`, from the ``weights`` mapping the objective carries (built from config).
A teacher, when there is one, lives inside the objective, so it is never part of the student's
``state_dict`` and never handed to the optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.models.output import DetectorOutput


@dataclass
class StepResult:
    loss: Tensor  # scalar, the weighted sum that is back-propagated
    terms: dict[str, Tensor]  # weighted terms, detached, for logging (sum == loss)
    output: DetectorOutput


class Objective(Protocol):
    weights: Mapping[str, float]

    def terms(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], DetectorOutput]:
        """Raw (unweighted) named loss terms and the model's output for one batch."""
        ...


def weigh(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> tuple[Tensor, dict[str, Tensor]]:
    """Weighted sum of named terms. A term without a weight has weight 1; weight 0 drops it."""
    total: Tensor | None = None
    logged: dict[str, Tensor] = {}
    for name, value in terms.items():
        w = float(weights.get(name, 1.0))
        if w == 0.0:
            continue
        v = value * w
        logged[name] = v.detach()
        total = v if total is None else total + v
    if total is None:
        raise ValueError("no loss terms to optimise (all weights are zero)")
    return total, logged


def run_objective(objective: Objective, model: nn.Module, batch: Batch) -> StepResult:
    raw, output = objective.terms(model, batch)
    loss, logged = weigh(raw, objective.weights)
    return StepResult(loss=loss, terms=logged, output=output)


class DetectionObjective:
    """Plain supervised detection: the model's criterion against ground truth."""

    def __init__(self, criterion: nn.Module, weights: Mapping[str, float] | None = None):
        self.criterion = criterion
        self.weights = dict(weights or {})

    def terms(self, model: nn.Module, batch: Batch) -> tuple[dict[str, Tensor], DetectorOutput]:
        output = model(batch)
        return self.criterion(output, batch), output


__all__ = ["Objective", "StepResult", "weigh", "run_objective", "DetectionObjective"]
