"""``bevsimdet prepare`` (build info files); ``bevsimdet inspect`` draws a sample, so it lives with
the pictures in :mod:`bevsimdet.viz.commands`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bevsimdet.cli_options import progress_option
from bevsimdet.progress import configure as configure_progress


def prepare_command(
    dataroot: Path = typer.Option(..., "--dataroot", help="nuScenes-format dataset root (holds the version folder)."),
    version: str = typer.Option("v1.0-mini", "--version", help="v1.0-mini (mini_train/mini_val), v1.0-trainval (train/val) or v1.0-test."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: DATAROOT/bevsimdet_infos)."),
    max_sweeps: int = typer.Option(9, "--max-sweeps", min=0, help="Previous LiDAR sweeps stored per keyframe."),
    workers: int = typer.Option(2, "--workers", min=1, help="Parallel processes (one scene at a time each)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the info files are up to date."),
    gzip: bool = typer.Option(False, "--gzip", help="Write gzipped JSON (.json.gz)."),
    progress: Optional[bool] = progress_option(),
) -> None:
    """Build the info files (per-sample sensors, calibration, sweeps and GT boxes) of every split."""
    progress = configure_progress(progress)
    from rich.console import Console
    from rich.table import Table

    from bevsimdet.data.infos import create_infos, load_infos

    console = Console()
    paths = create_infos(dataroot, version, out, max_sweeps=max_sweeps, workers=workers, progress=progress, force=force, compress=gzip)
    table = Table(title=f"info files of {dataroot} ({version})")
    for col in ("split", "scenes", "samples", "boxes", "file"):
        table.add_column(col)
    for split, path in paths.items():
        info = load_infos(path)
        table.add_row(split, str(len({s.scene_token for s in info.samples})), str(len(info)), str(sum(len(s.gt) for s in info.samples)), str(path))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare_command)
