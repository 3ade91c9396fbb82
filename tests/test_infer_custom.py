"""Custom 6-camera folders + calib.json -> the same test-time samples the dataset makes."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from bevsimdet.data.classes import CAMERAS
from bevsimdet.data.config import DataConfig
from bevsimdet.data.custom import CustomFrames, build_custom_dataset, calib_to_json, eval_image_aug, find_frames, load_calib
from bevsimdet.errors import DataError


def write_custom_frame(dataset, index: int, folder, calib_path) -> None:
    """Copy sample ``index`` of a NuScenesDataset as a flat custom frame plus its calib.json."""
    info = dataset.samples[index]
    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for cam in CAMERAS:
        src = dataset.dataroot / info.cams[cam].path
        shutil.copy(src, folder / f"{cam}{src.suffix}")
        sizes.append(cv2.imread(str(src)).shape[:2])
    doc = calib_to_json(np.stack([info.cams[c].intrinsics for c in CAMERAS]), np.stack([info.cams[c].cam2ego for c in CAMERAS]), CAMERAS, sizes)
    doc["ego_poses"] = {folder.name: {"translation": info.ego2global[:3, 3].tolist(), "rotation": _quat(info.ego2global)}}
    calib_path.write_text(json.dumps(doc))


def _quat(m: np.ndarray) -> list[float]:
    from pyquaternion import Quaternion

    return list(Quaternion(matrix=m[:3, :3], atol=1e-6).elements)


@pytest.fixture(scope="module")
def val_dataset(tiny_world, tiny_infos):
    from bevsimdet.data.dataset import build_dataset

    cfg = DataConfig(dataroot=str(tiny_world), info_dir=str(tiny_infos["mini_val"].parent), load_points=False)
    return cfg, build_dataset(cfg, "mini_val", train=False)


def test_custom_frame_equals_the_datasets_test_sample(val_dataset, tmp_path):
    cfg, dataset = val_dataset
    write_custom_frame(dataset, 1, tmp_path / "frame", tmp_path / "calib.json")
    custom = build_custom_dataset(cfg, tmp_path / "frame", tmp_path / "calib.json")
    got, ref = custom[0], dataset[1]
    assert torch.equal(got.images, ref.images)  # same resize, crop and normalisation, bit for bit
    assert torch.equal(got.img_aug, ref.img_aug) and torch.equal(got.bev_aug, ref.bev_aug)
    torch.testing.assert_close(got.intrinsics, ref.intrinsics)
    torch.testing.assert_close(got.cam2ego, ref.cam2ego, atol=1e-5, rtol=0)
    assert got.points is None and got.gt_boxes.shape == (0, 9) and got.gt_labels.shape == (0,)
    assert got.meta.sample_token == "frame"
    np.testing.assert_allclose(got.meta.ego2global, ref.meta.ego2global, atol=1e-6)


def test_nuscenes_samples_folder_pairs_cameras_by_time(tiny_world, val_dataset):
    _, dataset = val_dataset
    frames = find_frames(tiny_world / "samples")
    by_front = {f.paths[0].name: f for f in frames}
    for info in dataset.samples:
        frame = by_front[info.cams["CAM_FRONT"].path.split("/")[-1]]
        assert [p.name for p in frame.paths] == [info.cams[c].path.split("/")[-1] for c in CAMERAS]
        assert frame.token == frame.paths[0].stem


def _png(path, h=9, w=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def test_folder_layouts_and_their_errors(tmp_path):
    for k in range(2):
        for cam in CAMERAS:
            _png(tmp_path / "multi" / cam / f"{k}_{cam}.png")
    frames = find_frames(tmp_path / "multi")
    assert [f.token for f in frames] == ["0_CAM_FRONT", "1_CAM_FRONT"]
    assert all(len(f.paths) == 6 for f in frames)
    (tmp_path / "multi" / "CAM_BACK" / "1_CAM_BACK.png").unlink()
    with pytest.raises(DataError, match="different numbers of images .*CAM_BACK: 1"):
        find_frames(tmp_path / "multi")

    for cam in CAMERAS[:-1]:
        _png(tmp_path / "flat" / f"{cam}.jpg")
    with pytest.raises(DataError, match="lacks images for CAM_BACK_RIGHT"):
        find_frames(tmp_path / "flat")
    _png(tmp_path / "flat" / "CAM_BACK_RIGHT.png")
    (frame,) = find_frames(tmp_path / "flat")
    assert frame.token == "flat" and frame.paths[-1].name == "CAM_BACK_RIGHT.png"

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no camera images"):
        find_frames(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        find_frames(tmp_path / "nope")


def test_images_must_match_the_calibrated_size(tmp_path):
    from pathlib import Path

    template = Path(__file__).resolve().parents[1] / "configs" / "calib_template.json"
    for cam in CAMERAS:
        _png(tmp_path / "f" / f"{cam}.png")  # 9 x 16, the template says 900 x 1600
    frames = CustomFrames(find_frames(tmp_path / "f"), load_calib(template), eval_image_aug(DataConfig()))
    with pytest.raises(DataError, match=r"is 9x16 \(HxW\) but the calibration of CAM_FRONT says 900x1600"):
        frames[0]
    (tmp_path / "f" / "CAM_FRONT.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot be decoded"):
        frames[0]
