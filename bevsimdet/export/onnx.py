"""ONNX export of camera-only detectors (the BEVSimDet student and the camera baseline).

The camera geometry stays **outside** the graph. Matrix inversion, the frustum -> BEV cell
assignment and the selection of in-grid points all depend only on the camera matrices, so they
are computed once per rig in Python (:func:`precompute_geometry`, which calls the view
transform's own :meth:`~bevsimdet.models.view_transform.LSSTransform.pool_indices`) and passed in
as two integer inputs. The graph then has no ``NonZero``, no boolean indexing and no ``Inverse``;
:func:`bevsimdet.export.graph.forbidden_ops` checks this on every export.

Graph inputs (B fixed at export, P = number of in-grid frustum points, dynamic):

* ``images``       B x N x 3 x H x W float32, normalised as the dataset does (ImageNet mean/std).
* ``point_index``  P int64: flat index into the (B*N) x D x h x w frustum points inside the grid.
* ``cell_index``   P int64: flat BEV cell ``((b * nz + iz) * ny + iy) * nx + ix`` of each point.
* ``depth_geometry`` (only for camera-aware depth nets, ``model.camera.camera_aware``)
  (B*N) x (3 + D) x h x w float32: each feature cell's ray direction and ground prior
  (:meth:`~bevsimdet.models.view_transform.LSSTransform.depth_geometry`), also per rig.

Outputs: the CenterPoint head's raw maps, ``task{t}.{key}`` for every task ``t`` (see
:data:`bevsimdet.data.classes.TASKS`) and key in :data:`OUTPUT_KEYS`, each B x c x Ny x Nx
(``heatmap`` as logits). Decode them in Python with the model's post-processing:
:func:`outputs_to_detector_output` then ``build_postprocess(cfg.model)(output)``.

Inside the graph, BEV pooling is a ``ScatterElements`` with ``reduction="add"`` (opset >= 16).
``index_add_``, which the eager model uses, exports to a scatter that drops duplicate indices.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from bevsimdet.data.batch import Batch
from bevsimdet.errors import UserError
from bevsimdet.models.heads import HEADS
from bevsimdet.models.output import DetectorOutput

OUTPUT_KEYS: tuple[str, ...] = ("heatmap", *HEADS)
INPUT_NAMES = ("images", "point_index", "cell_index")  # + "depth_geometry" for camera-aware depth nets
DEPTH_GEOMETRY = "depth_geometry"
MIN_OPSET = 16  # GridSample (GCM) and ScatterElements(reduction=add)


class ExportError(UserError):
    """A model that cannot be exported as asked (needs LiDAR, inconsistent view transforms, ...)."""


def view_transforms(model: nn.Module) -> list[nn.Module]:
    from bevsimdet.models.view_transform import LSSTransform

    return [m for m in model.modules() if isinstance(m, LSSTransform)]


def bev_pool_scatter(feats: Tensor, ranks: Tensor, num_cells: int) -> Tensor:
    """:func:`~bevsimdet.models.view_transform.bev_pool` as ``scatter_add`` (exports to
    ``ScatterElements(reduction=add)``, which sums duplicate cells as ``index_add_`` does)."""
    out = feats.new_zeros(num_cells, feats.shape[1])
    return out.scatter_add(0, ranks[:, None].expand(-1, feats.shape[1]), feats)


@contextlib.contextmanager
def precomputed_geometry(model: nn.Module, point_index: Tensor, cell_index: Tensor, depth_geometry: Tensor | None = None) -> Iterator[None]:
    """Within the block, every view transform of ``model`` uses the given indices (and, for a
    camera-aware depth net, the given per-cell geometry) instead of computing them from the
    batch's matrices, and pools with :func:`bev_pool_scatter`. The model's own ``forward`` runs
    unchanged, so the exported graph cannot drift from it."""
    import bevsimdet.models.view_transform as vt_module

    vts = view_transforms(model)
    if any(vt.camera_aware for vt in vts) and depth_geometry is None:
        raise ExportError("the model's depth net is camera-aware: it needs the depth_geometry input")
    original_pool = vt_module.bev_pool
    for vt in vts:
        vt.pool_indices = lambda batch: (point_index, cell_index)  # instance attribute shadows the method
        if vt.camera_aware:
            vt.depth_geometry = lambda batch: depth_geometry
    vt_module.bev_pool = bev_pool_scatter
    try:
        yield
    finally:
        vt_module.bev_pool = original_pool
        for vt in vts:
            del vt.pool_indices
            vars(vt).pop("depth_geometry", None)


def input_names(model: nn.Module) -> tuple[str, ...]:
    """The graph inputs of ``model``: :data:`INPUT_NAMES`, plus ``depth_geometry`` when a view
    transform has a camera-aware depth net."""
    return INPUT_NAMES + ((DEPTH_GEOMETRY,) if any(vt.camera_aware for vt in view_transforms(model)) else ())


class ExportGraph(nn.Module):
    """``(images, point_index, cell_index) -> raw head maps`` of a camera-only detector (the
    module that is traced; runs in eager mode too)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # the exporter restores the wrapper's mode recursively afterwards: a wrapper left in
        # training mode would switch the detector's BatchNorms to batch statistics
        self.eval()

    def forward(self, images: Tensor, point_index: Tensor, cell_index: Tensor, depth_geometry: Tensor | None = None) -> tuple[Tensor, ...]:
        b, n = images.shape[:2]
        unused = images.new_zeros(b, n, 3, 3)  # the matrices are not read: the geometry is an input
        batch = Batch(images=images, intrinsics=unused, cam2ego=images.new_zeros(b, n, 4, 4), img_aug=unused, bev_aug=images.new_zeros(b, 4, 4))
        with precomputed_geometry(self.model, point_index, cell_index, depth_geometry):
            out = self.model(batch)
        return tuple(pred[k] for pred in out.preds for k in OUTPUT_KEYS)


def output_names(num_tasks: int) -> list[str]:
    return [f"task{t}.{k}" for t in range(num_tasks) for k in OUTPUT_KEYS]


def precompute_geometry(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """``point_index`` and ``cell_index`` (and ``depth_geometry`` for a camera-aware depth net)
    for the camera matrices of ``batch`` (intrinsics, cam2ego, img_aug, bev_aug; the images are
    not used). Compute once per rig and reuse."""
    vts = view_transforms(model)
    if not vts:
        raise ExportError(f"{type(model).__name__} has no LSS view transform", fix="export a camera baseline or student config")
    with torch.no_grad():
        kept, ranks = vts[0].pool_indices(batch)
        for vt in vts[1:]:
            other = vt.pool_indices(batch)
            if not (torch.equal(other[0], kept) and torch.equal(other[1], ranks)):
                raise ExportError("the model's view transforms use different geometry; one set of geometry inputs cannot serve both")
        out = {"point_index": kept.clone(), "cell_index": ranks.clone()}
        aware = [vt for vt in vts if vt.camera_aware]
        if aware:
            out[DEPTH_GEOMETRY] = aware[0].depth_geometry(batch).clone()
            if any(not torch.equal(vt.depth_geometry(batch), out[DEPTH_GEOMETRY]) for vt in aware[1:]):
                raise ExportError("the model's view transforms use different depth geometry; one input cannot serve both")
    return out


def outputs_to_detector_output(outputs: Sequence[Any], num_tasks: int) -> DetectorOutput:
    """The graph's outputs (in :func:`output_names` order, numpy or torch) as a
    :class:`DetectorOutput` for the model's post-processing."""
    tensors = [torch.as_tensor(np.asarray(o)) if not isinstance(o, Tensor) else o for o in outputs]
    if len(tensors) != num_tasks * len(OUTPUT_KEYS):
        raise ValueError(f"expected {num_tasks * len(OUTPUT_KEYS)} outputs, got {len(tensors)}")
    preds = [dict(zip(OUTPUT_KEYS, tensors[t * len(OUTPUT_KEYS) : (t + 1) * len(OUTPUT_KEYS)])) for t in range(num_tasks)]
    return DetectorOutput(preds=preds)


# --------------------------------------------------------------------------------------------


def export_model(model: nn.Module, batch: Batch, out: str | Path, *, opset: int = 17) -> dict[str, Tensor]:
    """Trace ``model`` (eval mode) on ``batch`` and write the ONNX graph to ``out`` atomically.
    Returns the example inputs. Raises :class:`ExportError` if a forbidden op got into the graph."""
    import onnx

    from bevsimdet.export.graph import forbidden_ops
    from bevsimdet.io import atomic_write_bytes

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old", fix=f"use --opset {MIN_OPSET} or newer")
    model = model.eval()
    inputs = {"images": batch.images, **precompute_geometry(model, batch)}
    names = input_names(model)
    graph = ExportGraph(model)
    num_tasks = len(model.head.task_heads)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            graph, tuple(inputs[k] for k in names), buf, input_names=list(names), output_names=output_names(num_tasks),
            dynamic_axes={"point_index": {0: "points"}, "cell_index": {0: "points"}}, opset_version=opset, dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    bad = forbidden_ops(proto)
    if bad:
        raise ExportError("exported graph contains forbidden ops: " + "; ".join(f"{k} ({v})" for k, v in sorted(bad.items())))
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, buf.getvalue())
    return inputs


def run_onnx(session: Any, inputs: dict[str, Tensor]) -> list[np.ndarray]:
    return session.run(None, {k: v.detach().cpu().numpy() for k, v in inputs.items()})


@dataclass
class ExportReport:
    path: Path
    num_nodes: int
    op_counts: dict[str, int]
    num_points: int
    max_abs_diff: float | None = None  # onnxruntime vs PyTorch, over all outputs
    max_rel_diff: float | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.path} ({self.num_nodes} nodes, {self.num_points} in-grid frustum points for the example rig)"]
        if self.max_abs_diff is not None:
            lines.append(f"onnxruntime vs PyTorch: max |diff| {self.max_abs_diff:.2e} (relative to the output scale {self.max_rel_diff:.2e})")
        return "\n".join(lines + self.notes)


def compare(graph: nn.Module, session: Any, inputs: dict[str, Tensor]) -> tuple[float, float]:
    """(max abs diff, max diff / max |output|) between onnxruntime and eager PyTorch outputs."""
    with torch.no_grad():
        ref = [t.numpy() for t in graph(*(inputs[k] for k in input_names(graph.model)))]
    got = run_onnx(session, inputs)
    abs_diff = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
    rel = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)) for a, b in zip(got, ref))
    return abs_diff, rel


def export_checkpoint(cfg: Any, checkpoint: str | Path, out: str | Path, *, batch_size: int = 1, opset: int = 17, check: bool = True) -> ExportReport:
    """Export the camera-only detector of ``cfg`` with the weights of ``checkpoint`` to ``out``.

    The example rig is the nuScenes-like camera rig at the config's image size (test-time
    transform); the geometry inputs of another rig come from :func:`precompute_geometry`.
    With ``check`` the graph is run in onnxruntime and compared with PyTorch.
    """
    from bevsimdet.export.graph import load_onnx, op_types, ort_session
    from bevsimdet.infer import check_camera_only
    from bevsimdet.models.testing import random_batch

    check_camera_only(cfg, "export")
    from bevsimdet.infer import load_detector

    cfg.train.device = "cpu"
    model, _ = load_detector(cfg, checkpoint)
    batch = random_batch(cfg.model, batch_size=batch_size, with_points=False, num_boxes=0)
    inputs = export_model(model, batch, out, opset=opset)
    proto = load_onnx(out)
    report = ExportReport(Path(out), len(proto.graph.node), dict(op_types(proto)), int(inputs["point_index"].numel()))
    if check:
        report.max_abs_diff, report.max_rel_diff = compare(ExportGraph(model), ort_session(out), inputs)
    return report


def median_latency(fn: Any, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


__all__ = [
    "OUTPUT_KEYS",
    "INPUT_NAMES",
    "input_names",
    "ExportError",
    "ExportGraph",
    "ExportReport",
    "bev_pool_scatter",
    "precomputed_geometry",
    "precompute_geometry",
    "outputs_to_detector_output",
    "output_names",
    "export_model",
    "export_checkpoint",
    "run_onnx",
    "compare",
    "median_latency",
]
