"""CLI: ``bevsimdet visualize``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bevsimdet.cli_options import checkpoint_option, config_argument, dataroot_option, progress_option, set_option
from bevsimdet.progress import configure as configure_progress


def register(app: typer.Typer) -> None:
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
