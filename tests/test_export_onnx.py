"""ONNX export of the camera-only student: geometry as inputs, onnxruntime == PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("bevsimdet.models.build")

from bevsimdet.config import load_config  # noqa: E402
from bevsimdet.export.graph import forbidden_ops, load_onnx, op_types, ort_session  # noqa: E402
from bevsimdet.export.onnx import (  # noqa: E402
    INPUT_NAMES,
    ExportGraph,
    input_names,
    bev_pool_scatter,
    export_model,
    outputs_to_detector_output,
    precompute_geometry,
    precomputed_geometry,
    run_onnx,
)
from bevsimdet.models.build import build_detector, build_postprocess  # noqa: E402
from bevsimdet.models.testing import random_batch  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _randomise_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so an export that mixed up train/eval mode would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = load_config(CONFIGS / "demo_student.yaml")
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    _randomise_norms(model)
    path = tmp_path_factory.mktemp("onnx") / "student.onnx"
    export_model(model, random_batch(cfg.model, seed=0, with_points=False), path)
    return cfg, model, path


def _other_rig(cfg, seed: int):
    """A batch whose geometry differs from the export example: rotated BEV, shifted crop."""
    batch = random_batch(cfg.model, seed=seed, with_points=False)
    c, s = np.cos(0.4), np.sin(0.4)
    batch.bev_aug[0, :2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float32)
    batch.img_aug[0, :, 0, 2] += 7.0
    return batch


def test_graph_takes_the_geometry_as_input_and_has_no_forbidden_ops(exported):
    _, model, path = exported
    proto = load_onnx(path)
    assert forbidden_ops(proto) == {}
    ops = op_types(proto)
    assert not {"NonZero", "Inverse", "Compress"} & set(ops)
    assert ops["ScatterElements"] == 2  # one BEV pooling per view transform (camera, sim-LiDAR)
    assert ops["GridSample"] == 1  # the GCM
    # the demo student's depth nets are camera-aware: their per-cell geometry is a fourth input
    assert [i.name for i in proto.graph.input] == list(input_names(model)) == [*INPUT_NAMES, "depth_geometry"]
    assert proto.graph.input[1].type.tensor_type.shape.dim[0].dim_param == "points"
    assert len(proto.graph.output) == 6 * 6 and proto.graph.output[0].name == "task0.heatmap"


def test_onnxruntime_matches_pytorch_on_a_new_rig(exported):
    cfg, model, path = exported
    batch = _other_rig(cfg, seed=3)
    inputs = {"images": batch.images, **precompute_geometry(model, batch)}
    assert inputs["point_index"].numel() > 0
    got = outputs_to_detector_output(run_onnx(ort_session(path), inputs), num_tasks=6)
    with torch.no_grad():
        ref = model(batch)  # the model's own forward: geometry from the matrices, index_add_ pooling
    for g, r in zip(got.preds, ref.preds):
        for key, value in r.items():
            scale = float(value.abs().max())
            torch.testing.assert_close(g[key], value, atol=1e-4 * max(scale, 1.0), rtol=1e-4)
    post = build_postprocess(cfg.model)
    (a,), (b,) = post(got, batch), post(ref, batch)
    # an untrained head scores every cell near the threshold, so NMS keeps near-ties in either
    # order; the best box is unambiguous
    assert len(a.scores) > 0 and len(b.scores) > 0
    ia, ib = int(a.scores.argmax()), int(b.scores.argmax())
    torch.testing.assert_close(a.scores[ia], b.scores[ib], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.boxes[ia], b.boxes[ib], atol=1e-3, rtol=1e-3)
    assert int(a.labels[ia]) == int(b.labels[ib])


def test_precomputed_geometry_is_restored_and_pooling_matches_the_reference():
    import bevsimdet.models.view_transform as vt_module

    cfg = load_config(CONFIGS / "demo_camera.yaml")
    model = build_detector(cfg.model).eval()
    batch = random_batch(cfg.model, seed=1, with_points=False)
    geo = precompute_geometry(model, batch)
    with precomputed_geometry(model, geo["point_index"], geo["cell_index"], geo.get("depth_geometry")):
        assert vt_module.bev_pool is bev_pool_scatter
        assert model.view_transform.pool_indices(None)[0] is geo["point_index"]
    assert vt_module.bev_pool is not bev_pool_scatter and "pool_indices" not in vars(model.view_transform)
    with torch.no_grad():
        eager = ExportGraph(model)(*(batch.images if k == "images" else geo[k] for k in input_names(model)))
        ref = model(batch)
    torch.testing.assert_close(eager[0], ref.preds[0]["heatmap"], atol=1e-5, rtol=1e-5)

    g = torch.Generator().manual_seed(0)
    feats, ranks = torch.randn(50, 4, generator=g), torch.randint(0, 7, (50,), generator=g)  # duplicates on purpose
    torch.testing.assert_close(bev_pool_scatter(feats, ranks, 7), vt_module.bev_pool_reference(feats, ranks, 7))


def test_export_cli_end_to_end_and_refusals(tmp_path, capsys):
    from bevsimdet.cli import main
    from bevsimdet.engine.checkpoint import save_checkpoint

    cfg = load_config(CONFIGS / "demo_camera.yaml")
    ckpt = tmp_path / "camera.safetensors"
    save_checkpoint(ckpt, model=build_detector(cfg.model))
    with pytest.raises(SystemExit) as e:
        main(["export", str(CONFIGS / "demo_camera.yaml"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "camera.onnx")])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "wrote" in out and "onnxruntime vs PyTorch: max |diff|" in out
    assert forbidden_ops(load_onnx(tmp_path / "camera.onnx")) == {}

    with pytest.raises(SystemExit) as e:
        main(["export", str(CONFIGS / "demo_fusion.yaml"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "f.onnx")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "needs LiDAR" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["export", str(CONFIGS / "demo_camera.yaml"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.onnx"), "--opset", "13"])
    assert "opset 13 is too old" in capsys.readouterr().err
