"""The package is a house of floors: a module imports only from floors below its own.

    0 base:       bevsimdet (package), errors, io, progress, weights (weights may use errors and io)
    1 data:       geometry, data (data may use geometry)
    2 models/eval: models, eval (neither uses the other)
    3 training:   engine, distill (distill may use engine)
    4 schema:     config (the combined schema: it assembles every area's config section, so it
                  sits above them; the areas take their section, never the whole schema),
                  cli_options (the options shared by the commands)
    5 commands:   every ``*.commands`` module and distill.ablate (the application modules of
                  their room, on floor 5 or their room's floor if higher), infer
    6 tools:      viz, export, demo, claim, bench (they may use infer)
    7 entry:      cli, then __main__

Every import counts, module-level or inside a function (a lazy import is still a dependency).
Between rooms only the pairs in SIDEWAYS may share a floor (``distill.commands`` may use
``engine.commands`` as ``distill`` uses ``engine``). Within one room imports go down or along a
floor, and library code never imports the room's application modules. No module takes part in
an import circle (``a`` imports ``b`` imports ``a``), inside one room included.
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
    "engine": 3, "distill": 3,
    "config": 4, "cli_options": 4,
    "infer": 5,
    "bench": 6, "claim": 6, "demo": 6, "export": 6, "viz": 6,
    "cli": 7, "__main__": 8,
}
COMMANDS_FLOOR = 5
# same-floor imports between different rooms that are allowed (importer room -> imported room)
SIDEWAYS = {("weights", "errors"), ("weights", "io"), ("data", "geometry"), ("distill", "engine")}
# application modules besides the ``*.commands`` ones: an experiment driver, like demo
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


def is_application(module: str) -> bool:
    return module in APPLICATION_MODULES or module.split(".")[-1] == "commands"


def floor(module: str) -> int:
    if is_application(module):
        return max(COMMANDS_FLOOR, FLOORS[room(module)])
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


def resolved_imports(path: Path, module: str, modules: set[str]) -> list[tuple[int, str]]:
    """:func:`imports_of`, with ``from pkg import name`` read as importing the module ``pkg.name``
    when ``modules`` has it (``from bevsimdet.eval import cache`` depends on ``eval.cache``)."""
    out = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    from_nodes = {node.lineno: node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    for line, target in imports_of(path, module):
        node = from_nodes.get(line)
        subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules] if node is not None else []
        out += [(line, m) for m in subs] or [(line, target)]
    return out


def violations(package: Path = PACKAGE) -> list[str]:
    modules = {module_name(p, package) for p in package.rglob("*.py")}
    bad = []
    for path in sorted(package.rglob("*.py")):
        importer = module_name(path, package)
        for line, imported in resolved_imports(path, importer, modules):
            src, dst = room(importer), room(imported)
            fi, fd = floor(importer), floor(imported)
            if src == dst:
                ok = fd <= fi and (is_application(importer) or not is_application(imported))
            else:
                ok = fd < fi or (fd == fi and (src, dst) in SIDEWAYS)
            if not ok:
                bad.append(f"{path.relative_to(package.parent)}:{line}: {importer} (floor {fi}) imports {imported} (floor {fd})")
    return bad


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (as :func:`resolved_imports` reads them)."""
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    return {name: {m for _, m in resolved_imports(path, name, set(paths)) if m in paths and m != name} for name, path in paths.items()}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (``[a, b, a]``) per strongly connected group of modules, found by a plain DFS."""
    circles, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        stack, on_path = [(start, iter(sorted(graph[start])))], [start]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.pop()
                done.add(node)
            elif child in on_path:
                circles.append(on_path[on_path.index(child):] + [child])
            elif child not in done:
                stack.append((child, iter(sorted(graph[child]))))
                on_path.append(child)
    return circles


def test_every_module_has_a_floor():
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        assert room(name) in FLOORS, f"{name}: give its room a floor in tests/test_layering.py"


def test_lower_floors_never_import_higher_ones():
    bad = violations()
    assert not bad, "imports that go up the floors:\n" + "\n".join(bad)


def test_no_import_circles():
    circles = import_circles(import_graph())
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


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


@pytest.mark.parametrize(
    "importer, source, imported",
    [  # the imports issue 25 found running back up; the checker of that time let each through
        ("data/commands.py", "from bevsimdet.viz.sample import render_sample", "bevsimdet.viz.sample"),
        ("distill/ablate.py", "def f():\n    from bevsimdet.demo import train_stage", "bevsimdet.demo"),
        ("engine/train.py", "def f():\n    from bevsimdet.config import save_config", "bevsimdet.config"),
        ("distill/run.py", "def f():\n    from bevsimdet.config import load_config", "bevsimdet.config"),
        ("eval/gt.py", "from bevsimdet.eval import commands", "bevsimdet.eval.commands"),
    ],
)
def test_upward_imports_of_issue_25_are_reported(tmp_path, importer, source, imported):
    path = tmp_path / "bevsimdet" / importer
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    target = tmp_path / Path(*imported.split(".")).with_suffix(".py")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch()
    bad = violations(tmp_path / "bevsimdet")
    assert len(bad) == 1 and bad[0].endswith(f"imports {imported} (floor {floor(imported)})"), bad


def test_an_import_circle_inside_a_room_is_reported(tmp_path):
    """eval.gt importing eval.cache in a function while eval.cache imports eval.gt (as before
    issue 25): one room, downward-or-along imports only, and still a circle."""
    fake = tmp_path / "bevsimdet" / "eval"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "gt.py").write_text("class GroundTruth: ...\ndef load_gt():\n    from bevsimdet.eval import cache\n")
    (fake / "cache.py").write_text("from bevsimdet.eval.gt import GroundTruth\n")
    (fake / "boxes.py").write_text("from bevsimdet.eval.gt import GroundTruth\n")  # one-way: no circle
    assert import_circles(import_graph(tmp_path / "bevsimdet")) == [["bevsimdet.eval.gt", "bevsimdet.eval.cache", "bevsimdet.eval.gt"]]
