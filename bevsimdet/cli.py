"""The ``bevsimdet`` command line.

Each area registers its own sub-commands (``register(app)`` in its ``commands`` module), so the
CLI stays a thin shell. Command modules keep heavy imports (torch, the devkit) inside the command
functions, so ``bevsimdet --help`` is instant.

User mistakes raise :class:`bevsimdet.errors.UserError`; they are printed as one line
``error: ...`` and the process exits with status 2, never with a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from bevsimdet.errors import UserError

COMMAND_MODULES = (
    "bevsimdet.data.sim.commands",  # simulate
    "bevsimdet.data.commands",  # prepare, inspect
    "bevsimdet.eval.commands",  # evaluate
    "bevsimdet.engine.commands",  # train, evaluate-model
    "bevsimdet.infer",  # infer (a split, or a folder of camera frames)
    "bevsimdet.distill.commands",  # distill
    "bevsimdet.distill.ablate",  # ablate
    "bevsimdet.viz.commands",  # visualize
    "bevsimdet.export.commands",  # export
    "bevsimdet.demo",  # demo
    "bevsimdet.bench",  # bench
)

app = typer.Typer(
    name="bevsimdet",
    help="BEVSimDet: camera-only 3D detection distilled from a LiDAR+camera teacher, on nuScenes-format data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """BEVSimDet command line (see README)."""


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _e:  # an area not built yet must not break the others
        if _e.name != _name:
            raise
        continue
    _mod.register(app)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="bevsimdet")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
