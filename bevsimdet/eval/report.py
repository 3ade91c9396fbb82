"""Human-readable output of an evaluation: a terminal table and PNG plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from bevsimdet.eval.boxes import DETECTION_NAMES
from bevsimdet.eval.metrics import SKIPPED_TP, TP_METRICS, DetectionMetrics

TP_SHORT = {"trans_err": "ATE", "scale_err": "ASE", "orient_err": "AOE", "vel_err": "AVE", "attr_err": "AAE"}


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def print_report(metrics: DetectionMetrics, console: Any = None, title: str = "nuScenes detection") -> None:
    """One row per class (AP per threshold when the terminal is wide enough, mean AP, TP errors),
    then the summary (mAP, NDS, mean TP errors)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    ths = list(metrics.config.dist_ths) if console.width >= 106 else []
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("class", no_wrap=True)
    for th in ths:
        table.add_column(f"AP@{th:g}m", justify="right", no_wrap=True)
    table.add_column("AP", justify="right", style="bold", no_wrap=True)
    for m in TP_METRICS:
        table.add_column(TP_SHORT[m], justify="right", no_wrap=True)
    mean_aps = metrics.mean_dist_aps
    for name in DETECTION_NAMES:
        table.add_row(
            name,
            *[_num(metrics.label_aps[name][th]) for th in ths],
            _num(mean_aps[name]),
            *[_num(metrics.label_tp_errors[name][m]) for m in TP_METRICS],
        )
    errors = metrics.tp_errors
    table.add_section()
    table.add_row("mean", *[_num(float(np.mean([metrics.label_aps[n][th] for n in DETECTION_NAMES]))) for th in ths],
                  _num(metrics.mean_ap), *[_num(errors[m]) for m in TP_METRICS], style="bold")
    console.print(table)
    console.print(f"[bold]mAP {metrics.mean_ap:.4f}   NDS {metrics.nd_score:.4f}[/bold]")
    console.print("  ".join(f"m{TP_SHORT[m]} {errors[m]:.4f}" for m in TP_METRICS)
                  + f"   ({metrics.eval_time:.2f} s)")


def save_plots(metrics: DetectionMetrics, out_dir: str | Path) -> list[Path]:
    """PR curves per class (one line per distance threshold), TP-error curves per class at the TP
    threshold, and a summary (per-class AP, mean TP errors). Returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = metrics.config
    written = []
    for name in DETECTION_NAMES:
        fig, ax = plt.subplots(figsize=(5, 4))
        for th in cfg.dist_ths:
            c = metrics.curves[(name, th)]
            ax.plot(c.recall, c.precision, label=f"{th:g} m: AP {metrics.label_aps[name][th]:.3f}")
        ax.axvline(cfg.min_recall, ls="--", c="gray", lw=0.8)
        ax.axhline(cfg.min_precision, ls="--", c="gray", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="recall", ylabel="precision", title=f"{name}: precision / recall")
        ax.legend(loc="upper right", fontsize=8)
        written.append(_save(fig, out_dir / f"{name}_pr.png"))

        fig, ax = plt.subplots(figsize=(5, 4))
        c = metrics.curves[(name, cfg.dist_th_tp)]
        last = c.max_recall_ind
        first = round(100 * cfg.min_recall) + 1
        for m in TP_METRICS:
            if m in SKIPPED_TP.get(name, ()) or last < first:
                continue
            ax.plot(c.recall[first:last + 1], getattr(c, m)[first:last + 1],
                    label=f"{TP_SHORT[m]} {metrics.label_tp_errors[name][m]:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, None), xlabel="recall", ylabel="error (m, 1-IoU, rad, m/s, 1-acc)",
               title=f"{name}: TP errors at {cfg.dist_th_tp:g} m")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize=8)
        written.append(_save(fig, out_dir / f"{name}_tp.png"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    aps = metrics.mean_dist_aps
    ax1.barh(list(DETECTION_NAMES)[::-1], [aps[n] for n in DETECTION_NAMES][::-1])
    ax1.set(xlim=(0, 1), xlabel="AP (mean over thresholds)", title=f"mAP {metrics.mean_ap:.3f}, NDS {metrics.nd_score:.3f}")
    errors = metrics.tp_errors
    ax2.bar([TP_SHORT[m] for m in TP_METRICS], [errors[m] for m in TP_METRICS])
    ax2.set(ylabel="mean TP error", title="TP errors (lower is better)")
    written.append(_save(fig, out_dir / "summary.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from bevsimdet.io import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
