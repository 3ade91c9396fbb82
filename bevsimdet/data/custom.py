"""Custom camera data: a folder of 6-camera frames plus one ``calib.json`` for the rig.

This is the path for running a camera-only model on your own recordings (``bevsimdet infer
--images DIR --calib calib.json``). Images get exactly the dataset's test-time transform
(:class:`bevsimdet.data.transforms.ImageAug` with ``rng=None``: fixed resize, centred crop,
ImageNet normalisation), and every frame becomes a :class:`~bevsimdet.data.dataset.SampleItem`,
so the usual :func:`~bevsimdet.data.loader.collate` turns frames into a :class:`Batch`.

Folder layouts (images: ``.jpg``, ``.jpeg`` or ``.png``)::

    DIR/CAM_FRONT/*.jpg, DIR/CAM_FRONT_RIGHT/*.jpg, ...   one sub-folder per camera (the nuScenes
                                                          ``samples/`` layout); frames are paired
                                                          in sorted file-name order
    DIR/CAM_FRONT.jpg, DIR/CAM_FRONT_RIGHT.jpg, ...       a single frame

A frame's token (the key in the results file) is the stem of its ``CAM_FRONT`` file (the folder
name for a single frame).

``calib.json`` (see ``configs/calib_template.json``; keys starting with ``_`` are comments)::

    {"format": "bevsimdet-calib/v1",
     "cameras": {"CAM_FRONT": {"intrinsics": 3 x 3 (pixels of the image as stored),
                               "sensor2ego": {"translation": [x, y, z], "rotation": [w, x, y, z]},
                               "image_size": [H, W]  (optional, checked against the images)},
                 ... all six cameras ...},
     "ego_poses": {"<frame token>": {"translation": [...], "rotation": [...]}}  (optional)}

``sensor2ego`` is the nuScenes ``calibrated_sensor`` record: it maps OpenCV camera coordinates
(x right, y down, z forward) into the ego frame (x forward, y left, z up, origin on the ground
under the rear axle); a 4 x 4 ``"cam2ego"`` matrix may be given instead. Without an ego pose a
frame's results are written in its ego frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from bevsimdet.data.batch import BOX_DIM, SampleMeta
from bevsimdet.data.classes import CAMERAS
from bevsimdet.data.transforms import ImageAug, normalize_image, warp_image
from bevsimdet.errors import DataError
from bevsimdet.geometry.transforms import make_transform

CALIB_FORMAT = "bevsimdet-calib/v1"
TEMPLATE = "configs/calib_template.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_TILT_DEG = 45.0  # an optical axis steeper than this is almost surely a wrong rotation convention
ORTHO_TOL = 1e-3
QUAT_NORM_TOL = 1e-3


class CalibError(DataError):
    """A calibration file that is missing, malformed or physically implausible."""


@dataclass
class RigCalib:
    """Validated calibration: per camera (in ``cameras`` order) ``intrinsics`` 3 x 3 and
    ``cam2ego`` 4 x 4, the optional image size ``(H, W)``, and ego poses per frame token."""

    cameras: tuple[str, ...]
    intrinsics: np.ndarray  # N x 3 x 3
    cam2ego: np.ndarray  # N x 4 x 4
    image_sizes: list[tuple[int, int] | None]
    ego_poses: dict[str, np.ndarray] = field(default_factory=dict)  # token -> 4 x 4 ego -> global


# --------------------------------------------------------------------------------------------
# calib.json


def load_calib(path: str | Path, cameras: Sequence[str] = CAMERAS) -> RigCalib:
    """Read and validate a ``calib.json``; any problem is a one-line :class:`CalibError`."""
    path = Path(path)
    if not path.is_file():
        raise CalibError(f"calibration file {path} does not exist", fix=f"write one from {TEMPLATE}")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError; RecursionError: absurd nesting
        raise CalibError(f"calibration file {path} is not valid JSON ({str(e).splitlines()[0]})", fix=f"compare with {TEMPLATE}") from None
    return parse_calib(doc, cameras, source=str(path))


def parse_calib(doc: Any, cameras: Sequence[str] = CAMERAS, *, source: str = "calib.json") -> RigCalib:
    """Validate a decoded ``calib.json`` document (see the module docstring)."""

    def fail(what: str) -> CalibError:
        return CalibError(f"{source}: {what}", fix=f"see {TEMPLATE}")

    _check_keys(doc, {"format", "cameras", "ego_poses"}, "the top level", fail)
    if doc.get("format") != CALIB_FORMAT:
        raise fail(f"'format' must be {CALIB_FORMAT!r}, got {doc.get('format')!r}")
    cams = doc.get("cameras")
    _check_keys(cams, set(cameras), "'cameras'", fail)
    missing = [c for c in cameras if c not in cams]
    if missing:
        raise fail(f"'cameras' lacks {', '.join(missing)} (the model needs all of {', '.join(cameras)})")
    intrinsics, cam2ego, sizes = [], [], []
    for name in cameras:
        k, t, size = _camera(cams[name], f"cameras.{name}", fail)
        intrinsics.append(k)
        cam2ego.append(t)
        sizes.append(size)
    poses_doc = doc.get("ego_poses", {})
    _check_keys(poses_doc, None, "'ego_poses'", fail)
    poses = {str(token): _rigid(pose, f"ego_poses.{token}", fail) for token, pose in poses_doc.items() if not str(token).startswith("_")}
    return RigCalib(tuple(cameras), np.stack(intrinsics), np.stack(cam2ego), sizes, poses)


def _check_keys(obj: Any, allowed: set[str] | None, where: str, fail: Any) -> None:
    """``obj`` must be a JSON object; with ``allowed``, only those keys (and ``_comments``)."""
    if not isinstance(obj, dict):
        raise fail(f"{where} must be a JSON object, got {type(obj).__name__}")
    if allowed is not None:
        unknown = sorted(k for k in obj if k not in allowed and not str(k).startswith("_"))
        if unknown:
            raise fail(f"unknown key(s) {', '.join(unknown)} in {where} (allowed: {', '.join(sorted(allowed))})")


def _matrix(value: Any, shape: tuple[int, ...], where: str, fail: Any) -> np.ndarray:
    """A finite float64 array of exactly ``shape`` (nested JSON lists of numbers)."""
    what = f"a {shape[0]}x{shape[1]} matrix of numbers" if len(shape) == 2 else f"a list of {shape[0]} numbers"
    try:
        arr = np.array(value, dtype=np.float64) if isinstance(value, list) else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != shape or _has_bool(value):
        raise fail(f"{where} must be {what}, got {_short(value)}")
    if not np.isfinite(arr).all():
        raise fail(f"{where} has non-finite values (NaN or inf)")
    return arr


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, (list, tuple)) and any(_has_bool(v) for v in value)


def _camera(doc: Any, where: str, fail: Any) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    _check_keys(doc, {"intrinsics", "sensor2ego", "cam2ego", "image_size"}, where, fail)
    if "intrinsics" not in doc:
        raise fail(f"{where} lacks 'intrinsics' (3x3 pinhole matrix)")
    k = _matrix(doc["intrinsics"], (3, 3), f"{where}.intrinsics", fail)
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise fail(f"{where}.intrinsics: focal lengths fx={k[0, 0]:g}, fy={k[1, 1]:g} must be positive")
    if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0:
        raise fail(f"{where}.intrinsics must look like [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {k.tolist()}")
    if ("sensor2ego" in doc) == ("cam2ego" in doc):
        raise fail(f"{where} needs exactly one of 'sensor2ego' ({{translation, rotation}}) or 'cam2ego' (4x4)")
    if "cam2ego" in doc:
        t = _matrix(doc["cam2ego"], (4, 4), f"{where}.cam2ego", fail)
        if not np.allclose(t[3], [0.0, 0.0, 0.0, 1.0]):
            raise fail(f"{where}.cam2ego: last row must be [0, 0, 0, 1], got {t[3].tolist()}")
        _check_rotation(t[:3, :3], f"{where}.cam2ego", fail)
    else:
        t = _rigid(doc["sensor2ego"], f"{where}.sensor2ego", fail)
    tilt = np.degrees(np.arcsin(np.clip(t[2, 2], -1.0, 1.0)))  # ego z of the optical axis
    if abs(tilt) > MAX_TILT_DEG:
        raise fail(
            f"{where}: the optical axis points {tilt:+.0f} deg from the horizon; the rotation must map OpenCV "
            "camera axes (x right, y down, z forward) into the ego frame (x forward, y left, z up)"
        )
    size = None
    if "image_size" in doc:
        s = doc["image_size"]
        if not (isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in s)):
            raise fail(f"{where}.image_size must be [height, width] in pixels, got {s!r}")
        size = (s[0], s[1])
        if not (0 <= k[0, 2] <= size[1] and 0 <= k[1, 2] <= size[0]):
            raise fail(f"{where}: principal point ({k[0, 2]:g}, {k[1, 2]:g}) lies outside the {size[1]}x{size[0]} image")
    return k, t, size


def _rigid(doc: Any, where: str, fail: Any) -> np.ndarray:
    """4 x 4 transform of a ``{"translation": [3], "rotation": [w, x, y, z]}`` record."""
    _check_keys(doc, {"translation", "rotation"}, where, fail)
    for key in ("translation", "rotation"):
        if key not in doc:
            raise fail(f"{where} lacks '{key}'")
    trans = _matrix(doc["translation"], (3,), f"{where}.translation", fail)
    quat = _matrix(doc["rotation"], (4,), f"{where}.rotation (quaternion w, x, y, z)", fail)
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > QUAT_NORM_TOL:
        raise fail(f"{where}.rotation must be a unit quaternion (w, x, y, z), its norm is {norm:.4g}")
    return make_transform(quat, trans)


def _check_rotation(rot: np.ndarray, where: str, fail: Any) -> None:
    if not np.allclose(rot.T @ rot, np.eye(3), atol=ORTHO_TOL) or np.linalg.det(rot) < 0:
        raise fail(f"{where}: the upper-left 3x3 block must be a rotation (orthonormal, det +1)")


def calib_to_json(intrinsics: np.ndarray, cam2ego: np.ndarray, cameras: Sequence[str] = CAMERAS, image_sizes: Sequence[tuple[int, int] | None] | None = None) -> dict:
    """The ``calib.json`` document of N cameras (``intrinsics`` N x 3 x 3, ``cam2ego`` N x 4 x 4)."""
    from pyquaternion import Quaternion

    out: dict[str, Any] = {"format": CALIB_FORMAT, "cameras": {}}
    for n, name in enumerate(cameras):
        t = np.asarray(cam2ego[n], dtype=np.float64)
        cam = {
            "intrinsics": np.asarray(intrinsics[n], dtype=np.float64).round(6).tolist(),
            "sensor2ego": {"translation": t[:3, 3].round(6).tolist(), "rotation": np.round(Quaternion(matrix=t[:3, :3], atol=1e-6).elements, 8).tolist()},
        }
        if image_sizes is not None and image_sizes[n] is not None:
            cam["image_size"] = [int(v) for v in image_sizes[n]]
        out["cameras"][name] = cam
    return out


# --------------------------------------------------------------------------------------------
# image folders


@dataclass
class Frame:
    token: str
    paths: tuple[Path, ...]  # one image per camera, in calibration order


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_frames(images_dir: str | Path, cameras: Sequence[str] = CAMERAS) -> list[Frame]:
    """The frames of a custom image folder (see the module docstring for the layouts)."""
    root = Path(images_dir)
    fix = "use DIR/<CAMERA>/<frame>.jpg (one folder per camera) or DIR/<CAMERA>.jpg (one frame)"
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist", fix=fix)
    if all((root / c).is_dir() for c in cameras):
        lists = {c: _images_in(root / c) for c in cameras}
        counts = {c: len(v) for c, v in lists.items()}
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{c}: {n}" for c, n in counts.items())
            raise DataError(f"camera folders under {root} hold different numbers of images ({detail})", fix="give every camera one image per frame")
        if not counts[cameras[0]]:
            raise DataError(f"camera folders under {root} hold no images ({', '.join(IMAGE_SUFFIXES)})", fix=fix)
        frames = [Frame(paths[0].stem, tuple(paths)) for paths in zip(*(lists[c] for c in cameras))]
        tokens = [f.token for f in frames]
        if len(set(tokens)) != len(tokens):
            raise DataError(f"duplicate {cameras[0]} file names under {root / cameras[0]}", fix="give every frame its own file name")
        return frames
    flat = {p.stem: p for p in _images_in(root)}
    missing = [c for c in cameras if c not in flat]
    if len(missing) == len(cameras):
        raise DataError(f"no camera images found in {root}", fix=fix)
    if missing:
        raise DataError(f"{root} lacks images for {', '.join(missing)}", fix=fix)
    return [Frame(root.resolve().name, tuple(flat[c] for c in cameras))]


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB of an image file, or a :class:`DataError` naming it; a truncated or
    mislabelled JPEG is refused as in training (:mod:`bevsimdet.data.files`)."""
    from bevsimdet.data.files import read_image

    return read_image(path, fix="re-copy the file, or remove the frame from every camera folder")


class CustomFrames(Dataset):
    """Frames of a custom folder with one calibration, as test-time :class:`SampleItem` s
    (no LiDAR, no GT; ``bev_aug`` the identity).

    ``image_aug``: the test transform of the model's data config (see :func:`build_custom_dataset`).
    """

    def __init__(self, frames: Sequence[Frame], calib: RigCalib, image_aug: ImageAug):
        if not frames:
            raise DataError("no frames to run on", fix="check --images")
        self.frames = list(frames)
        self.calib = calib
        self.image_aug = image_aug
        self.intrinsics = torch.from_numpy(calib.intrinsics.astype(np.float32))
        self.cam2ego = torch.from_numpy(calib.cam2ego.astype(np.float32))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: int | tuple[int, Any]) -> Any:
        from bevsimdet.data.dataset import SampleItem

        index = key[0] if isinstance(key, tuple) else key  # the seeded sampler passes (index, aug key)
        frame = self.frames[index]
        images, augs = [], []
        for n, path in enumerate(frame.paths):
            image = read_rgb(path)
            expected = self.calib.image_sizes[n]
            if expected is not None and tuple(image.shape[:2]) != expected:
                raise DataError(
                    f"image {path} is {image.shape[0]}x{image.shape[1]} (HxW) but the calibration of {self.calib.cameras[n]} says {expected[0]}x{expected[1]}",
                    fix="calibrate at the stored resolution or fix image_size",
                )
            mat, resized = self.image_aug.sample(image.shape[:2], None)
            images.append(normalize_image(warp_image(image, mat, resized, self.image_aug.image_size)))
            augs.append(mat)
        return SampleItem(
            images=torch.from_numpy(np.stack(images)),
            intrinsics=self.intrinsics,
            cam2ego=self.cam2ego,
            img_aug=torch.from_numpy(np.stack(augs).astype(np.float32)),
            bev_aug=torch.eye(4),
            points=None,
            gt_boxes=torch.zeros(0, BOX_DIM),
            gt_labels=torch.zeros(0, dtype=torch.long),
            meta=SampleMeta(
                sample_token=frame.token,
                ego2global=self.calib.ego_poses.get(frame.token, np.eye(4)),
                image_paths=tuple(str(p) for p in frame.paths),
            ),
        )


def eval_image_aug(data_cfg: Any, resize: float | None = None) -> ImageAug:
    """The dataset's test-time image transform of a :class:`~bevsimdet.data.config.DataConfig`
    (``resize`` overrides ``test_resize`` for images of another resolution than the training data)."""
    return ImageAug(
        image_size=tuple(data_cfg.image_size),
        test_resize=data_cfg.test_resize if resize is None else float(resize),
        bot_pct_lim=tuple(data_cfg.bot_pct_lim),
    )


def build_custom_dataset(data_cfg: Any, images_dir: str | Path, calib_path: str | Path, *, resize: float | None = None) -> CustomFrames:
    """Frames of ``images_dir`` with the calibration at ``calib_path``, transformed as ``data_cfg``'s test set."""
    calib = load_calib(calib_path)
    return CustomFrames(find_frames(images_dir, calib.cameras), calib, eval_image_aug(data_cfg, resize))


__all__ = [
    "CALIB_FORMAT",
    "CalibError",
    "RigCalib",
    "Frame",
    "CustomFrames",
    "load_calib",
    "parse_calib",
    "calib_to_json",
    "find_frames",
    "read_rgb",
    "eval_image_aug",
    "build_custom_dataset",
]
