"""Schema of the ``data:`` config section (owned by the data layer).

Defaults are the demo scale (the synthetic world at ``--image-scale 0.25``, 400 x 225 images);
``configs/_base_/data_nuscenes.yaml`` sets the paper's (BEVFusion) values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _bevfusion_sample_groups() -> dict[str, int]:
    # BEVFusion's / mmdet3d's nuScenes ObjectSample groups: objects of each class a training
    # sample is filled up to (rare classes more)
    return {"car": 2, "truck": 3, "construction_vehicle": 7, "bus": 4, "trailer": 6, "barrier": 2,
            "motorcycle": 6, "bicycle": 6, "pedestrian": 2, "traffic_cone": 2}


@dataclass
class GTPasteConfig:
    """GT-paste (BEVFusion ``ObjectPaste``, mmdet3d ``ObjectSample``) for LiDAR and fusion training.

    Objects from the GT database of the training split (``bevsimdet prepare --gt-database``) are
    pasted, points only, into training samples before the global BEV augmentation.
    """

    enabled: bool = False
    database: str | None = None  # default <info_dir>/gt_database_<train_split>, built when missing
    # class -> objects of that class a sample is filled up to; classes not listed are never pasted
    sample_groups: dict[str, int] = field(default_factory=_bevfusion_sample_groups)
    # class -> least LiDAR points (keyframe + the sweeps the model loads) a pasted object has;
    # classes not listed use 5, BEVFusion's value for every class
    min_points: dict[str, int] = field(default_factory=dict)
    stop_epoch: int | None = None  # paste in sampler epochs 0 .. stop_epoch - 1 only (None: always)


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
    skip_bad_samples: bool = False  # skip (and count) samples with missing/corrupt files
    # training order: random (each keyframe once per epoch, shuffled) or cbgs (class-balanced
    # resampling: samples of rare classes repeated until each class is in about as many drawn
    # samples; an epoch then has about as many samples as there are (sample, class present) pairs)
    sampler: Literal["random", "cbgs"] = "random"
    prepare_workers: int = 2  # processes for building missing info files
    gt_paste: GTPasteConfig = field(default_factory=GTPasteConfig)  # LiDAR / fusion models only
