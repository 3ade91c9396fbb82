"""The nuScenes dataset: one info record -> one typed, augmented sample.

Everything in a :class:`SampleItem` is in the keyframe ego frame of :mod:`bevsimdet.data.batch`
moved by ``bev_aug``, except the camera calibration (``intrinsics`` of the original image,
``cam2ego`` into the un-augmented ego frame) which the two augmentation matrices complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bevsimdet.data.batch import BOX_DIM, POINT_DIM, SampleMeta
from bevsimdet.data.classes import CAMERAS, CLASS_TO_LABEL
from bevsimdet.data.infos import ColumnarInfos, InfoFile, SampleInfo, SampleView, load_infos
from bevsimdet.data.transforms import BEVAug, ImageAug, apply_bev_aug, normalize_image, warp_image
from bevsimdet.errors import DataError

log = logging.getLogger(__name__)

SKIP_HINT = "restore the file (re-run `bevsimdet simulate` / re-extract nuScenes) or set data.skip_bad_samples: true"
SWEEP_MIN_RANGE = 1.0  # m: sweep returns this close to the sensor hit the car itself (as mmdet3d)

# The augmentation key a sampler may pass with an index: (seed, epoch); the sample's random
# draws then depend on (seed, epoch, index) only, whatever the worker layout.
AugKey = tuple[int, int]


@dataclass
class SampleItem:
    """One sample (N cameras, H x W augmented image size, P points, M boxes).

    * ``images``     N x 3 x H x W float32, ImageNet-normalised RGB.
    * ``intrinsics`` N x 3 x 3, ``cam2ego`` N x 4 x 4, ``img_aug`` N x 3 x 3, ``bev_aug`` 4 x 4.
    * ``points``     P x 5 (x, y, z, intensity, time_lag) or None when points are not loaded.
    * ``gt_boxes``   M x 9, ``gt_labels`` M (long).
    """

    images: Tensor
    intrinsics: Tensor
    cam2ego: Tensor
    img_aug: Tensor
    bev_aug: Tensor
    points: Tensor | None
    gt_boxes: Tensor
    gt_labels: Tensor
    meta: SampleMeta


def f32(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def read_image(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB, or a :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(f"image {path} is missing", fix=SKIP_HINT)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image {path} is corrupt (cannot be decoded)", fix=SKIP_HINT)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_points(path: Path, load_dim: int) -> np.ndarray:
    """P x 4 float32 (x, y, z, intensity) from a nuScenes ``.pcd.bin`` of ``load_dim`` floats a point."""
    if not path.is_file():
        raise DataError(f"point file {path} is missing", fix=SKIP_HINT)
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % load_dim:
        raise DataError(f"point file {path} is corrupt ({raw.size} floats is not a multiple of load_dim={load_dim})", fix=SKIP_HINT)
    pts = raw.reshape(-1, load_dim)[:, :4]
    if not np.isfinite(pts).all():
        raise DataError(f"point file {path} is corrupt (non-finite values)", fix=SKIP_HINT)
    return pts


class NuScenesDataset(Dataset):
    """Samples of one info file, images and LiDAR read from ``dataroot``.

    ``train`` turns on random augmentation (``image_aug`` and ``bev_aug``); otherwise images get
    the fixed test transform and ``bev_aug`` is the identity. ``sweeps`` previous LiDAR sweeps are
    merged into the keyframe (in the keyframe ego frame, with their time lag): every
    ``sweep_stride``-th one, newest first, so that few sweeps can still span a long time (motion
    over 0.45 s, as 9 consecutive 20 Hz sweeps, for the points of 3). With
    ``skip_bad_samples`` a sample whose files are missing or corrupt is replaced by the next good
    one with a warning, and counted in :attr:`skipped` (per process).
    """

    def __init__(
        self,
        infos: InfoFile | ColumnarInfos | str | Path,
        dataroot: str | Path,
        *,
        image_size: tuple[int, int] = (256, 704),
        train: bool = False,
        image_aug: ImageAug | None = None,
        bev_aug: BEVAug | None = None,
        load_points: bool = True,
        sweeps: int = 9,
        sweep_stride: int = 1,
        load_dim: int = 5,
        point_cloud_range: Sequence[float] | None = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0),
        use_valid_flag: bool = False,
        skip_bad_samples: bool = False,
        cameras: Sequence[str] = CAMERAS,
    ):
        self.infos = infos if isinstance(infos, (InfoFile, ColumnarInfos)) else load_infos(infos)
        self.dataroot = Path(dataroot)
        if not self.dataroot.is_dir():
            raise DataError(f"dataroot {self.dataroot} does not exist", fix="pass the folder the info files were made from")
        if sweep_stride < 1:
            raise DataError(f"sweep_stride must be >= 1, got {sweep_stride}", fix="set data.sweep_stride to 1 (consecutive sweeps) or more")
        if sweeps * sweep_stride > self.infos.max_sweeps:
            raise DataError(
                f"{sweeps} sweeps at stride {sweep_stride} need {sweeps * sweep_stride} stored sweeps but the info file of split '{self.infos.split}' stores {self.infos.max_sweeps}",
                fix=f"rerun `bevsimdet prepare --max-sweeps {sweeps * sweep_stride} --force` or lower data.sweeps / data.sweep_stride",
            )
        self.train = train
        self.image_aug = ImageAug(image_size=tuple(image_size)) if image_aug is None else image_aug
        if tuple(self.image_aug.image_size) != tuple(image_size):
            raise ValueError(f"image_aug.image_size {self.image_aug.image_size} != image_size {tuple(image_size)}")
        self.bev_aug = BEVAug() if bev_aug is None else bev_aug
        self.load_points = load_points
        self.sweeps = sweeps
        self.sweep_stride = sweep_stride
        self.load_dim = load_dim
        self.point_cloud_range = None if point_cloud_range is None else np.asarray(point_cloud_range, dtype=np.float64)
        self.use_valid_flag = use_valid_flag
        self.skip_bad_samples = skip_bad_samples
        self.cameras = tuple(cameras)
        self.skipped = 0
        # columnar infos stay a lazy view of the shared memory map: a list would build every
        # sample's objects in every loader worker
        self.samples: Sequence[SampleInfo] = self.infos.samples if isinstance(self.infos.samples, SampleView) else list(self.infos.samples)
        if skip_bad_samples:
            self._drop_missing()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def sample_tokens(self) -> list[str]:
        if isinstance(self.samples, SampleView):
            return self.samples.tokens
        return [s.token for s in self.samples]

    def index_of(self, token: str) -> int:
        for i, t in enumerate(self.sample_tokens):
            if t == token:
                return i
        raise DataError(f"sample token {token} is not in split '{self.infos.split}'", fix="pick a token from `bevsimdet inspect`")

    def files_of(self, info: SampleInfo) -> list[Path]:
        files = [self.dataroot / info.cams[c].path for c in self.cameras]
        if self.load_points:
            files += [self.dataroot / info.lidar_path] + [self.dataroot / w.path for w in self.sweeps_of(info)]
        return files

    def _drop_missing(self) -> None:
        keep = [i for i, s in enumerate(self.samples) if all(p.is_file() for p in self.files_of(s))]
        dropped = len(self.samples) - len(keep)
        if dropped:
            log.warning("skipping %d of %d samples of split '%s' with missing files", dropped, len(self.samples), self.infos.split)
            self.skipped += dropped
            samples = self.samples
            self.samples = samples.subset(keep) if isinstance(samples, SampleView) else [samples[i] for i in keep]
        if not self.samples:
            raise DataError(f"no sample of split '{self.infos.split}' has all its files under {self.dataroot}", fix="check --dataroot")

    # ----------------------------------------------------------------------------------------

    def __getitem__(self, key: int | tuple[int, AugKey]) -> SampleItem:
        index, aug_key = key if isinstance(key, tuple) else (key, None)
        if not self.skip_bad_samples:
            return self.load(index, self._rng(index, aug_key))
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                return self.load(i, self._rng(i, aug_key))
            except DataError as e:
                self.skipped += 1
                log.warning("skipping sample %s: %s", self.samples[i].token, e)
        raise DataError(f"every sample of split '{self.infos.split}' is unreadable", fix="check --dataroot")

    def _rng(self, index: int, aug_key: AugKey | None) -> np.random.Generator | None:
        if not self.train:
            return None
        if aug_key is None:
            # no key from the sampler: draw from torch's RNG (seeded per worker by the DataLoader)
            return np.random.default_rng(int(torch.randint(0, 2**62, ())))
        return np.random.default_rng([int(aug_key[0]), int(aug_key[1]), index])

    def load(self, index: int, rng: np.random.Generator | None = None) -> SampleItem:
        """Sample ``index`` with the augmentation drawn from ``rng`` (None: test transform)."""
        info = self.samples[index]
        images, img_augs = [], []
        for cam in self.cameras:
            image = read_image(self.dataroot / info.cams[cam].path)
            mat, resized = self.image_aug.sample(image.shape[:2], rng)
            images.append(normalize_image(warp_image(image, mat, resized, self.image_aug.image_size)))
            img_augs.append(mat)
        points = self.load_lidar(info) if self.load_points else None
        boxes, labels = self.gt_of(info)
        bev = self.bev_aug.sample(rng)
        points, boxes = apply_bev_aug(points, boxes, bev)
        if self.point_cloud_range is not None:
            lo, hi = self.point_cloud_range[:3], self.point_cloud_range[3:]
            if points is not None:
                points = points[np.all((points[:, :3] >= lo) & (points[:, :3] <= hi), axis=1)]
            inside = np.all((boxes[:, :2] >= lo[:2]) & (boxes[:, :2] <= hi[:2]), axis=1)
            boxes, labels = boxes[inside], labels[inside]
        return SampleItem(
            images=f32(np.stack(images)),
            intrinsics=f32(np.stack([info.cams[c].intrinsics for c in self.cameras])),
            cam2ego=f32(np.stack([info.cams[c].cam2ego for c in self.cameras])),
            img_aug=f32(np.stack(img_augs)),
            bev_aug=f32(bev),
            points=None if points is None else f32(points),
            gt_boxes=f32(boxes.reshape(-1, BOX_DIM)),
            gt_labels=torch.from_numpy(labels.astype(np.int64)),
            meta=SampleMeta(
                sample_token=info.token,
                scene_token=info.scene_token,
                timestamp=info.timestamp,
                ego2global=info.ego2global.copy(),
                lidar2ego=info.lidar2ego.copy(),
                image_paths=tuple(info.cams[c].path for c in self.cameras),
                lidar_path=info.lidar_path,
            ),
        )

    def load_lidar(self, info: SampleInfo) -> np.ndarray:
        """P x 5 float32: the keyframe and its :meth:`sweeps_of` in the keyframe ego frame,
        with the time lag (s) in the last channel."""
        parts = []
        for path, sensor2ego, lag in [(info.lidar_path, info.lidar2ego, 0.0)] + [(w.path, w.sensor2ego, w.time_lag) for w in self.sweeps_of(info)]:
            pts = read_points(self.dataroot / path, self.load_dim)
            if lag > 0:
                pts = pts[np.hypot(pts[:, 0], pts[:, 1]) >= SWEEP_MIN_RANGE]
            out = np.empty((len(pts), POINT_DIM), dtype=np.float32)
            out[:, :3] = pts[:, :3] @ sensor2ego[:3, :3].T.astype(np.float32) + sensor2ego[:3, 3].astype(np.float32)
            out[:, 3] = pts[:, 3]
            out[:, 4] = lag
            parts.append(out)
        return np.concatenate(parts)

    def sweeps_of(self, info: SampleInfo) -> list:
        """The sweeps merged into ``info``'s keyframe: sweeps ``stride - 1, 2 stride - 1, ...`` of
        the stored ones (newest first), at most ``sweeps`` (fewer at the start of a scene)."""
        return info.sweeps[self.sweep_stride - 1 :: self.sweep_stride][: self.sweeps]

    def gt_of(self, info: SampleInfo) -> tuple[np.ndarray, np.ndarray]:
        """(M x 9 boxes, M labels) of the detection classes (valid boxes only with use_valid_flag)."""
        gt = info.gt
        keep = np.array([n in CLASS_TO_LABEL for n in gt.names], dtype=bool)
        if self.use_valid_flag:
            keep &= gt.valid
        labels = np.array([CLASS_TO_LABEL[n] for n, k in zip(gt.names, keep) if k], dtype=np.int64)
        return gt.boxes[keep].reshape(-1, BOX_DIM), labels


# --------------------------------------------------------------------------------------------


def infos_dir(cfg: Any) -> Path:
    from bevsimdet.data.infos import DEFAULT_DIRNAME

    return Path(cfg.info_dir) if cfg.info_dir else Path(cfg.dataroot) / DEFAULT_DIRNAME


def ensure_infos(cfg: Any, split: str, progress: bool = True) -> Path:
    """The info file of ``split``, built with ``create_infos`` first when missing (rank 0 builds,
    the other ranks wait)."""
    from bevsimdet.data.infos import create_infos, info_path

    path = info_path(infos_dir(cfg), split)
    if path.is_file():
        return path
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not dist or torch.distributed.get_rank() == 0:
        paths = create_infos(cfg.dataroot, cfg.version, infos_dir(cfg), max_sweeps=cfg.max_sweeps, workers=cfg.prepare_workers, progress=progress)
        if split not in paths:
            raise DataError(f"split '{split}' does not exist in {cfg.version}", fix=f"use one of {', '.join(paths)}")
    if dist:
        torch.distributed.barrier()
    return path


def build_dataset(cfg: Any, split: str, train: bool) -> NuScenesDataset:
    """The dataset of ``split`` as configured by a :class:`bevsimdet.data.config.DataConfig`."""
    infos = load_infos(ensure_infos(cfg, split))
    if infos.version != cfg.version:
        raise DataError(f"info file of split '{split}' was made for {infos.version}, the config says {cfg.version}", fix="fix data.version or data.info_dir")
    image_size = tuple(cfg.image_size)
    return NuScenesDataset(
        infos,
        cfg.dataroot,
        image_size=image_size,
        train=train,
        image_aug=ImageAug(
            image_size=image_size,
            resize_lim=tuple(cfg.resize_lim),
            test_resize=cfg.test_resize,
            bot_pct_lim=tuple(cfg.bot_pct_lim),
            rot_lim=tuple(cfg.rot_lim),
            rand_flip=cfg.rand_flip,
        ),
        bev_aug=BEVAug(rot_lim=tuple(cfg.bev_rot_lim), scale_lim=tuple(cfg.bev_scale_lim), flip=cfg.bev_flip),
        load_points=cfg.load_points,
        sweeps=cfg.sweeps,
        sweep_stride=cfg.sweep_stride,
        load_dim=cfg.load_dim,
        point_cloud_range=tuple(cfg.point_cloud_range),
        use_valid_flag=cfg.use_valid_flag,
        skip_bad_samples=cfg.skip_bad_samples,
    )
