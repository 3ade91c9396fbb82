"""Schema of the ``train:`` config section (owned by engine/)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    batch_size: int = 2
    lr: float = 2e-4
