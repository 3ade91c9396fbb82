"""What a LiDAR teacher needs to learn heading and velocity, checked without training.

* Box targets and decoding: GT encoded into perfect head outputs, through post-processing, the
  undoing of the BEV augmentation (rotation, scale, flips) and the conversion to global boxes,
  scores zero orientation and velocity error.
* Sweeps: the time-lag channel (0 at the keyframe, the sweep's age after it), the sweep stride,
  and moving objects smearing backwards along their velocity in motion-compensated sweeps.
* The pillar net's input standardisation: the scale of a point feature does not matter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bevsimdet.config import load_config
from bevsimdet.data.dataset import NuScenesDataset, build_dataset
from bevsimdet.data.infos import load_infos
from bevsimdet.data.loader import collate
from bevsimdet.errors import DataError
from bevsimdet.geometry import points_in_boxes
from bevsimdet.models.heads import HEADS, CenterPointTargets
from bevsimdet.models.lidar import PillarFeatureNet, time_slice, voxelize
from bevsimdet.models.output import DetectorOutput


def perfect_predictions(tg: CenterPointTargets, b: int = 0) -> list[dict[str, torch.Tensor]]:
    """Head outputs of sample ``b`` that decode to exactly the targets: heatmap logits +10 at GT
    centres and -10 elsewhere, the target box code at each centre cell."""
    preds = []
    for heat, idx, mask, codes in zip(tg.heatmaps, tg.indices, tg.masks, tg.codes):
        heat = heat[b : b + 1]
        _, _, ny, nx = heat.shape
        code = torch.zeros(1, sum(HEADS.values()), ny * nx)
        m = mask[b].bool()
        code[0, :, idx[b][m]] = codes[b][m].t()
        code = code.view(1, -1, ny, nx)
        pred, k = {"heatmap": torch.where(heat.eq(1), 10.0, -10.0)}, 0
        for name, width in HEADS.items():
            pred[name] = code[:, k : k + width]
            k += width
        preds.append(pred)
    return preds


def test_perfect_head_outputs_score_zero_orientation_and_velocity_error(tiny_world, tiny_infos):
    """Augmented training samples -> targets -> perfect outputs -> post-process -> global results:
    every matched box has the GT heading and velocity (mAOE = mAVE = 0), and most GT is found."""
    from bevsimdet.eval.gt import load_gt
    from bevsimdet.eval.metrics import evaluate
    from bevsimdet.eval.results import detections_to_results
    from bevsimdet.models.build import build_criterion, build_postprocess

    cfg = load_config("configs/demo_lidar.yaml", [f"data.dataroot={tiny_world}", f"data.info_dir={tiny_infos['mini_train'].parent}"])
    ds = build_dataset(cfg.data, "mini_train", train=True)
    criterion, post = build_criterion(cfg.model), build_postprocess(cfg.model)
    results, flips = {}, set()
    for i in range(len(ds)):
        batch = collate([ds.load(i, np.random.default_rng([3, i]))])
        aug = batch.bev_aug[0].numpy()
        flips.add((bool(aug[0, 0] * aug[1, 1] < 0), bool(np.linalg.det(aug[:3, :3]) < 0)))
        dets = post(DetectorOutput(perfect_predictions(criterion.targets(batch))), batch)
        results.update(detections_to_results(dets, batch.meta, bev_augs=batch.bev_aug))
    assert len(flips) > 1  # flipped and unflipped samples were both checked
    metrics = evaluate(results, load_gt(tiny_world, "v1.0-mini", "mini_train")).to_dict()
    tp = metrics["tp_errors"]
    assert tp["orient_err"] < 1e-3 and tp["vel_err"] < 1e-3 and tp["trans_err"] < 1e-3
    # below 1: two boxes in one 1.6 m cell, NMS between close neighbours, boxes without points
    assert metrics["mean_ap"] > 0.6


@pytest.fixture(scope="module")
def train_infos(tiny_infos):
    return load_infos(tiny_infos["mini_train"])


def test_time_lag_channel_and_sweep_stride(train_infos, tiny_world):
    s = max(train_infos.samples, key=lambda r: len(r.sweeps))
    assert len(s.sweeps) == 9
    lags = [w.time_lag for w in s.sweeps]
    assert np.allclose(lags, 0.05 * np.arange(1, 10), atol=1e-6)  # newest first, 20 Hz
    for sweeps, stride, want in ((3, 1, [0.05, 0.10, 0.15]), (3, 3, [0.15, 0.30, 0.45]), (4, 2, [0.10, 0.20, 0.30, 0.40])):
        ds = NuScenesDataset(train_infos, tiny_world, image_size=(64, 160), sweeps=sweeps, sweep_stride=stride, point_cloud_range=None)
        assert [w.time_lag for w in ds.sweeps_of(s)] == pytest.approx(want)
        pts = ds.load_lidar(s)
        assert np.unique(pts[:, 4]) == pytest.approx([0.0, *want])  # 0 at the keyframe, then the sweeps' ages
        assert len(ds.files_of(s)) == 6 + 1 + sweeps
    with pytest.raises(DataError, match="stride 5 need 15 stored sweeps"):
        NuScenesDataset(train_infos, tiny_world, image_size=(64, 160), sweeps=3, sweep_stride=5)


def test_moving_objects_smear_backwards_along_their_velocity(train_infos, tiny_world):
    """In the keyframe ego frame (sweeps motion-compensated), an older sweep's returns of a moving
    object lie where the object was: its box moved back by velocity x lag, not at its keyframe box."""
    ds = NuScenesDataset(train_infos, tiny_world, image_size=(64, 160), sweeps=3, sweep_stride=3, point_cloud_range=None)
    shifted = unshifted = movers = 0
    for s in train_infos.samples:
        pts = ds.load_lidar(s)
        old = pts[np.isclose(pts[:, 4], 0.45) & (pts[:, 2] > 0.3)]  # above the road (ego z = 0 on it)
        boxes = s.gt.boxes[np.hypot(s.gt.boxes[:, 7], s.gt.boxes[:, 8]) > 4.0]  # moving faster than 4 m/s: >= 1.8 m
        if not len(boxes) or not len(old):
            continue
        back = boxes.copy()
        back[:, :2] -= 0.45 * boxes[:, 7:9]
        shifted += int(points_in_boxes(old[:, :3], back).sum())
        unshifted += int(points_in_boxes(old[:, :3], boxes).sum())
        movers += len(boxes)
    assert movers > 10 and shifted > 200
    assert unshifted < 0.6 * shifted  # only the overlap of the two boxes holds both


def test_pillar_input_norm_makes_the_feature_scale_irrelevant():
    """With ``input_norm`` a point feature's unit (intensity 0..1 or 0..255, lag in s or ms) does
    not change the pillar features; without it, it does."""
    torch.manual_seed(0)
    pts = torch.cat([torch.rand(400, 3) * torch.tensor([16.0, 16.0, 3.0]) - torch.tensor([8.0, 8.0, 1.0]),
                     torch.rand(400, 1), torch.randint(0, 4, (400, 1)) * 0.05], 1)
    rescaled = pts * torch.tensor([1.0, 1.0, 1.0, 255.0, 1000.0])
    pc_range, voxel = (-8.0, -8.0, -5.0, 8.0, 8.0, 3.0), (1.0, 1.0, 8.0)
    for norm in (True, False):
        torch.manual_seed(1)
        pfn = PillarFeatureNet(5, 8, pc_range, voxel, input_norm=norm).train()
        flat, _, vox, coords = voxelize([pts], pc_range, voxel)
        a = pfn(flat, vox, coords)
        flat2, _, vox2, coords2 = voxelize([rescaled], pc_range, voxel)
        b = pfn(flat2, vox2, coords2)
        assert torch.equal(coords, coords2)
        diff = (a - b).abs().max().item()
        # with the norm only BatchNorm's eps (1e-5 against a variance of a few 1e-3) tells them apart
        assert diff < 1e-2 if norm else diff > 1.0


def test_time_sliced_voxelize_matches_reference():
    from bevsimdet.models.lidar import voxelize_reference

    gen = torch.Generator().manual_seed(2)
    pts = [torch.cat([torch.rand(300, 3, generator=gen) * 20 - 10, torch.rand(300, 1, generator=gen),
                      torch.randint(0, 10, (300, 1), generator=gen) * 0.05], 1) for _ in range(2)]
    pc_range, voxel = (-8.0, -8.0, -4.0, 8.0, 8.0, 4.0), (2.0, 2.0, 4.0)
    flat, bidx, vox, coords = voxelize(pts, pc_range, voxel, time_bins=3, time_bin_width=0.15)
    ref = voxelize_reference(pts, pc_range, voxel, time_bins=3, time_bin_width=0.15)
    assert sorted(ref) == [tuple(c) for c in coords.tolist()]
    kept = [i for p in pts for i in range(len(p)) if all(pc_range[k] <= p[i, k] < pc_range[k + 3] for k in range(3))]
    got: dict = {}
    for j, v in enumerate(vox.tolist()):
        got.setdefault(tuple(coords[v].tolist()), []).append(kept[j])
    assert got == ref
    assert set(coords[:, 1].tolist()) == {0, 1, 2, 3, 4, 5}  # 2 z slices x 3 time slices
    # lags 0, 0.05 -> slice 0 (keyframe); 0.1..0.2 -> 1; the rest -> 2 (the last takes all older points)
    assert time_slice(torch.tensor([0.0, 0.05, 0.1, 0.2, 0.25, 0.45]), 3, 0.15).tolist() == [0, 0, 1, 1, 2, 2]


def test_time_bins_give_each_slice_its_own_channels():
    """A point seen at the keyframe and the same point 0.3 s earlier land in different channel
    groups of the dense grid; with one time bin they share them."""
    from bevsimdet.models.lidar import PillarLidarEncoder

    torch.manual_seed(0)
    enc = PillarLidarEncoder((-8.0, -8.0, -5.0, 8.0, 8.0, 3.0), (1.0, 1.0, 8.0), feat_channels=4, out_channels=4, downsample=1, num_blocks=0, time_bins=3, time_bin_width=0.15).eval()
    assert enc.backbone[0].in_channels == 12
    seen = {}
    enc.backbone = torch.nn.Identity()  # look at the scattered grid itself
    for lag in (0.0, 0.3):
        pts = torch.tensor([[1.5, 2.5, 0.5, 0.4, lag]] * 3)
        grid = enc([pts])[0]  # 12 x 16 x 16
        seen[lag] = {int(c) // 4 for c in torch.nonzero(grid[:, 10, 9].abs() > 0).flatten()}
    assert seen[0.0] <= {0} and seen[0.3] <= {2} and seen[0.0] and seen[0.3]


def test_velocity_huber_quiets_static_objects_and_keeps_movers_pull():
    from bevsimdet.models.heads import velocity_huber

    e = torch.tensor([-9.0, -0.05, 0.0, 0.05, 9.0], requires_grad=True)
    velocity_huber(e, 1.0).sum().backward()
    # a parked object predicted at +-0.05 m/s: a 0.05 gradient instead of L1's full +-1; a mover 9 m/s off: 1
    assert e.grad.tolist() == pytest.approx([-1.0, -0.05, 0.0, 0.05, 1.0])
    assert velocity_huber(torch.tensor([0.5, 3.0]), 1.0).tolist() == pytest.approx([0.125, 2.5])  # continuous at beta
    assert torch.equal(velocity_huber(e.detach(), 0.0), e.detach().abs())


def test_criterion_velocity_beta_changes_only_the_velocity_terms():
    from bevsimdet.data.batch import Batch
    from bevsimdet.models.heads import CenterPointCriterion, CenterPointTargetAssigner

    torch.manual_seed(0)
    tasks = [("car",), ("pedestrian",)]
    assigner = CenterPointTargetAssigner(tasks, (-8.0, -8.0, 8.0, 8.0), (8, 8), min_radius=1)
    boxes = torch.tensor([[1.0, 2.0, 0.8, 1.9, 4.5, 1.6, 0.3, 8.0, -1.0], [-3.0, 0.5, 0.9, 0.7, 0.6, 1.7, 1.0, 0.0, 0.0]])
    batch = Batch(images=torch.zeros(1, 1, 3, 4, 4), intrinsics=torch.eye(3)[None, None], cam2ego=torch.eye(4)[None, None],
                  img_aug=torch.eye(3)[None, None], bev_aug=torch.eye(4)[None], gt_boxes=[boxes], gt_labels=[torch.tensor([0, 8])])
    preds = [{"heatmap": torch.randn(1, 1, 8, 8), **{k: torch.randn(1, c, 8, 8) for k, c in HEADS.items()}} for _ in tasks]
    out = DetectorOutput(preds)
    weights = [1.0] * 8 + [0.0, 0.0]
    plain = CenterPointCriterion(assigner, weights)(out, batch)
    huber = CenterPointCriterion(assigner, weights, velocity_beta=1.0)(out, batch)
    assert torch.allclose(plain["det_bbox"], huber["det_bbox"]) and torch.allclose(plain["det_heatmap"], huber["det_heatmap"])
    weights = [0.0] * 8 + [1.0, 1.0]
    assert not torch.allclose(CenterPointCriterion(assigner, weights)(out, batch)["det_bbox"],
                              CenterPointCriterion(assigner, weights, velocity_beta=1.0)(out, batch)["det_bbox"])


def test_velocity_scale_multiplies_only_the_velocity_branch():
    from bevsimdet.models.heads import CenterHead

    x = torch.randn(2, 8, 6, 6)
    outs = []
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        outs.append(CenterHead(8, [("car",), ("pedestrian",)], 8, 8, velocity_scale=scale).eval()(x))
    for a, b in zip(*outs):
        assert torch.allclose(b["vel"], 10.0 * a["vel"])
        assert all(torch.equal(a[k], b[k]) for k in a if k != "vel")


def _side_profile(shape: str, bins: int = 20) -> np.ndarray:
    """bins x bins occupancy of a shape's parts in the (length, height) plane, front at the end."""
    from bevsimdet.data.sim.shapes import parts_array

    x = (np.arange(bins) + 0.5) / bins - 0.5
    z = (np.arange(bins) + 0.5) / bins
    occ = np.zeros((bins, bins), dtype=bool)
    for x0, x1, _, _, z0, z1, _ in parts_array(shape):
        occ |= ((x >= x0) & (x < x1))[:, None] & ((z >= z0) & (z < z1))[None, :]
    return occ


@pytest.mark.parametrize("shape", ["car", "car_hatchback", "car_van", "truck", "bus", "trailer", "construction_vehicle", "motorcycle", "bicycle"])
def test_vehicle_shapes_have_a_front_and_a_back(shape):
    """Seen from the side, no vehicle looks the same mirrored front to back, by at least a tenth
    of its side area (half a metre or more of a car's length)."""
    occ = _side_profile(shape)
    assert (occ != occ[::-1]).mean() >= 0.1


def test_car_body_styles_do_not_move_anything_else():
    """Body styles are drawn from their own stream: with one style only, the scene has the same
    actors at the same places, sizes, colours and motions; all three styles occur."""
    from bevsimdet.data.sim import scene as scene_mod

    full = scene_mod.build_scene(3, 1, 9.5, 300.0)
    orig = dict(scene_mod.CAR_SHAPES)
    try:
        scene_mod.CAR_SHAPES.clear()
        scene_mod.CAR_SHAPES["car"] = 1.0
        plain = scene_mod.build_scene(3, 1, 9.5, 300.0)
    finally:
        scene_mod.CAR_SHAPES.clear()
        scene_mod.CAR_SHAPES.update(orig)
    assert len(full.actors) == len(plain.actors)
    for a, b in zip(full.actors, plain.actors):
        assert a.cls == b.cls and np.array_equal(a.xy0, b.xy0) and np.array_equal(a.size, b.size)
        assert np.array_equal(a.colors, b.colors) and np.array_equal(a.vel, b.vel) and a.yaw == b.yaw
    assert {a.shape for a in full.actors if a.cls == "car"} == set(orig)
