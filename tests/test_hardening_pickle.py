"""No code path unpickles a file: every loader in the package is safe on untrusted input.

A static scan of the package's source (AST, so comments and strings do not count): no pickle-family
module is imported, ``torch.load`` always passes ``weights_only=True``, ``np.load`` never passes
``allow_pickle=True``, and YAML is only read with the safe loader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bevsimdet"
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib", "jsonpickle"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kwarg(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str) -> list[str]:
    """Human-readable findings (``line: what``) in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name == "torch.load":
                if not _is_const(_kwarg(node, "weights_only"), True):
                    found.append(f"{node.lineno}: {name} without weights_only=True")
            elif name in ("np.load", "numpy.load") and _is_const(_kwarg(node, "allow_pickle"), True):
                found.append(f"{node.lineno}: {name} with allow_pickle=True")
            elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
                loader = _kwarg(node, "Loader")
                if name.endswith("unsafe_load") or name.endswith("full_load") or loader is None or "Safe" not in _dotted(loader):
                    found.append(f"{node.lineno}: {name} without SafeLoader")
            elif name in ("torch.jit.load", "pandas.read_pickle", "pd.read_pickle"):
                found.append(f"{node.lineno}: {name}")
    return found


def test_scanner_flags_unsafe_loads():
    bad = (
        "import pickle\nfrom dill import loads\nimport torch, numpy as np, yaml\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\nyaml.load(s)\n"
    )
    assert len(unsafe_calls(bad)) == 6
    good = "import torch, numpy as np, yaml\ntorch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\n"
    assert unsafe_calls(good) == []


@pytest.mark.parametrize("module", sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")))
def test_no_unpickling_in_package(module):
    findings = unsafe_calls((PACKAGE.parent / module).read_text())
    assert not findings, f"{module}: " + "; ".join(findings)
