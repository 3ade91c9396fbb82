"""Info files, dataset and loader on a small hand-made nuScenes-format world with known answers.

The world (2 scenes named as v1.0-mini scenes, so ``mini_train``/``mini_val`` apply) is written
here table by table: an ego car driving a straight line with a tilted rig, LiDAR sweeps at 20 Hz
that all contain one fixed landmark point (so sweep transforms can be checked exactly), and camera
images with a bright spot where the landmark projects (so image augmentation can be checked on
pixels). The simulator-based world (``tiny_world``) is used in ``test_data_world.py``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pyquaternion import Quaternion

from bevsimdet.data.classes import CAMERAS, CLASS_TO_LABEL
from bevsimdet.data.dataset import NuScenesDataset
from bevsimdet.data.infos import BOX_CONVENTION, SCHEMA_VERSION, create_infos, load_infos
from bevsimdet.data.loader import build_dataloader, collate
from bevsimdet.data.transforms import BEVAug, ImageAug
from bevsimdet.errors import DataError
from bevsimdet.geometry import apply_transform, box_corners, box_to_ego, invert, make_transform, pose_matrix, project_points, transform_boxes

SCENES = {"scene-0061": 3, "scene-0103": 2}  # name -> keyframes (mini_train, mini_val)
IMAGE = (90, 160)
LANDMARK = np.array([1012.0, 509.0, 2.0])  # global
HEADING = 0.3  # rad, ego yaw (global)
SPEED = 5.0  # m/s along the heading
CAM_YAWS = dict(zip(CAMERAS, np.deg2rad([0, -55, 55, 180, 110, -110])))


def _tok(*parts: object) -> str:
    return "-".join(str(p) for p in parts)


def _ego_pose(t: float) -> tuple[list, list]:
    pos = np.array([1000.0, 500.0, 0.0]) + SPEED * t * np.array([np.cos(HEADING), np.sin(HEADING), 0])
    return Quaternion(axis=[0, 0, 1], angle=HEADING + 0.02 * t).elements.tolist(), pos.tolist()


def write_world(root: Path) -> Path:
    tables: dict[str, list] = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    tables["category"] = [{"token": "cat-car", "name": "vehicle.car", "description": ""}, {"token": "cat-ped", "name": "human.pedestrian.adult", "description": ""}, {"token": "cat-dog", "name": "animal", "description": ""}]
    tables["attribute"] = [{"token": "att-park", "name": "vehicle.parked", "description": ""}, {"token": "att-move", "name": "vehicle.moving", "description": ""}]
    tables["visibility"] = [{"token": str(i), "level": lvl, "description": ""} for i, lvl in enumerate(["v0-40", "v40-60", "v60-80", "v80-100"], 1)]
    tables["map"] = [{"token": "map0", "log_tokens": ["log0"], "category": "", "filename": ""}]
    tables["log"] = [{"token": "log0", "logfile": "", "vehicle": "sim", "date_captured": "2024-01-01", "location": "sim"}]
    k = np.array([[100.0, 0, 79.5], [0, 100.0, 44.5], [0, 0, 1]])
    opencv_to_forward = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    for ch in (*CAMERAS, "LIDAR_TOP"):
        tables["sensor"].append({"token": _tok("sensor", ch), "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"})
        if ch == "LIDAR_TOP":
            rot, trans, intr = Quaternion(axis=[0, 0, 1], angle=-np.pi / 2) * Quaternion(axis=[1, 0, 0], angle=0.01), [0.94, 0.0, 1.84], []
        else:
            yaw = CAM_YAWS[ch]
            rot = Quaternion(matrix=np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]) @ opencv_to_forward)
            trans, intr = [1.5 * np.cos(yaw), 0.5 * np.sin(yaw), 1.55], k.tolist()
        tables["calibrated_sensor"].append({"token": _tok("cs", ch), "sensor_token": _tok("sensor", ch), "translation": list(trans), "rotation": rot.elements.tolist(), "camera_intrinsic": intr})

    rng = np.random.default_rng(0)
    t0 = 0.0
    for scene, n_key in SCENES.items():
        samples = [_tok(scene, "s", i) for i in range(n_key)]
        tables["scene"].append({"token": _tok(scene), "log_token": "log0", "nbr_samples": n_key, "first_sample_token": samples[0], "last_sample_token": samples[-1], "name": scene, "description": ""})
        prev_sd = ""
        for i, st in enumerate(samples):
            ts = t0 + 0.5 * i
            tables["sample"].append({"token": st, "timestamp": int(ts * 1e6), "scene_token": _tok(scene), "prev": samples[i - 1] if i else "", "next": samples[i + 1] if i + 1 < n_key else ""})
            # LiDAR: 9 sweeps before every keyframe but the first, then the keyframe
            steps = [0.0] if i == 0 else [ts - 0.05 * j for j in range(9, 0, -1)] + [ts]
            steps[-1] = ts
            for j, tt in enumerate(steps):
                sd = _tok(st, "lidar", j)
                q, p = _ego_pose(tt - t0)
                tables["ego_pose"].append({"token": sd, "timestamp": int(tt * 1e6), "rotation": q, "translation": p})
                key = tt == ts
                fname = f"{'samples' if key else 'sweeps'}/LIDAR_TOP/{sd}.pcd.bin"
                sensor2global = pose_matrix({"rotation": q, "translation": p}) @ pose_matrix(tables["calibrated_sensor"][-1])
                mark = apply_transform(invert(sensor2global), LANDMARK[None])
                noise = np.c_[rng.uniform(-20, 20, (40, 2)), rng.uniform(-1.5, 1, (40, 1))]
                pts = np.c_[np.concatenate([mark, noise]), rng.uniform(0, 100, 41), np.zeros(41)].astype(np.float32)
                (root / fname).parent.mkdir(parents=True, exist_ok=True)
                pts.tofile(root / fname)
                tables["sample_data"].append({"token": sd, "sample_token": st, "ego_pose_token": sd, "calibrated_sensor_token": _tok("cs", "LIDAR_TOP"), "timestamp": int(tt * 1e6), "fileformat": "pcd", "is_key_frame": key, "height": 0, "width": 0, "filename": fname, "prev": prev_sd, "next": ""})
                if prev_sd:
                    next(r for r in tables["sample_data"] if r["token"] == prev_sd)["next"] = sd
                prev_sd = sd
            for n, ch in enumerate(CAMERAS):
                sd, tt = _tok(st, ch), ts + 0.008 * (n + 1)  # cameras fire around the sweep
                q, p = _ego_pose(tt - t0)
                tables["ego_pose"].append({"token": sd, "timestamp": int(tt * 1e6), "rotation": q, "translation": p})
                cs = next(c for c in tables["calibrated_sensor"] if c["token"] == _tok("cs", ch))
                cam2global = pose_matrix({"rotation": q, "translation": p}) @ pose_matrix(cs)
                uv, depth = project_points(LANDMARK[None], k, cam2global)
                img = np.full((*IMAGE, 3), 40, np.uint8)
                if depth[0] > 0.5:
                    yy, xx = np.mgrid[0 : IMAGE[0], 0 : IMAGE[1]]
                    img = np.maximum(img, (255 * np.exp(-((xx - uv[0, 0]) ** 2 + (yy - uv[0, 1]) ** 2) / (2 * 2.5**2)))[..., None].astype(np.uint8))
                fname = f"samples/{ch}/{sd}.jpg"
                (root / fname).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / fname), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
                tables["sample_data"].append({"token": sd, "sample_token": st, "ego_pose_token": sd, "calibrated_sensor_token": cs["token"], "timestamp": int(tt * 1e6), "fileformat": "jpg", "is_key_frame": True, "height": IMAGE[0], "width": IMAGE[1], "filename": fname, "prev": "", "next": ""})
        # a parked car through the scene, a walking pedestrian, an unmapped category; the last
        # sample of the val scene has no annotation at all
        tracks = [("car", "cat-car", ["att-park"], lambda t: [1020.0, 505.0, 0.8], 0.7, [1.9, 4.6, 1.7], 12),
                  ("ped", "cat-ped", [], lambda t: [1003.0 + 1.4 * t, 498.0, 0.9], 0.0, [0.7, 0.7, 1.8], 0),
                  ("dog", "cat-dog", [], lambda t: [995.0, 502.0, 0.3], 1.0, [0.3, 0.8, 0.5], 3)]
        n_ann = n_key - 1 if scene == "scene-0103" else n_key
        for name, cat, att, pos, yaw, size, npts in tracks:
            inst = _tok(scene, name)
            anns = [_tok(inst, i) for i in range(n_ann)]
            tables["instance"].append({"token": inst, "category_token": cat, "nbr_annotations": n_ann, "first_annotation_token": anns[0], "last_annotation_token": anns[-1]})
            for i, at in enumerate(anns):
                rot = Quaternion(axis=[0, 0, 1], angle=yaw) * Quaternion(axis=[0, 1, 0], angle=0.01)
                tables["sample_annotation"].append({"token": at, "sample_token": samples[i], "instance_token": inst, "visibility_token": "4", "attribute_tokens": att, "translation": pos(0.5 * i), "size": size, "rotation": rot.elements.tolist(), "prev": anns[i - 1] if i else "", "next": anns[i + 1] if i + 1 < n_ann else "", "num_lidar_pts": npts, "num_radar_pts": 0})
        t0 += 100.0
    (root / "v1.0-mini").mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("handmade"))


@pytest.fixture(scope="module")
def infos(world) -> dict:
    # the JSON format: the tests below edit records of it (the columnar format, the default of
    # create_infos, is checked against it record by record in test_data_columnar.py)
    return create_infos(world, "v1.0-mini", workers=2, progress=False, fmt="json")


@pytest.fixture(scope="module")
def nusc(world):
    from bevsimdet.data.nusc import open_nuscenes

    return open_nuscenes(world, "v1.0-mini")


def test_info_files_schema_and_counts(infos, nusc):
    assert set(infos) == {"mini_train", "mini_val"}
    doc = json.loads(infos["mini_train"].read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["box_convention"] == BOX_CONVENTION
    train, val = load_infos(infos["mini_train"]), load_infos(infos["mini_val"])
    assert [len(train), len(val)] == list(SCENES.values())
    assert sum(len(s.gt) for s in train.samples + val.samples) == len(nusc.sample_annotation)
    s = train.samples[1]
    assert list(s.cams) == list(CAMERAS)
    assert all(not Path(c.path).is_absolute() for c in s.cams.values()) and not Path(s.lidar_path).is_absolute()
    assert len(s.sweeps) == 9 and train.samples[0].sweeps == []
    assert np.all(np.diff([w.time_lag for w in s.sweeps]) > 0) and 0 < s.sweeps[0].time_lag < s.sweeps[-1].time_lag
    assert s.gt.names == ["car", "pedestrian", ""] and s.gt.categories[2] == "animal"
    assert s.gt.attributes == ["vehicle.parked", "", ""] and s.gt.num_lidar_pts.tolist() == [12, 0, 3]
    assert s.gt.visibility.tolist() == [4, 4, 4] and s.gt.valid.tolist() == [True, False, True]
    assert len(val.samples[-1].gt) == 0


def test_info_boxes_round_trip_with_devkit(infos, nusc):
    from nuscenes.eval.common.utils import quaternion_yaw

    from bevsimdet.geometry import ego_to_boxes

    for info in (load_infos(p) for p in infos.values()):
        for s in info.samples:
            dev = [nusc.get_box(t) for t in s.gt.tokens]
            for b in dev:
                b.velocity = nusc.box_velocity(b.token)
            ref = np.stack([box_to_ego(b, s.ego2global) for b in dev]) if dev else np.zeros((0, 9))
            np.testing.assert_allclose(s.gt.boxes, ref, atol=1e-6)
            for b, back in zip(dev, ego_to_boxes(s.gt.boxes, s.ego2global)):
                np.testing.assert_allclose(back.center, b.center, atol=1e-6)
                np.testing.assert_allclose(back.wlh, b.wlh)
                # our boxes drop the small pitch: the headings (as the devkit's evaluation sees them) agree
                assert abs(np.sin(quaternion_yaw(back.orientation) - quaternion_yaw(b.orientation))) < 1e-9
    ped = load_infos(infos["mini_train"]).samples[1].gt.boxes[1]
    np.testing.assert_allclose(np.hypot(ped[7], ped[8]), 1.4, atol=1e-6)  # walking at 1.4 m/s


def test_sweeps_and_cameras_align_in_keyframe_ego(infos, world):
    info = load_infos(infos["mini_train"])
    ds = NuScenesDataset(info, world, image_size=IMAGE, sweeps=9, point_cloud_range=None)
    for s in info.samples:
        pts = ds.load_lidar(s)
        mark = apply_transform(invert(s.ego2global), LANDMARK[None])[0]
        hits = np.linalg.norm(pts[:, :3] - mark, axis=1) < 1e-3
        assert hits.sum() == 1 + len(s.sweeps)  # the landmark of every sweep lands on the same spot
        np.testing.assert_allclose(np.sort(pts[hits, 4]), [0.0, *[w.time_lag for w in s.sweeps]], atol=1e-6)
        for c in s.cams.values():
            # cam2ego (into the keyframe ego frame) == the devkit chain through the camera's own pose
            np.testing.assert_allclose(c.cam2ego, invert(s.ego2global) @ c.ego2global @ c.sensor2ego, atol=1e-9)


def test_rerun_is_skipped_unless_forced_or_changed(world, infos):
    mtime = infos["mini_train"].stat().st_mtime_ns
    again = create_infos(world, "v1.0-mini", workers=1, progress=False, fmt="json")
    assert again == infos and infos["mini_train"].stat().st_mtime_ns == mtime
    create_infos(world, "v1.0-mini", workers=1, progress=False, force=True, fmt="json")
    assert infos["mini_train"].stat().st_mtime_ns != mtime
    other = create_infos(world, "v1.0-mini", out_dir=world / "other", max_sweeps=2, workers=1, progress=False, compress=True)
    assert other["mini_val"].suffix == ".gz" and gzip.decompress(other["mini_val"].read_bytes())
    assert max(len(s.sweeps) for s in load_infos(other["mini_train"]).samples) == 2


def test_load_infos_rejects_stale_or_corrupt(tmp_path, infos):
    doc = json.loads(infos["mini_val"].read_text())
    for key, value, needle in (("schema_version", 0, "schema version 0"), ("box_convention", "lidar-bottom", "box convention")):
        bad = tmp_path / f"{key}.json"
        bad.write_text(json.dumps({**doc, key: value}))
        with pytest.raises(DataError, match=needle) as e:
            load_infos(bad)
        assert str(bad) in str(e.value) and "--force" in str(e.value)
    (tmp_path / "trunc.json").write_text(infos["mini_val"].read_text()[:100])
    with pytest.raises(DataError, match="corrupt"):
        load_infos(tmp_path / "trunc.json")
    with pytest.raises(DataError, match="does not exist"):
        load_infos(tmp_path / "nope.json")


INFO_BAD = {  # edit of a valid file -> what the message must name
    "cams.CAM_FRONT_LEFT.intrinsics must be a 3 x 3 matrix": lambda d: d["samples"][1]["cams"]["CAM_FRONT_LEFT"].update(intrinsics=[[1, 0], [0, 1]]),
    "cams must map exactly": lambda d: d["samples"][1].update(cams=list(d["samples"][1]["cams"].values())),
    "gt.boxes[0] must hold finite numbers": lambda d: d["samples"][1]["gt"]["boxes"][0].__setitem__(3, float("inf")),
    "gt.categories has 0 entries": lambda d: d["samples"][1]["gt"].update(categories=[]),
    "gt.visibility must be a list of M integers": lambda d: d["samples"][1]["gt"].update(visibility=["4"] * len(d["samples"][1]["gt"]["tokens"])),
    "sweeps[1].sensor2ego must be a finite rigid": lambda d: d["samples"][1]["sweeps"][1]["sensor2ego"][1].__setitem__(1, 1.5),
    "sweeps[0].time_lag": lambda d: d["samples"][1]["sweeps"][0].update(time_lag="0.05"),
    "lidar.timestamp must be an integer": lambda d: d["samples"][1]["lidar"].update(timestamp=1.5),
    "more than the file's max_sweeps": lambda d: d.update(max_sweeps=1),
    "token repeats an earlier sample's token": lambda d: d["samples"][1].update(token=d["samples"][0]["token"]),
    "gt is missing": lambda d: d["samples"][1].pop("gt"),
}


@pytest.mark.parametrize("needle", INFO_BAD)
def test_load_infos_names_file_sample_and_field(tmp_path, infos, needle):
    doc = json.loads(infos["mini_train"].read_text())
    assert len(doc["samples"][1]["sweeps"]) > 1 and doc["samples"][1]["gt"]["boxes"]
    INFO_BAD[needle](doc)
    bad = tmp_path / "infos.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(DataError) as e:
        load_infos(bad)
    msg = str(e.value)
    assert needle in msg and str(bad) in msg and "--force" in msg and "\n" not in msg
    assert f"sample 1 (token {doc['samples'][1]['token']!r})" in msg


def test_load_infos_top_level_and_nesting_errors(tmp_path, infos):
    doc = json.loads(infos["mini_val"].read_text())
    bad = tmp_path / "infos.json"
    for edit, needle in (({"version": None}, "version must be a string"), ({"max_sweeps": -1}, "max_sweeps must be an integer >= 0"),
                         ({"samples": {}}, "samples must be a list")):
        bad.write_text(json.dumps({**doc, **edit}))
        with pytest.raises(DataError, match=needle):
            load_infos(bad)
    bad.write_text(json.dumps({**doc, "samples": [7]}))
    with pytest.raises(DataError, match="sample 0: the record must be a JSON object, got 7"):
        load_infos(bad)
    bad.write_bytes(gzip.compress(b'{"a":' * 50_000))
    with pytest.raises(DataError, match="nested too deeply"):
        load_infos(bad)
    bad.write_bytes(b"\x1f\x8b" + bytes(range(64)))
    with pytest.raises(DataError, match="corrupt"):
        load_infos(bad)


def test_load_infos_accepts_empty_gt_and_no_sweeps(tmp_path, infos):
    doc = json.loads(infos["mini_val"].read_text())
    for s in doc["samples"]:
        s["sweeps"] = []
        s["gt"] = {k: [] for k in s["gt"]}
    path = tmp_path / "infos.json"
    path.write_text(json.dumps(doc))
    info = load_infos(path)
    assert [len(s.gt) for s in info.samples] == [0, 0] and info.samples[0].gt.boxes.shape == (0, 9)
    assert info.samples[0].gt.visibility.dtype == np.int64 and info.samples[0].sweeps == []


def _bad_values_reference(kind: str, m: np.ndarray) -> bool:
    """One array, checked the plain way (the equivalence reference of ``bad_values``)."""
    if not np.all(np.isfinite(m)):
        return True
    if kind == "transform":
        return not (np.allclose(m[3], [0, 0, 0, 1], rtol=0, atol=1e-6) and np.allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), rtol=0, atol=1e-3))
    if kind == "intrinsics":
        return not (np.allclose(m[2], [0, 0, 1], rtol=0, atol=1e-6) and m[0, 0] > 0 and m[1, 1] > 0)
    return False


def test_bad_values_matches_reference():
    from bevsimdet.data.infos import bad_values

    rng = np.random.default_rng(0)
    good = np.stack([make_transform(Quaternion(q / np.linalg.norm(q)).elements, rng.normal(size=3) * 50) for q in rng.normal(size=(40, 4))])
    focal = rng.choice([-1.0, 0.0, 100.0, np.nan], size=(40, 2), p=[0.1, 0.1, 0.7, 0.1])
    with np.errstate(divide="ignore", invalid="ignore"):
        cases = {
            "transform": np.concatenate([good, good * rng.choice([1.0, 1.01, np.nan, np.inf], size=(40, 1, 1)),
                                         good + rng.choice([0.0, 1e-5, 1e-2], size=(40, 4, 4)) * (np.arange(4) == 3)[:, None]]),
            "intrinsics": np.array([[[f, 0, 50], [0, g, 40], [0, 0, r]] for (f, g), r in zip(focal, rng.choice([1.0, 0.5], size=40, p=[0.8, 0.2]))]),
            "boxes": rng.normal(size=(40, 9)) / rng.choice([1.0, 0.0], size=(40, 9), p=[0.97, 0.03]),
        }
    for kind, x in cases.items():
        fast = bad_values(kind, x)
        ref = np.array([_bad_values_reference(kind, m) for m in x])
        assert 0 < ref.sum() < len(x), kind  # both outcomes are exercised
        np.testing.assert_array_equal(fast, ref, err_msg=kind)


def dataset(world, infos, split="mini_train", **kw) -> NuScenesDataset:
    kw.setdefault("image_size", (64, 128))
    kw.setdefault("image_aug", ImageAug(image_size=kw["image_size"], resize_lim=(0.8, 1.2), test_resize=0.8, rot_lim=(-10, 10)))
    return NuScenesDataset(load_infos(infos[split]), world, **kw)


def test_item_shapes_and_zero_box_sample(world, infos):
    ds = dataset(world, infos, "mini_val", sweeps=3)
    item = ds[1]
    assert item.images.shape == (6, 3, 64, 128) and item.images.dtype == torch.float32
    assert item.intrinsics.shape == (6, 3, 3) and item.cam2ego.shape == (6, 4, 4) and item.img_aug.shape == (6, 3, 3)
    assert item.points.shape[1] == 5 and item.gt_boxes.shape == (0, 9) and item.gt_labels.shape == (0,)
    assert torch.equal(item.bev_aug, torch.eye(4))
    batch = collate([ds[0], item])
    assert batch.images.shape == (2, 6, 3, 64, 128) and [len(b) for b in batch.gt_boxes] == [2, 0]
    assert batch.gt_labels[0].tolist() == [CLASS_TO_LABEL["car"], CLASS_TO_LABEL["pedestrian"]]
    assert batch.meta[0].sample_token == ds.samples[0].token and batch.meta[0].lidar_path.endswith(".pcd.bin")
    assert collate([dataset(world, infos, load_points=False)[0]]).points is None
    assert len(dataset(world, infos, "mini_val", use_valid_flag=True)[0].gt_boxes) == 1  # the pedestrian has no points


def test_augmentation_keeps_pixels_points_and_boxes_together(world, infos):
    """The landmark's spot in each augmented image sits where the landmark point, taken back
    through bev_aug and projected with intrinsics/cam2ego/img_aug, lands."""
    ds = dataset(world, infos, train=True, sweeps=0, bev_aug=BEVAug(flip=True), point_cloud_range=None)
    seen = 0
    for epoch in range(3):
        for i in range(len(ds)):
            item = ds[(i, (11, epoch))]
            s = ds.samples[i]
            bev = item.bev_aug.double().numpy()
            mark_aug = apply_transform(bev @ invert(s.ego2global), LANDMARK[None])
            assert np.linalg.norm(item.points[:, :3].double().numpy() - mark_aug, axis=1).min() < 1e-3
            # boxes moved with the same matrix as the points
            ref = transform_boxes(ds.gt_of(s)[0], bev)
            np.testing.assert_allclose(item.gt_boxes.double().numpy(), ref, atol=1e-4)
            for n in range(6):
                uv, depth = project_points(apply_transform(invert(bev), mark_aug), item.intrinsics[n].double().numpy(), item.cam2ego[n].double().numpy(), item.img_aug[n].double().numpy())
                img = item.images[n, 0].numpy()
                h, w = img.shape
                if depth[0] <= 0 or not (6 <= uv[0, 0] < w - 6 and 6 <= uv[0, 1] < h - 6):
                    continue
                peak = np.unravel_index(np.argmax(img), img.shape)
                assert np.hypot(peak[1] - uv[0, 0], peak[0] - uv[0, 1]) < 1.5
                seen += 1
    assert seen >= 6


def test_loader_is_seeded(world, infos):
    ds = dataset(world, infos, train=True, bev_aug=BEVAug(), sweeps=1)

    def run(seed: int, workers: int) -> list:
        loader = build_dataloader(ds, 2, shuffle=True, seed=seed, num_workers=workers)
        return [(b.meta[0].sample_token, b.bev_aug.sum().item(), b.img_aug.sum().item(), b.images.sum().item()) for _ in range(2) for b in loader]

    a = run(3, 0)
    assert a == run(3, 0) == run(3, 2)
    assert a != run(4, 0)
    assert a[: len(a) // 2] != a[len(a) // 2 :]  # a new epoch draws new augmentations


def test_bad_inputs_give_one_line_errors(tmp_path, world, infos):
    from bevsimdet.data.nusc import open_nuscenes

    with pytest.raises(DataError, match="does not exist"):
        create_infos(tmp_path / "nowhere", progress=False)
    with pytest.raises(DataError, match="no 'v1.0-trainval' table folder .*found: v1.0-mini"):
        create_infos(world, "v1.0-trainval", progress=False)
    broken = tmp_path / "broken"
    (broken / "v1.0-mini").mkdir(parents=True)
    for f in (world / "v1.0-mini").iterdir():
        if f.name != "sample.json":
            (broken / "v1.0-mini" / f.name).write_text(f.read_text())
    with pytest.raises(DataError, match=r"sample.json is missing"):
        open_nuscenes(broken, "v1.0-mini")
    (broken / "v1.0-mini" / "sample.json").write_text("[{")
    with pytest.raises(DataError, match=r"sample.json is not valid JSON"):
        open_nuscenes(broken, "v1.0-mini")

    # a copy of the world with a missing image, a corrupt image and a corrupt point file
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(world, copy, ignore=shutil.ignore_patterns("bevsimdet_infos", "other"))
    info = load_infos(infos["mini_train"])
    s0, s1, s2 = info.samples
    (copy / s0.cams["CAM_BACK"].path).unlink()
    (copy / s1.cams["CAM_FRONT"].path).write_bytes(b"not a jpeg")
    (copy / s2.lidar_path).write_bytes(b"\0" * 7)
    for i, needle in enumerate(["image .*CAM_BACK.* is missing", "image .*CAM_FRONT.* is not a JPEG", "point file .* is corrupt"]):
        ds = NuScenesDataset(info, copy, image_size=(64, 128))
        with pytest.raises(DataError, match=needle) as e:
            ds[i]
        assert "\n" not in str(e.value) and "skip_bad_samples" in str(e.value)
    ds = NuScenesDataset(info, copy, image_size=(64, 128), skip_bad_samples=True)
    assert len(ds) == 2 and ds.skipped == 1  # the missing file is found up front
    (copy / s0.cams["CAM_BACK"].path).write_bytes((world / s0.cams["CAM_BACK"].path).read_bytes())
    ds = NuScenesDataset(info, copy, image_size=(64, 128), skip_bad_samples=True)
    assert ds[1].meta.sample_token == s0.token and ds.skipped == 2  # both corrupt ones skipped, wrapping around


def test_sampler_shards_and_epochs():
    from bevsimdet.data.loader import SeededSampler

    shards = [list(SeededSampler(7, shuffle=True, seed=1, num_replicas=2, rank=r)) for r in range(2)]
    assert [len(s) for s in shards] == [4, 4]
    assert {i for s in shards for i, _ in s} == set(range(7))
    assert all(key == (1, 0) for s in shards for _, key in s)
    sampler = SeededSampler(7, shuffle=True, seed=1)
    first, second = list(sampler), list(sampler)
    assert [k for _, k in second] == [(1, 1)] * 7 and [i for i, _ in first] != [i for i, _ in second]
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert [i for i, _ in SeededSampler(5, shuffle=False, seed=1)] == list(range(5))
