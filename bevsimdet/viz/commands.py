"""CLI: ``bevsimdet visualize`` and ``bevsimdet inspect`` (box counts of a dataset + one sample drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bevsimdet.cli_options import checkpoint_option, config_argument, dataroot_option, progress_option, set_option
from bevsimdet.progress import configure as configure_progress


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
    counts = {s: dict(zip(CLASSES, info.gt_class_counts(CLASSES).sum(axis=0).tolist())) for s, info in loaded.items()}
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
    app.command("inspect")(inspect_command)

    @app.command("visualize")
    def visualize_cmd(
        config: Path = config_argument(),
        checkpoint: Path = checkpoint_option(),
        out: Path = typer.Option(..., "--out", help="Folder for the pictures."),
        dataroot: Optional[Path] = dataroot_option(),
        split: Optional[str] = typer.Option(None, "--split", help="Split to draw from (default: data.val_split)."),
        index: Optional[int] = typer.Option(None, "--index", help="Sample index in the split (default 0)."),
        sample: Optional[str] = typer.Option(None, "--sample", help="Sample token."),
        scene: Optional[str] = typer.Option(None, "--scene", help="Every sample of this scene (e.g. scene-0103), in time order."),
        gif: bool = typer.Option(False, "--gif", help="With --scene: also write <scene>.gif."),
        score_threshold: float = typer.Option(0.3, "--score-threshold", help="Draw predictions scoring at least this."),
        teacher: Optional[Path] = typer.Option(None, "--teacher", help="Fusion teacher checkpoint: also draw teacher vs model BEV feature maps for the first sample."),
        teacher_config: Optional[Path] = typer.Option(None, "--teacher-config", help="The teacher's YAML config (default: the one stored in its checkpoint)."),
        set_: list[str] = set_option("data.sweeps=0"),
        progress: bool | None = progress_option(),
    ) -> None:
        """Draw predictions and GT on the 6 camera views and in BEV (PNG per sample, optional GIF per scene)."""
        progress = configure_progress(progress)
        from bevsimdet.config import load_config
        from bevsimdet.errors import UserError
        from bevsimdet.viz.visualize import visualize

        if teacher_config is not None and teacher is None:
            raise UserError("--teacher-config needs --teacher (the teacher's checkpoint)")
        cfg = load_config(config, set_)
        if dataroot is not None:
            cfg.data.dataroot = str(dataroot)
        files = visualize(cfg, checkpoint, out, split=split, index=index, sample=sample, scene=scene, gif=gif,
                          score_threshold=score_threshold, teacher=teacher, teacher_config=teacher_config, progress=progress)
        for f in files:
            typer.echo(str(f))
