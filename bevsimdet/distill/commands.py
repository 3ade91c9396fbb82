"""CLI: ``bevsimdet distill`` and ``bevsimdet distill-terms``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bevsimdet.cli_options import dataroot_option, progress_option, set_option
from bevsimdet.progress import configure as configure_progress


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill(
        config: Path = typer.Argument(..., help="Student config, e.g. configs/demo_student.yaml or configs/ablations/*.yaml."),
        teacher: Optional[Path] = typer.Option(None, "--teacher", help="Checkpoint of the trained fusion teacher (needed unless every distillation weight is 0)."),
        teacher_config: Optional[Path] = typer.Option(None, "--teacher-config", help="The teacher's YAML config (sets distill.teacher_config; default: the config stored in its checkpoint)."),
        dataroot: Optional[Path] = dataroot_option(),
        work_dir: Path = typer.Option(..., "--work-dir", help="Run directory of the student (config.yaml, checkpoints/, log.jsonl, ...)."),
        resume: bool = typer.Option(False, "--resume", help="Continue from <work-dir>/checkpoints/latest.safetensors."),
        set_: list[str] = set_option("distill.weights.cmd=50"),
        progress: bool | None = progress_option(),
    ) -> None:
        """Distil the camera-only BEVSimDet student from a frozen LiDAR+camera teacher.

        The student never sees LiDAR; the teacher runs once per step under no_grad and is not
        part of the student's checkpoint. Loss terms and weights: the distill: config section.
        """
        progress = configure_progress(progress)
        from bevsimdet.config import load_config, teacher_config_from
        from bevsimdet.distill.run import run_distillation
        from bevsimdet.engine.commands import run_to_completion

        cfg = load_config(config, set_)
        if dataroot is not None:
            cfg.data.dataroot = str(dataroot)
        if teacher_config is not None:
            cfg.distill.teacher_config = str(teacher_config)
        run_to_completion(lambda: run_distillation(cfg, lambda: teacher_config_from(teacher, cfg.distill.teacher_config), teacher, work_dir, resume=resume, progress=progress, config_of=teacher_config_from))

    @app.command("distill-terms")
    def distill_terms(
        run: Path = typer.Argument(..., help="A distillation run directory (--work-dir of distill) or its log.jsonl."),
    ) -> None:
        """Table of each loss term's share of the gradient on the student, from the run's 'distill' rows.

        The rows are written every distill.grad_log_interval steps (0: off). A term whose share
        is tiny does next to nothing; one that dominates crowds the others out.
        """
        from bevsimdet.distill.report import load_shares, render_shares

        typer.echo(render_shares(load_shares(run)))
