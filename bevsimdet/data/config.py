"""Schema of the ``data:`` config section (owned by the data layer)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    dataroot: str = "data/sim-mini"
    version: str = "v1.0-mini"
    train_split: str = "mini_train"
    val_split: str = "mini_val"
