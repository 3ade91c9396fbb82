"""Run logging: ``log.jsonl`` rows and TensorBoard scalars (main process only), and reading them back.

Row kinds: ``train`` (every ``log_interval`` steps), ``val`` (every validation) and whatever an
objective's diagnostics name (``distill`` for the distillation objective's gradient shares).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

from bevsimdet.errors import UserError


class RunLogger:
    """Appends one JSON object per line to ``<work_dir>/log.jsonl`` and mirrors the numbers to
    TensorBoard under ``<work_dir>/tensorboard`` as ``<kind>/<name>``. Inactive (no files) on
    non-main ranks."""

    def __init__(self, work_dir: str | os.PathLike, active: bool = True, tensorboard: bool = True):
        self.active = active
        self.path = Path(work_dir) / "log.jsonl"
        self._tb = None
        if not active:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)  # line-buffered: a killed run keeps its rows
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(work_dir) / "tensorboard"))

    def log(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        if not self.active:
            return
        row = {"kind": kind, "step": int(step), "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(row, default=float) + "\n")
        if self._tb is not None:
            for name, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{name}", v, step)

    def close(self) -> None:
        if not self.active:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_log(path: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``log.jsonl`` (``path`` is the file or its run directory), optionally of one kind.

    A torn last line (a run killed mid-write) is skipped; any other unreadable line is an error.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    if not path.is_file():
        raise UserError(f"no run log at {path}", fix="pass a run directory (--work-dir of train/distill) or its log.jsonl")
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise UserError(f"{path} line {i + 1} is not a JSON object", fix="the run log is damaged; remove that line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {i + 1} is not a JSON object", fix="the run log is damaged; remove that line")
        if kind is None or row.get("kind") == kind:
            rows.append(row)
    return rows


__all__ = ["RunLogger", "read_log"]
