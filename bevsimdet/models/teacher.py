"""The fusion teacher, loaded frozen for distillation.

``load_teacher`` builds the detector of a ``model:`` config, loads weights from a safetensors
checkpoint written by the training engine (EMA weights when the file has them) or a bare
safetensors weight file, and returns it frozen: eval mode, no trainable parameters, and a
``train()`` that keeps it in eval mode (BatchNorm statistics never move).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from bevsimdet.models.detectors import FusionDetector


class FrozenTeacher(nn.Module):
    """Wraps a detector: same forward and outputs; ``train(mode)`` is a no-op (always eval)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        self.detector.requires_grad_(False)
        super().train(False)

    @property
    def uses_lidar(self) -> bool:
        from bevsimdet.models.detectors import uses_lidar

        return uses_lidar(self.detector)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)

    def forward(self, batch):
        return self.detector(batch)


def load_teacher(path: str | Path, cfg: Any) -> FrozenTeacher:
    """The detector of ``model:`` config ``cfg`` (normally ``type: fusion``) with the weights in
    ``path``, frozen. Incompatible weights raise a one-line ``CheckpointError``."""
    from bevsimdet.models.build import build_detector
    from bevsimdet.weights import load_weights

    detector = build_detector(cfg)
    load_weights(path, detector, prefer_ema=True)
    return FrozenTeacher(detector)


__all__ = ["FusionDetector", "FrozenTeacher", "load_teacher"]
