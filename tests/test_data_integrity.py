"""Damaged sensor files are caught, not trained on (issue 26).

A truncated JPEG decodes half grey with only a libjpeg warning, and ``np.fromfile`` silently drops
a torn point file's tail; the readers of :mod:`bevsimdet.data.files` refuse both with a one-line
``DataError``, ``data.skip_bad_samples`` skips and counts such samples (across loader workers), and
``bevsimdet prepare --verify`` lists every bad file with a non-zero exit status.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bevsimdet.data.classes import CAMERAS
from bevsimdet.data.files import read_image, read_points
from bevsimdet.errors import DataError, one_line

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "demo_lidar.yaml")
LOAD_DIM = 5


def bevsimdet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bevsimdet", *args], capture_output=True, text=True, timeout=300, env=ENV)


def damage(path: Path, data: bytes) -> None:
    """Replace ``path`` (a hard link into the shared tiny world) without touching the original."""
    path.unlink()
    path.write_bytes(data)


def refused(read, path: Path, match: str) -> str:
    with pytest.raises(DataError) as e:
        read(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg
    return msg


@pytest.fixture(scope="module")
def infos(tiny_infos):
    from bevsimdet.data.infos import load_infos

    return {split: load_infos(p) for split, p in tiny_infos.items()}


@pytest.fixture()
def world(tiny_world, tmp_path) -> Path:
    """A hard-linked copy of the tiny world to damage (without its info folder)."""
    dst = tmp_path / "world"
    shutil.copytree(tiny_world, dst, copy_function=os.link, ignore=shutil.ignore_patterns("bevsimdet_infos"))
    return dst


@pytest.fixture(scope="module")
def jpeg(tiny_world, infos) -> bytes:
    return (tiny_world / infos["mini_train"].samples[0].cams["CAM_FRONT"].path).read_bytes()


@pytest.fixture(scope="module")
def scan(tiny_world, infos) -> bytes:
    return (tiny_world / infos["mini_train"].samples[0].lidar_path).read_bytes()


# --------------------------------------------------------------------------------------------
# the readers


def test_whole_files_read_as_the_plain_decoders_do(tiny_world, infos):
    s = infos["mini_train"].samples[0]
    for cam in CAMERAS:
        path = tiny_world / s.cams[cam].path
        ref = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image(path, size=(s.cams[cam].height, s.cams[cam].width)), ref)
    for rel in [s.lidar_path] + [w.path for w in s.sweeps]:
        ref = np.fromfile(tiny_world / rel, dtype=np.float32).reshape(-1, LOAD_DIM)
        np.testing.assert_array_equal(read_points(tiny_world / rel, LOAD_DIM), ref)


def test_infos_record_the_camera_image_size(tiny_world, infos):
    cam = infos["mini_train"].samples[0].cams["CAM_BACK"]
    h, w = cv2.imread(str(tiny_world / cam.path)).shape[:2]
    assert (cam.height, cam.width) == (h, w) and h > 0


@pytest.mark.parametrize("cut,match", [
    (0, "is empty (0 bytes)"),
    (2, "is not a JPEG"),  # inside the start-of-image marker
    (40, "is truncated"),  # inside the header segments
    (0.5, "is truncated"),  # inside the compressed scan
    (-1, "is truncated"),  # half of the end-of-image marker
    (-2, "is truncated"),  # exactly before it
])
def test_cut_jpegs_are_refused(tmp_path, jpeg, cut, match):
    n = int(len(jpeg) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(jpeg) + cut)
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[:n])
    msg = refused(read_image, path, match)
    assert "skip_bad_samples" in msg  # the fix names the switch that skips it


def test_jpeg_padding_after_the_end_marker_is_accepted_but_not_before_it(tmp_path, jpeg):
    path = tmp_path / "padded.jpg"
    path.write_bytes(jpeg + b"\0" * 100)
    np.testing.assert_array_equal(read_image(path), cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    path.write_bytes(jpeg[: len(jpeg) // 2] + b"\0" * (len(jpeg) - len(jpeg) // 2))  # a pre-allocated, half-written download
    refused(read_image, path, "is truncated")


def test_png_renamed_jpg_is_refused_but_a_png_is_read(tmp_path, jpeg):
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    ok, png = cv2.imencode(".png", image)
    assert ok
    (tmp_path / "a.jpg").write_bytes(png.tobytes())
    refused(read_image, tmp_path / "a.jpg", "is a PNG, not a JPEG")
    (tmp_path / "a.png").write_bytes(png.tobytes())
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), image[..., ::-1])


def test_image_of_another_size_than_recorded_is_refused(tmp_path, jpeg):
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg)
    assert read_image(path, size=(h, w)).shape == (h, w, 3)
    refused(lambda p: read_image(p, size=(h * 2, w * 2)), path, f"is {h}x{w} (HxW), its record says {2 * h}x{2 * w}")


def test_missing_files_are_named(tmp_path):
    refused(read_image, tmp_path / "gone.jpg", "is missing")
    refused(lambda p: read_points(p, LOAD_DIM), tmp_path / "gone.pcd.bin", "is missing")


@pytest.mark.parametrize("cut,match", [
    (0, "is empty"),
    (1001, "1001 bytes is not a whole number of 5-float32 points"),  # the file: 250 floats, a multiple of 5
    (20 * 7 + 8, "is not a whole number"),  # mid-point, on a float boundary
    (20 * 7 + 3, "is not a whole number"),  # mid-float
])
def test_torn_point_files_are_refused(tmp_path, scan, cut, match):
    path = tmp_path / "cut.pcd.bin"
    path.write_bytes(scan[:cut])
    refused(lambda p: read_points(p, LOAD_DIM), path, match)


def test_a_cut_at_a_point_boundary_cannot_be_detected(tmp_path, scan):
    # nuScenes stores no point count: a scan cut after whole points reads as a shorter scan
    path = tmp_path / "cut.pcd.bin"
    path.write_bytes(scan[: 20 * 7])
    np.testing.assert_array_equal(read_points(path, LOAD_DIM), np.frombuffer(scan, np.float32).reshape(-1, LOAD_DIM)[:7])


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("channel", [0, 4])  # x, and the ring index that the model never reads
def test_non_finite_points_are_refused(tmp_path, scan, value, channel):
    points = np.frombuffer(scan, np.float32).reshape(-1, LOAD_DIM).copy()
    points[3, channel] = value
    path = tmp_path / "nan.pcd.bin"
    path.write_bytes(points.tobytes())
    refused(lambda p: read_points(p, LOAD_DIM), path, "non-finite values")


# --------------------------------------------------------------------------------------------
# the dataset, the loader and custom images


def test_dataset_refuses_or_skips_damaged_keyframes_and_sweeps(world, infos, jpeg, scan):
    from bevsimdet.data.dataset import NuScenesDataset

    info = infos["mini_val"]
    s0, s1, s2 = info.samples[:3]
    damage(world / s0.cams["CAM_FRONT_LEFT"].path, jpeg[:3000])
    damage(world / s1.lidar_path, scan[:1001])
    damage(world / s2.sweeps[0].path, scan[:20 * 4 + 2])
    for i, path in enumerate([s0.cams["CAM_FRONT_LEFT"].path, s1.lidar_path, s2.sweeps[0].path]):
        with pytest.raises(DataError, match="skip_bad_samples") as e:
            NuScenesDataset(info, world, image_size=(64, 128), sweeps=1)[i]
        assert str(world / path) in str(e.value) and "\n" not in str(e.value)
    ds = NuScenesDataset(info, world, image_size=(64, 128), sweeps=1, skip_bad_samples=True)
    assert ds[0].meta.sample_token == info.samples[3].token and ds.skipped == 3


def test_skips_in_loader_workers_are_counted_in_the_main_process(world, infos, scan):
    from bevsimdet.data.dataset import NuScenesDataset
    from bevsimdet.data.loader import build_dataloader

    info = infos["mini_val"]
    for i in (0, 3):  # one in each worker's first batch of 2
        damage(world / info.samples[i].lidar_path, scan[:1001])
    ds = NuScenesDataset(info, world, image_size=(64, 128), sweeps=0, skip_bad_samples=True)
    tokens = [m.sample_token for b in build_dataloader(ds, 2, shuffle=False, seed=0, num_workers=2) for m in b.meta]
    assert len(tokens) == len(info) and not {info.samples[0].token, info.samples[3].token} & set(tokens)
    assert ds.skipped == 2  # each bad sample was asked for once, in a worker process


def test_a_data_error_from_a_loader_worker_stays_one_line(world, infos, scan):
    from bevsimdet.data.dataset import NuScenesDataset
    from bevsimdet.data.loader import build_dataloader

    info = infos["mini_val"]
    damage(world / info.samples[0].lidar_path, scan[:1001])
    loader = build_dataloader(NuScenesDataset(info, world, image_size=(64, 128), sweeps=0), 1, shuffle=False, seed=0, num_workers=1)
    with pytest.raises(DataError) as e:
        next(iter(loader))
    assert "\n" in str(e.value)  # torch re-raises it around the worker's traceback
    assert one_line(e.value).startswith(f"point file {world / info.samples[0].lidar_path} is corrupt (1001 bytes")


def test_custom_frames_refuse_a_truncated_jpeg(tmp_path, jpeg):
    from bevsimdet.data.config import DataConfig
    from bevsimdet.data.custom import CustomFrames, eval_image_aug, find_frames, parse_calib

    doc = json.loads((Path(__file__).resolve().parents[1] / "configs" / "calib_template.json").read_text())
    for cam in doc["cameras"].values():
        cam.pop("image_size")  # the template's is full resolution, the tiny world's images are not
    for cam in CAMERAS:
        (tmp_path / "f" / cam).mkdir(parents=True)
        (tmp_path / "f" / cam / "000.jpg").write_bytes(jpeg)
    damage(tmp_path / "f" / "CAM_BACK" / "000.jpg", jpeg[:-100])
    frames = CustomFrames(find_frames(tmp_path / "f"), parse_calib(doc), eval_image_aug(DataConfig()))
    with pytest.raises(DataError, match=r"CAM_BACK/000.jpg is truncated"):
        frames[0]


# --------------------------------------------------------------------------------------------
# prepare --verify


def test_check_file_names_each_problem(world, infos, jpeg, scan):
    from bevsimdet.data.verify import FileJob, check_file

    s = infos["mini_train"].samples[0]
    cam = s.cams["CAM_FRONT"]
    assert check_file(FileJob("camera", cam.path, (cam.height, cam.width)), world, LOAD_DIM) == (len(jpeg), None)
    assert check_file(FileJob("lidar", s.lidar_path), world, LOAD_DIM) == (len(scan), None)
    assert check_file(FileJob("camera", cam.path, (cam.height + 1, cam.width)), world, LOAD_DIM)[1].startswith(f"is {cam.height}x{cam.width} (HxW)")
    damage(world / s.lidar_path, scan[:1001])
    assert check_file(FileJob("lidar", s.lidar_path), world, LOAD_DIM)[1].startswith("is corrupt (1001 bytes")
    assert check_file(FileJob("sweep", "sweeps/nothing.pcd.bin"), world, LOAD_DIM)[1] == "is missing"


def test_jobs_cover_every_file_once(infos):
    from bevsimdet.data.verify import jobs_of

    jobs = jobs_of(infos.values())
    paths = [j.path for j in jobs]
    assert len(paths) == len(set(paths))
    want = {c.path for i in infos.values() for s in i.samples for c in s.cams.values()}
    want |= {s.lidar_path for i in infos.values() for s in i.samples} | {w.path for i in infos.values() for s in i.samples for w in s.sweeps}
    assert set(paths) == want
    assert all(j.size is not None for j in jobs if j.kind == "camera")


@pytest.mark.slow
def test_prepare_verify_lists_bad_files_and_fails(world, infos, jpeg, scan):
    r = bevsimdet("prepare", "--dataroot", str(world), "--workers", "2", "--verify", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    n_files = len({c.path for i in infos.values() for s in i.samples for c in s.cams.values()}) + len(
        {s.lidar_path for i in infos.values() for s in i.samples} | {w.path for i in infos.values() for s in i.samples for w in s.sweeps})
    assert f"all {n_files} files are readable" in r.stdout

    s0, s1 = infos["mini_train"].samples[:2]
    cut, holed, torn, empty = s0.cams["CAM_FRONT"].path, s1.cams["CAM_BACK"].path, s0.lidar_path, s1.sweeps[-1].path
    damage(world / cut, jpeg[:3000])
    mid = len(jpeg) // 2  # both markers intact, compressed data missing: only the decoder notices
    damage(world / holed, jpeg[:mid] + jpeg[mid + 300:])
    damage(world / torn, scan[:1001])
    damage(world / empty, b"")
    r = bevsimdet("prepare", "--dataroot", str(world), "--workers", "2", "--verify", "--no-progress")
    assert r.returncode == 2
    out = " ".join(r.stdout.split())
    samples = sum(len(i) for i in infos.values())
    for kind, files, bad in [("camera", 6 * samples, 2), ("lidar", samples, 1), ("sweep", n_files - 7 * samples, 1)]:
        assert re.search(rf"│ {kind} +│ +{files} │ +[\d.]+ │ +{bad} │", r.stdout), r.stdout  # the summary row: files, MB, bad
    assert f"bad camera: {cut} is truncated" in out
    assert f"bad camera: {holed} is damaged (the JPEG decoder reports: Corrupt JPEG data" in out
    assert f"bad lidar: {torn} is corrupt (1001 bytes" in out
    assert f"bad sweep: {empty} is empty (0 bytes)" in out
    error = r.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: 4 of {n_files} files under {world} are missing or damaged")
    assert "bevsimdet simulate --out" in error[0] and "data.skip_bad_samples=true" in error[0]
    listed = (world / "bevsimdet_infos" / "bad_files.txt").read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in listed) == sorted([cut, holed, torn, empty])


# --------------------------------------------------------------------------------------------
# training


@pytest.mark.slow
def test_training_skips_and_reports_damaged_samples_or_stops_on_them(world, infos, jpeg, scan):
    """The issue's reproduction: a JPEG cut to 3000 bytes and a scan cut to 1001 bytes."""
    val = infos["mini_val"].samples
    damage(world / val[1].cams["CAM_FRONT"].path, jpeg[:3000])
    damage(world / val[4].lidar_path, scan[:1001])
    # one epoch of the 6-sample split in 3 steps of 2, so both damaged samples are met
    args = ["train", CONFIG, "--dataroot", str(world), "--set", "data.train_split=mini_val", "--set", "train.max_steps=3",
            "--set", "train.validate=false", "--set", "train.num_workers=1", "--set", "data.sweeps=1", "--no-progress"]
    r = bevsimdet(*args, "--work-dir", str(world / "stop"))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and ("is truncated (3000 bytes" in last or "is corrupt (1001 bytes" in last), r.stderr[-2000:]
    r = bevsimdet(*args, "--work-dir", str(world / "skip"), "--set", "data.skip_bad_samples=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training skipped 2 sample(s) of split 'mini_val' with missing or damaged files" in r.stderr
    assert (world / "skip" / "checkpoints" / "latest.safetensors").is_file()


def test_info_files_without_camera_sizes_still_load_and_bad_sizes_are_refused(tmp_path, tiny_infos, tiny_infos_json):
    from bevsimdet.data.infos import load_infos

    # the columnar files record the sizes too
    assert load_infos(tiny_infos["mini_val"]).samples[0].cams["CAM_FRONT"].width > 0
    doc = json.loads(Path(tiny_infos_json["mini_val"]).read_text())
    cam = doc["samples"][0]["cams"]["CAM_FRONT"]
    assert cam["width"] > 0 and cam["height"] > 0
    for c in doc["samples"][0]["cams"].values():  # an info file written before sizes were recorded
        del c["width"], c["height"]
    path = tmp_path / "infos_mini_val.json"
    path.write_text(json.dumps(doc))
    assert load_infos(path).samples[0].cams["CAM_FRONT"].width == 0  # 0: unchecked
    for bad in (0, "400", 1.5):
        cam["width"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(DataError, match=r"cams.CAM_FRONT.width must be an integer >= 1"):
            load_infos(path)
