"""Heading/velocity breakdown by motion state (``bevsimdet evaluate --breakdown``; the CLI test is in
test_eval_e2e.py, beside its tables)."""

from __future__ import annotations

import numpy as np
import pytest

from bevsimdet.eval.boxes import DETECTION_NAMES, BoxSet
from bevsimdet.eval.breakdown import motion_breakdown, nearest_pairs, nearest_pairs_reference

C = {n: i for i, n in enumerate(DETECTION_NAMES)}


def _yaw_q(yaw):
    yaw = np.asarray(yaw, dtype=np.float64)
    return np.stack([np.cos(yaw / 2), 0 * yaw, 0 * yaw, np.sin(yaw / 2)], 1)


def _boxes(sample, label, xy, yaw, vel, score):
    n = len(sample)
    return BoxSet.from_columns(sample=sample, label=label, translation=np.c_[np.asarray(xy, float), np.zeros(n)],
                               size=np.ones((n, 3)), rotation=_yaw_q(yaw), velocity=vel, attribute=[-1] * n,
                               score=score, num_pts=[5] * n)


def test_nearest_pairs_equal_the_loop():
    rng = np.random.default_rng(0)
    g, p = 60, 90
    gt = _boxes(rng.integers(0, 4, g), rng.integers(0, 3, g), rng.uniform(0, 6, (g, 2)), rng.uniform(-3, 3, g),
                np.zeros((g, 2)), -np.ones(g))
    pr = _boxes(rng.integers(0, 4, p), rng.integers(0, 3, p), rng.uniform(0, 6, (p, 2)), rng.uniform(-3, 3, p),
                np.zeros((p, 2)), rng.uniform(0, 1, p))
    fast, ref = nearest_pairs(gt, pr, 2.0), nearest_pairs_reference(gt, pr, 2.0)
    assert len(ref[0]) > 10 and len(ref[0]) < g  # some GT boxes are left unpaired
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_array_equal(fast[1], ref[1])


def test_flips_still_velocity_and_periods():
    # sample 0: a moving car (10 m/s along +x) predicted flipped and standing still; a parked car
    # predicted right; a barrier predicted turned by pi (the same barrier); a cone.
    # sample 1: a parked car whose only prediction scores below min_score, and a truck predicted as a car.
    gt = _boxes([0, 0, 0, 0, 1, 1], [C["car"], C["car"], C["barrier"], C["traffic_cone"], C["car"], C["truck"]],
                [[0, 0], [10, 0], [20, 0], [30, 0], [0, 0], [10, 0]], [0.0, 1.0, 0.3, 0.0, 0.0, 0.0],
                [[10, 0], [0, 0], [np.nan, np.nan], [np.nan, np.nan], [0, 0], [0, 0]], -np.ones(6))
    pr = _boxes([0, 0, 0, 0, 1, 1], [C["car"], C["car"], C["barrier"], C["traffic_cone"], C["car"], C["car"]],
                [[0.5, 0], [10, 0.3], [20, 0], [30, 0], [0, 0], [10, 0]], [np.pi, 1.1, 0.3 + np.pi, 2.0, 0.0, 0.0],
                np.zeros((6, 2)), [0.9, 0.8, 0.7, 0.6, 0.1, 0.9])
    rows = {(r["class"], r["state"]): r for r in motion_breakdown(gt, pr)}
    mv, st = rows[("car", "moving")], rows[("car", "still")]
    assert (mv["gt"], mv["paired"], mv["flipped"], mv["aligned"]) == (1, 1, 1.0, 0.0)
    assert mv["orient_err"] == pytest.approx(np.pi) and mv["vel_err"] == pytest.approx(10.0)
    assert mv["speed_gt"] == pytest.approx(10.0) and mv["speed_pred"] == 0.0
    assert (st["gt"], st["paired"], st["aligned"], st["flipped"]) == (2, 1, 1.0, 0.0)  # the low-scoring one is unpaired
    assert st["orient_err"] == pytest.approx(0.1) and st["vel_err"] == 0.0
    barrier = rows[("barrier", "still")]
    assert barrier["aligned"] == 1.0 and barrier["orient_err"] == pytest.approx(0.0, abs=1e-9) and np.isnan(barrier["vel_err"])
    cone = rows[("traffic_cone", "still")]
    assert cone["paired"] == 1 and np.isnan(cone["orient_err"]) and np.isnan(cone["vel_err"])
    truck = rows[("truck", "still")]
    assert truck["paired"] == 0 and np.isnan(truck["orient_err"]) and np.isnan(truck["vel_err"])
    assert ("bus", "still") not in rows  # no GT of a class: no row


def test_empty_predictions():
    gt = _boxes([0], [C["car"]], [[0, 0]], [0.0], [[5, 0]], [-1])
    rows = motion_breakdown(gt, BoxSet.empty())
    assert rows == [{"class": "car", "state": "moving", "gt": 1, "paired": 0, **dict.fromkeys(
        ("aligned", "flipped", "orient_err", "vel_err", "speed_gt", "speed_pred"), rows[0]["aligned"])}]
    assert np.isnan(rows[0]["aligned"])

