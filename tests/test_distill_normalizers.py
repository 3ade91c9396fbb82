"""The distillation normalisers: each against a plain reference, the released ones against the
formulas they replace, and the properties that make the new ones scale-free."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bevsimdet.distill.losses import (
    BOX_GROUPS,
    box_kd_sum,
    box_normalizer,
    box_regression_kd,
    cls_normalizer,
    feature_mse,
    feature_normalizer,
    gt_centres,
    grouped_code_weights,
    qfl_sum,
    quality_focal_kd,
    teacher_peaks,
    teacher_positives,
)
from bevsimdet.distill.masks import object_mask


def _loop_masked_mse(s, t, m, normalizer):
    """Element by element: sum of (m (s - t))^2 over elements or C x sum m^2."""
    b, c, h, w = s.shape
    num = 0.0
    mass = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                mv = float(m[i, 0, y, x]) if m is not None else 1.0
                mass += mv * mv
                for k in range(c):
                    num += (mv * (float(s[i, k, y, x]) - float(t[i, k, y, x]))) ** 2
    return num / (b * c * h * w) if normalizer == "elements" else num / (c * mass)


# ---------------------------------------------------------------------------- feature terms


@pytest.mark.parametrize("normalizer", ["elements", "mask"])
def test_feature_normalisers_match_a_loop_reference(normalizer):
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    m = torch.rand(2, 1, 4, 5) * (torch.rand(2, 1, 4, 5) > 0.5)
    assert feature_mse(s, t, m, normalizer=normalizer).item() == pytest.approx(_loop_masked_mse(s, t, m, normalizer), rel=1e-5)
    if normalizer == "elements":
        assert feature_mse(s, t).item() == pytest.approx(_loop_masked_mse(s, t, None, "elements"), rel=1e-5)


def test_released_feature_term_is_the_released_mean():
    """``elements`` is exactly the released ``MSELoss(S*M, T*M)``, mean over all elements."""
    torch.manual_seed(1)
    s, t, m = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6), torch.rand(2, 1, 6, 6)
    torch.testing.assert_close(feature_mse(s, t, m, normalizer="elements"), F.mse_loss(s * m, t * m))
    torch.testing.assert_close(feature_mse(s, t, normalizer="elements"), F.mse_loss(s, t))


def test_mask_to_elements_conversion_is_the_mask_mass_per_cell():
    """docs/distill.md: released = mask-normalised x sum(M^2) / (B H W), so weight w_released on the
    released term equals weight w_released x sum(M^2)/(B H W) on the mask-normalised one."""
    torch.manual_seed(2)
    s, t, m = torch.randn(3, 5, 8, 8), torch.randn(3, 5, 8, 8), torch.rand(3, 1, 8, 8)
    factor = m.square().sum() / (3 * 8 * 8)
    torch.testing.assert_close(feature_mse(s, t, m, normalizer="elements"), feature_mse(s, t, m, normalizer="mask") * factor)


def test_mask_normaliser_is_scale_free():
    """A constant difference d under any mask gives d^2, whatever the grid and the object count;
    the released mean instead shrinks with the share of the grid the objects cover."""
    rng = (-32.0, -32.0, 32.0, 32.0)
    boxes = [torch.tensor([[0.0, 0.0, 0.0, 2.0, 4.5, 1.5, 0.0, 0.0, 0.0], [10.0, 5.0, 0.0, 2.0, 4.5, 1.5, 0.0, 0.0, 0.0]])]
    labels = [torch.tensor([0, 0])]
    values, released = [], []
    for n in (16, 64):
        m = object_mask(boxes, labels, rng, (n, n))
        s = torch.zeros(1, 4, n, n)
        t = torch.full((1, 4, n, n), 0.5)
        values.append(float(feature_mse(s, t, m, normalizer="mask")))
        released.append(float(feature_mse(s, t, m, normalizer="elements")))
    assert values == pytest.approx([0.25, 0.25])
    assert released[0] > 4 * released[1]  # the same objects cover a smaller share of a finer grid


def test_mask_normaliser_ignores_the_background():
    torch.manual_seed(3)
    s, t = torch.randn(1, 2, 6, 6), torch.randn(1, 2, 6, 6)
    m = torch.zeros(1, 1, 6, 6)
    m[..., 1:3, 2:4] = torch.tensor([[1.0, 0.5], [0.5, 0.25]])
    s2 = s.clone()
    s2[..., 4:, :] += 10.0  # change only cells outside the mask
    assert feature_mse(s2, t, m, normalizer="mask") == feature_mse(s, t, m, normalizer="mask")
    assert feature_mse(s2, t, normalizer="elements") != feature_mse(s, t, normalizer="elements")


def test_mask_normaliser_without_objects_is_zero_not_nan():
    s, t = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    v = feature_mse(s, t, torch.zeros(1, 1, 4, 4), normalizer="mask")
    assert v.item() == 0.0
    with pytest.raises(ValueError, match="needs the object mask"):
        feature_normalizer(s.shape, None, "mask")


# ---------------------------------------------------------------------------- heatmap term


def _loop_peaks(p, thr):
    b, k, h, w = p.shape
    n = 0
    for i in range(b):
        for c in range(k):
            for y in range(h):
                for x in range(w):
                    v = float(p[i, c, y, x])
                    if v <= thr:
                        continue
                    nb = [float(p[i, c, yy, xx]) for yy in range(max(0, y - 1), min(h, y + 2)) for xx in range(max(0, x - 1), min(w, x + 2))]
                    n += v >= max(nb)
    return n


def test_heatmap_counts_match_loop_references():
    torch.manual_seed(4)
    p = torch.rand(2, 3, 7, 9) ** 3
    assert int(teacher_positives(p, 0.1)) == sum(float(v) > 0.1 for v in p.flatten())
    assert int(teacher_peaks(p, 0.1)) == _loop_peaks(p, 0.1)
    gt = torch.rand(2, 3, 7, 9) * 0.9
    gt[0, 1, 2, 3] = gt[1, 0, 6, 8] = gt[1, 2, 0, 0] = 1.0
    assert int(gt_centres(gt)) == 3


def test_released_heatmap_term_is_qfl_over_teacher_positives():
    torch.manual_seed(5)
    s, p = torch.randn(2, 2, 5, 5) * 2, torch.rand(2, 2, 5, 5)
    bce = F.binary_cross_entropy_with_logits(s, p, reduction="none")
    ref = (bce * (s.sigmoid() - p).abs().pow(2)).sum() / (p > 0.1).sum()
    torch.testing.assert_close(quality_focal_kd(s, p), ref)
    torch.testing.assert_close(quality_focal_kd(s, p, normalizer="teacher_pos"), ref)


@pytest.mark.parametrize("normalizer", ["teacher_pos", "gt_centres", "teacher_peaks"])
def test_heatmap_normalisers_divide_the_same_sum(normalizer):
    torch.manual_seed(6)
    s, p = torch.randn(1, 2, 6, 6), torch.rand(1, 2, 6, 6)
    gt = torch.zeros(1, 2, 6, 6)
    gt[0, 0, 1, 1] = gt[0, 1, 4, 4] = 1.0
    count = {"teacher_pos": teacher_positives(p), "gt_centres": torch.tensor(2), "teacher_peaks": teacher_peaks(p)}[normalizer]
    got = quality_focal_kd(s, p, normalizer=normalizer, gt_heatmap=gt)
    torch.testing.assert_close(got, qfl_sum(s, p) / count.float())
    assert quality_focal_kd(s, s.sigmoid(), normalizer=normalizer, gt_heatmap=gt).item() == pytest.approx(0.0, abs=1e-12)


def test_heatmap_normalisers_are_at_least_one():
    p = torch.zeros(1, 1, 4, 4)
    for mode in ("teacher_pos", "gt_centres", "teacher_peaks"):
        assert cls_normalizer(p, mode, gt_heatmap=torch.zeros(1, 1, 4, 4)).item() == 1.0
    with pytest.raises(ValueError, match="GT heatmap"):
        cls_normalizer(p, "gt_centres")


# ---------------------------------------------------------------------------- box term


def test_box_normalisers_match_references():
    torch.manual_seed(7)
    s, t = torch.randn(2, 5, 10), torch.randn(2, 5, 10)
    slots = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    w = [1.0] * 8 + [0.2, 0.2]
    per = F.smooth_l1_loss(s, t, reduction="none", beta=1 / 9) * torch.tensor(w)
    total = sum(float(per[b, k].sum()) for b in range(2) for k in range(5) if slots[b, k] > 0)
    assert box_kd_sum(s, t, slots, code_weights=w).item() == pytest.approx(total, rel=1e-5)
    assert box_regression_kd(s, t, slots, code_weights=w).item() == pytest.approx(total / 4, rel=1e-5)
    assert box_regression_kd(s, t, slots, code_weights=w, normalizer="max_objs", max_objs=500).item() == pytest.approx(total / 500, rel=1e-5)
    assert box_normalizer(torch.zeros(1, 3), "objects").item() == 1.0


def test_box_groups_switch_components_off():
    assert grouped_code_weights([1.0] * 8 + [0.2, 0.2], {"rot": 0.0, "vel": 0.5}) == [1.0] * 6 + [0.0, 0.0, 0.1, 0.1]
    assert sorted(i for idx in BOX_GROUPS.values() for i in idx) == list(range(10))
    torch.manual_seed(8)
    s, t = torch.randn(1, 3, 10), torch.randn(1, 3, 10)
    slots = torch.ones(1, 3)
    w = grouped_code_weights([1.0] * 10, {"rot": 0.0, "vel": 0.0})
    s2 = s.clone()
    s2[..., 6:] += 5.0  # heading and velocity wildly off: no effect once switched off
    assert box_kd_sum(s2, t, slots, code_weights=w) == box_kd_sum(s, t, slots, code_weights=w)
    with pytest.raises(ValueError, match="unknown box groups"):
        grouped_code_weights([1.0] * 10, {"heading": 0.0})
