"""Checks and I/O helpers for exported ONNX graphs (no torch needed to use them).

:func:`forbidden_ops` lists the op types a deployable graph must not contain: data-dependent
shapes (``NonZero``, ``Compress`` — what boolean indexing exports to — ``Unique``), matrix
inversion (``Inverse``: the camera geometry is computed outside the graph instead), control flow
(``Loop``, ``If``, ``Scan``) and ops outside the standard ONNX domain (ATen fallbacks).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable

FORBIDDEN_OPS = {
    "NonZero": "data-dependent shapes (torch.nonzero / boolean indexing)",
    "Compress": "boolean indexing",
    "Unique": "data-dependent shapes",
    "Inverse": "torch.inverse (precompute the geometry outside the graph)",
    "Loop": "control flow",
    "If": "control flow",
    "Scan": "control flow",
}
STANDARD_DOMAINS = ("", "ai.onnx")


def _nodes(graph: Any) -> Iterable[Any]:
    """Every node of ``graph`` and of its subgraphs."""
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _nodes(g)


def op_types(model: Any) -> Counter:
    """``Counter`` of ``domain::op_type`` (just ``op_type`` for the standard domain)."""
    return Counter(n.op_type if n.domain in STANDARD_DOMAINS else f"{n.domain}::{n.op_type}" for n in _nodes(model.graph))


def forbidden_ops(model: Any) -> dict[str, str]:
    """Forbidden op types present in ``model`` -> why each is forbidden."""
    found = {}
    for op in op_types(model):
        if "::" in op:
            found[op] = "non-standard op domain (an ATen fallback does not run in onnxruntime)"
        elif op in FORBIDDEN_OPS:
            found[op] = FORBIDDEN_OPS[op]
    return found


def load_onnx(path: str | Path) -> Any:
    import onnx

    return onnx.load(str(path))


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU onnxruntime session (``threads`` intra-op threads; default: onnxruntime's)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
