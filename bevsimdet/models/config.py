"""Schema of the ``model:`` config section (owned by models/)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    type: str = "fusion"
