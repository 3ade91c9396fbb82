"""CLI: ``bevsimdet export``."""

from __future__ import annotations

from pathlib import Path

import typer

from bevsimdet.cli_options import checkpoint_option, set_option


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        config: Path = typer.Argument(..., help="YAML config of a camera-only model (student or camera baseline)."),
        checkpoint: Path = checkpoint_option(),
        out: Path = typer.Option(..., "--out", help="ONNX file to write, e.g. student.onnx."),
        batch_size: int = typer.Option(1, "--batch-size", help="Fixed batch size of the graph."),
        opset: int = typer.Option(17, "--opset", help="ONNX opset (>= 16: GridSample and ScatterElements with add)."),
        check: bool = typer.Option(True, "--check/--no-check", help="Run the graph in onnxruntime on a random batch and compare with PyTorch."),
        set_: list[str] = set_option(None),
    ) -> None:
        """Export a camera-only detector to ONNX, with the camera geometry precomputed outside the graph."""
        from bevsimdet.config import load_config
        from bevsimdet.export.onnx import export_checkpoint

        cfg = load_config(config, set_)
        report = export_checkpoint(cfg, checkpoint, out, batch_size=batch_size, opset=opset, check=check)
        typer.echo(report.summary())
