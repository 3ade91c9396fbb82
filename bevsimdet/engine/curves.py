"""Learning curves: validation metrics against training steps, read from runs' ``log.jsonl``.

Every validation of a run (``train.val_interval``, and the final one) is a ``"kind": "val"`` row of
its ``log.jsonl``; :func:`plot_curves` draws mAP, NDS and mATE (and the depth agreement, when the
model has a depth distribution) against the step, one line per run, into one PNG. The trainer
redraws ``<work_dir>/curves.png`` after every validation; ``bevsimdet demo`` draws all its models
into one picture.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

CURVE_KEYS = ("mAP", "NDS", "mATE", "depth_within1")
LABELS = {"mAP": "mAP (higher is better)", "NDS": "NDS (higher is better)", "mATE": "mATE, m (lower is better)",
          "depth_within1": "depth: share of LiDAR cells within one bin"}


def read_val_rows(log_path: str | Path) -> list[dict]:
    """The validation rows of a ``log.jsonl`` in step order (a later row of the same step wins,
    e.g. after a resume); unreadable lines (a run killed mid-write) are skipped."""
    rows: dict[int, dict] = {}
    path = Path(log_path)
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("kind") == "val" and isinstance(row.get("step"), int):
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def plot_curves(runs: Mapping[str, Sequence[dict]], path: str | Path, *, title: str = "validation during training") -> Path | None:
    """Draw ``runs`` (name -> validation rows) into a PNG at ``path`` (written atomically).
    Returns the path, or ``None`` when no run has a validation row yet."""
    runs = {name: rows for name, rows in runs.items() if rows}
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bevsimdet.io import atomic_path

    keys = [k for k in CURVE_KEYS if any(_finite(r.get(k)) for rows in runs.values() for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), dpi=110, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, rows in runs.items():
            pts = [(r["step"], float(r[key])) for r in rows if _finite(r.get(key))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", markersize=3, label=name)
        ax.set_xlabel("step")
        ax.set_title(LABELS.get(key, key), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


__all__ = ["read_val_rows", "plot_curves", "CURVE_KEYS"]
