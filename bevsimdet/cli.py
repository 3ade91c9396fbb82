"""The ``bevsimdet`` command line.

Each area registers its own sub-commands (``register(app)`` in its ``commands`` module), so the
CLI stays a thin shell. Command modules keep heavy imports (torch, the devkit) inside the command
functions, so ``bevsimdet --help`` is instant. The app is built on first use (``app`` below).

Commands in :data:`FAST_COMMANDS` start faster: when their arguments are plain options they are
parsed straight from the command function's typer signature (:func:`fast_options`) and the
function is called without building the typer app, whose parameter coercion imports pydantic
(~0.1 s per process). Anything else (``--help``, an unknown or malformed option) goes through
typer as usual, so help and error messages are typer's.

User mistakes raise :class:`bevsimdet.errors.UserError`; they are printed as one line
``error: ...`` and the process exits with status 2, never with a traceback.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Callable

import typer

from bevsimdet.errors import UserError, one_line

COMMAND_MODULES = (
    "bevsimdet.data.sim.commands",  # simulate
    "bevsimdet.data.commands",  # prepare
    "bevsimdet.eval.commands",  # evaluate
    "bevsimdet.engine.commands",  # train, evaluate-model
    "bevsimdet.infer",  # infer (a split, or a folder of camera frames)
    "bevsimdet.distill.commands",  # distill
    "bevsimdet.distill.ablate",  # ablate
    "bevsimdet.viz.commands",  # visualize, inspect
    "bevsimdet.export.commands",  # export
    "bevsimdet.demo",  # demo
    "bevsimdet.claim",  # claim
    "bevsimdet.bench",  # bench
)

# command name -> "module:function" of commands that may skip building the typer app
FAST_COMMANDS = {"evaluate": "bevsimdet.eval.commands:evaluate_command"}


def _build_app() -> typer.Typer:
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

    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:  # an area not built yet must not break the others
            if e.name != name:
                raise
            continue
        mod.register(app)
    return app


_APP: typer.Typer | None = None


def __getattr__(name: str):
    """``bevsimdet.cli.app``: the typer app with every command registered, built once."""
    global _APP
    if name == "app":
        if _APP is None:
            _APP = _build_app()
        return _APP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain_type(annotation: object) -> type | None:
    """str / int / float / Path (or Optional of one of them) -> that type; anything else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (str, int, float, Path) else None


def fast_options(func: Callable, args: list[str]) -> dict | None:
    """Keyword arguments for ``func`` (a typer command whose parameters are all ``typer.Option``)
    from command-line ``args``, or ``None`` whenever typer should handle them instead (help, an
    unknown or repeated option, a missing value or required option, a type or option typer would
    have to convert or check)."""
    hints = typing.get_type_hints(func)
    flags: dict[str, tuple[str, object]] = {}  # --flag -> (parameter, constant for switches or None)
    values: dict[str, object] = {}
    types_: dict[str, type] = {}
    for name, param in inspect.signature(func).parameters.items():
        info = param.default
        if not isinstance(info, typer.models.OptionInfo) or info.callback is not None:
            return None
        if hints.get(name) in (bool, typing.Optional[bool]):
            decls = [d for d in info.param_decls if "/" in d]
            if len(decls) != 1:
                return None
            on, off = decls[0].split("/")
            flags[on], flags[off] = (name, True), (name, False)
        else:
            kind = _plain_type(hints.get(name))
            if kind is None or info.min is not None or info.max is not None:
                return None
            types_[name] = kind
            for d in info.param_decls:
                flags[d] = (name, None)
        values[name] = info.default
    seen: set[str] = set()
    i = 0
    while i < len(args):
        flag, eq, value = args[i].partition("=")
        if flag not in flags or flags[flag][0] in seen:
            return None
        name, constant = flags[flag]
        seen.add(name)
        if constant is not None:
            if eq:
                return None
            values[name] = constant
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                return None
            value = args[i + 1]
            i += 1
        i += 1
        try:
            values[name] = types_[name](value)
        except ValueError:
            return None
    if any(v is ... for v in values.values()):
        return None
    return values


def _run_fast(args: list[str]) -> bool:
    """Run ``args`` through :data:`FAST_COMMANDS` if possible; False when typer must handle them."""
    if not args or args[0] not in FAST_COMMANDS:
        return False
    module, _, attr = FAST_COMMANDS[args[0]].partition(":")
    func = getattr(importlib.import_module(module), attr)
    kwargs = fast_options(func, args[1:])
    if kwargs is None:
        return False
    func(**kwargs)
    return True


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if not _run_fast(args):
            __getattr__("app")(args=args, prog_name="bevsimdet")
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        # a training stopped by a signal inside demo / ablate / claim: its checkpoint is saved, so a
        # line saying how to continue, not a traceback; no training module loaded, no such stop
        train = sys.modules.get("bevsimdet.engine.train")
        if train is None or not isinstance(e, train.TrainingInterrupted):
            raise
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
