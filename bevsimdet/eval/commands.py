"""``bevsimdet evaluate``: score a nuScenes detection results file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def evaluate_command(
    dataroot: Path = typer.Option(..., "--dataroot", help="nuScenes-format dataset root (holds the version folder)."),
    version: str = typer.Option("v1.0-trainval", "--version", help="Dataset version, e.g. v1.0-mini."),
    split: str = typer.Option("val", "--split", help="Split to score, e.g. val or mini_val."),
    results: Path = typer.Option(..., "--results", help="Results JSON in the official submission format."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the metrics (metrics_summary.json format) here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write PR-curve and TP-error PNGs into this folder."),
) -> None:
    """Compute mAP, NDS and TP errors exactly as the nuScenes devkit (detection_cvpr_2019)."""
    from rich.console import Console

    from bevsimdet.eval.gt import load_gt
    from bevsimdet.eval.metrics import evaluate
    from bevsimdet.eval.report import print_report, save_plots
    from bevsimdet.eval.results import load_results
    from bevsimdet.io import atomic_write_json

    console = Console()
    with console.status(f"loading ground truth of {split} ({version})"):
        gt = load_gt(dataroot, version, split)
    submission = load_results(results, sample_tokens=gt.sample_tokens)
    metrics = evaluate(submission["results"], gt)
    print_report(metrics, console, title=f"{results.name} on {split} ({len(gt.sample_tokens)} samples)")
    if out is not None:
        atomic_write_json(out, {**metrics.to_dict(), "meta": submission["meta"]}, indent=2)
        console.print(f"metrics written to {out}")
    if plots is not None:
        paths = save_plots(metrics, plots)
        console.print(f"{len(paths)} plots written to {plots}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
