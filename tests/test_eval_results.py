"""Detections -> submission boxes, results files, and their validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bevsimdet.data.batch import SampleMeta
from bevsimdet.eval import synthetic
from bevsimdet.eval.results import ResultsError, detections_to_results, load_results, results_to_boxes, write_results
from bevsimdet.models.output import Detections


def _pose(yaw: float, t=(100.0, -50.0, 2.0)) -> np.ndarray:
    m = np.eye(4)
    m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    m[:3, 3] = t
    return m


def _dets(n: int, seed: int = 0) -> Detections:
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat([torch.rand(n, 3, generator=g) * 40 - 20, torch.rand(n, 3, generator=g) + 0.5,
                       torch.rand(n, 1, generator=g) * 6 - 3, torch.randn(n, 2, generator=g)], dim=1)
    return Detections(boxes=boxes, scores=torch.rand(n, generator=g), labels=torch.randint(0, 10, (n,), generator=g))


def test_ego_to_global_matches_devkit_box():
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    det = _dets(20)
    meta = SampleMeta("tok", ego2global=_pose(0.7))
    out = detections_to_results([det], [meta])["tok"]
    rot = Quaternion(matrix=meta.ego2global[:3, :3])
    order = torch.argsort(det.scores, descending=True, stable=True)
    for r, i in zip(out, order.tolist()):
        b = det.boxes[i].double().numpy()
        box = Box(b[:3], b[3:6], Quaternion(axis=[0, 0, 1], angle=b[6]), velocity=(b[7], b[8], 0.0))
        box.rotate(rot)
        box.translate(meta.ego2global[:3, 3])
        np.testing.assert_allclose(r["translation"], box.center, atol=1e-6)
        np.testing.assert_allclose(r["velocity"], box.velocity[:2], atol=1e-6)
        q = Quaternion(r["rotation"])
        assert abs(abs(np.dot(q.elements, box.orientation.elements)) - 1) < 1e-9
        assert r["detection_score"] == pytest.approx(float(det.scores[i]))
        assert r["size"] == pytest.approx(b[3:6].tolist())
    speeds = [np.hypot(*r["velocity"]) for r in out]
    names = [(r["detection_name"], r["attribute_name"]) for r in out]
    assert ("car", "vehicle.parked") in names or ("car", "vehicle.moving") in names or all(n != "car" for n, _ in names)
    assert all(a == "" for (n, a) in names if n in ("barrier", "traffic_cone"))
    assert all((a.endswith("moving") or a == "cycle.with_rider") == (s > 0.2) for (n, a), s in zip(names, speeds) if a)


def test_bev_aug_is_undone():
    det = _dets(10, seed=1)
    meta = SampleMeta("tok", ego2global=_pose(-1.2))
    yaw, scale = 0.4, 1.05
    aug = np.eye(4)
    aug[:2, :2] = scale * np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]) @ np.diag([1.0, -1.0])  # + flip
    aug[2, 2] = scale
    # The augmented boxes of the same objects.
    b = det.boxes.double().numpy()
    lin = aug[:3, :3]
    heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), 0 * b[:, 6]], 1) @ lin.T
    vel = np.concatenate([b[:, 7:9], 0 * b[:, :1]], 1) @ lin.T
    aug_boxes = np.concatenate([b[:, :3] @ lin.T, b[:, 3:6] * scale, np.arctan2(heading[:, 1], heading[:, 0])[:, None], vel[:, :2]], 1)
    aug_det = Detections(torch.from_numpy(aug_boxes), det.scores, det.labels)
    want = detections_to_results([det], [meta])["tok"]
    got = detections_to_results([aug_det], [meta], bev_augs=torch.from_numpy(aug)[None])["tok"]
    for w, g in zip(want, got):
        for k in ("translation", "size", "velocity"):
            np.testing.assert_allclose(g[k], w[k], atol=1e-6)
        assert abs(abs(np.dot(g["rotation"], w["rotation"])) - 1) < 1e-9


def test_top_500_and_empty():
    out = detections_to_results([_dets(700), _dets(0)], [SampleMeta("a"), SampleMeta("b")])
    assert len(out["a"]) == 500 and out["b"] == []
    scores = [r["detection_score"] for r in out["a"]]
    assert scores == sorted(scores, reverse=True)


def _submission(tmp_path, results, meta=None):
    path = tmp_path / "r.json"
    write_results(path, results, meta)
    return path


def _valid(n_samples=3):
    rng = np.random.default_rng(0)
    gt = synthetic.random_ground_truth(rng, n_samples, boxes_per_sample=5)
    return gt, synthetic.random_predictions(rng, gt)


def test_round_trip(tmp_path):
    gt, res = _valid()
    data = load_results(_submission(tmp_path, res), sample_tokens=gt.sample_tokens)
    assert data["results"] == res and data["meta"]["use_camera"] is True
    boxes = results_to_boxes(data["results"], gt.sample_tokens)
    assert len(boxes) == sum(len(v) for v in res.values())


BAD_BOXES = {
    "unknown detection_name": lambda b: b.update(detection_name="tram"),
    "unknown attribute_name": lambda b: b.update(attribute_name="vehicle.flying"),
    "finite": lambda b: b.update(translation=[float("nan"), 0.0, 0.0]),
    "detection_score": lambda b: b.update(detection_score="high"),
    "size": lambda b: b.update(size=[1.0, 0.0, 1.0]),
    "rotation must be a list of 4": lambda b: b.update(rotation=[1.0, 0.0, 0.0]),
    "lacks velocity": lambda b: b.pop("velocity"),
    "says sample_token": lambda b: b.update(sample_token="elsewhere"),
    "list-valued detection_name": lambda b: b.update(detection_name=["car"]),  # unhashable: once a TypeError
    "object-valued attribute_name": lambda b: b.update(attribute_name={"a": 1}),
}


@pytest.mark.parametrize("problem", BAD_BOXES)
def test_bad_boxes_name_file_and_problem(tmp_path, problem):
    gt, res = _valid()
    token = gt.sample_tokens[1]
    box = res[token][0] if res[token] else None
    if box is None:
        res[token] = [dict(res[next(t for t in res if res[t])][0], sample_token=token)]
        box = res[token][0]
    BAD_BOXES[problem](box)
    path = _submission(tmp_path, res)
    with pytest.raises(ResultsError) as e:
        load_results(path, sample_tokens=gt.sample_tokens)
    msg = str(e.value)
    assert str(path) in msg and token in msg and "\n" not in msg
    assert problem.split()[-1] in msg or problem in msg


def test_bad_files(tmp_path):
    gt, res = _valid()
    with pytest.raises(ResultsError, match="not found"):
        load_results(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_results(tmp_path / "x.json")
    (tmp_path / "x.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ResultsError, match="'results' object"):
        load_results(tmp_path / "x.json")
    (tmp_path / "x.json").write_text(json.dumps({"results": res}))
    with pytest.raises(ResultsError, match="no 'meta'"):
        load_results(tmp_path / "x.json")
    (tmp_path / "x.json").write_text(json.dumps({"meta": {}, "results": {gt.sample_tokens[0]: {"a": 1}}}))
    with pytest.raises(ResultsError, match="must be a list"):
        load_results(tmp_path / "x.json")
    (tmp_path / "x.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ResultsError, match="nested too deeply"):
        load_results(tmp_path / "x.json")


def test_sample_coverage_and_box_limit(tmp_path):
    gt, res = _valid()
    missing = dict(res)
    missing.pop(gt.sample_tokens[2])
    with pytest.raises(ResultsError, match="1 of 3 samples have no entry"):
        load_results(_submission(tmp_path, missing), sample_tokens=gt.sample_tokens)
    with pytest.raises(ResultsError, match="not in the evaluated split"):
        load_results(_submission(tmp_path, {**res, "stranger": []}), sample_tokens=gt.sample_tokens)
    box = next(b for v in res.values() for b in v)
    too_many = {**res, gt.sample_tokens[0]: [dict(box, sample_token=gt.sample_tokens[0])] * 501}
    with pytest.raises(ResultsError, match="501 boxes, more than 500"):
        load_results(_submission(tmp_path, too_many), sample_tokens=gt.sample_tokens)


def test_load_json_fast_path_equals_the_json_module(tmp_path):
    """orjson (the fast path) gives exactly json.loads's objects; what it refuses (NaN literals,
    huge integers) still parses through json, and bad files raise json's errors."""
    import json
    import math

    import numpy as np

    from bevsimdet import io as bio

    assert bio._orjson is not None  # the pinned dependency is installed, so the fast path is the one in use
    rng = np.random.default_rng(0)
    doc = {"meta": {"use_camera": True, "note": "Zürich \u00e9\u4e2d"},
           "results": {f"tok{i}": [{"translation": rng.normal(0, 50, 3).tolist(), "size": rng.random(3).tolist(),
                                    "rotation": rng.normal(size=4).tolist(), "velocity": [float(v) for v in rng.normal(size=2)],
                                    "detection_score": float(rng.random()), "detection_name": "car", "attribute_name": ""}
                                   for _ in range(5)] for i in range(20)}}
    path = tmp_path / "r.json"
    for text in (json.dumps(doc), json.dumps(doc, indent=1), '{"a": 1e-320, "b": 123456789012345678901234567890, "c": NaN}'):
        path.write_text(text)
        got, want = bio.load_json(path), json.loads(text)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    assert math.isnan(bio.load_json(path)["c"])
    path.write_text('{"a": [1, 2,')
    with pytest.raises(json.JSONDecodeError):
        bio.load_json(path)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError):
        bio.load_json(path)
