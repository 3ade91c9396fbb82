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

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bevsimdet.data import files
from bevsimdet.data.files import read_sweep
from bevsimdet.data.batch import BOX_DIM, POINT_DIM, SampleMeta
from bevsimdet.data.classes import CAMERAS, CLASS_TO_LABEL, CLASSES
from bevsimdet.data.gt_paste import ObjectPaste
from bevsimdet.data.infos import ColumnarInfos, InfoFile, SampleInfo, SampleView, load_infos
from bevsimdet.data.transforms import BEVAug, ImageAug, apply_bev_aug, normalize_image, warp_image
from bevsimdet.errors import DataError

log = logging.getLogger(__name__)

SKIP_HINT = files.SKIP_HINT
SKIP_SLOTS = 257  # slots of the shared skip counter: the main process and up to 256 loader workers

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


def read_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """H x W x 3 uint8 RGB (``size``: the H x W it must have), or a one-line :class:`DataError`
    naming the file when it is missing, truncated or corrupt (see :mod:`bevsimdet.data.files`)."""
    return files.read_image(path, size=size, fix=SKIP_HINT)


def read_points(path: Path, load_dim: int) -> np.ndarray:
    """P x 4 float32 (x, y, z, intensity) from a nuScenes ``.pcd.bin`` of ``load_dim`` floats a
    point; a missing, torn or non-finite file is a :class:`DataError` (see :mod:`bevsimdet.data.files`)."""
    return files.read_points(path, load_dim, fix=SKIP_HINT)[:, :4]


def _skip_slot() -> int:
    """This process's slot of the shared skip counter: 0 in the main process, 1 + the id of a
    DataLoader worker (workers of one loader run at once, so they need their own slots)."""
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else 1 + info.id % (SKIP_SLOTS - 1)


class NuScenesDataset(Dataset):
    """Samples of one info file, images and LiDAR read from ``dataroot``.

    ``train`` turns on random augmentation (``image_aug`` and ``bev_aug``); otherwise images get
    the fixed test transform and ``bev_aug`` is the identity. ``sweeps`` previous LiDAR sweeps are
    merged into the keyframe (in the keyframe ego frame, with their time lag): every
    ``sweep_stride``-th one, newest first, so that few sweeps can still span a long time (motion
    over 0.45 s, as 9 consecutive 20 Hz sweeps, for the points of 3). With
    ``skip_bad_samples`` a sample whose files are missing or corrupt is replaced by the next good
    one with a warning, and counted in :attr:`skipped` (DataLoader workers included: the count
    lives in shared memory; per rank under torchrun). ``object_paste`` (training only) pastes
    GT-database objects into the points before the BEV augmentation, in the sampler epochs it is
    active for.
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
        object_paste: ObjectPaste | None = None,
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
        # shared memory, one slot per process: workers' skips reach the main process, and no
        # two processes ever add to the same slot
        self._skips = torch.zeros(SKIP_SLOTS, dtype=torch.int64).share_memory_()
        if object_paste is not None and not load_points:
            raise DataError("GT-paste pastes LiDAR points, but the dataset loads none", fix="set data.load_points: true or data.gt_paste.enabled: false")
        self.object_paste = object_paste
        # columnar infos stay a lazy view of the shared memory map: a list would build every
        # sample's objects in every loader worker
        self.samples: Sequence[SampleInfo] = self.infos.samples if isinstance(self.infos.samples, SampleView) else list(self.infos.samples)
        if skip_bad_samples:
            self._drop_missing()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def skipped(self) -> int:
        """Samples skipped so far for unreadable files (up front and while loading, in any worker)."""
        return int(self._skips.sum())

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

    def sample_classes(self) -> list[frozenset[int]]:
        """Per sample, the detection-class labels annotated in it (what class-balanced sampling
        groups by; valid boxes only with ``use_valid_flag``, before any range filter). Columnar
        infos answer from their arrays (28,000 trainval keyframes: no per-sample records);
        :meth:`sample_classes_reference` is the plain per-record version."""
        if not isinstance(self.samples, SampleView):
            return self.sample_classes_reference()
        present = self.samples.infos.gt_class_counts(CLASSES, valid_only=self.use_valid_flag) > 0
        if self.samples.index is not None:
            present = present[self.samples.index]
        return [frozenset(np.flatnonzero(row).tolist()) for row in present]

    def sample_classes_reference(self) -> list[frozenset[int]]:
        return [frozenset(int(c) for c in self.gt_of(info)[1]) for info in self.samples]

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
            self._skips[_skip_slot()] += dropped
            samples = self.samples
            self.samples = samples.subset(keep) if isinstance(samples, SampleView) else [samples[i] for i in keep]
        if not self.samples:
            raise DataError(f"no sample of split '{self.infos.split}' has all its files under {self.dataroot}", fix="check --dataroot")

    # ----------------------------------------------------------------------------------------

    def __getitem__(self, key: int | tuple[int, AugKey]) -> SampleItem:
        index, aug_key = key if isinstance(key, tuple) else (key, None)
        epoch = None if aug_key is None else int(aug_key[1])
        if not self.skip_bad_samples:
            return self.load(index, self._rng(index, aug_key), epoch)
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                return self.load(i, self._rng(i, aug_key), epoch)
            except DataError as e:
                self._skips[_skip_slot()] += 1
                log.warning("skipping sample %s: %s", self.samples[i].token, e)
        raise DataError(f"every sample of split '{self.infos.split}' is unreadable", fix="check --dataroot")

    def _rng(self, index: int, aug_key: AugKey | None) -> np.random.Generator | None:
        if not self.train:
            return None
        if aug_key is None:
            # no key from the sampler: draw from torch's RNG (seeded per worker by the DataLoader)
            return np.random.default_rng(int(torch.randint(0, 2**62, ())))
        return np.random.default_rng([int(aug_key[0]), int(aug_key[1]), index])

    def load(self, index: int, rng: np.random.Generator | None = None, epoch: int | None = None) -> SampleItem:
        """Sample ``index`` with the augmentation drawn from ``rng`` (None: test transform);
        ``epoch`` (the sampler's; None counts as 0) decides whether GT-paste is still on."""
        info = self.samples[index]
        images, img_augs = [], []
        for cam in self.cameras:
            rec = info.cams[cam]
            image = read_image(self.dataroot / rec.path, (rec.height, rec.width) if rec.width and rec.height else None)
            mat, resized = self.image_aug.sample(image.shape[:2], rng)
            images.append(normalize_image(warp_image(image, mat, resized, self.image_aug.image_size)))
            img_augs.append(mat)
        points = self.load_lidar(info) if self.load_points else None
        boxes, labels = self.gt_of(info)
        bev = self.bev_aug.sample(rng)
        if self.object_paste is not None and rng is not None and points is not None and self.object_paste.active(epoch):
            # drawn after the BEV matrix, so turning the paste on leaves every other augmentation as it was
            points, boxes, labels = self.object_paste(points, boxes, labels, info.gt.boxes, rng)
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
        parts = [read_sweep(self.dataroot / info.lidar_path, info.lidar2ego, 0.0, self.load_dim)]
        parts += [read_sweep(self.dataroot / w.path, w.sensor2ego, w.time_lag, self.load_dim) for w in self.sweeps_of(info)]
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


def report_skipped(dataset: NuScenesDataset, what: str) -> int:
    """Warn on stderr how many samples ``dataset`` skipped for unreadable files (this process and
    its loader workers) so that a finished run never hides them; returns the count."""
    n = dataset.skipped
    if n:
        log.warning(
            "%s skipped %d sample(s) of split '%s' with missing or damaged files (data.skip_bad_samples); "
            "list them with `bevsimdet prepare --dataroot %s --verify`",
            what, n, dataset.infos.split, dataset.dataroot,
        )
    return n


# --------------------------------------------------------------------------------------------


def infos_dir(cfg: Any) -> Path:
    from bevsimdet.data.infos import DEFAULT_DIRNAME

    return Path(cfg.info_dir) if cfg.info_dir else Path(cfg.dataroot) / DEFAULT_DIRNAME


def ensure_infos(cfg: Any, split: str, progress: bool = True, wait_s: float = 1800.0) -> Path:
    """The info file of ``split``, built with ``create_infos`` first when missing.

    Safe to call from every process of a torchrun job before (or without) the process group:
    builders serialise on a file lock next to the info files, so the first process builds and
    the others wait for it and then read its files; nothing waits inside a collective. A process
    that waits more than ``wait_s`` seconds stops with a one-line error naming ``bevsimdet
    prepare`` (run it once before the job)."""
    from bevsimdet.data.infos import create_infos, info_path
    from bevsimdet.data.nusc import split_scenes
    from bevsimdet.io import LockTimeout, file_lock

    folder = infos_dir(cfg)
    path = info_path(folder, split)
    if path.is_file():
        return path
    splits = split_scenes(cfg.version)
    if split not in splits:  # before the lock: otherwise every waiting process would build again
        raise DataError(f"split '{split}' does not exist in {cfg.version}", fix=f"use one of {', '.join(splits)}")
    prepare = f"bevsimdet prepare --dataroot {cfg.dataroot} --version {cfg.version} --max-sweeps {cfg.max_sweeps}" + (f" --out {folder}" if cfg.info_dir else "")
    try:
        with file_lock(folder / ".prepare.lock", wait_s):
            if path.is_file():  # another process built it while this one waited
                return path
            log.warning("building the info files of %s under %s (other processes of this run wait)", cfg.version, folder)
            create_infos(cfg.dataroot, cfg.version, folder, max_sweeps=cfg.max_sweeps, workers=cfg.prepare_workers, progress=progress)
    except LockTimeout:
        raise DataError(f"waited {wait_s:g} s for another process to build the info files under {folder}",
                        fix=f"run `{prepare}` once before starting the job") from None
    return path


def ensure_gt_database(cfg: Any, progress: bool = True) -> Path:
    """The GT database of the training split (``data.gt_paste.database``, default
    ``<info_dir>/gt_database_<train_split>``), built first when missing or made from another info
    file (rank 0 builds, the other ranks wait)."""
    from bevsimdet.data.gt_database import create_gt_database, gt_database_dir

    info = ensure_infos(cfg, cfg.train_split, progress)
    out = Path(cfg.gt_paste.database) if cfg.gt_paste.database else gt_database_dir(infos_dir(cfg), cfg.train_split)
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not dist or torch.distributed.get_rank() == 0:
        create_gt_database(info, cfg.dataroot, out, load_dim=cfg.load_dim, workers=cfg.prepare_workers, progress=progress)
    if dist:
        torch.distributed.barrier()
    return out


def build_object_paste(cfg: Any, progress: bool = True) -> ObjectPaste:
    """The :class:`ObjectPaste` of a :class:`bevsimdet.data.config.DataConfig` (``data.gt_paste``)."""
    from bevsimdet.data.gt_database import load_gt_database
    from bevsimdet.data.gt_paste import sweep_indices
    from bevsimdet.errors import ConfigError

    gp = cfg.gt_paste
    for key, table, least in (("sample_groups", gp.sample_groups, 0), ("min_points", gp.min_points, 1)):
        for name, value in table.items():
            if name not in CLASS_TO_LABEL:
                raise ConfigError(f"config key 'data.gt_paste.{key}.{name}' is not a detection class", fix=f"use some of {', '.join(CLASS_TO_LABEL)}")
            if value < least:
                raise ConfigError(f"config key 'data.gt_paste.{key}.{name}' must be >= {least}, got {value}")
    if gp.stop_epoch is not None and gp.stop_epoch < 0:
        raise ConfigError(f"config key 'data.gt_paste.stop_epoch' must be >= 0 or null, got {gp.stop_epoch}")
    db = load_gt_database(ensure_gt_database(cfg, progress))
    if db.version != cfg.version or db.load_dim != cfg.load_dim:
        raise DataError(
            f"GT database {db.path} was made for {db.version} with load_dim {db.load_dim}, the config says {cfg.version} / {cfg.load_dim}",
            fix="fix data.gt_paste.database or rebuild it with `bevsimdet prepare --gt-database --force`",
        )
    return ObjectPaste(
        db,
        sample_groups={CLASS_TO_LABEL[c]: n for c, n in gp.sample_groups.items()},
        min_points={CLASS_TO_LABEL[c]: n for c, n in gp.min_points.items()},
        sweep_ids=sweep_indices(cfg.sweeps, cfg.sweep_stride),
        stop_epoch=gp.stop_epoch,
    )


def build_dataset(cfg: Any, split: str, train: bool) -> NuScenesDataset:
    """The dataset of ``split`` as configured by a :class:`bevsimdet.data.config.DataConfig`
    (with ``data.gt_paste`` when ``train``)."""
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
        object_paste=build_object_paste(cfg) if train and cfg.gt_paste.enabled else None,
    )
