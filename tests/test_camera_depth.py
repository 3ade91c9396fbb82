"""Camera-model depth: the camera-aware depth net's geometry inputs (against a per-cell loop),
the oracle-depth diagnostic (one-hot where LiDAR hits, zero elsewhere), and the depth agreement
metric reported by evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from bevsimdet.data.batch import Batch
from bevsimdet.errors import ConfigError
from bevsimdet.models import build
from bevsimdet.models.depth import depth_agreement
from bevsimdet.models.testing import random_batch
from bevsimdet.models.view_transform import LSSTransform


def _front_camera():
    """A front camera 1.5 m up, looking along +x, principal point at feature cell (row 4, col 10)."""
    k = torch.tensor([[80.0, 0.0, 8 * 10 + 3.5], [0.0, 80.0, 8 * 4 + 3.5], [0.0, 0.0, 1.0]])
    c2e = torch.eye(4)
    c2e[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    c2e[:3, 3] = torch.tensor([1.0, 0.0, 1.5])
    return k, c2e


def _lss(**kw):
    args = dict(in_channels=4, out_channels=2, image_size=(64, 176), feature_stride=8, xbound=(-50.0, 50.0, 1.0),
                ybound=(-50.0, 50.0, 1.0), zbound=(-10.0, 10.0, 20.0), dbound=(1.0, 41.0, 2.0))
    args.update(kw)
    return LSSTransform(**args)


def _batch(k, c2e, img_aug=None, points=None):
    img_aug = torch.eye(3) if img_aug is None else img_aug
    return Batch(images=torch.zeros(1, 1, 3, 64, 176), intrinsics=k[None, None], cam2ego=c2e[None, None],
                 img_aug=img_aug[None, None], bev_aug=torch.eye(4)[None], points=points)


def _geometry_reference(vt: LSSTransform, k, c2e, img_aug):
    """Per-cell loop: ray through the cell centre pixel, its ground hit, Gaussian over bins."""
    h, w = vt.feature_shape
    s = vt.feature_stride
    dmin, _, step = vt.dbound
    out = torch.zeros(3 + vt.num_bins, h, w, dtype=torch.float64)
    pix2ray = torch.linalg.inv(k.double()) @ torch.linalg.inv(img_aug.double())
    for i in range(h):
        for j in range(w):
            uv = torch.tensor([j * s + (s - 1) / 2, i * s + (s - 1) / 2, 1.0], dtype=torch.float64)
            ray = pix2ray @ uv
            ego = c2e[:3, :3].double() @ (ray / ray[2])
            out[:3, i, j] = ego / ego.norm()
            if ego[2] < -1e-6:
                d = float(c2e[2, 3]) / float(-ego[2])
                for b in range(vt.num_bins):
                    centre = dmin + (b + 0.5) * step
                    out[3 + b, i, j] = math.exp(-0.5 * ((d - centre) / step) ** 2)
    return out


def test_depth_geometry_matches_per_cell_reference():
    vt = _lss(camera_aware=True)
    k, c2e = _front_camera()
    a = math.radians(4.0)
    img_aug = torch.tensor([[0.9 * math.cos(a), 0.9 * math.sin(a), 5.0], [-0.9 * math.sin(a), 0.9 * math.cos(a), -3.0], [0, 0, 1.0]])
    geo = vt.depth_geometry(_batch(k, c2e, img_aug))
    assert geo.shape == (1, 3 + vt.num_bins, 8, 22)
    torch.testing.assert_close(geo[0].double(), _geometry_reference(vt, k, c2e, img_aug), atol=1e-5, rtol=1e-5)


def test_ground_prior_peaks_at_the_ground_hit_and_is_zero_above_the_horizon():
    vt = _lss(camera_aware=True)
    k, c2e = _front_camera()
    geo = vt.depth_geometry(_batch(k, c2e))[0]
    # row 6 (pixel v = 51.5) is 16 px below the principal point: ground at 1.5 * 80 / 16 = 7.5 m
    prior = geo[3:, 6, 10]
    assert int(prior.argmax()) == 3  # bin [7, 9)
    assert float(prior[3]) == pytest.approx(math.exp(-0.5 * 0.25 ** 2))
    assert float(geo[3:, 0:4].abs().max()) == 0.0  # rows at or above the horizon see no ground
    assert torch.allclose(geo[:3, 4, 10], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)  # the optical axis


def test_camera_aware_depth_net_sees_the_camera():
    """Same image features, cameras at different heights -> different depth distributions."""
    torch.manual_seed(0)
    vt = _lss(camera_aware=True).eval()
    k, c2e = _front_camera()
    feats = torch.randn(1, 4, 8, 22)
    d1 = vt(feats, _batch(k, c2e))[1]
    c2e_high = c2e.clone()
    c2e_high[2, 3] = 3.0
    d2 = vt(feats, _batch(k, c2e_high))[1]
    assert not torch.allclose(d1, d2)
    plain = _lss().eval()
    assert plain.depthnet.in_channels == 4 and vt.depthnet.in_channels == 4 + 3 + vt.num_bins


def test_oracle_depth_is_one_hot_where_lidar_hits_and_zero_elsewhere():
    vt = _lss(oracle_depth=True).eval()
    k, c2e = _front_camera()
    pts = torch.tensor([[11.0, 0.0, 1.5, 0.5, 0.0], [30.0, 0.0, 1.5, 0.5, 0.0], [11.0, 0.0, 1.5, 0.5, 0.1]])
    batch = _batch(k, c2e, points=[pts])
    depth = vt.oracle(batch)
    assert depth.shape == (1, vt.num_bins, 8, 22)
    hit = depth.sum(1)
    assert int((hit == 1).sum()) == 1 and float(hit.max()) == 1.0  # the far point is behind the near one
    assert int(depth[0, :, 4, 10].argmax()) == 4  # 10 m -> bin [9, 11)
    assert float(hit[0].flatten()[torch.arange(8 * 22) != 4 * 22 + 10].abs().max()) == 0.0
    _, out_depth = vt(torch.randn(1, 4, 8, 22), batch)
    torch.testing.assert_close(out_depth, depth)
    with pytest.raises(ConfigError, match="oracle_depth"):
        vt(torch.randn(1, 4, 8, 22), _batch(k, c2e))


def test_oracle_camera_model_pools_only_lidar_cells():
    from tests.test_models import tiny_cfg

    cfg = tiny_cfg("camera")
    cfg.camera.oracle_depth = True
    model = build.build_detector(cfg).eval()
    batch = random_batch(cfg, num_points=0)
    batch.points = [torch.zeros(0, 5)]
    with torch.no_grad():
        out = model(batch)
    # no LiDAR return anywhere: nothing is lifted, the pooled BEV is empty before the conv block
    assert float(out.depth.abs().max()) == 0.0


def test_depth_agreement_counts_cells_within_one_bin():
    probs = torch.zeros(1, 4, 1, 3)
    probs[0, 0, 0, 0] = 1.0  # predicts bin 0, LiDAR bin 1 -> within one
    probs[0, 3, 0, 1] = 1.0  # predicts bin 3, LiDAR bin 0 -> not
    probs[0, :, 0, 2] = 0.25  # no LiDAR here: ignored
    bins = torch.tensor([[[1, 0, -1]]])
    n, within, err, signed = depth_agreement(probs, bins, (0.0, 8.0, 2.0)).tolist()
    assert (n, within) == (2.0, 1.0)
    assert err == pytest.approx(2.0 + 6.0)  # |1 - 3| + |7 - 1|
    assert signed == pytest.approx(-2.0 + 6.0)


def test_camera_aware_config_builds_every_camera_model():
    from tests.test_models import tiny_cfg

    for kind in ("camera", "fusion", "student"):
        cfg = tiny_cfg(kind)
        cfg.camera.camera_aware = True
        if kind == "student":
            cfg.student.sim_lidar_channels = 8
        model = build.build_detector(cfg)
        out = model(random_batch(cfg, with_points=kind == "fusion"))
        assert out.depth is not None and torch.isfinite(out.depth).all()


def test_camera_aware_model_exports_with_its_geometry_input(tmp_path):
    """The per-cell geometry becomes a fourth graph input; onnxruntime matches eager on a rig
    other than the export example."""
    from bevsimdet.export.graph import forbidden_ops, load_onnx, ort_session
    from bevsimdet.export.onnx import export_model, input_names, outputs_to_detector_output, precompute_geometry, run_onnx
    from tests.test_models import tiny_cfg

    cfg = tiny_cfg("camera")
    cfg.camera.camera_aware = True
    cfg.camera.ground_prior = 1.0
    torch.manual_seed(0)
    model = build.build_detector(cfg).eval()
    path = tmp_path / "aware.onnx"
    export_model(model, random_batch(cfg, with_points=False), path)
    proto = load_onnx(path)
    assert [i.name for i in proto.graph.input] == list(input_names(model)) == ["images", "point_index", "cell_index", "depth_geometry"]
    assert forbidden_ops(proto) == {}
    batch = random_batch(cfg, seed=4, with_points=False)
    batch.cam2ego[0, :, 2, 3] += 0.3  # another rig: cameras higher up
    inputs = {"images": batch.images, **precompute_geometry(model, batch)}
    got = outputs_to_detector_output(run_onnx(ort_session(path), inputs), num_tasks=6)
    with torch.no_grad():
        ref = model(batch)
    torch.testing.assert_close(got.preds[0]["heatmap"], ref.preds[0]["heatmap"], atol=1e-4, rtol=1e-4)


class _NoLidar(list):
    """Stands in for ``batch.points``: any read of it fails the test."""

    def _fail(self, *a, **k):
        raise AssertionError("the camera-only baseline read LiDAR points")

    __iter__ = __getitem__ = __len__ = __bool__ = _fail


def test_camera_baseline_training_loss_never_reads_lidar():
    """The demo baseline's whole training objective (forward + loss) with a batch whose points
    explode when touched: the baseline gets no LiDAR signal of any kind."""
    from pathlib import Path

    from bevsimdet.config import load_config
    from bevsimdet.engine.objective import DetectionObjective, run_objective

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo_camera.yaml", ["model.image.pretrained=null"])
    assert not cfg.model.depth_supervision and not cfg.model.camera.oracle_depth
    model = build.build_detector(cfg.model)
    batch = random_batch(cfg.model)
    batch.points = _NoLidar()
    res = run_objective(DetectionObjective(build.build_criterion(cfg.model), cfg.model.loss_weights), model, batch)
    res.loss.backward()
    assert set(res.terms) == {"det_heatmap", "det_bbox"} and torch.isfinite(res.loss)


def test_points_in_any_box_matches_the_numpy_reference():
    import numpy as np

    from bevsimdet.geometry import points_in_boxes
    from bevsimdet.models.depth import points_in_any_box

    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(3000, 3, generator=g) * 2 - 1) * torch.tensor([6.0, 6.0, 2.0])
    boxes = torch.tensor([[1.0, 2.0, 0.5, 2.0, 4.0, 1.5, 0.7, 0, 0], [-3.0, -1.0, 0.0, 0.6, 0.7, 1.8, -2.0, 0, 0]])
    ref = points_in_boxes(pts.numpy(), boxes.numpy()).any(1)
    assert np.array_equal(points_in_any_box(pts, boxes).numpy(), ref) and ref.sum() > 10
    grown = boxes.clone()
    grown[:, 3:6] += 0.5
    assert np.array_equal(points_in_any_box(pts, boxes, margin=0.25).numpy(), points_in_boxes(pts.numpy(), grown.numpy()).any(1))
    assert not points_in_any_box(pts, torch.zeros(0, 9)).any()


def test_depth_targets_mark_returns_on_objects():
    from bevsimdet.models.depth import lidar_depth_targets

    vt = _lss()
    k, c2e = _front_camera()
    pts = torch.tensor([[11.0, 0.0, 1.5, 0.5, 0.0], [21.0, -3.0, 1.5, 0.5, 0.0]])
    batch = _batch(k, c2e, points=[pts])
    batch.gt_boxes = [torch.tensor([[11.5, 0.0, 1.0, 2.0, 4.0, 2.0, 0.0, 0.0, 0.0]])]
    bins, on_object = lidar_depth_targets(batch, vt.feature_shape, vt.dbound)
    assert int((bins >= 0).sum()) == 2 and int(on_object.sum()) == 1
    assert bool(on_object[0, 4, 10]) and int(bins[0, 4, 10]) == 4


def test_split_depth_net_keeps_depth_and_context_apart():
    """A loss on the depth logits alone gives no gradient to the context branch."""
    vt = _lss(depth_net="split", camera_aware=True)
    k, c2e = _front_camera()
    feats = torch.randn(1, 4, 8, 22)
    _, depth = vt(feats, _batch(k, c2e))
    depth[:, 0].sum().backward()
    assert vt.depthnet.context[0].weight.grad is None or float(vt.depthnet.context[0].weight.grad.abs().max()) == 0.0
    assert float(vt.depthnet.depth[0].weight.grad.abs().max()) > 0
    assert vt.depthnet.depth[0].in_channels == 4 + 3 + vt.num_bins


@pytest.mark.parametrize("scale", [0.0, 0.25])
def test_depth_grad_scale_scales_what_the_depth_branch_sends_back(scale):
    torch.manual_seed(0)
    feats = torch.randn(1, 4, 8, 22)
    k, c2e = _front_camera()
    grads = {}
    for s in (1.0, scale):
        torch.manual_seed(1)
        vt = _lss(depth_net="split", depth_grad_scale=s)
        x = feats.clone().requires_grad_(True)
        _, depth = vt(x, _batch(k, c2e))
        (depth * torch.linspace(0, 1, depth.numel()).view_as(depth)).sum().backward()  # a loss on the depth only
        grads[s] = x.grad
    torch.testing.assert_close(grads[scale], grads[1.0] * scale)
    with pytest.raises(ConfigError, match="depth_grad_scale"):
        _lss(depth_net="conv3x3", depth_grad_scale=0.5)
