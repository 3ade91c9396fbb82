"""``bevsimdet prepare`` (build info files) and ``bevsimdet inspect`` (counts + a picture)."""

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
    progress: Optional[bool] = progress_option(),
) -> None:
    """Build the info files (per-sample sensors, calibration, sweeps and GT boxes) of every split."""
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


def inspect_command(
    dataroot: Path = typer.Option(..., "--dataroot", help="nuScenes-format dataset root."),
    version: str = typer.Option("v1.0-mini", "--version", help="Dataset version."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to draw from (default: the first, e.g. mini_train)."),
    index: int = typer.Option(0, "--index", min=0, help="Index of the sample in the split."),
    sample: Optional[str] = typer.Option(None, "--sample", help="Sample token (overrides --index and --split)."),
    out: Path = typer.Option(Path("sample.png"), "--out", help="PNG to write."),
    sweeps: int = typer.Option(0, "--sweeps", min=0, help="LiDAR sweeps merged into the BEV panel."),
    infos: Optional[Path] = typer.Option(None, "--infos", help="Info folder (default: DATAROOT/bevsimdet_infos; built if missing)."),
    progress: Optional[bool] = progress_option(),
) -> None:
    """Print box counts per class and split, and render one sample (6 cameras + BEV) to a PNG."""
    progress = configure_progress(progress)
    from rich.console import Console
    from rich.table import Table

    from bevsimdet.data.classes import CAMERAS, CLASSES
    from bevsimdet.data.dataset import NuScenesDataset
    from bevsimdet.data.infos import create_infos, load_infos
    from bevsimdet.data.loader import collate
    from bevsimdet.errors import UserError
    from bevsimdet.viz.sample import render_sample

    console = Console()
    paths = create_infos(dataroot, version, infos, progress=progress)
    loaded = {s: load_infos(p) for s, p in paths.items()}
    table = Table(title=f"GT boxes per class ({dataroot}, {version})")
    table.add_column("class")
    for s in loaded:
        table.add_column(s, justify="right")
    counts = {s: {c: 0 for c in CLASSES} for s in loaded}
    for s, info in loaded.items():
        counts[s] = dict(zip(CLASSES, info.gt_class_counts(CLASSES).sum(axis=0).tolist()))
    for c in CLASSES:
        table.add_row(c, *(str(counts[s][c]) for s in loaded))
    table.add_row("[bold]all boxes", *(str(sum(counts[s].values())) for s in loaded))
    table.add_row("[bold]samples", *(str(len(info)) for info in loaded.values()))
    table.add_row("[bold]scenes", *(str(info.num_scenes) for info in loaded.values()))
    console.print(table)

    if sample is not None:
        split = next((s for s, info in loaded.items() if sample in info.tokens), None)
        if split is None:
            raise UserError(f"sample token {sample} is in no split of {dataroot} ({version})", fix="pick a token from the info files")
    split = split or next(iter(loaded))
    if split not in loaded:
        raise UserError(f"no split '{split}' in {version}", fix=f"use one of {', '.join(loaded)}")
    info = loaded[split]
    sweeps = min(sweeps, info.max_sweeps)
    if not info.samples:
        raise UserError(f"split '{split}' has no samples", fix="pick another --split")
    from bevsimdet.data.dataset import read_image
    from bevsimdet.data.transforms import ImageAug

    # draw at the original resolution: the test transform with resize 1 is the identity
    h, w = read_image(Path(dataroot) / info.samples[0].cams[CAMERAS[0]].path).shape[:2]
    dataset = NuScenesDataset(
        info,
        dataroot,
        image_size=(h, w),
        image_aug=ImageAug(image_size=(h, w), test_resize=1.0),
        sweeps=sweeps,
        point_cloud_range=None,
    )
    i = dataset.index_of(sample) if sample is not None else index
    if i >= len(dataset):
        raise UserError(f"--index {i} is out of range: split '{split}' has {len(dataset)} samples", fix=f"use 0..{len(dataset) - 1}")
    batch = collate([dataset[i]])
    path = render_sample(batch, 0, out, title=f"{split}[{i}] sample {batch.meta[0].sample_token}")
    console.print(f"sample {batch.meta[0].sample_token} ({split}[{i}], {len(batch.gt_boxes[0])} boxes) drawn to {path}")


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare_command)
    app.command("inspect")(inspect_command)
