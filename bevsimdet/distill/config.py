"""Schema of the ``distill:`` config section (owned by distill/)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DistillConfig:
    enabled: bool = False
