"""Schema of the ``eval:`` config section (owned by eval/)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    score_threshold: float = 0.0
