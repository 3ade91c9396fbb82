"""``bevsimdet evaluate``: score a nuScenes detection results file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bevsimdet.cli_options import progress_option
from bevsimdet.progress import configure as configure_progress
from bevsimdet.progress import enabled as progress_enabled


def evaluate_command(
    dataroot: Path = typer.Option(..., "--dataroot", help="nuScenes-format dataset root (holds the version folder)."),
    version: str = typer.Option("v1.0-trainval", "--version", help="Dataset version, e.g. v1.0-mini."),
    split: str = typer.Option("val", "--split", help="Split to score, e.g. val or mini_val."),
    results: Path = typer.Option(..., "--results", help="Results JSON in the official submission format."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the metrics (metrics_summary.json format) here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Write PR-curve and TP-error PNGs into this folder."),
    cache: bool = typer.Option(True, "--cache/--no-cache",
                               help="Keep the split's ground truth in a cache file ($BEVSIMDET_CACHE_DIR or "
                                    "~/.cache/bevsimdet), rebuilt whenever a table changes."),
    breakdown: bool = typer.Option(False, "--breakdown/--no-breakdown",
                                   help="Also print heading and velocity errors per class for moving and still objects "
                                        "(flipped headings, 'everything stands still' velocity); kept in --out as 'motion_breakdown'."),
    progress: Optional[bool] = progress_option(),
) -> None:
    """Compute mAP, NDS and TP errors exactly as the nuScenes devkit (detection_cvpr_2019).

    Reads only the tables evaluation needs (no torch, no devkit import)."""
    import contextlib

    from rich.console import Console

    from bevsimdet.eval.gt import load_gt
    from bevsimdet.eval.metrics import evaluate
    from bevsimdet.eval.report import print_report, save_plots
    from bevsimdet.eval.results import load_submission
    from bevsimdet.io import atomic_write_json

    configure_progress(progress)
    console = Console()
    # the spinner is a progress display: stderr, and only where bars are drawn
    status = Console(stderr=True).status(f"loading ground truth of {split} ({version})") if progress_enabled() else contextlib.nullcontext()
    with status:
        gt = load_gt(dataroot, version, split, cache=cache, parallel=True)  # no threads here: see read_eval_tables
    meta, boxes = load_submission(results, sample_tokens=gt.sample_tokens)
    metrics = evaluate(boxes, gt)
    print_report(metrics, console, title=f"{results.name} on {split} ({len(gt.sample_tokens)} samples)")
    extra = {}
    if breakdown:
        from bevsimdet.eval.breakdown import motion_breakdown, print_breakdown

        extra["motion_breakdown"] = motion_breakdown(gt.boxes, boxes)
        print_breakdown(extra["motion_breakdown"], console)
    if out is not None:
        atomic_write_json(out, {**metrics.to_dict(), "meta": meta, **extra}, indent=2)
        console.print(f"metrics written to {out}")
    if plots is not None:
        paths = save_plots(metrics, plots)
        console.print(f"{len(paths)} plots written to {plots}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
