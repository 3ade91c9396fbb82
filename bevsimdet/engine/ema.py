"""Exponential moving average of a model's weights."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import Tensor, nn

from bevsimdet.engine.checkpoint import unwrap


class ModelEMA:
    """Shadow copy ``ema = d * ema + (1 - d) * weights`` of every floating-point state entry.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` with the update count ``n``, so the
    early, random weights are forgotten quickly. Integer buffers (BatchNorm counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        d = min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))
        for k, v in unwrap(model).state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach(), 1.0 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)

    @contextlib.contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the EMA weights into ``model`` (e.g. for validation)."""
        bare = unwrap(model)
        backup = {k: v.detach().clone() for k, v in bare.state_dict().items()}
        bare.load_state_dict(self.shadow)
        try:
            yield bare
        finally:
            bare.load_state_dict(backup)
