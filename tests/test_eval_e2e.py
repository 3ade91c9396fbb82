"""End to end against the real ``DetectionEval`` on a small nuScenes-format table set.

The tables are written here (annotations only, no sensor files), so these tests do not depend on
the simulator: tracked instances give the devkit's velocity estimates (centred, one-sided, NaN
for single annotations and for large time gaps), plus racks, zero-point boxes and categories
the detection task ignores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bevsimdet.eval import synthetic
from bevsimdet.eval.boxes import ATTRIBUTE_NAMES, DETECTION_NAMES
from bevsimdet.eval.gt import CATEGORY_TO_DETECTION_NAME, load_gt
from bevsimdet.eval.metrics import TP_METRICS, evaluate
from bevsimdet.eval.results import load_results, write_results

VERSION = "v1.0-mini"
SCENES = {"scene-0103": 6, "scene-0916": 5, "scene-0061": 3}  # two mini_val scenes, one mini_train
CATEGORIES = sorted(CATEGORY_TO_DETECTION_NAME) + ["static_object.bicycle_rack", "human.pedestrian.stroller",
                                                    "movable_object.debris"]


def write_tables(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    tok = iter(f"{i:032x}" for i in range(1, 1_000_000))
    t: dict[str, list[dict]] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor",
                                                "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                                "sample_data", "sample_annotation", "map")}
    cat_tok = {}
    for name in CATEGORIES:
        cat_tok[name] = next(tok)
        t["category"].append({"token": cat_tok[name], "name": name, "description": ""})
    attr_tok = {a: next(tok) for a in ATTRIBUTE_NAMES}
    t["attribute"] = [{"token": v, "name": k, "description": ""} for k, v in attr_tok.items()]
    sensor, cs, log = next(tok), next(tok), next(tok)
    t["sensor"].append({"token": sensor, "channel": "LIDAR_TOP", "modality": "lidar"})
    t["calibrated_sensor"].append({"token": cs, "sensor_token": sensor, "translation": [0.9, 0, 1.8],
                                   "rotation": [1, 0, 0, 0], "camera_intrinsic": []})
    t["log"].append({"token": log, "logfile": "", "vehicle": "", "date_captured": "", "location": "boston-seaport"})
    t["map"].append({"token": next(tok), "log_tokens": [log], "category": "semantic_prior", "filename": "maps/m.png"})
    (root / "maps").mkdir(parents=True)
    from PIL import Image

    Image.new("L", (4, 4)).save(root / "maps" / "m.png")
    for scene_name, n in SCENES.items():
        scene = next(tok)
        samples = [next(tok) for _ in range(n)]
        times = 1_500_000_000_000_000 + np.cumsum(rng.choice([500_000, 500_000, 2_100_000], n))
        ego = np.cumsum(rng.normal(0, 3, (n, 2)), axis=0) + rng.uniform(-500, 500, 2)
        for i, s in enumerate(samples):
            ep, sd = next(tok), next(tok)
            t["ego_pose"].append({"token": ep, "timestamp": int(times[i]), "rotation": [1, 0, 0, 0],
                                  "translation": [float(ego[i, 0]), float(ego[i, 1]), 0.0]})
            t["sample_data"].append({"token": sd, "sample_token": s, "ego_pose_token": ep, "calibrated_sensor_token": cs,
                                     "timestamp": int(times[i]), "fileformat": "pcd", "is_key_frame": True,
                                     "height": 0, "width": 0, "filename": "", "prev": "", "next": ""})
            t["sample"].append({"token": s, "timestamp": int(times[i]), "scene_token": scene,
                                "prev": samples[i - 1] if i else "", "next": samples[i + 1] if i + 1 < n else ""})
        t["scene"].append({"token": scene, "name": scene_name, "description": "", "log_token": log, "nbr_samples": n,
                           "first_sample_token": samples[0], "last_sample_token": samples[-1]})
        for k in range(18):
            cat = CATEGORIES[k % len(CATEGORIES)]
            inst = next(tok)
            start = int(rng.integers(0, n))
            length = int(rng.integers(1, n - start + 1))  # some instances have one annotation only
            anns = [next(tok) for _ in range(length)]
            label = DETECTION_NAMES.index(CATEGORY_TO_DETECTION_NAME.get(cat, "car"))
            pos = ego[start] + rng.uniform(-45, 45, 2)
            size = (synthetic.TYPICAL_SIZE[label] * rng.uniform(0.8, 1.2, 3)).tolist()
            if cat == "static_object.bicycle_rack":
                size = [3.0, 8.0, 1.5]
            vel = rng.normal(0, 2, 2)
            for j, a in enumerate(anns):
                si = start + j
                xy = pos + vel * (times[si] - times[start]) * 1e-6
                attrs = []
                if cat.startswith("vehicle.car"):
                    attrs = [attr_tok[["vehicle.moving", "vehicle.parked"][int(rng.integers(2))]]] if rng.random() > 0.2 else []
                elif cat.startswith("human.pedestrian.adult"):
                    attrs = [attr_tok["pedestrian.moving"]]
                t["sample_annotation"].append({
                    "token": a, "sample_token": samples[si], "instance_token": inst, "visibility_token": "4",
                    "attribute_tokens": attrs, "translation": [float(xy[0]), float(xy[1]), 1.0], "size": size,
                    "rotation": synthetic.yaw_quaternion(np.array([rng.uniform(-3, 3)]))[0].tolist(),
                    "num_lidar_pts": int(rng.integers(0, 30)), "num_radar_pts": int(rng.integers(0, 2)),
                    "prev": anns[j - 1] if j else "", "next": anns[j + 1] if j + 1 < length else "",
                })
            t["instance"].append({"token": inst, "category_token": cat_tok[cat], "nbr_annotations": length,
                                  "first_annotation_token": anns[0], "last_annotation_token": anns[-1]})
        # A bicycle parked in a rack, in the first sample of the scene.
        rack = next(a for a in t["sample_annotation"][::-1]
                    if a["sample_token"] in samples and t["instance"][[i["token"] for i in t["instance"]].index(a["instance_token"])]["category_token"] == cat_tok["static_object.bicycle_rack"])
        bike_inst, bike_ann = next(tok), next(tok)
        t["instance"].append({"token": bike_inst, "category_token": cat_tok["vehicle.bicycle"], "nbr_annotations": 1,
                              "first_annotation_token": bike_ann, "last_annotation_token": bike_ann})
        t["sample_annotation"].append({**rack, "token": bike_ann, "instance_token": bike_inst, "size": [0.6, 1.7, 1.2],
                                       "num_lidar_pts": 5, "prev": "", "next": "",
                                       "attribute_tokens": [attr_tok["cycle.without_rider"]]})
    (root / VERSION).mkdir(parents=True)
    for name, rows in t.items():
        (root / VERSION / f"{name}.json").write_text(json.dumps(rows))


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval_tables")
    write_tables(root)
    return root


@pytest.fixture(scope="module")
def nusc(mini_root):
    from nuscenes import NuScenes

    return NuScenes(version=VERSION, dataroot=str(mini_root), verbose=False)


def _devkit_gt(nusc, split):
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes
    from nuscenes.eval.common.loaders import load_gt as dk_load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox

    boxes = add_center_dist(nusc, dk_load_gt(nusc, split, DetectionBox, verbose=False))
    return filter_eval_boxes(nusc, boxes, config_factory("detection_cvpr_2019").class_range)


@pytest.mark.parametrize("split", ["mini_val", "mini_train"])
def test_load_gt_equals_devkit(nusc, mini_root, split):
    gt = load_gt(mini_root, VERSION, split, nusc=nusc)
    theirs = _devkit_gt(nusc, split)
    assert list(gt.sample_tokens) == theirs.sample_tokens
    boxes = theirs.all
    assert len(gt.boxes) == len(boxes) > 0
    np.testing.assert_array_equal(gt.boxes.translation, [b.translation for b in boxes])
    np.testing.assert_array_equal(gt.boxes.velocity, [b.velocity for b in boxes])  # NaNs in the same places
    assert [DETECTION_NAMES[i] for i in gt.boxes.label] == [b.detection_name for b in boxes]
    assert [("" if a < 0 else ATTRIBUTE_NAMES[a]) for a in gt.boxes.attribute] == [b.attribute_name for b in boxes]
    assert [gt.sample_tokens[s] for s in gt.boxes.sample] == [b.sample_token for b in boxes]
    if split == "mini_val":
        assert np.isnan(gt.boxes.velocity).any() and len(gt.racks) > 0


def _results(gt, seed, **model):
    return synthetic.random_predictions(np.random.default_rng(seed), gt, synthetic.PredictionModel(**model))


@pytest.mark.slow
def test_cli_matches_detection_eval(nusc, mini_root, tmp_path):
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    gt = load_gt(mini_root, VERSION, "mini_val", nusc=nusc)
    path = tmp_path / "results.json"
    write_results(path, _results(gt, 1, score_levels=5, shuffle_samples=True, fp_range=45.0))
    dk = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(path), "mini_val", str(tmp_path / "dk"), verbose=False)
    theirs = dk.main(render_curves=False)
    r = subprocess.run([sys.executable, "-m", "bevsimdet", "evaluate", "--dataroot", str(mini_root), "--version", VERSION,
                        "--split", "mini_val", "--results", str(path), "--out", str(tmp_path / "m.json"),
                        "--plots", str(tmp_path / "plots")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "NDS" in r.stdout and "pedestrian" in r.stdout
    ours = json.loads((tmp_path / "m.json").read_text())
    assert ours["meta"] == theirs["meta"]
    for key in ("mean_ap", "nd_score"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6)
    for name in DETECTION_NAMES:
        assert ours["label_aps"][name] == pytest.approx({str(k): v for k, v in theirs["label_aps"][name].items()}, abs=1e-6)
        for m in TP_METRICS:
            assert ours["label_tp_errors"][name][m] == pytest.approx(theirs["label_tp_errors"][name][m], abs=1e-6, nan_ok=True)
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "summary.png" in pngs and "car_pr.png" in pngs and "barrier_tp.png" in pngs and len(pngs) == 21


def test_cli_bad_results_one_line_error(mini_root, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"meta": {"use_camera": True}, "results": {"nope": []}}))
    r = subprocess.run([sys.executable, "-m", "bevsimdet", "evaluate", "--dataroot", str(mini_root), "--version", VERSION,
                        "--split", "mini_val", "--results", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.startswith("error:") and "bad.json" in err and "no entry" in err and "\n" not in err


def test_cli_breakdown(mini_root, tmp_path):
    gt = load_gt(mini_root, VERSION, "mini_val", cache=False)
    write_results(tmp_path / "r.json", _results(gt, 3))
    r = subprocess.run([sys.executable, "-m", "bevsimdet", "evaluate", "--dataroot", str(mini_root), "--version", VERSION,
                        "--split", "mini_val", "--results", str(tmp_path / "r.json"), "--out", str(tmp_path / "m.json"),
                        "--breakdown", "--no-cache"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "heading and velocity by motion state" in r.stdout and "flipped" in r.stdout
    rows = json.loads((tmp_path / "m.json").read_text())["motion_breakdown"]
    assert {row["class"] for row in rows} <= set(DETECTION_NAMES) and sum(row["paired"] for row in rows) > 0


def test_in_process_evaluate_matches_file_round_trip(nusc, mini_root, tmp_path):
    gt = load_gt(mini_root, VERSION, "mini_val", nusc=nusc)
    res = _results(gt, 2)
    write_results(tmp_path / "r.json", res)
    loaded = load_results(tmp_path / "r.json", sample_tokens=gt.sample_tokens)
    assert loaded["meta"]["use_camera"] is True
    assert evaluate(loaded["results"], gt).to_dict()["nd_score"] == evaluate(res, gt).nd_score


@pytest.mark.slow
def test_equal_to_detection_eval_on_tiny_world(request, tmp_path):
    """The simulator's world, through the devkit's own loader and DetectionEval."""
    sim = pytest.importorskip("bevsimdet.data.sim")
    if not hasattr(sim, "simulate"):
        pytest.skip("simulator not available")
    from nuscenes import NuScenes
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    root = request.getfixturevalue("tiny_world")
    nusc = NuScenes(version=VERSION, dataroot=str(root), verbose=False)
    gt = load_gt(root, VERSION, "mini_val", nusc=nusc)
    theirs_gt = _devkit_gt(nusc, "mini_val")
    assert len(gt.boxes) == len(theirs_gt.all) > 0
    np.testing.assert_array_equal(gt.boxes.velocity, [b.velocity for b in theirs_gt.all])
    path = tmp_path / "results.json"
    write_results(path, _results(gt, 3, score_levels=10, duplicates=0.5))
    dk = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(path), "mini_val", str(tmp_path / "dk"), verbose=False)
    theirs = dk.main(render_curves=False)
    ours = evaluate(load_results(path, sample_tokens=gt.sample_tokens)["results"], gt).to_dict()
    assert ours["mean_ap"] == pytest.approx(theirs["mean_ap"], abs=1e-6)
    assert ours["nd_score"] == pytest.approx(theirs["nd_score"], abs=1e-6)
    for name in DETECTION_NAMES:
        for m in TP_METRICS:
            assert ours["label_tp_errors"][name][m] == pytest.approx(theirs["label_tp_errors"][name][m], abs=1e-6, nan_ok=True)
