"""Schema of the ``model:`` config section (owned by models/)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bevsimdet.distill.config import StudentConfig


@dataclass
class ModelConfig:
    type: str = "fusion"
    student: StudentConfig = field(default_factory=StudentConfig)  # used by type: student
