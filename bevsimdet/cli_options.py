"""Typer parameters shared by several ``bevsimdet`` commands, so each reads the same in every ``--help``.

Each helper returns a fresh ``typer.Argument``/``typer.Option`` to use as a parameter default.
"""

from __future__ import annotations

import typer


def config_argument(help: str = "YAML config the checkpoint was trained with (or its run's config.yaml).") -> typer.models.ArgumentInfo:
    return typer.Argument(..., help=help)


def checkpoint_option(weights_files: bool = False) -> typer.models.OptionInfo:
    extra = " or a .pt/.pth weights file" if weights_files else ""
    return typer.Option(..., "--checkpoint", help=f"A .safetensors checkpoint (EMA weights are used when present){extra}.")


def dataroot_option() -> typer.models.OptionInfo:
    return typer.Option(None, "--dataroot", help="nuScenes-format dataset (overrides data.dataroot).")


def set_option(example: str | None = "train.lr=1e-3", scope: str = "") -> typer.models.OptionInfo:
    """``--set key=value`` (repeatable); ``example`` shows a key that matters to the command."""
    shown = f", e.g. --set {example}" if example else ""
    return typer.Option([], "--set", help=f"Override a config key{scope}{shown} (repeatable; the value is parsed as YAML).")


def progress_option() -> typer.models.OptionInfo:
    """``--progress/--no-progress`` (default: unset). The command passes the value to
    :func:`bevsimdet.progress.configure`, which rules every bar drawn while it runs."""
    return typer.Option(None, "--progress/--no-progress", show_default=False,
                        help="Progress bars (on stderr): by default only when stderr is a terminal; "
                             "--progress draws them anyway (e.g. into a log), --no-progress never.")
