"""The simulated world as the nuScenes devkit sees it (uses the shared ``tiny_world`` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bevsimdet.data.classes import CAMERAS, CLASSES, LIDAR


@pytest.fixture(scope="module")
def nusc(tiny_world):
    from nuscenes import NuScenes

    return NuScenes(version="v1.0-mini", dataroot=str(tiny_world), verbose=False)


def _split_samples(nusc, split: str) -> list[dict]:
    from nuscenes.utils.splits import create_splits_scenes

    names = set(create_splits_scenes()[split])
    return [s for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in names]


def test_world_loads_in_devkit(nusc, tiny_world):
    assert len(nusc.scene) == 10 and len(nusc.sample) == 30
    for table in ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
                  "sample_annotation", "sample_data", "scene", "sensor", "visibility"):
        assert (Path(tiny_world) / "v1.0-mini" / f"{table}.json").exists()
    sample = nusc.sample[0]
    assert set(sample["data"]) == set(CAMERAS) | {LIDAR}
    for ch in CAMERAS:
        path, boxes, k = nusc.get_sample_data(sample["data"][ch])
        assert Path(path).exists() and k.shape == (3, 3)
        sd = nusc.get("sample_data", sample["data"][ch])
        assert (sd["width"], sd["height"]) == (160, 90) and sd["fileformat"] == "jpg"
    # 9 sweeps lead up to every keyframe, linked by prev/next with their own ego poses
    sd = nusc.get("sample_data", nusc.sample[1]["data"][LIDAR])
    chain = []
    while sd["prev"] and len(chain) < 9:
        sd = nusc.get("sample_data", sd["prev"])
        chain.append(sd)
    assert len(chain) == 9 and not any(s["is_key_frame"] for s in chain)
    assert all("sweeps/LIDAR_TOP/" in s["filename"] for s in chain)
    assert len({s["timestamp"] for s in chain}) == 9
    for inst in nusc.instance[:20]:
        ann = nusc.get("sample_annotation", inst["first_annotation_token"])
        n = 1
        while ann["next"]:
            ann = nusc.get("sample_annotation", ann["next"])
            n += 1
        assert n == inst["nbr_annotations"] and ann["token"] == inst["last_annotation_token"]


def test_every_class_in_both_splits(nusc):
    from nuscenes.eval.detection.utils import category_to_detection_name

    for split in ("mini_train", "mini_val"):
        seen = set()
        for s in _split_samples(nusc, split):
            for a in s["anns"]:
                ann = nusc.get("sample_annotation", a)
                if ann["num_lidar_pts"] > 0:
                    seen.add(category_to_detection_name(ann["category_name"]))
        assert seen == set(CLASSES), split


def test_devkit_eval_gt_as_predictions_gives_map_one(nusc, tmp_path):
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.eval.detection.utils import category_to_detection_name

    results = {}
    for s in _split_samples(nusc, "mini_val"):
        boxes = []
        for a in s["anns"]:
            ann = nusc.get("sample_annotation", a)
            if ann["num_lidar_pts"] == 0:
                continue  # the devkit drops such GT boxes; predicting them would be false positives
            vel = np.nan_to_num(nusc.box_velocity(a)[:2]).tolist()
            attr = nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else ""
            boxes.append(dict(sample_token=s["token"], translation=ann["translation"], size=ann["size"],
                              rotation=ann["rotation"], velocity=vel, detection_score=1.0, attribute_name=attr,
                              detection_name=category_to_detection_name(ann["category_name"])))
        results[s["token"]] = boxes
    meta = dict(use_camera=True, use_lidar=False, use_radar=False, use_map=False, use_external=False)
    (tmp_path / "results.json").write_text(json.dumps(dict(meta=meta, results=results)))
    ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(tmp_path / "results.json"), "mini_val",
                       str(tmp_path), verbose=False)
    metrics, _ = ev.evaluate()
    assert metrics.mean_ap == pytest.approx(1.0)
    for cls in CLASSES:
        assert metrics.mean_dist_aps[cls] == pytest.approx(1.0), cls


def test_num_lidar_pts_matches_devkit_points_in_box(nusc):
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.geometry_utils import points_in_box

    checked = 0
    for s in nusc.sample[::4]:
        path, boxes, _ = nusc.get_sample_data(s["data"][LIDAR])
        pc = LidarPointCloud.from_file(path)
        for box in boxes:
            ann = nusc.get("sample_annotation", box.token)
            assert int(points_in_box(box, pc.points[:3]).sum()) == ann["num_lidar_pts"]
            checked += 1
    assert checked > 50


def test_lidar_sweeps_are_plausible(nusc, tiny_world):
    for sd in nusc.sample_data[:: max(1, len(nusc.sample_data) // 25)]:
        if sd["fileformat"] != "pcd":
            continue
        pts = np.fromfile(Path(tiny_world) / sd["filename"], dtype=np.float32).reshape(-1, 5)
        assert 18_000 < len(pts) < 40_000
        rng = np.linalg.norm(pts[:, :3], axis=1)
        assert rng.max() < 101 and rng.min() > 1.0
        assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(32))
        assert 0 <= pts[:, 3].min() and pts[:, 3].max() <= 255


def test_lidar_points_land_on_rendered_surfaces(nusc, tiny_world):
    """Keyframe points projected into each camera hit pixels rendered at the same depth."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from pyquaternion import Quaternion

    from bevsimdet.data.sim import render_buffers

    def pose(rec):
        m = np.eye(4)
        m[:3, :3] = Quaternion(rec["rotation"]).rotation_matrix
        m[:3, 3] = rec["translation"]
        return m

    sample = _split_samples(nusc, "mini_val")[1]
    lidar = nusc.get("sample_data", sample["data"][LIDAR])
    pts = LidarPointCloud.from_file(str(Path(tiny_world) / lidar["filename"])).points[:3]
    lidar2global = pose(nusc.get("ego_pose", lidar["ego_pose_token"])) @ pose(
        nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"]))
    glob = lidar2global[:3, :3] @ pts + lidar2global[:3, 3:4]
    on_objects = agree = 0
    for ch in CAMERAS:
        cam = nusc.get("sample_data", sample["data"][ch])
        cs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
        world2cam = np.linalg.inv(pose(nusc.get("ego_pose", cam["ego_pose_token"])) @ pose(cs))
        pc = world2cam[:3, :3] @ glob + world2cam[:3, 3:4]
        front = pc[2] > 1.0
        uv = (np.asarray(cs["camera_intrinsic"]) @ pc[:, front])[:2] / pc[2, front]
        u, v, z = np.floor(uv[0]).astype(int), np.floor(uv[1]).astype(int), pc[2, front]
        inside = (u >= 0) & (u < cam["width"]) & (v >= 0) & (v < cam["height"])
        buf = render_buffers(tiny_world, sample["token"], ch)
        img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(Path(tiny_world) / cam["filename"]))
        assert np.abs(img.astype(float) - buf.rgb).mean() < 12  # the JPEG is this very rendering
        u, v, z = u[inside], v[inside], z[inside]
        obj = buf.instance[v, u] >= 0
        rel = np.abs(buf.depth[v, u][obj] - z[obj]) / z[obj]
        on_objects += int(obj.sum())
        agree += int((rel < 0.05).sum())
        assert np.median(np.abs(buf.depth[v, u] - z) / z) < 0.02, ch
    assert on_objects > 200 and agree / on_objects > 0.8


def test_visibility_and_attributes(nusc):
    vis = {v["token"]: v["level"] for v in nusc.visibility}
    assert set(vis) == {"1", "2", "3", "4"}
    levels = {a["visibility_token"] for a in nusc.sample_annotation}
    assert {"1", "4"} <= levels
    attrs = {nusc.get("attribute", t)["name"] for a in nusc.sample_annotation for t in a["attribute_tokens"]}
    assert {"vehicle.moving", "vehicle.parked", "pedestrian.moving", "cycle.without_rider"} <= attrs
    for a in nusc.sample_annotation:
        name = a["category_name"]
        if name.startswith("movable_object"):
            assert a["attribute_tokens"] == []
        else:
            assert len(a["attribute_tokens"]) == 1


def test_velocities_follow_the_motion(nusc):
    speeds = {}
    for a in nusc.sample_annotation:
        if not (a["prev"] or a["next"]):
            continue
        attr = nusc.get("attribute", a["attribute_tokens"][0])["name"] if a["attribute_tokens"] else ""
        speeds.setdefault(attr, []).append(np.linalg.norm(nusc.box_velocity(a["token"])[:2]))
    assert max(speeds["vehicle.parked"]) < 1e-6 and np.median(speeds["vehicle.moving"]) > 3.0
    assert 0.8 < np.median(speeds["pedestrian.moving"]) < 2.0


def test_reuse_and_refusal(tiny_world):
    from bevsimdet.data.sim import simulate
    from bevsimdet.errors import UserError

    from conftest import TINY_WORLD  # the fixture's parameters (pytest puts tests/ on sys.path)

    summary = simulate(tiny_world, progress=False, **TINY_WORLD)
    assert summary["reused"] and summary["keyframes"] == 30
    with pytest.raises(UserError):
        simulate(tiny_world, progress=False, **dict(TINY_WORLD, seed=8))
