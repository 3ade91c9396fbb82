"""The package is a house of floors: a module imports only from floors below its own.

    base:         bevsimdet (package), errors, io, progress, weights (weights may use errors and io)
    data:         geometry, data (data may use geometry)
    models/eval:  models, eval (neither uses the other)
    engine:       engine, distill, config (distill may use engine; the config schema ties the
                  per-package config dataclasses together)
    application:  cli, cli_options, bench, demo, claim, infer, export, viz, every ``*.commands`` module
                  and distill.ablate (an experiment driver, like demo)

Every import counts, module-level or inside a function (a lazy import is still a dependency).
Within one room (one sub-package) anything goes, except that library code never imports the
room's command-line modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bevsimdet"

FLOORS = {
    "bevsimdet": 0, "errors": 0, "io": 0, "weights": 0, "progress": 0,
    "geometry": 1, "data": 1,
    "models": 2, "eval": 2,
    "engine": 3, "distill": 3, "config": 3,
    "cli": 4, "cli_options": 4, "bench": 4, "demo": 4, "claim": 4, "infer": 4, "export": 4, "viz": 4, "__main__": 4,
}
# same-floor imports between different rooms that are allowed (importer room -> imported room)
SIDEWAYS = {("weights", "errors"), ("weights", "io"), ("data", "geometry"), ("distill", "engine"), ("distill", "config"), ("engine", "config")}
# the combined schema may read each package's own config dataclasses (they import no torch)
CONFIG_MODULES = {"bevsimdet.engine.config", "bevsimdet.distill.config"}
APPLICATION_MODULES = {"bevsimdet.distill.ablate"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def floor(module: str) -> int:
    if module in APPLICATION_MODULES or module.split(".")[-1] == "commands":
        return 4
    return FLOORS[room(module)]


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported bevsimdet module) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "bevsimdet"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "bevsimdet":
                continue
            if target == "bevsimdet":  # from bevsimdet import io -> the module bevsimdet.io
                out += [(node.lineno, f"bevsimdet.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def violations(package: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        importer = module_name(path, package)
        for line, imported in imports_of(path, importer):
            src, dst = room(importer), room(imported)
            fi, fd = floor(importer), floor(imported)
            if src == dst and fd <= fi:  # inside one room, except a library module using its commands
                continue
            ok = fd < fi or (fd == fi == 4) or (src, dst) in SIDEWAYS or (src == "config" and imported in CONFIG_MODULES)
            if not ok:
                bad.append(f"{path.relative_to(package.parent)}:{line}: {importer} (floor {fi}) imports {imported} (floor {fd})")
    return bad


def test_every_module_has_a_floor():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        assert room(name) in FLOORS, f"{name}: give its room a floor in tests/test_layering.py"


def test_lower_floors_never_import_higher_ones():
    bad = violations()
    assert not bad, "imports that go up the floors:\n" + "\n".join(bad)


def test_models_and_builders_are_not_circular():
    """models.build builds the student from models.student; the student module never imports the builders."""
    student = PACKAGE / "models" / "student.py"
    assert all(m != "bevsimdet.models.build" for _, m in imports_of(student, "bevsimdet.models.student"))


@pytest.mark.parametrize(
    "source, importer, expected",
    [
        ("from bevsimdet.engine.checkpoint import load_checkpoint", "bevsimdet.models.teacher", ["bevsimdet.engine.checkpoint"]),
        ("def f():\n    from ...distill import depth\n", "bevsimdet.models.heads", ["bevsimdet.distill"]),
        ("from . import nms", "bevsimdet.models.heads", ["bevsimdet.models.heads"]),
        ("from bevsimdet import io", "bevsimdet.eval.gt", ["bevsimdet.io"]),
        ("import torch\nimport bevsimdet.models.build as b", "bevsimdet.eval.gt", ["bevsimdet.models.build"]),
    ],
)
def test_imports_of_sees_every_form(tmp_path, source, importer, expected):
    """The checker itself: module-level, function-level, relative and ``from bevsimdet import x``."""
    name = "__init__.py" if importer.endswith("heads") else "mod.py"
    path = tmp_path / name
    path.write_text(source)
    assert [m for _, m in imports_of(path, importer)] == expected


def test_a_violation_is_reported(tmp_path):
    """An upward import inside a function of a model file is caught (so the check can fail)."""
    fake = tmp_path / "bevsimdet"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "teacher.py").write_text("def f():\n    from bevsimdet.engine.checkpoint import load_checkpoint\n")
    assert violations(fake) == ["bevsimdet/models/teacher.py:2: bevsimdet.models.teacher (floor 2) imports bevsimdet.engine.checkpoint (floor 3)"]
