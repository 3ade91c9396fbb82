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
    fmt: str = typer.Option("columnar", "--format", help="columnar (memory-mapped arrays, .cols) or json (one JSON document, parsed into objects by every process that opens it)."),
    gzip: bool = typer.Option(False, "--gzip", help="Write gzipped JSON (.json.gz; implies --format json)."),
    verify: bool = typer.Option(False, "--verify", help="Then read every image and point file the info files name (--workers processes); exit status 2 if any is missing or damaged."),
    gt_database: bool = typer.Option(False, "--gt-database", help="Also write the training split's GT database (objects' LiDAR points, for data.gt_paste)."),
    progress: Optional[bool] = progress_option(),
) -> None:
    """Build the info files (per-sample sensors, calibration, sweeps and GT boxes) of every split;
    with --verify also check every file they reference."""
    progress = configure_progress(progress)
    from rich.console import Console
    from rich.table import Table

    from bevsimdet.data.infos import create_infos, load_infos

    console = Console()
    paths = create_infos(dataroot, version, out, max_sweeps=max_sweeps, workers=workers, progress=progress, force=force, compress=gzip, fmt=fmt)
    table = Table(title=f"info files of {dataroot} ({version})")
    for col in ("split", "scenes", "samples", "boxes", "file"):
        table.add_column(col)
    for split, path in paths.items():
        info = load_infos(path)
        table.add_row(split, str(info.num_scenes), str(len(info)), str(info.num_boxes), str(path))
    console.print(table)
    if verify:
        from bevsimdet.data.verify import run_verify

        run_verify(paths.values(), dataroot, next(iter(paths.values())).parent, workers=workers, progress=progress)
    if gt_database:
        _gt_database(console, dataroot, paths, workers, force, progress)


def _gt_database(console, dataroot: Path, paths: dict, workers: int, force: bool, progress: bool) -> None:
    """Build the GT database of the training split(s) among ``paths`` and print its objects per class."""
    import numpy as np
    from rich.table import Table

    from bevsimdet.data.classes import CLASSES
    from bevsimdet.data.gt_database import create_gt_database, load_gt_database
    from bevsimdet.errors import UserError

    train = [s for s in paths if s in ("train", "mini_train")]
    if not train:
        raise UserError(f"--gt-database needs a training split, this version has {', '.join(paths)}", fix="run it with --version v1.0-trainval or v1.0-mini")
    for split in train:
        db = load_gt_database(create_gt_database(paths[split], dataroot, workers=workers, progress=progress, force=force))
        table = Table(title=f"GT database of {split}: {db.path}")
        for col in ("class", "objects", "median points"):
            table.add_column(col, justify="right")
        for k, c in enumerate(CLASSES):
            n = db.counts[db.labels == k].sum(1)
            table.add_row(c, str(len(n)), f"{float(np.median(n)):.0f}" if len(n) else "-")
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare_command)
