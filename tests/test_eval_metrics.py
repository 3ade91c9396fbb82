"""The vectorised nuScenes metric against the devkit, on random and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bevsimdet.eval import devkit, synthetic
from bevsimdet.eval.boxes import DETECTION_NAMES, BoxSet
from bevsimdet.eval.gt import GroundTruth, filter_boxes
from bevsimdet.eval.match import candidate_pairs, greedy_match, greedy_match_reference
from bevsimdet.eval.metrics import TP_METRICS, evaluate
from bevsimdet.eval.results import results_to_boxes

TOL = 1e-6


def assert_same_as_devkit(results: dict, gt: GroundTruth) -> dict:
    """Every summary number and every 101-point curve equal to the devkit's."""
    ours = evaluate(results, gt)
    theirs, curves = devkit.devkit_load_and_evaluate(results, gt)
    a, b = ours.to_dict(), theirs.serialize()
    assert a.keys() >= b.keys() - {"meta"}
    for key in ("mean_ap", "nd_score"):
        assert a[key] == pytest.approx(b[key], abs=TOL), key
    for name in DETECTION_NAMES:
        assert a["mean_dist_aps"][name] == pytest.approx(b["mean_dist_aps"][name], abs=TOL)
        for th, ap in b["label_aps"][name].items():
            assert a["label_aps"][name][str(th)] == pytest.approx(ap, abs=TOL), (name, th)
        for m in TP_METRICS:
            x, y = a["label_tp_errors"][name][m], b["label_tp_errors"][name][m]
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=TOL), (name, m, x, y)
    for m in TP_METRICS:
        assert a["tp_errors"][m] == pytest.approx(b["tp_errors"][m], abs=TOL)
        assert a["tp_scores"][m] == pytest.approx(b["tp_scores"][m], abs=TOL)
    for key, md in curves.md.items():
        for f in ("recall", "precision", "confidence", *TP_METRICS):
            np.testing.assert_allclose(getattr(ours.curves[key], f), getattr(md, f), atol=TOL, rtol=0, err_msg=str((key, f)))
    return a


SCENARIOS = {
    "perturbed": dict(),
    "ties_shuffled_empty": dict(score_levels=4, shuffle_samples=True, empty_samples=0.3),
    "noisy_duplicates_confused": dict(noise=1.2, duplicates=0.9, confusion=0.3, score_levels=20),
    "missed_boxes": dict(recall=0.3, false_positives=5.0),
    "false_positives_only": dict(recall=0.0, false_positives=40.0),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_equal_to_devkit_random(name):
    rng = np.random.default_rng(sorted(SCENARIOS).index(name))
    gt = synthetic.random_ground_truth(rng, 25, boxes_per_sample=25)
    res = synthetic.random_predictions(rng, gt, synthetic.PredictionModel(**SCENARIOS[name]))
    out = assert_same_as_devkit(res, gt)
    if name == "false_positives_only":
        assert out["mean_ap"] == 0.0


def test_equal_to_devkit_missing_classes_and_no_predictions():
    rng = np.random.default_rng(5)
    gt = synthetic.random_ground_truth(rng, 20, classes=("car", "pedestrian", "barrier", "traffic_cone", "bicycle"))
    res = synthetic.random_predictions(rng, gt, synthetic.PredictionModel(score_levels=3))
    out = assert_same_as_devkit(res, gt)
    assert out["label_aps"]["bus"]["2.0"] == 0.0 and out["label_tp_errors"]["bus"]["trans_err"] == 1.0
    # No predictions at all: the devkit's filter_eval_boxes raises on that, its evaluate does not.
    ours = evaluate({t: [] for t in gt.sample_tokens}, gt).to_dict()
    theirs, _ = devkit.devkit_evaluate(devkit.to_eval_boxes(gt.boxes, gt.sample_tokens),
                                       devkit.to_eval_boxes(BoxSet.empty(), gt.sample_tokens))
    assert ours["mean_ap"] == theirs.mean_ap == 0.0 and ours["nd_score"] == theirs.nd_score == 0.0
    assert ours["tp_errors"] == pytest.approx(theirs.tp_errors)


def test_equal_to_devkit_all_ties_depend_on_result_order():
    rng = np.random.default_rng(9)
    gt = synthetic.random_ground_truth(rng, 15, boxes_per_sample=20)
    model = synthetic.PredictionModel(score_levels=1, duplicates=1.0, noise=0.8, shuffle_samples=True)
    assert_same_as_devkit(synthetic.random_predictions(rng, gt, model), gt)


def test_filter_equal_to_devkit():
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes

    rng = np.random.default_rng(3)
    gt = synthetic.random_ground_truth(rng, 30, racks_per_sample=1.0)
    raw = results_to_boxes(synthetic.random_predictions(rng, gt), gt.sample_tokens)
    raw.num_pts[::7] = 0  # as if results carried num_pts (the devkit drops those boxes too)
    ours = filter_boxes(raw, gt.ego_translation, gt.racks, gt.class_range)
    nusc = devkit.TablesOf(gt)
    eb = devkit.to_eval_boxes(raw, gt.sample_tokens)
    theirs = filter_eval_boxes(nusc, add_center_dist(nusc, eb), config_factory("detection_cvpr_2019").class_range)
    assert len(ours) < len(raw)
    assert len(ours) == len(theirs.all)
    np.testing.assert_array_equal(ours.translation, np.array([b.translation for b in theirs.all]))
    in_rack = (raw.label == DETECTION_NAMES.index("bicycle")) & np.isin(raw.translation[:, 0], gt.racks.translation[:, 0])
    assert in_rack.any() and not np.isin(ours.translation[:, 0], raw.translation[in_rack, 0]).any()


@pytest.mark.parametrize("seed", range(4))
def test_greedy_match_equals_reference(seed):
    rng = np.random.default_rng(seed)
    n_p, n_g = 300, 60
    key_p, key_g = rng.integers(0, 6, n_p), rng.integers(0, 6, n_g)
    xy_p, xy_g = rng.uniform(0, 8, (n_p, 2)), rng.uniform(0, 8, (n_g, 2))
    xy_p[::5] = xy_g[rng.integers(0, n_g, len(xy_p[::5]))]  # exact distance ties (0) between GTs
    rank = rng.permutation(n_p)
    pi, gi, d = candidate_pairs(key_p, xy_p, key_g, xy_g, 2.0)
    a = greedy_match(rank, pi, gi, d, n_g)
    np.testing.assert_array_equal(a, greedy_match_reference(rank, pi, gi, d, n_g))
    assert (a >= 0).sum() > 10
    assert len(np.unique(a[a >= 0])) == (a >= 0).sum()  # every GT matched at most once


def test_greedy_match_empty():
    e = np.zeros(0, dtype=np.int64)
    assert greedy_match(np.arange(3), e, e, np.zeros(0), 4).tolist() == [-1, -1, -1]


# ---------------------------------------------------------------------------------------------
# hand-made cases with known answers


def _world(gt_rows: list[tuple], num_samples: int = 1) -> GroundTruth:
    """GT from (sample, class, x, y, yaw, attribute index) rows; ego at the origin."""
    n = len(gt_rows)
    boxes = BoxSet.from_columns(
        sample=[r[0] for r in gt_rows], label=[DETECTION_NAMES.index(r[1]) for r in gt_rows],
        translation=[(r[2], r[3], 1.0) for r in gt_rows], size=[synthetic.TYPICAL_SIZE[DETECTION_NAMES.index(r[1])] for r in gt_rows],
        rotation=synthetic.yaw_quaternion(np.array([r[4] for r in gt_rows], dtype=float)), velocity=np.zeros((n, 2)),
        attribute=[r[5] for r in gt_rows], score=np.full(n, -1.0), num_pts=np.full(n, 10),
    )
    return GroundTruth.from_unfiltered([f"s{i}" for i in range(num_samples)], np.zeros((num_samples, 3)), boxes, BoxSet.empty())


def _pred(sample: str, name: str, x: float, y: float, score: float, yaw: float = 0.0, size=None, attr: str = "") -> dict:
    size = synthetic.TYPICAL_SIZE[DETECTION_NAMES.index(name)] if size is None else size
    return {"sample_token": sample, "translation": [x, y, 1.0], "size": list(map(float, size)),
            "rotation": synthetic.yaw_quaternion(np.array([yaw]))[0].tolist(), "velocity": [0.0, 0.0],
            "detection_name": name, "detection_score": score, "attribute_name": attr}


def test_perfect_predictions_score_one():
    rows = [(0, name, 2.0 + 2.5 * i, 2.0, 0.3, 5 if i < 5 else -1) for i, name in enumerate(DETECTION_NAMES)]
    rows = [(s, n, x, y, yaw, 3 if n in ("motorcycle", "bicycle") else 0 if n == "pedestrian" else a)
            for s, n, x, y, yaw, a in rows]
    gt = _world(rows)
    attr_names = {5: "vehicle.moving", 3: "cycle.with_rider", 0: "pedestrian.moving", -1: ""}
    res = {"s0": [_pred("s0", n, x, y, 0.9, yaw, attr=attr_names[a]) for _, n, x, y, yaw, a in rows]}
    m = evaluate(res, gt)
    assert m.mean_ap == pytest.approx(1.0) and m.nd_score == pytest.approx(1.0)
    assert all(e == pytest.approx(0.0, abs=1e-12) for e in m.tp_errors.values())
    assert math.isnan(m.label_tp_errors["traffic_cone"]["orient_err"])
    assert_same_as_devkit(res, gt)


def test_half_recall_known_ap():
    gt = _world([(0, "car", 4.0 * i, 10.0, 0.0, 6) for i in range(10)])
    res = {"s0": [_pred("s0", "car", 4.0 * i, 10.0, 0.9 - 0.01 * i, attr="vehicle.parked") for i in range(5)]}
    m = evaluate(res, gt)
    # Precision 1 up to recall 0.5 (points 11..50 of 101), 0 after: AP = 40 * 0.9 / 90 / 0.9.
    assert m.label_aps["car"][2.0] == pytest.approx(40 * 0.9 / 90 / 0.9)
    assert m.mean_ap == pytest.approx(m.label_aps["car"][2.0] / 10)
    assert_same_as_devkit(res, gt)


def test_distance_thresholds_and_barrier_period():
    gt = _world([(0, "car", 10.0, 0.0, 0.0, 6), (0, "barrier", 0.0, 10.0, 1.0, -1)])
    res = {"s0": [_pred("s0", "car", 10.6, 0.0, 0.8, yaw=np.pi), _pred("s0", "barrier", 0.0, 10.0, 0.7, yaw=1.0 + np.pi)]}
    m = evaluate(res, gt)
    # 0.6 m off: a miss at 0.5 m, a hit at 1, 2 and 4 m.
    assert m.label_aps["car"] == pytest.approx({0.5: 0.0, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0})
    assert m.label_tp_errors["car"]["trans_err"] == pytest.approx(0.6)
    assert m.label_tp_errors["car"]["orient_err"] == pytest.approx(np.pi)
    assert m.label_tp_errors["barrier"]["orient_err"] == pytest.approx(0.0, abs=1e-9)  # period pi
    assert math.isnan(m.label_tp_errors["barrier"]["vel_err"])
    assert_same_as_devkit(res, gt)


def test_tied_scores_later_box_wins():
    """The devkit visits equal scores from the last box to the first."""
    gt = _world([(0, "car", 0.0, 20.0, 0.0, 6)])
    res = {"s0": [_pred("s0", "car", 0.3, 20.0, 0.5), _pred("s0", "car", 0.1, 20.0, 0.5)]}
    m = evaluate(res, gt)
    assert m.label_tp_errors["car"]["trans_err"] == pytest.approx(0.1)
    assert_same_as_devkit(res, gt)


def test_out_of_range_predictions_are_ignored():
    gt = _world([(0, "pedestrian", 0.0, 5.0, 0.0, 2)])
    res = {"s0": [_pred("s0", "pedestrian", 0.0, 5.0, 0.5), _pred("s0", "pedestrian", 45.0, 0.0, 0.9)]}
    m = evaluate(res, gt)  # the 45 m pedestrian is beyond the 40 m range, not a false positive
    assert m.label_aps["pedestrian"][0.5] == pytest.approx(1.0)
    assert_same_as_devkit(res, gt)


def test_nds_parts_sum_to_nds_and_errors_of_one_or_more_add_nothing():
    from bevsimdet.eval.metrics import nds_parts

    summary = {"mAP": 0.3, "mATE": 0.5, "mASE": 0.2, "mAOE": 1.3, "mAVE": float("nan"), "mAAE": 0.1}
    parts = nds_parts(summary)
    assert parts == pytest.approx({"mAP": 0.15, "mATE": 0.05, "mASE": 0.08, "mAOE": 0.0, "mAVE": 0.0, "mAAE": 0.09})
    assert sum(parts.values()) == pytest.approx(0.37)  # (5 x 0.3 + 0.5 + 0.8 + 0 + 0 + 0.9) / 10
