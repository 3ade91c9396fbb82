"""The claim's statistics (bevsimdet/eval/bootstrap.py): rescoring on resampled scenes equals a
real evaluation of the duplicated scenes, and the paired bootstrap gives known answers."""

from __future__ import annotations

import numpy as np
import pytest

from bevsimdet.eval import synthetic
from bevsimdet.eval.bootstrap import PreparedRun, paired_difference, reference_metrics, scene_draws, summary_of
from bevsimdet.eval.metrics import SUMMARY_KEYS, evaluate
from bevsimdet.eval.results import results_to_boxes


def _case(seed: int, samples: int = 12):
    rng = np.random.default_rng(seed)
    gt = synthetic.random_ground_truth(rng, samples, boxes_per_sample=15)
    res = synthetic.random_predictions(rng, gt, synthetic.PredictionModel(false_positives=10))
    return rng, gt, results_to_boxes(res, gt.sample_tokens)


def test_unit_weights_equal_the_evaluator():
    _, gt, preds = _case(0)
    got = PreparedRun(preds, gt).metrics()
    want = summary_of(evaluate(preds, gt))
    for k in SUMMARY_KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_resampled_scenes_equal_a_real_evaluation_of_the_copies(seed):
    rng, gt, preds = _case(seed)
    scene = np.arange(gt.num_samples) // 3  # 4 scenes of 3 samples
    prepared = PreparedRun(preds, gt)
    for w in scene_draws(scene, 3, rng):
        got, want = prepared.metrics(w), reference_metrics(preds, gt, w)
        for k in SUMMARY_KEYS:
            assert got[k] == pytest.approx(want[k], abs=1e-9), (k, w)


def test_scene_draws_weigh_whole_scenes():
    rng = np.random.default_rng(0)
    scene = np.array([5, 5, 7, 7, 7, 9])
    w = scene_draws(scene, 200, rng)
    assert w.shape == (200, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 2] == w[:, 4]).all()  # a scene's samples move together
    assert (w[:, [0, 2, 5]].sum(1) == 3).all()  # three scenes drawn per replicate
    assert w[:, 5].mean() == pytest.approx(1.0, abs=0.15)


def _per_scene_metric(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """A run's metric as the mean of per-scene scores: original (column 0) and on each draw."""
    original = values.mean()[None]
    return np.concatenate([original, (draws * values).sum(1) / draws.sum(1)])


def test_paired_difference_of_a_constant_shift_has_no_width():
    """Student = control + 0.05 on every scene and in every run: the interval is exactly 0.05."""
    rng = np.random.default_rng(0)
    scenes = rng.normal(0.3, 0.1, 30)
    draws = np.stack([np.bincount(rng.integers(0, 30, 30), minlength=30) for _ in range(500)])
    control = np.stack([_per_scene_metric(scenes, draws)] * 3)
    student = np.stack([_per_scene_metric(scenes + 0.05, draws)] * 3)
    ci = paired_difference([student], [control], rng)
    assert ci.estimate == pytest.approx(0.05) and ci.low == pytest.approx(0.05) and ci.high == pytest.approx(0.05)


def test_paired_difference_matches_the_normal_theory_width():
    """One run per recipe, per-scene differences ~ N(0.02, 0.1), 400 scenes: the 95 % interval is
    the mean +- 1.96 x 0.1 / sqrt(400) (within bootstrap noise), and pairing removes the large
    scene-to-scene spread the two recipes share."""
    rng = np.random.default_rng(1)
    n = 400
    shared = rng.normal(0.3, 0.5, n)  # scene difficulty, common to both recipes
    diff = rng.normal(0.02, 0.1, n)
    draws = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(2000)])
    a = _per_scene_metric(shared + diff, draws)[None]
    b = _per_scene_metric(shared, draws)[None]
    ci = paired_difference([a], [b], rng)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(n)
    assert ci.estimate == pytest.approx(diff.mean())
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.12)
    assert (ci.low + ci.high) / 2 == pytest.approx(diff.mean(), abs=0.2 * half)


def test_paired_difference_includes_the_run_to_run_spread():
    """No scene noise, but runs differ: the interval reflects the spread of run means (two worlds)."""
    rng = np.random.default_rng(2)
    r = 4000
    worlds_a = [np.repeat(rng.normal(0.1, 0.05, (6, 1)), r + 1, axis=1) for _ in range(2)]
    worlds_b = [np.repeat(rng.normal(0.0, 0.05, (6, 1)), r + 1, axis=1) for _ in range(2)]
    ci = paired_difference(worlds_a, worlds_b, rng)
    # bootstrap variance of the mean of 6 runs is s^2 (n-1)/n^2 per recipe per world, halved over 2 worlds
    var = sum(x[:, 0].var(ddof=0) / 6 + y[:, 0].var(ddof=0) / 6 for x, y in zip(worlds_a, worlds_b)) / 4
    assert (ci.high - ci.low) / 2 == pytest.approx(1.96 * np.sqrt(var), rel=0.1)
    assert ci.low < ci.estimate < ci.high


def test_paired_difference_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        paired_difference([np.zeros((2, 3))], [], np.random.default_rng())
    with pytest.raises(ValueError):
        paired_difference([np.zeros((2, 3))], [np.zeros((2, 4))], np.random.default_rng())


def test_between_worlds_is_the_student_t_interval_of_the_world_estimates():
    from bevsimdet.eval.bootstrap import between_worlds

    ci = between_worlds([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2 df) = 4.3027
    assert ci.estimate == pytest.approx(2.0)
    assert (ci.low, ci.high) == pytest.approx((2 - 4.3027 / np.sqrt(3), 2 + 4.3027 / np.sqrt(3)), abs=1e-4)
    assert between_worlds([0.5, 0.5]).low == pytest.approx(0.5)  # no spread between worlds, no width
    with pytest.raises(ValueError):
        between_worlds([0.1])
