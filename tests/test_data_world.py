"""The data layer on the simulated world (``tiny_world``): info files against the devkit, box
projection into the right camera, sweep alignment, the dataset, and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from bevsimdet.config import load_config
from bevsimdet.data.classes import CAMERAS
from bevsimdet.data.dataset import NuScenesDataset, build_dataset
from bevsimdet.data.infos import load_infos
from bevsimdet.data.loader import build_dataloader
from bevsimdet.data.transforms import ImageAug
from bevsimdet.geometry import box_corners, box_to_ego, ego_to_boxes, project_points, transform_boxes


@pytest.fixture(scope="module")
def nusc(tiny_world):
    from bevsimdet.data.nusc import open_nuscenes

    return open_nuscenes(tiny_world, "v1.0-mini")


@pytest.fixture(scope="module")
def train_infos(tiny_infos):
    return load_infos(tiny_infos["mini_train"])


def test_infos_match_the_devkit(tiny_infos, nusc):
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    for split, path in tiny_infos.items():
        info = load_infos(path)
        names = set(splits[split])
        want = [s for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in names]
        assert sorted(s.token for s in info.samples) == sorted(s["token"] for s in want)
        for s in info.samples:
            rec = nusc.get("sample", s.token)
            assert sorted(s.gt.tokens) == sorted(rec["anns"])
            lidar = nusc.get("sample_data", rec["data"]["LIDAR_TOP"])
            assert s.lidar_path == lidar["filename"] and s.timestamp == rec["timestamp"]
            assert all(s.cams[c].path == nusc.get("sample_data", rec["data"][c])["filename"] for c in CAMERAS)
    assert any(len(s.sweeps) == 9 for s in load_infos(tiny_infos["mini_train"]).samples)


def test_boxes_round_trip_with_devkit(train_infos, nusc):
    for s in train_infos.samples[:6]:
        dev = [nusc.get_box(t) for t in s.gt.tokens]
        for b in dev:
            b.velocity = nusc.box_velocity(b.token)
        ref = np.stack([box_to_ego(b, s.ego2global) for b in dev])
        np.testing.assert_allclose(s.gt.boxes, ref, atol=1e-6)
        for b, back in zip(dev, ego_to_boxes(s.gt.boxes, s.ego2global)):
            np.testing.assert_allclose(back.center, b.center, atol=1e-6)
            np.testing.assert_allclose(back.corners(), b.corners(), atol=1e-3)  # sim boxes are yaw-only


def test_box_corners_project_into_the_right_camera(train_infos, nusc, tiny_world):
    """Boxes the devkit sees entirely inside a camera project to the devkit's pixels, also through
    the dataset's augmentation matrices."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    ds = NuScenesDataset(train_infos, tiny_world, image_size=(64, 160), train=True, image_aug=ImageAug((64, 160), (0.9, 1.1), 1.0), sweeps=0)
    checked = 0
    for i, s in enumerate(train_infos.samples[:8]):
        item = ds[(i, (0, 0))]
        token_to_box = dict(zip(s.gt.tokens, s.gt.boxes))
        for n, cam in enumerate(CAMERAS):
            _, boxes, k = nusc.get_sample_data(nusc.get("sample", s.token)["data"][cam], box_vis_level=BoxVisibility.ALL)
            c = s.cams[cam]
            for b in boxes:
                want = view_points(b.corners(), k, normalize=True)[:2].T
                ours = box_corners(token_to_box[b.token][None])[0]
                uv, depth = project_points(ours, c.intrinsics, c.cam2ego)
                assert (depth > 0).all()
                np.testing.assert_allclose(uv, want, atol=1e-3)
                # through bev_aug and img_aug, as a model sees the batch
                aug_box = transform_boxes(token_to_box[b.token][None], item.bev_aug.double().numpy())
                corners = box_corners(transform_boxes(aug_box, np.linalg.inv(item.bev_aug.double().numpy())))[0]
                uv_aug, _ = project_points(corners, item.intrinsics[n].double().numpy(), item.cam2ego[n].double().numpy(), item.img_aug[n].double().numpy())
                a = item.img_aug[n].double().numpy()
                np.testing.assert_allclose(uv_aug, want @ a[:2, :2].T + a[:2, 2], atol=1e-2)
                checked += 1
    assert checked >= 5


def test_static_clutter_from_sweeps_aligns(train_infos, tiny_world):
    from scipy.spatial import cKDTree

    s = max(train_infos.samples, key=lambda r: len(r.sweeps))
    ds = NuScenesDataset(train_infos, tiny_world, image_size=(64, 160), sweeps=len(s.sweeps), point_cloud_range=None)
    pts = ds.load_lidar(s)
    above_ground = pts[:, 2] > 0.5  # the road looks the same anywhere along it
    key = pts[(pts[:, 4] == 0) & above_ground, :3]
    old = pts[np.isclose(pts[:, 4], s.sweeps[-1].time_lag) & above_ground, :3]
    assert len(key) > 500 and len(old) > 500
    tree = cKDTree(key)
    aligned = np.median(tree.query(old)[0])
    # the same sweep without ego-motion compensation (only the sensor calibration) does not align
    comp = s.sweeps[-1].sensor2ego
    naive = (old - comp[:3, 3]) @ comp[:3, :3] @ s.lidar2ego[:3, :3].T + s.lidar2ego[:3, 3]
    assert aligned < 0.3 and np.median(tree.query(naive)[0]) > 4 * aligned


def test_build_dataset_and_loader_on_demo_config(tiny_world, tiny_infos):
    cfg = load_config("configs/_base_/data_demo.yaml", [f"data.dataroot={tiny_world}", f"data.info_dir={tiny_infos['mini_train'].parent}"]).data
    ds = build_dataset(cfg, cfg.train_split, train=True)
    batch = next(iter(build_dataloader(ds, 2, shuffle=True, seed=0, num_workers=0)))
    assert batch.images.shape == (2, 6, 3, *cfg.image_size)
    assert batch.points is not None and batch.points[0].shape[1] == 5
    assert batch.points[0][:, 4].max() > 0  # sweeps are in
    assert all(torch.isfinite(b).all() for b in batch.gt_boxes)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bevsimdet", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_prepare_and_inspect(tiny_world, tmp_path):
    r = run_cli("prepare", "--dataroot", str(tiny_world), "--out", str(tmp_path / "infos"), "--max-sweeps", "2", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "infos" / "infos_mini_train.cols").is_file() and "mini_val" in r.stdout
    png = tmp_path / "sample.png"
    r = run_cli("inspect", "--dataroot", str(tiny_world), "--infos", str(tmp_path / "infos"), "--index", "1", "--sweeps", "2", "--out", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert "pedestrian" in r.stdout and "mini_train" in r.stdout


def test_cli_errors_are_one_line(tmp_path):
    r = run_cli("prepare", "--dataroot", str(tmp_path / "missing"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr and "simulate" in r.stderr
