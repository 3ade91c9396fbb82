"""Schema of the ``data:`` config section (owned by the data layer).

Defaults are the demo scale (the synthetic world at ``--image-scale 0.25``, 400 x 225 images);
``configs/_base_/data_nuscenes.yaml`` sets the paper's (BEVFusion) values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DataConfig:
    dataroot: str = "data/sim-mini"
    version: str = "v1.0-mini"
    train_split: str = "mini_train"
    val_split: str = "mini_val"
    info_dir: str | None = None  # default <dataroot>/bevsimdet_infos
    # images: final (H, W); BEVFusion-style resize (factor of the original image), bottom-crop
    # fraction, rotation (degrees) and horizontal flip in training; fixed resize + centred crop at test
    image_size: tuple[int, int] = (128, 352)
    resize_lim: tuple[float, float] = (0.70, 1.01)
    test_resize: float = 0.88
    bot_pct_lim: tuple[float, float] = (0.0, 0.0)
    rot_lim: tuple[float, float] = (-5.4, 5.4)
    rand_flip: bool = True
    # global BEV augmentation (training only): rotation (rad), scale, random x/y flips
    bev_rot_lim: tuple[float, float] = (-0.3925, 0.3925)
    bev_scale_lim: tuple[float, float] = (0.95, 1.05)
    bev_flip: bool = True
    # LiDAR: points outside the range are dropped, boxes whose centre is outside too
    point_cloud_range: tuple[float, float, float, float, float, float] = (-54.0, -54.0, -5.0, 54.0, 54.0, 3.0)
    load_points: bool = True
    sweeps: int = 9  # previous sweeps merged into each keyframe (sweeps x sweep_stride <= max_sweeps)
    sweep_stride: int = 1  # take every n-th stored sweep: 3 sweeps at stride 3 span 0.45 s at 20 Hz
    max_sweeps: int = 9  # sweeps stored in the info files by `prepare`
    load_dim: int = 5  # floats per point in the .pcd.bin files
    use_valid_flag: bool = False  # keep only GT boxes with >= 1 LiDAR or radar point
    skip_bad_samples: bool = False
    # training order: random (each keyframe once per epoch, shuffled) or cbgs (class-balanced
    # resampling: samples of rare classes repeated until each class is in about as many drawn
    # samples; an epoch then has about as many samples as there are (sample, class present) pairs)
    sampler: Literal["random", "cbgs"] = "random"  # skip (and count) samples with missing/corrupt files
    prepare_workers: int = 2  # processes for building missing info files
