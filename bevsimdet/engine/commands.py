"""CLI commands of the training engine: ``train`` and ``evaluate-model`` (``infer`` lives in
:mod:`bevsimdet.infer`).

Multi-process: ``torchrun --nproc_per_node 2 -m bevsimdet train CONFIG ...`` (each process runs
the same command; torchrun's environment variables make them one DDP job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

from bevsimdet.cli_options import checkpoint_option, config_argument, dataroot_option, progress_option, set_option
from bevsimdet.progress import configure as configure_progress


def _load(config: Path, overrides: list[str], dataroot: Optional[Path]):
    from bevsimdet.config import load_config

    cfg = load_config(config, overrides)
    if dataroot is not None:
        cfg.data.dataroot = str(dataroot)
    return cfg


def run_to_completion(train: Callable[[], Path]) -> None:
    """Run a training job for a CLI command: print the final checkpoint (main rank), turn a
    SIGINT/SIGTERM stop into exit code 128 + signal, always tear down the process group."""
    from bevsimdet.engine import dist
    from bevsimdet.engine.train import TrainingInterrupted

    try:
        ckpt = train()
        if dist.is_main():
            typer.echo(f"done: {ckpt}")
    except TrainingInterrupted as e:
        if dist.is_main():
            typer.echo(str(e), err=True)
        raise typer.Exit(e.exit_code) from None
    finally:
        dist.destroy_distributed()


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        config: Path = typer.Argument(..., help="YAML config, e.g. configs/demo_fusion.yaml."),
        dataroot: Optional[Path] = dataroot_option(),
        work_dir: Path = typer.Option(..., "--work-dir", help="Run directory: config.yaml, checkpoints/, log.jsonl, tensorboard/, metrics.json."),
        resume: bool = typer.Option(False, "--resume", help="Continue from <work-dir>/checkpoints/latest.safetensors."),
        set_: list[str] = set_option("train.lr=1e-3"),
        progress: bool | None = progress_option(),
    ) -> None:
        """Train a detector (AdamW, cyclic/cosine LR, AMP on CUDA and bf16 CPUs, DDP under torchrun).

        SIGTERM or Ctrl-C saves a checkpoint at the end of the current step and exits with status
        143 / 130; rerun with --resume to continue exactly where it stopped.
        """
        progress = configure_progress(progress)
        from bevsimdet.engine.train import run_training

        cfg = _load(config, set_, dataroot)
        run_to_completion(lambda: run_training(cfg, work_dir, resume=resume, progress=progress))

    @app.command("evaluate-model")
    def evaluate_model_cmd(
        config: Path = config_argument(),
        checkpoint: Path = checkpoint_option(weights_files=True),
        dataroot: Optional[Path] = dataroot_option(),
        split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate (default: data.val_split)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write the metrics here as JSON."),
        max_range: Optional[float] = typer.Option(None, "--max-range", metavar="METRES",
                                                  help="Cap every class's evaluation range (e.g. 15: the near objects only)."),
        set_: list[str] = set_option("train.batch_size=1"),
        progress: bool | None = progress_option(),
    ) -> None:
        """Run a checkpoint over a split and report nuScenes mAP / NDS."""
        progress = configure_progress(progress)
        from bevsimdet.engine import dist
        from bevsimdet.engine.evaluate import evaluate_model
        from bevsimdet.eval.metrics import SUMMARY_KEYS
        from bevsimdet.io import atomic_write_json

        cfg = _load(config, set_, dataroot)
        try:
            metrics = evaluate_model(cfg, checkpoint, split, progress=progress, max_range=max_range)
            main = dist.is_main()
        finally:
            dist.destroy_distributed()
        if not main:
            return
        if metrics.get("diagnostic"):
            typer.echo(f"note: {metrics['diagnostic']}")
        if max_range is not None:
            typer.echo(f"every class range capped at {max_range:g} m")
        for key in SUMMARY_KEYS:
            typer.echo(f"{key:5s} {metrics[key]:.4f}")
        for key in (k for k in metrics if k.startswith("depth_")):  # camera models on a split with LiDAR
            typer.echo(f"{key} {metrics[key]:.4f}")
        if out is not None:
            atomic_write_json(out, metrics, indent=2)
            typer.echo(f"metrics written to {out}")
