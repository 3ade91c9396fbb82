"""Distillation loss terms and the object-aware mask, as pure tensor functions."""

from __future__ import annotations

import math

import pytest
import torch

from bevsimdet.distill.losses import (
    box_regression_kd,
    feature_mse,
    gather_cells,
    quality_focal_kd,
    regression_code,
)
from bevsimdet.distill.masks import gaussian_radius_t, object_mask, object_mask_reference
from bevsimdet.models.depth import depth_bce

RANGE = (-8.0, -6.0, 8.0, 6.0)  # 16 m x 12 m
SHAPE = (12, 16)  # 1 m cells


def _box(x, y, w=1.8, l=4.5):
    return [x, y, 0.8, w, l, 1.6, 0.3, 0.0, 0.0]


# ---------------------------------------------------------------------------- zero when equal


def test_all_terms_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    f = torch.randn(2, 6, 5, 7)
    mask = torch.rand(2, 1, 5, 7)
    assert feature_mse(f, f.clone()) == 0
    assert feature_mse(f, f.clone(), mask) == 0
    logits = torch.randn(2, 3, 5, 7) * 3
    assert quality_focal_kd(logits, logits.sigmoid()).item() == pytest.approx(0.0, abs=1e-12)
    code = torch.randn(2, 4, 10)
    assert box_regression_kd(code, code.clone(), torch.ones(2, 4), code_weights=[1.0] * 10) == 0


def test_terms_positive_when_they_differ():
    torch.manual_seed(1)
    a, b = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    assert feature_mse(a, b) > 0
    assert quality_focal_kd(a, b.sigmoid()) > 0
    assert box_regression_kd(a.view(1, 4, 9)[..., :2], b.view(1, 4, 9)[..., :2], torch.ones(1, 4), code_weights=[1, 1]) > 0


# ---------------------------------------------------------------------------- values


def test_feature_mse_masked_value_and_normaliser():
    s = torch.zeros(1, 2, 2, 2)
    t = torch.ones(1, 2, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.5, 0.0]]]])
    # ((1*1)^2 + (0.5)^2) per channel, 2 channels, over all 8 elements
    assert feature_mse(s, t, mask).item() == pytest.approx(2 * (1 + 0.25) / 8)
    with pytest.raises(ValueError, match="shapes differ"):
        feature_mse(s, torch.ones(1, 3, 2, 2))


def test_quality_focal_kd_matches_hand_value():
    s = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    t = torch.tensor([0.5, 0.05]).view(1, 1, 1, 2)
    expected = 0.0  # first cell: sigmoid(0) == 0.5 == target -> 0
    p = 1 / (1 + math.exp(-2.0))
    bce = -(0.05 * math.log(p) + 0.95 * math.log(1 - p))
    expected += bce * (p - 0.05) ** 2
    # one teacher positive (0.5 > 0.1)
    assert quality_focal_kd(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_box_regression_kd_ignores_padded_slots():
    s = torch.zeros(1, 3, 2)
    t = torch.zeros(1, 3, 2)
    t[0, 2] = 100.0  # a padded slot with garbage
    t[0, 0, 0] = 1.0  # a real slot, |d| = 1 > beta -> |d| - beta/2
    slots = torch.tensor([[1.0, 1.0, 0.0]])
    beta = 1 / 9
    assert box_regression_kd(s, t, slots, code_weights=[1.0, 0.2], beta=beta).item() == pytest.approx((1 - beta / 2) / 2)
    with pytest.raises(ValueError, match="code weights"):
        box_regression_kd(s, t, slots, code_weights=[1.0])


def test_gather_cells_and_regression_code():
    maps = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    idx = torch.tensor([[0, 5], [7, 1]])  # flat iy * W + ix
    g = gather_cells(maps, idx)
    assert g.shape == (2, 2, 3)
    assert g[0, 1].tolist() == maps[0, :, 1, 1].tolist()
    assert g[1, 0].tolist() == maps[1, :, 1, 3].tolist()
    pred = {k: torch.full((1, c, 2, 2), float(i)) for i, (k, c) in enumerate([("heatmap", 2), ("reg", 2), ("height", 1), ("dim", 3), ("rot", 2), ("vel", 2)])}
    code = regression_code(pred)
    assert code.shape == (1, 10, 2, 2) and code[0, :, 0, 0].tolist() == [1, 1, 2, 3, 3, 3, 4, 4, 5, 5]


def test_depth_bce():
    probs = torch.full((1, 4, 1, 2), 0.25)
    target = torch.tensor([[[2, -1]]])
    expected = -(math.log(0.25) + 3 * math.log(0.75))
    assert depth_bce(probs, target).item() == pytest.approx(expected, rel=1e-5)
    assert depth_bce(probs, torch.full((1, 1, 2), -1)).item() == 0.0
    onehot = torch.zeros(1, 4, 1, 2)
    onehot[0, 2] = 1.0
    assert depth_bce(onehot, target).item() < 1e-4
    # weighted: a weighted mean over the cells with a target (the weight of others is ignored)
    mixed = probs.clone()
    mixed[0, :, 0, 1] = onehot[0, :, 0, 0]
    target2 = torch.tensor([[[2, 2]]])
    per_cell = [depth_bce(mixed[..., :1], target2[..., :1]).item(), depth_bce(mixed[..., 1:], target2[..., 1:]).item()]
    w = torch.tensor([[[1.0, 3.0]]])
    assert depth_bce(mixed, target2, w).item() == pytest.approx((per_cell[0] + 3 * per_cell[1]) / 4, rel=1e-5)
    assert depth_bce(probs, target, torch.tensor([[[2.0, 100.0]]])).item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- mask


def test_gaussian_radius_matches_cornernet_formula():
    # a 4.5 m x 1.8 m car on 0.6 m cells at min_overlap 0.1 (CenterPoint nuScenes)
    r = gaussian_radius_t(torch.tensor(4.5 / 0.6), torch.tensor(1.8 / 0.6), 0.1)
    h, w, mo = 4.5 / 0.6, 1.8 / 0.6, 0.1
    b3 = -2 * mo * (h + w)
    r3 = (b3 + math.sqrt(b3**2 - 16 * mo * (mo - 1) * w * h)) / 2
    assert r.item() == pytest.approx(min(r3, (h + w + math.sqrt((h + w) ** 2 - 4 * w * h * (1 - mo) / (1 + mo))) / 2), rel=1e-5)


def test_mask_peak_at_centre_cell_and_gaussian_falloff():
    boxes = torch.tensor([_box(0.5, 0.5)])  # centre cell ix = 8, iy = 6
    m = object_mask([boxes], [torch.tensor([0])], RANGE, SHAPE)
    assert m.shape == (1, 1, 12, 16)
    assert m[0, 0, 6, 8] == 1.0 and m.max() == 1.0
    assert m[0, 0, 6, 9] < 1.0 and m[0, 0, 6, 9] == m[0, 0, 6, 7] == m[0, 0, 7, 8]
    # radius 2 (the minimum): nothing 3 cells away
    assert m[0, 0, 6, 11] == 0.0 and m[0, 0, 6, 10] > 0.0


def test_mask_boxes_near_and_outside_edges():
    boxes = torch.tensor([
        _box(-7.9, -5.9),  # corner cell (0, 0): window clipped
        _box(7.99, 0.2),  # last column
        _box(8.5, 0.0),  # centre outside (+x): draws nothing although it overlaps the grid
        _box(0.0, -30.0),  # far outside
    ])
    labels = torch.tensor([0, 1, 2, 3])
    m = object_mask([boxes], [labels], RANGE, SHAPE)
    assert m[0, 0, 0, 0] == 1.0 and m[0, 0, 6, 15] == 1.0
    only_inside = object_mask([boxes[:2]], [labels[:2]], RANGE, SHAPE)
    torch.testing.assert_close(m, only_inside)
    ref = object_mask_reference([boxes], [labels], RANGE, SHAPE)
    torch.testing.assert_close(m, ref)


def test_mask_same_class_max_other_classes_summed_and_clamped():
    a, b = _box(-2.0, 0.5), _box(0.0, 0.5)  # two cells apart: Gaussians overlap
    same = object_mask([torch.tensor([a, b])], [torch.tensor([0, 0])], RANGE, SHAPE)
    ga = object_mask([torch.tensor([a])], [torch.tensor([0])], RANGE, SHAPE)
    gb = object_mask([torch.tensor([b])], [torch.tensor([0])], RANGE, SHAPE)
    torch.testing.assert_close(same, torch.maximum(ga, gb))
    diff = object_mask([torch.tensor([a, b])], [torch.tensor([0, 8])], RANGE, SHAPE)
    torch.testing.assert_close(diff, (ga + gb).clamp(max=1))
    assert diff.max() <= 1.0 and (diff > same).any()


def test_mask_empty_scene_and_random_equivalence():
    empty = object_mask([torch.zeros(0, 9), torch.zeros(0, 9)], [torch.zeros(0, dtype=torch.long)] * 2, RANGE, SHAPE)
    assert empty.shape == (2, 1, 12, 16) and empty.sum() == 0
    g = torch.Generator().manual_seed(3)
    n = 12
    boxes = torch.zeros(n, 9)
    boxes[:, 0] = torch.rand(n, generator=g) * 22 - 11  # some outside the x range
    boxes[:, 1] = torch.rand(n, generator=g) * 16 - 8
    boxes[:, 3:6] = torch.rand(n, 3, generator=g) * 10 + 0.3
    labels = torch.randint(0, 10, (n,), generator=g)
    kw = dict(min_overlap=0.1, min_radius=1)
    torch.testing.assert_close(
        object_mask([boxes], [labels], RANGE, SHAPE, **kw), object_mask_reference([boxes], [labels], RANGE, SHAPE, **kw)
    )


# ---------------------------------------------------------------------------- depth targets


def _one_camera_batch(points):
    from bevsimdet.data.batch import Batch

    cam2ego = torch.eye(4)
    cam2ego[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # cam z -> ego x
    k = torch.tensor([[8.0, 0.0, 8.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]])  # 16 x 8 image
    return Batch(
        images=torch.zeros(1, 1, 3, 8, 16), intrinsics=k[None, None], cam2ego=cam2ego[None, None],
        img_aug=torch.eye(3)[None, None], bev_aug=torch.eye(4)[None], points=[torch.tensor(points)],
    )


def test_lidar_depth_bins_nearest_return_per_cell():
    from bevsimdet.models.depth import lidar_depth_bins

    pts = [
        [10.0, 0.0, 0.0, 0.0, 0.0],  # image centre (8, 4) -> feature cell (1, 2) of 2 x 4
        [20.0, 0.0, 0.0, 0.0, 0.0],  # same cell, farther: the nearer one wins
        [5.0, 0.0, 0.0, 0.0, 0.1],  # a past sweep: ignored
        [-5.0, 0.0, 0.0, 0.0, 0.0],  # behind the camera
        [3.0, -3.5, 0.0, 0.0, 0.0],  # u = 8 + 8 * 3.5 / 3 > 16: outside the image
    ]
    bins = lidar_depth_bins(_one_camera_batch(pts), (2, 4), (1.0, 60.0, 0.5))
    expected = torch.full((1, 2, 4), -1)
    expected[0, 1, 2] = 18  # (10 - 1) / 0.5
    assert torch.equal(bins, expected)
