"""Detector components on tiny CPU inputs: shapes, fast paths vs references, geometry, targets,
decoding, empty scenes, determinism, the frozen teacher."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bevsimdet.config import load_config
from bevsimdet.data.classes import CLASS_TO_LABEL, CLASSES, TASKS
from bevsimdet.errors import ConfigError
from bevsimdet.models import build
from bevsimdet.models.config import ModelConfig
from bevsimdet.models.decoder import generalized_resnet_decoder, second_decoder
from bevsimdet.models.fuser import ConvFuser
from bevsimdet.models.heads import (
    CenterHead,
    CenterPointPostProcess,
    CenterPointTargetAssigner,
    draw_gaussian,
    draw_heatmaps,
    gaussian_radius,
)
from bevsimdet.models.heads.nms import bev_iou, bev_iou_reference, circle_nms, nms_reference, rotate_nms
from bevsimdet.models.image import ImageEncoder
from bevsimdet.models.lidar import PillarLidarEncoder, voxelize, voxelize_reference
from bevsimdet.models.output import DetectorOutput
from bevsimdet.models.testing import random_batch
from bevsimdet.models.view_transform import LSSTransform, bev_pool, bev_pool_reference

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_cfg(kind: str) -> ModelConfig:
    """The demo model scaled down further: 64 x 176 images, 3.2 m BEV cells (32 x 32 grid)."""
    cfg = ModelConfig(type=kind)
    cfg.camera.image_size = (64, 176)
    cfg.camera.xbound = cfg.camera.ybound = (-51.2, 51.2, 3.2)
    cfg.camera.dbound = (1.0, 57.0, 8.0)
    cfg.camera.downsample = 1
    cfg.lidar.voxel_size = (3.2, 3.2, 8.0)
    cfg.lidar.downsample = 1
    cfg.image.out_channels = 16
    cfg.camera.out_channels = 8
    cfg.lidar.feat_channels = cfg.lidar.out_channels = 8
    cfg.fuser_channels = 16
    cfg.decoder.blocks = [[1, 16, 1], [1, 16, 2]]
    cfg.decoder.out_channels = 16
    cfg.head.share_channels = cfg.head.head_channels = 8
    return cfg


# ------------------------------------------------------------------------------------------------
# module shapes


def test_image_encoder_shapes():
    enc = ImageEncoder("tiny", 24, base_width=8)
    out = enc(torch.randn(2, 3, 3, 64, 176))
    assert out.shape == (6, 24, 8, 22)
    assert ImageEncoder("resnet18", 16).backbone.out_channels == [128, 256, 512]
    assert ImageEncoder("resnet50", 16).backbone.out_channels == [512, 1024, 2048]
    with pytest.raises(ConfigError):
        ImageEncoder("vgg")


def test_pretrained_backbone_weights_load(tmp_path):
    from safetensors.torch import save_file

    src = ImageEncoder("tiny", 8, base_width=8)
    path = tmp_path / "r.safetensors"
    save_file({f"backbone.{k}": v.contiguous() for k, v in src.backbone.state_dict().items()}, str(path))
    dst = ImageEncoder("tiny", 8, base_width=8, pretrained=str(path))
    assert all(torch.equal(v, dst.backbone.state_dict()[k]) for k, v in src.backbone.state_dict().items())
    with pytest.raises(ConfigError):
        ImageEncoder("tiny", 8, pretrained=str(tmp_path / "missing.safetensors"))


def test_frozen_stages_do_not_train():
    enc = ImageEncoder("tiny", 8, base_width=8, frozen_stages=1).train()
    assert not any(p.requires_grad for p in enc.backbone.layer1.parameters())
    assert not enc.backbone.layer1.training and enc.backbone.layer2.training


def test_view_transform_lidar_fuser_decoder_head_shapes():
    cfg = tiny_cfg("fusion")
    batch = random_batch(cfg, batch_size=2, num_points=300)
    vt = build.build_view_transform(cfg)
    bev, depth = vt(torch.randn(12, 16, 8, 22), batch)
    assert bev.shape == (2, 8, 32, 32) and depth.shape == (12, vt.num_bins, 8, 22)
    assert torch.allclose(depth.sum(1), torch.ones(12, 8, 22), atol=1e-5)
    lid = build.build_lidar_encoder(cfg)(batch.points)
    assert lid.shape == (2, 8, 32, 32)
    fused = ConvFuser([8, 8], 16)([bev, lid])
    assert fused.shape == (2, 16, 32, 32)
    with pytest.raises(ValueError):
        ConvFuser([8, 8], 16)([bev, lid[:, :4]])
    assert generalized_resnet_decoder(16, [[1, 16, 2], [1, 32, 2]], 24)(fused).shape == (2, 24, 32, 32)
    assert second_decoder(16, [16, 32], [1, 1], [1, 2], [8, 8])(fused).shape == (2, 16, 32, 32)
    preds = CenterHead(16, TASKS, 8, 8)(fused)
    assert len(preds) == 6
    assert [p["heatmap"].shape[1] for p in preds] == [len(t) for t in TASKS]
    assert {k: v.shape[1] for k, v in preds[0].items() if k != "heatmap"} == {"reg": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2}


@pytest.mark.parametrize("kind", ["camera", "lidar", "fusion", "student"])
def test_detectors_forward_names(kind):
    cfg = tiny_cfg(kind)
    if kind == "student":
        cfg.student.sim_lidar_channels = 8
        cfg.student.gcm_points = 2
    torch.manual_seed(0)
    model = build.build_detector(cfg)
    batch = random_batch(cfg, batch_size=1, num_points=200)
    if kind in ("camera", "student"):
        batch = batch.without_lidar()  # camera-only models never read points
    out = model(batch)
    expected = {"camera": {"camera_bev", "decoder_bev"}, "lidar": {"lidar_bev", "decoder_bev"},
                "fusion": {"camera_bev", "lidar_bev", "fused_bev", "decoder_bev"},
                "student": {"camera_bev", "sim_lidar_bev", "fused_bev", "decoder_bev"}}[kind]
    assert set(out.feats) == expected
    assert (out.depth is None) == (kind == "lidar")
    assert out.preds[0]["heatmap"].shape[-2:] == (32, 32)


def test_lidar_models_need_points_and_image_size_must_match():
    cfg = tiny_cfg("lidar")
    with pytest.raises(ValueError, match="needs LiDAR points"):
        build.build_detector(cfg)(random_batch(cfg).without_lidar())
    cam = tiny_cfg("camera")
    with pytest.raises(ConfigError, match="image_size"):
        build.build_detector(cam)(random_batch(cam, image_size=(128, 352)))


def test_fusion_grids_must_agree():
    cfg = tiny_cfg("fusion")
    cfg.lidar.voxel_size = (1.6, 1.6, 8.0)
    with pytest.raises(ConfigError, match="differ"):
        build.build_detector(cfg)


# ------------------------------------------------------------------------------------------------
# BEV pooling and LSS geometry


def test_bev_pool_matches_reference_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(300, 5, generator=g, dtype=torch.float64)
    ranks = torch.randint(0, 40, (300,), generator=g)
    a = feats.clone().requires_grad_(True)
    b = feats.clone().requires_grad_(True)
    fa, fb = bev_pool(a, ranks, 50), bev_pool_reference(b, ranks, 50)
    assert torch.allclose(fa, fb)
    w = torch.randn(50, 5, generator=g, dtype=torch.float64)
    (fa * w).sum().backward()
    (fb * w).sum().backward()
    assert torch.allclose(a.grad, b.grad)
    assert torch.allclose(a.grad, w[ranks])


def _front_camera(image_size=(64, 176)):
    """A front camera 1.5 m up, looking along +x, principal point at a feature-cell centre."""
    h, w = image_size
    k = torch.tensor([[80.0, 0.0, 8 * 10 + 3.5], [0.0, 80.0, 8 * 4 + 3.5], [0.0, 0.0, 1.0]])
    c2e = torch.eye(4)
    c2e[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: right, down, forward
    c2e[:3, 3] = torch.tensor([1.0, 0.0, 1.5])
    return k, c2e


def _batch_for(k, c2e, img_aug, bev_aug, image_size=(64, 176)):
    from bevsimdet.data.batch import Batch

    return Batch(images=torch.zeros(1, 1, 3, *image_size), intrinsics=k[None, None], cam2ego=c2e[None, None],
                 img_aug=img_aug[None, None], bev_aug=bev_aug[None])


def _lss(**kw):
    args = dict(in_channels=4, out_channels=2, image_size=(64, 176), feature_stride=8, xbound=(-50.0, 50.0, 1.0),
                ybound=(-50.0, 50.0, 1.0), zbound=(-10.0, 10.0, 20.0), dbound=(1.0, 41.0, 2.0))
    args.update(kw)
    return LSSTransform(**args)


def test_lss_geometry_known_point_lands_in_its_cell():
    vt = _lss()
    k, c2e = _front_camera()
    batch = _batch_for(k, c2e, torch.eye(3), torch.eye(4))
    geom = vt.geometry(batch.intrinsics, batch.cam2ego, batch.img_aug, batch.bev_aug)[0, 0]
    # the principal point is feature cell (row 4, col 10); depth bin 4 has its centre at 10 m
    assert torch.allclose(geom[4, 4, 10], torch.tensor([11.0, 0.0, 1.5]), atol=1e-5)
    kept, ranks = vt.pool_indices(batch)
    flat = (4 * 8 + 4) * 22 + 10
    pos = (kept == flat).nonzero()
    assert pos.numel() == 1
    assert int(ranks[pos[0, 0]]) == (0 + 50) * 100 + (11 + 50)  # iy = 50 (y = 0), ix = 61 (x = 11)
    # with a 90 degree BEV rotation and scale 2 the point moves to (-0, 22) -> (x, y) = (0, 22)
    rot = torch.eye(4)
    rot[:2, :2] = torch.tensor([[0.0, -2.0], [2.0, 0.0]])
    rot[2, 2] = 2.0
    vt._cache = None
    geom = vt.geometry(batch.intrinsics, batch.cam2ego, batch.img_aug, rot[None])[0, 0]
    assert torch.allclose(geom[4, 4, 10], torch.tensor([0.0, 22.0, 3.0]), atol=1e-4)


def test_lss_geometry_inverts_projection_with_image_augmentation():
    """Lifting then projecting back (un-augment BEV, ego -> camera, K, img_aug) returns the
    frustum pixel and depth, for a rotated, flipped and resized image and an augmented BEV."""
    vt = _lss()
    k, c2e = _front_camera()
    a = math.radians(5.0)
    rot = torch.tensor([[math.cos(a), math.sin(a), 3.0], [-math.sin(a), math.cos(a), -2.0], [0.0, 0.0, 1.0]])
    flip = torch.tensor([[-1.0, 0.0, 175.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    img_aug = rot @ flip @ torch.diag(torch.tensor([0.9, 0.9, 1.0]))
    bev = torch.eye(4)
    c, s = math.cos(0.3), math.sin(0.3)
    bev[:2, :2] = torch.tensor([[c, -s], [s, c]]) * 1.05
    bev[2, 2] = 1.05
    bev[1, 1] *= -1  # a y flip as well
    geom = vt.geometry(k[None, None], c2e[None, None], img_aug[None, None], bev[None])[0, 0].double()
    pts = torch.cat([geom.reshape(-1, 3), torch.ones(geom[..., :1].numel(), 1, dtype=torch.float64)], 1)
    cam = (torch.linalg.inv(c2e.double()) @ torch.linalg.inv(bev.double()) @ pts.t())[:3]
    pix = img_aug.double() @ k.double() @ (cam / cam[2:3])
    frustum = vt.frustum.reshape(-1, 3).double()
    assert torch.allclose(cam[2], frustum[:, 2], atol=1e-3)
    assert torch.allclose(pix[:2].t(), frustum[:, :2], atol=1e-2)


def test_lss_rank_cache_reused_only_for_same_cameras():
    cfg = tiny_cfg("camera")
    vt = build.build_view_transform(cfg).eval()
    batch = random_batch(cfg, batch_size=1)
    feats = torch.randn(6, 16, 8, 22)
    first, _ = vt(feats, batch)
    kept = vt._cache[1]
    again, _ = vt(feats, batch)
    assert vt._cache[1] is kept and torch.equal(first, again)
    batch.bev_aug[0, :2, :2] = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    rotated, _ = vt(feats, batch)
    assert vt._cache[1] is not kept
    # a 90 degree BEV rotation of the whole scene rotates the (square) BEV map
    assert torch.allclose(rotated, torch.rot90(first, -1, (2, 3)), atol=1e-4)


def test_depth_targets_from_lidar():
    vt = _lss()
    k, c2e = _front_camera()
    batch = _batch_for(k, c2e, torch.eye(3), torch.eye(4))
    batch.points = [torch.tensor([[11.0, 0.0, 1.5, 0.5, 0.0], [11.0, 0.0, 1.5, 0.5, 0.1]])]  # keyframe + a sweep
    bins = vt.depth_targets(batch)
    assert bins.shape == (1, 8, 22)
    assert int(bins[0, 4, 10]) == 4 and int((bins >= 0).sum()) == 1


# ------------------------------------------------------------------------------------------------
# LiDAR


def test_voxelize_matches_reference():
    g = torch.Generator().manual_seed(1)
    pts = [torch.randn(200, 5, generator=g) * 20, torch.randn(50, 5, generator=g) * 20]
    rng, size = (-30.0, -30.0, -5.0, 30.0, 30.0, 3.0), (4.0, 4.0, 2.0)
    flat, bidx, vox, coords = voxelize(pts, rng, size)
    ref = voxelize_reference(pts, rng, size)
    assert {tuple(c) for c in coords.tolist()} == set(ref)
    assert coords.shape[0] == len(ref) and flat.shape[0] == sum(len(v) for v in ref.values())
    for key, members in ref.items():
        v = [tuple(c) for c in coords.tolist()].index(key)
        got = sorted(flat[vox == v, 0].tolist())
        assert got == pytest.approx(sorted(pts[key[0]][members, 0].tolist()))
    assert set(bidx.tolist()) == {0, 1}


def test_pillar_encoder_empty_and_single_point_clouds_train():
    enc = PillarLidarEncoder((-8.0, -8.0, -5.0, 8.0, 8.0, 3.0), (1.0, 1.0, 8.0), feat_channels=4, out_channels=4, downsample=2).train()
    for pts in ([torch.zeros(0, 5), torch.zeros(0, 5)], [torch.tensor([[1.0, 1.0, 0.0, 0.5, 0.0]])]):
        out = enc(pts)
        assert out.shape == (len(pts), 4, 8, 8) and torch.isfinite(out).all()
        out.sum().backward()
        assert all(p.grad is not None for p in enc.pfn.parameters())
        enc.zero_grad()


def test_voxel_z_slices_fold_into_channels():
    enc = PillarLidarEncoder((-8.0, -8.0, -4.0, 8.0, 8.0, 4.0), (2.0, 2.0, 2.0), feat_channels=3, out_channels=5, downsample=1, num_blocks=0)
    assert enc.nz == 4 and enc.backbone[0].in_channels == 12
    assert enc([torch.randn(40, 5) * 4]).shape == (1, 5, 8, 8)


# ------------------------------------------------------------------------------------------------
# head: Gaussians, targets, decoding, NMS


def test_draw_heatmaps_matches_draw_gaussian():
    ix = torch.tensor([0, 5, 9, 5, 3])
    iy = torch.tensor([0, 4, 9, 5, 7])
    radius = torch.tensor([2, 3, 1, 2, 0])
    labels = torch.tensor([0, 1, 0, 1, 0])
    fast = draw_heatmaps(ix, iy, radius, labels, 2, (10, 12))
    ref = torch.zeros(2, 10, 12)
    for m in range(5):
        draw_gaussian(ref[labels[m]], (int(ix[m]), int(iy[m])), int(radius[m]))
    assert torch.allclose(fast, ref, atol=1e-6)
    assert fast[0, 0, 0] == 1.0 and fast[1, 4, 5] == 1.0


def test_gaussian_radius_keeps_min_overlap():
    r = float(gaussian_radius(10.0, 4.0, 0.1))
    assert 0 < r < 10
    # a box shifted diagonally by r in both axes still overlaps its original by >= 0.1 IoU
    inter = (10 - r) * (4 - r)
    assert inter / (2 * 40 - inter) >= 0.1 - 1e-4


def _perfect_preds(tg, shape):
    preds = []
    for t, task in enumerate(TASKS):
        b = tg.heatmaps[t].shape[0]
        heat = torch.where(tg.heatmaps[t] == 1, torch.tensor(8.0), torch.tensor(-8.0))
        code = torch.zeros(b, 10, shape[0] * shape[1])
        for bi in range(b):
            m = tg.masks[t][bi].bool()
            code[bi][:, tg.indices[t][bi][m]] = tg.codes[t][bi][m].t()
        code = code.view(b, 10, *shape)
        preds.append({"heatmap": heat, "reg": code[:, 0:2], "height": code[:, 2:3], "dim": code[:, 3:6], "rot": code[:, 6:8], "vel": code[:, 8:10]})
    return preds


def test_targets_then_perfect_predictions_decode_to_the_boxes():
    rng, shape = (-51.2, -51.2, 51.2, 51.2), (64, 64)
    boxes, labels = [], []
    for i, name in enumerate(CLASSES):  # one of each class, well apart
        x, y = -40.0 + 9.0 * i, 20.0 * math.sin(i)
        wlh = {"car": (1.9, 4.5, 1.6), "pedestrian": (0.7, 0.7, 1.8), "traffic_cone": (0.4, 0.4, 1.0)}.get(name, (2.0, 3.0, 1.5))
        boxes.append([x, y, 0.8, *wlh, 0.3 * i - 1.2, 0.5 * i, -0.2])
        labels.append(CLASS_TO_LABEL[name])
    gt = torch.tensor(boxes)
    gl = torch.tensor(labels)
    assigner = CenterPointTargetAssigner(TASKS, rng, shape)
    tg = assigner([gt, gt[:0]], [gl, gl[:0]])
    assert sum(int(m[0].sum()) for m in tg.masks) == 10 and sum(int(m[1].sum()) for m in tg.masks) == 0
    post = CenterPointPostProcess(TASKS, rng)
    dets = post(DetectorOutput(preds=_perfect_preds(tg, shape)), None)
    assert dets[1].boxes.shape[0] == 0
    d = dets[0]
    assert sorted(d.labels.tolist()) == sorted(labels)
    for lab, box in zip(d.labels.tolist(), d.boxes):
        want = gt[gl == lab][0]
        assert torch.allclose(box[:6], want[:6], atol=1e-4)
        assert abs(math.remainder(float(box[6] - want[6]), 2 * math.pi)) < 1e-4
        assert torch.allclose(box[7:], want[7:], atol=1e-5)


def test_barrier_heading_is_coded_modulo_pi():
    """A barrier at yaw and one at yaw + pi (the same look, or the same box after a BEV flip) get
    the same rot target, so the head is not asked to average two opposite codes; decoding gives
    the yaw back modulo pi. Other classes keep sin/cos of the yaw itself."""
    from bevsimdet.data.classes import yaw_multiple
    from bevsimdet.models.heads import task_yaw_multiples

    assert [yaw_multiple(t) for t in TASKS] == [1, 1, 1, 2, 1, 1]
    rng, shape = (-51.2, -51.2, 51.2, 51.2), (64, 64)
    yaw = torch.tensor([1.5, 1.5 - math.pi, -2.9, 0.2])
    gt = torch.tensor([[x, 0.0, 0.5, 2.5, 0.5, 1.0, 0.0, 0.0, 0.0] for x in (-30.0, -10.0, 10.0, 30.0)])
    gt[:, 6] = yaw
    for name, period in (("barrier", math.pi), ("car", 2 * math.pi)):
        gl = torch.full((4,), CLASS_TO_LABEL[name])
        tg = CenterPointTargetAssigner(TASKS, rng, shape)([gt], [gl])
        t = next(i for i, task in enumerate(TASKS) if name in task)
        rot = tg.codes[t][0][:4, 6:8]
        assert torch.allclose(rot[0], rot[1], atol=1e-5) == (period == math.pi)
        dets = CenterPointPostProcess(TASKS, rng)(DetectorOutput(preds=_perfect_preds(tg, shape)), None)[0]
        order = dets.boxes[:, 0].argsort()
        for got, want in zip(dets.boxes[order, 6].tolist(), yaw.tolist()):
            assert abs(math.remainder(got - want, period)) < 1e-4
    plain = CenterPointTargetAssigner(TASKS, rng, shape, yaw_multiples=[1] * 6)
    assert plain.yaw_multiples == [1] * 6
    cfg = tiny_cfg("lidar")
    cfg.head.half_turn_yaw = False
    assert build.build_postprocess(cfg).yaw_multiples == [1] * 6
    assert build.build_criterion(cfg).assigner.yaw_multiples == [1] * 6
    with pytest.raises(ValueError, match="one positive integer per task"):
        task_yaw_multiples(TASKS, [1, 2])


def test_criterion_is_small_for_perfect_predictions():
    cfg = tiny_cfg("lidar")
    batch = random_batch(cfg, batch_size=2, num_boxes=6)
    crit = build.build_criterion(cfg)
    tg = crit.targets(batch)
    perfect = crit(DetectorOutput(preds=_perfect_preds(tg, (32, 32))), batch)
    assert float(perfect["det_bbox"]) < 1e-5
    random = crit(DetectorOutput(preds=build.build_head(cfg)(torch.randn(2, 16, 32, 32))), batch)
    assert float(perfect["det_heatmap"]) < float(random["det_heatmap"].detach())


def _random_bev_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 12
    wl = 0.5 + torch.rand(n, 2, generator=g) * 4
    yaw = (torch.rand(n, 1, generator=g) * 2 - 1) * math.pi
    return torch.cat([xy, wl, yaw], 1), torch.rand(n, generator=g)


def test_bev_iou_matches_shapely():
    a, _ = _random_bev_boxes(30, 0)
    b, _ = _random_bev_boxes(20, 1)
    b = torch.cat([b, a[:3]])  # identical boxes too
    fast, ref = bev_iou(a, b), bev_iou_reference(a, b)
    assert torch.allclose(fast, ref, atol=1e-4)
    assert torch.allclose(torch.diagonal(fast[:3, -3:]), torch.ones(3), atol=1e-5)


def test_nms_matches_reference():
    boxes, scores = _random_bev_boxes(60, 2)
    assert rotate_nms(boxes, scores, 0.2).tolist() == nms_reference(boxes, scores, "rotate", 0.2).tolist()
    assert circle_nms(boxes[:, :2], scores, 2.0).tolist() == nms_reference(boxes, scores, "circle", 2.0).tolist()
    assert rotate_nms(boxes, scores, 0.2, post_max=5).tolist() == nms_reference(boxes, scores, "rotate", 0.2, post_max=5).tolist()
    assert rotate_nms(boxes[:0], scores[:0], 0.2).numel() == 0


# ------------------------------------------------------------------------------------------------
# whole detectors: empty scenes, determinism, teacher


@pytest.mark.parametrize("kind", ["camera", "lidar", "fusion"])
def test_empty_scene_forward_backward_loss_finite(kind):
    cfg = tiny_cfg(kind)
    cfg.depth_supervision = True
    model = build.build_detector(cfg).train()
    batch = random_batch(cfg, batch_size=2, num_points=0, num_boxes=0)
    out = model(batch)
    terms = build.build_criterion(cfg)(out, batch)
    assert ("det_depth" in terms) is (kind != "lidar")
    loss = sum(terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    dets = build.build_postprocess(cfg)(out, batch)
    assert len(dets) == 2


def test_seeded_build_and_forward_are_reproducible():
    cfg = tiny_cfg("fusion")
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build.build_detector(cfg).eval()
        with torch.no_grad():
            outs.append(model(random_batch(cfg, batch_size=1, seed=5)))
    for a, b in zip(outs[0].preds, outs[1].preds):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(outs[0].feats["fused_bev"], outs[1].feats["fused_bev"])


def test_load_teacher_is_frozen(tmp_path):
    from bevsimdet.engine.checkpoint import save_checkpoint
    from bevsimdet.models.teacher import load_teacher

    cfg = tiny_cfg("fusion")
    torch.manual_seed(0)
    model = build.build_detector(cfg).eval()
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(path, model=model, step=0, config={})
    teacher = load_teacher(path, cfg)
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    batch = random_batch(cfg)
    with torch.no_grad():
        assert torch.equal(teacher(batch).preds[0]["heatmap"], model(batch).preds[0]["heatmap"])
    other = tiny_cfg("fusion")
    other.fuser_channels = 8
    from bevsimdet.engine.checkpoint import CheckpointError

    with pytest.raises(CheckpointError):
        load_teacher(path, other)


def test_demo_configs_build():
    for kind in ("camera", "lidar", "fusion"):
        cfg = load_config(CONFIGS / f"demo_{kind}.yaml")
        assert cfg.model.type == kind and tuple(cfg.model.camera.image_size) == tuple(cfg.data.image_size)
        model = build.build_detector(cfg.model)
        assert build.bev_grid(cfg.model)[0] == (64, 64)
        # CPU-sized: the pretrained EfficientNet-Lite0 backbone (3.4 M) is most of the camera models
        assert sum(p.numel() for p in model.parameters()) < 5_000_000
